/** Request and response helpers of the HTTP server: bounded bodies, JSON answers, typed errors. */
import type { IncomingMessage, ServerResponse } from "node:http";

/** An answer other than 2xx, sent as `{"error": message}`. */
export class HttpError extends Error {
  readonly status: number;
  readonly headers: Record<string, string>;

  constructor(status: number, message: string, headers: Record<string, string> = {}) {
    super(message);
    this.name = "HttpError";
    this.status = status;
    this.headers = headers;
  }
}

/**
 * The body's bytes; 413 past `limit` (from Content-Length before reading, or while reading). The
 * rest of an oversized body is read and dropped, so the client gets the answer rather than a reset
 * (the server's request timeout bounds how long that lasts), and the connection is closed after.
 */
export function readBody(req: IncomingMessage, limit: number): Promise<Buffer> {
  const tooLarge = () => new HttpError(413, `request body over ${limit} bytes`, { connection: "close" });
  const declared = Number(req.headers["content-length"]);
  if (Number.isFinite(declared) && declared > limit) return Promise.reject(tooLarge());
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size <= limit) {
        chunks.push(chunk);
        return;
      }
      req.off("data", onData);
      req.off("end", onEnd);
      req.resume();
      reject(tooLarge());
    };
    const onEnd = () => resolve(Buffer.concat(chunks));
    req.on("data", onData);
    req.on("end", onEnd);
    req.once("error", reject);
  });
}

/** A JSON object body (empty body: `{}`); 400 for anything else. */
export async function readJsonObject(req: IncomingMessage, limit: number): Promise<Record<string, unknown>> {
  const body = await readBody(req, limit);
  if (body.length === 0 || body.toString("utf8").trim() === "") return {};
  let value: unknown;
  try {
    value = JSON.parse(body.toString("utf8"));
  } catch {
    throw new HttpError(400, "request body is not valid JSON");
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new HttpError(400, "request body must be a JSON object");
  }
  return value as Record<string, unknown>;
}

const SECURITY_HEADERS = {
  "x-content-type-options": "nosniff",
  "cache-control": "no-store",
};

export function sendJson(res: ServerResponse, status: number, value: unknown, headers: Record<string, string> = {}) {
  const body = `${JSON.stringify(value, null, 2)}\n`;
  res.writeHead(status, {
    ...SECURITY_HEADERS,
    "content-type": "application/json; charset=utf-8",
    "content-length": String(Buffer.byteLength(body)),
    ...headers,
  });
  res.end(body);
}

export function sendText(res: ServerResponse, status: number, contentType: string, body: string, headers = {}) {
  res.writeHead(status, {
    ...SECURITY_HEADERS,
    "content-type": contentType,
    "content-length": String(Buffer.byteLength(body)),
    ...headers,
  });
  res.end(body);
}

const HTML_HEADERS = {
  "content-security-policy":
    "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'",
  "x-frame-options": "DENY",
  "referrer-policy": "no-referrer",
};

/** The dashboard: its own scripts and styles only, nothing inline, nothing from elsewhere. */
export const DASHBOARD_CSP =
  "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
  "form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

export function sendDashboardFile(
  res: ServerResponse,
  file: { body: Buffer; contentType: string },
  cacheControl: string,
): void {
  res.writeHead(200, {
    ...SECURITY_HEADERS,
    ...HTML_HEADERS,
    "content-security-policy": DASHBOARD_CSP,
    "content-type": file.contentType,
    "content-length": String(file.body.length),
    "cache-control": cacheControl,
  });
  res.end(file.body);
}

export function sendHtml(res: ServerResponse, status: number, body: string, headers: Record<string, string> = {}) {
  sendText(res, status, "text/html; charset=utf-8", body, { ...HTML_HEADERS, ...headers });
}
