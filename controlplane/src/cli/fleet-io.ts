/** The fleet CLI's real io: this process's streams, environment, files, network and clock. */
import { readFile } from "node:fs/promises";
import type { FleetIo } from "./fleet.js";

export function systemFleetIo(out: (line: string) => void, err: (line: string) => void): FleetIo {
  return {
    out,
    err,
    isTTY: Boolean(process.stdout.isTTY),
    env: process.env,
    readFile: (file) => readFile(file, "utf8"),
    // A control plane that accepts the connection but never answers is reported, not waited on forever.
    fetch: (url, init) => fetch(url, { ...init, signal: AbortSignal.timeout(30_000) }),
    now: () => new Date(),
  };
}
