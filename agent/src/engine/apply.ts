/**
 * Executes a plan: changes in order, consecutive package changes in one package-manager call,
 * a failed resource skipping the resources that depend on it, the rest going on. Stops between
 * resources when `stop` is aborted (the resource under way finishes); `signal` cancels the
 * commands under way (a second, harder stop).
 */
import { errorMessage } from "../errors.js";
import type { HostFs } from "../host/fs.js";
import { applyFileSteps } from "../resources/file/apply.js";
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

export async function applyPlan(plan: Plan, ctx: ApplyContext): Promise<ApplyResult> {
  const results: ResourceResult[] = [];
  const skip = new Map<string, string>();
  const outcome = new Map<string, ResourceResult["outcome"]>();
  const fileCtx = { fs: ctx.fs, accounts: ctx.accounts };
  let interrupted = false;

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

  const changes = plan.changes;
  let yielded = ctx.monotonic();
  for (let i = 0; i < changes.length; i++) {
    const change = changes[i] as Change;
    // File steps are synchronous: give signals (SIGTERM) a turn now and then, so a stop is seen.
    if (ctx.monotonic() - yielded > 50) {
      await new Promise((resolve) => setImmediate(resolve));
      yielded = ctx.monotonic();
    }
    if (ctx.stop?.aborted || ctx.signal?.aborted) {
      interrupted = true;
      break;
    }
    if (plan.problems.has(change.resource)) continue;
    const blocker = skip.get(change.resource);
    if (blocker) {
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
