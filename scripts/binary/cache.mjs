// The build cache of the single binary (scripts/build-binary.mjs), outside the checkout:
// /var/cache/driftless-build, or $DRIFTLESS_BUILD_CACHE. Every entry is a directory named by a hash
// of its inputs, made under a temp name and renamed into place when whole: a build killed halfway
// leaves only a temp directory, never an entry that looks done. Builds also run one at a time
// (`flock` on build.lock, see build-binary.mjs), so two never do the same slow step twice.
import { createHash, randomBytes } from "node:crypto";
import { mkdirSync, readdirSync, renameSync, rmSync, statSync, utimesSync } from "node:fs";
import * as path from "node:path";

export function cacheRoot() {
  return path.resolve(process.env.DRIFTLESS_BUILD_CACHE || "/var/cache/driftless-build");
}

/** A short hex hash of `inputs` (any JSON value) or of bytes. */
export function hashOf(inputs) {
  const hash = createHash("sha256");
  hash.update(inputs instanceof Uint8Array ? inputs : JSON.stringify(inputs));
  return hash.digest("hex").slice(0, 16);
}

/**
 * The directory `<cache>/<kind>/<key>`, made by `produce(tempDir)` when missing (async). Returns
 * its path and whether it was there already.
 */
export async function cachedDir(kind, key, produce) {
  const dir = path.join(cacheRoot(), kind, key);
  if (statSync(dir, { throwIfNoEntry: false })?.isDirectory()) {
    const now = new Date();
    utimesSync(dir, now, now); // last used: see prune()
    return { dir, hit: true };
  }
  mkdirSync(path.dirname(dir), { recursive: true });
  const temp = `${dir}.tmp-${process.pid}-${randomBytes(4).toString("hex")}`;
  try {
    mkdirSync(temp);
    await produce(temp);
    renameSync(temp, dir);
  } catch (error) {
    rmSync(temp, { recursive: true, force: true });
    // Another build made it meanwhile: theirs is as good as ours.
    if (statSync(dir, { throwIfNoEntry: false })?.isDirectory()) return { dir, hit: true };
    throw error;
  }
  return { dir, hit: false };
}

/**
 * Removes all but the `keep` entries of `kind` used last, and temp directories a killed build
 * left (builds run one at a time, so none is in use). For kinds that change with every commit.
 */
export function prune(kind, keep) {
  const root = path.join(cacheRoot(), kind);
  const entries = readdirSync(root, { withFileTypes: true })
    .filter((entry) => entry.isDirectory())
    .map((entry) => ({ dir: path.join(root, entry.name), mtime: statSync(path.join(root, entry.name)).mtimeMs }))
    .sort((a, b) => b.mtime - a.mtime);
  const stale = entries.filter((entry, index) => index >= keep || entry.dir.includes(".tmp-"));
  for (const { dir } of stale) rmSync(dir, { recursive: true, force: true });
}
