/**
 * The fleet store in PostgreSQL (`--database postgres://...`), for several serve replicas sharing
 * one database. Same behaviour as the SQLite store (test/support/store-suite.ts runs on both).
 *
 * - Migrations run at start under a session advisory lock: replicas starting together migrate
 *   one at a time, the others find the schema current.
 * - Ingest writes (status, heartbeat, report, facts) are queued and written in batches, one
 *   transaction per batch and one batch in flight at a time, so a replica's messages of one host
 *   are applied in the order they arrived. A batch locks its hosts' rows (`FOR UPDATE`, in id
 *   order, so two replicas' batches never deadlock), applies every message in memory
 *   (host-state.ts) and writes back with a handful of set-based statements (`unnest` arrays):
 *   the runs with `ON CONFLICT (host, run_id) DO NOTHING`, the host rows, the history, the
 *   retention. A failing batch is retried message by message, so one failing write fails alone.
 * - The hot statements are named prepared statements (pg prepares them once per connection).
 * - A write's promise resolves once its transaction committed; acks are sent only then.
 */
import pg from "pg";
import { FleetError } from "../errors.js";
import {
  applyFacts,
  applyHeartbeat,
  applyReport,
  applyStatus,
  type HistoryInsert,
  type HostState,
  newHostState,
  type RunInsert,
  runInsert,
} from "./host-state.js";
import type { ReceiveOptions } from "./logic.js";
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

/** Each migration runs once, in order, in its own transaction; `driftless_schema` counts them. */
export const PG_MIGRATIONS: readonly string[] = [
  `CREATE TABLE credentials (
     host text PRIMARY KEY,
     hash text NOT NULL,
     labels text NOT NULL,
     created_at timestamptz NOT NULL
   );
   CREATE TABLE hosts (
     id text PRIMARY KEY,
     session bigint NOT NULL DEFAULT 0,
     presence text,
     beat_ms bigint,
     last_seen timestamptz,
     version text,
     mode text,
     status_commit text,
     status_last_run text,
     agent_labels text,
     sync text,
     run_commit text,
     last_seq bigint,
     last_run text,
     drift text,
     facts text,
     facts_hash text,
     ack_up_to bigint,
     ack_pending text NOT NULL DEFAULT '[]'
   );
   CREATE TABLE runs (
     host text NOT NULL,
     run_id text NOT NULL,
     seq bigint NOT NULL,
     kind text NOT NULL,
     git_commit text,
     source text,
     mode text NOT NULL,
     result text NOT NULL,
     sync text NOT NULL,
     started_at text NOT NULL,
     ended_at text NOT NULL,
     changes text NOT NULL,
     drift text NOT NULL,
     errors text NOT NULL,
     fold text,
     received_at timestamptz NOT NULL,
     PRIMARY KEY (host, run_id)
   );
   CREATE INDEX runs_host_seq ON runs (host, seq);
   CREATE TABLE history (
     id bigserial PRIMARY KEY,
     host text NOT NULL,
     at timestamptz NOT NULL,
     field text NOT NULL,
     from_value text,
     to_value text NOT NULL
   );
   CREATE INDEX history_host ON history (host, id);
   CREATE TABLE deliveries (
     id text PRIMARY KEY,
     received_at timestamptz NOT NULL
   );
   CREATE INDEX deliveries_received ON deliveries (received_at);`,
  // Commits as the fleet met them: first reported, or announced by a push (the dashboard's head).
  `CREATE TABLE commits (
     id bigserial UNIQUE,
     git_commit text PRIMARY KEY,
     first_seen timestamptz NOT NULL,
     pushed_at timestamptz,
     ref text
   );
   CREATE INDEX commits_first_seen ON commits (first_seen);
   CREATE INDEX commits_pushed_at ON commits (pushed_at);`,
];

