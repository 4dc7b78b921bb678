/**
 * One cycle of the daemon: fetch the tracked ref, decide which commit to trust, converge from
 * it, record the run.
 *
 * - Fetch fails (server down, DNS, TLS, auth): converge from the last good commit, recorded as
 *   `source: offline` with the error.
 * - New commit unsigned or signed by no trusted key, or not a descendant of the current one
 *   (unless `allowRollback`): refused; the host converges from the last good commit and the run
 *   says why.
 * - New commit invalid (YAML, schema, template): the host stays on the last good commit and the
 *   run reports the errors with the commit id.
 */
import { randomUUID } from "node:crypto";
import type { AgentConfig } from "../config/schema.js";
import { converge, type RunOutcome, type RunPorts, toRunRecord } from "../engine/run.js";
import { DriftlessError, errorMessage } from "../errors.js";
import type { Facts } from "../facts/collect.js";
import { type Logger, redactUrl } from "../log.js";
import type { GitCache, GitRemote } from "../source/git.js";
import type { StateStore } from "../state/db.js";

export interface TrustCheck {
  /** Null when the commit may be used, else why not. */
  refuse(commit: { oid: string; payload: Uint8Array; signature?: string }): Promise<string | null>;
}

export interface CycleDeps {
  config: AgentConfig;
  ports: RunPorts;
  state: StateStore;
  /** Null for a directory source. */
  git: GitCache | null;
  trust: TrustCheck | null;
  auth?: { username: string; password: string };
  facts: Facts;
  log: Logger;
}

export interface CycleOptions {
  /** Fetch first (a timer run or a refresh); false converges from the cached commit. */
  fetch: boolean;
  /** Stops between resources. */
  stop?: AbortSignal;
  /** Cancels what is under way (a fetch, a command). */
  signal?: AbortSignal;
}

export interface CycleResult {
  exitCode: number;
  outcome?: RunOutcome;
  commit: string | null;
  /** git, offline, or dir:<hash> */
  source: string;
  errors: DriftlessError[];
}

