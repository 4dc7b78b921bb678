/** One run of the agent, in this process: `driftless agent --once`, or a run the supervisor started. */
import * as path from "node:path";
import type { AgentConfig } from "../config/schema.js";
import { agentRun, describeError } from "../daemon/agent.js";
import { createTrustCheck } from "../daemon/trust.js";
import { gatherFacts } from "../facts/gather.js";
import { writeReport } from "../host/child.js";
import { HostFs } from "../host/fs.js";
import { gitHttp } from "../host/http.js";
import type { Logger } from "../log.js";
import type { BrokerSettings } from "../report/settings.js";
import { detectPackageManager } from "../resources/package/apt.js";
import { createSystemdManager } from "../resources/service/systemd.js";
import { VERSION } from "../version.js";
import type { Io } from "./io.js";

export interface OnceOptions {
  configFile: string;
  root: string;
  fetch: boolean;
  splayFirst: boolean;
  failures: number;
  /** Started by the supervisor: the configuration comes on stdin, the report goes to fd 3. */
  child: boolean;
}

export async function runOnce(options: OnceOptions, io: Io, log: Logger): Promise<number> {
  // What the agent creates for itself (state database, cache) is private; managed files get
  // the modes their profiles give them, set explicitly.
  process.umask(0o077);
  const machineFs = new HostFs("/");
  const hostFs = new HostFs(options.root);
  const stop = new AbortController();
  const cancel = new AbortController();
  // SIGTERM: finish the resource under way, record the run as interrupted; a second one, or
  // the grace period running out, cancels what is running.
  const onSignal = () => {
    if (stop.signal.aborted) cancel.abort(new Error("stopping"));
    else {
      stop.abort(new Error("stopping"));
      setTimeout(() => cancel.abort(new Error("stopping")), 7_000).unref();
    }
  };
  process.on("SIGTERM", onSignal);
  process.on("SIGINT", onSignal);
  const configText = options.child ? await readStdin() : undefined;
  try {
    const { report, result } = await agentRun(
      {
        configFile: options.configFile,
        ...(configText ? { configText } : {}),
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
        http: gitHttp,
        facts: (config: AgentConfig) =>
          gatherFacts({ fs: hostFs, clock: io.clock, cacheFile: path.join(config.stateDir, "facts.json") }),
        trust: (config) => createTrustCheck(machineFs, config),
        log,
      },
      {
        fetch: options.fetch,
        splayFirst: options.splayFirst,
        failures: options.failures,
        stop: stop.signal,
        signal: cancel.signal,
      },
    );
    if (options.child) writeReport(report);
    else if (!report.configValid)
      io.err(`driftless agent: the configuration ${options.configFile} is invalid (see the log)`);
    else if (report.broker) await reportOnce(report.broker, machineFs, io, log);
    for (const e of result?.errors ?? []) log.debug("run error", { error: describeError(e) });
    return report.exitCode;
  } finally {
    process.off("SIGTERM", onSignal);
    process.off("SIGINT", onSignal);
  }
}

/** How long `--once` waits for the control plane to acknowledge its reports before it exits anyway. */
const ONCE_REPORT_TIMEOUT_MS = 30_000;

/**
 * `--once` with a broker: connect, publish the status, facts and the outbox, wait for the acks
 * (what is not acknowledged stays in the outbox for the next run), say `offline`, disconnect.
 */
async function reportOnce(broker: BrokerSettings, fs: HostFs, io: Io, log: Logger): Promise<void> {
  const { Reporter } = await import("../daemon/reporter.js");
  const reporter = new Reporter({ fs, clock: io.clock, log, version: VERSION, trigger: () => {} });
  await reporter.configure(broker);
  if (!(await reporter.flush(ONCE_REPORT_TIMEOUT_MS)))
    log.warn("reports not acknowledged yet; they stay in the outbox for the next run", {});
  await reporter.stop();
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString("utf8");
}