/** The advisory lock key of migrations (any constant; "driftless" in ASCII, truncated). */
const MIGRATION_LOCK = 0x64726966746c;
/** Webhook delivery ids are remembered this long. */
const DELIVERY_RETENTION_MS = 7 * 24 * 3600 * 1000;
/** Messages written in one transaction, at most. */
const MAX_BATCH = 1000;

export interface PgStoreOptions {
  /** Runs kept per host (default DEFAULT_RUNS_PER_HOST, 200). */
  runsPerHost?: number;
  /** Connections in the pool (default 8). */
  poolSize?: number;
}

type IngestOp =
  | { kind: "status"; host: string; payload: StatusPayload; at: Date; options?: ReceiveOptions }
  | { kind: "heartbeat"; host: string; payload: HeartbeatPayload; at: Date }
  | { kind: "report"; host: string; payload: ReportPayload; at: Date }
  | { kind: "facts"; host: string; payload: FactsPayload; at: Date; options?: ReceiveOptions };

interface Queued {
  op: IngestOp;
  resolve: (value: unknown) => void;
  reject: (error: unknown) => void;
}

const HOST_COLUMNS = [
  "session",
  "presence",
  "beat_ms",
  "last_seen",
  "version",
  "mode",
  "status_commit",
  "status_last_run",
  "agent_labels",
  "sync",
  "run_commit",
  "last_seq",
  "last_run",
  "drift",
  "facts",
  "facts_hash",
  "ack_up_to",
  "ack_pending",
] as const satisfies ReadonlyArray<keyof HostState>;
const HOST_TYPES: Record<(typeof HOST_COLUMNS)[number], string> = {
  session: "bigint",
  presence: "text",
  beat_ms: "bigint",
  last_seen: "timestamptz",
  version: "text",
  mode: "text",
  status_commit: "text",
  status_last_run: "text",
  agent_labels: "text",
  sync: "text",
  run_commit: "text",
  last_seq: "bigint",
  last_run: "text",
  drift: "text",
  facts: "text",
  facts_hash: "text",
  ack_up_to: "bigint",
  ack_pending: "text",
};
const RUN_COLUMNS = [
  "host",
  "run_id",
  "seq",
  "kind",
  "git_commit",
  "source",
  "mode",
  "result",
  "sync",
  "started_at",
  "ended_at",
  "changes",
  "drift",
  "errors",
  "fold",
  "received_at",
] as const satisfies ReadonlyArray<keyof RunInsert>;

/** `UPDATE hosts` of these columns from one array per column: many host rows in one statement. */
function updateHosts(columns: ReadonlyArray<(typeof HOST_COLUMNS)[number]>): string {
  return `UPDATE hosts h SET ${columns.map((c) => `${c} = u.${c}`).join(", ")}
  FROM unnest($1::text[], ${columns.map((c, i) => `$${i + 2}::${HOST_TYPES[c]}[]`).join(", ")})
    AS u(id, ${columns.join(", ")})
  WHERE h.id = u.id`;
}
/** What a heartbeat changes: hosts that only beat get this narrow update (the bulk of the traffic). */
const BEAT_COLUMNS = ["session", "presence", "beat_ms", "last_seen"] as const;
const UPDATE_HOSTS = updateHosts(HOST_COLUMNS);
const UPDATE_BEATS = updateHosts(BEAT_COLUMNS);
const INSERT_RUNS = `INSERT INTO runs (${RUN_COLUMNS.join(", ")})
  SELECT * FROM unnest(${RUN_COLUMNS.map((c, i) => `$${i + 1}::${c === "seq" ? "bigint" : c === "received_at" ? "timestamptz" : "text"}[]`).join(", ")})
  ON CONFLICT (host, run_id) DO NOTHING`;
/** Keeps the newest $2 runs of each host in $1 (the cut found once per host, by the index). */
const PRUNE_RUNS = `DELETE FROM runs r USING (
    SELECT t.h, c.seq FROM unnest($1::text[]) AS t(h)
    CROSS JOIN LATERAL (SELECT seq FROM runs WHERE host = t.h ORDER BY seq DESC OFFSET $2 - 1 LIMIT 1) c
  ) cut WHERE r.host = cut.h AND r.seq < cut.seq`;
