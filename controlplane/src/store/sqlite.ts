/**
 * The fleet store in SQLite (`fleet.db` in the data directory): WAL mode, numbered migrations.
 *
 * Writes from the ingest are queued and committed together, one transaction per event-loop turn
 * (each write in its own savepoint, so one failing write fails alone): thousands of reports a
 * second cost a few commits, and a write's promise resolves only once its transaction committed.
 */
import * as path from "node:path";
import type BetterSqlite3 from "better-sqlite3";
import { openSqlite } from "../../../agent/src/state/sqlite.js";
import { FleetError } from "../errors.js";
import {
  type AckState,
  advanceAck,
  effectivePresence,
  type ReceiveOptions,
  STALE_AFTER_MS,
  statusApplies,
} from "./logic.js";
import {
  type HistoryRow,
  type HostRow,
  matches,
  type RunRow,
  summarize,
  toDetail,
  toRunView,
  toSummary,
} from "./rows.js";
import {
  DEFAULT_RUNS_PER_HOST,
  type FactsPayload,
  type FleetHead,
  type FleetStore,
  type FleetSummary,
  type HeartbeatPayload,
  HISTORY_LIMIT,
  type HostDetail,
  type HostFilter,
  type HostSummary,
  type ReportPayload,
  type RunView,
  type StatusPayload,
} from "./types.js";

/** Each migration runs once, in order; `PRAGMA user_version` counts those applied. */
export const MIGRATIONS: readonly string[] = [
  `CREATE TABLE credentials (
     host TEXT PRIMARY KEY,
     hash TEXT NOT NULL,
     labels TEXT NOT NULL,
     created_at TEXT NOT NULL
   );
   CREATE TABLE hosts (
     id TEXT PRIMARY KEY,
     session INTEGER NOT NULL DEFAULT 0,
     presence TEXT,
     beat_ms INTEGER,
     last_seen TEXT,
     version TEXT,
     mode TEXT,
     status_commit TEXT,
     status_last_run TEXT,
     agent_labels TEXT,
     sync TEXT,
     run_commit TEXT,
     last_seq INTEGER,
     last_run TEXT,
     drift TEXT,
     facts TEXT,
     facts_hash TEXT,
     ack_up_to INTEGER,
     ack_pending TEXT NOT NULL DEFAULT '[]'
   );
   CREATE TABLE runs (
     host TEXT NOT NULL,
     run_id TEXT NOT NULL,
     seq INTEGER NOT NULL,
     kind TEXT NOT NULL,
     git_commit TEXT,
     mode TEXT NOT NULL,
     result TEXT NOT NULL,
     sync TEXT NOT NULL,
     started_at TEXT NOT NULL,
     ended_at TEXT NOT NULL,
     changes TEXT NOT NULL,
     drift TEXT NOT NULL,
     errors TEXT NOT NULL,
     fold TEXT,
     received_at TEXT NOT NULL,
     PRIMARY KEY (host, run_id)
   );
   CREATE INDEX runs_host_seq ON runs(host, seq);
   CREATE TABLE history (
     id INTEGER PRIMARY KEY AUTOINCREMENT,
     host TEXT NOT NULL,
     at TEXT NOT NULL,
     field TEXT NOT NULL,
     from_value TEXT,
     to_value TEXT NOT NULL
   );
   CREATE INDEX history_host ON history(host, id);
   CREATE TABLE deliveries (
     id TEXT PRIMARY KEY,
     received_at TEXT NOT NULL
   );
   CREATE INDEX deliveries_received ON deliveries(received_at);`,
  // Where a run's desired state came from (git, offline, directory), as the agent reported it.
  "ALTER TABLE runs ADD COLUMN source TEXT;",
  // Commits as the fleet met them: first reported, or announced by a push (the dashboard's head).
  `CREATE TABLE commits (
     git_commit TEXT PRIMARY KEY,
     first_seen TEXT NOT NULL,
     pushed_at TEXT,
     ref TEXT
   );
   CREATE INDEX commits_first_seen ON commits(first_seen);
   CREATE INDEX commits_pushed_at ON commits(pushed_at);`,
];

