/**
 * The control plane's HTTP server (node:http): the JSON API under `/api/v1/` (bearer token),
 * `/metrics` (Prometheus text, no auth), `POST /hooks/git` (GitHub, Gitea/Forgejo, GitLab), and the
 * dashboard at `/` (static files, `/assets/`) with its one-time login. The API takes the bearer
 * token or a dashboard session (the cookie; a POST also needs the CSRF header).
 *
 * Routes are a small table of patterns; a known path with another method answers 405 with `Allow`,
 * an unknown one 404, both as `{"error": "..."}`.
 */
import { randomUUID } from "node:crypto";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { errorMessage } from "../../../agent/src/errors.js";
import { hostGauges, ingestFamilies, type WebhookResult } from "../metrics.js";
import * as api from "./api.js";
import { bearerToken, CSRF_HEADER, cookie, SESSION_COOKIE, Sessions } from "./auth.js";
import { renderFleetPage, renderLoginPage } from "./page.js";
import { HttpError, readBody, sendDashboardFile, sendHtml, sendJson, sendText } from "./respond.js";
import { DEFAULT_SSE, streamEvents } from "./sse.js";
import type { HttpDeps } from "./types.js";
import { classifyDelivery, type Provider } from "./webhooks.js";

export type { HttpDeps } from "./types.js";

/** Webhook bodies: GitHub caps its own at 25 MB, push events are far smaller. */
export const HOOK_BODY_LIMIT = 5 * 1024 * 1024;
const LOGIN_BODY_LIMIT = 4 * 1024;

interface Request {
  req: IncomingMessage;
  res: ServerResponse;
  url: URL;
  params: string[];
}

interface Route {
  /** The pattern, also the `route` label of the request counter. */
  name: string;
  pattern: RegExp;
  methods: Partial<Record<"GET" | "POST", (r: Request) => Promise<void>>>;
}

export interface HttpServer {
  /** Starts listening; resolves with the address (port 0 picks a free one). Again after close(): same sessions. */
  listen(host: string, port: number): Promise<{ host: string; port: number; url: string }>;
  /** A new one-time login token for the page (serve prints `URL/?token=...`). */
  issueLoginToken(): string;
  /** The request handler, for a server made elsewhere. */
  handle(req: IncomingMessage, res: ServerResponse): void;
  close(): Promise<void>;
}