const PRUNE_HISTORY = `DELETE FROM history x USING (
    SELECT t.h, c.id FROM unnest($1::text[]) AS t(h)
    CROSS JOIN LATERAL (SELECT id FROM history WHERE host = t.h ORDER BY id DESC OFFSET $2 - 1 LIMIT 1) c
  ) cut WHERE x.host = cut.h AND x.id < cut.id`;
const HOST_SELECT = "SELECT h.*, c.labels AS cred_labels FROM hosts h LEFT JOIN credentials c ON c.host = h.id";
/** The columns a host's summary needs (listing 10,000 hosts leaves facts and drift on the disk). */
const HOST_LIST_SELECT = `SELECT h.id, h.presence, h.beat_ms, h.last_seen, h.version, h.mode, h.status_commit,
    h.status_last_run, h.agent_labels, h.sync, h.run_commit, h.last_seq, h.last_run, c.labels AS cred_labels
  FROM hosts h LEFT JOIN credentials c ON c.host = h.id`;

/** bigint as a number (seqs, sessions and milliseconds fit), timestamptz as an ISO string. */
function typeParsers(): pg.CustomTypesConfig {
  const timestamp = pg.types.getTypeParser(pg.types.builtins.TIMESTAMPTZ);
  return {
    getTypeParser: ((oid: number, format?: string) => {
      if (oid === pg.types.builtins.INT8) return (text: string) => Number(text);
      if (oid === pg.types.builtins.TIMESTAMPTZ) return (text: string) => (timestamp(text) as Date).toISOString();
      return pg.types.getTypeParser(oid, format as "text");
    }) as pg.CustomTypesConfig["getTypeParser"],
  };
}

export class PgFleetStore implements FleetStore {
  readonly #pool: pg.Pool;
  readonly #runsPerHost: number;
  #queue: Queued[] = [];
  #flushing: Promise<void> | null = null;
  #closed = false;

  private constructor(pool: pg.Pool, options: PgStoreOptions) {
    this.#pool = pool;
    this.#runsPerHost = options.runsPerHost ?? DEFAULT_RUNS_PER_HOST;
  }

  /** Connects to `url` (postgres:// or postgresql://) and applies the migrations not yet applied. */
  static async open(url: string, options: PgStoreOptions = {}): Promise<PgFleetStore> {
    // Idle connections kept a minute: a connection made again costs a backend start (~ms).
    const pool = new pg.Pool({
      connectionString: url,
      max: options.poolSize ?? 8,
      idleTimeoutMillis: 60_000,
      types: typeParsers(),
    });
    // An idle connection that breaks (database restarted) must not crash the process.
    pool.on("error", () => {});
    try {
      await migrate(pool);
    } catch (error) {
      await pool.end().catch(() => {});
      if (error instanceof FleetError) throw error;
      throw new FleetError(`cannot open the fleet database ${redact(url)}: ${(error as Error).message}`, {
        code: "ESTORE",
        retryable: true,
        cause: error,
      });
    }
    return new PgFleetStore(pool, options);
  }

  async schemaVersion(): Promise<number> {
    const result = await this.#pool.query<{ version: number }>("SELECT version FROM driftless_schema");
    return result.rows[0]?.version ?? 0;
  }

  // --- credentials -------------------------------------------------------------------------

