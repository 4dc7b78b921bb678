/**
 * One cycle, the only way a host converges from its source: `driftless agent` runs,
 * `driftless apply` and `driftless plan` all come here. Fetch the tracked ref (under an overall
 * deadline), decide which commit to trust, converge from it, record the run.
 *
 * - Fetch fails or takes longer than `source.fetchTimeout` (server down, DNS, TLS, auth, a server
 *   that trickles bytes): converge from the last good commit, recorded as `source: offline` with
 *   the error.
 * - New commit unsigned or signed by no trusted key, or not a descendant of the current one
 *   (unless `allowRollback`): refused; the host converges from the last good commit and the run
 *   says why.
 * - New commit invalid (YAML, schema, template): the host stays on the last good commit and the
 *   run reports the errors with the commit id.
 *
 * With `write: false` (a plan) the same decisions are made but nothing is kept: the run is a
 * plan, no run is recorded, no pointer moves, no checkout is pruned; the caller gives it a Git
 * cache of its own (a private temp directory) and a read-only state, or none.
 */
import { randomUUID } from "node:crypto";
import { formatDuration } from "../config/duration.js";
import type { AgentConfig } from "../config/schema.js";
import { converge, type RunOptions, type RunOutcome, type RunPorts, toRunRecord } from "../engine/run.js";
import { DriftlessError, errorMessage } from "../errors.js";
import type { Facts } from "../facts/collect.js";
import type { Clock } from "../host/clock.js";
import type { Logger } from "../log.js";
import type { GitCache, GitRemote } from "../source/git.js";
import type { RunReporting, SourceState, StateStore } from "../state/db.js";

export interface TrustCheck {
  /** Null when the commit may be used, else why not. */
  refuse(commit: { oid: string; payload: Uint8Array; signature?: string }): Promise<string | null>;
}

/** A Git source: the cache to fetch into and the remote (its URL without credentials, `auth` apart). */
export interface GitSource {
  cache: GitCache;
  remote: GitRemote;
}

export interface CycleDeps {
  config: AgentConfig;
  ports: RunPorts;
  /** Null: no records to read (a plan before any run). Written only with `write`. */
  state: StateStore | null;
  /** Null for a directory source. */
  git: GitSource | null;
  trust: TrustCheck | null;
  facts: Facts;
  log: Logger;
}

/** What the command line adds to a run: profiles named instead of fleet.yaml's, progress hooks. */
export type RunExtras = Partial<Pick<RunOptions, "profiles" | "refreshPackages" | "onStart" | "onLine" | "onResult">>;

export interface CycleOptions {
  /** Fetch first (a timer run or a refresh); false converges from the cached commit. */
  fetch: boolean;
  /** False (plan): decide the same way, change nothing and keep nothing. */
  write: boolean;
  /** Stops between resources. */
  stop?: AbortSignal;
  /** Cancels what is under way (a fetch, a command). */
  signal?: AbortSignal;
  extras?: RunExtras;
}

export interface CycleResult {
  exitCode: number;
  outcome?: RunOutcome;
  commit: string | null;
  /** git, offline, or dir:<hash> */
  source: string;
  errors: DriftlessError[];
  /** The run stopped before its cycle (a trusted-keys file missing, ...). */
  notStarted?: true;
  /**
   * The changes as the run record holds them (engine/run.ts changesForReport), when the run was
   * recorded: the JSON output takes these rather than building thousands of objects again.
   */
  changes?: unknown[];
}

