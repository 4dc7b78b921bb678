/**
 * Native addons carried inside the single binary (`npm run build:binary`): a Node single
 * executable application holds better-sqlite3's compiled addon as an asset, but Node loads an
 * addon only from a file. The asset is written once into a cache folder (the state directory's
 * `native/`), named by its hash so a new binary never loads an old addon, and loaded from there.
 *
 * Written atomically (temp file with O_EXCL, fsync, rename): two processes starting at once both
 * end up loading a whole file. Where nothing may be written (`driftless plan`, a read-only open)
 * and the cache has no copy yet, the addon goes to a private temp directory, removed as soon as
 * the addon is loaded (a loaded library stays mapped after its file is gone).
 */
import { createHash, randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import * as sea from "node:sea";
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
  const bytes = new Uint8Array(sea.getRawAsset(asset) as ArrayBuffer);
  const hash = createHash("sha256").update(bytes).digest("hex").slice(0, 16);
  const name = `${path.basename(asset, ".node")}-${hash}.node`;
  const cached = path.join(options.dir, name);
  if (fs.statSync(cached, { throwIfNoEntry: false })?.size === bytes.byteLength) return dlopen(cached);
  if (options.write) {
    fs.mkdirSync(options.dir, { recursive: true, mode: 0o700 });
    writeAtomic(cached, bytes);
    return dlopen(cached);
  }
  const scratch = privateTempDir("driftless-native-");
  try {
    const file = path.join(scratch.dir, name);
    fs.writeFileSync(file, bytes, { mode: 0o700 });
    return dlopen(file);
  } finally {
    scratch.remove();
  }
}

function writeAtomic(file: string, bytes: Uint8Array): void {
  const temp = path.join(path.dirname(file), `.${path.basename(file)}.${randomBytes(8).toString("hex")}.tmp`);
  const fd = fs.openSync(temp, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o700);
  try {
    fs.writeSync(fd, bytes);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  try {
    fs.renameSync(temp, file);
  } catch (error) {
    fs.rmSync(temp, { force: true });
    throw error;
  }
}

function dlopen(file: string): object {
  const module = { exports: {} };
  process.dlopen(module, file);
  return module.exports;
}
