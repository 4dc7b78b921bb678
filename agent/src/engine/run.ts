/**
 * One run: load the repository, select and render this host's profiles, read the actual state,
 * plan, and (apply mode) converge and record. `plan` writes nothing.
 *
 * The desired state comes from the compiled desired state in the state database when its inputs
 * have not changed (state/compiled.ts), else from the repository (engine/load-desired.ts, a
 * module imported only then). The compiled state holds no file content: a plan from it with
 * content to write is made again from the repository.
 */
import { randomUUID } from "node:crypto";
import { DriftlessError, errorMessage, sortByLocation } from "../errors.js";
import type { Facts } from "../facts/collect.js";
import type { Clock } from "../host/clock.js";
import { type HostFs, RACY_NS } from "../host/fs.js";
import type { Runner } from "../host/runner.js";
import { readAccounts } from "../resources/file/accounts.js";
import { loadTextPatch, needsTextPatch } from "../resources/file/plan.js";
import { type FileRecord, readFiles, recordAfterWrite } from "../resources/file/read.js";
import type { PackageManager, PackageManagerContext, PackageQuery } from "../resources/package/manager.js";
import type { ServiceManager, ServiceManagerContext } from "../resources/service/manager.js";
import type { ActualPackage, ActualService, ActualState, Desired, DesiredFile } from "../resources/types.js";
import { type BuildIdentity, type CompiledCache, compiledCache, THIS_BUILD } from "../state/compiled.js";
import type { RunRecord, StateStore } from "../state/db.js";
import { applyPlan } from "./apply.js";
import { type Ordering, orderResources } from "./graph.js";
import type { LoadedDesired, LoadResult } from "./load-desired.js";
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
  /** Opened by the caller; null: no records read, none written, no compiled desired state. */
  state: StateStore | null;
  /** Store the compiled desired state in `state` after a load from the repository (never for `plan`). */
  keepCompiled?: boolean;
  /** The commit `source` is a checkout of, in the agent's own Git cache: it keys the compiled desired state. */
  sourceCommit?: string;
  /** The build the compiled desired state must come from; default this one. */
  build?: BuildIdentity;
  /** Cancels commands under way (and stops the run). */
  signal?: AbortSignal;
  /** Stops the run between resources; the resource under way finishes. */
  stop?: AbortSignal;
  /** Progress hooks for the terminal. */
  onStart?: (change: Change) => void;
  onLine?: (line: string) => void;
  onResult?: (result: ResourceResult, change: Change | undefined) => void;
}

/** Where the desired state came from: the compiled desired state, the repository, or code. */
export type DesiredFrom = "cache" | "repository" | "builtin";

export type RunStatus = "in-sync" | "changes" | "changed" | "failed" | "invalid" | "interrupted";

