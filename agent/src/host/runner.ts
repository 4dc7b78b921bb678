/** The command port: runs a program with arguments (never through a shell), cancellable. */
import { execa } from "execa";
import { DriftlessError } from "../errors.js";

export interface CommandResult {
  exitCode: number;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  signal?: AbortSignal;
  input?: string;
  env?: Record<string, string>;
  cwd?: string;
  /** Called with each line the command prints (both streams), for progress display. */
  onLine?: (line: string) => void;
}

export interface Runner {
  /** Runs `file args...`. A non-zero exit is returned, not thrown; a program that cannot start throws. */
  run(file: string, args: readonly string[], options?: RunOptions): Promise<CommandResult>;
}

export const systemRunner: Runner = {
  async run(file, args, options = {}) {
    const child = execa(file, args, {
      reject: false,
      stripFinalNewline: false,
      cancelSignal: options.signal,
      input: options.input,
      cwd: options.cwd,
      env: options.env,
      extendEnv: true,
      ...(options.onLine ? { lines: false, buffer: true } : {}),
    });
    if (options.onLine) {
      const onLine = options.onLine;
      for (const stream of [child.stdout, child.stderr]) {
        let rest = "";
        stream?.on("data", (chunk: Buffer) => {
          const lines = (rest + chunk.toString("utf8")).split("\n");
          rest = lines.pop() ?? "";
          for (const line of lines) onLine(line);
        });
      }
    }
    const result = await child;
    if (result.failed && result.exitCode === undefined) {
      if (options.signal?.aborted) {
        throw new DriftlessError(`${file} was cancelled`, { code: "ECANCELLED", phase: "apply", cause: result });
      }
      throw new DriftlessError(`cannot run ${file}: ${result.shortMessage ?? result.message}`, {
        code: "ECOMMAND",
        phase: "apply",
        cause: result,
      });
    }
    return {
      exitCode: result.exitCode ?? 1,
      stdout: String(result.stdout ?? ""),
      stderr: String(result.stderr ?? ""),
    };
  },
};
