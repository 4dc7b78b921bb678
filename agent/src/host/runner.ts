/** The command port: runs a program with arguments (never through a shell), cancellable. */
import { spawn } from "node:child_process";
import { DriftlessError } from "../errors.js";

export interface CommandResult {
  exitCode: number;
  stdout: string;
  stderr: string;
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

/**
 * The real runner, on node:child_process. (A wrapper library costs more memory at start than
 * the whole agent's budget allows for this little code.)
 */
export const systemRunner: Runner = {
  run(file, args, options = {}) {
    return new Promise((resolve, reject) => {
      if (options.signal?.aborted) {
        reject(cancelled(file, options.signal));
        return;
      }
      const child = spawn(file, args, {
        cwd: options.cwd,
        env: options.env ? { ...process.env, ...options.env } : process.env,
        stdio: [options.input === undefined ? "ignore" : "pipe", "pipe", "pipe"],
        signal: options.signal,
        killSignal: "SIGTERM",
      });
      const out: Buffer[] = [];
      const err: Buffer[] = [];
      const lineSplitter = () => {
        let rest = "";
        return (chunk: Buffer) => {
          if (!options.onLine) return;
          const lines = (rest + chunk.toString("utf8")).split("\n");
          rest = lines.pop() ?? "";
          for (const line of lines) options.onLine(line);
        };
      };
      const outLines = lineSplitter();
      const errLines = lineSplitter();
      child.stdout?.on("data", (chunk: Buffer) => {
        out.push(chunk);
        outLines(chunk);
      });
      child.stderr?.on("data", (chunk: Buffer) => {
        err.push(chunk);
        errLines(chunk);
      });
      if (options.input !== undefined) {
        // A program that exits without reading its input must not crash the agent with EPIPE.
        child.stdin?.on("error", () => {});
        child.stdin?.end(options.input);
      }
      child.on("error", (error: NodeJS.ErrnoException) => {
        if (options.signal?.aborted) return reject(cancelled(file, options.signal));
        reject(
          new DriftlessError(`cannot run ${file}: ${error.code === "ENOENT" ? "not found" : error.message}`, {
            code: "ECOMMAND",
            phase: "apply",
            cause: error,
          }),
        );
      });
      child.on("close", (code, signal) => {
        if (options.signal?.aborted) return reject(cancelled(file, options.signal));
        resolve({
          exitCode: code ?? (signal ? 128 + signalNumber(signal) : 1),
          stdout: Buffer.concat(out).toString("utf8"),
          stderr: Buffer.concat(err).toString("utf8"),
        });
      });
    });
  },
};

function cancelled(file: string, signal: AbortSignal): DriftlessError {
  return new DriftlessError(`${file} was cancelled`, { code: "ECANCELLED", phase: "apply", cause: signal.reason });
}

function signalNumber(signal: NodeJS.Signals): number {
  const numbers: Partial<Record<NodeJS.Signals, number>> = { SIGHUP: 1, SIGINT: 2, SIGKILL: 9, SIGTERM: 15 };
  return numbers[signal] ?? 0;
}
