/** `driftless plan` and `driftless apply`. */

import * as os from "node:os";
import * as path from "node:path";
import { changesForReport, converge, driftReport, type RunOutcome, toRunRecord } from "../engine/run.js";
import type { Change, ResourceResult } from "../engine/types.js";
import { DriftlessError, errorMessage } from "../errors.js";
import { gatherFacts } from "../facts/gather.js";
import { HostFs } from "../host/fs.js";
import { gitHttp } from "../host/http.js";
import { type RunLock, tryLock, waitLock } from "../host/lock.js";
import { detectPackageManager } from "../resources/package/apt.js";
import { createSystemdManager } from "../resources/service/systemd.js";
import { GitCache, isGitUrl } from "../source/git.js";
import { StateStore } from "../state/db.js";
import { parse, parseLabels } from "./args.js";
import type { Io } from "./io.js";
import { applySummary, formatChange, formatErrors, formatHeader, formatResult, planSummary } from "./render.js";

export const CONVERGE_OPTIONS = {
  source: { type: "string" },
  root: { type: "string" },
  state: { type: "string" },
  host: { type: "string" },
  label: { type: "string", multiple: true },
  profile: { type: "string", multiple: true },
  "refresh-packages": { type: "boolean" },
  wait: { type: "boolean" },
  ref: { type: "string" },
  "token-file": { type: "string" },
  json: { type: "boolean" },
} as const;

export function convergeHelp(verb: "plan" | "apply"): string {
  const what =
    verb === "plan"
      ? "Shows what would change on this host. Writes nothing."
      : "Converges this host to its profiles and records the run.";
  return `Usage: driftless ${verb} --source DIR [options]

${what}

Options:
  --source DIR|URL      profile repository: a directory, or an http(s) Git URL fetched into the
                        state directory (fleet.yaml selects the profiles)
  --ref REF             with a URL: branch, tag or commit (default main)
  --token-file FILE     with a URL: a file holding an access token
  --root DIR            manage the tree mounted at DIR instead of / (files under DIR,
                        packages through chroot, services enable/disable only)
  --state DIR           state directory (default /var/lib/driftless, or DIR/var/lib/driftless
                        under --root)
  --host NAME           host name used by fleet.yaml and templates (default: this host's)
  --label KEY=VALUE     a label for fleet.yaml matching and templates (repeatable)
  --profile NAME        apply this profile instead of fleet.yaml's assignments (repeatable)
  --refresh-packages    refresh the package index before checking 'latest' packages
  --wait                (apply) wait for a run in progress (the daemon's) instead of failing
  --json                print one JSON object (changes, errors, summary)
  -h, --help            show this help

Exit codes: 0 in sync, 2 changes ${verb === "plan" ? "pending" : "made"}, 1 the run could not start
(nothing was applied), 4 some resources failed.
`;
}

