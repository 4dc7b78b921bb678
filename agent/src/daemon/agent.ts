/**
 * The long-lived agent (`driftless agent`): one cycle at start, then on the poll timer (interval
 * plus a random splay), on a `refresh` or `converge` command (`trigger`, wired to MQTT by the
 * reporting work), and on SIGHUP (which also reloads the configuration). One run at a time, also
 * against `driftless apply` (the run lock in the state directory). A failed fetch is retried
 * with capped exponential backoff. `stop()` lets the resource under way finish, records the
 * run as interrupted, and cancels what is still running after a grace period.
 */
import * as path from "node:path";
import type { HttpClient, PromiseFsClient } from "isomorphic-git";
import { loadAgentConfig } from "../config/load.js";
import type { AgentConfig } from "../config/schema.js";
import type { RunPorts } from "../engine/run.js";
import { DriftlessError, ErrorList, errorMessage } from "../errors.js";
import type { Facts } from "../facts/collect.js";
import type { HostFs } from "../host/fs.js";
import { type RunLock, waitLock } from "../host/lock.js";
import type { Logger } from "../log.js";
import { GitCache } from "../source/git.js";
import { StateStore } from "../state/db.js";
import { type CycleResult, isGitUrl, runCycle, type TrustCheck } from "./cycle.js";

export type Trigger = "start" | "timer" | "retry" | "refresh" | "converge" | "signal";

export interface AgentDeps {
  configFile: string;
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
  /** How long `stop()` lets the resource under way finish before cancelling it. */
  graceMs?: number;
}

const RETRY_BASE_MS = 10_000;

export class Agent {
  readonly #deps: AgentDeps;
  #config: AgentConfig | undefined;
  #state: StateStore | undefined;
  #timer: NodeJS.Timeout | undefined;
  #running: Promise<CycleResult | undefined> | undefined;
  #pending: Trigger | undefined;
  #failures = 0;
  #stopping = false;
  /** Set by start(): only a daemon schedules its next run. */
  #daemon = false;
  #stop = new AbortController();
  #cancel = new AbortController();

  constructor(deps: AgentDeps) {
    this.#deps = deps;
  }

  get config(): AgentConfig | undefined {
    return this.#config;
  }

  /** Reads and validates the configuration; throws an error listing every problem. */
  loadConfig(): AgentConfig {
    const { loaded, errors } = loadAgentConfig(this.#deps.fs, this.#deps.configFile, this.#deps.env);
    if (!loaded) {
      throw new DriftlessError(errors.map((e) => e.toString()).join("\n"), { code: "ECONFIG", phase: "load" });
    }
    return loaded.config;
  }

  /** Loads the configuration and opens the state; the daemon then runs at once. */
  start(): void {
    this.#daemon = true;
    this.#config = this.loadConfig();
    this.#openState(this.#config);
    this.#deps.log.info("agent started", {
      host: this.#config.host ?? null,
      mode: this.#config.mode,
      source: this.#config.source.url,
      ref: this.#config.source.ref,
      intervalS: this.#config.source.interval / 1000,
    });
    // A fleet that boots together (a power cut) does not hit the Git server at the same second.
    const delay = (this.#deps.random ?? Math.random)() * this.#config.source.splay;
    this.#timer = setTimeout(() => this.trigger("start"), delay);
  }

  /** Runs one cycle now (or right after the one under way). `converge` does not fetch. */
  trigger(kind: Trigger): void {
    if (this.#stopping) return;
    if (this.#running) {
      // One is under way: remember the strongest wish (a refresh includes a converge).
      if (this.#pending !== "refresh") this.#pending = kind;
      return;
    }
    clearTimeout(this.#timer);
    this.#running = this.#cycle(kind).finally(() => {
      this.#running = undefined;
      const next = this.#pending;
      this.#pending = undefined;
      if (next && !this.#stopping) this.trigger(next);
    });
  }

  /** SIGHUP: re-read the configuration (keeping the old one when the new one is invalid), then run. */
  reload(): void {
    try {
      const config = this.loadConfig();
      if (config.stateDir !== this.#config?.stateDir) {
        this.#state?.close();
        this.#openState(config);
      }
      this.#config = config;
      this.#deps.log.info("configuration reloaded", { file: this.#deps.configFile });
    } catch (error) {
      this.#deps.log.error("configuration not reloaded: it is invalid", {
        file: this.#deps.configFile,
        error: errorMessage(error),
      });
    }
    this.trigger("signal");
  }

