/**
 * `driftless plan` and `driftless apply`: the agent's cycle (`daemon/cycle.ts`), run once from
 * the command line. The agent configuration gives host, labels, state directory, source and
 * trust; flags override single keys. `apply` takes the run lock and records the run, as the
 * daemon does; `plan` writes nothing: a Git URL is fetched into a private temp directory that is
 * removed at the end, the state database is only read, the facts cache is not written.
 */
import * as path from "node:path";
import { DEFAULT_CONFIG } from "../config/env.js";
import { type ConfigOverride, loadAgentConfig } from "../config/load.js";
import type { AgentConfig } from "../config/schema.js";
import { runPrepared } from "../daemon/agent.js";
import type { CycleResult } from "../daemon/cycle.js";
import { createTrustCheck } from "../daemon/trust.js";
import { changesForReport, driftReport, type RunPorts } from "../engine/run.js";
import type { Change, ResourceResult } from "../engine/types.js";
import { DriftlessError, errorMessage } from "../errors.js";
import type { Facts } from "../facts/collect.js";
import { gatherFacts } from "../facts/gather.js";
import { HostFs } from "../host/fs.js";
import { gitHttp } from "../host/http.js";
import { type RunLock, tryLock, waitLock } from "../host/lock.js";
import { copyTrustedTree, privateTempDir, type Scratch } from "../host/scratch.js";
import { type Logger, redact } from "../log.js";
import { detectPackageManager } from "../resources/package/apt.js";
import { createSystemdManager } from "../resources/service/systemd.js";
import { isGitUrl } from "../source/git.js";
import { StateStore } from "../state/db.js";
import { parse, parseLabels } from "./args.js";
import type { Io } from "./io.js";
import { prettyJsonPieces } from "./json-out.js";
import { applySummary, formatChange, formatErrors, formatHeader, formatResult, planSummary } from "./render.js";

