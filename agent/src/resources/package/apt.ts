/**
 * The apt/dpkg package manager.
 *
 * Reading is one `dpkg-query` call for every package of the run (plus, for `state: latest`,
 * one `apt-get update` when asked and one `apt-cache policy` call); while dpkg's database keeps
 * its stamp (`dpkgStamp`), the engine reuses the last answer instead (engine/run.ts). Applying is one
 * `apt-get remove` call for every removal, then one `apt-get install --no-remove` call for every
 * install: an install never removes a package the profile did not name (a package that
 * conflicts with an installed one fails with apt's message instead). When a call fails, the
 * packages that really failed are found by reading dpkg's state and retrying the others, so one
 * bad package never marks the whole batch failed. A dpkg run that was cut short (power loss) is
 * finished with `dpkg --configure -a` first.
 *
 * A failed `apt-get update` is not fatal: like a cached commit, the cached index keeps serving,
 * unless it has no candidate for a `latest` package.
 *
 * Under `--root DIR`, dpkg-query reads `DIR/var/lib/dpkg` with `--admindir` (falling back to
 * running the root's own dpkg-query through chroot when this machine has none), and apt-get and
 * apt-cache run through `chroot DIR`.
 */
import { DriftlessError } from "../../errors.js";
import { fingerprintOf, HostFs } from "../../host/fs.js";
import type { CommandResult, RunOptions } from "../../host/runner.js";
import type { ActualPackage } from "../types.js";
import type {
  PackageDatabaseStamp,
  PackageManager,
  PackageManagerContext,
  PackageOperation,
  PackageOutcome,
} from "./manager.js";

/** One line per package: name, architecture, `want eflag status`, version (dpkg expands \t and \n). */
// biome-ignore lint/suspicious/noTemplateCurlyInString: dpkg-query's own field syntax
export const DPKG_QUERY_FORMAT = "${Package}\\t${Architecture}\\t${Status}\\t${Version}\\n";

/** Package names as dpkg accepts them, with an optional `:arch` qualifier. */
const PACKAGE_NAME = /^[a-z0-9][a-z0-9+.-]*(:[a-z0-9][a-z0-9-]*)?$/;
/** Versions as apt accepts them after `name=`. */
const PACKAGE_VERSION = /^[A-Za-z0-9.+~:-]+$/;

/** dpkg states in which a package is configured and usable. */
const INSTALLED_STATES = new Set(["installed", "triggers-pending", "triggers-awaited"]);

const LOCALE_ENV = { LC_ALL: "C", LANG: "C", LANGUAGE: "" };
const APT_ENV = { ...LOCALE_ENV, DEBIAN_FRONTEND: "noninteractive", APT_LISTCHANGES_FRONTEND: "none" };

const APT_INSTALL_OPTIONS = [
  "install",
  "-y",
  "-q",
  "--no-install-recommends",
  "--allow-downgrades",
  // Resolving a conflict by removing another package is never what a profile asked for.
  "--no-remove",
  "-o",
  "Dpkg::Options::=--force-confdef",
  "-o",
  "Dpkg::Options::=--force-confold",
  "-o",
  "DPkg::Lock::Timeout=120",
];

const APT_REMOVE_OPTIONS = ["remove", "-y", "-q", "-o", "DPkg::Lock::Timeout=120"];

const MAX_REASON_LENGTH = 600;

/** dpkg refuses to work until `dpkg --configure -a` finishes an interrupted run. */
const DPKG_INTERRUPTED = /dpkg was interrupted, you must manually run '(?:sudo )?dpkg --configure -a'/;
/** apt errors that stop the whole call before any package is tried. */
const GLOBAL_FAILURE =
  /^(?:Could not get lock|Unable to acquire the dpkg frontend lock|Unable to lock the administration directory|dpkg was interrupted)/;

// ---------------------------------------------------------------------------------------------
// Pure parsing