export async function runCycle(deps: CycleDeps, options: CycleOptions): Promise<CycleResult> {
  const { config, state, log } = deps;
  const { write } = options;
  const errors: DriftlessError[] = [];

  if (!deps.git) {
    const outcome = await convergeFrom(deps, config.source.url, options);
    return record(deps, options, outcome, null, outcome.source, errors);
  }

  const git = deps.git;
  const followed = `${git.remote.url}#${git.remote.ref}`;
  let sourceState: SourceState = state?.sourceState() ?? {};
  if (sourceState.remote !== followed) {
    // Another repository or ref: its history starts here, with no previous commit to descend from.
    if (write) state?.updateSourceState({ remote: followed, goodCommit: undefined, fetchedCommit: undefined });
    sourceState = { remote: followed };
  }
  const good = sourceState.goodCommit;
  const update = (values: Parameters<StateStore["updateSourceState"]>[0]) => {
    if (write) state?.updateSourceState(values);
  };
  let offline = false;
  let tip: string | undefined;

  // The fetch, and the older history the rollback check may need, end by the deadline.
  const deadline = startDeadline(deps.ports.clock, config.source.fetchTimeout);
  const cancel = [options.stop, options.signal, deadline.signal].filter((s): s is AbortSignal => s !== undefined);
  const network = AbortSignal.any(cancel);
  try {
    if (options.fetch) {
      try {
        tip = await git.cache.fetch(git.remote, network);
        update({ fetchedCommit: tip, lastFetchAt: deps.ports.clock.now().toISOString(), lastFetchError: undefined });
        log.debug("fetched", { ref: git.remote.ref, commit: tip });
      } catch (error) {
        if (options.stop?.aborted) {
          log.info("stopped during the fetch; nothing was applied", {});
          if (write) recordNoRun(deps, "git", [], "interrupted");
          return { exitCode: 4, commit: null, source: "git", errors: [] };
        }
        offline = true;
        const e = deadline.signal.aborted
          ? new DriftlessError(
              `cannot fetch ${git.remote.ref} from ${git.remote.url}: not done within ${formatDuration(config.source.fetchTimeout)} (source.fetchTimeout)`,
              { code: "EFETCH", phase: "load", retryable: true, cause: error },
            )
          : asError(error, "EFETCH");
        errors.push(e);
        update({ lastFetchError: e.message });
        log.warn("fetch failed; converging from the cached commit", { error: e.message, commit: good ?? null });
      }
    }

    if (tip && tip !== good) {
      const refusal = await checkNewCommit(deps, tip, good, network);
      if (refusal) {
        errors.push(new DriftlessError(refusal, { code: "EREFUSED", phase: "load" }));
        log.warn("commit refused", { commit: tip, reason: refusal });
      } else {
        try {
          const dir = await git.cache.checkout(tip, good);
          const outcome = await convergeFrom(deps, dir, options, tip);
          if (outcome.status !== "invalid") {
            update({ goodCommit: tip });
            if (write) git.cache.prune([tip]);
            return record(deps, options, outcome, tip, offline ? "offline" : "git", errors);
          }
          const detail = outcome.errors.map((e) => e.toString()).join("; ");
          errors.push(
            new DriftlessError(
              `commit ${tip.slice(0, 12)} is invalid, staying on ${good?.slice(0, 12) ?? "nothing"}: ${detail}`,
              { code: "EINVALID_COMMIT", phase: "validate" },
            ),
          );
          errors.push(...outcome.errors);
          log.error("new commit is invalid; staying on the last good commit", {
            commit: tip,
            good: good ?? null,
            errors: detail,
          });
        } catch (error) {
          errors.push(asError(error, "ECHECKOUT"));
        }
      }
    }
  } finally {
    deadline.clear();
  }

  const source = offline ? "offline" : "git";
  if (!good) {
    const reason = tip ? "no trusted, valid commit yet" : "no commit fetched yet";
    errors.push(
      new DriftlessError(`nothing to converge from: ${reason}`, { code: "ENOCOMMIT", phase: "load", retryable: true }),
    );
    log.error("nothing to converge from", { reason });
    if (write) recordNoRun(deps, source, errors);
    return { exitCode: 1, commit: null, source, errors };
  }
  let dir: string;
  try {
    dir = await git.cache.checkout(good);
  } catch (error) {
    errors.push(asError(error, "ECHECKOUT"));
    if (write) recordNoRun(deps, source, errors);
    return { exitCode: 1, commit: null, source, errors };
  }
  const outcome = await convergeFrom(deps, dir, options, good);
  return record(deps, options, outcome, good, source, errors);
}

/** A signal that aborts `ms` after now (on the clock port); `clear` stops the timer. */
function startDeadline(clock: Clock, ms: number): { signal: AbortSignal; clear(): void } {
  const expired = new AbortController();
  const timer = new AbortController();
  clock.sleep(ms, timer.signal).then(
    () => expired.abort(new DriftlessError("the fetch deadline passed", { code: "ETIMEOUT", phase: "load" })),
    () => {},
  );
  return { signal: expired.signal, clear: () => timer.abort() };
}

/** Null when `tip` may be used after `good`; else the reason it is refused. */
async function checkNewCommit(
  deps: CycleDeps,
  tip: string,
  good: string | undefined,
  signal: AbortSignal,
): Promise<string | null> {
  const { cache, remote } = deps.git as GitSource;
  if (deps.trust) {
    const info = await cache.commit(tip);
    const refusal = await deps.trust.refuse(info);
    if (refusal) return `commit ${tip.slice(0, 12)} refused: ${refusal}`;
  }
  if (good && !deps.config.trust?.allowRollback) {
    // After the cache was cloned again, the current commit may be older than the shallow history.
    await cache.deepenUntil(remote, good, signal).catch(() => false);
    if (!(await cache.isDescendant(tip, good))) {
      return `commit ${tip.slice(0, 12)} refused: it does not descend from the current commit ${good.slice(0, 12)} (a force-push or an old commit replayed); set trust.allowRollback to accept it`;
    }
  }
  return null;
}

