/** `driftless status`: the last runs, from the state database the agent configuration names. */
import * as path from "node:path";
import { DEFAULT_CONFIG } from "../config/env.js";
import { loadAgentConfig } from "../config/load.js";
import { HostFs } from "../host/fs.js";
import { StateStore } from "../state/db.js";
import { parse } from "./args.js";
import type { Io } from "./io.js";

export const STATUS_HELP = `Usage: driftless status [--config FILE] [--root DIR] [--state DIR] [--limit N] [--json]

Shows the last runs recorded in the state database: the one the agent configuration names
(${DEFAULT_CONFIG} when it exists, DIR/etc/driftless/agent.yaml under --root DIR).

Options:
  --config FILE   agent configuration to read (must exist)
  --root DIR      the tree mounted at DIR: its configuration and its state directory
  --state DIR     state directory (default: the configuration's stateDir, else
                  /var/lib/driftless, or DIR/var/lib/driftless under --root)
  --limit N       how many runs (default 10)
  --json          print JSON
  -h, --help      show this help
`;

export async function runStatus(args: string[], io: Io): Promise<number> {
  const { values } = parse(args, {
    config: { type: "string" },
    root: { type: "string" },
    state: { type: "string" },
    limit: { type: "string" },
    json: { type: "boolean" },
  });
  if (values.help) {
    io.out(STATUS_HELP);
    return 0;
  }
  const fs = new HostFs("/");
  const root = path.resolve(values.root ?? "/");
  let stateDir = values.state ? path.resolve(values.state) : path.join(root, "var/lib/driftless");
  if (!values.state) {
    const explicit = values.config !== undefined;
    const file = explicit ? path.resolve(values.config as string) : path.join(root, DEFAULT_CONFIG);
    if (explicit && !fs.lstat(file)) {
      io.err(`driftless status: --config ${file}: no such file`);
      return 1;
    }
    if (fs.lstat(file) || process.env.DRIFTLESS_STATE_DIR) {
      const treeRoot = !explicit && root !== "/" ? root : undefined;
      // Only the state directory matters here: a configuration without a source still names it.
      const { loaded, errors } = await loadAgentConfig(fs, file, process.env, undefined, {
        ...(treeRoot ? { treeRoot } : {}),
        overrides: [{ key: ["source", "url"], value: "-", option: "status" }],
      });
      if (!loaded) {
        for (const e of errors) io.err(`driftless status: ${e.toString()}`);
        return 1;
      }
      stateDir = loaded.config.stateDir;
    }
  }
  const limit = Number(values.limit ?? 10);
  if (!Number.isInteger(limit) || limit < 1) {
    io.err(`driftless status: --limit must be a positive whole number, not ${values.limit}`);
    return 1;
  }
  if (!fs.lstat(path.join(stateDir, "state.db"))) {
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
      run.result === "failed" || run.result === "interrupted" || run.result === "error"
        ? s.red
        : run.result === "changed"
          ? s.yellow
          : s.green;
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