export interface DpkgEntry {
  package: string;
  architecture: string;
  /** install, hold, deinstall, purge, unknown. */
  want: string;
  /** ok or reinstreq. */
  eflag: string;
  /** installed, config-files, half-installed, unpacked, half-configured, triggers-*, not-installed. */
  status: string;
  version: string;
}

/** Parses `dpkg-query -W -f=DPKG_QUERY_FORMAT` output. */
export function parseDpkgQuery(stdout: string): DpkgEntry[] {
  const entries: DpkgEntry[] = [];
  for (const line of stdout.split("\n")) {
    if (!line.trim()) continue;
    const [pkg, architecture, status, version] = line.split("\t");
    if (!pkg || architecture === undefined || status === undefined) continue;
    const [want = "", eflag = "", state = ""] = status.trim().split(/\s+/);
    entries.push({ package: pkg, architecture, want, eflag, status: state, version: (version ?? "").trim() });
  }
  return entries;
}

/** Installed means configured: `install ok installed` and the like, never half-installed or config-files. */
export function isInstalled(entry: DpkgEntry): boolean {
  return entry.eflag === "ok" && INSTALLED_STATES.has(entry.status);
}

/** The actual state of each requested name (`name` or `name:arch`) from dpkg's entries. */
export function packagesFromDpkg(names: readonly string[], entries: readonly DpkgEntry[]): Map<string, ActualPackage> {
  const result = new Map<string, ActualPackage>();
  for (const name of names) {
    const [pkg, arch] = name.split(":");
    const matching = entries.filter((e) => e.package === pkg && (arch === undefined || e.architecture === arch));
    const installed = matching.find(isInstalled);
    result.set(name, installed ? { installed: true, version: installed.version } : { installed: false });
  }
  return result;
}

/** What `apt-cache policy` says of one package; undefined for `(none)`. */
export interface PolicyEntry {
  installed?: string;
  candidate?: string;
}

/** Parses `apt-cache policy NAME...` output (C locale). Names apt does not know are absent. */
export function parseAptPolicy(stdout: string): Map<string, PolicyEntry> {
  const result = new Map<string, PolicyEntry>();
  let current: PolicyEntry | undefined;
  for (const line of stdout.split("\n")) {
    const header = /^(\S+):$/.exec(line);
    if (header?.[1]) {
      current = {};
      if (!result.has(header[1])) result.set(header[1], current);
      continue;
    }
    const field = /^ {2}(Installed|Candidate): (.+)$/.exec(line);
    if (current && field?.[1] && field[2]) {
      const value = field[2].trim();
      if (value === "(none)") continue;
      if (field[1] === "Installed") current.installed = value;
      else current.candidate = value;
    }
  }
  return result;
}

/** The candidate for `name`; apt prints native-architecture packages without their `:arch`. */
export function candidateFor(name: string, policy: ReadonlyMap<string, PolicyEntry>): string | undefined {
  return (policy.get(name) ?? policy.get(name.split(":")[0] ?? name))?.candidate;
}

/**
 * The arguments of the one apt-get call for an operation: `install --no-remove` with `name` and
 * `name=version`, or (an operation of removals only) `remove` with `name-`. The manager never
 * mixes the two in one call.
 */
export function aptArgs(operation: PackageOperation): string[] {
  if (operation.install.length === 0) {
    // A trailing '-' means "remove" in either command; it keeps a name ending in '+' (g++) intact.
    return [...APT_REMOVE_OPTIONS, ...operation.remove.map((name) => `${name}-`)];
  }
  if (operation.remove.length > 0) throw new Error("apt-get install and remove are separate calls");
  const args = [...APT_INSTALL_OPTIONS];
  for (const { name, version } of operation.install) {
    const arg = version === undefined ? name : `${name}=${version}`;
    // apt reads a trailing '-' as "remove" and strips one trailing '+': keep the real last character.
    args.push(/[+-]$/.test(arg) ? `${arg}+` : arg);
  }
  return args;
}

