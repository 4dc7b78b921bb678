/** The state database's bounds, on real SQLite files: retention, diff cap, a corrupt file. */
import { existsSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import * as path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { agentConfigSchema } from "../../agent/src/config/schema.js";
import { pendingReports } from "../../agent/src/report/outbox.js";
import { runReportEntry } from "../../agent/src/report/payload.js";
import {
  CHANGES_PER_ROW,
  MAX_STORED_DIFF_BYTES,
  RUN_CHANGES_VERSION,
  type RunRecord,
  StateStore,
} from "../../agent/src/state/db.js";
import { cleanupTemp, tempDir } from "../support/repo.js";

afterAll(cleanupTemp);

/** n changes like a first apply's: each file created, with its drift and its diff. */
function manyChanges(n: number): Array<Record<string, unknown>> {
  return Array.from({ length: n }, (_, i) => ({
    resource: `file:/etc/app/file-${i}.conf`,
    action: "create",
    drift: [{ field: "content", desired: `sha256:${i}`, actual: null }],
    diff: `+setting-${i} = ${i * 7}`,
    outcome: "changed",
  }));
}

function run(n: number, changes: unknown[] = []): RunRecord {
  // Start times set on purpose, one minute apart: the order never depends on the clock.
  const startedAt = new Date(Date.UTC(2026, 0, 1, 0, n)).toISOString();
  return {
    id: `run-${n}`,
    startedAt,
    endedAt: startedAt,
    source: "dir:test",
    commit: null,
    mode: "apply",
    result: "in-sync",
    changes,
    errors: [],
    summary: {},
  };
}

describe("the state database", () => {
  it("keeps the newest keepRuns runs", () => {
    const dir = tempDir();
    const state = StateStore.open(dir, { keepRuns: 3 });
    // Recorded out of order: the newest by start time are kept, not the last recorded.
    for (const n of [5, 1, 4, 2, 3, 0]) state.recordRun(run(n));
    expect(state.lastRuns(100).map((r) => r.id)).toEqual(["run-5", "run-4", "run-3"]);
    state.close();
  });

  it("keeps 100 runs by default", () => {
    const dir = tempDir();
    const state = StateStore.open(dir);
    for (let n = 0; n < 105; n++) state.recordRun(run(n));
    const runs = state.lastRuns(1000);
    expect(runs).toHaveLength(100);
    expect(runs.at(-1)?.id).toBe("run-5");
    state.close();
  });

  it("stores a large or binary diff as its hash and size", () => {
    const dir = tempDir();
    const state = StateStore.open(dir);
    const large = `+${"x".repeat(MAX_STORED_DIFF_BYTES)}`;
    const binary = "+\u0000\u0001\u0002";
    state.recordRun(
      run(1, [
        { resource: "file:/small", action: "update", diff: "-a\n+b" },
        { resource: "file:/large", action: "update", diff: large },
        { resource: "file:/binary", action: "create", diff: binary },
      ]),
    );
    const [small, big, bin] = state.lastRuns(1)[0]?.changes ?? [];
    expect(small).toEqual({ resource: "file:/small", action: "update", diff: "-a\n+b" });
    expect(big).toEqual({
      resource: "file:/large",
      action: "update",
      diffOmitted: { sha256: expect.stringMatching(/^[0-9a-f]{64}$/), bytes: MAX_STORED_DIFF_BYTES + 1 },
    });
    expect(bin).toMatchObject({ diffOmitted: { bytes: 4 } });
    expect(bin).not.toHaveProperty("diff");
    state.close();
  });

  it("moves a corrupt database aside, says so, and starts a fresh one", () => {
    const dir = tempDir();
    const garbage = Buffer.from("this is not an SQLite database, just bytes ".repeat(200));
    writeFileSync(path.join(dir, "state.db"), garbage);
    const warnings: string[] = [];

    // Read-only (plan, status) leaves it where it is.
    expect(() => StateStore.open(dir, { readonly: true })).toThrow(/cannot open state database .*state\.db/);
    expect(readFileSync(path.join(dir, "state.db"))).toEqual(garbage);

    const state = StateStore.open(dir, { onWarning: (m) => warnings.push(m) });
    state.recordRun(run(1));
    expect(state.lastRuns(5).map((r) => r.id)).toEqual(["run-1"]);
    state.close();

    const aside = readdirSync(dir).filter((f) => f.startsWith("state.db.corrupt-"));
    expect(aside).toEqual([expect.stringMatching(/^state\.db\.corrupt-[\dT-]+Z$/)]);
    const moved = aside[0] as string;
    expect(readFileSync(path.join(dir, moved))).toEqual(garbage);
    expect(warnings).toHaveLength(1);
    expect(warnings[0]).toContain(`state database ${path.join(dir, "state.db")} is corrupt`);
    expect(warnings[0]).toContain(`moved it to ${path.join(dir, moved)}`);
    expect(existsSync(path.join(dir, "state.db"))).toBe(true);
    expect(StateStore.open(dir, { readonly: true }).lastRuns(5)).toHaveLength(1);
  });

  it("takes keepRuns from agent.yaml's state key", () => {
    const base = { apiVersion: "driftless/v1", kind: "AgentConfig", source: { url: "/srv/repo" } };
    expect(agentConfigSchema.parse({ ...base, state: {} }).state).toEqual({ keepRuns: 100 });
    expect(agentConfigSchema.parse({ ...base, state: { keepRuns: 7 } }).state).toEqual({ keepRuns: 7 });
    expect(agentConfigSchema.safeParse({ ...base, state: { keepRuns: 0 } }).success).toBe(false);
    expect(() => StateStore.open(tempDir(), { keepRuns: 0 })).toThrow(/keepRuns/);
  });

  it("stores a run's many changes in pieces and reads them back whole, in order", () => {
    const dir = tempDir();
    const state = StateStore.open(dir, { keepRuns: 2 });
    const changes = manyChanges(2500);
    state.recordRun(run(1, changes));
    expect(state.lastRuns(1)[0]?.changes).toEqual(changes);

    const db = state.database;
    const pieces = db.prepare("SELECT n, changes FROM run_changes WHERE run_id = 'run-1' ORDER BY n").all() as Array<{
      n: number;
      changes: string;
    }>;
    expect(pieces.map((p) => p.n)).toEqual([...Array(Math.ceil(2500 / CHANGES_PER_ROW)).keys()]);
    expect(pieces.every((p) => (JSON.parse(p.changes) as unknown[]).length <= CHANGES_PER_ROW)).toBe(true);
    expect(db.prepare("SELECT changes FROM runs WHERE id = 'run-1'").pluck().get()).toBe("[]");

    // A pruned run's pieces go with it.
    state.recordRun(run(2, manyChanges(3)));
    state.recordRun(run(3));
    expect(state.lastRuns(5).map((r) => [r.id, r.changes.length])).toEqual([
      ["run-3", 0],
      ["run-2", 3],
    ]);
    expect(db.prepare("SELECT DISTINCT run_id FROM run_changes").pluck().all()).toEqual(["run-2"]);
    state.close();
  });

  it("writes the same report for a run of many changes as one built from the run read back", () => {
    const dir = tempDir();
    const state = StateStore.open(dir);
    const recorded = run(1, manyChanges(2500));
    state.recordRun(recorded, { outboxLimit: 10 });
    const [row] = pendingReports(state.database, 0, 10);
    const read = state.lastRuns(1)[0] as RunRecord;
    expect(JSON.parse(row?.body ?? "null")).toEqual(runReportEntry(read).body);
    expect(runReportEntry(read).body).toEqual(runReportEntry(recorded).body);
    state.close();
  });

  it("reads a run recorded by the schema before run_changes, read-only and after migrating", () => {
    const dir = tempDir();
    const fresh = StateStore.open(dir);
    const version = fresh.schemaVersion;
    // The database as the agent before run_changes left it: the changes in runs.changes.
    fresh.database.exec("DROP TABLE run_changes; DROP TABLE package_read");
    fresh.database.pragma(`user_version = ${RUN_CHANGES_VERSION - 1}`);
    const old = run(1, manyChanges(300));
    fresh.database
      .prepare(
        `INSERT INTO runs (id, started_at, ended_at, source, git_commit, mode, result, changes, errors, summary)
         VALUES (?, ?, ?, ?, NULL, 'apply', 'changed', ?, '[]', '{"changed":300}')`,
      )
      .run(old.id, old.startedAt, old.endedAt, old.source, JSON.stringify(old.changes));
    fresh.close();

    const readonly = StateStore.open(dir, { readonly: true });
    expect(readonly.schemaVersion).toBe(RUN_CHANGES_VERSION - 1);
    expect(readonly.lastRuns(5)[0]?.changes).toEqual(old.changes);
    readonly.close();

    const state = StateStore.open(dir);
    expect(state.schemaVersion).toBe(version);
    state.recordRun(run(2, manyChanges(260)));
    const [newer, older] = state.lastRuns(5);
    expect(newer?.changes).toEqual(manyChanges(260));
    expect(older?.changes).toEqual(old.changes);
    expect(older?.summary).toEqual({ changed: 300 });
    state.close();
  });
});
