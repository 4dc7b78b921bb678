/**
 * One run of the agent (`driftless agent --once`, and each run the supervisor starts): read the
 * configuration, take the run lock (waiting for a `driftless apply` under way), run one cycle,
 * and say when the next one is due. A run that cannot start its cycle (a configuration that does
 * not load, a trusted-keys file missing) is recorded as such, with why.
 */
import * as os from "node:os";
import * as path from "node:path";
import { loadAgentConfig } from "../config/load.js";
import type { AgentConfig } from "../config/schema.js";
import type { RunPorts } from "../engine/run.js";
import { DriftlessError, ErrorList, errorMessage } from "../errors.js";
import { type RunLock, waitLock } from "../host/lock.js";
import { type BrokerSettings, brokerSettings } from "../report/settings.js";
import { isGitUrl } from "../source/git.js";
import { StateStore } from "../state/db.js";
import { isObject } from "../yaml/fields.js";
import { parseWithPositions } from "../yaml/positions.js";
import { type CycleOptions, type CycleResult, recordFailedStart, reportingOf, runCycle } from "./cycle.js";
import { prepareCycle, type SourceDeps } from "./source.js";

export interface AgentDeps extends SourceDeps {
  configFile: string;
  /** The configuration's text when the supervisor hands it over (the last valid one on reload); else the file is read. */
  configText?: string;
  env: Record<string, string | undefined>;
  /** Ports of a run against the managed host. */
  ports: RunPorts;
  random?: () => number;
}

export interface RunRequest {
  /** Fetch first; false converges from the cached commit (the `converge` command). */
  fetch: boolean;
  /** The first run after start is put off by a random part of the splay, so a fleet that boots together spreads out. */
  splayFirst: boolean;
  /** Failed fetches in a row so far, for the backoff. */
  failures: number;
  /** Stops between resources. */
  stop: AbortSignal;
  /** Cancels what is under way. */
  signal: AbortSignal;
}

/** What a run tells the supervisor. */
export interface RunReport {
  exitCode: number;
  configValid: boolean;
  /** When the next run is due, in ms from now. */
  nextInMs: number;
  failures: number;
  result?: string;
  /** Where to report (the configuration's `broker:`), null for nowhere; absent when the configuration did not load. */
  broker?: BrokerSettings | null;
}

const RETRY_BASE_MS = 10_000;
const INVALID_CONFIG_RETRY_MS = 60_000;

export async function loadConfig(deps: AgentDeps): Promise<AgentConfig> {
  const { loaded, errors } = await loadAgentConfig(deps.fs, deps.configFile, deps.env, deps.configText, {
    keepValidated: true,
  });
  if (!loaded) throw new ErrorList(errors);
  return loaded.config;
}

export async function agentRun(
  deps: AgentDeps,
  request: RunRequest,
): Promise<{ report: RunReport; result?: CycleResult }> {
  const { log } = deps;
  let config: AgentConfig;
  try {
    config = await loadConfig(deps);
  } catch (error) {
    log.error("configuration is invalid", { file: deps.configFile, error: describeError(error) });
    await recordInvalidConfig(deps, error);
    return {
      report: { exitCode: 1, configValid: false, nextInMs: INVALID_CONFIG_RETRY_MS, failures: request.failures + 1 },
    };
  }
  const random = deps.random ?? Math.random;
  const broker = brokerSettings(config, os.hostname());
  if (config.broker && !broker)
    log.error("no reporting: the host id is not a valid MQTT client id (letters, digits, . _ -, at most 63)", {
      host: config.host ?? os.hostname(),
    });
  if (request.splayFirst && config.source.splay > 0) {
    // The first run waits a random part of the splay: the supervisor waits it out as a timer,
    // so a SIGHUP or a command meanwhile runs at once.
    const wait = Math.round(random() * config.source.splay);
    log.info("first run after the splay", { inS: Math.round(wait / 1000) });
    return { report: { exitCode: 0, configValid: true, nextInMs: wait, failures: request.failures, broker } };
  }

  let lock: RunLock | undefined;
  let state: StateStore | undefined;
  let result: CycleResult | undefined;
  let failures = request.failures;
  try {
    deps.fs.mkdirp(config.stateDir, 0o700);
    lock = await waitLock(config.stateDir, `driftless agent (pid ${process.pid})`, deps.ports.clock, {
      signal: request.stop,
      onWait: (owner) => log.info("waiting for a run in progress", { owner }),
    });
    state = StateStore.open(config.stateDir, {
      keepRuns: config.state?.keepRuns,
      onWarning: (message) => log.warn(message, { stateDir: config.stateDir }),
    });
    log.info("run started", { fetch: request.fetch });
    result = await runPrepared(deps, config, state, config.stateDir, {
      fetch: request.fetch,
      write: true,
      stop: request.stop,
      signal: request.signal,
    });
    failures = result.notStarted || result.errors.some((e) => e.code === "EFETCH") ? failures + 1 : 0;
  } catch (error) {
    if (!request.stop.aborted) log.error("run failed", { error: describeError(error) });
    failures++;
  } finally {
    state?.close();
    lock?.release();
  }
  const { interval, splay } = config.source;
  const nextInMs =
    failures > 0
      ? Math.min(interval, RETRY_BASE_MS * 2 ** (failures - 1)) * (0.75 + random() * 0.5)
      : interval + random() * splay;
  return {
    report: {
      exitCode: result?.exitCode ?? 1,
      configValid: true,
      nextInMs: Math.round(nextInMs),
      failures,
      ...(result?.outcome ? { result: result.outcome.status } : {}),
      broker,
    },
    ...(result ? { result } : {}),
  };
}

