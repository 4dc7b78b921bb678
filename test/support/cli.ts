/** Runs the built CLI (dist/driftless.mjs) as a separate process, as a non-root user when we are root. */
import { spawnSync } from "node:child_process";
import { chownSync } from "node:fs";
import * as path from "node:path";

export const CLI = path.resolve("bin/driftless.js");
const NOBODY = 65534;

export interface CliResult {
  exitCode: number;
  stdout: string;
  stderr: string;
}

export const isRoot = process.getuid?.() === 0;

/** Lets the unprivileged user write into `dirs` (they are temp dirs made by root). */
export function handOver(...dirs: string[]): void {
  if (isRoot) for (const dir of dirs) chownSync(dir, NOBODY, NOBODY);
}

export function driftless(args: string[], options: { asRoot?: boolean; env?: Record<string, string> } = {}): CliResult {
  const command =
    isRoot && !options.asRoot
      ? ["setpriv", `--reuid=${NOBODY}`, `--regid=${NOBODY}`, "--clear-groups", process.execPath, CLI, ...args]
      : [process.execPath, CLI, ...args];
  const result = spawnSync(command[0] as string, command.slice(1), {
    encoding: "utf8",
    env: { ...process.env, NO_COLOR: "1", ...options.env },
    maxBuffer: 64 * 1024 * 1024,
  });
  return { exitCode: result.status ?? -1, stdout: result.stdout, stderr: result.stderr };
}
