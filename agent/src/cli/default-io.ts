/** The real ports and streams a command runs with (main.ts and the supervisor's entry). */
import { systemClock } from "../host/clock.js";
import { systemRunner } from "../host/runner.js";
import { type Io, terminalProgress } from "./io.js";
import { writePaced } from "./json-out.js";
import { makeStyle } from "./style.js";

export function defaultIo(): Io {
  const color = Boolean(process.stdout.isTTY) && !process.env.NO_COLOR;
  return {
    out: (line) => process.stdout.write(`${line}\n`),
    outPieces: (pieces) => writePaced(process.stdout, pieces),
    err: (line) => process.stderr.write(`${line}\n`),
    style: makeStyle(color),
    runner: systemRunner,
    clock: systemClock,
    progress: () => terminalProgress(process.stderr, systemClock),
  };
}
