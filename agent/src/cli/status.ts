/** `driftless status`: the last runs, from the state database. */
import * as path from "node:path";
import { HostFs } from "../host/fs.js";
import { StateStore } from "../state/db.js";
import { parse } from "./args.js";
import type { Io } from "./io.js";

export const STATUS_HELP = `Usage: driftless status [--state DIR] [--limit N] [--json]

Shows the last runs recorded in the state database.

Options:
  --state DIR   state directory (default /var/lib/driftless)
  --limit N     how many runs (default 10)
  --json        print JSON
  -h, --help    show this help
`;

export async function runStatus(args: string[], io: Io): Promise<number> {
  const { values } = parse(args, {
    state: { type: "string" },
    limit: { type: "string" },
    json: { type: "boolean" },
  });
  if (values.help) {
    io.out(STATUS_HELP);
    return 0;
  }
  const stateDir = path.resolve(values.state ?? "/var/lib/driftless");
  const limit = Number(values.limit ?? 10);
  if (!Number.isInteger(limit) || limit < 1) {
    io.err(`driftless status: --limit must be a positive whole number, not ${values.limit}`);
    return 1;
  }
  if (!new HostFs("/").lstat(path.join(stateDir, "state.db"))) {
    if (values.json) io.out(JSON.stringify({ stateDir, runs: [] }, null, 2));
    else io.out(`No runs recorded in ${stateDir} yet.`);
    return 0;
  }
  const state = StateStore.open(stateDir, { readonly: true });
  const runs = state.lastRuns(limit);
  state.close();
  if (values.json) {
    io.out(JSON.stringify({ stateDir, runs }, null, 2));
    return 0;
  }
  const s = io.style;
  io.out(s.bold("STARTED                   RESULT       CHANGED FAILED  DURATION  SOURCE"));
  for (const run of runs) {
    const colour =
      run.result === "failed" || run.result === "interrupted" ? s.red : run.result === "changed" ? s.yellow : s.green;
    io.out(
      `${run.startedAt.padEnd(25)} ${colour(run.result.padEnd(12))} ${String(run.summary.changed ?? 0).padStart(7)} ${String(
        run.summary.failed ?? 0,
      ).padStart(
        6,
      )} ${`${((run.summary.durationMs ?? 0) / 1000).toFixed(2)} s`.padStart(9)}  ${run.commit ?? run.source.slice(0, 20)}`,
    );
  }
  return 0;
}