/** Webhook delivery ids are remembered this long. */
const DELIVERY_RETENTION_MS = 7 * 24 * 3600 * 1000;

export interface SqliteStoreOptions {
  /** Runs kept per host (default DEFAULT_RUNS_PER_HOST, 200). */
  runsPerHost?: number;
}

const HOST_SELECT = `SELECT h.*, c.labels AS cred_labels FROM hosts h LEFT JOIN credentials c ON c.host = h.id`;
/** The columns a host's summary needs (listing 10,000 hosts leaves facts and drift on the disk). */
const HOST_LIST_SELECT = `SELECT h.id, h.presence, h.beat_ms, h.last_seen, h.version, h.mode, h.status_commit,
    h.status_last_run, h.agent_labels, h.sync, h.run_commit, h.last_seq, h.last_run, c.labels AS cred_labels
  FROM hosts h LEFT JOIN credentials c ON c.host = h.id`;

export class SqliteFleetStore implements FleetStore {
  readonly #db: BetterSqlite3.Database;
  readonly #runsPerHost: number;
  #queue: Array<{ work: () => unknown; resolve: (value: unknown) => void; reject: (error: unknown) => void }> = [];
  #flushScheduled = false;
  readonly #statements = new Map<string, BetterSqlite3.Statement>();
  #closed = false;

  private constructor(db: BetterSqlite3.Database, options: SqliteStoreOptions) {
    this.#db = db;
    this.#runsPerHost = options.runsPerHost ?? DEFAULT_RUNS_PER_HOST;
  }

  /** Opens (creating and migrating) `fleet.db` in `dataDir`. */
  static open(dataDir: string, options: SqliteStoreOptions = {}): SqliteFleetStore {
    return SqliteFleetStore.openFile(path.join(dataDir, "fleet.db"), options);
  }

  static openFile(file: string, options: SqliteStoreOptions = {}): SqliteFleetStore {
    let db: BetterSqlite3.Database;
    try {
      // As the agent opens its state: from the driftlessctl binary, the addon is an asset, cached
      // in `native/` beside the database.
      db = openSqlite(file);
      db.pragma("journal_mode = WAL");
      // FULL: an acknowledged report survives a power cut too (the agent has dropped it); writes are
      // batched per event-loop turn, so this costs one sync per batch.
      db.pragma("synchronous = FULL");
      db.pragma("busy_timeout = 5000");
      migrate(db, file);
    } catch (error) {
      if (error instanceof FleetError) throw error;
      throw new FleetError(`cannot open fleet database ${file}: ${(error as Error).message}`, {
        code: "ESTORE",
        cause: error,
      });
    }
    return new SqliteFleetStore(db, options);
  }

