/**
 * `driftless agent`: the supervisor (default), one run (`--once`), or a run started by the
 * supervisor (`--run`, internal). This module stays small: the supervisor loads nothing else.
 */
import * as path from "node:path";
import { DEFAULT_CONFIG, ENV_OVERRIDES } from "../config/env.js";
import type { RunReport } from "../daemon/agent.js";
import type { Reporter } from "../daemon/reporter.js";
import { Supervisor } from "../daemon/supervisor.js";
import { spawnSelf } from "../host/child.js";
import { HostFs } from "../host/fs.js";
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

export async function runAgent(args: string[], io: Io): Promise<number> {
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
  const configFile = path.resolve(values.config ?? DEFAULT_CONFIG);

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
  return supervise(configFile, args, io, log);
}

/** The long-lived process: schedules runs, passes signals on, never loads the run's code. */
async function supervise(configFile: string, args: string[], io: Io, log: Logger): Promise<number> {
  const fs = new HostFs("/");
  if (fs.readTextIfExists(configFile) === null && !process.env.DRIFTLESS_SOURCE_URL) {
    io.err(
      `driftless agent: no configuration at ${configFile}; create it (driftless install writes one) or set DRIFTLESS_SOURCE_URL`,
    );
    return 1;
  }
  const passOn = args.filter((a, i) => a !== "--once" && !(i > 0 && args[i - 1] === "--config") && a !== "--config");
  // Reporting is loaded (MQTT.js, the SQLite addon) only once a run says the configuration has a broker.
  let reporter: Reporter | undefined;
  let reporting = Promise.resolve();
  const onRunEnd = (report: RunReport | null) => {
    reporting = reporting.then(async () => {
      const broker = report?.broker;
      if (broker && !reporter) {
        const { Reporter } = await import("../daemon/reporter.js");
        const { VERSION } = await import("../main.js");
        reporter = new Reporter({
          fs,
          clock: io.clock,
          log,
          version: VERSION,
          trigger: (kind) => supervisor.trigger(kind),
        });
      }
      if (broker !== undefined) await reporter?.configure(broker);
      reporter?.runEnded();
      const m = process.memoryUsage();
      const mb = (n: number) => Math.round((n / 1048576) * 10) / 10;
      log.debug("daemon memory", {
        rssMB: mb(m.rss),
        heapMB: mb(m.heapTotal),
        heapUsedMB: mb(m.heapUsed),
        externalMB: mb(m.external),
      });
    });
    // One failure (an addon that does not load) must not stop the reporting of later runs.
    reporting = reporting.catch((error: unknown) => log.error("reporting failed", { error: (error as Error).message }));
  };
  const supervisor = new Supervisor({
    readConfig: () => fs.readTextIfExists(configFile),
    clock: io.clock,
    log,
    onRunEnd,
    onStop: async () => {
      await reporting;
      await reporter?.stop();
    },
    startRun: (request) =>
      spawnSelf<RunReport>(
        [
          "agent",
          "--run",
          "--config",
          configFile,
          ...passOn,
          ...(request.fetch ? [] : ["--no-fetch"]),
          ...(request.splayFirst ? ["--splay-first"] : []),
          "--failures",
          String(request.failures),
        ],
        request.configText,
      ),
  });
  supervisor.start();
  return await new Promise<number>((resolve) => {
    const stop = (signal: string) => {
      log.info("stopping", { signal });
      // Whatever happens, the process is gone within 10 s.
      setTimeout(() => process.exit(1), 9_800).unref();
      supervisor.stop().then(
        () => resolve(0),
        () => resolve(1),
      );
    };
    process.once("SIGTERM", () => stop("SIGTERM"));
    process.once("SIGINT", () => stop("SIGINT"));
    process.on("SIGHUP", () => supervisor.reload());
  });
}
