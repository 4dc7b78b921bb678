/**
 * One run: load the repository, select and render this host's profiles, read the actual state,
 * plan, and (apply mode) converge and record. `plan` writes nothing.
 */
import { randomUUID } from "node:crypto";
import { DriftlessError, errorMessage, sortByLocation } from "../errors.js";
import type { Facts } from "../facts/collect.js";
import type { Clock } from "../host/clock.js";
import type { HostFs } from "../host/fs.js";
import type { Runner } from "../host/runner.js";
import { buildDesired, type DesiredSet } from "../profile/desired.js";
import { loadRepository, locateDeclared } from "../profile/load.js";
import { assignedProfiles, expandProfiles, type HostIdentity, type ProfileRequest } from "../profile/select.js";
import { readAccounts } from "../resources/file/accounts.js";
import { type FileRecord, readFiles, recordAfterWrite } from "../resources/file/read.js";
import type { PackageManager, PackageManagerContext } from "../resources/package/manager.js";
import type { ServiceManager, ServiceManagerContext } from "../resources/service/manager.js";
import type { ActualPackage, ActualService, ActualState, Desired, DesiredFile } from "../resources/types.js";
import type { RunRecord, StateStore } from "../state/db.js";
import { applyPlan } from "./apply.js";
import { orderResources } from "./graph.js";
import { plan as makePlan } from "./plan.js";
import type { Change, Plan, ResourceResult } from "./types.js";

export interface RunPorts {
  /** Where the repository is read (always the machine's own filesystem). */
  repoFs: HostFs;
  /** The managed host, rooted at `--root`. */
  hostFs: HostFs;
  runner: Runner;
  clock: Clock;
  /** The package manager of the managed host, or null when it has none we support. */
  packageManager(ctx: PackageManagerContext): PackageManager | null;
  serviceManager(ctx: ServiceManagerContext): ServiceManager;
}

export interface RunOptions {
  mode: "plan" | "apply";
  source: string;
  host: string;
  labels: Record<string, string>;
  facts: Facts;
  /** Resources given in code instead of a repository (`source` is then only a label). */
  resources?: Desired[];
  /** Profiles named on the command line instead of fleet.yaml's assignments. */
  profiles?: string[];
  /** Refresh the package index before reading `latest` candidates. */
  refreshPackages?: boolean;
  /** Opened by the caller; null: no records read, none written. */
  state: StateStore | null;
  /** Cancels commands under way (and stops the run). */
  signal?: AbortSignal;
  /** Stops the run between resources; the resource under way finishes. */
  stop?: AbortSignal;
  /** Progress hooks for the terminal. */
  onStart?: (change: Change) => void;
  onLine?: (line: string) => void;
  onResult?: (result: ResourceResult, change: Change | undefined) => void;
}

export type RunStatus = "in-sync" | "changes" | "changed" | "failed" | "invalid" | "interrupted";

export interface RunOutcome {
  id: string;
  status: RunStatus;
  /** 0 in sync, 2 changes pending/made, 1 could not start, 4 some resources failed. */
  exitCode: 0 | 1 | 2 | 4;
  source: string;
  profiles: string[];
  plan?: Plan;
  results: ResourceResult[];
  errors: DriftlessError[];
  startedAt: Date;
  endedAt: Date;
  timings: Record<string, number>;
}

