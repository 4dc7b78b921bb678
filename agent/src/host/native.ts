/**
 * Native addons carried inside the single binary (`npm run build:binary`): a Node single
 * executable application holds better-sqlite3's compiled addon as an asset, but Node loads an
 * addon only from a file. The asset is written once into a cache folder (the state directory's
 * `native/`), named by its hash so a new binary never loads an old addon, and loaded from there.
 *
 * Written atomically (HostFs: temp file, fsync, rename): two processes starting at once both end
 * up loading a whole file. Where nothing may be written (`driftless plan`, a read-only open)
 * and the cache has no copy yet, the addon goes to a private temp directory, removed as soon as
 * the addon is loaded (a loaded library stays mapped after its file is gone).
 */
import { createHash } from "node:crypto";
import * as path from "node:path";
import * as sea from "node:sea";
import { HostFs } from "./fs.js";
import { privateTempDir } from "./scratch.js";

/** True when this process runs from the single binary rather than `node bin/driftless.js`. */
export function isSingleBinary(): boolean {
  return sea.isSea();
}

export interface EmbeddedAddonOptions {
  /** The cache folder (created when missing, mode 0700). */
  dir: string;
  /** False: write nothing under `dir`; use a private temp copy when `dir` has none. */
  write: boolean;
}

/**
 * Loads the addon stored as the asset `asset` (a name such as `better_sqlite3.node`) and returns
 * its exports. Call only when `isSingleBinary()`.
 */
export function loadEmbeddedAddon(asset: string, options: EmbeddedAddonOptions): object {
  // A view of the binary's own pages: nothing is read until the bytes are (byteLength reads none).
  const bytes = new Uint8Array(sea.getRawAsset(asset) as ArrayBuffer);
  const hash = assetHash(asset) ?? createHash("sha256").update(bytes).digest("hex").slice(0, 16);
  const name = `${path.basename(asset, ".node")}-${hash}.node`;
  const cached = path.join(options.dir, name);
  const machine = new HostFs("/");
  if (machine.lstat(cached)?.size === bytes.byteLength) return dlopen(cached);
  if (options.write) {
    machine.mkdirp(options.dir, 0o700);
    machine.writeFileAtomic(cached, bytes, { mode: 0o700 });
    return dlopen(cached);
  }
  const scratch = privateTempDir("driftless-native-");
  try {
    const file = path.join(scratch.dir, name);
    machine.writeFile(file, bytes, 0o700);
    return dlopen(file);
  } finally {
    scratch.remove();
  }
}

/**
 * The first 16 hex digits of the asset's SHA-256, computed by the build and carried as the asset
 * `<asset>.sha256` (scripts/build-binary.mjs), so a process that finds the addon in the cache never
 * reads the 2 MB asset. Null when the binary has no such asset: then the caller hashes the bytes.
 */
function assetHash(asset: string): string | null {
  try {
    const hash = sea.getAsset(`${asset}.sha256`, "utf8").trim();
    return /^[0-9a-f]{16}$/.test(hash) ? hash : null;
  } catch {
    return null;
  }
}

function dlopen(file: string): object {
  const module = { exports: {} };
  process.dlopen(module, file);
  return module.exports;
}
