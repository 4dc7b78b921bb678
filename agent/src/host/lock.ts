/**
 * One run at a time: an exclusive lock file in the state directory holding the owner's pid.
 * Taken with link(2), which is atomic; a lock whose process is gone is taken over.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import { DriftlessError } from "../errors.js";
import type { Clock } from "./clock.js";

export interface LockOwner {
  pid: number;
  since: string;
  what: string;
}

export interface RunLock {
  release(): void;
}

/** Takes the lock or throws ELOCKED naming the owner. */
export function tryLock(dir: string, what: string, now: Date): RunLock {
  const file = path.join(dir, "run.lock");
  const mine = `${file}.${process.pid}`;
  const owner: LockOwner = { pid: process.pid, since: now.toISOString(), what };
  fs.writeFileSync(mine, JSON.stringify(owner));
  try {
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        fs.linkSync(mine, file);
        return {
          release: () => {
            const current = readOwner(file);
            if (current?.pid === process.pid) fs.rmSync(file, { force: true });
          },
        };
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
        const current = readOwner(file);
        if (current && isAlive(current.pid) && current.pid !== process.pid) {
          throw new DriftlessError(
            `another run is in progress: ${current.what} (pid ${current.pid}, since ${current.since})`,
            {
              code: "ELOCKED",
              phase: "state",
              retryable: true,
            },
          );
        }
        // The owner is gone (or the file is unreadable): move it aside, then try again.
        fs.rmSync(file, { force: true });
      }
    }
    throw new DriftlessError(`cannot take the run lock ${file}`, { code: "ELOCKED", phase: "state", retryable: true });
  } finally {
    fs.rmSync(mine, { force: true });
  }
}

/** Waits for the lock, checking every `pollMs`, until `signal` aborts. */
export async function waitLock(
  dir: string,
  what: string,
  clock: Clock,
  options: { signal?: AbortSignal; pollMs?: number; onWait?: (owner: string) => void } = {},
): Promise<RunLock> {
  let told = false;
  for (;;) {
    try {
      return tryLock(dir, what, clock.now());
    } catch (error) {
      if (!(error instanceof DriftlessError) || error.code !== "ELOCKED") throw error;
      if (!told) options.onWait?.(error.message);
      told = true;
      await clock.sleep(options.pollMs ?? 500, options.signal);
    }
  }
}

function readOwner(file: string): LockOwner | null {
  try {
    return JSON.parse(fs.readFileSync(file, "utf8")) as LockOwner;
  } catch {
    return null;
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}