  /** One cycle, for `--once`. */
  async once(): Promise<CycleResult | undefined> {
    this.#config = this.loadConfig();
    this.#openState(this.#config);
    try {
      return await this.#cycle("start");
    } finally {
      this.#state?.close();
    }
  }

  /** Stops: the resource under way finishes, then the agent returns; commands are cancelled after the grace period. */
  async stop(): Promise<void> {
    this.#stopping = true;
    clearTimeout(this.#timer);
    this.#stop.abort(new Error("stopping"));
    const grace = setTimeout(() => this.#cancel.abort(new Error("stopping")), this.#deps.graceMs ?? 7_000);
    try {
      await this.#running;
    } finally {
      clearTimeout(grace);
      this.#state?.close();
      this.#state = undefined;
      this.#deps.log.info("agent stopped");
    }
  }

  #openState(config: AgentConfig): void {
    this.#deps.fs.mkdirp(config.stateDir, 0o700);
    this.#state = StateStore.open(config.stateDir);
  }

  async #cycle(trigger: Trigger): Promise<CycleResult | undefined> {
    const config = this.#config as AgentConfig;
    const state = this.#state as StateStore;
    const { log } = this.#deps;
    let lock: RunLock | undefined;
    let result: CycleResult | undefined;
    try {
      lock = await waitLock(config.stateDir, `driftless agent (pid ${process.pid})`, this.#deps.ports.clock, {
        signal: this.#stop.signal,
        onWait: (owner) => log.info("waiting for a run in progress", { owner }),
      });
      log.info("run started", { trigger });
      const gitSource = isGitUrl(config.source.url);
      result = await runCycle(
        {
          config,
          ports: this.#deps.ports,
          state,
          git: gitSource
            ? new GitCache({ fs: this.#deps.fs, gitFs: this.#deps.gitFs, http: this.#deps.http }, config.stateDir)
            : null,
          trust: gitSource ? await this.#deps.trust(config) : null,
          ...(gitSource ? this.#auth(config) : {}),
          facts: await this.#deps.facts(config),
          log,
        },
        { fetch: trigger !== "converge", stop: this.#stop.signal, signal: this.#cancel.signal },
      );
      const fetchFailed = result.errors.some((e) => e.code === "EFETCH");
      this.#failures = fetchFailed ? this.#failures + 1 : 0;
    } catch (error) {
      if (!this.#stopping) log.error("run failed", { error: describeError(error) });
      this.#failures++;
      if (!this.#daemon) throw error;
    } finally {
      lock?.release();
    }
    this.#schedule();
    return result;
  }

  /** The next timer run: interval plus splay, or a capped exponential backoff after a failed fetch. */
  #schedule(): void {
    if (this.#stopping || !this.#daemon || !this.#config) return;
    const { interval, splay } = this.#config.source;
    const random = this.#deps.random ?? Math.random;
    const delay =
      this.#failures > 0
        ? Math.min(interval, RETRY_BASE_MS * 2 ** (this.#failures - 1)) * (0.75 + random() * 0.5)
        : interval + random() * splay;
    clearTimeout(this.#timer);
    this.#timer = setTimeout(() => this.trigger(this.#failures > 0 ? "retry" : "timer"), delay);
    this.#deps.log.debug("next run scheduled", { inS: Math.round(delay / 1000) });
  }

  /** Credentials are read from their files at every run, so a rotated secret needs no restart. */
  #auth(config: AgentConfig): { auth?: { username: string; password: string } } {
    const read = (file: string) => (this.#deps.fs.readTextIfExists(file) ?? "").trim();
    const s = config.source;
    if (s.tokenFile) return { auth: { username: s.username ?? "git", password: read(s.tokenFile) } };
    if (s.usernameFile && s.passwordFile)
      return { auth: { username: read(s.usernameFile), password: read(s.passwordFile) } };
    return {};
  }
}

export function stateFile(config: AgentConfig): string {
  return path.join(config.stateDir, "state.db");
}

/** One line per problem, located. */
export function describeError(error: unknown): string {
  if (error instanceof ErrorList) return error.errors.map((e) => e.toString()).join("; ");
  if (error instanceof DriftlessError) return error.toString();
  return errorMessage(error);
}