export async function converge(ports: RunPorts, options: RunOptions): Promise<RunOutcome> {
  const { clock } = ports;
  const startedAt = clock.now();
  const id = randomUUID();
  const timings: Record<string, number> = {};
  let mark = clock.monotonic();
  const lap = (name: string) => {
    const now = clock.monotonic();
    timings[name] = Math.round((now - mark) * 10) / 10;
    mark = now;
  };
  const finish = (partial: Omit<RunOutcome, "id" | "startedAt" | "endedAt" | "timings">): RunOutcome => ({
    id,
    startedAt,
    endedAt: clock.now(),
    timings,
    ...partial,
  });
  const invalid = (errors: DriftlessError[], profiles: string[] = []) =>
    finish({
      status: "invalid",
      exitCode: 1,
      source: `dir:${options.source}`,
      profiles,
      results: [],
      errors: sortByLocation(errors),
    });

  let ordering: ReturnType<typeof orderResources>;
  let source: string;
  let profileNames: string[] = [];
  let desired: { resources: Desired[] };
  if (options.resources) {
    // Resources built in code (driftless install): nothing to load.
    desired = { resources: options.resources };
    source = "builtin";
  } else {
    const loaded = await loadDesired(ports, options);
    if ("errors" in loaded) return invalid(loaded.errors, loaded.profiles);
    desired = loaded.desired;
    source = `dir:${loaded.desired.digest}`;
    profileNames = loaded.profiles;
  }
  try {
    ordering = orderResources(desired.resources);
  } catch (error) {
    return invalid(
      [await withDeclaredPosition(ports, options, desired.resources, error as DriftlessError)],
      profileNames,
    );
  }
  lap("load");

  // Read the actual state: files one by one, packages and services in one call each.
  const nowNs = () => BigInt(clock.now().getTime()) * 1_000_000n;
  const files = desired.resources.filter((r): r is DesiredFile => r.kind === "file");
  const recorded = options.state?.fileRecords() ?? new Map<string, FileRecord>();
  const fileRead = readFiles(ports.hostFs, files, recorded, nowNs());
  const readProblems = new Map(fileRead.problems);
  const actual: ActualState = {
    files: fileRead.actual,
    packages: new Map<string, ActualPackage>(),
    services: new Map<string, ActualService>(),
    accounts: readAccounts(ports.hostFs),
  };
  lap("readFiles");

  const packages = desired.resources.filter((r) => r.kind === "package");
  let packageManager: PackageManager | null = null;
  if (packages.length) {
    packageManager = ports.packageManager({ fs: ports.hostFs, runner: ports.runner });
    if (!packageManager) {
      for (const p of packages) readProblems.set(p.id, "no supported package manager (apt/dpkg) on this host");
    } else {
      try {
        actual.packages = await packageManager.query({
          names: packages.map((p) => p.name),
          candidates: packages.filter((p) => p.state === "latest").map((p) => p.name),
          refreshIndex: options.refreshPackages ?? false,
          ...(options.signal ? { signal: options.signal } : {}),
        });
      } catch (error) {
        for (const p of packages) readProblems.set(p.id, `cannot read package state: ${errorMessage(error)}`);
      }
    }
  }
  lap("readPackages");

  const services = desired.resources.filter((r) => r.kind === "service");
  let serviceManager: ServiceManager | null = null;
  const needsSystemd = services.length > 0 || files.some((f) => f.path.startsWith("/etc/systemd/"));
  if (needsSystemd) serviceManager = ports.serviceManager({ fs: ports.hostFs, runner: ports.runner });
  if (services.length && serviceManager) {
    try {
      actual.services = await serviceManager.query(
        services.map((s) => s.name),
        options.signal,
      );
    } catch (error) {
      for (const s of services) readProblems.set(s.id, `cannot read service state: ${errorMessage(error)}`);
    }
  }
  lap("readServices");

  const plan = makePlan({
    ordering,
    actual,
    readProblems,
    servicesOffline: serviceManager?.offline ?? ports.hostFs.isRooted,
  });
  lap("plan");

  if (options.mode === "plan") {
    const failed = plan.problems.size > 0;
    const pending = plan.changes.some((c) => !c.triggeredBy);
    return finish({
      status: failed ? "failed" : pending ? "changes" : "in-sync",
      exitCode: failed ? 4 : pending ? 2 : 0,
      source,
      profiles: profileNames,
      plan,
      results: [],
      errors: [],
    });
  }

  const applied = await applyPlan(plan, {
    fs: ports.hostFs,
    accounts: actual.accounts,
    packages: packageManager,
    services: serviceManager,
    monotonic: () => clock.monotonic(),
    ...(options.signal ? { signal: options.signal } : {}),
    ...(options.stop ? { stop: options.stop } : {}),
    ...(options.onStart ? { onStart: options.onStart } : {}),
    ...(options.onLine ? { onLine: options.onLine } : {}),
    ...(options.onResult ? { onResult: options.onResult } : {}),
  });
  lap("apply");

  // Remember what was read or written, so the next run can trust unchanged files.
  const records = new Map(fileRead.records);
  const byId = new Map(files.map((f) => [f.id, f]));
  const forget: string[] = [];
  for (const result of applied.results) {
    const file = byId.get(result.resource);
    if (!file) continue;
    records.delete(file.id);
    const record = result.outcome === "changed" ? recordAfterWrite(ports.hostFs, file, nowNs()) : undefined;
    if (record) records.set(file.id, record);
    else forget.push(file.id);
  }
  options.state?.saveFileRecords(records, forget);

  const failed = applied.results.some((r) => r.outcome === "failed");
  const changed = applied.results.some((r) => r.outcome === "changed");
  const status: RunStatus = applied.interrupted ? "interrupted" : failed ? "failed" : changed ? "changed" : "in-sync";
  const outcome = finish({
    status,
    exitCode: failed || applied.interrupted ? 4 : changed ? 2 : 0,
    source,
    profiles: profileNames,
    plan,
    results: applied.results,
    errors: [],
  });
  lap("record");
  return outcome;
}

