/**
 * `driftlessctl demo` as users run it: the built CLI as a child process (as an unprivileged user
 * when the tests run as root) in a new directory, its output collected; git in its work clone as
 * the same user; and what is needed to check that it left nothing running.
 *
 *   const demo = await startDemo(["--hosts", "2", "--interval", "1h"]);
 *   const url = await demo.printed(/^ {2}API +(http:\/\/\S+)/m);
 *   ...
 *   await demo.cleanup();   // SIGKILLs what is left (after a test that failed) and removes the directory
 */
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { chownSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { isRoot } from "./cli.js";

export const CTL = path.resolve("bin/driftlessctl.js");
const NOBODY = 65534;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** The command as the test's user: nobody (setpriv) when we are root. */
function asUser(file: string, args: string[]): [string, string[]] {
  return isRoot
    ? ["setpriv", [`--reuid=${NOBODY}`, `--regid=${NOBODY}`, "--clear-groups", file, ...args]]
    : [file, args];
}

export function runAsUser(file: string, args: string[], options: { cwd?: string; env?: Record<string, string> } = {}) {
  const [cmd, argv] = asUser(file, args);
  return new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
    execFile(
      cmd,
      argv,
      { cwd: options.cwd, env: { ...process.env, NO_COLOR: "1", ...options.env } },
      (error, stdout, stderr) => {
        resolve({ code: error ? (typeof error.code === "number" ? error.code : -1) : 0, stdout, stderr });
      },
    );
  });
}

/** git in the work clone, as the demo's user, without the machine's or the user's configuration. */
export async function gitAsUser(cwd: string, args: string[]): Promise<string> {
  const result = await runAsUser("git", args, {
    cwd,
    env: { HOME: cwd, GIT_CONFIG_NOSYSTEM: "1", GIT_CONFIG_GLOBAL: "/dev/null", GIT_TERMINAL_PROMPT: "0" },
  });
  if (result.code !== 0) throw new Error(`git ${args.join(" ")}: ${result.stderr}`);
  return result.stdout.trim();
}

/** Polls `check` until it returns something other than undefined; fails after `timeoutMs`. */
export async function until<T>(what: string, check: () => Promise<T | undefined>, timeoutMs = 90_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined) return value;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ""}`);
    await sleep(200);
  }
}

/** Pids of every process below `pid`, with their start times (to tell a reused pid). */
export function descendants(pid: number): Map<number, string> {
  const parents = new Map<number, number>();
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, "utf8");
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      parents.set(Number(entry), Number(fields[1]));
    } catch {
      // gone meanwhile
    }
  }
  const found = new Map<number, string>();
  let added = true;
  while (added) {
    added = false;
    for (const [child, parent] of parents) {
      if (!found.has(child) && (parent === pid || found.has(parent))) {
        found.set(child, startTime(child) ?? "");
        added = true;
      }
    }
  }
  return found;
}

export function startTime(pid: number): string | null {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19] ?? null;
  } catch {
    return null;
  }
}

/** Processes whose command line names `text`. */
export function processesNaming(text: string): string[] {
  const found: string[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry) || Number(entry) === process.pid) continue;
    try {
      const cmdline = readFileSync(`/proc/${entry}/cmdline`, "utf8").replace(/\0/g, " ");
      if (cmdline.includes(text)) found.push(`${entry}: ${cmdline}`);
    } catch {
      // gone meanwhile
    }
  }
  return found;
}

export interface DemoProcess {
  /** The demo's directory (DIR/demo in a temp dir the user owns). */
  dir: string;
  child: ChildProcess;
  stdout(): string;
  stderr(): string;
  exit: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** The first match group of `pattern` in what the demo printed, once it printed it. */
  printed(pattern: RegExp, timeoutMs?: number): Promise<string>;
  /** SIGKILLs the demo and what it started if it is still running; removes the temp dir. */
  cleanup(): Promise<void>;
}

/** `driftlessctl demo --dir DIR ...args`, as the test's user. */
export function startDemo(args: string[]): DemoProcess {
  const parent = mkdtempSync(path.join(tmpdir(), "driftless-demo-test-"));
  if (isRoot) chownSync(parent, NOBODY, NOBODY);
  const dir = path.join(parent, "demo");
  const [cmd, argv] = asUser(process.execPath, [CTL, "demo", ...args, "--dir", dir]);
  const child = spawn(cmd, argv, { env: { ...process.env, NO_COLOR: "1" }, stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout?.on("data", (chunk: Buffer) => {
    stdout += chunk.toString("utf8");
  });
  child.stderr?.on("data", (chunk: Buffer) => {
    stderr += chunk.toString("utf8");
  });
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once("exit", (code, signal) => resolve({ code, signal })),
  );
  return {
    dir,
    child,
    stdout: () => stdout,
    stderr: () => stderr,
    exit,
    printed: (pattern, timeoutMs = 60_000) =>
      until(`${pattern} in the demo's output`, async () => pattern.exec(stdout)?.[1], timeoutMs),
    async cleanup() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill("SIGKILL");
        for (const line of processesNaming(dir)) process.kill(Number(line.split(":")[0]), "SIGKILL");
      }
      rmSync(parent, { recursive: true, force: true });
    },
  };
}