/**
 * Prepares what the cycle needs (Git source with its cache in `cacheDir`, trust, facts) and runs
 * it, the lock already held by the caller. What stops the run before its cycle is recorded
 * (when the cycle writes) and returned as a run that could not start.
 */
export async function runPrepared(
  deps: SourceDeps & { ports: RunPorts },
  config: AgentConfig,
  state: StateStore | null,
  cacheDir: string,
  options: CycleOptions,
): Promise<CycleResult> {
  const source = isGitUrl(config.source.url) ? "git" : "dir";
  let prepared: Awaited<ReturnType<typeof prepareCycle>>;
  try {
    prepared = await prepareCycle(deps, config, cacheDir);
  } catch (error) {
    const e =
      error instanceof DriftlessError
        ? error
        : new DriftlessError(errorMessage(error), { code: "ESTART", phase: "load", cause: error });
    deps.log.error("run could not start", { error: describeError(e) });
    if (options.write && state)
      recordFailedStart(state, deps.ports.clock, config.mode, source, [e], "error", reportingOf(config));
    return { exitCode: 1, commit: null, source, errors: [e], notStarted: true };
  }
  return runCycle({ config, ports: deps.ports, state, ...prepared, log: deps.log }, options);
}

/**
 * A configuration that does not load is recorded in the state directory it names (or the
 * environment's), when that directory already exists: `driftless status` and the fleet see why
 * the host does not converge.
 */
async function recordInvalidConfig(deps: AgentDeps, error: unknown): Promise<void> {
  let stateDir = deps.env.DRIFTLESS_STATE_DIR || undefined;
  if (!stateDir) {
    try {
      const text = deps.configText || deps.fs.readTextIfExists(deps.configFile);
      const [first] = text ? await parseWithPositions(text, deps.configFile, []) : [];
      const value = isObject(first?.value) ? first.value.stateDir : undefined;
      if (typeof value === "string") stateDir = path.resolve(path.dirname(deps.configFile), value);
    } catch {
      // not YAML at all: no state directory to record in
    }
  }
  if (!stateDir || deps.fs.lstat(stateDir)?.type !== "directory") return;
  const errors = error instanceof ErrorList ? error.errors : [asDriftlessError(error)];
  let state: StateStore | undefined;
  try {
    state = StateStore.open(stateDir, { onWarning: (message) => deps.log.warn(message, { stateDir }) });
    recordFailedStart(state, deps.ports.clock, "enforce", "config", errors, "error", reportingOf(null));
  } catch (e) {
    deps.log.warn("cannot record the failed run", { stateDir, error: errorMessage(e) });
  } finally {
    state?.close();
  }
}

function asDriftlessError(error: unknown): DriftlessError {
  return error instanceof DriftlessError
    ? error
    : new DriftlessError(errorMessage(error), { code: "ECONFIG", phase: "load", cause: error });
}

/** One line per problem, located. */
export function describeError(error: unknown): string {
  if (error instanceof ErrorList) return error.errors.map((e) => e.toString()).join("; ");
  if (error instanceof DriftlessError) return error.toString();
  return errorMessage(error);
}
