/**
 * `driftless agent`: the supervisor (default, daemon/supervisor-main.ts), one run (`--once`), or
 * a run started by the supervisor (`--run`, internal). This module stays small: the supervisor
 * loads it, and nothing of the run's code (the single binary's supervisor program leaves
 * `runAgent` out; scripts/build-binary.mjs checks that agent-run.ts is not in it).
 */
import * as path from "node:path";
import { DEFAULT_CONFIG, ENV_OVERRIDES } from "../config/env.js";
import { createLogger, isLevel, type Logger } from "../log.js";
import { parse } from "./args.js";
import type { Io } from "./io.js";

export const AGENT_HELP = `Usage: driftless agent [--config FILE] [--once] [--root DIR]

Runs the agent: fetches the profile repository and converges this host at start, every
interval (plus a random splay), on SIGHUP (which also reloads the configuration) and on
commands from the control plane; in report mode it only records drift. Each run is a child
process, so the agent between runs stays small. With 'broker:' in the configuration it reports
its status, runs and facts to the control plane over MQTT.

Options:
  --config FILE       agent configuration (default ${DEFAULT_CONFIG})
  --once              one run (fetch, converge, record, report), then exit with the exit codes
                      of 'driftless apply': 0 in sync, 2 changed, 1 could not start, 4 some
                      failed; with a broker it waits up to 30 s for the reports' acks
  --root DIR          converge the tree mounted at DIR instead of /
  --log-level LEVEL   debug, info (default), warn, error
  --log-format FMT    json (default when not on a terminal) or text
  -h, --help          show this help

Environment variables override single keys of the configuration:
${Object.entries(ENV_OVERRIDES)
  .map(([name, key]) => `  ${name.padEnd(32)} ${key.join(".")}`)
  .join("\n")}
`;

export const AGENT_OPTIONS = {
  config: { type: "string" },
  once: { type: "boolean" },
  root: { type: "string" },
  "log-level": { type: "string" },
  "log-format": { type: "string" },
  // Internal: a run started by the supervisor.
  run: { type: "boolean" },
  "no-fetch": { type: "boolean" },
  "splay-first": { type: "boolean" },
  failures: { type: "string" },
} as const;

/** `driftless agent`'s command line, read: what every mode needs. */
export interface AgentCall {
  values: ReturnType<typeof parse<typeof AGENT_OPTIONS>>["values"];
  configFile: string;
  log: Logger;
}

/** Reads `driftless agent`'s arguments (`args`: after `agent`); an exit code when done (help, a bad option). */
export function readAgentCall(args: string[], io: Io): AgentCall | number {
  const { values } = parse(args, AGENT_OPTIONS);
  if (values.help) {
    io.out(AGENT_HELP);
    return 0;
  }
  const level = values["log-level"] ?? process.env.DRIFTLESS_LOG_LEVEL ?? "info";
  if (!isLevel(level)) {
    io.err(`driftless agent: --log-level must be debug, info, warn or error, not ${level}`);
    return 1;
  }
  const format = values["log-format"] ?? (process.stderr.isTTY ? "text" : "json");
  if (format !== "json" && format !== "text") {
    io.err(`driftless agent: --log-format must be json or text, not ${format}`);
    return 1;
  }
  const log = createLogger({
    write: (line) => io.err(line),
    json: format === "json",
    level,
    now: () => io.clock.now(),
  });
  return { values, configFile: path.resolve(values.config ?? DEFAULT_CONFIG), log };
}

export async function runAgent(args: string[], io: Io): Promise<number> {
  const call = readAgentCall(args, io);
  if (typeof call === "number") return call;
  const { values, configFile, log } = call;
  if (values.once || values.run) {
    const { runOnce } = await import("./agent-run.js");
    return runOnce(
      {
        configFile,
        root: path.resolve(values.root ?? "/"),
        fetch: !values["no-fetch"],
        splayFirst: values["splay-first"] ?? false,
        failures: Number(values.failures ?? 0) || 0,
        child: values.run ?? false,
      },
      io,
      log,
    );
  }
  const { supervise } = await import("../daemon/supervisor-main.js");
  return supervise(configFile, args, io, log);
}
