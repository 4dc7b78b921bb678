/**
 * One run of the agent (`driftless agent --once`, and each run the supervisor starts): read the
 * configuration, take the run lock (waiting for a `driftless apply` under way), run one cycle,
 * and say when the next one is due.
 */
import type { HttpClient, PromiseFsClient } from "isomorphic-git";
import { loadAgentConfig } from "../config/load.js";
import type { AgentConfig } from "../config/schema.js";
import type { RunPorts } from "../engine/run.js";
import { DriftlessError, ErrorList, errorMessage } from "../errors.js";
import type { Facts } from "../facts/collect.js";
import type { HostFs } from "../host/fs.js";
import { type RunLock, waitLock } from "../host/lock.js";
import type { Logger } from "../log.js";
import { GitCache, isGitUrl } from "../source/git.js";
import { StateStore } from "../state/db.js";
import { type CycleResult, runCycle, type TrustCheck } from "./cycle.js";

export interface AgentDeps {
  configFile: string;
  /** The configuration's text when the supervisor hands it over (the last valid one on reload); else the file is read. */
  configText?: string;
  env: Record<string, string | undefined>;
  /** The machine's filesystem (config, state, cache). */
  fs: HostFs;
  /** Ports of a run against the managed host. */
  ports: RunPorts;
  gitFs: PromiseFsClient | typeof import("node:fs");
  http: (signal?: AbortSignal) => HttpClient;
  facts: (config: AgentConfig) => Promise<Facts>;
  trust: (config: AgentConfig) => Promise<TrustCheck | null>;
  log: Logger;
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
}

const RETRY_BASE_MS = 10_000;
const INVALID_CONFIG_RETRY_MS = 60_000;

export function loadConfig(deps: AgentDeps): AgentConfig {
  const { loaded, errors } = loadAgentConfig(deps.fs, deps.configFile, deps.env, deps.configText);
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
    config = loadConfig(deps);
  } catch (error) {
    log.error("configuration is invalid", { file: deps.configFile, error: describeError(error) });
    return {
      report: { exitCode: 1, configValid: false, nextInMs: INVALID_CONFIG_RETRY_MS, failures: request.failures + 1 },
    };
  }
  const random = deps.random ?? Math.random;
  if (request.splayFirst && config.source.splay > 0) {
    // The first run waits a random part of the splay: the supervisor waits it out as a timer,
    // so a SIGHUP or a command meanwhile runs at once.
    const wait = Math.round(random() * config.source.splay);
    log.info("first run after the splay", { inS: Math.round(wait / 1000) });
    return { report: { exitCode: 0, configValid: true, nextInMs: wait, failures: request.failures } };
  }

  deps.fs.mkdirp(config.stateDir, 0o700);
  let lock: RunLock | undefined;
  let state: StateStore | undefined;
  let result: CycleResult | undefined;
  let failures = request.failures;
  try {
    lock = await waitLock(config.stateDir, `driftless agent (pid ${process.pid})`, deps.ports.clock, {
      signal: request.stop,
      onWait: (owner) => log.info("waiting for a run in progress", { owner }),
    });
    state = StateStore.open(config.stateDir);
    log.info("run started", { fetch: request.fetch });
    const gitSource = isGitUrl(config.source.url);
    result = await runCycle(
      {
        config,
        ports: deps.ports,
        state,
        git: gitSource ? new GitCache({ fs: deps.fs, gitFs: deps.gitFs, http: deps.http }, config.stateDir) : null,
        trust: gitSource ? await deps.trust(config) : null,
        ...(gitSource ? credentials(deps.fs, config) : {}),
        facts: await deps.facts(config),
        log,
      },
      { fetch: request.fetch, stop: request.stop, signal: request.signal },
    );
    failures = result.errors.some((e) => e.code === "EFETCH") ? failures + 1 : 0;
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
    },
    ...(result ? { result } : {}),
  };
}

/** Credentials are read from their files at every run, so a rotated secret needs no restart. */
function credentials(fs: HostFs, config: AgentConfig): { auth?: { username: string; password: string } } {
  const read = (file: string) => (fs.readTextIfExists(file) ?? "").trim();
  const s = config.source;
  if (s.tokenFile) return { auth: { username: s.username ?? "git", password: read(s.tokenFile) } };
  if (s.usernameFile && s.passwordFile)
    return { auth: { username: read(s.usernameFile), password: read(s.passwordFile) } };
  return {};
}

/** One line per problem, located. */
export function describeError(error: unknown): string {
  if (error instanceof ErrorList) return error.errors.map((e) => e.toString()).join("; ");
  if (error instanceof DriftlessError) return error.toString();
  return errorMessage(error);
}
