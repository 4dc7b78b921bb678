/**
 * Who may use the HTTP server: the API's bearer token, the one-time login tokens `serve` prints,
 * and the browser sessions they are exchanged for. Tokens are compared in constant time
 * (`safeEqual`); login tokens and sessions are kept as SHA-256 digests, in memory (a restart
 * prints a new login link).
 */
import { createHash, randomBytes } from "node:crypto";
import type { IncomingMessage } from "node:http";
import { safeEqual } from "./webhooks.js";

export const SESSION_COOKIE = "driftless_session";
export const SESSION_TTL_MS = 12 * 60 * 60 * 1000;
/**
 * The header the dashboard sends with every request that changes something. A page of another
 * site cannot send a custom header without a CORS preflight this server never grants, so a POST
 * authenticated by the cookie alone is refused (on top of SameSite=Strict).
 */
export const CSRF_HEADER = "x-driftless-request";
/** Past this many live sessions the oldest is dropped. */
const MAX_SESSIONS = 1000;

function digest(token: string): string {
  return createHash("sha256").update(token).digest("hex");
}

export function newToken(): string {
  return randomBytes(24).toString("base64url");
}

/** The bearer token of `Authorization: Bearer <token>`, or null. */
export function bearerToken(req: IncomingMessage): string | null {
  const value = req.headers.authorization;
  if (typeof value !== "string") return null;
  const match = /^Bearer[ \t]+(\S+)[ \t]*$/i.exec(value);
  return match?.[1] ?? null;
}

export function cookie(req: IncomingMessage, name: string): string | null {
  const header = req.headers.cookie;
  if (typeof header !== "string") return null;
  for (const part of header.split(";")) {
    const eq = part.indexOf("=");
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return null;
}

export class Sessions {
  /** digest of a one-time login token -> unused */
  readonly #loginTokens = new Set<string>();
  /** digest of a session id -> expiry (ms since the epoch) */
  readonly #sessions = new Map<string, number>();

  constructor(
    private readonly apiToken: string,
    private readonly now: () => Date,
  ) {}

  /** True when `token` is the API token. */
  isApiToken(token: string | null): boolean {
    return token !== null && safeEqual(token, this.apiToken);
  }

  /** A new one-time login token (serve prints it in the dashboard URL). */
  issueLoginToken(): string {
    const token = newToken();
    this.#loginTokens.add(digest(token));
    return token;
  }

  /**
   * Exchanges a one-time login token for a new session id; null when the token is unknown or was
   * used already. `apiToken`: the API token (which stays valid) is taken too: only from the form,
   * so that it never sits in an address bar, a history or a proxy's log.
   */
  login(token: string, options: { apiToken: boolean }): string | null {
    const key = digest(token);
    if (this.#loginTokens.has(key)) this.#loginTokens.delete(key);
    else if (!options.apiToken || !this.isApiToken(token)) return null;
    const session = newToken();
    const now = this.now().getTime();
    for (const [id, expires] of this.#sessions) if (expires <= now) this.#sessions.delete(id);
    while (this.#sessions.size >= MAX_SESSIONS) {
      const oldest = this.#sessions.keys().next().value;
      if (oldest === undefined) break;
      this.#sessions.delete(oldest);
    }
    this.#sessions.set(digest(session), now + SESSION_TTL_MS);
    return session;
  }

  /** True for a live session id. */
  valid(session: string | null): boolean {
    if (session === null) return false;
    const expires = this.#sessions.get(digest(session));
    return expires !== undefined && expires > this.now().getTime();
  }

  /** Ends a session (logout); unknown ids are ignored. */
  logout(session: string | null): void {
    if (session !== null) this.#sessions.delete(digest(session));
  }

  /** A cookie that makes the browser forget the session. */
  clearedCookie(): string {
    return `${SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0`;
  }

  /** `secure`: the browser came over HTTPS (a TLS proxy in front): the cookie never goes over plain HTTP. */
  sessionCookie(session: string, secure: boolean): string {
    const flags = `HttpOnly; SameSite=Strict; Path=/; Max-Age=${SESSION_TTL_MS / 1000}${secure ? "; Secure" : ""}`;
    return `${SESSION_COOKIE}=${session}; ${flags}`;
  }
}
