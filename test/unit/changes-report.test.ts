import { describe, expect, it } from "vitest";
import { changesForReport } from "../../agent/src/engine/run.js";
import type { Change, Plan, ResourceResult } from "../../agent/src/engine/types.js";

const change = (resource: string, action: string, extra: Partial<Change> = {}): Change => ({
  resource,
  kind: resource.startsWith("service:") ? "service" : "file",
  action,
  drift: [],
  steps: [],
  ...extra,
});

const planOf = (changes: Change[]): Plan => ({
  order: changes.map((c) => c.resource),
  changes,
  problems: new Map(),
  dependents: new Map(),
});

describe("changes in their machine form", () => {
  it("gives each change the outcome of its own action when a resource has several", () => {
    const plan = planOf([
      change("file:/etc/app.conf", "update", { diff: "--- a\n+++ b" }),
      change("service:app", "start"),
      change("service:app", "restart", { triggeredBy: ["file:/etc/app.conf"] }),
    ]);
    const results: ResourceResult[] = [
      { resource: "file:/etc/app.conf", outcome: "changed", action: "update" },
      { resource: "service:app", outcome: "changed", action: "start" },
      { resource: "service:app", outcome: "failed", action: "restart", error: "exit status 1" },
    ];
    expect(changesForReport(plan, results)).toEqual([
      { resource: "file:/etc/app.conf", action: "update", drift: [], diff: "--- a\n+++ b", outcome: "changed" },
      { resource: "service:app", action: "start", drift: [], outcome: "changed" },
      {
        resource: "service:app",
        action: "restart",
        drift: [],
        triggeredBy: ["file:/etc/app.conf"],
        outcome: "failed",
        error: "exit status 1",
      },
    ]);
  });

  it("leaves the outcome out of a change that did not run (a plan)", () => {
    const entries = changesForReport(planOf([change("file:/a", "create")]), []);
    expect(entries).toEqual([{ resource: "file:/a", action: "create", drift: [] }]);
  });
});
