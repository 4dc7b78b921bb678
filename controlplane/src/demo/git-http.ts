/**
 * Git's smart HTTP protocol served by `git http-backend` (a CGI program that ships with git)
 * behind node:http. The demo serves its profile repository with it, and the tests' Git server
 * (test/support/git-server.ts) is built on the same handler.
 *
 * `runGitHttpBackend` runs one request through the CGI program: the request body goes to its
 * standard input, its CGI head becomes the HTTP status and headers, the rest is the body.
 * `startGitHttpServer` is a server for the repositories under one directory that says when a
 * push (`git-receive-pack`) has finished.
 */
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { Socket } from "node:net";

/** git with no system or global configuration and no prompts (add an identity to commit). */
export function gitEnv(home: string): Record<string, string> {
  return {
    PATH: process.env.PATH ?? "/usr/local/bin:/usr/bin:/bin",
    HOME: home,
    LANG: "C",
    GIT_CONFIG_NOSYSTEM: "1",
    GIT_CONFIG_GLOBAL: "/dev/null",
    GIT_TERMINAL_PROMPT: "0",
  };
}

export interface CgiRequest {
  /** Directory holding the served repositories (`GIT_PROJECT_ROOT`). */
  projectRoot: string;
  /** The decoded URL path, `/NAME.git/...`. */
  pathInfo: string;
  /** Query string without `?`. */
  query: string;
  /** `REMOTE_USER`, when the caller authenticated the request. */
  remoteUser?: string;
}

export interface CgiHooks {
  /** The HTTP status, once the CGI head is read (502 when the program sent none). */
  onStatus?(status: number): void;
  /** Body bytes, as they are written. */
  onBytes?(count: number): void;
  /** Takes the whole body at the end instead of streaming it (a test server sends it slowly). */
  holdBody?(res: ServerResponse, body: Buffer): void;
  /** The CGI program exited (`status` as sent). */
  onExit?(status: number): void;
}

/**
 * Runs `git http-backend` for one request. The process is killed when the client goes away;
 * `children` (optional) holds it while it runs, so a server can kill what is left when it stops.
 */
export function runGitHttpBackend(
  req: IncomingMessage,
  res: ServerResponse,
  request: CgiRequest,
  hooks: CgiHooks = {},
  children?: Set<ChildProcess>,
): void {
  const env: Record<string, string> = {
    ...gitEnv(request.projectRoot),
    GIT_PROJECT_ROOT: request.projectRoot,
    GIT_HTTP_EXPORT_ALL: "1",
    GATEWAY_INTERFACE: "CGI/1.1",
    SERVER_PROTOCOL: `HTTP/${req.httpVersion}`,
    REQUEST_METHOD: req.method ?? "GET",
    PATH_INFO: request.pathInfo,
    QUERY_STRING: request.query,
    REMOTE_ADDR: req.socket.remoteAddress ?? "127.0.0.1",
  };
  const header = (name: string) => {
    const value = req.headers[name];
    return Array.isArray(value) ? value.join(", ") : value;
  };
  const contentType = header("content-type");
  if (contentType) env.CONTENT_TYPE = contentType;
  const contentLength = header("content-length");
  if (contentLength) env.CONTENT_LENGTH = contentLength;
  const encoding = header("content-encoding");
  if (encoding) env.HTTP_CONTENT_ENCODING = encoding;
  const protocol = header("git-protocol");
  if (protocol) env.GIT_PROTOCOL = protocol;
  if (request.remoteUser) env.REMOTE_USER = request.remoteUser;

  let status = 0;
  const setStatus = (value: number) => {
    status = value;
    hooks.onStatus?.(value);
  };
  const child = spawn("git", ["http-backend"], { env, stdio: ["pipe", "pipe", "pipe"] });
  children?.add(child);
  child.on("close", () => {
    children?.delete(child);
    hooks.onExit?.(status);
  });
  child.on("error", () => {
    if (!res.headersSent) {
      setStatus(500);
      res.writeHead(500).end();
    }
  });
  child.stdin.on("error", () => {}); // the backend may exit before reading everything
  req.pipe(child.stdin);
  res.on("close", () => {
    if (child.exitCode === null) child.kill("SIGKILL");
  });
  const stderr: Buffer[] = [];
  child.stderr.on("data", (c: Buffer) => stderr.push(c));

  let head = Buffer.alloc(0);
  let body: Buffer[] | null = null; // once the CGI head is parsed
  const send = (chunk: Buffer) => {
    hooks.onBytes?.(chunk.length);
    res.write(chunk);
  };
  child.stdout.on("data", (chunk: Buffer) => {
    if (body) {
      if (hooks.holdBody) body.push(chunk);
      else send(chunk);
      return;
    }
    head = Buffer.concat([head, chunk]);
    const parsed = parseCgiHead(head);
    if (!parsed) return;
    setStatus(parsed.status);
    res.writeHead(parsed.status, parsed.headers);
    body = [];
    if (parsed.rest.length > 0) {
      if (hooks.holdBody) body.push(parsed.rest);
      else send(parsed.rest);
    }
  });
  child.stdout.on("end", () => {
    if (!body) {
      if (!res.headersSent) {
        setStatus(502);
        res.writeHead(502, { "Content-Type": "text/plain" });
      }
      res.end(`git http-backend gave no response\n${Buffer.concat(stderr).toString("utf8")}`);
      return;
    }
    if (hooks.holdBody) hooks.holdBody(res, Buffer.concat(body));
    else res.end();
  });
}

