/**
 * Atomic file writes made durable together. One write alone is: temp file, fsync, rename,
 * fsync of the directory: a new inode and two fsyncs, one after the other, on the main thread.
 * A batch does the same steps for a group of files, each step for all of them before the next:
 *
 * 1. `stage`: the target's directory is made to exist, resolved and opened (once per batch);
 *    the write is recorded;
 * 2. `flush`: the temp files are created in their target's directory through libuv's thread
 *    pool (a few directories at once: creating an inode is the slow part on a busy ext4, and
 *    creations in one directory wait for each other), each filled and given its owner and mode
 *    on its descriptor, then fsynced, all concurrently, so the disk sees many requests at once;
 *    then each is renamed over its target; then each directory that got an entry (a renamed
 *    file, or a directory created for the batch) is fsynced once, concurrently too. Only then
 *    is a write durable, and `flush` says which ones failed.
 *
 * A failed write (its creation, fill, fsync or rename) removes its temp file and fails that
 * write alone. A batch holds one descriptor per file and per directory until it is flushed:
 * `full` says when to flush, so a few hundred stay open at most.
 *
 * Under a root, the directory is resolved inside the root (links followed, as `chroot` would)
 * when the first file is staged into it, opened, and checked to be inside the root; the temp
 * file, the rename and the fsync then go through that descriptor (`/proc/self/fd/N`), so a link
 * swapped into the path afterwards cannot lead the rename out of the root. Without `/proc`,
 * the resolved path is used, as for a single write.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { promisify } from "node:util";
import { DriftlessError } from "../errors.js";
import type { WriteOptions } from "./fs.js";
import {
  copyInto,
  normalizeHostPath,
  O_DIRECTORY,
  O_NOFOLLOW,
  O_RDONLY,
  openTempAsync,
  setOwnerAndMode,
  writeAll,
} from "./fs-ops.js";

/** What a batch needs of the filesystem port that made it. */
export interface WriteBatchPorts {
  /** The root as given (`/`, or the `--root` directory, which may be reached through a link). */
  root: string;
  rooted: boolean;
  /** The root's canonical path on this machine. */
  machineRoot(): string;
  /** Makes a host directory exist (links resolved inside the root): its path now, and the directories created. */
  ensureDir(hostDir: string): { machinePath: string; created: string[] };
  /** Removes the temp files a killed run left in a directory (once per run). */
  tidy(machineDir: string): void;
}

export interface WriteBatchLimits {
  /** Staged files (each holds a descriptor until the flush). */
  files: number;
  /** Distinct directories (each holds a descriptor until the flush). */
  dirs: number;
  /** Bytes written into temp files (dirty pages waiting for the fsync). */
  bytes: number;
}

export const DEFAULT_BATCH_LIMITS: WriteBatchLimits = { files: 256, dirs: 64, bytes: 64 << 20 };

/** Directories whose temp files are created at once (libuv's pool has 4 threads unless told otherwise). */
const CREATE_CONCURRENCY = 4;
/** Directory fsyncs in flight at once. */
const SYNC_CONCURRENCY = 16;

const fsync = promisify(fs.fsync);

interface Dir {
  machinePath: string;
  fd: number;
  /** Where entries of this directory are named: its descriptor's `/proc` path, or its resolved path. */
  base: string;
  renamed: boolean;
}

interface Staged {
  hostPath: string;
  dir: Dir;
  name: string;
  options: WriteOptions;
  /** Writes the content into the temp file. */
  fill: (fd: number) => void;
  /** The temp file, once created (its path under `dir.base`), and its descriptor while open (else -1). */
  temp?: string;
  fd: number;
  error?: unknown;
}

export class WriteBatch {
  readonly #ports: WriteBatchPorts;
  readonly #limits: WriteBatchLimits;
  /** By host directory: resolved once per batch, nothing else writes while a batch is open. */
  readonly #dirs = new Map<string, Dir>();
  readonly #staged: Staged[] = [];
  /** Directories in which the batch created directories: synced at the flush too. */
  readonly #grown = new Set<string>();
  #bytes = 0;
  #flushed = false;

  constructor(ports: WriteBatchPorts, limits: WriteBatchLimits = DEFAULT_BATCH_LIMITS) {
    this.#ports = ports;
    this.#limits = limits;
  }

  /** Writes staged and not yet flushed. */
  get size(): number {
    return this.#staged.length;
  }

