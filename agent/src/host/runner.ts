/**
 * The command port: runs a program with arguments (never through a shell), cancellable.
 *
 * The real runner is built on execa, loaded on the first command (the daemon's supervisor and
 * commands that run nothing never load it). Each command runs in its own process group: an
 * aborted signal sends SIGTERM to the whole group (a maintainer script's children too), SIGKILL
 * after a grace period, and the run waits until the group is gone before it rejects. Output is
 * capped: the last MAX_OUTPUT_BYTES of each stream are kept (the end is where apt and systemctl
 * say what went wrong). A command killed by a signal reports its name.
 */
import { constants } from "node:os";
import { DriftlessError } from "../errors.js";
import { systemClock } from "./clock.js";

export interface CommandResult {
  exitCode: number;
  stdout: string;
  stderr: string;
  /** The signal that ended the command (`SIGKILL`, ...), when one did; exitCode is then 128 + its number. */
  signal?: NodeJS.Signals;
}

export interface RunOptions {
  signal?: AbortSignal;
  /** Written to the command's standard input; without it, standard input is closed. */
  input?: string;
  /** Added to the agent's environment. */
  env?: Record<string, string>;
  cwd?: string;
  /** Called with each line the command prints (both streams), for progress display. */
  onLine?: (line: string) => void;
}

export interface Runner {
  /** Runs `file args...`. A non-zero exit is returned, not thrown; a program that cannot start throws. */
  run(file: string, args: readonly string[], options?: RunOptions): Promise<CommandResult>;
}

/** Why a command failed, in a few words: the signal that killed it, else what it printed, else its exit code. */
export function describeFailure(result: CommandResult, options: { stdout?: boolean } = {}): string {
  if (result.signal) return `killed by ${result.signal}`;
  return (
    result.stderr.trim() || (options.stdout === false ? "" : result.stdout.trim()) || `exit code ${result.exitCode}`
  );
}

/** Bytes kept of each stream (its end); the rest is counted and dropped. */
export const MAX_OUTPUT_BYTES = 1024 * 1024;
/**
 * After an abort, how long the process group has between SIGTERM and SIGKILL: short, so that a
 * stopping agent (which cancels at 7 s and is killed at 9 s) still sees the group gone.
 */
export const KILL_GRACE_MS = 1500;

export const systemRunner: Runner = {
  async run(file, args, options = {}) {
    const { signal } = options;
    if (signal?.aborted) throw cancelled(file, signal);
    const { execa } = await import("execa");
    const child = execa(file, args, {
      ...(options.cwd !== undefined ? { cwd: options.cwd } : {}),
      ...(options.env !== undefined ? { env: options.env } : {}),
      ...(options.input !== undefined ? { input: options.input } : { stdin: "ignore" as const }),
      // Its own process group, so that an abort reaches every process the command started.
      detached: true,
      buffer: false,
      reject: false,
      encoding: "buffer",
      ...(signal ? { cancelSignal: signal } : {}),
      killSignal: "SIGTERM",
      forceKillAfterDelay: KILL_GRACE_MS,
    });
    const out = new TailBuffer(MAX_OUTPUT_BYTES);
    const err = new TailBuffer(MAX_OUTPUT_BYTES);
    const outLines = lineSplitter(options.onLine);
    const errLines = lineSplitter(options.onLine);
    child.stdout?.on("data", (chunk: Buffer) => {
      out.push(chunk);
      outLines(chunk);
    });
    child.stderr?.on("data", (chunk: Buffer) => {
      err.push(chunk);
      errLines(chunk);
    });
    const pid = child.pid;
    let forceKill: NodeJS.Timeout | undefined;
    const onAbort = () => {
      if (pid === undefined) return;
      killGroup(pid, "SIGTERM");
      // Not only the command: a process of its group that ignores SIGTERM would keep its output
      // pipes, and so the run, open.
      forceKill = setTimeout(() => killGroup(pid, "SIGKILL"), KILL_GRACE_MS);
    };
    signal?.addEventListener("abort", onAbort, { once: true });
    let result: Awaited<typeof child>;
    try {
      result = await child;
    } finally {
      signal?.removeEventListener("abort", onAbort);
    }
    if (signal?.aborted) {
      if (pid !== undefined) await waitGroupGone(pid);
      clearTimeout(forceKill);
      throw cancelled(file, signal);
    }
    if (result.failed && result.exitCode === undefined && result.signal === undefined) {
      const code = (result.cause as NodeJS.ErrnoException | undefined)?.code;
      throw new DriftlessError(`cannot run ${file}: ${code === "ENOENT" ? "not found" : result.shortMessage}`, {
        code: "ECOMMAND",
        phase: "apply",
        cause: result.cause,
      });
    }
    const ended = result.signal as NodeJS.Signals | undefined;
    return {
      exitCode: result.exitCode ?? (ended ? 128 + (constants.signals[ended] ?? 0) : 1),
      stdout: out.text(),
      stderr: err.text(),
      ...(ended ? { signal: ended } : {}),
    };
  },
};

/** The last `limit` bytes of a stream, and how many came before them. */
export class TailBuffer {
  readonly #limit: number;
  #chunks: Buffer[] = [];
  #size = 0;
  #dropped = 0;

  constructor(limit: number) {
    this.#limit = limit;
  }

  push(chunk: Buffer): void {
    this.#chunks.push(chunk);
    this.#size += chunk.length;
    while (this.#size > this.#limit) {
      const first = this.#chunks[0] as Buffer;
      const excess = this.#size - this.#limit;
      if (first.length <= excess) {
        this.#chunks.shift();
        this.#size -= first.length;
        this.#dropped += first.length;
      } else {
        this.#chunks[0] = first.subarray(excess);
        this.#size -= excess;
        this.#dropped += excess;
      }
    }
  }

  /** The kept text; when bytes were dropped, a first line says how many (the cut line is dropped too). */
  text(): string {
    let kept = Buffer.concat(this.#chunks);
    if (this.#dropped === 0) return kept.toString("utf8");
    const newline = kept.indexOf(10);
    const cut = newline === -1 ? 0 : newline + 1;
    kept = kept.subarray(cut);
    return `[${this.#dropped + cut} bytes of earlier output not kept]\n${kept.toString("utf8")}`;
  }
}

function lineSplitter(onLine: ((line: string) => void) | undefined): (chunk: Buffer) => void {
  let rest = "";
  return (chunk) => {
    if (!onLine) return;
    const lines = (rest + chunk.toString("utf8")).split("\n");
    rest = lines.pop() ?? "";
    // A line longer than the cap is passed on in pieces rather than held.
    if (rest.length > MAX_OUTPUT_BYTES) {
      onLine(rest);
      rest = "";
    }
    for (const line of lines) onLine(line);
  };
}

function killGroup(pid: number, signal: NodeJS.Signals | 0): boolean {
  try {
    process.kill(-pid, signal);
    return true;
  } catch {
    return false; // ESRCH: the group is gone
  }
}

/**
 * Waits until no process of the group is left (SIGTERM has been sent, SIGKILL follows after the
 * grace period). Gives up a second after the SIGKILL: a zombie that no init reaps stays "alive".
 */
async function waitGroupGone(pid: number): Promise<void> {
  const start = systemClock.monotonic();
  while (killGroup(pid, 0) && systemClock.monotonic() - start < KILL_GRACE_MS + 1000) {
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

function cancelled(file: string, signal: AbortSignal): DriftlessError {
  return new DriftlessError(`${file} was cancelled`, { code: "ECANCELLED", phase: "apply", cause: signal.reason });
}