export async function runCycle(deps: CycleDeps, options: CycleOptions): Promise<CycleResult> {
  const { config, state, log } = deps;
  const errors: DriftlessError[] = [];

  if (!deps.git) {
    const outcome = await convergeFrom(deps, config.source.url, options);
    return record(deps, outcome, null, outcome.source, errors);
  }

  const git = deps.git;
  // Never store credentials a URL may carry.
  const followed = `${redactUrl(config.source.url)}#${config.source.ref}`;
  let sourceState = state.sourceState();
  if (sourceState.remote !== followed) {
    // Another repository or ref: its history starts here, with no previous commit to descend from.
    state.updateSourceState({ remote: followed, goodCommit: undefined, fetchedCommit: undefined });
    sourceState = state.sourceState();
  }
  const good = sourceState.goodCommit;
  let offline = false;
  let tip: string | undefined;

  if (options.fetch) {
    try {
      // A stop cancels a fetch at once: nothing has been applied yet.
      const cancel = [options.stop, options.signal].filter((s): s is AbortSignal => s !== undefined);
      tip = await git.fetch(remote(deps), cancel.length ? AbortSignal.any(cancel) : undefined);
      state.updateSourceState({
        fetchedCommit: tip,
        lastFetchAt: deps.ports.clock.now().toISOString(),
        lastFetchError: undefined,
      });
      log.debug("fetched", { ref: config.source.ref, commit: tip });
    } catch (error) {
      if (options.stop?.aborted) {
        log.info("stopped during the fetch; nothing was applied", {});
        recordNoRun(deps, "git", [], "interrupted");
        return { exitCode: 4, commit: null, source: "git", errors: [] };
      }
      offline = true;
      const e = asError(error, "EFETCH");
      errors.push(e);
      state.updateSourceState({ lastFetchError: e.message });
      log.warn("fetch failed; converging from the cached commit", { error: e.message, commit: good ?? null });
    }
  }

  if (tip && tip !== good) {
    const refusal = await checkNewCommit(deps, tip, good);
    if (refusal) {
      errors.push(new DriftlessError(refusal, { code: "EREFUSED", phase: "load" }));
      log.warn("commit refused", { commit: tip, reason: refusal });
    } else {
      try {
        const dir = await git.checkout(tip, good);
        const outcome = await convergeFrom(deps, dir, options);
        if (outcome.status !== "invalid") {
          state.updateSourceState({ goodCommit: tip });
          git.prune([tip]);
          return record(deps, outcome, tip, offline ? "offline" : "git", errors);
        }
        const detail = outcome.errors.map((e) => e.toString()).join("; ");
        errors.push(
          new DriftlessError(
            `commit ${tip.slice(0, 12)} is invalid, staying on ${good?.slice(0, 12) ?? "nothing"}: ${detail}`,
            {
              code: "EINVALID_COMMIT",
              phase: "validate",
            },
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

  if (!good) {
    const reason = tip ? "no trusted, valid commit yet" : "no commit fetched yet";
    errors.push(
      new DriftlessError(`nothing to converge from: ${reason}`, { code: "ENOCOMMIT", phase: "load", retryable: true }),
    );
    log.error("nothing to converge from", { reason });
    recordNoRun(deps, offline ? "offline" : "git", errors);
    return { exitCode: 1, commit: null, source: offline ? "offline" : "git", errors };
  }
  let dir: string;
  try {
    dir = await git.checkout(good);
  } catch (error) {
    errors.push(asError(error, "ECHECKOUT"));
    recordNoRun(deps, offline ? "offline" : "git", errors);
    return { exitCode: 1, commit: null, source: offline ? "offline" : "git", errors };
  }
  const outcome = await convergeFrom(deps, dir, options);
  return record(deps, outcome, good, offline ? "offline" : "git", errors);
}

/** Null when `tip` may be used after `good`; else the reason it is refused. */
async function checkNewCommit(deps: CycleDeps, tip: string, good: string | undefined): Promise<string | null> {
  const git = deps.git as GitCache;
  if (deps.trust) {
    const info = await git.commit(tip);
    const refusal = await deps.trust.refuse(info);
    if (refusal) return `commit ${tip.slice(0, 12)} refused: ${refusal}`;
  }
  if (good && !deps.config.trust?.allowRollback) {
    // After the cache was cloned again, the current commit may be older than the shallow history.
    await git.deepenUntil(remote(deps), good).catch(() => false);
    if (!(await git.isDescendant(tip, good))) {
      return `commit ${tip.slice(0, 12)} refused: it does not descend from the current commit ${good.slice(0, 12)} (a force-push or an old commit replayed); set trust.allowRollback to accept it`;
    }
  }
  return null;
}

function remote(deps: CycleDeps): GitRemote {
  const { url, ref } = deps.config.source;
  return { url, ref, ...(deps.auth ? { auth: deps.auth } : {}) };
}

function convergeFrom(deps: CycleDeps, dir: string, options: CycleOptions): Promise<RunOutcome> {
  const { config } = deps;
  return converge(deps.ports, {
    mode: config.mode === "report" ? "plan" : "apply",
    source: dir,
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
  outcome: RunOutcome,
  commit: string | null,
  source: string,
  errors: DriftlessError[],
): CycleResult {
  const mode = deps.config.mode === "report" ? "report" : "apply";
  // A refused or invalid new commit: the host converged from the last good one, but it is not
  // where the repository says it should be. That is a failure, whatever else the run did.
  const refused = errors.some((e) => e.code === "EREFUSED" || e.code === "EINVALID_COMMIT");
  deps.state.recordRun(
    toRunRecord(outcome, mode, commit, {
      source,
      errors,
      ...(refused && outcome.exitCode !== 1 ? { result: "failed" } : {}),
    }),
  );
  const counts = outcome.results.reduce<Record<string, number>>((acc, r) => {
    acc[r.outcome] = (acc[r.outcome] ?? 0) + 1;
    return acc;
  }, {});
  deps.log.info("run finished", {
    run: outcome.id,
    result: outcome.status,
    commit,
    source,
    changes: outcome.plan?.changes.length ?? 0,
    ...counts,
    durationMs: outcome.endedAt.getTime() - outcome.startedAt.getTime(),
  });
  const exitCode = outcome.exitCode === 1 ? 1 : refused ? 4 : outcome.exitCode;
  return { exitCode, outcome, commit, source, errors: [...errors, ...outcome.errors] };
}

/** A run that could not converge anything is recorded too: the fleet must see it. */
function recordNoRun(deps: CycleDeps, source: string, errors: DriftlessError[], result = "error"): void {
  const now = deps.ports.clock.now().toISOString();
  deps.state.recordRun({
    id: randomUUID(),
    startedAt: now,
    endedAt: now,
    source,
    commit: null,
    mode: deps.config.mode === "report" ? "report" : "apply",
    result,
    changes: [],
    errors: errors.map((e) => e.toJSON()),
    summary: { resources: 0, changed: 0, failed: 0, skipped: 0, durationMs: 0 },
  });
}

function asError(error: unknown, code: string): DriftlessError {
  if (error instanceof DriftlessError) return error;
  return new DriftlessError(errorMessage(error), { code, phase: "load", cause: error });
}
