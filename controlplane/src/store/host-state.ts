/**
 * What one ingest message does to a host's row, computed in memory: the stores that write in
 * batches (PostgreSQL) read the rows of a batch's hosts, apply every message in order with these
 * functions, and write back the rows, the new runs and the history rows in a few statements.
 * Pure: no I/O, no clock (the receive time is an argument).
 */
import {
  type AckState,
  advanceAck,
  effectivePresence,
  type ReceiveOptions,
  STALE_AFTER_MS,
  statusApplies,
} from "./logic.js";
import type { HostRow, RunRow } from "./rows.js";
import type { FactsPayload, HeartbeatPayload, ReportPayload, StatusPayload } from "./types.js";

export type HostState = Omit<HostRow, "cred_labels">;

export interface HistoryInsert {
  host: string;
  at: string;
  field: "presence" | "sync";
  from: string | null;
  to: string;
}

export interface RunInsert extends RunRow {
  host: string;
}

/** A row for a host first seen now. */
export function newHostState(id: string): HostState {
  return {
    id,
    session: 0,
    presence: null,
    beat_ms: null,
    last_seen: null,
    version: null,
    mode: null,
    status_commit: null,
    status_last_run: null,
    agent_labels: null,
    sync: null,
    run_commit: null,
    last_seq: null,
    last_run: null,
    drift: null,
    facts: null,
    facts_hash: null,
    ack_up_to: null,
    ack_pending: "[]",
  };
}

/** false: ignored (statusApplies). */
export function applyStatus(
  row: HostState,
  status: StatusPayload,
  receivedAt: Date,
  history: HistoryInsert[],
  options: ReceiveOptions = {},
): boolean {
  if (!statusApplies(row, status, options)) return false;
  const nowMs = receivedAt.getTime();
  presenceChange(row, status.state, nowMs, history);
  row.session = status.session;
  row.presence = status.state;
  // Never backwards: replicas share the ingest, one may apply an older message after another's newer one.
  if (status.state === "online") row.beat_ms = Math.max(row.beat_ms ?? 0, nowMs);
  row.last_seen = receivedAt.toISOString();
  row.version = status.version ?? row.version;
  row.mode = status.mode ?? row.mode;
  if (status.commit !== undefined) row.status_commit = status.commit ?? null;
  if (status.lastRun !== undefined) row.status_last_run = status.lastRun ? JSON.stringify(status.lastRun) : null;
  if (status.labels) row.agent_labels = JSON.stringify(status.labels);
  return true;
}

export function applyHeartbeat(
  row: HostState,
  beat: HeartbeatPayload,
  receivedAt: Date,
  history: HistoryInsert[],
): void {
  if (beat.session < row.session) return;
  const nowMs = receivedAt.getTime();
  // A beat means the host is connected: online, unless its current session said otherwise.
  const newer = beat.session > row.session;
  const presence = newer || row.presence === null || row.presence === "online" ? "online" : row.presence;
  presenceChange(row, presence, nowMs, history);
  row.session = beat.session;
  row.presence = presence;
  if (presence === "online") row.beat_ms = Math.max(row.beat_ms ?? 0, nowMs);
  row.last_seen = receivedAt.toISOString();
}

export function applyFacts(row: HostState, facts: FactsPayload, receivedAt: Date, options: ReceiveOptions = {}): void {
  if (options.replayed && row.facts_hash === facts.hash) return;
  row.facts = JSON.stringify(facts.facts);
  row.facts_hash = facts.hash;
  row.last_seen = receivedAt.toISOString();
}

/**
 * A report whose run was `inserted` (false: (host, runId) already stored): the ack state, and
 * the host's sync state when it is the host's latest run.
 */
export function applyReport(
  row: HostState,
  report: ReportPayload,
  receivedAt: Date,
  inserted: boolean,
  history: HistoryInsert[],
): { duplicate: boolean; ackUpTo: number } {
  const at = receivedAt.toISOString();
  row.last_seen = at;
  const ackState: AckState = { upTo: row.ack_up_to, pending: JSON.parse(row.ack_pending) };
  if (!inserted) return { duplicate: true, ackUpTo: ackState.upTo ?? report.seq };
  const from = report.kind === "summary" ? Math.min(report.fromSeq, report.seq) : report.seq;
  const next = advanceAck(ackState, from, report.seq);
  row.ack_up_to = next.upTo;
  row.ack_pending = JSON.stringify(next.pending);
  if (report.kind !== "summary" && (row.last_seq === null || report.seq > row.last_seq)) {
    const before = row.sync ?? "never-reported";
    if (report.sync !== before) history.push({ host: row.id, at, field: "sync", from: before, to: report.sync });
    row.sync = report.sync;
    row.run_commit = report.commit;
    row.last_seq = report.seq;
    row.last_run = JSON.stringify({
      runId: report.runId,
      seq: report.seq,
      result: report.result,
      endedAt: report.endedAt,
    });
    row.drift = JSON.stringify(report.drift);
  }
  return { duplicate: false, ackUpTo: next.upTo ?? report.seq };
}

/** The runs row of a report. */
export function runInsert(host: string, report: ReportPayload, receivedAt: Date): RunInsert {
  const base = { host, run_id: report.runId, seq: report.seq, received_at: receivedAt.toISOString() };
  if (report.kind === "summary") {
    return {
      ...base,
      kind: "summary",
      git_commit: null,
      source: null,
      mode: "summary",
      result: "summary",
      sync: "unknown",
      started_at: report.firstStartedAt,
      ended_at: report.lastEndedAt,
      changes: "[]",
      drift: "[]",
      errors: "[]",
      fold: JSON.stringify({ fromSeq: report.fromSeq, count: report.count, results: report.results }),
    };
  }
  return {
    ...base,
    kind: "run",
    git_commit: report.commit,
    source: report.source ?? null,
    mode: report.mode,
    result: report.result,
    sync: report.sync,
    started_at: report.startedAt,
    ended_at: report.endedAt,
    changes: JSON.stringify(report.changes),
    drift: JSON.stringify(report.drift),
    errors: JSON.stringify(report.errors),
    fold: null,
  };
}

/**
 * A presence change goes to the history. An online host whose heartbeat was late went stale in
 * between: that is recorded too, at the time it became stale.
 */
function presenceChange(row: HostState, next: string, nowMs: number, history: HistoryInsert[]): void {
  let from: string = effectivePresence(row.presence, row.beat_ms, nowMs);
  if (from === "stale" && row.presence === "online") {
    if (row.beat_ms !== null) {
      const at = new Date(row.beat_ms + STALE_AFTER_MS).toISOString();
      history.push({ host: row.id, at, field: "presence", from: "online", to: "stale" });
    } else from = "unknown";
  }
  if (from !== next) {
    const at = new Date(nowMs).toISOString();
    history.push({ host: row.id, at, field: "presence", from: from === "unknown" ? null : from, to: next });
  }
}
