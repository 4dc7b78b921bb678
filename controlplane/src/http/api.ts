/** The JSON API under `/api/v1/` (bearer token checked by the server before these run). */
import { errorMessage } from "../../../agent/src/errors.js";
import { FLEET_CMD_TOPIC, HOST_ID_PATTERN, hostTopic } from "../../../protocol/topics.js";
import type { HostFilter, HostSummary } from "../store/types.js";
import { SORT_KEYS, type SortKey, sortHosts } from "./host-query.js";
import { HttpError, readJsonObject } from "./respond.js";
import type { HttpDeps } from "./types.js";

/** Bodies of API requests are small JSON objects. */
export const API_BODY_LIMIT = 64 * 1024;
export const DEFAULT_RUNS_LIMIT = 20;
export const MAX_RUNS_LIMIT = 500;
/** The largest page of `GET /api/v1/hosts` (without `limit`: every host, as before). */
export const MAX_HOSTS_LIMIT = 1000;
const HOST_QUERY_KEYS = new Set(["label", "state", "commit", "q", "sort", "order", "limit", "offset"]);

const STATES = new Set([
  "online",
  "stale",
  "offline",
  "lost",
  "unknown",
  "in-sync",
  "drifted",
  "failed",
  "never-reported",
]);
const COMMIT = /^[0-9a-f]{4,64}$/i;

export interface ApiAnswer {
  status: number;
  body: unknown;
}

export function hostId(raw: string): string {
  let id: string;
  try {
    id = decodeURIComponent(raw);
  } catch {
    throw new HttpError(400, "host id is not valid URL encoding");
  }
  if (!HOST_ID_PATTERN.test(id)) throw new HttpError(400, `invalid host id ${JSON.stringify(id)}`);
  return id;
}

/** `?label=k=v&label=...&state=...&commit=...` */
export function hostFilter(query: URLSearchParams): HostFilter {
  const filter: HostFilter = {};
  for (const key of query.keys()) {
    if (!HOST_QUERY_KEYS.has(key)) {
      throw new HttpError(400, `unknown query parameter ${JSON.stringify(key)} (${[...HOST_QUERY_KEYS].join(", ")})`);
    }
  }
  const labels = query.getAll("label");
  if (labels.length > 0) {
    filter.labels = {};
    for (const label of labels) {
      const eq = label.indexOf("=");
      if (eq <= 0) throw new HttpError(400, `label=${label}: expected label=KEY=VALUE`);
      filter.labels[label.slice(0, eq)] = label.slice(eq + 1);
    }
  }
  const state = query.get("state");
  if (state !== null) {
    if (!STATES.has(state)) throw new HttpError(400, `state=${state}: expected one of ${[...STATES].join(", ")}`);
    filter.state = state;
  }
  const commit = query.get("commit");
  if (commit !== null) {
    if (!COMMIT.test(commit)) throw new HttpError(400, `commit=${commit}: expected a commit id (hex)`);
    filter.commit = commit.toLowerCase();
  }
  const name = query.get("q");
  if (name !== null && name !== "") {
    if (name.length > 200) throw new HttpError(400, "q: at most 200 characters");
    filter.name = name;
  }
  return filter;
}

/** `?sort=KEY&order=asc|desc&limit=N&offset=N` */
export function hostPage(query: URLSearchParams): {
  sort: SortKey;
  order: "asc" | "desc";
  limit: number | undefined;
  offset: number;
} {
  const sort = query.get("sort") ?? "id";
  if (!(SORT_KEYS as readonly string[]).includes(sort)) {
    throw new HttpError(400, `sort=${sort}: expected one of ${SORT_KEYS.join(", ")}`);
  }
  const order = query.get("order") ?? "asc";
  if (order !== "asc" && order !== "desc") throw new HttpError(400, `order=${order}: expected asc or desc`);
  const limit = positiveInt(query, "limit", undefined, MAX_HOSTS_LIMIT);
  const offsetRaw = query.get("offset");
  const offset = offsetRaw === null || offsetRaw === "0" ? 0 : (positiveInt(query, "offset", 0, 1e9) ?? 0);
  return { sort: sort as SortKey, order, limit, offset };
}

function positiveInt(query: URLSearchParams, name: string, fallback: number | undefined, max: number) {
  const raw = query.get(name);
  if (raw === null) return fallback;
  const n = Number(raw);
  if (!/^\d+$/.test(raw) || !Number.isSafeInteger(n) || n < 1 || n > max) {
    throw new HttpError(400, `${name}=${raw}: expected a whole number from 1 to ${max}`);
  }
  return n;
}

/**
 * A host as the API shows it: the store's view plus `state`, the contract's name for the host's
 * sync state (in-sync, drifted, failed, never-reported; `online` and `presence` say whether it is
 * connected).
 */
export function withState<T extends HostSummary>(host: T): T & { state: HostSummary["sync"] } {
  return { ...host, state: host.sync };
}