export interface AptErrors {
  /** Packages apt could not resolve at all (nothing was done): name -> message. */
  unresolved: Map<string, string>;
  /** dpkg's errors by package (`dpkg: error processing package NAME`): name -> message. */
  byPackage: Map<string, string>;
  /** Every `E:` line, without the prefix. */
  general: string[];
}

/** Reads apt-get's error lines (C locale), attributing those that name a package. */
export function parseAptErrors(output: string): AptErrors {
  const errors: AptErrors = { unresolved: new Map(), byPackage: new Map(), general: [] };
  const lines = output.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = (lines[i] ?? "").trimEnd();
    const e = /^E: (.*)$/.exec(line);
    if (e?.[1]) {
      const message = e[1];
      errors.general.push(message);
      const unresolved =
        /^Unable to locate package (\S+)$/.exec(message) ??
        /^Version '[^']*' for '([^']+)' was not found$/.exec(message) ??
        /^Package '([^']+)' has no installation candidate$/.exec(message) ??
        /^Couldn't find any package by (?:glob|regex) '([^']+)'$/.exec(message);
      if (unresolved?.[1]) errors.unresolved.set(unresolved[1], message);
      continue;
    }
    const dpkg = /^dpkg: error processing (?:package |archive )?(\S+?)(?: \([^)]*\))?:$/.exec(line);
    if (dpkg?.[1]) {
      const detail = (lines[i + 1] ?? "").trim();
      const name = dpkg[1].replace(/^.*\//, "").replace(/_.*$/, "").split(":")[0] ?? dpkg[1];
      errors.byPackage.set(name, detail ? `${line.slice("dpkg: ".length)} ${detail}` : line);
    }
  }
  return errors;
}

/** The failure reason for one package: its own lines first, else apt's general errors, trimmed. */
export function failureReason(name: string, errors: AptErrors, output: string, signal?: string): string {
  if (signal !== undefined) return truncate(`apt-get was killed by ${signal}`);
  const bare = name.split(":")[0] ?? name;
  const own = errors.unresolved.get(name) ?? errors.unresolved.get(bare) ?? errors.byPackage.get(bare);
  let reason = own ?? errors.general.filter((m) => !/^Sub-process .* returned an error code/.test(m)).join("; ");
  if (!reason) reason = errors.general.join("; ");
  if (!reason) {
    reason = output
      .split("\n")
      .map((l) => l.trim())
      .filter(Boolean)
      .slice(-3)
      .join("; ");
  }
  return truncate(reason || "apt-get failed");
}

function truncate(reason: string): string {
  return reason.length > MAX_REASON_LENGTH ? `${reason.slice(0, MAX_REASON_LENGTH - 1)}…` : reason;
}

// ---------------------------------------------------------------------------------------------
// The manager

/** apt when the root has a dpkg database and dpkg-query can run; null otherwise. */
export function detectPackageManager(ctx: PackageManagerContext): PackageManager | null {
  if (ctx.fs.lstat("/var/lib/dpkg/status")?.type !== "file") return null;
  if (!findDpkgQuery(ctx)) return null;
  return createAptManager(ctx);
}

type DpkgQueryCommand = { file: string; prefix: string[] };

/**
 * This machine's dpkg-query with `--admindir` (also under `--root`, so a foreign-architecture
 * image can be read), else the root's own through chroot.
 */
function findDpkgQuery(ctx: PackageManagerContext): DpkgQueryCommand | null {
  const machine = ctx.fs.isRooted ? new HostFs("/") : ctx.fs;
  const dirs = new Set([...(process.env.PATH ?? "").split(":").filter((d) => d.startsWith("/")), "/usr/bin", "/bin"]);
  const admindir = `--admindir=${ctx.fs.resolve("/var/lib/dpkg")}`;
  for (const dir of dirs) {
    const file = `${dir}/dpkg-query`;
    if (isExecutable(machine, file)) return { file, prefix: [admindir] };
  }
  if (ctx.fs.isRooted && isExecutable(ctx.fs, "/usr/bin/dpkg-query")) {
    return { file: "chroot", prefix: [ctx.fs.root, "/usr/bin/dpkg-query"] };
  }
  return null;
}

