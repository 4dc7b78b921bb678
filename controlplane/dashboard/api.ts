/**
 * The dashboard's calls to the control plane's API: same origin, the session cookie, and the
 * CSRF header on every request (the server requires it on POST). A 401 means the session ended:
 * the page reloads into the login form.
 */
import type { FleetSummary, HostDetail, HostSummary, RunView } from "../src/store/types.js";

export type Host = HostSummary & { state: HostSummary["sync"] };
export type HostPageData = HostDetail & { state: HostSummary["sync"] };
export type { FleetSummary, RunView };

export interface HostList {
  hosts: Host[];
  total: number;
}

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

const HEADERS = { "x-driftless-request": "1", accept: "application/json" };

async function call<T>(method: "GET" | "POST", path: string, body?: unknown): Promise<T> {
  const response = await fetch(path, {
    method,
    credentials: "same-origin",
    headers: body === undefined ? HEADERS : { ...HEADERS, "content-type": "application/json" },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  if (response.status === 401) {
    location.assign("/");
    throw new ApiError(401, "signed out");
  }
  const json = (await response.json().catch(() => ({}))) as { error?: string };
  if (!response.ok) throw new ApiError(response.status, json.error ?? `HTTP ${response.status}`);
  return json as T;
}

export interface HostQuery {
  state: string;
  label: string;
  commit: string;
  q: string;
  sort: string;
  order: "asc" | "desc";
  offset: number;
  limit: number;
}

export function hostsPath(query: HostQuery): string {
  const params = new URLSearchParams();
  if (query.state) params.set("state", query.state);
  if (query.label) params.set("label", query.label);
  if (query.commit) params.set("commit", query.commit);
  if (query.q) params.set("q", query.q);
  params.set("sort", query.sort);
  params.set("order", query.order);
  params.set("limit", String(query.limit));
  params.set("offset", String(query.offset));
  return `/api/v1/hosts?${params}`;
}

export const api = {
  summary: () => call<FleetSummary>("GET", "/api/v1/summary"),
  hosts: (query: HostQuery) => call<HostList>("GET", hostsPath(query)),
  host: (id: string) => call<HostPageData>("GET", `/api/v1/hosts/${encodeURIComponent(id)}`),
  runs: (id: string, limit = 50) =>
    call<{ runs: RunView[] }>("GET", `/api/v1/hosts/${encodeURIComponent(id)}/runs?limit=${limit}`),
  converge: (id: string) =>
    call<{ sent: boolean; id: string }>("POST", `/api/v1/hosts/${encodeURIComponent(id)}/converge`, {}),
  refresh: () => call<{ sent: boolean; id: string }>("POST", "/api/v1/fleet/refresh", {}),
  logout: async () => {
    await fetch("/logout", { method: "POST", credentials: "same-origin", headers: HEADERS });
    location.assign("/");
  },
};
