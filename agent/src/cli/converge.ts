/** `driftless plan` and `driftless apply`. */
import * as path from "node:path";
import { changesForReport, converge, driftReport, type RunOutcome, toRunRecord } from "../engine/run.js";
import type { Change, ResourceResult } from "../engine/types.js";
import { collectFacts } from "../facts/collect.js";
import { HostFs } from "../host/fs.js";
import { detectPackageManager } from "../resources/package/apt.js";
import { createSystemdManager } from "../resources/service/systemd.js";
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
  --source DIR          profile repository (a directory; fleet.yaml selects the profiles)
  --root DIR            manage the tree mounted at DIR instead of / (files under DIR,
                        packages through chroot, services enable/disable only)
  --state DIR           state directory (default /var/lib/driftless, or DIR/var/lib/driftless
                        under --root)
  --host NAME           host name used by fleet.yaml and templates (default: this host's)
  --label KEY=VALUE     a label for fleet.yaml matching and templates (repeatable)
  --profile NAME        apply this profile instead of fleet.yaml's assignments (repeatable)
  --refresh-packages    refresh the package index before checking 'latest' packages
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
  const facts = collectFacts(hostFs);
  const host = values.host ?? String(facts.hostname);
  const stateDir = path.resolve(values.state ?? path.join(root, "var/lib/driftless"));
  const style = io.style;

  let state: StateStore | null = null;
  if (verb === "apply") {
    try {
      repoFs.ensureParent(path.join(stateDir, "state.db"));
      state = StateStore.open(stateDir);
    } catch (error) {
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

  const abort = new AbortController();
  const onSignal = () => abort.abort(new Error("interrupted"));
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);

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
        source: path.resolve(values.source),
        host,
        labels: parseLabels(values.label),
        facts,
        ...(values.profile ? { profiles: values.profile } : {}),
        refreshPackages: values["refresh-packages"] ?? false,
        state,
        signal: abort.signal,
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
      state.recordRun(toRunRecord(outcome, "apply", null));
    }
  } finally {
    progress.stop();
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    state?.close();
  }

  if (values.json) {
    io.out(
      JSON.stringify(
        {
          host,
          mode: verb,
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