  async addCredential(host: string, passwordHash: string, labels: Record<string, string> = {}): Promise<void> {
    await this.#transaction(async (client) => {
      const inserted = await client.query(
        `INSERT INTO credentials (host, hash, labels, created_at) VALUES ($1, $2, $3, now())
           ON CONFLICT (host) DO NOTHING`,
        [host, passwordHash, JSON.stringify(labels)],
      );
      if (inserted.rowCount === 0) throw new FleetError(`host ${host} already has credentials`, { code: "EEXISTS" });
      await client.query("INSERT INTO hosts (id) VALUES ($1) ON CONFLICT (id) DO NOTHING", [host]);
    });
  }

  /** Revokes a host's credentials and forgets what the store knew of it (runs, history). */
  async removeCredential(host: string): Promise<boolean> {
    return this.#transaction(async (client) => {
      const removed = (await client.query("DELETE FROM credentials WHERE host = $1", [host])).rowCount ?? 0;
      const known = (await client.query("DELETE FROM hosts WHERE id = $1", [host])).rowCount ?? 0;
      await client.query("DELETE FROM runs WHERE host = $1", [host]);
      await client.query("DELETE FROM history WHERE host = $1", [host]);
      return removed > 0 || known > 0;
    });
  }

  async credentialHash(host: string): Promise<string | null> {
    const result = await this.#query<{ hash: string }>(
      "credential_hash",
      "SELECT hash FROM credentials WHERE host = $1",
      [host],
    );
    return result[0]?.hash ?? null;
  }

  async listCredentials(): Promise<string[]> {
    const rows = await this.#query<{ host: string }>(
      "credential_list",
      "SELECT host FROM credentials ORDER BY host",
      [],
    );
    return rows.map((row) => row.host);
  }

  // --- ingest ------------------------------------------------------------------------------

  recordStatus(host: string, status: StatusPayload, receivedAt: Date, options?: ReceiveOptions): Promise<boolean> {
    return this.#enqueue({ kind: "status", host, payload: status, at: receivedAt, ...(options ? { options } : {}) });
  }

  recordHeartbeat(host: string, beat: HeartbeatPayload, receivedAt: Date): Promise<void> {
    return this.#enqueue({ kind: "heartbeat", host, payload: beat, at: receivedAt });
  }

  recordReport(
    host: string,
    report: ReportPayload,
    receivedAt: Date,
  ): Promise<{ duplicate: boolean; ackUpTo: number }> {
    return this.#enqueue({ kind: "report", host, payload: report, at: receivedAt });
  }

  recordFacts(host: string, facts: FactsPayload, receivedAt: Date, options?: ReceiveOptions): Promise<void> {
    return this.#enqueue({ kind: "facts", host, payload: facts, at: receivedAt, ...(options ? { options } : {}) });
  }

  async recordPush(push: { commit: string; ref: string }, receivedAt: Date): Promise<void> {
    const at = receivedAt.toISOString();
    await this.#query(
      "commit_push",
      `INSERT INTO commits (git_commit, first_seen, pushed_at, ref) VALUES ($1, $2, $2, $3)
         ON CONFLICT (git_commit) DO UPDATE SET pushed_at = excluded.pushed_at, ref = excluded.ref`,
      [push.commit.toLowerCase(), at, push.ref],
    );
  }

  async markDelivery(id: string, receivedAt: Date): Promise<boolean> {
    return this.#transaction(async (client) => {
      const cutoff = new Date(receivedAt.getTime() - DELIVERY_RETENTION_MS).toISOString();
      await client.query("DELETE FROM deliveries WHERE received_at < $1", [cutoff]);
      const inserted = await client.query(
        "INSERT INTO deliveries (id, received_at) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING",
        [id, receivedAt.toISOString()],
      );
      return (inserted.rowCount ?? 0) > 0;
    });
  }

  // --- queries -----------------------------------------------------------------------------

  async listHosts(filter: HostFilter, now: Date): Promise<HostSummary[]> {
    const rows = await this.#query<HostRow>("host_list", `${HOST_LIST_SELECT} ORDER BY h.id`, []);
    return rows.map((row) => toSummary(row, now.getTime())).filter((host) => matches(host, filter));
  }

  async getHost(host: string, now: Date): Promise<HostDetail | null> {
    const [row] = await this.#query<HostRow>("host_get", `${HOST_SELECT} WHERE h.id = $1`, [host]);
    if (!row) return null;
    const history = await this.#query<HistoryRow>(
      "history_get",
      "SELECT at, field, from_value, to_value FROM history WHERE host = $1 ORDER BY id DESC LIMIT $2",
      [host, HISTORY_LIMIT],
    );
    return toDetail(row, history, now.getTime());
  }

  async listRuns(host: string, options: { limit: number; beforeSeq?: number }): Promise<RunView[]> {
    const rows = await this.#query<RunRow>(
      "run_list",
      "SELECT * FROM runs WHERE host = $1 AND seq < $2 ORDER BY seq DESC, received_at DESC LIMIT $3",
      [host, options.beforeSeq ?? Number.MAX_SAFE_INTEGER, Math.max(0, options.limit)],
    );
    return rows.map(toRunView);
  }

  async summary(now: Date): Promise<FleetSummary> {
    return summarize(await this.listHosts({}, now), await this.#head());
  }

  async #head(): Promise<FleetHead | null> {
    const [pushed] = await this.#query<{ git_commit: string; ref: string | null; pushed_at: string }>(
      "head_pushed",
      "SELECT git_commit, ref, pushed_at FROM commits WHERE pushed_at IS NOT NULL ORDER BY pushed_at DESC, id DESC LIMIT 1",
      [],
    );
    if (pushed) return { commit: pushed.git_commit, ref: pushed.ref, at: pushed.pushed_at, from: "push" };
    const [seen] = await this.#query<{ git_commit: string; first_seen: string }>(
      "head_seen",
      "SELECT git_commit, first_seen FROM commits ORDER BY first_seen DESC, id DESC LIMIT 1",
      [],
    );
    return seen ? { commit: seen.git_commit, ref: null, at: seen.first_seen, from: "seen" } : null;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    while (this.#flushing) await this.#flushing;
    await this.#pool.end();
  }

  // --- internals ---------------------------------------------------------------------------

  async #query<R extends pg.QueryResultRow>(name: string, text: string, values: unknown[]): Promise<R[]> {
    try {
      return (await this.#pool.query<R>({ name, text, values })).rows;
    } catch (error) {
      throw storeError(error);
    }
  }

  async #transaction<T>(work: (client: pg.PoolClient) => Promise<T>): Promise<T> {
    const client = await this.#pool.connect().catch((error: unknown) => {
      throw storeError(error);
    });
    try {
      await client.query("BEGIN");
      const value = await work(client);
      await client.query("COMMIT");
      return value;
    } catch (error) {
      await client.query("ROLLBACK").catch(() => {});
      throw error instanceof FleetError ? error : storeError(error);
    } finally {
      client.release();
    }
  }

  #enqueue<T>(op: IngestOp): Promise<T> {
    if (this.#closed) return Promise.reject(new FleetError("the fleet store is closed", { code: "ESTORE" }));
    return new Promise<T>((resolve, reject) => {
      this.#queue.push({ op, resolve: resolve as (value: unknown) => void, reject });
      if (!this.#flushing) this.#flushing = this.#drain();
    });
  }

  /** Writes batches until the queue is empty; what arrives meanwhile makes the next batch. */
  async #drain(): Promise<void> {
    // Let the current event-loop turn queue what it has.
    await new Promise<void>((resolve) => setImmediate(resolve));
    while (this.#queue.length > 0) {
      const batch = this.#queue.splice(0, MAX_BATCH);
      try {
        const outcomes = await this.#transaction((client) => this.#writeBatch(client, batch));
        for (const [i, item] of batch.entries()) item.resolve(outcomes[i]);
      } catch (error) {
        if (batch.length === 1) (batch[0] as Queued).reject(error);
        else {
          // One of them failed the whole transaction: each alone, so only that one fails.
          for (const item of batch) {
            await this.#transaction((client) => this.#writeBatch(client, [item])).then(
              ([value]) => item.resolve(value),
              item.reject,
            );
          }
        }
      }
    }
    this.#flushing = null;
  }

  async #writeBatch(client: pg.PoolClient, batch: Queued[]): Promise<unknown[]> {
    const ids = [...new Set(batch.map((item) => item.op.host))].sort();
    // Rows created and locked in id order: two replicas' batches wait for each other, never deadlock.
    await client.query({
      name: "host_ensure",
      text: "INSERT INTO hosts (id) SELECT unnest($1::text[]) ORDER BY 1 ON CONFLICT (id) DO NOTHING",
      values: [ids],
    });
    const locked = await client.query<HostRow>({
      name: "host_lock",
      text: "SELECT *, NULL AS cred_labels FROM hosts WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE",
      values: [ids],
    });
    const rows = new Map<string, HostState>();
    for (const { cred_labels: _labels, ...row } of locked.rows) rows.set(row.id, row);
    // A row the insert above found but the lock did not: `hosts remove` deleted it in between.
    // Nothing of that host is written: its runs and history would be rows of no host, back in
    // sight if the name were added again.
    const gone = new Set(ids.filter((id) => !rows.has(id)));

    const reports = batch.filter((item) => item.op.kind === "report");
    const stored = new Set<string>();
    if (reports.length > 0) {
      const existing = await client.query<{ host: string; run_id: string }>({
        name: "run_exists",
        text: `SELECT host, run_id FROM runs WHERE (host, run_id) IN
                 (SELECT * FROM unnest($1::text[], $2::text[]))`,
        values: [reports.map((item) => item.op.host), reports.map((item) => (item.op.payload as ReportPayload).runId)],
      });
      for (const row of existing.rows) stored.add(`${row.host}\n${row.run_id}`);
    }

    const history: HistoryInsert[] = [];
    const runs: RunInsert[] = [];
    const outcomes: unknown[] = [];
    /** Commits met in this batch (a recorded status or a new report), with when: the dashboard's head. */
    const seen = new Map<string, string>();
    const see = (commit: string | null | undefined, at: Date) => {
      if (commit && !seen.has(commit)) seen.set(commit, at.toISOString());
    };
    /** What a removed host's messages would write: computed (their outcomes), then dropped. */
    const dropped = { history: [] as HistoryInsert[], runs: [] as RunInsert[], see: () => {} };
    for (const { op } of batch) {
      let row = rows.get(op.host);
      if (!row) {
        row = newHostState(op.host);
        rows.set(op.host, row);
      }
      const into = gone.has(op.host) ? dropped : { history, runs, see };
      if (op.kind === "status") {
        const recorded = applyStatus(row, op.payload, op.at, into.history, op.options);
        if (recorded) into.see(op.payload.commit, op.at);
        outcomes.push(recorded);
      } else if (op.kind === "heartbeat") outcomes.push(applyHeartbeat(row, op.payload, op.at, into.history));
      else if (op.kind === "facts") outcomes.push(applyFacts(row, op.payload, op.at, op.options));
      else {
        const key = `${op.host}\n${op.payload.runId}`;
        const inserted = !stored.has(key);
        if (inserted) {
          stored.add(key);
          into.runs.push(runInsert(op.host, op.payload, op.at));
          if (op.payload.kind !== "summary") into.see(op.payload.commit, op.at);
        }
        outcomes.push(applyReport(row, op.payload, op.at, inserted, into.history));
      }
    }
    for (const id of gone) rows.delete(id);

    // Rows only heartbeats touched are written narrowly: the text columns (facts, drift) unchanged.
    const wide = new Set(batch.filter((item) => item.op.kind !== "heartbeat").map((item) => item.op.host));
    const hosts = [...rows.values()].filter((row) => wide.has(row.id));
    const beating = [...rows.values()].filter((row) => !wide.has(row.id));
    if (runs.length > 0) {
      await client.query({
        name: "run_insert",
        text: INSERT_RUNS,
        values: RUN_COLUMNS.map((column) => runs.map((run) => run[column])),
      });
    }
    if (seen.size > 0) {
      await client.query({
        name: "commit_seen",
        text: `INSERT INTO commits (git_commit, first_seen)
                 SELECT c, t FROM unnest($1::text[], $2::timestamptz[]) WITH ORDINALITY AS s(c, t, n) ORDER BY n
                 ON CONFLICT (git_commit) DO NOTHING`,
        values: [[...seen.keys()], [...seen.values()]],
      });
    }
    if (hosts.length > 0) {
      await client.query({
        name: "host_update",
        text: UPDATE_HOSTS,
        values: [hosts.map((row) => row.id), ...HOST_COLUMNS.map((column) => hosts.map((row) => row[column]))],
      });
    }
    if (beating.length > 0) {
      await client.query({
        name: "host_beat",
        text: UPDATE_BEATS,
        values: [beating.map((row) => row.id), ...BEAT_COLUMNS.map((column) => beating.map((row) => row[column]))],
      });
    }
    if (history.length > 0) {
      await client.query({
        name: "history_insert",
        text: `INSERT INTO history (host, at, field, from_value, to_value)
                 SELECT host, at, field, from_value, to_value
                 FROM unnest($1::text[], $2::timestamptz[], $3::text[], $4::text[], $5::text[])
                 WITH ORDINALITY AS h(host, at, field, from_value, to_value, n) ORDER BY n`,
        values: [
          history.map((h) => h.host),
          history.map((h) => h.at),
          history.map((h) => h.field),
          history.map((h) => h.from),
          history.map((h) => h.to),
        ],
      });
      await client.query({
        name: "history_prune",
        text: PRUNE_HISTORY,
        values: [[...new Set(history.map((h) => h.host))], HISTORY_LIMIT],
      });
    }
    if (runs.length > 0) {
      await client.query({
        name: "run_prune",
        text: PRUNE_RUNS,
        values: [[...new Set(runs.map((run) => run.host))], this.#runsPerHost],
      });
    }
    return outcomes;
  }
}