  /** True when the batch holds as much as it should before a flush. */
  get full(): boolean {
    return (
      this.#staged.length >= this.#limits.files ||
      this.#dirs.size >= this.#limits.dirs ||
      this.#bytes >= this.#limits.bytes
    );
  }

  /**
   * Stages `data` for `hostPath` (see the class). Throws when its directory cannot be made or
   * is not one; the missing parents made before that stay, as with `HostFs.ensureParent`.
   */
  stage(hostPath: string, data: Uint8Array, options: WriteOptions): void {
    this.#stage(hostPath, options, data.length, (fd) => writeAll(fd, data));
  }

  /**
   * Stages a copy of `sourcePath` (a path on this machine) for `hostPath`, read piece by piece
   * at the flush; with `sha256`, a source that no longer has that hash fails that write.
   */
  stageCopy(hostPath: string, sourcePath: string, options: WriteOptions & { sha256?: string }): void {
    const bytes = fs.statSync(sourcePath, { throwIfNoEntry: false })?.size ?? 0;
    this.#stage(hostPath, options, bytes, (fd) => copyInto(fd, sourcePath, options.sha256));
  }

  /**
   * Makes every staged write durable: fsync of the temp files, renames, fsync of their
   * directories. Returns, in the order of staging, each write's error (undefined: it is in
   * place and durable). Throws only when called twice; the batch cannot be used afterwards.
   */
  async flush(): Promise<unknown[]> {
    if (this.#flushed) throw new Error("this write batch was already flushed");
    this.#flushed = true;
    const staged = this.#staged;
    try {
      const byDir = new Map<Dir, Staged[]>();
      for (const entry of staged) {
        const list = byDir.get(entry.dir);
        if (list) list.push(entry);
        else byDir.set(entry.dir, [entry]);
      }
      const synced: Promise<void>[] = [];
      await eachLimit([...byDir.values()], CREATE_CONCURRENCY, async (entries) => {
        for (const entry of entries) if (await this.#create(entry)) synced.push(this.#sync(entry));
      });
      await Promise.all(synced);
      for (const entry of staged) this.#rename(entry);
      const dirs = new Map<string, number | string>();
      for (const dir of this.#dirs.values()) if (dir.renamed) dirs.set(dir.machinePath, dir.fd);
      for (const machinePath of this.#grown) if (!dirs.has(machinePath)) dirs.set(machinePath, machinePath);
      await eachLimit([...dirs.values()], SYNC_CONCURRENCY, syncDirectory);
    } catch (error) {
      // Not expected (each step keeps its own errors); whatever is not renamed yet fails.
      for (const entry of staged) if (entry.fd >= 0 || entry.temp === undefined) entry.error ??= error;
    } finally {
      for (const entry of staged) if (entry.fd >= 0) this.#abandon(entry);
      for (const dir of this.#dirs.values()) closeQuietly(dir.fd);
    }
    return staged.map((entry) => entry.error);
  }

  #stage(hostPath: string, options: WriteOptions, bytes: number, fill: (fd: number) => void): void {
    if (this.#flushed) throw new Error("this write batch was already flushed");
    const normal = normalizeHostPath(hostPath);
    const dir = this.#dir(path.posix.dirname(normal));
    this.#bytes += bytes;
    this.#staged.push({ hostPath, dir, name: path.posix.basename(normal), options, fill, fd: -1 });
  }

  /** Creates and fills the temp file of `entry`; false (with its error kept) when that fails. */
  async #create(entry: Staged): Promise<boolean> {
    try {
      const { fd, temp } = await openTempAsync(entry.dir.base);
      entry.fd = fd;
      entry.temp = path.basename(temp);
    } catch (error) {
      entry.error = writeError(entry.hostPath, "creating its temp file", error);
      return false;
    }
    try {
      entry.fill(entry.fd);
      const { mode, uid, gid } = entry.options;
      setOwnerAndMode(entry.fd, mode, uid, gid);
      return true;
    } catch (error) {
      entry.error = writeError(entry.hostPath, "filling its temp file", error);
      this.#abandon(entry);
      return false;
    }
  }

  async #sync(entry: Staged): Promise<void> {
    try {
      await fsync(entry.fd);
    } catch (error) {
      entry.error = writeError(entry.hostPath, "fsync of its temp file", error);
    }
  }

  /** The directory `hostDir`, made to exist, opened and (under a root) pinned, once per batch. */
  #dir(hostDir: string): Dir {
    const known = this.#dirs.get(hostDir);
    if (known) return known;
    const { machinePath, created } = this.#ports.ensureDir(hostDir);
    for (const dir of created) this.#grown.add(path.dirname(dir));
    this.#ports.tidy(machinePath);
    let fd: number;
    try {
      // A link found here now was swapped in after resolving; only the root itself may be one.
      const nofollow = machinePath === this.#ports.root ? 0 : O_NOFOLLOW;
      fd = fs.openSync(machinePath, O_RDONLY | O_DIRECTORY | nofollow);
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === "ELOOP" || code === "ENOTDIR") {
        throw new DriftlessError(`${hostDir} is no longer a directory (a link or a file was put there)`, {
          code: "ENOTDIR",
          phase: "apply",
          cause: error,
        });
      }
      throw error;
    }
    let base = machinePath;
    if (this.#ports.rooted) {
      try {
        base = this.#pinned(fd, hostDir, machinePath);
      } catch (error) {
        closeQuietly(fd);
        throw error;
      }
    }
    const dir: Dir = { machinePath, fd, base, renamed: false };
    this.#dirs.set(hostDir, dir);
    return dir;
  }

  /**
   * The `/proc` path of the open directory `fd`, once it is known to be inside the root: a
   * path component swapped for a link between resolving and opening would have led elsewhere.
   */
  #pinned(fd: number, hostDir: string, machinePath: string): string {
    const link = `/proc/self/fd/${fd}`;
    let opened: string;
    try {
      opened = fs.readlinkSync(link);
    } catch {
      return machinePath; // no /proc: the resolved path, as a single write uses
    }
    const root = this.#ports.machineRoot();
    if (opened !== root && !opened.startsWith(root.endsWith("/") ? root : `${root}/`)) {
      throw new DriftlessError(`${hostDir} now leads outside the root (a link was swapped in); nothing written`, {
        code: "ELINK",
        phase: "apply",
      });
    }
    return link;
  }

