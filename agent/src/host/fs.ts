/**
 * The filesystem port: every path the agent manages is an absolute path on the managed host,
 * resolved under a root directory (`/` normally, a mounted image or a temp dir with `--root`).
 *
 * Under a root other than `/`, symbolic links in parent directories are resolved inside the
 * root, as `chroot` would, so a link such as `/var/run -> /run` in an image never leads a write
 * onto the machine that runs the agent.
 *
 * Calls are synchronous on purpose: the agent does one apply at a time, and for thousands of
 * small files synchronous metadata calls are several times faster than the thread pool.
 */
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { DriftlessError } from "../errors.js";

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

export interface WriteOptions {
  mode: number;
  uid?: number | undefined;
  gid?: number | undefined;
}

const MAX_LINK_HOPS = 40;

export class HostFs {
  readonly root: string;
  readonly #resolvedDirs = new Map<string, string>();

  constructor(root = "/") {
    this.root = path.resolve(root);
  }

  get isRooted(): boolean {
    return this.root !== "/";
  }

  /** The path on this machine that stands for `hostPath` on the managed host. */
  resolve(hostPath: string): string {
    const normal = normalizeHostPath(hostPath);
    if (!this.isRooted) return normal;
    if (normal === "/") return this.root;
    const parent = this.#resolveDir(path.posix.dirname(normal), 0);
    return path.join(parent, path.posix.basename(normal));
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

  readFile(hostPath: string): Buffer {
    return fs.readFileSync(this.resolve(hostPath));
  }

  readTextIfExists(hostPath: string): string | null {
    try {
      return fs.readFileSync(this.resolve(hostPath), "utf8");
    } catch (error) {
      if (isNotFound(error)) return null;
      throw error;
    }
  }

  /** The canonical path on this machine (links followed), or null when it does not exist. */
  realpath(hostPath: string): string | null {
    try {
      return fs.realpathSync(this.resolve(hostPath));
    } catch (error) {
      if (isNotFound(error)) return null;
      throw error;
    }
  }

  readlink(hostPath: string): string {
    return fs.readlinkSync(this.resolve(hostPath));
  }

  readdir(hostPath: string): fs.Dirent[] {
    return fs.readdirSync(this.resolve(hostPath), { withFileTypes: true });
  }

  /** Writes a file atomically: temp file in the same directory, mode and owner set, fsync, rename. */
  writeFileAtomic(hostPath: string, data: Uint8Array, options: WriteOptions): void {
    const target = this.resolve(hostPath);
    const temp = path.join(path.dirname(target), `.${path.basename(target)}.driftless-${process.pid}`);
    const fd = fs.openSync(temp, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o600);
    try {
      fs.writeSync(fd, data);
      if (options.uid !== undefined || options.gid !== undefined) {
        // chown only when it changes something: an unprivileged agent may keep its own files.
        const st = fs.fstatSync(fd);
        if ((options.uid ?? st.uid) !== st.uid || (options.gid ?? st.gid) !== st.gid) {
          fs.fchownSync(fd, options.uid ?? -1, options.gid ?? -1);
        }
      }
      fs.fchmodSync(fd, options.mode);
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
    syncDirectory(path.dirname(target));
  }

  /** Creates one directory (its parent must exist) with the given mode, then owner. */
  mkdir(hostPath: string, mode: number, uid?: number, gid?: number): void {
    const target = this.resolve(hostPath);
    fs.mkdirSync(target, { mode });
    fs.chmodSync(target, mode); // mkdir applies the umask
    if (uid !== undefined || gid !== undefined) fs.chownSync(target, uid ?? -1, gid ?? -1);
  }

  /** Creates the missing parent directories of `hostPath` (mode 0755), like `mkdir -p`. */
  ensureParent(hostPath: string): void {
    const parent = path.posix.dirname(normalizeHostPath(hostPath));
    const st = this.lstat(parent);
    if (st?.type === "directory") return;
    if (st && st.type !== "link") {
      throw new DriftlessError(`${parent} is not a directory`, { code: "ENOTDIR", phase: "apply" });
    }
    if (st) return; // a link: resolve() follows it inside the root
    if (parent === "/") {
      fs.mkdirSync(this.root, { recursive: true }); // a new image or sandbox
      return;
    }
    this.ensureParent(parent);
    this.mkdir(parent, 0o755);
    this.#resolvedDirs.clear();
  }

  chmod(hostPath: string, mode: number): void {
    fs.chmodSync(this.resolve(hostPath), mode);
  }

  /** Changes owner without following a final symbolic link. */
  chown(hostPath: string, uid: number | undefined, gid: number | undefined): void {
    fs.lchownSync(this.resolve(hostPath), uid ?? -1, gid ?? -1);
  }

  /** Points `hostPath` at `target` atomically (temp link, then rename over what was there). */
  symlink(target: string, hostPath: string): void {
    const link = this.resolve(hostPath);
    const temp = path.join(path.dirname(link), `.${path.basename(link)}.driftless-${process.pid}`);
    fs.rmSync(temp, { force: true });
    fs.symlinkSync(target, temp);
    fs.renameSync(temp, link);
  }

  /** Removes a file, a link or an empty directory. A directory with content is refused. */
  remove(hostPath: string): void {
    const target = this.resolve(hostPath);
    const st = fs.lstatSync(target, { throwIfNoEntry: false });
    if (!st) return;
    if (st.isDirectory()) {
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
    this.#resolvedDirs.clear();
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
    this.#resolvedDirs.clear();
  }

  /** Removes a whole tree (for the agent's own caches, never for managed resources). */
  removeTree(hostPath: string): void {
    fs.rmSync(this.resolve(hostPath), { recursive: true, force: true });
    this.#resolvedDirs.clear();
  }

  /** The raw node:fs module, for libraries that take a filesystem (isomorphic-git). */
  static nodeFs(): typeof fs {
    return fs;
  }

  #resolveDir(dir: string, hops: number): string {
    const cached = this.#resolvedDirs.get(dir);
    if (cached !== undefined) return cached;
    if (dir === "/") return this.root;
    const parent = this.#resolveDir(path.posix.dirname(dir), hops);
    const candidate = path.join(parent, path.posix.basename(dir));
    const st = fs.lstatSync(candidate, { throwIfNoEntry: false });
    let resolved = candidate;
    if (st?.isSymbolicLink()) {
      if (hops >= MAX_LINK_HOPS) {
        throw new DriftlessError(`too many levels of symbolic links under ${dir}`, { code: "ELOOP", phase: "apply" });
      }
      const link = fs.readlinkSync(candidate);
      const inRoot = path.posix.isAbsolute(link) ? link : path.posix.join(path.posix.dirname(dir), link);
      resolved = this.#resolveDir(normalizeHostPath(inRoot), hops + 1);
    }
    this.#resolvedDirs.set(dir, resolved);
    return resolved;
  }

  /**
   * Calls `onChunk` with the file's content piece by piece, so a large file is never held whole.
   * The chunk's memory is reused for the next one: copy what must be kept.
   */
  readChunks(hostPath: string, onChunk: (chunk: Buffer) => void): void {
    readChunksOf(this.resolve(hostPath), onChunk);
  }

  /**
   * Writes a file atomically (as `writeFileAtomic`) with the content of `sourcePath`, a path on
   * this machine (the repository's checkout, not under the root), copied piece by piece. With
   * `sha256`, the copy is checked against it before the rename: a source that changed since it
   * was hashed replaces nothing.
   */
  writeFileAtomicFrom(hostPath: string, sourcePath: string, options: WriteOptions & { sha256?: string }): void {
    const target = this.resolve(hostPath);
    const temp = path.join(path.dirname(target), `.${path.basename(target)}.driftless-${process.pid}`);
    const fd = fs.openSync(temp, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o600);
    try {
      const hash = createHash("sha256");
      readChunksOf(sourcePath, (chunk) => {
        hash.update(chunk);
        for (let done = 0; done < chunk.length; ) done += fs.writeSync(fd, chunk, done);
      });
      if (options.sha256 !== undefined && hash.digest("hex") !== options.sha256) {
        throw new DriftlessError(`${sourcePath} changed while the run was using it`, {
          code: "ESOURCE",
          phase: "apply",
          retryable: true,
        });
      }
      if (options.uid !== undefined || options.gid !== undefined) {
        const st = fs.fstatSync(fd);
        if ((options.uid ?? st.uid) !== st.uid || (options.gid ?? st.gid) !== st.gid) {
          fs.fchownSync(fd, options.uid ?? -1, options.gid ?? -1);
        }
      }
      fs.fchmodSync(fd, options.mode);
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
    syncDirectory(path.dirname(target));
  }
}

/** Normalises an absolute host path; `..` can never climb above `/`. */
export function normalizeHostPath(hostPath: string): string {
  if (!path.posix.isAbsolute(hostPath)) {
    throw new DriftlessError(`path must be absolute: ${hostPath}`, { code: "EPATH", phase: "validate" });
  }
  return path.posix.normalize(hostPath).replace(/(.)\/+$/, "$1");
}

function syncDirectory(dir: string): void {
  let fd: number | undefined;
  try {
    fd = fs.openSync(dir, "r");
    fs.fsyncSync(fd);
  } catch {
    // Some filesystems refuse fsync on a directory; the rename itself is still atomic.
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}

function isNotFound(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException).code;
  return code === "ENOENT" || code === "ENOTDIR";
}

const CHUNK_BYTES = 1 << 20;

function readChunksOf(file: string, onChunk: (chunk: Buffer) => void): void {
  const fd = fs.openSync(file, "r");
  try {
    const buffer = Buffer.allocUnsafe(CHUNK_BYTES);
    for (;;) {
      const n = fs.readSync(fd, buffer, 0, CHUNK_BYTES, null);
      if (n === 0) break;
      onChunk(buffer.subarray(0, n));
    }
  } finally {
    fs.closeSync(fd);
  }
}
