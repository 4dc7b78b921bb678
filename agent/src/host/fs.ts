/**
 * The filesystem port: every path the agent manages is an absolute path on the managed host,
 * resolved under a root directory (`/` normally, a mounted image or a temp dir with `--root`).
 *
 * Under a root other than `/`, symbolic links are resolved inside the root, as `chroot` would,
 * so a link such as `/var/run -> /run` in an image never leads a write onto the machine that
 * runs the agent. Every call resolves its path again, component by component, right before
 * its system call: a link created earlier in the same run (by a file resource or a package) is
 * followed inside the root like any other. A write batch (`writeBatch`) resolves each directory
 * once, when its first file is staged, and then works through that directory's descriptor. A
 * mode is changed through a descriptor opened without following a final link, and a link found
 * there is refused; an owner is changed with `lchown`, which never follows one.
 *
 * Temp files are named `.driftless-<16 hex>.tmp` (created with O_EXCL, a new name on a clash);
 * those a killed run left behind, and the older `.<name>.driftless-<pid>` ones, are removed from
 * a directory before the agent first writes into it, or removes it.
 *
 * Calls are synchronous on purpose: the agent does one apply at a time, and for thousands of
 * small files synchronous metadata calls are several times faster than the thread pool. The
 * exception is a write batch's flush, which spends its time creating inodes and waiting on
 * fsyncs, work the thread pool overlaps.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { DriftlessError } from "../errors.js";
import {
  copyInto,
  createTemp,
  isNotFound,
  lstatOrNull,
  normalizeHostPath,
  O_DIRECTORY,
  O_NOCTTY,
  O_NOFOLLOW,
  O_NONBLOCK,
  O_RDONLY,
  openTemp,
  readChunksOf,
  STALE_TEMP,
  setOwnerAndMode,
  syncDirectory,
  writeAll,
} from "./fs-ops.js";
import { WriteBatch } from "./write-batch.js";

export { normalizeHostPath } from "./fs-ops.js";
export type { WriteBatch } from "./write-batch.js";

export type FileType = "file" | "directory" | "link" | "other";

export interface FileStat {
  type: FileType;
  /** Permission bits, including setuid/setgid/sticky (0o7777). */
  mode: number;
  uid: number;
  gid: number;
  size: number;
  dev: number;
  ino: number;
  mtimeNs: bigint;
  ctimeNs: bigint;
}

/** Who a file is now: device, inode, size, mtime and ctime. Any write or replacement changes it. */
export function fingerprintOf(st: FileStat): string {
  return `${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}`;
}

/**
 * A fingerprint taken this close to the file's last change (ctime), or before it, is not trusted:
 * the same timestamp tick may hide a second change.
 */
export const RACY_NS = 2_000_000_000n;

export interface WriteOptions {
  mode: number;
  uid?: number | undefined;
  gid?: number | undefined;
}

const MAX_LINK_HOPS = 40;

export class HostFs {
  readonly root: string;
  /** Directories cleared of stale temp files by this instance (one run). */
  readonly #tidied = new Set<string>();
  #realRoot: string | undefined;

  constructor(root = "/") {
    this.root = path.resolve(root);
  }

  get isRooted(): boolean {
    return this.root !== "/";
  }