  /** Closes a synced temp file and renames it over its target (or removes it if it failed). */
  #rename(entry: Staged): void {
    if (entry.fd < 0 || entry.temp === undefined) return; // never created, or removed when its fill failed
    const fd = entry.fd;
    entry.fd = -1;
    const temp = path.join(entry.dir.base, entry.temp);
    try {
      fs.closeSync(fd);
    } catch (error) {
      entry.error ??= writeError(entry.hostPath, "closing its temp file", error);
    }
    if (entry.error === undefined) {
      try {
        fs.renameSync(temp, path.join(entry.dir.base, entry.name));
        entry.dir.renamed = true;
        return;
      } catch (error) {
        entry.error = writeError(entry.hostPath, "renaming its temp file over it", error);
      }
    }
    removeQuietly(temp);
  }

  /** Closes and removes the temp file of a write that will not happen. */
  #abandon(entry: Staged): void {
    if (entry.fd >= 0) closeQuietly(entry.fd);
    entry.fd = -1;
    if (entry.temp !== undefined) removeQuietly(path.join(entry.dir.base, entry.temp));
  }
}

/**
 * A system call's error named by the host path it concerns (its own message names the machine
 * path, possibly a `/proc/self/fd` one); the agent's own errors are kept as they are.
 */
function writeError(hostPath: string, during: string, error: unknown): unknown {
  const code = (error as NodeJS.ErrnoException).code;
  if (error instanceof DriftlessError || typeof code !== "string") return error;
  const reason = (error as Error).message.split(",")[0];
  return new DriftlessError(`cannot write ${hostPath}: ${reason} (${during})`, {
    code: "EWRITE",
    phase: "apply",
    retryable: true,
    cause: error,
  });
}

/** Runs `fn` on every item, at most `limit` at a time. */
async function eachLimit<T>(items: readonly T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await fn(items[next++] as T);
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
}

/** Fsyncs a directory given by descriptor (kept open) or path (opened for it). */
async function syncDirectory(dir: number | string): Promise<void> {
  let fd: number | undefined;
  try {
    fd = typeof dir === "number" ? dir : fs.openSync(dir, O_RDONLY | O_DIRECTORY);
    await fsync(fd);
  } catch {
    // Some filesystems refuse fsync on a directory; the renames themselves are still atomic.
  } finally {
    if (typeof dir === "string" && fd !== undefined) closeQuietly(fd);
  }
}

function closeQuietly(fd: number): void {
  try {
    fs.closeSync(fd);
  } catch {
    // Already closed, or nothing more can be done about it.
  }
}

function removeQuietly(file: string): void {
  try {
    fs.rmSync(file, { force: true });
  } catch {
    // A temp file left here is removed by the next run's tidy.
  }
}
