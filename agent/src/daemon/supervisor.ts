/**
 * The long-lived agent process. It holds no run code: each run is a child process
 * (`driftless agent --run`), started at start, on the poll timer (interval plus a random
 * splay, or a capped backoff after a failed fetch, as the last run said), on `trigger()` (the
 * control plane's refresh/converge commands) and on SIGHUP. The configuration file is read
 * before every run; when it turns out invalid, the last valid text is used and the error logged.
 * `stop()` passes SIGTERM to the run under way (it finishes its resource and records itself as
 * interrupted), and SIGKILL if it is still there after the grace period.
 */
import type { Clock } from "../host/clock.js";
import type { Logger } from "../log.js";
import type { RunReport } from "./agent.js";

export type Trigger = "start" | "timer" | "refresh" | "converge" | "signal";

export interface RunHandle {
  done: Promise<{ report: RunReport | null; exitCode: number }>;
  signal(name: NodeJS.Signals): void;
}

export interface SupervisorDeps {
  /** Starts one run with the configuration's text. */
  startRun(request: { fetch: boolean; splayFirst: boolean; failures: number; configText: string }): RunHandle;
  /** The configuration file's text now, or null when it cannot be read. */
  readConfig(): string | null;
  clock: Clock;
  log: Logger;
  /** How long a stopping run may take before it is killed. */
  graceMs?: number;
  /** Told when each run has ended, with its report (the reporter publishes what it recorded). */
  onRunEnd?(report: RunReport | null): void;
  /** Called last when stopping (the reporter says `offline`). */
  onStop?(): Promise<void>;
}

export class Supervisor {
  readonly #deps: SupervisorDeps;
  #timer: NodeJS.Timeout | undefined;
  #current: RunHandle | undefined;
  #pending: Trigger | undefined;
  #failures = 0;
  #stopping = false;
  #lastGoodConfig: string | undefined;

  constructor(deps: SupervisorDeps) {
    this.#deps = deps;
  }

  start(): void {
    this.#deps.log.info("agent started", { pid: process.pid });
    this.trigger("start");
  }

  /** A run now, or right after the one under way. `converge` does not fetch. */
  trigger(kind: Trigger): void {
    if (this.#stopping) return;
    if (this.#current) {
      if (this.#pending !== "refresh" && this.#pending !== "start") this.#pending = kind;
      return;
    }
    clearTimeout(this.#timer);
    void this.#run(kind);
  }

  /** SIGHUP: the next run reads the configuration again; it runs now. */
  reload(): void {
    this.#deps.log.info("reloading the configuration", {});
    this.trigger("signal");
  }

  async stop(): Promise<void> {
    this.#stopping = true;
    clearTimeout(this.#timer);
    const current = this.#current;
    if (current) {
      current.signal("SIGTERM");
      const kill = setTimeout(() => current.signal("SIGKILL"), this.#deps.graceMs ?? 9_000);
      await current.done;
      clearTimeout(kill);
    }
    await this.#deps.onStop?.();
    this.#deps.log.info("agent stopped", {});
  }

  async #run(kind: Trigger): Promise<void> {
    const text = this.#deps.readConfig();
    const configText = text ?? this.#lastGoodConfig ?? "";
    let handle = this.#deps.startRun({
      fetch: kind !== "converge",
      splayFirst: kind === "start",
      failures: this.#failures,
      configText,
    });
    this.#current = handle;
    let { report, exitCode } = await handle.done;
    if (
      report &&
      !report.configValid &&
      this.#lastGoodConfig !== undefined &&
      configText !== this.#lastGoodConfig &&
      !this.#stopping
    ) {
      this.#deps.log.error("the configuration is invalid; running with the last valid one", {});
      handle = this.#deps.startRun({
        fetch: kind !== "converge",
        splayFirst: false,
        failures: this.#failures,
        configText: this.#lastGoodConfig,
      });
      this.#current = handle;
      ({ report, exitCode } = await handle.done);
    } else if (report?.configValid) {
      this.#lastGoodConfig = configText;
    }
    this.#current = undefined;
    this.#deps.onRunEnd?.(report);
    if (this.#stopping) return;
    this.#failures = report?.failures ?? this.#failures + 1;
    // A run that died without a report (killed, crashed) is retried after a minute.
    const delay = report ? report.nextInMs : 60_000;
    if (!report) this.#deps.log.error("run ended without a report", { exitCode });
    const next = this.#pending;
    this.#pending = undefined;
    if (next) {
      this.trigger(next);
      return;
    }
    // Also the first run's splay, which a run reports as its delay: a trigger meanwhile runs at once.
    this.#timer = setTimeout(() => this.trigger("timer"), delay);
    this.#deps.log.debug("next run scheduled", { inS: Math.round(delay / 1000) });
  }
}
