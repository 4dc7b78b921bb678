/** The human form of plans and runs. */

import type { RunOutcome } from "../engine/run.js";
import type { Change, ResourceResult } from "../engine/types.js";
import { formatLocated } from "../errors.js";
import type { Drift } from "../resources/types.js";
import type { Style } from "./style.js";

export function formatValue(value: unknown): string {
  if (value === null || value === undefined) return "absent";
  if (typeof value === "string") return value.startsWith("sha256:") ? `${value.slice(0, 15)}…` : value;
  return JSON.stringify(value);
}

export function formatDrift(drift: Drift[], action = ""): string {
  // A created or deleted file says it all by its action; its content shows as a diff.
  const obvious = action === "create" || action === "delete" ? new Set(["state", "content"]) : new Set(["content"]);
  return drift
    .filter((d) => !obvious.has(d.field))
    .map((d) => `${d.field} ${formatValue(d.actual)} -> ${formatValue(d.desired)}`)
    .join(", ");
}

const SYMBOL: Record<string, string> = { create: "+", install: "+", delete: "-", remove: "-" };

function describe(change: Change): string {
  const fields = formatDrift(change.drift, change.action);
  const content = change.action === "update" && change.drift.some((d) => d.field === "content") ? "content" : "";
  return [content, fields].filter(Boolean).join(", ");
}

export function formatChange(change: Change, style: Style): string[] {
  const symbol = change.triggeredBy ? "↻" : (SYMBOL[change.action] ?? "~");
  const colour = symbol === "+" ? style.green : symbol === "-" ? style.red : style.yellow;
  const details = change.triggeredBy ? `(notified by ${change.triggeredBy.join(", ")})` : describe(change);
  const lines = [`  ${colour(symbol)} ${style.bold(change.resource)}  ${colour(change.action)}  ${style.dim(details)}`];
  if (change.diff) {
    for (const line of change.diff.split("\n")) {
      const coloured =
        line.startsWith("+") && !line.startsWith("+++")
          ? style.green(line)
          : line.startsWith("-") && !line.startsWith("---")
            ? style.red(line)
            : line.startsWith("@@")
              ? style.cyan(line)
              : style.dim(line);
      lines.push(`      ${coloured}`);
    }
  }
  return lines;
}

export function formatResult(result: ResourceResult, change: Change | undefined, style: Style): string[] {
  const ms = result.durationMs !== undefined ? style.dim(` (${Math.round(result.durationMs)} ms)`) : "";
  switch (result.outcome) {
    case "changed":
      return change ? [...formatChange(change, style).map((l, i) => (i === 0 ? l + ms : l))] : [];
    case "failed":
      return [
        `  ${style.red("✗")} ${style.bold(result.resource)}  ${style.red(result.action ?? "failed")}  ${result.error ?? ""}`,
      ];
    case "skipped":
      return [`  ${style.dim("-")} ${result.resource}  ${style.dim(`skipped: ${result.error ?? ""}`)}`];
    default:
      return [];
  }
}

export function formatHeader(verb: string, host: string, outcome: RunOutcome, style: Style): string {
  const profiles = outcome.profiles.length ? outcome.profiles.join(", ") : "none";
  return (
    style.bold(`${verb} for ${host}`) + style.dim(`  profiles: ${profiles}  source: ${outcome.source.slice(0, 16)}`)
  );
}

export function formatErrors(outcome: RunOutcome, style: Style): string[] {
  const lines = outcome.errors.map((e) => `${style.red("error")} ${formatLocated(e.message, e.location)}`);
  const n = outcome.errors.length;
  lines.push(style.red(`${n} error${n === 1 ? "" : "s"}; nothing was applied.`));
  return lines;
}

export function planSummary(outcome: RunOutcome, style: Style): string {
  const plan = outcome.plan;
  if (!plan) return "";
  const pending = plan.changes.filter((c) => !c.triggeredBy).length;
  const changedIds = new Set(plan.changes.map((c) => c.resource));
  const inSync = plan.order.filter((id) => !changedIds.has(id) && !plan.problems.has(id)).length;
  const problems = plan.problems.size ? style.red(`, ${plan.problems.size} cannot be read`) : "";
  if (pending === 0 && !plan.problems.size) return style.green(`In sync: ${inSync} resources, nothing to change.`);
  return `Plan: ${style.bold(String(pending))} to change, ${inSync} in sync${problems}.`;
}

export function applySummary(outcome: RunOutcome, style: Style): string {
  const count = (o: string) => outcome.results.filter((r) => r.outcome === o).length;
  const seconds = ((outcome.endedAt.getTime() - outcome.startedAt.getTime()) / 1000).toFixed(2);
  const total = outcome.plan?.order.length ?? 0;
  if (outcome.status === "in-sync") return style.green(`In sync: ${total} resources, nothing changed (${seconds} s).`);
  const parts = [`${count("changed")} changed`];
  if (count("failed")) parts.push(style.red(`${count("failed")} failed`));
  if (count("skipped")) parts.push(style.yellow(`${count("skipped")} skipped`));
  const interrupted = outcome.status === "interrupted" ? style.red(" Interrupted.") : "";
  return `Applied: ${parts.join(", ")} of ${total} resources (${seconds} s).${interrupted}`;
}
