/**
 * The network port for Git: an isomorphic-git HTTP client on node:http(s). A request fails when no
 * byte comes for IDLE_TIMEOUT_MS; the signal cancels it at any point, body included (the
 * caller's overall fetch deadline, `source.fetchTimeout`, is such a signal).
 *
 * node:http and node:https are imported on the first request, not with this module: a run from
 * the cached commit never loads them (node:https adds 4 to 8 MB to a Node 24 process).
 */
import type { GitHttpRequest, GitHttpResponse, HttpClient } from "isomorphic-git";
import { DriftlessError } from "../errors.js";

/** No byte for this long fails a request. */
const IDLE_TIMEOUT_MS = 30_000;

export interface HttpOptions {
  signal?: AbortSignal;
}

export function createHttpClient(options: HttpOptions = {}): HttpClient {
  return {
    async request(req: GitHttpRequest): Promise<GitHttpResponse> {
      const body = req.body ? await collect(req.body) : undefined;
      const url = new URL(req.url);
      const lib = url.protocol === "https:" ? await import("node:https") : await import("node:http");
      return new Promise((resolve, reject) => {
        const request = lib.request(
          url,
          {
            method: req.method ?? "GET",
            headers: req.headers,
            signal: options.signal,
            timeout: IDLE_TIMEOUT_MS,
          },
          (res) => {
            const headers: Record<string, string> = {};
            for (const [key, value] of Object.entries(res.headers)) {
              if (value !== undefined) headers[key] = Array.isArray(value) ? value.join(", ") : value;
            }
            resolve({
              url: req.url,
              method: req.method ?? "GET",
              statusCode: res.statusCode ?? 0,
              statusMessage: res.statusMessage ?? "",
              headers,
              body: res[Symbol.asyncIterator]() as AsyncIterableIterator<Uint8Array>,
            });
          },
        );
        request.on("timeout", () => {
          request.destroy(
            new DriftlessError(`no answer from ${url.host} for ${IDLE_TIMEOUT_MS / 1000} s`, {
              code: "ETIMEOUT",
              phase: "load",
              retryable: true,
            }),
          );
        });
        request.on("error", reject);
        request.end(body);
      });
    },
  };
}

async function collect(body: AsyncIterableIterator<Uint8Array>): Promise<Buffer> {
  const parts: Uint8Array[] = [];
  for await (const part of body) parts.push(part);
  return Buffer.concat(parts);
}

/** The HTTP port of the Git cache: a client per fetch, bound to that fetch's cancellation. */
export function gitHttp(signal?: AbortSignal): HttpClient {
  return createHttpClient(signal ? { signal } : {});
}