export interface RunOutcome {
  id: string;
  status: RunStatus;
  /** 0 in sync, 2 changes pending/made, 1 could not start, 4 some resources failed. */
  exitCode: 0 | 1 | 2 | 4;
  source: string;
  profiles: string[];
  desiredFrom: DesiredFrom;
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
    timings[name] = Math.round(((timings[name] ?? 0) + now - mark) * 10) / 10;
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
      desiredFrom: "repository",
      results: [],
      errors: sortByLocation(errors),
    });

  let desired: DesiredState;
  const cache = options.resources || !options.state ? null : cacheFor(ports, options, options.state);
  const hit = cache?.read(options.facts);
  let toKeep: LoadedDesired | undefined;
  if (options.resources) {
    // Resources built in code (driftless install): nothing to load.
    desired = { resources: options.resources, source: "builtin", profiles: [], from: "builtin" };
  } else if (hit) {
    desired = { resources: hit.resources, source: `dir:${hit.digest}`, profiles: hit.profiles, from: "cache" };
  } else {
    const keep = options.keepCompiled === true && cache !== null;
    const loaded = await loadFromRepository(ports, options, keep);
    if ("errors" in loaded) return invalid(loaded.errors, loaded.profiles);
    desired = fromRepository(loaded);
    if (keep && loaded.cacheable) toKeep = loaded;
  }
  /** The resources in order, or the run that could not start (a cycle, located where it was declared). */
  const order = async (d: DesiredState): Promise<Ordering | RunOutcome> => {
    try {
      return orderResources(d.resources);
    } catch (error) {
      return invalid([await withDeclaredPosition(ports, options, d.resources, error as DriftlessError)], d.profiles);
    }
  };
  const ordered = await order(desired);
  if ("exitCode" in ordered) return ordered;
  let ordering = ordered;
  lap("load");
  // Kept once the run is done with the host: its encoding's garbage does not add to the apply's.
  const keep = () => {
    if (!toKeep || !cache) return;
    try {
      const { desired: loaded, profiles, factsUsed } = toKeep;
      cache.write({ resources: loaded.resources, profiles, digest: loaded.digest }, factsUsed, clock.now());
    } catch {
      // Not kept (the database refused the write): the next run loads the repository again.
    }
  };

  let read = await readActual(ports, options, desired.resources, lap);
  const planFrom = async (o: Ordering, r: ActualRead) =>
    makePlan({
      ordering: o,
      actual: r.actual,
      readProblems: r.readProblems,
      servicesOffline: r.serviceManager?.offline ?? ports.hostFs.isRooted,
      // The diff library only when a text file's content changes.
      ...(needsTextPatch(r.actual.files.values()) ? { textPatch: await loadTextPatch() } : {}),
    });
  let plan = await planFrom(ordering, read);
  lap("plan");

  if (desired.from === "cache" && needsContent(plan)) {
    // The compiled state has no content: what is written (and its diff) comes from the repository.
    const loaded = await loadFromRepository(ports, options, false);
    if ("errors" in loaded) return invalid(loaded.errors, loaded.profiles);
    const reloaded = fromRepository(loaded);
    const reordered = await order(reloaded);
    if ("exitCode" in reordered) return reordered;
    ordering = reordered;
    const same = sameResources(desired.resources, reloaded.resources);
    desired = reloaded;
    lap("reload");
    // What was read still stands unless the repository changed in between.
    if (!same) read = await readActual(ports, options, desired.resources, lap);
    plan = await planFrom(ordering, read);
    lap("plan");
  }
  const { source, profiles: profileNames, from: desiredFrom } = desired;

  if (options.mode === "plan") {
    if (toKeep) {
      keep(); // a report-mode run of the agent writes; `driftless plan` never keeps
      lap("record");
    }
    const failed = plan.problems.size > 0;
    const pending = plan.changes.some((c) => !c.triggeredBy);
    return finish({
      status: failed ? "failed" : pending ? "changes" : "in-sync",
      exitCode: failed ? 4 : pending ? 2 : 0,
      source,
      profiles: profileNames,
      desiredFrom,
      plan,
      results: [],
      errors: [],
    });
  }

  const applied = await applyPlan(plan, {
    fs: ports.hostFs,
    accounts: read.actual.accounts,
    packages: read.packageManager,
    services: read.serviceManager,
    monotonic: () => clock.monotonic(),
    ...(options.signal ? { signal: options.signal } : {}),
    ...(options.stop ? { stop: options.stop } : {}),
    ...(options.onStart ? { onStart: options.onStart } : {}),
    ...(options.onLine ? { onLine: options.onLine } : {}),
    ...(options.onResult ? { onResult: options.onResult } : {}),
  });
  lap("apply");

  // Remember what was read or written, so the next run can trust unchanged files.
  const nowNs = BigInt(clock.now().getTime()) * 1_000_000n;
  options.state?.saveFileRecords(recordsAfterApply(ports.hostFs, desired.resources, read, applied.results, nowNs));
  const { packageRead } = read;
  if (packageRead) options.state?.savePackageRead(packageRead.key, packageRead.atNs, packageRead.packages);
  keep();

  const failed = applied.results.some((r) => r.outcome === "failed");
  const changed = applied.results.some((r) => r.outcome === "changed");
  const status: RunStatus = applied.interrupted ? "interrupted" : failed ? "failed" : changed ? "changed" : "in-sync";
  const outcome = finish({
    status,
    exitCode: failed || applied.interrupted ? 4 : changed ? 2 : 0,
    source,
    profiles: profileNames,
    desiredFrom,
    plan,
    results: applied.results,
    errors: [],
  });
  lap("record");
  return outcome;
}

