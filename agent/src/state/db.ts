/**
 * The agent's state database (`state.db` in the state directory): SQLite in WAL mode with
 * numbered migrations. It keeps the last runs (`keepRuns`, each change's diff capped), the
 * last known state of each file resource, and the compiled desired state of the latest load. A
 * database SQLite cannot read is moved aside and a fresh one created, so a host keeps converging.
 */
import { createHash } from "node:crypto";
import * as path from "node:path";
import type BetterSqlite3 from "better-sqlite3";
import { DriftlessError } from "../errors.js";
import { systemClock } from "../host/clock.js";
import { HostFs } from "../host/fs.js";
import { appendReport, getReporting, OUTBOX_MIGRATION, REPORTING_KEYS, setReporting } from "../report/outbox.js";
import {
  canonicalJson,
  type ReportExtras,
  runReportEntry,
  sha256Hex,
  statusLabels,
  syncOf,
} from "../report/payload.js";
import type { FileRecord } from "../resources/file/read.js";
import type { ActualPackage } from "../resources/types.js";
import { openSqlite } from "./sqlite.js";

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
  OUTBOX_MIGRATION,
  // The compiled desired state (state/compiled.ts): one entry, the latest, replaced on write. Its
  // resources are rows of their own, so that neither writing nor reading it builds one large string.
  `CREATE TABLE compiled_desired (
     slot INTEGER PRIMARY KEY CHECK (slot = 1),
     cache_key TEXT NOT NULL,
     facts_used TEXT NOT NULL,
     header TEXT NOT NULL,
     stored_at TEXT NOT NULL
   );
   CREATE TABLE compiled_resources (
     seq INTEGER PRIMARY KEY,
     resource TEXT NOT NULL
   );`,
  // A run's changes in pieces of CHANGES_PER_ROW (recordRun): thousands of changes are never one
  // string. Runs recorded before this migration keep theirs in runs.changes, which reads still take.
  `CREATE TABLE run_changes (
     run_id TEXT NOT NULL,
     n INTEGER NOT NULL,
     changes TEXT NOT NULL,
     PRIMARY KEY (run_id, n)
   );`,
  // The last read of installed packages (engine/run.ts, storedPackages): one entry, replaced on write.
  `CREATE TABLE package_read (
     slot INTEGER PRIMARY KEY CHECK (slot = 1),
     read_key TEXT NOT NULL,
     recorded_at_ns TEXT NOT NULL,
     packages TEXT NOT NULL
   );`,
];

/** The first schema version with the run_changes table. */
export const RUN_CHANGES_VERSION = 5;

/** What a recorded run tells the control plane (report/outbox.ts): only with a broker configured. */
export interface RunReporting extends ReportExtras {
  /**
   * `broker.outboxLimit` when the configuration has a broker; null when it has none (no report
   * is written); undefined when the configuration did not load (as the last run that loaded it said).
   */
  outboxLimit: number | null | undefined;
  /** The configuration's mode and labels, for the status; absent (configuration not loaded): as before. */
  mode?: "enforce" | "report";
  labels?: Record<string, string>;
  /** The facts the run saw; published (retained) by the supervisor when their hash changes. */
  facts?: Record<string, unknown>;
}

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

/** The compiled desired state as stored (state/compiled.ts encodes and decodes it). */
export interface CompiledRow {
  key: string;
  /** JSON: the fact paths the load read, with what they held. */
  factsUsed: string;
  /** JSON: what the entry says besides its resources (format, profiles, count). */
  header: string;
  storedAt: string;
}

/** Runs kept by default: older ones are deleted as each new one is recorded. */
export const DEFAULT_KEEP_RUNS = 100;
/** A change's diff longer than this (UTF-8 bytes) is stored as its hash and size. */
export const MAX_STORED_DIFF_BYTES = 64 * 1024;
/**
 * Changes stored per row of run_changes: a piece's JSON stays around 100 KB (a few hundred bytes a
 * change), so recording 10,000 changes never holds them all as one string, nor SQLite one row.
 */
export const CHANGES_PER_ROW = 250;

export interface StateStoreOptions {
  /** Open for reading only (plan, status): nothing is created, migrated or moved aside. */
  readonly?: boolean;
  /** How many runs to keep (the newest); default DEFAULT_KEEP_RUNS. */
  keepRuns?: number | undefined;
  /** Told when a corrupt database was moved aside; default: a line on standard error. */
  onWarning?: ((message: string) => void) | undefined;
}