export async function runConverge(verb: "plan" | "apply", args: string[], io: Io): Promise<number> {
  const { values } = parse(args, CONVERGE_OPTIONS);
  if (values.help) {
    io.out(convergeHelp(verb));
    return 0;
  }
  if (!values.source) {
    io.err(`driftless ${verb}: --source DIR is required (see driftless ${verb} --help)`);
    return 1;
  }
  const root = path.resolve(values.root ?? "/");
  const hostFs = new HostFs(root);
  const repoFs = new HostFs("/");
  const stateDir = path.resolve(values.state ?? path.join(root, "var/lib/driftless"));
  const facts = await gatherFacts({ fs: hostFs, clock: io.clock, cacheFile: path.join(stateDir, "facts.json") });
  // Under --root the tree's own name, when it has one.
  const treeName = hostFs.isRooted ? hostFs.readTextIfExists("/etc/hostname")?.trim() : undefined;
  const host = values.host ?? (treeName || String(facts.hostname));
  const style = io.style;

  let source = values.source;
  let commit: string | null = null;
  if (isGitUrl(values.source)) {
    try {
      ({ dir: source, commit } = await fetchSource(values.source, values, stateDir, repoFs, verb));
    } catch (error) {
      io.err(`driftless ${verb}: ${error instanceof DriftlessError ? error.toString() : errorMessage(error)}`);
      return 1;
    }
  }

  let state: StateStore | null = null;
  let lock: RunLock | null = null;
  const abort = new AbortController();
  const stop = new AbortController();
  // First signal: finish the resource under way, then stop. Second: cancel it too.
  const onSignal = () => {
    if (stop.signal.aborted) abort.abort(new Error("interrupted"));
    else stop.abort(new Error("interrupted"));
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  if (verb === "apply") {
    process.umask(0o077); // the state database and cache are private; managed files get explicit modes
    try {
      repoFs.mkdirp(stateDir, 0o700);
      lock = values.wait
        ? await waitLock(stateDir, `driftless apply (pid ${process.pid})`, io.clock, {
            signal: stop.signal,
            onWait: (owner) => io.err(`Waiting: ${owner}`),
          })
        : tryLock(stateDir, `driftless apply (pid ${process.pid})`, io.clock.now());
      state = StateStore.open(stateDir);
    } catch (error) {
      lock?.release();
      process.off("SIGINT", onSignal);
      process.off("SIGTERM", onSignal);
      if (error instanceof DriftlessError && error.code === "ELOCKED") {
        io.err(`driftless apply: ${error.message}; pass --wait to wait for it`);
        return 1;
      }
      io.err(`driftless apply: cannot use state directory ${stateDir}: ${(error as Error).message}`);
      io.err("Pass --state DIR with a directory you can write.");
      return 1;
    }
  } else if (repoFs.lstat(path.join(stateDir, "state.db"))) {
    try {
      state = StateStore.open(stateDir, { readonly: true });
    } catch {
      state = null; // plan works without the records, it only reads more
    }
  }

  const progress = io.progress();
  let outcome: RunOutcome;
  try {
    if (!values.json && verb === "apply") io.out(style.bold(`Applying for ${host}…`));
    outcome = await converge(
      {
        repoFs,
        hostFs,
        runner: io.runner,
        clock: io.clock,
        packageManager: detectPackageManager,
        serviceManager: createSystemdManager,
      },
      {
        mode: verb,
        source: path.resolve(source),
        host,
        labels: parseLabels(values.label),
        facts,
        ...(values.profile ? { profiles: values.profile } : {}),
        refreshPackages: values["refresh-packages"] ?? false,
        state,
        signal: abort.signal,
        stop: stop.signal,
        onStart: (change: Change) => progress.start(`${change.action} ${change.resource}`),
        onLine: (line: string) => progress.line(line),
        onResult: (result: ResourceResult, change: Change | undefined) => {
          progress.stop();
          if (!values.json) for (const line of formatResult(result, change, style)) io.out(line);
        },
      },
    );
    progress.stop();
    if (verb === "apply" && state && outcome.exitCode !== 1) {
      state.recordRun(toRunRecord(outcome, "apply", commit, commit ? { source: "git" } : {}));
    }
  } finally {
    progress.stop();
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    state?.close();
    lock?.release();
  }

  if (values.json) {
    io.out(
      JSON.stringify(
        {
          run: outcome.id,
          host,
          mode: verb,
          ...(commit ? { commit } : {}),
          status: outcome.status,
          exitCode: outcome.exitCode,
          source: outcome.source,
          profiles: outcome.profiles,
          changes: outcome.plan ? changesForReport(outcome.plan, outcome.results) : [],
          drift: outcome.plan ? driftReport(outcome.plan) : [],
          problems: outcome.plan ? Object.fromEntries(outcome.plan.problems) : {},
          errors: outcome.errors.map((e) => e.toJSON()),
          results: outcome.results,
          timings: outcome.timings,
        },
        null,
        2,
      ),
    );
    return outcome.exitCode;
  }
  if (outcome.exitCode === 1) {
    for (const line of formatErrors(outcome, style)) io.err(line);
    return 1;
  }
  if (verb === "plan") {
    io.out(formatHeader("Plan", host, outcome, style));
    for (const change of outcome.plan?.changes ?? []) for (const line of formatChange(change, style)) io.out(line);
    for (const [resource, problem] of outcome.plan?.problems ?? [])
      io.out(`  ${style.red("✗")} ${resource}  ${problem}`);
    io.out(planSummary(outcome, style));
  } else {
    io.out(applySummary(outcome, style));
  }
  return outcome.exitCode;
}

/** Fetches a Git URL into the state directory (or, for a plan by a user who cannot write it, a private cache). */
async function fetchSource(
  url: string,
  values: { ref?: string | undefined; "token-file"?: string | undefined },
  stateDir: string,
  fs: HostFs,
  verb: "plan" | "apply",
): Promise<{ dir: string; commit: string }> {
  let cacheDir = stateDir;
  try {
    fs.mkdirp(stateDir, 0o700);
  } catch (error) {
    if (verb === "apply") throw error;
    cacheDir = path.join(os.tmpdir(), `driftless-cache-${process.getuid?.() ?? "user"}`);
    fs.mkdirp(cacheDir, 0o700);
  }
  const tokenFile = values["token-file"];
  const token = tokenFile ? (fs.readTextIfExists(path.resolve(tokenFile)) ?? "").trim() : undefined;
  const git = new GitCache({ fs, gitFs: HostFs.nodeFs(), http: gitHttp }, cacheDir);
  const commit = await git.fetch({
    url,
    ref: values.ref ?? "main",
    ...(token ? { auth: { username: "git", password: token } } : {}),
  });
  return { dir: await git.checkout(commit), commit };
}
