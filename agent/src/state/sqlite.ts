/**
 * The one way the agent opens an SQLite database (better-sqlite3, a native addon), loaded only
 * when a database is opened: the supervisor imports this module and stays small.
 *
 * From `node bin/driftless.js`, better-sqlite3 finds its addon in node_modules. From the single
 * binary, the addon is an asset of the binary, cached in `native/` beside the database (the
 * state directory, `host/native.ts`); a read-only open writes nothing there.
 */
import { createRequire } from "node:module";
import * as path from "node:path";
import type BetterSqlite3 from "better-sqlite3";
import { isSingleBinary, loadEmbeddedAddon } from "../host/native.js";

/** The asset name of better-sqlite3's addon in the single binary (scripts/build-binary.mjs). */
export const SQLITE_ADDON_ASSET = "better_sqlite3.node";

let Database: typeof BetterSqlite3 | undefined;
let binding: object | undefined;

/** Opens `file`; `options.readonly` also means: write no addon cache. */
export function openSqlite(file: string, options: BetterSqlite3.Options = {}): BetterSqlite3.Database {
  Database ??= requireBetterSqlite();
  if (!isSingleBinary()) return new Database(file, options);
  binding ??= loadEmbeddedAddon(SQLITE_ADDON_ASSET, {
    dir: path.join(path.dirname(path.resolve(file)), "native"),
    write: !options.readonly,
  });
  // better-sqlite3 takes the addon's exports as nativeBinding; its types only say string.
  return new Database(file, { ...options, nativeBinding: binding as unknown as string });
}

function requireBetterSqlite(): typeof BetterSqlite3 {
  // The bundles (ESM with a require banner, CommonJS for the single binary) have `require`, and
  // esbuild bundles what it loads into the single binary; sources run by the tests have not.
  if (typeof require === "function") return require("better-sqlite3") as typeof BetterSqlite3;
  return createRequire(import.meta.url)("better-sqlite3") as typeof BetterSqlite3;
}