/** SQLite's codes for a file that is not (or no longer) a readable database. */
const CORRUPT_CODES = new Set(["SQLITE_CORRUPT", "SQLITE_NOTADB"]);

export class StateStore {
  readonly #db: BetterSqlite3.Database;
  readonly #keepRuns: number;

  private constructor(db: BetterSqlite3.Database, keepRuns: number) {
    this.#db = db;
    this.#keepRuns = keepRuns;
  }

  /**
   * Opens (creating and migrating) the database in `stateDir`. A file SQLite reports as corrupt
   * or not a database is renamed to `state.db.corrupt-<time>` (with its -wal and -shm files), a
   * warning says so, and a fresh database takes its place; read-only, it is an ESTATE error.
   */
  static open(stateDir: string, options: StateStoreOptions = {}): StateStore {
    const keepRuns = options.keepRuns ?? DEFAULT_KEEP_RUNS;
    if (!Number.isInteger(keepRuns) || keepRuns < 1) {
      throw new DriftlessError(`keepRuns must be a whole number of at least 1, not ${keepRuns}`, {
        code: "ESTATE",
        phase: "state",
      });
    }
    const file = path.resolve(stateDir, "state.db");
    try {
      return new StateStore(openDatabase(file, options.readonly ?? false), keepRuns);
    } catch (error) {
      if (options.readonly || !isCorrupt(error)) throw stateError(file, error, options.readonly ?? false);
      const aside = moveAside(file);
      const warn = options.onWarning ?? ((message: string) => process.stderr.write(`${message}\n`));
      warn(
        `state database ${file} is corrupt (${(error as Error).message}); moved it to ${aside} and started a fresh one`,
      );
      try {
        return new StateStore(openDatabase(file, false), keepRuns);
      } catch (again) {
        throw stateError(file, again, false);
      }
    }
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

  /** Stores each record; a null record removes the resource's (taken one at a time: none is kept). */
  saveFileRecords(records: Iterable<[resource: string, record: FileRecord | null]>): void {
    const upsert = this.#db.prepare(
      `INSERT INTO file_records (resource, fingerprint, content_hash, recorded_at_ns) VALUES (?, ?, ?, ?)
       ON CONFLICT(resource) DO UPDATE SET fingerprint = excluded.fingerprint, content_hash = excluded.content_hash,
       recorded_at_ns = excluded.recorded_at_ns`,
    );
    const remove = this.#db.prepare("DELETE FROM file_records WHERE resource = ?");
    this.#db.transaction(() => {
      for (const [resource, r] of records) {
        if (r) upsert.run(resource, r.fingerprint, r.contentHash, r.recordedAtNs.toString());
        else remove.run(resource);
      }
    })();
  }

  /** The package read stored under `key`, or null (none, or another key's). */
  packageRead(key: string): { recordedAtNs: bigint; packages: Map<string, ActualPackage> } | null {
    const row = this.#db
      .prepare("SELECT recorded_at_ns, packages FROM package_read WHERE slot = 1 AND read_key = ?")
      .raw()
      .get(key) as [string, string] | undefined;
    if (!row) return null;
    try {
      return { recordedAtNs: BigInt(row[0]), packages: new Map(JSON.parse(row[1]) as [string, ActualPackage][]) };
    } catch {
      return null; // unreadable: the run reads the packages again and replaces it
    }
  }

  /** Replaces the stored package read (stored as JSON of [name, package] pairs). */
  savePackageRead(key: string, recordedAtNs: bigint, packages: Map<string, ActualPackage>): void {
    this.#db
      .prepare(
        `INSERT INTO package_read (slot, read_key, recorded_at_ns, packages) VALUES (1, ?, ?, ?)
         ON CONFLICT(slot) DO UPDATE SET read_key = excluded.read_key, recorded_at_ns = excluded.recorded_at_ns,
         packages = excluded.packages`,
      )
      .run(key, recordedAtNs.toString(), JSON.stringify([...packages]));
  }

  /** The compiled desired state stored under `key`, or null (none, or another key's). */
  compiledDesired(key: string): CompiledRow | null {
    const row = this.#db
      .prepare("SELECT facts_used, header, stored_at FROM compiled_desired WHERE slot = 1 AND cache_key = ?")
      .raw()
      .get(key) as [string, string, string] | undefined;
    return row ? { key, factsUsed: row[0], header: row[1], storedAt: row[2] } : null;
  }

  /** The resources of the compiled desired state, one JSON text each, in order. */
  compiledResources(): IterableIterator<string> {
    const rows = this.#db.prepare("SELECT resource FROM compiled_resources ORDER BY seq").pluck().iterate();
    return rows as IterableIterator<string>;
  }

  /** Replaces the compiled desired state (one entry is kept: the latest) in one transaction. */
  saveCompiledDesired(row: CompiledRow, resources: Iterable<string>): void {
    const insertResource = this.#db.prepare("INSERT INTO compiled_resources (seq, resource) VALUES (?, ?)");
    this.#db.transaction(() => {
      this.#db.exec("DELETE FROM compiled_desired; DELETE FROM compiled_resources;");
      this.#db
        .prepare("INSERT INTO compiled_desired (slot, cache_key, facts_used, header, stored_at) VALUES (1, ?, ?, ?, ?)")
        .run(row.key, row.factsUsed, row.header, row.storedAt);
      let seq = 0;
      for (const resource of resources) insertResource.run(seq++, resource);
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

  /**
   * Records a run and, in the same transaction, deletes all but the newest `keepRuns` runs. A
   * change's diff over MAX_STORED_DIFF_BYTES, or one that is not text, is stored as
   * `diffOmitted: { sha256, bytes }` instead. The changes go to run_changes, CHANGES_PER_ROW to a
   * row, one piece built at a time; runs.changes holds an empty list.
   */
  recordRun(run: RunRecord, reporting?: RunReporting): void {
    const insert = this.#db.prepare(
      `INSERT INTO runs (id, started_at, ended_at, source, git_commit, mode, result, changes, errors, summary)
       VALUES (@id, @startedAt, @endedAt, @source, @commit, @mode, @result, '[]', @errors, @summary)`,
    );
    const insertChanges = this.#db.prepare("INSERT INTO run_changes (run_id, n, changes) VALUES (?, ?, ?)");
    const prune = this.#db.prepare(
      `DELETE FROM runs WHERE rowid NOT IN (SELECT rowid FROM runs ORDER BY started_at DESC, rowid DESC LIMIT ?)`,
    );
    const pruneChanges = this.#db.prepare("DELETE FROM run_changes WHERE run_id NOT IN (SELECT id FROM runs)");
    this.#db.transaction(() => {
      insert.run({
        id: run.id,
        startedAt: run.startedAt,
        endedAt: run.endedAt,
        source: run.source,
        commit: run.commit,
        mode: run.mode,
        result: run.result,
        errors: JSON.stringify(run.errors),
        summary: JSON.stringify(run.summary),
      });
      for (let n = 0; n * CHANGES_PER_ROW < run.changes.length; n++) {
        const piece = run.changes.slice(n * CHANGES_PER_ROW, (n + 1) * CHANGES_PER_ROW);
        insertChanges.run(run.id, n, JSON.stringify(piece.map(boundedChange)));
      }
      prune.run(this.#keepRuns);
      pruneChanges.run();
      if (reporting) this.#report(run, reporting);
    })();
  }

  /**
   * In the run's transaction: its report into the outbox, what the status says of it, and the
   * facts with their hash. With no broker configured, only forgets that there was one.
   */
  #report(run: RunRecord, reporting: RunReporting): void {
    const db = this.#db;
    if (reporting.outboxLimit === null) {
      setReporting(db, REPORTING_KEYS.outboxLimit, undefined);
      return;
    }
    const known = getReporting(db, REPORTING_KEYS.outboxLimit);
    const limit = reporting.outboxLimit ?? (known === undefined ? undefined : Number(known));
    if (limit === undefined) return;
    if (reporting.outboxLimit !== undefined) setReporting(db, REPORTING_KEYS.outboxLimit, String(limit));
    const seq = appendReport(db, runReportEntry(run, reporting), limit);
    const before = JSON.parse(getReporting(db, REPORTING_KEYS.status) ?? "{}") as Record<string, unknown>;
    const mode = reporting.mode ?? before.mode;
    const labels = reporting.labels ? statusLabels(reporting.labels) : before.labels;
    setReporting(
      db,
      REPORTING_KEYS.status,
      JSON.stringify({
        commit: run.commit,
        sync: syncOf(run.result),
        ...(mode ? { mode } : {}),
        lastRun: { runId: run.id, seq, result: run.result, endedAt: run.endedAt },
        ...(labels ? { labels } : {}),
      }),
    );
    if (reporting.facts) {
      const text = canonicalJson(reporting.facts);
      setReporting(db, REPORTING_KEYS.facts, text);
      setReporting(db, REPORTING_KEYS.factsHash, sha256Hex(text));
    }
  }

  /** The database itself, for the outbox functions (report/outbox.ts) and tests. */
  get database(): BetterSqlite3.Database {
    return this.#db;
  }

  lastRuns(limit: number): RunRecord[] {
    const rows = this.#db
      .prepare("SELECT * FROM runs ORDER BY started_at DESC, rowid DESC LIMIT ?")
      .all(limit) as Array<Record<string, string>>;
    // Read-only (status), a database of an older agent is not migrated: it has no run_changes.
    const pieces =
      this.schemaVersion >= RUN_CHANGES_VERSION
        ? this.#db.prepare("SELECT changes FROM run_changes WHERE run_id = ? ORDER BY n").pluck()
        : undefined;
    const changesOf = (row: Record<string, string>): unknown[] => {
      const changes = JSON.parse(row.changes as string) as unknown[];
      for (const piece of (pieces?.iterate(row.id) ?? []) as Iterable<string>) {
        for (const change of JSON.parse(piece) as unknown[]) changes.push(change);
      }
      return changes;
    };
    return rows.map((row) => ({
      id: row.id as string,
      startedAt: row.started_at as string,
      endedAt: row.ended_at as string,
      source: row.source as string,
      commit: (row.git_commit as string | null) ?? null,
      mode: row.mode as RunRecord["mode"],
      result: row.result as string,
      changes: changesOf(row),
      errors: JSON.parse(row.errors as string),
      summary: JSON.parse(row.summary as string),
    }));
  }

  close(): void {
    this.#db.close();
  }
}