/** A run from `dir`: a directory source, or the checkout of `commit` in the agent's Git cache. */
function convergeFrom(deps: CycleDeps, dir: string, options: CycleOptions, commit?: string): Promise<RunOutcome> {
  const { config } = deps;
  return converge(deps.ports, {
    ...options.extras,
    mode: options.write && config.mode !== "report" ? "apply" : "plan",
    source: dir,
    // A run that writes keeps what it loaded (a report-mode run too); a plan only reads it.
    keepCompiled: options.write,
    ...(commit ? { sourceCommit: commit } : {}),
    host: config.host ?? String(deps.facts.hostname),
    labels: config.labels,
    facts: deps.facts,
    state: deps.state,
    ...(options.signal ? { signal: options.signal } : {}),
    ...(options.stop ? { stop: options.stop } : {}),
  });
}

function record(
  deps: CycleDeps,
  options: CycleOptions,
  outcome: RunOutcome,
  commit: string | null,
  source: string,
  errors: DriftlessError[],
): CycleResult {
  const mode = deps.config.mode === "report" ? "report" : "apply";
  // A refused or invalid new commit: the host converged from the last good one, but it is not
  // where the repository says it should be. That is a failure, whatever else the run did.
  const refused = errors.some((e) => e.code === "EREFUSED" || e.code === "EINVALID_COMMIT");
  let changes: unknown[] | undefined;
  if (options.write && deps.state) {
    const run = toRunRecord(outcome, mode, commit, {
      source,
      errors,
      ...(refused && outcome.exitCode !== 1 ? { result: "failed" } : {}),
    });
    deps.state.recordRun(run, reportingOf(deps.config, deps.facts, outcome));
    changes = run.changes;
  }
  const counts = outcome.results.reduce<Record<string, number>>((acc, r) => {
    acc[r.outcome] = (acc[r.outcome] ?? 0) + 1;
    return acc;
  }, {});
  deps.log.info("run finished", {
    run: outcome.id,
    result: outcome.status,
    commit,
    source,
    desiredFrom: outcome.desiredFrom,
    changes: outcome.plan?.changes.length ?? 0,
    ...counts,
    durationMs: outcome.endedAt.getTime() - outcome.startedAt.getTime(),
  });
  const exitCode = outcome.exitCode === 1 ? 1 : refused ? 4 : outcome.exitCode;
  return { exitCode, outcome, commit, source, errors: [...errors, ...outcome.errors], ...(changes ? { changes } : {}) };
}

function recordNoRun(deps: CycleDeps, source: string, errors: DriftlessError[], result = "error"): void {
  if (deps.state)
    recordFailedStart(
      deps.state,
      deps.ports.clock,
      deps.config.mode,
      source,
      errors,
      result,
      reportingOf(deps.config, deps.facts),
    );
}

/**
 * A run that could not converge anything is recorded too, with why (no commit, a trust file
 * missing, a configuration that does not load): the fleet must see it.
 */
export function recordFailedStart(
  state: StateStore,
  clock: Clock,
  mode: AgentConfig["mode"],
  source: string,
  errors: DriftlessError[],
  result = "error",
  reporting?: RunReporting,
): void {
  const now = clock.now().toISOString();
  state.recordRun(
    {
      id: randomUUID(),
      startedAt: now,
      endedAt: now,
      source,
      commit: null,
      mode: mode === "report" ? "report" : "apply",
      result,
      changes: [],
      errors: errors.map((e) => e.toJSON()),
      summary: { resources: 0, changed: 0, failed: 0, skipped: 0, durationMs: 0 },
    },
    reporting,
  );
}

/**
 * What a recorded run reports: with `broker:` in the configuration, its report goes to the
 * outbox; a configuration that did not load (null) reports as the last one that did.
 */
export function reportingOf(config: AgentConfig | null, facts?: Facts, outcome?: RunOutcome): RunReporting {
  return {
    outboxLimit: config ? (config.broker ? config.broker.outboxLimit : null) : undefined,
    ...(config ? { mode: config.mode, labels: config.labels } : {}),
    ...(facts ? { facts } : {}),
    ...(outcome ? { profiles: outcome.profiles, timings: outcome.timings } : {}),
  };
}

function asError(error: unknown, code: string): DriftlessError {
  if (error instanceof DriftlessError) return error;
  return new DriftlessError(errorMessage(error), { code, phase: "load", cause: error });
}
