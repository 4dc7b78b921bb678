/**
 * A Debian root filesystem for test hosts, built once with debootstrap and cached outside the
 * checkout under `/var/cache/driftless-test/rootfs-<key>`, where the key hashes every input.
 *
 * The build goes into a temp folder beside the cache entry and is renamed into place when
 * complete, so a killed build never leaves a half rootfs; a lock file (holding the builder's
 * pid, stolen when that process is gone) keeps two test files from building it at once.
 * The cached tree is never modified afterwards: hosts boot on an overlay (or a copy) of it.
 */
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, open, readdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import * as path from "node:path";
import { run, runChecked, sleep, tail } from "./process.js";

/** Bump when the customisation below changes, so caches rebuild. */
export const ROOTFS_HARNESS_VERSION = 1;

export interface RootfsOptions {
  /** Default `bookworm`. */
  suite?: string;
  /** Default `minbase`. */
  variant?: string;
  /** Packages added to systemd, systemd-sysv and dbus (which are always included). */
  include?: string[];
  /** Default `$DRIFTLESS_TEST_MIRROR` or `http://deb.debian.org/debian`. */
  mirror?: string;
  /** Default `$DRIFTLESS_TEST_CACHE` or `/var/cache/driftless-test`. */
  cacheDir?: string;
}

const BASE_PACKAGES = ["systemd", "systemd-sysv", "dbus"];
const LOCK_TIMEOUT_MS = 15 * 60_000;
const building = new Map<string, Promise<string>>();

interface ResolvedOptions {
  suite: string;
  variant: string;
  include: string[];
  mirror: string;
  cacheDir: string;
}

function resolveOptions(options: RootfsOptions): ResolvedOptions {
  return {
    suite: options.suite ?? "bookworm",
    variant: options.variant ?? "minbase",
    include: [...new Set([...BASE_PACKAGES, ...(options.include ?? [])])].sort(),
    mirror: options.mirror ?? process.env.DRIFTLESS_TEST_MIRROR ?? "http://deb.debian.org/debian",
    cacheDir: options.cacheDir ?? process.env.DRIFTLESS_TEST_CACHE ?? "/var/cache/driftless-test",
  };
}

/** The cache key: a hash of suite, variant, include list, mirror and the harness version. */
export function rootfsKey(options: RootfsOptions = {}): string {
  const { suite, variant, include, mirror } = resolveOptions(options);
  const inputs = JSON.stringify({ suite, variant, include, mirror, version: ROOTFS_HARNESS_VERSION });
  return createHash("sha256").update(inputs).digest("hex").slice(0, 16);
}

/** Where the rootfs for these options lives (whether or not it is built yet). */
export function rootfsPath(options: RootfsOptions = {}): string {
  return path.join(resolveOptions(options).cacheDir, `rootfs-${rootfsKey(options)}`);
}

/** Returns the path of the cached rootfs, building it first when it is not there (~40 s). */
export function ensureRootfs(options: RootfsOptions = {}): Promise<string> {
  const target = rootfsPath(options);
  if (existsSync(target)) return Promise.resolve(target);
  let pending = building.get(target);
  if (!pending) {
    pending = buildLocked(resolveOptions(options), target).finally(() => building.delete(target));
    building.set(target, pending);
  }
  return pending;
}

async function buildLocked(options: ResolvedOptions, target: string): Promise<string> {
  await mkdir(options.cacheDir, { recursive: true });
  const release = await acquireLock(`${target}.lock`);
  try {
    if (existsSync(target)) return target; // another process built it while we waited
    await removeStaleBuilds(target);
    const temp = `${target}.tmp-${process.pid}`;
    await build(options, temp);
    await rename(temp, target);
    await writeFile(
      `${target}.json`,
      `${JSON.stringify({ ...options, version: ROOTFS_HARNESS_VERSION, builtAt: new Date().toISOString() }, null, 2)}\n`,
    );
    return target;
  } finally {
    await release();
  }
}

async function build(options: ResolvedOptions, dir: string): Promise<void> {
  const log = `${dir}.log`;
  const result = await run(
    "debootstrap",
    [`--variant=${options.variant}`, `--include=${options.include.join(",")}`, options.suite, dir, options.mirror],
    { timeoutMs: 10 * 60_000 },
  );
  await writeFile(log, result.stdout + result.stderr);
  if (result.exitCode !== 0) {
    await removeTree(dir);
    throw new Error(
      `debootstrap failed (exit ${result.exitCode}); see ${log}\n${tail(result.stdout + result.stderr, 30)}`,
    );
  }
  await customise(dir);
  await rm(log, { force: true });
}

/** Makes the tree a good template for many hosts. */
async function customise(dir: string): Promise<void> {
  // Each host gets its machine name as hostname and a fresh machine id from systemd-nspawn.
  await rm(path.join(dir, "etc/hostname"), { force: true });
  await rm(path.join(dir, "etc/machine-id"), { force: true });
  await writeFile(path.join(dir, "etc/machine-id"), "", { mode: 0o444 });
  await rm(path.join(dir, "var/lib/dbus/machine-id"), { force: true });
  // Faster `apt-get update`: no translations.
  await writeFile(path.join(dir, "etc/apt/apt.conf.d/99driftless-test"), 'Acquire::Languages "none";\n');
  await runChecked("chroot", [dir, "apt-get", "clean"]);
}

/** Takes `lockFile`, waiting while a live process holds it; returns the release function. */
async function acquireLock(lockFile: string): Promise<() => Promise<void>> {
  const deadline = Date.now() + LOCK_TIMEOUT_MS;
  const token = `${process.pid}\n`;
  for (;;) {
    try {
      const handle = await open(lockFile, "wx");
      await handle.writeFile(token);
      await handle.close();
      return async () => {
        const content = await readFile(lockFile, "utf8").catch(() => "");
        if (content === token) await rm(lockFile, { force: true });
      };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
    }
    const holder = Number.parseInt(await readFile(lockFile, "utf8").catch(() => ""), 10);
    if (!Number.isNaN(holder) && !isAlive(holder)) {
      await rm(lockFile, { force: true }); // its builder died; the next loop takes it
      continue;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${lockFile} (held by pid ${holder})`);
    await sleep(500);
  }
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** Removes half-built trees of this cache entry left by killed builds (we hold the lock). */
async function removeStaleBuilds(target: string): Promise<void> {
  const dir = path.dirname(target);
  const prefix = `${path.basename(target)}.tmp-`;
  for (const entry of await readdir(dir)) {
    if (entry.startsWith(prefix)) await removeTree(path.join(dir, entry));
  }
}

/**
 * `rm -rf` that first unmounts what a killed debootstrap may have left mounted inside
 * (proc, sys), and never crosses into another filesystem.
 */
export async function removeTree(dir: string): Promise<void> {
  const mountinfo = await readFile("/proc/self/mountinfo", "utf8");
  const mounts = mountinfo
    .split("\n")
    .map((line) => line.split(" ")[4])
    .filter((point): point is string => point !== undefined && (point === dir || point.startsWith(`${dir}/`)))
    .sort((a, b) => b.length - a.length);
  for (const point of mounts) await run("umount", ["-l", point]);
  await run("rm", ["-rf", "--one-file-system", dir]);
}