interface DesiredState {
  resources: Desired[];
  /** The run's source: `dir:<digest of the desired state>`, or `builtin`. */
  source: string;
  profiles: string[];
  from: DesiredFrom;
}

/** The repository's loader, imported on demand (YAML, zod and Liquid come with it). */
async function loadFromRepository(ports: RunPorts, options: RunOptions, record: boolean): Promise<LoadResult> {
  const { loadDesired } = await import("./load-desired.js");
  return loadDesired(ports, options, record);
}

function fromRepository(loaded: LoadedDesired): DesiredState {
  return {
    resources: loaded.desired.resources,
    source: `dir:${loaded.desired.digest}`,
    profiles: loaded.profiles,
    from: "repository",
  };
}

function cacheFor(ports: RunPorts, options: RunOptions, state: StateStore): CompiledCache | null {
  return compiledCache(ports.repoFs, state, {
    dir: options.source,
    commit: options.sourceCommit,
    host: options.host,
    labels: options.labels,
    profiles: options.profiles,
    build: options.build ?? THIS_BUILD,
  });
}

/** True when a change writes content held in memory: a compiled desired state has none. */
function needsContent(plan: Plan): boolean {
  return plan.changes.some((change) => change.steps.some((step) => step.op === "file.write"));
}

/** The same resources in the same order, with the same content: what was read for one stands for the other. */
function sameResources(a: Desired[], b: Desired[]): boolean {
  return (
    a.length === b.length &&
    a.every((r, i) => {
      const other = b[i] as Desired;
      if (r.id !== other.id || r.kind !== other.kind) return false;
      if (r.kind !== "file" || other.kind !== "file") return true;
      return r.state === other.state && r.contentHash === other.contentHash;
    })
  );
}

/**
 * The installed packages as the last run read them, while the package database has not changed
 * since (its stamp, taken before that read, is the same and was taken more than RACY_NS after
 * the database's last change): a no-op run then starts no package manager at all. Never for a
 * query that reads candidates (`latest`: the index changes without the database), nor when a
 * package is missing and the index is to be refreshed (the query refreshes it for the install).
 * Else `key`: what to store the query's answer under, when the database can be stamped.
 */
function storedPackages(
  manager: PackageManager,
  query: PackageQuery,
  state: StateStore | null,
): { packages?: Map<string, ActualPackage>; key?: string } {
  const stamp = state && query.candidates.length === 0 ? (manager.databaseStamp?.() ?? null) : null;
  if (!state || !stamp) return {};
  const key = JSON.stringify({ manager: manager.name, names: query.names, stamp: stamp.id });
  const stored = state.packageRead(key);
  if (!stored || stamp.changedAtNs >= stored.recordedAtNs - RACY_NS) return { key };
  if (query.refreshIndex && [...stored.packages.values()].some((p) => !p.installed)) return { key };
  return { packages: stored.packages };
}

/**
 * The file records to store after an apply, one at a time: a new record for each file written, none
 * (null: forget it) for a file whose change did not happen or failed, and the records this run read
 * for every other file.
 */
function* recordsAfterApply(
  fs: HostFs,
  resources: Desired[],
  read: ActualRead,
  results: ResourceResult[],
  nowNs: bigint,
): Generator<[string, FileRecord | null]> {
  const files = new Map<string, DesiredFile>();
  for (const resource of resources) if (resource.kind === "file") files.set(resource.id, resource);
  const acted = new Set<string>();
  for (const result of results) {
    const file = files.get(result.resource);
    if (!file) continue;
    acted.add(file.id);
    yield [file.id, (result.outcome === "changed" && recordAfterWrite(fs, file, nowNs)) || null];
  }
  for (const [id, record] of read.fileRecords) if (!acted.has(id)) yield [id, record];
}

function fileResources(resources: Desired[]): DesiredFile[] {
  return resources.filter((r): r is DesiredFile => r.kind === "file");
}

