/**
 * Reads the actual state of files. A regular file's content is hashed unless its recorded
 * fingerprint (device, inode, size, mtime, ctime) proves it unchanged since it was last read or
 * written; a fingerprint taken within two seconds of the file's last change is not trusted, as
 * the file could have changed again within the same timestamp tick. A trusted record whose hash
 * differs from the desired one still means a content change: the file is then read, once, so the
 * plan can show what changes.
 */
import { createHash } from "node:crypto";
import { type FileStat, fingerprintOf, type HostFs, RACY_NS } from "../../host/fs.js";
import type { ActualFile, DesiredFile } from "../types.js";
import { isText, MAX_DIFF_BYTES } from "./plan.js";

export interface FileRecord {
  fingerprint: string;
  contentHash: string;
  /** Wall clock time of the record, in nanoseconds since the epoch. */
  recordedAtNs: bigint;
}

/** True when a record can stand for reading the file again. */
export function trustRecord(st: FileStat, record: FileRecord | undefined): record is FileRecord {
  return record !== undefined && record.fingerprint === fingerprintOf(st) && st.ctimeNs < record.recordedAtNs - RACY_NS;
}

export interface FileReadResult {
  actual: Map<string, ActualFile>;
  /** New records for files whose content was read (to save after the run). */
  records: Map<string, FileRecord>;
  problems: Map<string, string>;
}

export function readFiles(
  fs: HostFs,
  files: DesiredFile[],
  recorded: Map<string, FileRecord>,
  nowNs: bigint,
): FileReadResult {
  const actual = new Map<string, ActualFile>();
  const records = new Map<string, FileRecord>();
  const problems = new Map<string, string>();
  for (const desired of files) {
    try {
      const st = fs.lstat(desired.path);
      if (!st) {
        actual.set(desired.id, { type: "absent" });
        continue;
      }
      const found: ActualFile = { type: st.type, mode: st.mode, uid: st.uid, gid: st.gid };
      if (st.type === "link") {
        found.target = fs.readlink(desired.path);
      } else if (st.type === "file" && desired.state === "file" && desired.contentHash !== undefined) {
        const record = recorded.get(desired.id);
        // A change planned against a trusted record needs the current text for its diff.
        if (trustRecord(st, record) && record.contentHash === desired.contentHash) {
          found.contentHash = record.contentHash;
          found.fromFingerprint = true;
        } else {
          const read = readContent(fs, desired.path, st.size);
          found.contentHash = read.hash;
          // A sensitive file's content is never kept: it has no diff.
          const { content } = read;
          if (found.contentHash !== desired.contentHash && !desired.sensitive && content && isText(content)) {
            found.text = content.toString("utf8");
          }
          records.set(desired.id, {
            fingerprint: fingerprintOf(st),
            contentHash: found.contentHash,
            recordedAtNs: nowNs,
          });
        }
      }
      actual.set(desired.id, found);
    } catch (error) {
      problems.set(desired.id, `cannot read ${desired.path}: ${(error as Error).message}`);
    }
  }
  return { actual, records, problems };
}

/** The file's hash; its content too when it is small enough to show as a diff (a large file is streamed). */
function readContent(fs: HostFs, hostPath: string, size: number): { hash: string; content?: Buffer } {
  if (size <= MAX_DIFF_BYTES) {
    const content = fs.readFile(hostPath);
    return { hash: createHash("sha256").update(content).digest("hex"), content };
  }
  const hash = createHash("sha256");
  fs.readChunks(hostPath, (chunk) => hash.update(chunk));
  return { hash: hash.digest("hex") };
}

/** The record of a file just written by the agent (trusted from the next run on, after the racy window). */
export function recordAfterWrite(fs: HostFs, desired: DesiredFile, nowNs: bigint): FileRecord | undefined {
  const st = fs.lstat(desired.path);
  if (st?.type !== "file" || desired.contentHash === undefined) return undefined;
  return { fingerprint: fingerprintOf(st), contentHash: desired.contentHash, recordedAtNs: nowNs };
}