/**
 * `{hosts, total}`, plus `offset` and `limit` when a page was asked for: `total` counts every host
 * the filter matched, `hosts` holds the page (every match without `limit`).
 */
export async function listHosts(deps: HttpDeps, query: URLSearchParams): Promise<ApiAnswer> {
  const filter = hostFilter(query);
  const page = hostPage(query);
  const matched = await deps.store.listHosts(filter, deps.now());
  const sorted = page.sort === "id" && page.order === "asc" ? matched : sortHosts(matched, page.sort, page.order);
  const hosts =
    page.limit === undefined ? sorted.slice(page.offset) : sorted.slice(page.offset, page.offset + page.limit);
  return {
    status: 200,
    body: {
      hosts: hosts.map(withState),
      total: matched.length,
      ...(page.limit !== undefined || page.offset > 0 ? { offset: page.offset, limit: page.limit ?? null } : {}),
    },
  };
}

export async function getHost(deps: HttpDeps, id: string): Promise<ApiAnswer> {
  const host = await deps.store.getHost(id, deps.now());
  if (!host) throw new HttpError(404, `no host ${id}`);
  return { status: 200, body: withState(host) };
}

export async function listRuns(deps: HttpDeps, id: string, query: URLSearchParams): Promise<ApiAnswer> {
  for (const key of query.keys()) {
    if (key !== "limit" && key !== "before") throw new HttpError(400, `unknown query parameter ${JSON.stringify(key)}`);
  }
  const limit = positiveInt(query, "limit", DEFAULT_RUNS_LIMIT, MAX_RUNS_LIMIT) ?? DEFAULT_RUNS_LIMIT;
  const before = positiveInt(query, "before", undefined, Number.MAX_SAFE_INTEGER);
  if (!(await deps.store.getHost(id, deps.now()))) throw new HttpError(404, `no host ${id}`);
  const runs = await deps.store.listRuns(id, before === undefined ? { limit } : { limit, beforeSeq: before });
  return { status: 200, body: { runs } };
}

export async function summary(deps: HttpDeps): Promise<ApiAnswer> {
  return { status: 200, body: await deps.store.summary(deps.now()) };
}

export async function converge(deps: HttpDeps, id: string): Promise<ApiAnswer> {
  if (!(await deps.store.getHost(id, deps.now()))) throw new HttpError(404, `no host ${id}`);
  const commandId = deps.newId();
  const payload = { v: 1, host: id, cmd: "converge", id: commandId };
  await publish(deps, hostTopic(id, "cmd"), payload);
  deps.logger.info("converge sent", { host: id, id: commandId });
  return { status: 202, body: { sent: true, id: commandId } };
}

/** Body (optional): `{"commit": "<sha>", "ref": "<branch>"}`, passed on to the agents. */
export async function refresh(deps: HttpDeps, body: Record<string, unknown>): Promise<ApiAnswer> {
  for (const key of Object.keys(body)) {
    if (key !== "commit" && key !== "ref")
      throw new HttpError(400, `unknown field ${JSON.stringify(key)} (commit, ref)`);
  }
  const { commit, ref } = body;
  if (commit !== undefined && (typeof commit !== "string" || !/^[0-9a-f]{40}([0-9a-f]{24})?$/i.test(commit))) {
    throw new HttpError(400, "commit: expected a full commit id (40 or 64 hex digits)");
  }
  if (ref !== undefined && (typeof ref !== "string" || ref.length === 0 || ref.length > 200)) {
    throw new HttpError(400, "ref: expected a branch name of 1 to 200 characters");
  }
  const id = await publishRefresh(deps, { commit, ref });
  return { status: 202, body: { sent: true, id } };
}

/** Publishes `{"v":1,"cmd":"refresh","commit"?,"ref"?,"id"}` on `driftless/v1/fleet/cmd`. */
export async function publishRefresh(deps: HttpDeps, what: { commit?: string | undefined; ref?: string | undefined }) {
  const id = deps.newId();
  const payload = {
    v: 1,
    cmd: "refresh",
    ...(what.commit ? { commit: what.commit.toLowerCase() } : {}),
    ...(what.ref ? { ref: what.ref } : {}),
    id,
  };
  await publish(deps, FLEET_CMD_TOPIC, payload);
  deps.logger.info("refresh sent", { ...(what.commit ? { commit: what.commit } : {}), id });
  return id;
}

/** Publishes a command (QoS 1); 503 when the broker cannot take it (stopped, or unreachable). */
async function publish(deps: HttpDeps, topic: string, payload: Record<string, unknown>): Promise<void> {
  try {
    await deps.publish(topic, JSON.stringify(payload), { qos: 1 });
  } catch (error) {
    deps.logger.error("command not published", { topic, error: errorMessage(error) });
    throw new HttpError(503, `the command was not published: the MQTT broker refused it (${errorMessage(error)})`);
  }
}

export async function readApiBody(req: Parameters<typeof readJsonObject>[0]) {
  return readJsonObject(req, API_BODY_LIMIT);
}
