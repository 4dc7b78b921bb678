/**
 * The long-lived `driftless agent`: schedules runs (each a child process, `agent --run`), passes
 * signals on, reports to the control plane. The modules this one imports are all the supervisor
 * ever loads: `driftless agent` runs `supervise` from here in the ESM build (main.ts, through
 * cli/agent.ts), and this module is the entry of the single binary's supervisor program
 * (scripts/build-binary.mjs; `main`), which holds nothing else.
 */

import { readAgentCall } from "../cli/agent.js";
import { defaultIo } from "../cli/default-io.js";
import type { Io } from "../cli/io.js";
import { spawnSelf } from "../host/child.js";
import { HostFs } from "../host/fs.js";
import type { Logger } from "../log.js";
import { VERSION } from "../version.js";
import type { RunReport } from "./agent.js";
import type { Reporter } from "./reporter.js";
import { Supervisor } from "./supervisor.js";

/**
 * The single binary's supervisor program: `argv` is `agent ...` without `--once` or `--run`
 * (agent/src/sea-main.ts sends every other command line to the full program).
 */
export async function main(argv: string[], io: Io = defaultIo()): Promise<number> {
  const [command, ...args] = argv;
  const call = command === "agent" ? readAgentCall(args, io) : 1;
  if (typeof call === "number") return call;
  if (call.values.once || call.values.run) {
    io.err("driftless agent: internal error: a run reached the supervisor program");
    return 1;
  }
  return supervise(call.configFile, args, io, call.log);
}

/** The long-lived process: schedules runs, passes signals on, never loads the run's code. */
export async function supervise(configFile: string, args: string[], io: Io, log: Logger): Promise<number> {
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
