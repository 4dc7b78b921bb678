/**
 * The fleet store a `--database` value names, as serve and `hosts add|remove` open it: one parser,
 * so the commands that share a fleet agree on where it is.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { FleetError } from "../errors.js";
import { SqliteFleetStore } from "./sqlite.js";
import type { FleetStore } from "./types.js";

/** Where `--database` comes from when the flag is absent (the fleet CLI's DRIFTLESS_URL convention). */
export const DATABASE_ENV = "DRIFTLESS_DATABASE";

export interface DatabaseSetting {
  /** Absent: DATA/fleet.db. */
  database?: string;
  /** Where it came from, for messages: `--database` or `DRIFTLESS_DATABASE`. */
  origin: string;
}

/** The flag, else a non-empty DRIFTLESS_DATABASE, else none (DATA/fleet.db). */
export function databaseSetting(flag: string | undefined, env: Record<string, string | undefined>): DatabaseSetting {
  if (flag !== undefined) return { database: flag, origin: "--database" };
  const fromEnv = env[DATABASE_ENV];
  return fromEnv ? { database: fromEnv, origin: DATABASE_ENV } : { origin: "--database" };
}

/** What `database` names, for messages: a postgres URL without its password. */
export async function describeDatabase(database: string | undefined, dataDir: string): Promise<string> {
  if (database === undefined) return path.join(dataDir, "fleet.db");
  if (isPostgres(database)) return (await import("./pg.js")).redact(database);
  return database;
}

/**
 * Opens (and migrates) the store: `database` is `sqlite:PATH`, `postgres://...` or
 * `postgresql://...`; absent, `dataDir/fleet.db` (the directory made, mode 0700).
 */
export async function openFleetStore(
  database: string | undefined,
  dataDir: string,
  origin = "--database",
): Promise<FleetStore> {
  if (database === undefined) {
    fs.mkdirSync(dataDir, { recursive: true, mode: 0o700 });
    return SqliteFleetStore.open(dataDir);
  }
  if (database.startsWith("sqlite:")) {
    const file = database.slice("sqlite:".length).replace(/^\/\/(?=\/)/, "");
    if (!file) throw new FleetError(`${origin} ${database}: expected sqlite:PATH`, { code: "EUSAGE" });
    return SqliteFleetStore.openFile(path.resolve(file));
  }
  if (isPostgres(database)) {
    // Loaded only here: a control plane on SQLite never loads pg.
    const { PgFleetStore } = await import("./pg.js");
    return PgFleetStore.open(database);
  }
  throw new FleetError(`${origin} ${database}: expected sqlite:PATH, postgres://... or postgresql://...`, {
    code: "EUSAGE",
  });
}

function isPostgres(database: string): boolean {
  return /^postgres(ql)?:\/\//.test(database);
}