export function createHttpServer(input: Omit<HttpDeps, "newId"> & { newId?: () => string }): HttpServer {
  const deps: HttpDeps = { ...input, newId: input.newId ?? randomUUID };
  const sessions = new Sessions(deps.apiToken, deps.now);
  const { metrics, logger } = deps;

  const json = (r: Request, answer: { status: number; body: unknown }) => sendJson(r.res, answer.status, answer.body);

  const routes: Route[] = [
    {
      name: "/api/v1/hosts",
      pattern: /^\/api\/v1\/hosts$/,
      methods: { GET: async (r) => json(r, await api.listHosts(deps, r.url.searchParams)) },
    },
    {
      name: "/api/v1/hosts/{id}",
      pattern: /^\/api\/v1\/hosts\/([^/]+)$/,
      methods: { GET: async (r) => json(r, await api.getHost(deps, api.hostId(r.params[0] ?? ""))) },
    },
    {
      name: "/api/v1/hosts/{id}/runs",
      pattern: /^\/api\/v1\/hosts\/([^/]+)\/runs$/,
      methods: {
        GET: async (r) => json(r, await api.listRuns(deps, api.hostId(r.params[0] ?? ""), r.url.searchParams)),
      },
    },
    {
      name: "/api/v1/hosts/{id}/converge",
      pattern: /^\/api\/v1\/hosts\/([^/]+)\/converge$/,
      methods: {
        POST: async (r) => {
          const id = api.hostId(r.params[0] ?? "");
          await api.readApiBody(r.req);
          json(r, await api.converge(deps, id));
        },
      },
    },
    {
      name: "/api/v1/summary",
      pattern: /^\/api\/v1\/summary$/,
      methods: { GET: async (r) => json(r, await api.summary(deps)) },
    },
    {
      name: "/api/v1/fleet/refresh",
      pattern: /^\/api\/v1\/fleet\/refresh$/,
      methods: { POST: async (r) => json(r, await api.refresh(deps, await api.readApiBody(r.req))) },
    },
    {
      name: "/api/v1/events",
      pattern: /^\/api\/v1\/events$/,
      methods: {
        GET: async (r) => {
          if (!deps.events) throw new HttpError(404, "no event stream here");
          // Asked again before each write: a stream of a session that ended is closed.
          streamEvents(r.req, r.res, deps.events, deps.sse ?? DEFAULT_SSE, () => apiAllowed(r.req));
        },
      },
    },
    { name: "/assets/{file}", pattern: /^\/assets\/([A-Za-z0-9._-]+)$/, methods: { GET: assetRoute } },
    { name: "/logout", pattern: /^\/logout$/, methods: { POST: logoutRoute } },
    { name: "/metrics", pattern: /^\/metrics$/, methods: { GET: metricsRoute } },
    { name: "/hooks/git", pattern: /^\/hooks\/git$/, methods: { POST: hookRoute } },
    { name: "/", pattern: /^\/$/, methods: { GET: pageRoute } },
    { name: "/login", pattern: /^\/login$/, methods: { GET: loginRoute, POST: loginFormRoute } },
  ];

  async function metricsRoute(r: Request) {
    const summary = await deps.store.summary(deps.now());
    const text = metrics.registry.render([
      ...hostGauges(summary),
      ...ingestFamilies(deps.counters?.ingest, deps.counters?.brokerRefused),
    ]);
    sendText(r.res, 200, "text/plain; version=0.0.4; charset=utf-8", text);
  }

  async function hookRoute(r: Request) {
    const count = (provider: Provider | "unknown", result: WebhookResult) =>
      metrics.webhookDeliveries.inc({ provider, result });
    if (deps.webhookSecret === null) {
      count("unknown", "disabled");
      throw new HttpError(404, "Git webhooks are off: start serve with --webhook-secret-file");
    }
    const body = await readBody(r.req, HOOK_BODY_LIMIT);
    const delivery = classifyDelivery(r.req.headers, body, deps.webhookSecret);
    switch (delivery.kind) {
      case "unknown":
        count("unknown", "invalid");
        throw new HttpError(400, "not a GitHub, Gitea, Forgejo or GitLab delivery (no event header)");
      case "unauthorized":
        count(delivery.provider, "unauthorized");
        logger.warn("webhook refused", { provider: delivery.provider, reason: delivery.reason });
        throw new HttpError(401, `${delivery.provider} delivery refused: ${delivery.reason}`);
      case "invalid":
        count(delivery.provider, "invalid");
        throw new HttpError(400, `${delivery.provider} delivery: ${delivery.reason}`);
      case "ignored":
        count(delivery.provider, "ignored");
        sendJson(r.res, 200, { ignored: true, event: delivery.event, reason: delivery.reason });
        return;
      case "push": {
        if (!(await deps.store.markDelivery(delivery.deliveryId, deps.now()))) {
          count(delivery.provider, "duplicate");
          sendJson(r.res, 200, { duplicate: true });
          return;
        }
        let id: string;
        try {
          id = await api.publishRefresh(deps, { commit: delivery.commit, ref: delivery.branch });
        } catch (error) {
          count(delivery.provider, "failed");
          // The delivery id is taken: a redelivery would be a duplicate. Say what to do instead.
          if (error instanceof HttpError) {
            throw new HttpError(
              error.status,
              `${error.message}; send it by hand: driftlessctl refresh --commit ${delivery.commit}`,
            );
          }
          throw error;
        }
        count(delivery.provider, "published");
        await deps.store.recordPush({ commit: delivery.commit, ref: delivery.branch }, deps.now());
        deps.events?.emit({ kind: "push", host: null });
        logger.info("push received", { provider: delivery.provider, branch: delivery.branch, commit: delivery.commit });
        sendJson(r.res, 202, { sent: true, id, commit: delivery.commit, ref: delivery.branch });
        return;
      }
    }
  }

  function signedIn(req: IncomingMessage): boolean {
    return sessions.valid(cookie(req, SESSION_COOKIE));
  }

  /** Exchanges a token for a session cookie and goes to `/` (which drops the token from the address bar). */
  function startSession(r: Request, token: string, fromForm: boolean): void {
    const session = sessions.login(token, { apiToken: fromForm });
    if (session === null) {
      sendHtml(r.res, 401, renderLoginPage("This login token is unknown or was used already."));
      return;
    }
    // Only adds a flag, so the proxy's header is safe to believe here.
    const secure = r.req.headers["x-forwarded-proto"] === "https";
    r.res.writeHead(303, {
      location: "/",
      "set-cookie": sessions.sessionCookie(session, secure),
      "cache-control": "no-store",
    });
    r.res.end();
  }

  async function pageRoute(r: Request) {
    const token = r.url.searchParams.get("token");
    if (token !== null) return startSession(r, token, false);
    if (!signedIn(r.req)) return sendHtml(r.res, 200, renderLoginPage());
    if (deps.dashboard) return sendDashboardFile(r.res, deps.dashboard.index, "no-store");
    const now = deps.now();
    const [summary, hosts] = await Promise.all([deps.store.summary(now), deps.store.listHosts({}, now)]);
    sendHtml(r.res, 200, renderFleetPage(summary, hosts));
  }

  /** Content-hashed names: a browser keeps them for good (private: they are behind the login). */
  async function assetRoute(r: Request) {
    if (!signedIn(r.req)) throw new HttpError(401, "sign in first");
    const asset = deps.dashboard?.assets.get(r.params[0] ?? "");
    if (!asset) throw new HttpError(404, `nothing at ${r.url.pathname}`);
    sendDashboardFile(r.res, asset, "private, max-age=31536000, immutable");
  }

  async function logoutRoute(r: Request) {
    if (r.req.headers[CSRF_HEADER] === undefined) throw new HttpError(403, `${CSRF_HEADER} header missing`);
    sessions.logout(cookie(r.req, SESSION_COOKIE));
    r.res.writeHead(204, { "set-cookie": sessions.clearedCookie(), "cache-control": "no-store" });
    r.res.end();
  }

  /**
   * The API takes the bearer token, or a dashboard's session cookie; with the cookie, a request
   * that changes something must carry the CSRF header too.
   */
  function apiAllowed(req: IncomingMessage): boolean {
    if (sessions.isApiToken(bearerToken(req))) return true;
    if (!signedIn(req)) return false;
    if (req.method === "GET" || req.method === "HEAD") return true;
    if (req.headers[CSRF_HEADER] !== undefined) return true;
    throw new HttpError(
      403,
      `${CSRF_HEADER} header missing (a dashboard session's requests that change something carry it)`,
    );
  }

  async function loginRoute(r: Request) {
    const token = r.url.searchParams.get("token");
    if (token !== null) return startSession(r, token, false);
    sendHtml(r.res, 200, renderLoginPage());
  }

  async function loginFormRoute(r: Request) {
    const form = new URLSearchParams((await readBody(r.req, LOGIN_BODY_LIMIT)).toString("utf8"));
    startSession(r, (form.get("token") ?? "").trim(), true);
  }

  /** Runs the request's route; `seen.route` says which one (the request counter's label). */
  async function dispatch(req: IncomingMessage, res: ServerResponse, seen: { route: string }): Promise<void> {
    let url: URL;
    try {
      url = new URL(`http://localhost${req.url?.startsWith("/") ? req.url : "/"}`);
    } catch {
      throw new HttpError(400, "bad request target");
    }
    const path = url.pathname;
    if (path.startsWith("/api/")) {
      seen.route = "/api/v1";
      if (!apiAllowed(req)) throw new HttpError(401, "missing or wrong API token", { "www-authenticate": "Bearer" });
    }
    for (const route of routes) {
      const match = route.pattern.exec(path);
      if (!match) continue;
      seen.route = route.name;
      const handler = route.methods[req.method as "GET" | "POST"];
      if (!handler) {
        throw new HttpError(405, `${req.method} is not allowed on ${route.name}`, {
          allow: Object.keys(route.methods).join(", "),
        });
      }
      await handler({ req, res, url, params: match.slice(1) });
      return;
    }
    throw new HttpError(404, `nothing at ${path}`);
  }

  function handle(req: IncomingMessage, res: ServerResponse): void {
    const seen = { route: "other" };
    dispatch(req, res, seen).then(
      () => metrics.httpRequests.inc({ route: seen.route, code: String(res.statusCode) }),
      (error: unknown) => {
        const route = seen.route;
        // Whatever the client still sends is read and dropped, so the answer reaches it.
        if (!req.readableEnded) req.resume();
        if (error instanceof HttpError) {
          if (!res.headersSent) sendJson(res, error.status, { error: error.message }, error.headers);
        } else {
          logger.error("HTTP request failed", { method: req.method, route, error: errorMessage(error) });
          if (!res.headersSent) sendJson(res, 500, { error: "internal error (see the control plane's log)" });
          else res.destroy();
        }
        metrics.httpRequests.inc({ route, code: String(res.statusCode) });
      },
    );
  }

  let server: Server | null = null;
  return {
    handle,
    issueLoginToken: () => sessions.issueLoginToken(),
    async listen(host, port) {
      if (server) throw new Error("the HTTP server is listening already; close it first");
      const created = createServer(handle);
      // Slow clients cannot hold a connection open for long.
      created.requestTimeout = 30_000;
      created.headersTimeout = 10_000;
      await new Promise<void>((resolve, reject) => {
        created.once("error", reject);
        created.listen(port, host, () => {
          created.off("error", reject);
          resolve();
        });
      });
      // Only a server that listens is the one close() stops (a failed listen leaves the old state).
      server = created;
      const address = created.address() as AddressInfo;
      const shown = address.family === "IPv6" ? `[${address.address}]` : address.address;
      return { host: address.address, port: address.port, url: `http://${shown}:${address.port}` };
    },
    async close() {
      const current = server;
      server = null;
      if (!current) return;
      await new Promise<void>((resolve) => {
        current.close(() => resolve());
        current.closeAllConnections();
      });
    },
  };
}