/** The run as stored in the state database and reported to the control plane. */
export function toRunRecord(
  outcome: RunOutcome,
  mode: RunRecord["mode"],
  commit: string | null,
  extra: { source?: string; errors?: DriftlessError[]; result?: string } = {},
): RunRecord {
  const changes = outcome.plan ? changesForReport(outcome.plan, outcome.results) : [];
  const errors = [
    ...(extra.errors ?? []).map((e) => e.toJSON()),
    ...outcome.errors.map((e) => e.toJSON()),
    ...outcome.results.filter((r) => r.outcome === "failed").map((r) => ({ resource: r.resource, message: r.error })),
  ];
  const count = (o: string) => outcome.results.filter((r) => r.outcome === o).length;
  return {
    id: outcome.id,
    startedAt: outcome.startedAt.toISOString(),
    endedAt: outcome.endedAt.toISOString(),
    source: extra.source ?? outcome.source,
    commit,
    mode,
    result: extra.result ?? outcome.status,
    changes,
    errors,
    summary: {
      resources: outcome.plan?.order.length ?? 0,
      changed: count("changed"),
      failed: count("failed"),
      skipped: count("skipped"),
      durationMs: outcome.endedAt.getTime() - outcome.startedAt.getTime(),
    },
  };
}

/** Changes in their machine form: resource, action, drift, and (after apply) the outcome. */
export function changesForReport(plan: Plan, results: ResourceResult[]): Array<Record<string, unknown>> {
  const outcomes = new Map<string, ResourceResult[]>();
  for (const r of results) outcomes.set(r.resource, [...(outcomes.get(r.resource) ?? []), r]);
  return plan.changes.map((change) => {
    const result = outcomes.get(change.resource)?.find((r) => r.action === change.action);
    return {
      resource: change.resource,
      action: change.action,
      drift: change.drift,
      ...(change.triggeredBy ? { triggeredBy: change.triggeredBy } : {}),
      ...(change.diff !== undefined ? { diff: change.diff } : {}),
      ...(result ? { outcome: result.outcome, ...(result.error ? { error: result.error } : {}) } : {}),
    };
  });
}

/** Every field that differs, flat: what a report-mode run says of a host. */
export function driftReport(plan: Plan): Array<{ resource: string; field: string; desired: unknown; actual: unknown }> {
  return plan.changes.flatMap((change) => change.drift.map((d) => ({ resource: change.resource, ...d })));
}

/** Load, select, render: every error of the repository is found before anything is read or applied. */
async function loadDesired(
  ports: RunPorts,
  options: RunOptions,
): Promise<{ desired: DesiredSet; profiles: string[] } | { errors: DriftlessError[]; profiles: string[] }> {
  const { repo, errors } = await loadRepository(ports.repoFs, options.source);
  const identity: HostIdentity = { name: options.host, labels: options.labels, facts: options.facts };
  let requests: ProfileRequest[];
  if (options.profiles?.length) {
    requests = options.profiles.map((name) => ({ name }));
  } else if (repo.fleet) {
    requests = assignedProfiles(repo.fleet, identity);
  } else {
    if (!repo.brokenFleet && !errors.some((e) => e.code === "ESOURCE")) {
      errors.push(
        new DriftlessError(`no fleet.yaml in ${repo.dir}; add one or name profiles with --profile`, {
          code: "EFLEET",
          phase: "select",
        }),
      );
    }
    return { errors, profiles: [] };
  }
  const { profiles, errors: selectErrors } = await expandProfiles(repo, requests);
  errors.push(...selectErrors);
  const profileNames = profiles.map((p) => p.doc.name);
  const { desired, errors: desiredErrors } = await buildDesired(ports.repoFs, repo, profiles, identity, {
    checkReferences: errors.length === 0,
  });
  errors.push(...desiredErrors);
  if (errors.length) return { errors, profiles: profileNames };
  return { desired, profiles: profileNames };
}

/** An error about a resource (a dependency cycle), located at the line and column it was declared. */
async function withDeclaredPosition(
  ports: RunPorts,
  options: RunOptions,
  resources: Desired[],
  error: DriftlessError,
): Promise<DriftlessError> {
  const declaredAt = resources.find((r) => r.id === error.resource)?.declaredAt;
  if (!declaredAt || options.resources) return error;
  const { file, line, column } = await locateDeclared(ports.repoFs, options.source, declaredAt);
  return new DriftlessError(error.message, {
    code: error.code,
    phase: error.phase,
    location: { file, ...(line !== undefined ? { line } : {}), ...(column !== undefined ? { column } : {}) },
    resource: error.resource,
  });
}