interface ActualRead {
  actual: ActualState;
  readProblems: Map<string, string>;
  /** New records of the files whose content was read. */
  fileRecords: Map<string, FileRecord>;
  /** A package read to store for the next run (storedPackages). */
  packageRead?: { key: string; atNs: bigint; packages: Map<string, ActualPackage> } | undefined;
  packageManager: PackageManager | null;
  serviceManager: ServiceManager | null;
}

/** The actual state of `resources`: files one by one, packages and services in one call each. */
async function readActual(
  ports: RunPorts,
  options: RunOptions,
  resources: Desired[],
  lap: (name: string) => void,
): Promise<ActualRead> {
  const { clock } = ports;
  const nowNs = BigInt(clock.now().getTime()) * 1_000_000n;
  const files = fileResources(resources);
  const recorded = options.state?.fileRecords() ?? new Map<string, FileRecord>();
  const fileRead = readFiles(ports.hostFs, files, recorded, nowNs);
  const readProblems = new Map(fileRead.problems);
  const actual: ActualState = {
    files: fileRead.actual,
    packages: new Map<string, ActualPackage>(),
    services: new Map<string, ActualService>(),
    accounts: readAccounts(ports.hostFs),
  };
  lap("readFiles");

  const packages = resources.filter((r) => r.kind === "package");
  let packageManager: PackageManager | null = null;
  let packageRead: ActualRead["packageRead"];
  if (packages.length) {
    packageManager = ports.packageManager({ fs: ports.hostFs, runner: ports.runner });
    if (!packageManager) {
      for (const p of packages) readProblems.set(p.id, "no supported package manager (apt/dpkg) on this host");
    } else {
      try {
        const query: PackageQuery = {
          names: packages.map((p) => p.name),
          candidates: packages.filter((p) => p.state === "latest").map((p) => p.name),
          refreshIndex: options.refreshPackages ?? false,
          ...(options.signal ? { signal: options.signal } : {}),
        };
        const stored = storedPackages(packageManager, query, options.state);
        if (stored.packages) actual.packages = stored.packages;
        else {
          actual.packages = await packageManager.query(query);
          if (stored.key) packageRead = { key: stored.key, atNs: nowNs, packages: actual.packages };
        }
      } catch (error) {
        for (const p of packages) readProblems.set(p.id, `cannot read package state: ${errorMessage(error)}`);
      }
    }
  }
  lap("readPackages");

  const services = resources.filter((r) => r.kind === "service");
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
  return { actual, readProblems, fileRecords: fileRead.records, packageRead, packageManager, serviceManager };
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
  // Most resources have one result; one with several (a service changed and restarted) is looked up in full.
  const first = new Map<string, ResourceResult>();
  for (const r of results) if (!first.has(r.resource)) first.set(r.resource, r);
  const resultOf = (change: Change) => {
    const r = first.get(change.resource);
    if (!r || r.action === change.action) return r;
    return results.find((x) => x.resource === change.resource && x.action === change.action);
  };
  return plan.changes.map((change) => {
    const entry: Record<string, unknown> = { resource: change.resource, action: change.action, drift: change.drift };
    if (change.triggeredBy) entry.triggeredBy = change.triggeredBy;
    if (change.diff !== undefined) entry.diff = change.diff;
    const result = resultOf(change);
    if (result) {
      entry.outcome = result.outcome;
      if (result.error) entry.error = result.error;
    }
    return entry;
  });
}

/** Every field that differs, flat: what a report-mode run says of a host. */
export function driftReport(plan: Plan): Array<{ resource: string; field: string; desired: unknown; actual: unknown }> {
  return plan.changes.flatMap((change) => change.drift.map((d) => ({ resource: change.resource, ...d })));
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
  // The loader's module, loaded only for this error (a run from the compiled state has not loaded it).
  const { locateDeclared } = await import("../profile/load.js");
  const { file, line, column } = await locateDeclared(ports.repoFs, options.source, declaredAt);
  return new DriftlessError(error.message, {
    code: error.code,
    phase: error.phase,
    location: { file, ...(line !== undefined ? { line } : {}), ...(column !== undefined ? { column } : {}) },
    resource: error.resource,
  });
}