/** Splits a CGI response into status, headers and the start of the body; null until the blank line. */
export function parseCgiHead(
  data: Buffer,
): { status: number; headers: Record<string, string | string[]>; rest: Buffer } | null {
  let end = data.indexOf("\r\n\r\n");
  let sep = 4;
  const lf = data.indexOf("\n\n");
  if (lf !== -1 && (end === -1 || lf < end)) {
    end = lf;
    sep = 2;
  }
  if (end === -1) return null;
  let status = 200;
  const headers: Record<string, string | string[]> = {};
  for (const line of data.subarray(0, end).toString("latin1").split(/\r?\n/)) {
    const colon = line.indexOf(":");
    if (colon === -1) continue;
    const name = line.slice(0, colon).trim();
    const value = line.slice(colon + 1).trim();
    if (name.toLowerCase() === "status") {
      status = Number.parseInt(value, 10) || 500;
      continue;
    }
    const previous = headers[name];
    headers[name] = previous === undefined ? value : [...(Array.isArray(previous) ? previous : [previous]), value];
  }
  return { status, headers, rest: data.subarray(end + sep) };
}

/** A decoded request path, or null when it is not valid URL encoding or climbs out (`..`). */
export function safePathInfo(pathname: string): string | null {
  let decoded: string;
  try {
    decoded = decodeURIComponent(pathname);
  } catch {
    return null;
  }
  return decoded.split("/").includes("..") ? null : decoded;
}

export interface GitHttpServerOptions {
  /** Directory holding the served bare repositories (`NAME.git`). */
  root: string;
  host: string;
  /** 0: a free port. */
  port: number;
  /** A push to repository `NAME.git` finished (git-receive-pack answered 200). */
  onPush?(repository: string): void;
}

export interface GitHttpServer {
  readonly port: number;
  /** `http://HOST:PORT/NAME.git`. */
  url(name: string): string;
  /** Stops listening, cuts open connections, kills running CGI processes. */
  close(): Promise<void>;
}

export async function startGitHttpServer(options: GitHttpServerOptions): Promise<GitHttpServer> {
  const sockets = new Set<Socket>();
  const children = new Set<ChildProcess>();
  const server = createServer((req, res) => {
    const url = new URL(req.url ?? "/", "http://localhost");
    const pathInfo = safePathInfo(url.pathname);
    if (pathInfo === null) {
      req.resume();
      res.writeHead(400, { "Content-Type": "text/plain" }).end("bad path\n");
      return;
    }
    const push = req.method === "POST" && pathInfo.endsWith("/git-receive-pack");
    runGitHttpBackend(
      req,
      res,
      { projectRoot: options.root, pathInfo, query: url.search.slice(1) },
      {
        onExit: (status) => {
          if (push && status === 200) options.onPush?.(pathInfo.slice(1, -"/git-receive-pack".length));
        },
      },
      children,
    );
  });
  server.on("connection", (socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port, options.host, () => resolve());
  });
  const address = server.address();
  const port = typeof address === "object" && address ? address.port : options.port;
  const urlHost = options.host.includes(":") ? `[${options.host}]` : options.host;
  return {
    port,
    url: (name) => `http://${urlHost}:${port}/${name}.git`,
    close: async () => {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const socket of sockets) socket.destroy();
      for (const child of children) child.kill("SIGKILL");
      await closed;
    },
  };
}

/** Runs git (no shell) with `env`; resolves with standard output, rejects with its stderr. */
export function git(args: readonly string[], options: { cwd?: string; env: Record<string, string> }): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile("git", args, { cwd: options.cwd, env: options.env, maxBuffer: 16 * 1024 * 1024 }, (error, out, err) => {
      if (error) reject(new Error(`git ${args.join(" ")}: ${String(err).trim() || error.message}`));
      else resolve(out);
    });
  });
}
