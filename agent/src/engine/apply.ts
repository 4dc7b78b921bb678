/**
 * Executes a plan: changes in order, consecutive package changes in one package-manager call,
 * consecutive file writes in one write batch, a failed resource skipping the resources that
 * depend on it, the rest going on. Stops between resources when `stop` is aborted (the
 * resource under way finishes); `signal` cancels the commands under way (a second, harder stop).
 *
 * A write batch (host/write-batch.ts) stages the writes of consecutive `file` changes that only
 * write content, then makes them durable together; a staged resource is reported when its
 * write is durable. Anything else flushes the batch first: another kind of change or step, a
 * change that depends (even through others) on a resource still in the batch, a stop, a full
 * batch, the end of the plan. So the order of results, skips and triggers is the plan's.
 */
import { errorMessage } from "../errors.js";
import type { HostFs, WriteBatch } from "../host/fs.js";
import { applyFileSteps, onlyWrites, stageFileWrites } from "../resources/file/apply.js";
import type { PackageManager } from "../resources/package/manager.js";
import type { ServiceManager } from "../resources/service/manager.js";
import type { Accounts } from "../resources/types.js";
import { transitiveDependents } from "./graph.js";
import type { Change, FileStep, Plan, ResourceResult } from "./types.js";

export interface ApplyContext {
  fs: HostFs;
  accounts: Accounts;
  packages: PackageManager | null;
  services: ServiceManager | null;
  /** Stop between resources. */
  stop?: AbortSignal;
  /** Cancel the command under way (apt-get, systemctl). */
  signal?: AbortSignal;
  monotonic: () => number;
  /** Told before and after each change (progress display). */
  onStart?: (change: Change) => void;
  onLine?: (line: string) => void;
  onResult?: (result: ResourceResult, change: Change | undefined) => void;
}

export interface ApplyResult {
  results: ResourceResult[];
  interrupted: boolean;
}

/** A change staged into the current write batch. */
interface Pending {
  change: Change;
  started: number;
  /** Its writes: `count` entries of the batch from `first` on. */
  first: number;
  count: number;
  /** Why it could not be staged (reported at the flush, in order). */
  error?: unknown;
}

interface OpenBatch {
  writes: WriteBatch;
  pending: Pending[];
  /** Resources that depend, directly or not, on one in the batch. */
  waiting: Set<string>;
}