function isExecutable(fs: HostFs, file: string): boolean {
  try {
    const st = fs.lstat(file);
    if (st?.type === "link") return true; // e.g. an alternatives link; running it will tell
    return st?.type === "file" && (st.mode & 0o111) !== 0;
  } catch {
    return false;
  }
}

/**
 * dpkg's database as dpkg-query reads it: the `status` file (dpkg replaces it, by rename, on every
 * change) and the `updates/` journal of changes not yet merged into it. Null when either is missing.
 */
export function dpkgStamp(fs: HostFs): PackageDatabaseStamp | null {
  const status = fs.lstat("/var/lib/dpkg/status");
  const updates = fs.lstat("/var/lib/dpkg/updates");
  if (status?.type !== "file" || updates?.type !== "directory") return null;
  const id = `${fingerprintOf(status)}|${fingerprintOf(updates)}`;
  // biome-ignore lint/complexity/useMathMinMax: bigints (Math.max takes numbers)
  return { id, changedAtNs: status.ctimeNs > updates.ctimeNs ? status.ctimeNs : updates.ctimeNs };
}

export function createAptManager(ctx: PackageManagerContext): PackageManager {
  const { fs, runner } = ctx;

  /** apt-get, apt-cache or dpkg, through chroot under `--root`. */
  const apt = (
    program: "apt-get" | "apt-cache" | "dpkg",
    args: string[],
    options: RunOptions,
  ): Promise<CommandResult> =>
    fs.isRooted ? runner.run("chroot", [fs.root, program, ...args], options) : runner.run(program, args, options);

  let dpkgQuery: DpkgQueryCommand | null | undefined;
  /** `apt-get update` runs at most once per manager (once per run). */
  let refreshed = false;

  const readDpkg = async (names: readonly string[], signal?: AbortSignal): Promise<Map<string, ActualPackage>> => {
    const valid = [...new Set(names.filter((n) => PACKAGE_NAME.test(n)))];
    if (valid.length === 0) return packagesFromDpkg(names, []);
    dpkgQuery ??= findDpkgQuery(ctx);
    const command = dpkgQuery;
    if (!command) {
      throw new DriftlessError("dpkg-query is not available", { code: "ENOPKGMGR", phase: "read" });
    }
    const result = await runner.run(
      command.file,
      [...command.prefix, "-W", `-f=${DPKG_QUERY_FORMAT}`, "--", ...valid],
      withSignal({ env: LOCALE_ENV }, signal),
    );
    // Exit 1 with "no packages found matching X" only means some names are unknown to dpkg.
    const unexpected = result.stderr
      .split("\n")
      .filter((line) => line.trim() && !/^dpkg-query: no packages found matching /.test(line));
    if (result.exitCode > 1 || (result.exitCode === 1 && unexpected.length > 0)) {
      throw new DriftlessError(
        `dpkg-query failed: ${result.signal ? `killed by ${result.signal}` : unexpected.join(" ").trim() || `exit code ${result.exitCode}`}`,
        {
          code: "EDPKGQUERY",
          phase: "read",
          retryable: /lock|locked/i.test(result.stderr),
        },
      );
    }
    return packagesFromDpkg(names, parseDpkgQuery(result.stdout));
  };

  // No `input`: the runner closes standard input, so neither apt nor a maintainer script can wait
  // for an answer (DEBIAN_FRONTEND=noninteractive and --force-conf* answer the usual questions).
  const runApt = (operation: PackageOperation, options: { signal?: AbortSignal; onLine?: (line: string) => void }) =>
    apt("apt-get", aptArgs(operation), {
      env: APT_ENV,
      ...(options.signal ? { signal: options.signal } : {}),
      ...(options.onLine ? { onLine: options.onLine } : {}),
    });

  return {
    name: "apt",

    databaseStamp: () => dpkgStamp(fs),

    async query(query) {
      const packages = await readDpkg(query.names, query.signal);
      const candidates = [...new Set(query.candidates.filter((n) => PACKAGE_NAME.test(n)))];

      // Refresh only when the index matters: a candidate to read, or a package to install.
      let updateError: string | undefined;
      const toInstall = query.names.some((name) => !packages.get(name)?.installed);
      if (query.refreshIndex && !refreshed && (candidates.length > 0 || toInstall)) {
        refreshed = true;
        const update = await apt("apt-get", ["update", "-q"], withSignal({ env: APT_ENV }, query.signal));
        if (update.exitCode !== 0) {
          const errors = parseAptErrors(`${update.stdout}\n${update.stderr}`);
          updateError = errors.general.join("; ") || lastLines(update.stderr || update.stdout);
        }
      }
      if (candidates.length === 0) return packages;
      const result = await apt(
        "apt-cache",
        ["policy", "--", ...candidates],
        withSignal({ env: LOCALE_ENV }, query.signal),
      );
      if (result.exitCode !== 0) {
        throw new DriftlessError(`apt-cache policy failed: ${lastLines(result.stderr || result.stdout)}`, {
          code: "EPKGINDEX",
          phase: "read",
          retryable: /lock/i.test(result.stderr),
        });
      }
      const policy = parseAptPolicy(result.stdout);
      // Offline, the cached index still serves (as a cached commit does); only a package it
      // has no candidate for makes the failed refresh an error.
      const unknown = candidates.filter((name) => candidateFor(name, policy) === undefined);
      if (updateError !== undefined && unknown.length > 0) {
        throw new DriftlessError(
          `apt-get update failed (${updateError}); the cached index has no candidate for ${unknown.join(", ")}`,
          { code: "EPKGINDEX", phase: "read", retryable: true },
        );
      }
      for (const name of candidates) {
        const actual = packages.get(name) ?? { installed: false };
        const candidate = candidateFor(name, policy);
        packages.set(name, candidate === undefined ? actual : { ...actual, candidate });
      }
      return packages;
    },

    async apply(operation, options) {
      const outcome: PackageOutcome = { failed: new Map() };
      const valid: PackageOperation = { install: [], remove: [] };
      for (const item of operation.install) {
        if (!PACKAGE_NAME.test(item.name)) outcome.failed.set(item.name, `invalid package name: ${item.name}`);
        else if (item.version !== undefined && !PACKAGE_VERSION.test(item.version)) {
          outcome.failed.set(item.name, `invalid version for ${item.name}: ${item.version}`);
        } else valid.install.push(item);
      }
      for (const name of operation.remove) {
        if (!PACKAGE_NAME.test(name)) outcome.failed.set(name, `invalid package name: ${name}`);
        else valid.remove.push(name);
      }
      if (valid.install.length + valid.remove.length === 0) return outcome;

      // Versions before, to tell whether an unversioned install (state: latest) upgraded.
      const unversioned = valid.install.filter((i) => i.version === undefined).map((i) => i.name);
      const before = unversioned.length
        ? await readDpkg(unversioned, options.signal)
        : new Map<string, ActualPackage>();

      // Removals first (one may be what makes room for an install), each kind in its own call.
      if (valid.remove.length > 0) await applyBatch({ install: [], remove: valid.remove }, before, options, outcome);
      if (valid.install.length > 0) await applyBatch({ install: valid.install, remove: [] }, before, options, outcome);
      return outcome;
    },
  };

  /** One apt-get call for `valid` (only installs or only removals), then finding what failed. */
  async function applyBatch(
    valid: PackageOperation,
    before: ReadonlyMap<string, ActualPackage>,
    options: { signal?: AbortSignal; onLine?: (line: string) => void },
    outcome: PackageOutcome,
  ): Promise<void> {
    let batch = await runApt(valid, options);
    if (batch.exitCode === 0) return;
    if (DPKG_INTERRUPTED.test(batch.stdout + batch.stderr)) {
      // A run cut short (power loss, a killed agent) left dpkg half way: finish it, then retry.
      await apt("dpkg", ["--configure", "-a"], {
        env: APT_ENV,
        ...(options.signal ? { signal: options.signal } : {}),
        ...(options.onLine ? { onLine: options.onLine } : {}),
      });
      batch = await runApt(valid, options);
      if (batch.exitCode === 0) return;
    }

    // The batch failed. apt resolves everything before changing anything, so packages it
    // could not resolve fail alone; dpkg's state tells which of the others got done.
    const batchErrors = parseAptErrors(`${batch.stdout}\n${batch.stderr}`);
    let pending = splitOperation(valid);
    const global = batchErrors.general.find((message) => GLOBAL_FAILURE.test(message));
    if (global !== undefined) {
      // Nothing was tried (lock held, dpkg still broken): retrying each package would say the same.
      for (const op of pending) outcome.failed.set(opName(op), truncate(global));
      return;
    }
    for (const op of pending) {
      const name = opName(op);
      const message = batchErrors.unresolved.get(name) ?? batchErrors.unresolved.get(name.split(":")[0] ?? name);
      if (message) outcome.failed.set(name, failureReason(name, batchErrors, batch.stdout + batch.stderr));
    }
    pending = pending.filter((op) => !outcome.failed.has(opName(op)));
    pending = await unsatisfied(pending, before, options.signal);

    // Without the unresolvable ones, the rest may well go through together.
    if (pending.length > 1 && batchErrors.unresolved.size > 0) {
      const again = await runApt(joinOperations(pending), options);
      if (again.exitCode === 0) return;
      pending = await unsatisfied(pending, before, options.signal);
    }

    // Each remaining operation on its own, once.
    for (const op of pending) {
      const single = await runApt(joinOperations([op]), options);
      if (single.exitCode === 0) continue;
      if ((await unsatisfied([op], before, options.signal)).length === 0) continue;
      const output = `${single.stdout}\n${single.stderr}`;
      outcome.failed.set(opName(op), failureReason(opName(op), parseAptErrors(output), output, single.signal));
    }
  }

  /** The operations whose result dpkg does not show (yet). */
  async function unsatisfied(
    ops: SingleOperation[],
    before: ReadonlyMap<string, ActualPackage>,
    signal: AbortSignal | undefined,
  ): Promise<SingleOperation[]> {
    if (ops.length === 0) return [];
    const now = await readDpkg(ops.map(opName), signal);
    return ops.filter((op) => !isSatisfied(op, now.get(opName(op)), before.get(opName(op))));
  }
}