async function migrate(pool: pg.Pool): Promise<void> {
  const client = await pool.connect();
  try {
    // A session lock: held across the migrations' transactions, released on unlock or disconnect.
    await client.query("SELECT pg_advisory_lock($1)", [MIGRATION_LOCK]);
    try {
      await client.query("CREATE TABLE IF NOT EXISTS driftless_schema (version integer NOT NULL)");
      const current = await client.query<{ version: number }>("SELECT version FROM driftless_schema");
      const version = current.rows[0]?.version ?? 0;
      if (current.rows.length === 0) await client.query("INSERT INTO driftless_schema (version) VALUES (0)");
      if (version > PG_MIGRATIONS.length) {
        throw new FleetError(
          `the fleet database has schema ${version}, newer than this driftlessctl knows (${PG_MIGRATIONS.length}); upgrade driftlessctl`,
          { code: "ESTORE" },
        );
      }
      for (let i = version; i < PG_MIGRATIONS.length; i++) {
        await client.query("BEGIN");
        try {
          await client.query(PG_MIGRATIONS[i] as string);
          await client.query("UPDATE driftless_schema SET version = $1", [i + 1]);
          await client.query("COMMIT");
        } catch (error) {
          await client.query("ROLLBACK").catch(() => {});
          throw error;
        }
      }
    } finally {
      await client.query("SELECT pg_advisory_unlock($1)", [MIGRATION_LOCK]).catch(() => {});
    }
  } finally {
    client.release();
  }
}

function storeError(error: unknown): FleetError {
  return new FleetError(`fleet database: ${(error as Error).message}`, {
    code: "ESTORE",
    retryable: true,
    cause: error,
  });
}

/** The URL without its password, for messages. */
export function redact(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = "***";
    return parsed.toString();
  } catch {
    return "postgres://(unparsable URL)";
  }
}
