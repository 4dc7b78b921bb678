/**
 * System calls shared by the filesystem port (`fs.ts`) and its write batches (`write-batch.ts`):
 * temp files, owner and mode on a descriptor, whole writes, chunked reads, directory fsync.
 */
import { createHash, randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import { promisify } from "node:util";
import { DriftlessError } from "../errors.js";

export const TEMP_PREFIX = ".driftless-";
/** Temp names of this agent: the current scheme and the one before it (`.<name>.driftless-<pid>`). */
export const STALE_TEMP = /^\.driftless-[0-9a-f]{16}\.tmp$|^\..+\.driftless-\d+$/;
export const { O_RDONLY, O_WRONLY, O_CREAT, O_EXCL, O_NOFOLLOW, O_NONBLOCK, O_NOCTTY, O_DIRECTORY } = fs.constants;

let tempPrefix = "";
let tempCount = 0;

/**
 * A new temp name in `dir`: 16 hex digits, a random 32-bit prefix of this process then a count
 * (a random draw per name cost about 13 µs each, 130 ms of a 10,000-file first apply). `fresh`
 * (after a clash) draws a new prefix, so names cannot be foreseen past one that was taken.
 */
export function tempName(dir: string, fresh = false): string {
  if (fresh || tempPrefix === "" || tempCount > 0xffffffff) {
    tempPrefix = randomBytes(4).toString("hex");
    tempCount = 0;
  }
  const count = (tempCount++).toString(16).padStart(8, "0");
  return path.join(dir, `${TEMP_PREFIX}${tempPrefix}${count}.tmp`);
}

/** Creates a new temp entry in `dir` with `make` (which must fail with EEXIST on a clash). */
export function createTemp<T>(dir: string, make: (name: string) => T): T {
  for (let attempt = 0; ; attempt++) {
    const name = tempName(dir, attempt > 0);
    try {
      return make(name);
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST" || attempt >= 8) throw error;
    }
  }
}

/** A new, empty temp file in `dir`, readable by its owner only until its mode is set. */
export function openTemp(dir: string): { fd: number; temp: string } {
  return createTemp(dir, (name) => ({
    fd: fs.openSync(name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0o600),
    temp: name,
  }));
}

const open = promisify(fs.open);

/** `openTemp` on libuv's thread pool: creating a file's inode can take a while. */
export async function openTempAsync(dir: string): Promise<{ fd: number; temp: string }> {
  for (let attempt = 0; ; attempt++) {
    const temp = tempName(dir, attempt > 0);
    try {
      return { fd: await open(temp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0o600), temp };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code !== "EEXIST" || attempt >= 8) throw error;
    }
  }
}

/**
 * Owner first, then mode: changing the owner clears setuid and setgid, so the mode set after
 * it keeps them. The owner is changed only when it differs (an unprivileged agent may keep
 * its own files).
 */
export function setOwnerAndMode(fd: number, mode: number, uid: number | undefined, gid: number | undefined): void {
  if (uid !== undefined || gid !== undefined) {
    const st = fs.fstatSync(fd);
    if ((uid ?? st.uid) !== st.uid || (gid ?? st.gid) !== st.gid) fs.fchownSync(fd, uid ?? -1, gid ?? -1);
  }
  fs.fchmodSync(fd, mode);
}

export function lstatOrNull(machinePath: string): fs.Stats | null {
  try {
    return fs.lstatSync(machinePath, { throwIfNoEntry: false }) ?? null;
  } catch (error) {
    if (isNotFound(error)) return null;
    throw error;
  }
}

export function isNotFound(error: unknown): boolean {
  const code = (error as NodeJS.ErrnoException).code;
  return code === "ENOENT" || code === "ENOTDIR";
}

/** Fsyncs a directory, so the entries made in it survive a power cut. */
export function syncDirectory(dir: string): void {
  let fd: number | undefined;
  try {
    fd = fs.openSync(dir, O_RDONLY | O_DIRECTORY);
    fs.fsyncSync(fd);
  } catch {
    // Some filesystems refuse fsync on a directory; the rename itself is still atomic.
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}

export function writeAll(fd: number, data: Uint8Array): void {
  for (let done = 0; done < data.length; ) done += fs.writeSync(fd, data, done);
}

const CHUNK_BYTES = 1 << 20;

export function readChunksOf(file: string, onChunk: (chunk: Buffer) => void): void {
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

/**
 * Copies `sourcePath` (a path on this machine) into `fd` piece by piece; with `sha256`, the copy
 * is checked against it: a source that changed since it was hashed fails. Returns the bytes copied.
 */
export function copyInto(fd: number, sourcePath: string, sha256: string | undefined): number {
  const hash = createHash("sha256");
  let bytes = 0;
  readChunksOf(sourcePath, (chunk) => {
    hash.update(chunk);
    writeAll(fd, chunk);
    bytes += chunk.length;
  });
  if (sha256 !== undefined && hash.digest("hex") !== sha256) {
    throw new DriftlessError(`${sourcePath} changed while the run was using it`, {
      code: "ESOURCE",
      phase: "apply",
      retryable: true,
    });
  }
  return bytes;
}

/** Normalises an absolute host path; `..` can never climb above `/`. */
export function normalizeHostPath(hostPath: string): string {
  if (!path.posix.isAbsolute(hostPath)) {
    throw new DriftlessError(`path must be absolute: ${hostPath}`, { code: "EPATH", phase: "validate" });
  }
  // Most paths are normal already (every file of a run goes through here several times).
  if (!NOT_NORMAL.test(hostPath)) return hostPath;
  return path.posix.normalize(hostPath).replace(/(.)\/+$/, "$1");
}

/** What `path.posix.normalize` (and dropping a final slash) would change: `//`, a `.` or `..` segment, a final `/`. */
const NOT_NORMAL = /\/\/|\/\.\.?(?:\/|$)|.\/$/;
