/**
 * The outbox: reports waiting in state.db until the control plane acknowledges them. Runs append
 * (in the transaction that records the run); the supervisor reads, publishes and deletes on
 * `ack`. This module loads nothing (the database is opened by `state/sqlite.ts`): the
 * supervisor imports it and stays small.
 *
 * - Each report gets the next `seq` of a counter row (`reporting.nextSeq`): per host, strictly
 *   increasing, never reused, even after the rows are deleted.
 * - A row keeps the report's body without its envelope (`v`, `host`, `session`, `seq`): the
 *   supervisor adds those when it publishes (`envelope`), with the session of its connection.
 * - Bounded: beyond `limit` runs, the oldest are folded into one `summary` row (their count,
 *   results, first start and last end), an older summary at the head folded in again.
 */
import type BetterSqlite3 from "better-sqlite3";

/** Runs kept whole in the outbox by default (`broker.outboxLimit`). */
export const DEFAULT_OUTBOX_LIMIT = 500;

/** The outbox and reporting tables (a migration of state.db, `state/db.ts`). */
export const OUTBOX_MIGRATION = `CREATE TABLE outbox (
     seq INTEGER PRIMARY KEY,
     kind TEXT NOT NULL,
     run_id TEXT NOT NULL,
     result TEXT NOT NULL,
     started_at TEXT NOT NULL,
     ended_at TEXT NOT NULL,
     body TEXT NOT NULL
   );
   CREATE TABLE reporting (
     key TEXT PRIMARY KEY,
     value TEXT NOT NULL
   );`;

/** Keys of the `reporting` table. */
export const REPORTING_KEYS = {
  /** The next seq to give. */
  nextSeq: "nextSeq",
  /** Set while the configuration has `broker:` (its outboxLimit): runs then write reports. */
  outboxLimit: "outboxLimit",
  /** JSON: what the status says of the last run (commit, sync, mode, lastRun). */
  status: "status",
  /** JSON of the facts the last run saw, and its sha256. */
  facts: "facts",
  factsHash: "factsHash",
  /** `host:hash` of the facts the supervisor last published (retained). */
  factsPublished: "factsPublished",
} as const;

/** One report to append: its body (no envelope) and what a fold needs. */
export interface OutboxEntry {
  runId: string;
  result: string;
  startedAt: string;
  endedAt: string;
  /** The report without `v`, `host`, `session` and `seq`. */
  body: Record<string, unknown>;
}

export interface OutboxRow {
  seq: number;
  kind: "run" | "summary";
  body: string;
}

interface FoldRow {
  seq: number;
  kind: string;
  result: string;
  started_at: string;
  ended_at: string;
  body: string;
}

type Db = BetterSqlite3.Database;

export function getReporting(db: Db, key: string): string | undefined {
  const row = db.prepare("SELECT value FROM reporting WHERE key = ?").raw().get(key) as [string] | undefined;
  return row?.[0];
}

export function setReporting(db: Db, key: string, value: string | undefined): void {
  if (value === undefined) db.prepare("DELETE FROM reporting WHERE key = ?").run(key);
  else
    db.prepare(
      "INSERT INTO reporting (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
    ).run(key, value);
}

/**
 * Appends a report with the next seq and folds the oldest runs beyond `limit`; call it inside the
 * transaction that records the run. Returns the seq given.
 */
export function appendReport(db: Db, entry: OutboxEntry, limit: number): number {
  const seq = Number(getReporting(db, REPORTING_KEYS.nextSeq) ?? "1");
  setReporting(db, REPORTING_KEYS.nextSeq, String(seq + 1));
  db.prepare(
    "INSERT INTO outbox (seq, kind, run_id, result, started_at, ended_at, body) VALUES (?, 'run', ?, ?, ?, ?, ?)",
  ).run(seq, entry.runId, entry.result, entry.startedAt, entry.endedAt, JSON.stringify(entry.body));
  foldOutbox(db, limit);
  return seq;
}

/** Folds the oldest runs (and a summary before them) into one summary while more than `limit` runs wait. */
export function foldOutbox(db: Db, limit: number): void {
  const runs = (db.prepare("SELECT count(*) FROM outbox WHERE kind = 'run'").raw().get() as [number])[0];
  const excess = runs - limit;
  if (excess <= 0) return;
  const oldest = db
    .prepare("SELECT seq, kind, result, started_at, ended_at, body FROM outbox WHERE kind = 'run' ORDER BY seq LIMIT ?")
    .all(excess) as FoldRow[];
  const last = oldest[oldest.length - 1] as FoldRow;
  const summaries = db
    .prepare("SELECT seq, kind, result, started_at, ended_at, body FROM outbox WHERE kind = 'summary' AND seq < ?")
    .all(last.seq) as FoldRow[];
  let fromSeq = (oldest[0] as FoldRow).seq;
  let count = 0;
  let firstStartedAt = (oldest[0] as FoldRow).started_at;
  let lastEndedAt = last.ended_at;
  const results: Record<string, number> = {};
  for (const s of summaries) {
    const body = JSON.parse(s.body) as { fromSeq: number; count: number; results: Record<string, number> };
    fromSeq = Math.min(fromSeq, body.fromSeq);
    count += body.count;
    for (const [result, n] of Object.entries(body.results)) results[result] = (results[result] ?? 0) + n;
    if (s.started_at < firstStartedAt) firstStartedAt = s.started_at;
    if (s.ended_at > lastEndedAt) lastEndedAt = s.ended_at;
  }
  for (const r of oldest) {
    count++;
    results[r.result] = (results[r.result] ?? 0) + 1;
    if (r.started_at < firstStartedAt) firstStartedAt = r.started_at;
    if (r.ended_at > lastEndedAt) lastEndedAt = r.ended_at;
  }
  // A new id for each fold: the control plane stores by (host, runId), and a fold that grew is a new report.
  const runId = `summary-${fromSeq}-${last.seq}`;
  const body = { kind: "summary", runId, fromSeq, count, firstStartedAt, lastEndedAt, results };
  db.prepare("DELETE FROM outbox WHERE seq <= ?").run(last.seq);
  db.prepare(
    "INSERT INTO outbox (seq, kind, run_id, result, started_at, ended_at, body) VALUES (?, 'summary', ?, 'summary', ?, ?, ?)",
  ).run(last.seq, runId, firstStartedAt, lastEndedAt, JSON.stringify(body));
}

/** Reports after `afterSeq`, oldest first. */
export function pendingReports(db: Db, afterSeq: number, limit: number): OutboxRow[] {
  return db
    .prepare("SELECT seq, kind, body FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?")
    .all(afterSeq, limit) as OutboxRow[];
}

/** Deletes the reports up to `upTo` (acknowledged); returns how many. */
export function ackReports(db: Db, upTo: number): number {
  return db.prepare("DELETE FROM outbox WHERE seq <= ?").run(upTo).changes;
}

export function outboxSize(db: Db): number {
  return (db.prepare("SELECT count(*) FROM outbox").raw().get() as [number])[0];
}

/** The text published: the stored body inside its envelope. */
export function envelope(host: string, session: number, seq: number, body: string): string {
  const rest = body.length > 2 ? `,${body.slice(1)}` : "}";
  return `{"v":1,"host":${JSON.stringify(host)},"session":${session},"seq":${seq}${rest}`;
}