export const CONVERGE_OPTIONS = {
  source: { type: "string" },
  config: { type: "string" },
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

type Verb = "plan" | "apply";

export function convergeHelp(verb: Verb): string {
  const what =
    verb === "plan"
      ? "Shows what would change on this host. Writes nothing: no state, no cache, no facts file."
      : "Converges this host to its profiles and records the run, as one run of the agent does.";
  return `Usage: driftless ${verb} [--source DIR|URL] [--config FILE] [options]

${what}
Reads the agent configuration (${DEFAULT_CONFIG} when it exists, or DIR/etc/driftless/agent.yaml
under --root DIR) for host, labels, state directory, source and trust; options override single
keys. A Git URL goes through the agent's own fetch, signature check, rollback refusal, last good
commit and offline fallback.

Options:
  --source DIR|URL      profile repository: a directory, or an http(s) Git URL (source.url)
  --config FILE         agent configuration to read (must exist)
  --ref REF             with a URL: branch, tag or commit (source.ref, default main)
  --token-file FILE     with a URL: a file holding an access token (source.tokenFile)
  --root DIR            manage the tree mounted at DIR instead of / (files under DIR,
                        packages through chroot, services enable/disable only)
  --state DIR           state directory (stateDir; default /var/lib/driftless, or
                        DIR/var/lib/driftless under --root)
  --host NAME           host name used by fleet.yaml and templates (host; default: this host's)
  --label KEY=VALUE     a label for fleet.yaml matching and templates (repeatable; each one
                        overrides the configuration's label of that name)
  --profile NAME        apply this profile instead of fleet.yaml's assignments (repeatable)
  --refresh-packages    refresh the package index before checking 'latest' packages
  --wait                (apply) wait for a run in progress (the daemon's) instead of failing
  --json                print one JSON object (changes, errors, summary)
  -h, --help            show this help

Exit codes: 0 in sync, 2 changes ${verb === "plan" ? "pending" : "made"}, 1 the run could not start
(nothing was applied), 4 some resources failed or the new commit was refused.
`;
}

type Values = ReturnType<typeof parse<typeof CONVERGE_OPTIONS>>["values"];

export async function runConverge(verb: Verb, args: string[], io: Io): Promise<number> {
  const { values } = parse(args, CONVERGE_OPTIONS);
  if (values.help) {
    io.out(convergeHelp(verb));
    return 0;
  }
  const root = path.resolve(values.root ?? "/");
  const hostFs = new HostFs(root);
  const machineFs = new HostFs("/");
  const fail = (message: string) => {
    io.err(`driftless ${verb}: ${message}`);
    return 1;
  };

  const resolved = await resolveConfig(verb, values, root, machineFs);
  if ("error" in resolved) {
    for (const line of resolved.error) io.err(`driftless ${verb}: ${line}`);
    return 1;
  }
  // `apply` converges whatever the configuration's mode: the command says so.
  const config: AgentConfig = { ...resolved.config, ...(verb === "apply" ? { mode: "enforce" } : {}) };
  const gitSource = isGitUrl(config.source.url);
  if (!gitSource && machineFs.lstat(config.source.url)?.type !== "directory") {
    return fail(`source ${config.source.url} is not a directory; nothing was applied`);
  }
  const { stateDir } = config;

  const abort = new AbortController();
  const stop = new AbortController();
  // First signal: finish the resource under way, then stop. Second: cancel it too.
  const onSignal = () => {
    if (stop.signal.aborted) abort.abort(new Error("interrupted"));
    else stop.abort(new Error("interrupted"));
  };
  const offSignals = () => {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  let state: StateStore | null = null;
  let lock: RunLock | null = null;
  let scratch: Scratch | null = null;
  if (verb === "apply") {
    process.umask(0o077); // the state database and cache are private; managed files get explicit modes
    try {
      machineFs.mkdirp(stateDir, 0o700);
      lock = values.wait
        ? await waitLock(stateDir, `driftless apply (pid ${process.pid})`, io.clock, {
            signal: stop.signal,
            onWait: (owner) => io.err(`Waiting: ${owner}`),
          })
        : tryLock(stateDir, `driftless apply (pid ${process.pid})`, io.clock.now());
      state = StateStore.open(stateDir, {
        keepRuns: config.state?.keepRuns,
        onWarning: (message) => io.err(`driftless apply: warning: ${message}`),
      });
    } catch (error) {
      lock?.release();
      offSignals();
      if (error instanceof DriftlessError && error.code === "ELOCKED") {
        return fail(`${error.message}; pass --wait to wait for it`);
      }
      io.err(`driftless apply: cannot use state directory ${stateDir}: ${errorMessage(error)}`);
      io.err("Pass --state DIR with a directory you can write.");
      return 1;
    }
  } else {
    // Reading a database in WAL mode writes beside it (-shm, -wal): a plan reads a private copy.
    scratch = privateTempDir("driftless-plan-");
    if (copyTrustedTree(stateDir, path.join(scratch.dir, "state"), ["state.db", "state.db-wal"])) {
      try {
        state = StateStore.open(path.join(scratch.dir, "state"), { readonly: true });
        state.sourceState(); // a copy taken in the middle of a write may not read
      } catch {
        state?.close();
        state = null; // plan works without the records, it only reads more
      }
    }
  }

  const progress = io.progress();
  let result: CycleResult;
  let host: string;
  try {
    const facts = await gatherFacts({
      fs: hostFs,
      clock: io.clock,
      cacheFile: path.join(stateDir, "facts.json"),
      writeCache: verb === "apply",
    });
    // Under --root the tree's own name, when it has one.
    const treeName = hostFs.isRooted ? hostFs.readTextIfExists("/etc/hostname")?.trim() : undefined;
    host = config.host ?? (treeName || String(facts.hostname));
    let cacheDir = stateDir;
    if (scratch && gitSource) {
      // A private copy of the agent's cache (when it can be trusted), fetched into and removed.
      cacheDir = scratch.dir;
      copyTrustedTree(path.join(stateDir, "git"), path.join(cacheDir, "git"));
    }
    const ports: RunPorts = {
      repoFs: machineFs,
      hostFs,
      runner: io.runner,
      clock: io.clock,
      packageManager: detectPackageManager,
      serviceManager: createSystemdManager,
    };
    if (!values.json && verb === "apply") io.out(io.style.bold(`Applying for ${host}…`));
    result = await runPrepared(
      {
        fs: machineFs,
        gitFs: HostFs.nodeFs(),
        http: gitHttp,
        facts: async (): Promise<Facts> => facts,
        trust: (c) => createTrustCheck(machineFs, c),
        log: cliLogger(verb, io),
        ports,
      },
      { ...config, host },
      state,
      cacheDir,
      {
        fetch: true,
        write: verb === "apply",
        stop: stop.signal,
        signal: abort.signal,
        extras: {
          ...(values.profile ? { profiles: values.profile } : {}),
          refreshPackages: values["refresh-packages"] ?? false,
          onStart: (change: Change) => progress.start(`${change.action} ${change.resource}`),
          onLine: (line: string) => progress.line(line),
          onResult: (r: ResourceResult, change: Change | undefined) => {
            progress.stop();
            if (!values.json) for (const line of formatResult(r, change, io.style)) io.out(line);
          },
        },
      },
    );
  } finally {
    progress.stop();
    offSignals();
    state?.close();
    lock?.release();
    scratch?.remove();
  }
  return report(verb, host, result, values.json ?? false, io);
}

/** The configuration file (if any) with the environment's and the flags' keys on top. */
async function resolveConfig(
  verb: Verb,
  values: Values,
  root: string,
  fs: HostFs,
): Promise<{ config: AgentConfig } | { error: string[] }> {
  const explicit = values.config !== undefined;
  const file = explicit ? path.resolve(values.config as string) : path.join(root, DEFAULT_CONFIG);
  const exists = fs.lstat(file) !== null;
  if (explicit && !exists) return { error: [`--config ${file}: no such file`] };
  if (!exists && !values.source && !process.env.DRIFTLESS_SOURCE_URL) {
    return { error: [`--source DIR is required (no configuration at ${file}; see driftless ${verb} --help)`] };
  }
  const overrides: ConfigOverride[] = [];
  const set = (key: string[], value: unknown, option: string) => overrides.push({ key, value, option });
  if (values.source)
    set(["source", "url"], isGitUrl(values.source) ? values.source : path.resolve(values.source), "--source");
  if (values.ref) set(["source", "ref"], values.ref, "--ref");
  if (values["token-file"]) {
    set(["source", "tokenFile"], path.resolve(values["token-file"]), "--token-file");
    set(["source", "usernameFile"], undefined, "--token-file");
    set(["source", "passwordFile"], undefined, "--token-file");
  }
  if (values.state) set(["stateDir"], path.resolve(values.state), "--state");
  if (values.host) set(["host"], values.host, "--host");
  for (const [key, value] of Object.entries(parseLabels(values.label))) set(["labels", key], value, "--label");
  const treeRoot = !explicit && root !== "/" ? root : undefined;
  const { loaded, errors } = await loadAgentConfig(fs, file, process.env, undefined, {
    ...(treeRoot ? { treeRoot } : {}),
    overrides,
    keepValidated: verb === "apply",
  });
  if (!loaded) return { error: errors.map((e) => e.toString()) };
  return { config: loaded.config };
}

/** Warnings and errors of the cycle (fetch failed, commit refused, ...) on stderr, one line each. */
function cliLogger(verb: Verb, io: Io): Logger {
  const line = (level: string, msg: string, fields: Record<string, unknown> = {}) => {
    const extra = Object.entries(redact(fields))
      .filter(([, v]) => v !== null && v !== undefined)
      .map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`)
      .join(" ");
    io.err(`driftless ${verb}: ${level}: ${msg}${extra ? `  ${extra}` : ""}`);
  };
  return {
    debug() {},
    info() {},
    warn: (msg, fields) => line("warning", msg, fields),
    error: (msg, fields) => line("error", msg, fields),
  };
}

async function report(verb: Verb, host: string, result: CycleResult, json: boolean, io: Io): Promise<number> {
  const { outcome } = result;
  const style = io.style;
  if (json) {
    const cycleErrors = result.errors.filter((e) => !outcome?.errors.includes(e));
    // Written in pieces: with thousands of changes, the whole text at once is the run's largest allocation.
    const pieces = prettyJsonPieces({
      run: outcome?.id ?? null,
      host,
      mode: verb,
      ...(result.commit ? { commit: result.commit } : {}),
      status: outcome?.status ?? "invalid",
      exitCode: result.exitCode,
      source: outcome?.source ?? result.source,
      origin: result.source,
      profiles: outcome?.profiles ?? [],
      ...(outcome ? { desiredFrom: outcome.desiredFrom } : {}),
      changes: result.changes ?? (outcome?.plan ? changesForReport(outcome.plan, outcome.results) : []),
      drift: outcome?.plan ? driftReport(outcome.plan) : [],
      problems: outcome?.plan ? Object.fromEntries(outcome.plan.problems) : {},
      errors: [...cycleErrors, ...(outcome?.errors ?? [])].map((e) => e.toJSON()),
      results: outcome?.results ?? [],
      timings: outcome?.timings ?? {},
    });
    if (io.outPieces) await io.outPieces(pieces);
    else for (const piece of pieces) io.out(piece);
    return result.exitCode;
  }
  if (!outcome) {
    // The cycle said why on stderr (its log); nothing was converged.
    io.err(style.red("Nothing was applied."));
    return result.exitCode;
  }
  if (outcome.exitCode === 1) {
    for (const line of formatErrors(outcome, style)) io.err(line);
    return result.exitCode;
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
  return result.exitCode;
}
