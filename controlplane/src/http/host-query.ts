/**
 * Sorting and paging of `GET /api/v1/hosts` (pure): the dashboard asks for one page of a sorted,
 * filtered fleet, so that a fleet of 10,000 hosts never travels to the browser at once.
 */
import type { HostSummary, Presence, SyncState } from "../store/types.js";

export const SORT_KEYS = [
  "id",
  "presence",
  "sync",
  "commit",
  "lastSeen",
  "lastRun",
  "version",
  "mode",
  "labels",
] as const;
export type SortKey = (typeof SORT_KEYS)[number];
export type SortOrder = "asc" | "desc";

/** States sort by meaning (healthy first), not by spelling. */
const PRESENCE_RANK: Record<Presence, number> = { online: 0, stale: 1, offline: 2, lost: 3, unknown: 4 };
const SYNC_RANK: Record<SyncState, number> = { "in-sync": 0, drifted: 1, failed: 2, "never-reported": 3 };

type Value = string | number | null;

function value(host: HostSummary, key: SortKey): Value {
  switch (key) {
    case "id":
      return host.id;
    case "presence":
      return PRESENCE_RANK[host.presence];
    case "sync":
      return SYNC_RANK[host.sync];
    case "commit":
      return host.commit;
    case "lastSeen":
      return host.lastSeen;
    case "lastRun":
      return host.lastRun?.endedAt ?? null;
    case "version":
      return host.version;
    case "mode":
      return host.mode;
    case "labels":
      return Object.entries(host.labels)
        .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
        .map(([k, v]) => `${k}=${v}`)
        .join(",");
  }
}

function compare(a: Value, b: Value): number {
  if (a === b) return 0;
  // Missing values last, whichever the order.
  if (a === null) return 1;
  if (b === null) return -1;
  return a < b ? -1 : 1;
}

/** A new array sorted by `key` (ties by id, ascending); null values last in both orders. */
export function sortHosts<T extends HostSummary>(hosts: readonly T[], key: SortKey, order: SortOrder): T[] {
  const sign = order === "asc" ? 1 : -1;
  const keyed = hosts.map((host) => ({ host, v: value(host, key) }));
  keyed.sort((x, y) => {
    const byValue = x.v === null || y.v === null ? compare(x.v, y.v) : sign * compare(x.v, y.v);
    return byValue !== 0 ? byValue : compare(x.host.id, y.host.id);
  });
  return keyed.map((k) => k.host);
}