  /**
   * The path on this machine that stands for `hostPath` on the managed host: its parent
   * directories resolved now, inside the root; a final link is not followed.
   */
  resolve(hostPath: string): string {
    const normal = normalizeHostPath(hostPath);
    if (!this.isRooted) return normal;
    return path.join(this.root, ...this.#walk(normal, false));
  }

  /** Like `resolve`, and a final link is followed too, inside the root (a chroot's realpath). */
  resolveFollowing(hostPath: string): string {
    const normal = normalizeHostPath(hostPath);
    if (!this.isRooted) return normal;
    return path.join(this.root, ...this.#walk(normal, true));
  }

  /** The entry at `hostPath`, or null when there is none (also when a parent is not a directory). */
  lstat(hostPath: string): FileStat | null {
    let st: fs.BigIntStats | undefined;
    try {
      st = fs.lstatSync(this.resolve(hostPath), { bigint: true, throwIfNoEntry: false });
    } catch (error) {
      if (isNotFound(error)) return null;
      throw error;
    }
    if (!st) return null;
    return {
      type: st.isFile() ? "file" : st.isDirectory() ? "directory" : st.isSymbolicLink() ? "link" : "other",
      mode: Number(st.mode & 0o7777n),
      uid: Number(st.uid),
      gid: Number(st.gid),
      size: Number(st.size),
      dev: Number(st.dev),
      ino: Number(st.ino),
      mtimeNs: st.mtimeNs,
      ctimeNs: st.ctimeNs,
    };
  }

  /** Reads a file; a link is followed inside the root. */
  readFile(hostPath: string): Buffer {
    return fs.readFileSync(this.resolveFollowing(hostPath));
  }

  /** Reads a file's text (a link followed inside the root), or null when there is none. */
  readTextIfExists(hostPath: string): string | null {
    try {
      return fs.readFileSync(this.resolveFollowing(hostPath), "utf8");
    } catch (error) {
      if (isNotFound(error)) return null;
      throw error;
    }
  }

  /** The canonical path on this machine (links followed), or null when it does not exist. */
  realpath(hostPath: string): string | null {
    try {
      return fs.realpathSync(this.resolveFollowing(hostPath));
    } catch (error) {
      if (isNotFound(error)) return null;
      throw error;
    }
  }

  readlink(hostPath: string): string {
    return fs.readlinkSync(this.resolve(hostPath));
  }

  readdir(hostPath: string): fs.Dirent[] {
    return fs.readdirSync(this.resolveFollowing(hostPath), { withFileTypes: true });
  }

  /**
   * Writes a file atomically: a new temp file in the same directory, owner then mode set (a
   * change of owner clears setuid and setgid), fsync, rename over `hostPath`, fsync of the
   * directory. For many files, a write batch (`writeBatch`) does the same with the waits overlapped.
   */
  writeFileAtomic(hostPath: string, data: Uint8Array, options: WriteOptions): void {
    this.#writeAtomic(hostPath, options, (fd) => writeAll(fd, data));
  }

  /**
   * Writes a file atomically (as `writeFileAtomic`) with the content of `sourcePath`, a path on
   * this machine (the repository's checkout, not under the root), copied piece by piece. With
   * `sha256`, the copy is checked against it before the rename: a source that changed since it
   * was hashed replaces nothing.
   */
  writeFileAtomicFrom(hostPath: string, sourcePath: string, options: WriteOptions & { sha256?: string }): void {
    this.#writeAtomic(hostPath, options, (fd) => copyInto(fd, sourcePath, options.sha256));
  }

  /**
   * A group of atomic writes made durable together (see `WriteBatch`): what the engine uses for
   * consecutive file writes, so their fsyncs overlap instead of running one after the other.
   */
  writeBatch(): WriteBatch {
    return new WriteBatch({
      root: this.root,
      rooted: this.isRooted,
      machineRoot: () => this.#machineRoot(),
      ensureDir: (hostDir) => this.#ensureDir(hostDir),
      tidy: (dir) => this.#tidy(dir),
    });
  }

  /**
   * Calls `onChunk` with the file's content piece by piece (a link followed inside the root), so
   * a large file is never held whole. The chunk's memory is reused for the next one: copy what
   * must be kept.
   */
  readChunks(hostPath: string, onChunk: (chunk: Buffer) => void): void {
    readChunksOf(this.resolveFollowing(hostPath), onChunk);
  }

  /** Creates one directory (its parent must exist), then sets its owner, then its mode. */
  mkdir(hostPath: string, mode: number, uid?: number, gid?: number): void {
    const target = this.resolve(hostPath);
    fs.mkdirSync(target, { mode: 0o700 }); // nobody else gets in before owner and mode are set
    this.#inPlace(target, hostPath, O_DIRECTORY, (fd) => setOwnerAndMode(fd, mode, uid, gid));
  }

  /**
   * Creates the missing parent directories of `hostPath` (mode 0755), like `mkdir -p`; links on
   * the way, including ones whose target is missing, are followed inside the root. Each new
   * directory is made durable (its parent fsynced).
   */
  ensureParent(hostPath: string): void {
    const { created } = this.#ensureDir(path.posix.dirname(normalizeHostPath(hostPath)));
    // A new directory is an entry of its parent: durable once the parent is synced.
    for (const dir of created) syncDirectory(path.dirname(dir));
  }

  /** Sets the mode of a file or directory; a symbolic link found there now is refused. */
  chmod(hostPath: string, mode: number): void {
    this.#inPlace(this.resolve(hostPath), hostPath, 0, (fd) => fs.fchmodSync(fd, mode));
  }

  /** Changes owner without following a final symbolic link (the link itself gets the owner). */
  chown(hostPath: string, uid: number | undefined, gid: number | undefined): void {
    fs.lchownSync(this.resolve(hostPath), uid ?? -1, gid ?? -1);
  }

  /** Points `hostPath` at `target` atomically (temp link, then rename over what was there). */
  symlink(target: string, hostPath: string): void {
    const link = this.resolve(hostPath);
    this.#tidy(path.dirname(link));
    const temp = createTemp(path.dirname(link), (name) => {
      fs.symlinkSync(target, name);
      return name;
    });
    try {
      fs.renameSync(temp, link);
    } catch (error) {
      fs.rmSync(temp, { force: true });
      throw error;
    }
  }

  /** Removes a file, a link or an empty directory. A directory with content is refused. */
  remove(hostPath: string): void {
    const target = this.resolve(hostPath);
    const st = fs.lstatSync(target, { throwIfNoEntry: false });
    if (!st) return;
    if (st.isDirectory()) {
      this.#tidy(target); // a temp file a killed run left does not keep the directory
      try {
        fs.rmdirSync(target);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === "ENOTEMPTY") {
          throw new DriftlessError(`${hostPath} is a directory that is not empty; remove its content first`, {
            code: "ENOTEMPTY",
            phase: "apply",
          });
        }
        throw error;
      }
    } else {
      fs.unlinkSync(target);
    }
  }

  /** Writes a file in place (for trees being built in a private temp directory). */
  writeFile(hostPath: string, data: Uint8Array, mode: number): void {
    fs.writeFileSync(this.resolve(hostPath), data, { mode });
  }

  /** `mkdir -p` with the given mode for the directories it creates. */
  mkdirp(hostPath: string, mode = 0o755): void {
    fs.mkdirSync(this.resolve(hostPath), { recursive: true, mode });
  }

  /** A hard link (for the agent's own immutable caches). */
  link(existing: string, newPath: string): void {
    fs.linkSync(this.resolve(existing), this.resolve(newPath));
  }

  /** Recreates the tree `from` at `to` (which exists) with hard links to its files. */
  linkTree(from: string, to: string): void {
    for (const entry of fs.readdirSync(this.resolve(from), { withFileTypes: true })) {
      const source = path.join(from, entry.name);
      const target = path.join(to, entry.name);
      if (entry.isDirectory()) {
        fs.mkdirSync(this.resolve(target), { mode: 0o755 });
        this.linkTree(source, target);
      } else if (entry.isSymbolicLink()) {
        fs.symlinkSync(fs.readlinkSync(this.resolve(source)), this.resolve(target));
      } else {
        fs.linkSync(this.resolve(source), this.resolve(target));
      }
    }
  }

  rename(from: string, to: string): void {
    fs.renameSync(this.resolve(from), this.resolve(to));
  }

  /** Removes a whole tree (for the agent's own caches, never for managed resources). */
  removeTree(hostPath: string): void {
    fs.rmSync(this.resolve(hostPath), { recursive: true, force: true });
  }

  /** The raw node:fs module, for libraries that take a filesystem (isomorphic-git). */
  static nodeFs(): typeof fs {
    return fs;
  }

  /**
   * Makes `hostDir` (normalised) a directory, creating what is missing (mode 0755), links on the
   * way followed inside the root: its path on this machine now, and the directories created,
   * parents first (their parents are not synced here).
   */
  #ensureDir(hostDir: string): { machinePath: string; created: string[] } {
    const names = this.#walk(hostDir, true);
    const machinePath = path.join(this.root, ...names);
    const created: string[] = [];
    if (lstatOrNull(machinePath)?.isDirectory()) return { machinePath, created };
    fs.mkdirSync(this.root, { recursive: true }); // a new image or sandbox
    for (let i = 1; i <= names.length; i++) {
      const dir = path.join(this.root, ...names.slice(0, i));
      const st = lstatOrNull(dir);
      if (st?.isDirectory()) continue;
      if (st) {
        const shown = `/${names.slice(0, i).join("/")}`;
        throw new DriftlessError(`${shown} is not a directory`, { code: "ENOTDIR", phase: "apply" });
      }
      this.mkdir(`/${names.slice(0, i).join("/")}`, 0o755);
      created.push(dir);
    }
    return { machinePath, created };
  }