/** One install or removal of a batch. */
export type SingleOperation = { install: { name: string; version?: string } } | { remove: string };

function opName(op: SingleOperation): string {
  return "install" in op ? op.install.name : op.remove;
}

function splitOperation(operation: PackageOperation): SingleOperation[] {
  return [...operation.install.map((install) => ({ install })), ...operation.remove.map((remove) => ({ remove }))];
}

function joinOperations(ops: SingleOperation[]): PackageOperation {
  const operation: PackageOperation = { install: [], remove: [] };
  for (const op of ops) {
    if ("install" in op) operation.install.push(op.install);
    else operation.remove.push(op.remove);
  }
  return operation;
}

/**
 * Whether dpkg shows the operation done: removed; installed at the pinned version; or, for an
 * unversioned install, installed now and either new or at another version than before.
 */
export function isSatisfied(
  op: SingleOperation,
  now: ActualPackage | undefined,
  before: ActualPackage | undefined,
): boolean {
  if ("remove" in op) return !now?.installed;
  if (!now?.installed) return false;
  if (op.install.version !== undefined) return now.version === op.install.version;
  return !before?.installed || before.version !== now.version;
}

function withSignal(options: RunOptions, signal: AbortSignal | undefined): RunOptions {
  return signal ? { ...options, signal } : options;
}

function lastLines(text: string): string {
  return text.trim().split("\n").slice(-3).join(" ").slice(0, MAX_REASON_LENGTH);
}