/** SQLite's page cache for the state database, in KiB. */
const PAGE_CACHE_KIB = 256;

function openDatabase(file: string, readonly: boolean): BetterSqlite3.Database {
  const db = openSqlite(file, { readonly, fileMustExist: readonly });
  try {
    // better-sqlite3 builds SQLite with a 16 MB page cache. A run reads and writes each page of
    // its tables about once, and the kernel caches the file anyway: 256 KB keeps SQLite's share
    // of a 10,000-file first apply at about 1 MB instead of 6 to 10 (docs/benchmarks.md).
    db.pragma(`cache_size = -${PAGE_CACHE_KIB}`);
    // Reading the schema makes SQLite read the header and first page: a damaged file fails here.
    db.prepare("SELECT count(*) FROM sqlite_master").get();
    if (!readonly) {
      db.pragma("journal_mode = WAL");
      db.pragma("synchronous = NORMAL");
      db.pragma("busy_timeout = 5000");
      migrate(db);
    }
    return db;
  } catch (error) {
    db.close();
    throw error;
  }
}

function isCorrupt(error: unknown): boolean {
  return CORRUPT_CODES.has(String((error as { code?: unknown }).code));
}

function stateError(file: string, error: unknown, readonly: boolean): DriftlessError {
  if (error instanceof DriftlessError) return error;
  const hint = readonly && isCorrupt(error) ? " (the next apply or agent run moves it aside)" : "";
  return new DriftlessError(`cannot open state database ${file}: ${(error as Error).message}${hint}`, {
    code: "ESTATE",
    phase: "state",
    cause: error,
  });
}

/** Renames `file` and its -wal and -shm companions to `<file>.corrupt-<time>`; returns the new name. */
function moveAside(file: string): string {
  const fs = new HostFs("/");
  const aside = `${file}.corrupt-${systemClock.now().toISOString().replace(/[:.]/g, "-")}`;
  for (const suffix of ["", "-wal", "-shm"]) {
    if (fs.lstat(file + suffix)) fs.rename(file + suffix, aside + suffix);
  }
  return aside;
}

/** A change as stored: its diff kept only when it is text of a bounded size. */
function boundedChange(change: unknown): unknown {
  if (typeof change !== "object" || change === null || !("diff" in change)) return change;
  const { diff, ...rest } = change as { diff: unknown };
  if (typeof diff !== "string") return change;
  const bytes = Buffer.byteLength(diff, "utf8");
  // NUL or U+FFFD (bytes that were not UTF-8): content that is not text, whatever its size.
  if (bytes <= MAX_STORED_DIFF_BYTES && !diff.includes("\u0000") && !diff.includes("\uFFFD")) return change;
  const sha256 = createHash("sha256").update(diff, "utf8").digest("hex");
  return { ...rest, diffOmitted: { sha256, bytes } };
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
