/**
 * The agent's state database (`state.db` in the state directory): SQLite in WAL mode with
 * numbered migrations. It keeps every run and the last known state of each file resource.
 */
import { createRequire } from "node:module";
import * as path from "node:path";
import type BetterSqlite3 from "better-sqlite3";
import { DriftlessError } from "../errors.js";
import type { FileRecord } from "../resources/file/read.js";

export interface RunRecord {
  id: string;
  startedAt: string;
  endedAt: string;
  /** `dir:<sha256>` for a directory source, the commit id for Git. */
  source: string;
  commit: string | null;
  mode: "apply" | "plan" | "report";
  /** in-sync, changed, failed, interrupted, error */
  result: string;
  changes: unknown[];
  errors: unknown[];
  summary: Record<string, number>;
}

/** Each migration runs once, in order; `PRAGMA user_version` counts those applied. */
const MIGRATIONS: string[] = [
  `CREATE TABLE runs (
     id TEXT PRIMARY KEY,
     started_at TEXT NOT NULL,
     ended_at TEXT NOT NULL,
     source TEXT NOT NULL,
     git_commit TEXT,
     mode TEXT NOT NULL,
     result TEXT NOT NULL,
     changes TEXT NOT NULL,
     errors TEXT NOT NULL,
     summary TEXT NOT NULL
   );
   CREATE INDEX runs_started ON runs(started_at);
   CREATE TABLE file_records (
     resource TEXT PRIMARY KEY,
     fingerprint TEXT NOT NULL,
     content_hash TEXT NOT NULL,
     recorded_at_ns TEXT NOT NULL
   );`,
  `CREATE TABLE source_state (
     key TEXT PRIMARY KEY,
     value TEXT NOT NULL
   );`,
];

/** What the agent remembers of its Git source between runs. */
export interface SourceState {
  /** The last commit that was trusted and validated: what the host converges from. */
  goodCommit?: string;
  /** The last commit fetched, trusted or not. */
  fetchedCommit?: string;
  lastFetchAt?: string;
  lastFetchError?: string;
  /** The URL and ref the cache follows; a change starts a new history. */
  remote?: string;
}

export class StateStore {
  readonly #db: BetterSqlite3.Database;

  private constructor(db: BetterSqlite3.Database) {
    this.#db = db;
  }

  /** Opens (creating and migrating) the database in `stateDir`. */
  static open(stateDir: string, options: { readonly?: boolean } = {}): StateStore {
    const Database = loadSqlite();
    const file = path.join(stateDir, "state.db");
    let db: BetterSqlite3.Database;
    try {
      db = new Database(file, { readonly: options.readonly ?? false, fileMustExist: options.readonly ?? false });
    } catch (error) {
      throw new DriftlessError(`cannot open state database ${file}: ${(error as Error).message}`, {
        code: "ESTATE",
        phase: "state",
        cause: error,
      });
    }
    if (!options.readonly) {
      db.pragma("journal_mode = WAL");
      db.pragma("synchronous = NORMAL");
      db.pragma("busy_timeout = 5000");
      migrate(db);
    }
    return new StateStore(db);
  }

  get schemaVersion(): number {
    return this.#db.pragma("user_version", { simple: true }) as number;
  }

  fileRecords(): Map<string, FileRecord> {
    const rows = this.#db
      .prepare("SELECT resource, fingerprint, content_hash, recorded_at_ns FROM file_records")
      .raw()
      .all() as [string, string, string, string][];
    return new Map(
      rows.map(([resource, fingerprint, contentHash, at]) => [
        resource,
        { fingerprint, contentHash, recordedAtNs: BigInt(at) },
      ]),
    );
  }

  saveFileRecords(records: Map<string, FileRecord>, forget: Iterable<string> = []): void {
    const upsert = this.#db.prepare(
      `INSERT INTO file_records (resource, fingerprint, content_hash, recorded_at_ns) VALUES (?, ?, ?, ?)
       ON CONFLICT(resource) DO UPDATE SET fingerprint = excluded.fingerprint, content_hash = excluded.content_hash,
       recorded_at_ns = excluded.recorded_at_ns`,
    );
    const remove = this.#db.prepare("DELETE FROM file_records WHERE resource = ?");
    this.#db.transaction(() => {
      for (const [resource, r] of records)
        upsert.run(resource, r.fingerprint, r.contentHash, r.recordedAtNs.toString());
      for (const resource of forget) remove.run(resource);
    })();
  }

  sourceState(): SourceState {
    const rows = this.#db.prepare("SELECT key, value FROM source_state").raw().all() as [string, string][];
    return Object.fromEntries(rows) as SourceState;
  }

  /** Sets the given keys; `undefined` removes a key. */
  updateSourceState(update: Partial<Record<keyof SourceState, string | undefined>>): void {
    const set = this.#db.prepare(
      "INSERT INTO source_state (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
    );
    const remove = this.#db.prepare("DELETE FROM source_state WHERE key = ?");
    this.#db.transaction(() => {
      for (const [key, value] of Object.entries(update)) {
        if (value === undefined) remove.run(key);
        else set.run(key, value);
      }
    })();
  }

  recordRun(run: RunRecord): void {
    this.#db
      .prepare(
        `INSERT INTO runs (id, started_at, ended_at, source, git_commit, mode, result, changes, errors, summary)
         VALUES (@id, @startedAt, @endedAt, @source, @commit, @mode, @result, @changes, @errors, @summary)`,
      )
      .run({
        ...run,
        changes: JSON.stringify(run.changes),
        errors: JSON.stringify(run.errors),
        summary: JSON.stringify(run.summary),
      });
  }

  lastRuns(limit: number): RunRecord[] {
    const rows = this.#db
      .prepare("SELECT * FROM runs ORDER BY started_at DESC, rowid DESC LIMIT ?")
      .all(limit) as Array<Record<string, string>>;
    return rows.map((row) => ({
      id: row.id as string,
      startedAt: row.started_at as string,
      endedAt: row.ended_at as string,
      source: row.source as string,
      commit: (row.git_commit as string | null) ?? null,
      mode: row.mode as RunRecord["mode"],
      result: row.result as string,
      changes: JSON.parse(row.changes as string),
      errors: JSON.parse(row.errors as string),
      summary: JSON.parse(row.summary as string),
    }));
  }

  close(): void {
    this.#db.close();
  }
}

function migrate(db: BetterSqlite3.Database): void {
  const version = db.pragma("user_version", { simple: true }) as number;
  if (version > MIGRATIONS.length) {
    throw new DriftlessError(
      `state database schema ${version} is newer than this agent knows (${MIGRATIONS.length}); upgrade the agent`,
      { code: "ESTATE", phase: "state" },
    );
  }
  for (let i = version; i < MIGRATIONS.length; i++) {
    db.transaction(() => {
      db.exec(MIGRATIONS[i] as string);
      db.pragma(`user_version = ${i + 1}`);
    })();
  }
}

/** better-sqlite3 is a native addon: loaded with require, only when the state is needed. */
function loadSqlite(): typeof BetterSqlite3 {
  const require = createRequire(import.meta.url);
  return require("better-sqlite3") as typeof BetterSqlite3;
}
