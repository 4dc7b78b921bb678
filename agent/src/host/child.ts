/**
 * The agent starts each run as a child process of itself: the long-lived supervisor stays small
 * (none of the run's code is loaded in it) and every run starts from a clean heap.
 */
import { spawn } from "node:child_process";
import { writeSync } from "node:fs";
import { isSingleBinary } from "./native.js";

export interface ChildRun<T> {
  /** The report the child wrote on fd 3 (null when it wrote none), and its exit code. */
  done: Promise<{ report: T | null; exitCode: number }>;
  signal(name: NodeJS.Signals): void;
}

/** Runs this program again with `args`; `input` goes to its stdin; it reports one JSON value on fd 3. */
export function spawnSelf<T>(args: string[], input: string): ChildRun<T> {
  const child = spawn(process.execPath, selfArgs(args), { stdio: ["pipe", "inherit", "inherit", "pipe"] });
  child.stdin?.on("error", () => {});
  child.stdin?.end(input);
  const chunks: Buffer[] = [];
  const fd3 = child.stdio[3] as NodeJS.ReadableStream | null;
  fd3?.on("data", (chunk: Buffer) => chunks.push(chunk));
  const done = new Promise<{ report: T | null; exitCode: number }>((resolve) => {
    child.on("error", () => resolve({ report: null, exitCode: 1 }));
    child.on("close", (code) => {
      let report: T | null = null;
      try {
        const text = Buffer.concat(chunks).toString("utf8").trim();
        if (text) report = JSON.parse(text) as T;
      } catch {
        report = null;
      }
      resolve({ report, exitCode: code ?? 1 });
    });
  });
  return {
    done,
    signal: (name) => {
      if (child.exitCode === null) child.kill(name);
    },
  };
}

/**
 * The arguments that start this program again with `args`. The single binary takes every
 * argument as its own (its Node options, such as --max-semi-space-size, are built in, and
 * process.argv[1] is only the name it was called by); `node bin/driftless.js` needs its Node
 * options and its script again.
 */
export function selfArgs(args: string[]): string[] {
  if (isSingleBinary()) return args;
  const script = process.argv[1];
  return script && script !== process.execPath
    ? [...process.execArgv, script, ...args]
    : [...process.execArgv, ...args];
}

/** Writes the child's report on fd 3, when the parent opened it. */
export function writeReport(report: unknown): void {
  try {
    writeSync(3, `${JSON.stringify(report)}\n`);
  } catch {
    // Not started by a supervisor: nobody to tell.
  }
}