  /** The root's canonical path on this machine (links in its own path followed), once. */
  #machineRoot(): string {
    this.#realRoot ??= fs.realpathSync(this.root);
    return this.#realRoot;
  }

  /**
   * The names of the components of `normal` (a normalised host path) once its links are
   * resolved inside the root, now: an absolute target starts again at the root, `..` never
   * climbs above it. The final component is followed only with `followFinal`. Components that
   * do not exist are kept as they are.
   */
  #walk(normal: string, followFinal: boolean): string[] {
    const done: string[] = [];
    const todo = normal.split("/").filter(Boolean);
    let hops = 0;
    let missing = false;
    while (todo.length > 0) {
      const name = todo.shift() as string;
      if (name === ".") continue;
      if (name === "..") {
        done.pop();
        continue;
      }
      if (missing || (todo.length === 0 && !followFinal)) {
        done.push(name);
        continue;
      }
      const candidate = path.join(this.root, ...done, name);
      const st = lstatOrNull(candidate);
      if (st?.isSymbolicLink()) {
        if (++hops > MAX_LINK_HOPS) {
          throw new DriftlessError(`too many levels of symbolic links in ${normal}`, { code: "ELOOP", phase: "apply" });
        }
        const target = fs.readlinkSync(candidate);
        if (target.startsWith("/")) done.length = 0;
        todo.unshift(...target.split("/").filter(Boolean));
        continue;
      }
      if (!st) missing = true;
      done.push(name);
    }
    return done;
  }

  /**
   * Runs `change` on a descriptor of the entry at `target` itself, opened without following a
   * final link (and without blocking on a FIFO): a link swapped in since the path was read is
   * refused, never followed.
   */
  #inPlace(target: string, hostPath: string, flags: number, change: (fd: number) => void): void {
    let fd: number;
    try {
      fd = fs.openSync(target, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | flags);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === "ELOOP" && lstatOrNull(target)?.isSymbolicLink()) {
        throw new DriftlessError(`${hostPath} is now a symbolic link; its mode and owner were left alone`, {
          code: "ELINK",
          phase: "apply",
        });
      }
      throw error;
    }
    try {
      change(fd);
    } finally {
      fs.closeSync(fd);
    }
  }

  /** A new temp file in the target's directory, filled, owned, fsynced, then renamed over it. */
  #writeAtomic(hostPath: string, options: WriteOptions, fill: (fd: number) => void): void {
    const target = this.resolve(hostPath);
    const dir = path.dirname(target);
    this.#tidy(dir);
    const { fd, temp } = openTemp(dir);
    try {
      fill(fd);
      setOwnerAndMode(fd, options.mode, options.uid, options.gid);
      fs.fsyncSync(fd);
    } catch (error) {
      fs.closeSync(fd);
      fs.rmSync(temp, { force: true });
      throw error;
    }
    fs.closeSync(fd);
    try {
      fs.renameSync(temp, target);
    } catch (error) {
      fs.rmSync(temp, { force: true });
      throw error;
    }
    syncDirectory(dir);
  }

  /** Removes the temp files a killed run left in `dir`, once per run; never fails. */
  #tidy(dir: string): void {
    if (this.#tidied.has(dir)) return;
    this.#tidied.add(dir);
    let names: string[];
    try {
      names = fs.readdirSync(dir);
    } catch {
      return;
    }
    for (const name of names) {
      if (!STALE_TEMP.test(name)) continue;
      try {
        if (!lstatOrNull(path.join(dir, name))?.isDirectory()) fs.unlinkSync(path.join(dir, name));
      } catch {
        // Left for a later run: a stale temp file never fails a write.
      }
    }
  }
}