export async function applyPlan(plan: Plan, ctx: ApplyContext): Promise<ApplyResult> {
  const results: ResourceResult[] = [];
  const skip = new Map<string, string>();
  const outcome = new Map<string, ResourceResult["outcome"]>();
  const fileCtx = { fs: ctx.fs, accounts: ctx.accounts };
  let interrupted = false;
  let writing = null as OpenBatch | null;

  const report = (result: ResourceResult, change?: Change) => {
    results.push(result);
    if (result.outcome === "changed" || result.outcome === "failed" || !outcome.has(result.resource)) {
      outcome.set(result.resource, result.outcome);
    }
    ctx.onResult?.(result, change);
    if (result.outcome === "failed" || result.outcome === "skipped") {
      for (const id of transitiveDependents(result.resource, plan.dependents)) {
        if (!skip.has(id)) skip.set(id, result.resource);
      }
    }
  };

  for (const [resource, problem] of plan.problems) {
    report({ resource, outcome: "failed", error: problem });
  }

  const flush = async () => {
    if (!writing) return;
    const { writes, pending } = writing;
    writing = null;
    const errors = await writes.flush(); // also when nothing was staged: it closes what it opened
    for (const p of pending) {
      let error = p.error;
      for (let k = p.first; error === undefined && k < p.first + p.count; k++) error = errors[k];
      const durationMs = ctx.monotonic() - p.started;
      const { resource, action } = p.change;
      report(
        error === undefined
          ? { resource, outcome: "changed", action, durationMs }
          : { resource, outcome: "failed", action, error: errorMessage(error), durationMs },
        p.change,
      );
    }
  };

  const stage = (change: Change) => {
    writing ??= { writes: ctx.fs.writeBatch(), pending: [], waiting: new Set() };
    ctx.onStart?.(change);
    const pending: Pending = { change, started: ctx.monotonic(), first: writing.writes.size, count: 0 };
    try {
      stageFileWrites(change.steps, fileCtx, change.resource, writing.writes);
    } catch (error) {
      pending.error = error;
    }
    pending.count = writing.writes.size - pending.first;
    writing.pending.push(pending);
    transitiveDependents(change.resource, plan.dependents, writing.waiting);
  };

  const changes = plan.changes;
  let yielded = ctx.monotonic();
  for (let i = 0; i < changes.length; i++) {
    const change = changes[i] as Change;
    // File steps are synchronous: give signals (SIGTERM) a turn now and then, so a stop is seen.
    if (ctx.monotonic() - yielded > 50) {
      await new Promise((resolve) => setImmediate(resolve));
      yielded = ctx.monotonic();
    }
    const batchable = change.kind === "file" && !change.triggeredBy && onlyWrites(change.steps);
    if (writing && (!batchable || writing.waiting.has(change.resource))) await flush();
    if (ctx.stop?.aborted || ctx.signal?.aborted) {
      // What was staged is made durable and reported: no temp file is left behind.
      await flush();
      interrupted = true;
      break;
    }
    if (plan.problems.has(change.resource)) continue;
    const blocker = skip.get(change.resource);
    if (blocker) {
      await flush(); // the results stay in the plan's order
      report(
        { resource: change.resource, outcome: "skipped", action: change.action, error: `${blocker} failed` },
        change,
      );
      continue;
    }
    if (change.triggeredBy && !change.triggeredBy.some((id) => outcome.get(id) === "changed")) continue;

    if (change.kind === "package" && change.resource.startsWith("package:")) {
      const batch: Change[] = [change];
      while (i + 1 < changes.length) {
        const next = changes[i + 1] as Change;
        if (next.kind !== "package" || skip.has(next.resource) || plan.problems.has(next.resource)) break;
        batch.push(next);
        i++;
      }
      for (const r of await applyPackages(batch, ctx))
        report(
          r,
          batch.find((c) => c.resource === r.resource),
        );
      continue;
    }

    if (batchable) {
      stage(change);
      if (writing?.writes.full) await flush();
      continue;
    }

    ctx.onStart?.(change);
    const started = ctx.monotonic();
    try {
      if (change.kind === "file") {
        applyFileSteps(change.steps as FileStep[], fileCtx, change.resource);
      } else {
        await applyServiceChange(change, ctx);
      }
      report(
        { resource: change.resource, outcome: "changed", action: change.action, durationMs: ctx.monotonic() - started },
        change,
      );
    } catch (error) {
      report(
        {
          resource: change.resource,
          outcome: "failed",
          action: change.action,
          error: errorMessage(error),
          durationMs: ctx.monotonic() - started,
        },
        change,
      );
    }
  }
  await flush();
  return { results, interrupted };
}

async function applyServiceChange(change: Change, ctx: ApplyContext): Promise<void> {
  if (!ctx.services) throw new Error("no supported service manager (systemd) on this host");
  for (const step of change.steps) {
    if (step.op === "systemd.daemon-reload") await ctx.services.daemonReload(ctx.signal);
    else if (step.op === "service") await ctx.services.act(step.action, step.name, ctx.signal);
  }
}

async function applyPackages(batch: Change[], ctx: ApplyContext): Promise<ResourceResult[]> {
  const started = ctx.monotonic();
  if (!ctx.packages) {
    return batch.map((c) => ({
      resource: c.resource,
      outcome: "failed",
      action: c.action,
      error: "no supported package manager (apt/dpkg) on this host",
    }));
  }
  const install: { name: string; version?: string }[] = [];
  const remove: string[] = [];
  const nameOf = new Map<string, string>();
  for (const change of batch) {
    ctx.onStart?.(change);
    for (const step of change.steps) {
      if (step.op === "package.install") {
        install.push({ name: step.name, ...(step.version ? { version: step.version } : {}) });
        nameOf.set(change.resource, step.name);
      } else if (step.op === "package.remove") {
        remove.push(step.name);
        nameOf.set(change.resource, step.name);
      }
    }
  }
  try {
    const outcome = await ctx.packages.apply(
      { install, remove },
      { ...(ctx.signal ? { signal: ctx.signal } : {}), ...(ctx.onLine ? { onLine: ctx.onLine } : {}) },
    );
    const durationMs = ctx.monotonic() - started;
    return batch.map((c) => {
      const error = outcome.failed.get(nameOf.get(c.resource) ?? "");
      return error
        ? { resource: c.resource, outcome: "failed", action: c.action, error, durationMs }
        : { resource: c.resource, outcome: "changed", action: c.action, durationMs };
    });
  } catch (error) {
    return batch.map((c) => ({
      resource: c.resource,
      outcome: "failed",
      action: c.action,
      error: errorMessage(error),
    }));
  }
}
