/** `driftless agent`: the daemon, or one cycle with --once. */
import * as path from "node:path";
import { DEFAULT_CONFIG, ENV_OVERRIDES } from "../config/load.js";
import type { AgentConfig } from "../config/schema.js";
import { Agent, describeError } from "../daemon/agent.js";
import { createTrustCheck } from "../daemon/trust.js";
import { gatherFacts } from "../facts/gather.js";
import { HostFs } from "../host/fs.js";
import { createHttpClient } from "../host/http.js";
import { createLogger, isLevel } from "../log.js";
import { detectPackageManager } from "../resources/package/apt.js";
import { createSystemdManager } from "../resources/service/systemd.js";
import { parse } from "./args.js";
import type { Io } from "./io.js";

export const AGENT_HELP = `Usage: driftless agent [--config FILE] [--once] [--root DIR]

Runs the agent: fetches the profile repository, converges this host at start, every
interval (plus a random splay), on SIGHUP (which also reloads the configuration) and on
commands from the control plane; reports drift in report mode.

Options:
  --config FILE       agent configuration (default ${DEFAULT_CONFIG})
  --once              one cycle (fetch, converge, record), then exit with the exit codes of
                      'driftless apply': 0 in sync, 2 changed, 1 could not start, 4 some failed
  --root DIR          converge the tree mounted at DIR instead of /
  --log-level LEVEL   debug, info (default), warn, error
  --log-format FMT    json (default when not on a terminal) or text
  -h, --help          show this help

Environment variables override single keys of the configuration:
${Object.entries(ENV_OVERRIDES)
  .map(([name, key]) => `  ${name.padEnd(32)} ${key.join(".")}`)
  .join("\n")}
`;

export async function runAgent(args: string[], io: Io): Promise<number> {
  const { values } = parse(args, {
    config: { type: "string" },
    once: { type: "boolean" },
    root: { type: "string" },
    "log-level": { type: "string" },
    "log-format": { type: "string" },
  });
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
  const machineFs = new HostFs("/");
  const hostFs = new HostFs(path.resolve(values.root ?? "/"));
  const agent = new Agent({
    configFile: path.resolve(values.config ?? DEFAULT_CONFIG),
    env: process.env,
    fs: machineFs,
    ports: {
      repoFs: machineFs,
      hostFs,
      runner: io.runner,
      clock: io.clock,
      packageManager: detectPackageManager,
      serviceManager: createSystemdManager,
    },
    gitFs: HostFs.nodeFs(),
    http: (signal) => createHttpClient({ ...(signal ? { signal } : {}), idleTimeoutMs: 30_000 }),
    facts: (config: AgentConfig) =>
      gatherFacts({ fs: hostFs, clock: io.clock, cacheFile: path.join(config.stateDir, "facts.json") }),
    trust: (config) => createTrustCheck(machineFs, config),
    log,
  });

  if (values.once) {
    try {
      const result = await agent.once();
      for (const e of result?.errors ?? []) if (e.code !== "EFETCH") io.err(`driftless agent: ${e.toString()}`);
      return result?.exitCode ?? 1;
    } catch (error) {
      io.err(`driftless agent: ${describeError(error)}`);
      return 1;
    }
  }

  try {
    agent.start();
  } catch (error) {
    io.err(`driftless agent: ${describeError(error)}`);
    return 1;
  }
  return await new Promise<number>((resolve) => {
    const stop = (signal: string) => {
      log.info("stopping", { signal });
      // Whatever happens, the process is gone within 10 s.
      setTimeout(() => process.exit(1), 9_500).unref();
      agent.stop().then(
        () => resolve(0),
        () => resolve(1),
      );
    };
    process.once("SIGTERM", () => stop("SIGTERM"));
    process.once("SIGINT", () => stop("SIGINT"));
    process.on("SIGHUP", () => agent.reload());
  });
}