  /** Statements are prepared once (preparing costs more than running a small one). */
  #sql(text: string): BetterSqlite3.Statement {
    let statement = this.#statements.get(text);
    if (!statement) {
      statement = this.#db.prepare(text);
      this.#statements.set(text, statement);
    }
    return statement;
  }

  get schemaVersion(): number {
    return this.#db.pragma("user_version", { simple: true }) as number;
  }

  // --- credentials -------------------------------------------------------------------------

  async addCredential(host: string, passwordHash: string, labels: Record<string, string> = {}): Promise<void> {
    await this.#write(() => {
      const result = this.#sql(
        "INSERT OR IGNORE INTO credentials (host, hash, labels, created_at) VALUES (?, ?, ?, ?)",
      ).run(host, passwordHash, JSON.stringify(labels), new Date().toISOString());
      if (result.changes === 0) throw new FleetError(`host ${host} already has credentials`, { code: "EEXISTS" });
      this.#sql("INSERT OR IGNORE INTO hosts (id) VALUES (?)").run(host);
    });
  }

  /** Revokes a host's credentials and forgets what the store knew of it (runs, history). */
  async removeCredential(host: string): Promise<boolean> {
    return this.#write(() => {
      const removed = this.#sql("DELETE FROM credentials WHERE host = ?").run(host).changes > 0;
      const known = this.#sql("DELETE FROM hosts WHERE id = ?").run(host).changes > 0;
      this.#sql("DELETE FROM runs WHERE host = ?").run(host);
      this.#sql("DELETE FROM history WHERE host = ?").run(host);
      return removed || known;
    });
  }

  async credentialHash(host: string): Promise<string | null> {
    const row = this.#sql("SELECT hash FROM credentials WHERE host = ?").get(host) as { hash: string } | undefined;
    return row?.hash ?? null;
  }

  async listCredentials(): Promise<string[]> {
    return (this.#sql("SELECT host FROM credentials ORDER BY host").pluck().all() as string[]).slice();
  }

  // --- ingest ------------------------------------------------------------------------------

  recordStatus(host: string, status: StatusPayload, receivedAt: Date, options?: ReceiveOptions): Promise<boolean> {
    return this.#write(() => {
      const row = this.#hostRow(host);
      if (!statusApplies(row, status, options)) return false;
      const at = receivedAt.toISOString();
      const nowMs = receivedAt.getTime();
      this.#presenceChange(row, status.state, nowMs);
      this.#sql(
        `UPDATE hosts SET session = @session, presence = @presence, beat_ms = @beatMs, last_seen = @at,
             version = COALESCE(@version, version), mode = COALESCE(@mode, mode),
             status_commit = CASE WHEN @hasCommit THEN @commit ELSE status_commit END,
             status_last_run = CASE WHEN @hasLastRun THEN @lastRun ELSE status_last_run END,
             agent_labels = COALESCE(@labels, agent_labels)
           WHERE id = @host`,
      ).run({
        host,
        session: status.session,
        presence: status.state,
        beatMs: status.state === "online" ? Math.max(row.beat_ms ?? 0, nowMs) : row.beat_ms,
        at,
        version: status.version ?? null,
        mode: status.mode ?? null,
        hasCommit: status.commit === undefined ? 0 : 1,
        commit: status.commit ?? null,
        hasLastRun: status.lastRun === undefined ? 0 : 1,
        lastRun: status.lastRun ? JSON.stringify(status.lastRun) : null,
        labels: status.labels ? JSON.stringify(status.labels) : null,
      });
      if (status.commit) this.#seenCommit(status.commit, at);
      return true;
    });
  }

  recordHeartbeat(host: string, beat: HeartbeatPayload, receivedAt: Date): Promise<void> {
    return this.#write(() => {
      const row = this.#hostRow(host);
      if (beat.session < row.session) return;
      const nowMs = receivedAt.getTime();
      // A beat means the host is connected: online, unless its current session said otherwise.
      const newer = beat.session > row.session;
      const presence = newer || row.presence === null || row.presence === "online" ? "online" : row.presence;
      this.#presenceChange(row, presence, nowMs);
      this.#sql("UPDATE hosts SET session = ?, presence = ?, beat_ms = ?, last_seen = ? WHERE id = ?").run(
        beat.session,
        presence,
        presence === "online" ? Math.max(row.beat_ms ?? 0, nowMs) : row.beat_ms,
        receivedAt.toISOString(),
        host,
      );
    });
  }

  recordReport(
    host: string,
    report: ReportPayload,
    receivedAt: Date,
  ): Promise<{ duplicate: boolean; ackUpTo: number }> {
    return this.#write(() => {
      const row = this.#hostRow(host);
      const at = receivedAt.toISOString();
      const ackState: AckState = { upTo: row.ack_up_to, pending: JSON.parse(row.ack_pending) };
      const inserted = this.#insertRun(host, report, at);
      if (!inserted) {
        this.#sql("UPDATE hosts SET last_seen = ? WHERE id = ?").run(at, host);
        return { duplicate: true, ackUpTo: ackState.upTo ?? report.seq };
      }
      const from = report.kind === "summary" ? Math.min(report.fromSeq, report.seq) : report.seq;
      const next = advanceAck(ackState, from, report.seq);
      const latest = report.kind !== "summary" && (row.last_seq === null || report.seq > row.last_seq);
      if (latest && report.sync !== (row.sync ?? "never-reported")) {
        this.#history(host, at, "sync", row.sync ?? "never-reported", report.sync);
      }
      // One update: the ack state, and the host's sync state when this is its latest run.
      this.#sql(
        `UPDATE hosts SET last_seen = @at, ack_up_to = @upTo, ack_pending = @pending,
           sync = CASE WHEN @latest THEN @sync ELSE sync END,
           run_commit = CASE WHEN @latest THEN @commit ELSE run_commit END,
           last_seq = CASE WHEN @latest THEN @seq ELSE last_seq END,
           last_run = CASE WHEN @latest THEN @lastRun ELSE last_run END,
           drift = CASE WHEN @latest THEN @drift ELSE drift END
         WHERE id = @host`,
      ).run({
        host,
        at,
        upTo: next.upTo,
        pending: JSON.stringify(next.pending),
        latest: latest ? 1 : 0,
        sync: report.kind === "summary" ? null : report.sync,
        commit: report.kind === "summary" ? null : report.commit,
        seq: report.seq,
        lastRun:
          report.kind === "summary"
            ? null
            : JSON.stringify({ runId: report.runId, seq: report.seq, result: report.result, endedAt: report.endedAt }),
        drift: report.kind === "summary" ? null : JSON.stringify(report.drift),
      });
      if (report.kind !== "summary" && report.commit) this.#seenCommit(report.commit, at);
      this.#prune(host);
      return { duplicate: false, ackUpTo: next.upTo ?? report.seq };
    });
  }

  recordFacts(host: string, facts: FactsPayload, receivedAt: Date, options?: ReceiveOptions): Promise<void> {
    return this.#write(() => {
      const row = this.#hostRow(host);
      if (options?.replayed && row.facts_hash === facts.hash) return;
      this.#sql("UPDATE hosts SET facts = ?, facts_hash = ?, last_seen = ? WHERE id = ?").run(
        JSON.stringify(facts.facts),
        facts.hash,
        receivedAt.toISOString(),
        host,
      );
    });
  }

  async recordPush(push: { commit: string; ref: string }, receivedAt: Date): Promise<void> {
    await this.#write(() => {
      const at = receivedAt.toISOString();
      this.#sql(
        `INSERT INTO commits (git_commit, first_seen, pushed_at, ref) VALUES (?, ?, ?, ?)
           ON CONFLICT (git_commit) DO UPDATE SET pushed_at = excluded.pushed_at, ref = excluded.ref`,
      ).run(push.commit.toLowerCase(), at, at, push.ref);
    });
  }

  async markDelivery(id: string, receivedAt: Date): Promise<boolean> {
    return this.#write(() => {
      const cutoff = new Date(receivedAt.getTime() - DELIVERY_RETENTION_MS).toISOString();
      this.#sql("DELETE FROM deliveries WHERE received_at < ?").run(cutoff);
      return (
        this.#sql("INSERT OR IGNORE INTO deliveries (id, received_at) VALUES (?, ?)").run(id, receivedAt.toISOString())
          .changes > 0
      );
    });
  }

  // --- queries -----------------------------------------------------------------------------

  async listHosts(filter: HostFilter, now: Date): Promise<HostSummary[]> {
    const rows = this.#sql(`${HOST_LIST_SELECT} ORDER BY h.id`).all() as HostRow[];
    return rows.map((row) => toSummary(row, now.getTime())).filter((host) => matches(host, filter));
  }

  async getHost(host: string, now: Date): Promise<HostDetail | null> {
    const row = this.#sql(`${HOST_SELECT} WHERE h.id = ?`).get(host) as HostRow | undefined;
    if (!row) return null;
    const history = this.#sql(
      "SELECT at, field, from_value, to_value FROM history WHERE host = ? ORDER BY id DESC LIMIT ?",
    ).all(host, HISTORY_LIMIT) as HistoryRow[];
    return toDetail(row, history, now.getTime());
  }

  async listRuns(host: string, options: { limit: number; beforeSeq?: number }): Promise<RunView[]> {
    const rows = this.#sql(
      "SELECT * FROM runs WHERE host = ? AND seq < ? ORDER BY seq DESC, received_at DESC LIMIT ?",
    ).all(host, options.beforeSeq ?? Number.MAX_SAFE_INTEGER, Math.max(0, options.limit)) as RunRow[];
    return rows.map(toRunView);
  }

  async summary(now: Date): Promise<FleetSummary> {
    return summarize(await this.listHosts({}, now), this.#head());
  }

  #head(): FleetHead | null {
    const pushed = this.#sql(
      "SELECT git_commit, ref, pushed_at FROM commits WHERE pushed_at IS NOT NULL ORDER BY pushed_at DESC, rowid DESC LIMIT 1",
    ).get() as { git_commit: string; ref: string | null; pushed_at: string } | undefined;
    if (pushed) return { commit: pushed.git_commit, ref: pushed.ref, at: pushed.pushed_at, from: "push" };
    const seen = this.#sql(
      "SELECT git_commit, first_seen FROM commits ORDER BY first_seen DESC, rowid DESC LIMIT 1",
    ).get() as { git_commit: string; first_seen: string } | undefined;
    return seen ? { commit: seen.git_commit, ref: null, at: seen.first_seen, from: "seen" } : null;
  }

  #seenCommit(commit: string, at: string): void {
    this.#sql("INSERT OR IGNORE INTO commits (git_commit, first_seen) VALUES (?, ?)").run(commit, at);
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#flush();
    this.#closed = true;
    this.#db.close();
  }

  // --- internals ---------------------------------------------------------------------------

  /** Queues a write; all writes queued in one event-loop turn commit in one transaction. */
  #write<T>(work: () => T): Promise<T> {
    if (this.#closed) return Promise.reject(new FleetError("the fleet store is closed", { code: "ESTORE" }));
    return new Promise<T>((resolve, reject) => {
      this.#queue.push({ work, resolve: resolve as (value: unknown) => void, reject });
      if (!this.#flushScheduled) {
        this.#flushScheduled = true;
        setImmediate(() => this.#flush());
      }
    });
  }

  #flush(): void {
    this.#flushScheduled = false;
    const batch = this.#queue;
    this.#queue = [];
    if (batch.length === 0) return;
    const outcomes: Array<{ ok: boolean; value: unknown }> = [];
    try {
      this.#db.transaction(() => {
        for (const item of batch) {
          try {
            outcomes.push({ ok: true, value: this.#db.transaction(item.work)() });
          } catch (error) {
            outcomes.push({ ok: false, value: error });
          }
        }
      })();
    } catch (error) {
      const failure = new FleetError(`fleet database write failed: ${(error as Error).message}`, {
        code: "ESTORE",
        retryable: true,
        cause: error,
      });
      for (const item of batch) item.reject(failure);
      return;
    }
    batch.forEach((item, i) => {
      const outcome = outcomes[i] as { ok: boolean; value: unknown };
      if (outcome.ok) item.resolve(outcome.value);
      else item.reject(outcome.value);
    });
  }

  /** The host's row, created on its first message. */
  #hostRow(host: string): HostRow {
    this.#sql("INSERT OR IGNORE INTO hosts (id) VALUES (?)").run(host);
    return this.#sql("SELECT *, NULL AS cred_labels FROM hosts WHERE id = ?").get(host) as HostRow;
  }

  /**
   * Records a presence change in the history. An online host whose heartbeat was late went
   * stale in between: that is recorded too, at the time it became stale.
   */
  #presenceChange(row: HostRow, next: string, nowMs: number): void {
    let from: string = effectivePresence(row.presence, row.beat_ms, nowMs);
    if (from === "stale" && row.presence === "online") {
      const staleAt = new Date((row.beat_ms ?? nowMs) + STALE_AFTER_MS);
      if (row.beat_ms !== null) this.#history(row.id, staleAt.toISOString(), "presence", "online", "stale");
      else from = "unknown";
    }
    if (from !== next) {
      this.#history(row.id, new Date(nowMs).toISOString(), "presence", from === "unknown" ? null : from, next);
    }
  }

  #history(host: string, at: string, field: "presence" | "sync", from: string | null, to: string): void {
    this.#sql("INSERT INTO history (host, at, field, from_value, to_value) VALUES (?, ?, ?, ?, ?)").run(
      host,
      at,
      field,
      from,
      to,
    );
    this.#sql(
      `DELETE FROM history WHERE host = ? AND id < (SELECT id FROM history WHERE host = ? ORDER BY id DESC
         LIMIT 1 OFFSET ?)`,
    ).run(host, host, HISTORY_LIMIT - 1);
  }

  /** false when (host, runId) is already stored. */
  #insertRun(host: string, report: ReportPayload, receivedAt: string): boolean {
    const insert = this.#sql(
      `INSERT OR IGNORE INTO runs (host, run_id, seq, kind, git_commit, source, mode, result, sync, started_at,
         ended_at, changes, drift, errors, fold, received_at)
       VALUES (@host, @runId, @seq, @kind, @commit, @source, @mode, @result, @sync, @startedAt, @endedAt, @changes,
         @drift, @errors, @fold, @receivedAt)`,
    );
    const values =
      report.kind === "summary"
        ? {
            kind: "summary",
            commit: null,
            source: null,
            mode: "summary",
            result: "summary",
            sync: "unknown",
            startedAt: report.firstStartedAt,
            endedAt: report.lastEndedAt,
            changes: "[]",
            drift: "[]",
            errors: "[]",
            fold: JSON.stringify({ fromSeq: report.fromSeq, count: report.count, results: report.results }),
          }
        : {
            kind: "run",
            commit: report.commit,
            source: report.source ?? null,
            mode: report.mode,
            result: report.result,
            sync: report.sync,
            startedAt: report.startedAt,
            endedAt: report.endedAt,
            changes: JSON.stringify(report.changes),
            drift: JSON.stringify(report.drift),
            errors: JSON.stringify(report.errors),
            fold: null,
          };
    return insert.run({ host, runId: report.runId, seq: report.seq, receivedAt, ...values }).changes > 0;
  }

  /** Keeps the newest `runsPerHost` runs of a host. */
  #prune(host: string): void {
    this.#sql(
      `DELETE FROM runs WHERE host = ? AND seq < (SELECT seq FROM runs WHERE host = ? ORDER BY seq DESC
         LIMIT 1 OFFSET ?)`,
    ).run(host, host, this.#runsPerHost - 1);
  }
}

function migrate(db: BetterSqlite3.Database, file: string): void {
  const version = db.pragma("user_version", { simple: true }) as number;
  if (version > MIGRATIONS.length) {
    throw new FleetError(
      `fleet database ${file} has schema ${version}, newer than this driftlessctl knows (${MIGRATIONS.length}); upgrade driftlessctl`,
      { code: "ESTORE" },
    );
  }
  for (let i = version; i < MIGRATIONS.length; i++) {
    db.transaction(() => {
      db.exec(MIGRATIONS[i] as string);
      db.pragma(`user_version = ${i + 1}`);
    })();
  }
}
