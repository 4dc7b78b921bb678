/**
 * Running programs on this machine from the harness. Test code may use `node:child_process`
 * directly (the port rule applies to agent/src only); this keeps the few options in one place.
 */
import { spawn } from "node:child_process";
import { accessSync, constants } from "node:fs";
export interface ExecResult {
  exitCode: number;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  /** Written to standard input, which is then closed; without it standard input is /dev/null. */
  input?: string;
  /** The whole environment of the program (not merged with this process's). */
  env?: Record<string, string>;
  cwd?: string;
  /** Kills the program (SIGKILL) after this long and rejects. */
  timeoutMs?: number;
}

/** Runs `file args...`; resolves with the exit code (never rejects on a non-zero exit). */
export function run(file: string, args: readonly string[], options: RunOptions = {}): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, {
      cwd: options.cwd,
      env: options.env ?? defaultEnv(),
      stdio: [options.input === undefined ? "ignore" : "pipe", "pipe", "pipe"],
    });
    const stdout: Buffer[] = [];
    const stderr: Buffer[] = [];
    child.stdout?.on("data", (chunk: Buffer) => stdout.push(chunk));
    child.stderr?.on("data", (chunk: Buffer) => stderr.push(chunk));
    let timer: NodeJS.Timeout | undefined;
    let timedOut = false;
    if (options.timeoutMs !== undefined) {
      timer = setTimeout(() => {
        timedOut = true;
        child.kill("SIGKILL");
      }, options.timeoutMs);
    }
    child.on("error", (error) => {
      if (timer) clearTimeout(timer);
      reject(error);
    });
    child.on("close", (code, signal) => {
      if (timer) clearTimeout(timer);
      const result = {
        exitCode: code ?? 128,
        stdout: Buffer.concat(stdout).toString("utf8"),
        stderr: Buffer.concat(stderr).toString("utf8"),
      };
      if (timedOut) {
        reject(new Error(`${file} ${args.join(" ")} timed out after ${options.timeoutMs} ms\n${result.stderr}`));
      } else {
        if (signal) result.stderr += `\n(killed by ${signal})`;
        resolve(result);
      }
    });
    if (options.input !== undefined && child.stdin) child.stdin.end(options.input);
  });
}

/** Like `run`, but rejects with the program's output when it exits non-zero. */
export async function runChecked(file: string, args: readonly string[], options: RunOptions = {}): Promise<ExecResult> {
  const result = await run(file, args, options);
  if (result.exitCode !== 0) {
    throw new Error(`${file} ${args.join(" ")} exited ${result.exitCode}\n${tail(result.stderr || result.stdout, 40)}`);
  }
  return result;
}

/** The last `lines` lines of a text. */
export function tail(text: string, lines: number): string {
  return text.trimEnd().split("\n").slice(-lines).join("\n");
}

const SYSTEM_PATH = ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"];

/** PATH with the system folders added (debootstrap and chroot live in sbin, which a user PATH may lack). */
function searchPath(): string[] {
  return [...new Set([...(process.env.PATH ?? "").split(":").filter(Boolean), ...SYSTEM_PATH])];
}

/** This process's environment with the system folders in PATH. */
export function defaultEnv(): NodeJS.ProcessEnv {
  return { ...process.env, PATH: searchPath().join(":") };
}

/** The path of `program` in PATH (or a system folder), or null. */
export function which(program: string): string | null {
  for (const dir of searchPath()) {
    const candidate = `${dir}/${program}`;
    if (isExecutable(candidate)) return candidate;
  }
  return null;
}

function isExecutable(file: string): boolean {
  try {
    accessSync(file, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

export function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
