/**
 * Stored rows as the stores read them, and their views: shared by every FleetStore, so SQLite
 * and PostgreSQL answer the same. JSON columns are text; times are ISO strings.
 */
import { effectivePresence, STALE_AFTER_MS } from "./logic.js";
import type {
  FleetHead,
  FleetSummary,
  HistoryEntry,
  HostDetail,
  HostFilter,
  HostSummary,
  Presence,
  RunView,
  SyncState,
} from "./types.js";

export interface HostRow {
  id: string;
  session: number;
  presence: string | null;
  beat_ms: number | null;
  last_seen: string | null;
  version: string | null;
  mode: string | null;
  status_commit: string | null;
  status_last_run: string | null;
  agent_labels: string | null;
  sync: string | null;
  run_commit: string | null;
  last_seq: number | null;
  last_run: string | null;
  drift: string | null;
  facts: string | null;
  facts_hash: string | null;
  ack_up_to: number | null;
  ack_pending: string;
  cred_labels: string | null;
}

export interface RunRow {
  run_id: string;
  seq: number;
  kind: string;
  git_commit: string | null;
  source: string | null;
  mode: string;
  result: string;
  sync: string;
  started_at: string;
  ended_at: string;
  changes: string;
  drift: string;
  errors: string;
  fold: string | null;
  received_at: string;
}

export function toSummary(row: HostRow, nowMs: number): HostSummary {
  const presence = effectivePresence(row.presence, row.beat_ms, nowMs);
  // Labels: the agent's own, overridden by the ones given with `hosts add` (an operator's word
  // weighs more than a host's).
  const labels = { ...parse<Record<string, string>>(row.agent_labels, {}), ...parse(row.cred_labels, {}) };
  return {
    id: row.id,
    presence,
    online: presence === "online",
    sync: (row.sync ?? "never-reported") as SyncState,
    commit: row.last_seq !== null ? row.run_commit : row.status_commit,
    lastSeen: row.last_seen,
    labels,
    version: row.version,
    mode: row.mode,
    lastRun: parse(row.last_run, null) ?? parse(row.status_last_run, null),
  };
}

export function matches(host: HostSummary, filter: HostFilter): boolean {
  if (filter.state !== undefined && host.presence !== filter.state && host.sync !== filter.state) return false;
  if (filter.commit !== undefined && !(host.commit ?? "").startsWith(filter.commit)) return false;
  if (filter.name !== undefined && !host.id.toLowerCase().includes(filter.name.toLowerCase())) return false;
  for (const [key, value] of Object.entries(filter.labels ?? {})) {
    if (host.labels[key] !== value) return false;
  }
  return true;
}

export function toRunView(row: RunRow): RunView {
  const view: RunView = {
    runId: row.run_id,
    seq: row.seq,
    kind: row.kind as RunView["kind"],
    commit: row.git_commit,
    mode: row.mode,
    result: row.result,
    sync: row.sync,
    startedAt: row.started_at,
    endedAt: row.ended_at,
    changes: JSON.parse(row.changes),
    drift: JSON.parse(row.drift),
    errors: JSON.parse(row.errors),
    receivedAt: row.received_at,
  };
  if (row.source !== null) view.source = row.source;
  if (row.fold !== null) view.fold = JSON.parse(row.fold);
  return view;
}

export function parse<T>(text: string | null, fallback: T): T {
  return text === null ? fallback : (JSON.parse(text) as T);
}

export interface HistoryRow {
  at: string;
  field: string;
  from_value: string | null;
  to_value: string;
}

/** A host's detail from its row and its history rows (newest first). */
export function toDetail(row: HostRow, historyRows: HistoryRow[], nowMs: number): HostDetail {
  const history = historyRows.map(
    (h): HistoryEntry => ({ at: h.at, field: h.field as HistoryEntry["field"], from: h.from_value, to: h.to_value }),
  );
  // Staleness is noticed by absence: show it in the history when it is the case now.
  if (row.presence === "online" && effectivePresence(row.presence, row.beat_ms, nowMs) === "stale") {
    const at = new Date((row.beat_ms ?? nowMs) + STALE_AFTER_MS).toISOString();
    history.unshift({ at, field: "presence", from: "online", to: "stale" });
  }
  return {
    ...toSummary(row, nowMs),
    facts: parse(row.facts, null),
    drift: parse(row.drift, []),
    session: row.session,
    history,
  };
}

/** The fleet's counts; `head` is the newest commit of the tracked branch (the store knows it). */
export function summarize(hosts: HostSummary[], head: FleetHead | null): FleetSummary {
  const presence: Record<Presence, number> = { online: 0, stale: 0, offline: 0, lost: 0, unknown: 0 };
  const sync: Record<SyncState, number> = { "in-sync": 0, drifted: 0, failed: 0, "never-reported": 0 };
  const commits: Record<string, number> = {};
  const labels: Record<string, Record<string, number>> = {};
  for (const host of hosts) {
    presence[host.presence]++;
    sync[host.sync]++;
    if (host.commit !== null) commits[host.commit] = (commits[host.commit] ?? 0) + 1;
    for (const [key, value] of Object.entries(host.labels)) {
      const values = labels[key] ?? {};
      values[value] = (values[value] ?? 0) + 1;
      labels[key] = values;
    }
  }
  return { hosts: hosts.length, presence, sync, commits, head, labels };
}
