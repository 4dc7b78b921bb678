/**
 * The outbox in state.db, on real SQLite files: written in the run's transaction only with a
 * broker configured, seq never reused, the fold, payloads that pass protocol/schema.ts and stay
 * under MAX_PAYLOAD_BYTES; and `driftless apply` on a configured host writing to it.
 */
import { spawnSync } from "node:child_process";
import { writeFileSync } from "node:fs";
import * as path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { loadAgentConfig } from "../../agent/src/config/load.js";
import { toRunRecord } from "../../agent/src/engine/run.js";
import { HostFs } from "../../agent/src/host/fs.js";
import { ackReports, envelope, getReporting, pendingReports, REPORTING_KEYS } from "../../agent/src/report/outbox.js";
import { brokerSettings } from "../../agent/src/report/settings.js";
import { type RunRecord, type RunReporting, StateStore } from "../../agent/src/state/db.js";
import { reportSchema, runReportSchema, statusSchema, summaryReportSchema } from "../../protocol/schema.js";
import { MAX_PAYLOAD_BYTES } from "../../protocol/topics.js";
import { CLI } from "../support/cli.js";
import { run as converge } from "../support/ports.js";
import { cleanupTemp, fleet, makeRepo, profile, tempDir } from "../support/repo.js";
import { outboxOf } from "../support/reporting.js";

afterAll(cleanupTemp);

function record(n: number, result = "in-sync", changes: unknown[] = [], errors: unknown[] = []): RunRecord {
  const startedAt = new Date(Date.UTC(2026, 0, 1, 0, n)).toISOString();
  const endedAt = new Date(Date.UTC(2026, 0, 1, 0, n, 30)).toISOString();
  return {
    id: `run-${n}`,
    startedAt,
    endedAt,
    source: "dir:test",
    commit: null,
    mode: "apply",
    result,
    changes,
    errors,
    summary: { resources: 1, changed: 0, failed: 0, skipped: 0, durationMs: 30_000 },
  };
}

const withBroker = (outboxLimit = 500): RunReporting => ({ outboxLimit, mode: "enforce" });

/** The published text of every row waiting, parsed. */
function published(state: StateStore, host = "edge-1", session = 7): Array<Record<string, unknown>> {
  return pendingReports(state.database, 0, 10_000).map(
    (row) => JSON.parse(envelope(host, session, row.seq, row.body)) as Record<string, unknown>,
  );
}

describe("the outbox", () => {
  it("is written only with a broker configured, in the run's transaction, and remembers the broker for runs whose configuration did not load", () => {
    const state = StateStore.open(tempDir());
    state.recordRun(record(1));
    state.recordRun(record(2), { outboxLimit: null, mode: "enforce" });
    // A configuration that does not load, on a host that never had a broker: nothing to report.
    state.recordRun(record(3, "error"), { outboxLimit: undefined, mode: "enforce" });
    expect(pendingReports(state.database, 0, 100)).toEqual([]);

    state.recordRun(record(4), withBroker());
    state.recordRun(record(5, "error"), { outboxLimit: undefined, mode: "enforce" });
    expect(published(state).map((r) => [r.runId, r.seq, r.sync])).toEqual([
      ["run-4", 1, "in-sync"],
      ["run-5", 2, "failed"],
    ]);
    // The broker removed from the configuration: runs stop reporting, even those that cannot load it.
    state.recordRun(record(6), { outboxLimit: null, mode: "enforce" });
    state.recordRun(record(7, "error"), { outboxLimit: undefined, mode: "enforce" });
    expect(published(state).map((r) => r.runId)).toEqual(["run-4", "run-5"]);
    state.close();
  });

  it("gives each report the next seq, never one used before, even after acknowledged reports were deleted", () => {
    const dir = tempDir();
    let state = StateStore.open(dir);
    for (const n of [1, 2, 3]) state.recordRun(record(n), withBroker());
    expect(ackReports(state.database, 3)).toBe(3);
    state.close();
    state = StateStore.open(dir);
    state.recordRun(record(4), withBroker());
    expect(published(state).map((r) => r.seq)).toEqual([4]);
    state.close();
  });

  it("keeps the newest outboxLimit runs whole and folds the older ones, and an older fold, into one summary", () => {
    const state = StateStore.open(tempDir());
    const results = ["changed", "in-sync", "failed", "in-sync", "changes", "in-sync"];
    for (let n = 1; n <= 5; n++) state.recordRun(record(n, results[n - 1]), withBroker(2));
    let reports = published(state);
    expect(reports.map((r) => [r.kind, r.seq])).toEqual([
      ["summary", 3],
      ["run", 4],
      ["run", 5],
    ]);
    const first = summaryReportSchema.parse(reports[0]);
    expect(first).toMatchObject({
      fromSeq: 1,
      seq: 3,
      count: 3,
      results: { changed: 1, "in-sync": 1, failed: 1 },
      firstStartedAt: record(1).startedAt,
      lastEndedAt: record(3).endedAt,
    });

    state.recordRun(record(6, results[5]), withBroker(2));
    reports = published(state);
    expect(reports.map((r) => [r.kind, r.seq])).toEqual([
      ["summary", 4],
      ["run", 5],
      ["run", 6],
    ]);
    const second = summaryReportSchema.parse(reports[0]);
    expect(second).toMatchObject({
      fromSeq: 1,
      seq: 4,
      count: 4,
      results: { changed: 1, "in-sync": 2, failed: 1 },
      lastEndedAt: record(4).endedAt,
    });
    // A fold that grew is another report: the control plane stores by (host, runId).
    expect(second.runId).not.toBe(first.runId);
    state.close();
  });

  it("writes a report that passes the protocol's schema, and the status and facts of the run", async () => {
    const root = tempDir();
    const repo = makeRepo({
      "fleet.yaml": fleet("  - match: {}\n    profiles: [base]\n"),
      "base.yaml": profile(
        "base",
        'files:\n  - { path: /etc/a.conf, content: "a=1\\n" }\n  - { path: /etc/b.conf, content: "b\\n", mode: "0600" }\n',
      ),
    });
    writeFileSync(path.join(root, "placeholder"), "");
    const state = StateStore.open(tempDir());
    const outcome = await converge(root, repo, { mode: "apply", state });
    const facts = { os: { arch: "amd64" }, hostname: "edge-1" };
    state.recordRun(toRunRecord(outcome, "apply", "c0ffee", { source: "git" }), {
      ...withBroker(),
      labels: { role: "gateway", ["k".repeat(64)]: "too long a key for the protocol" },
      profiles: outcome.profiles,
      timings: outcome.timings,
      facts,
    });
    const [report] = published(state);
    const parsed = runReportSchema.parse(report);
    expect(parsed).toMatchObject({
      v: 1,
      host: "edge-1",
      session: 7,
      seq: 1,
      kind: "run",
      runId: outcome.id,
      commit: "c0ffee",
      source: "git",
      mode: "apply",
      result: "changed",
      sync: "in-sync",
      profiles: ["base"],
    });
    expect(parsed.changes.map((c) => c.resource).sort()).toEqual(["file:/etc/a.conf", "file:/etc/b.conf"]);
    expect(parsed.drift.length).toBeGreaterThan(0);
    expect(Object.keys(parsed.timings)).toContain("apply");

    const status = JSON.parse(getReporting(state.database, REPORTING_KEYS.status) ?? "{}");
    expect(statusSchema.parse({ v: 1, host: "edge-1", session: 7, state: "online", ...status })).toMatchObject({
      commit: "c0ffee",
      sync: "in-sync",
      mode: "enforce",
      lastRun: { runId: outcome.id, seq: 1, result: "changed" },
      labels: { role: "gateway" },
    });
    // A run whose configuration did not load keeps the mode and labels the status had.
    state.recordRun(record(9, "error"), { outboxLimit: undefined });
    expect(JSON.parse(getReporting(state.database, REPORTING_KEYS.status) ?? "{}")).toMatchObject({
      sync: "failed",
      mode: "enforce",
      labels: { role: "gateway" },
      lastRun: { runId: "run-9", seq: 2 },
    });
    expect(getReporting(state.database, REPORTING_KEYS.facts)).toBe('{"hostname":"edge-1","os":{"arch":"amd64"}}');
    expect(getReporting(state.database, REPORTING_KEYS.factsHash)).toMatch(/^[0-9a-f]{64}$/);
    state.close();
  });

  it("trims diffs, then entries, so that a report stays under MAX_PAYLOAD_BYTES", () => {
    const state = StateStore.open(tempDir());
    // 40 diffs just under the stored cap (64 KiB each): 2.5 MB in all.
    const diff = `+${"d".repeat(60 * 1024)}\n`;
    const changes = Array.from({ length: 40 }, (_, i) => ({
      resource: `file:/etc/f${i}`,
      action: "update",
      diff,
      drift: [{ field: "content", desired: "x", actual: "y" }],
    }));
    state.recordRun(record(1, "changed", changes), withBroker());
    // Errors too many to fit even without diffs.
    const errors = Array.from({ length: 3000 }, (_, i) => ({ code: "EAPPLY", message: `${i} ${"e".repeat(1000)}` }));
    state.recordRun(record(2, "failed", [], errors), withBroker());
    const rows = pendingReports(state.database, 0, 10);
    for (const row of rows) {
      const text = envelope("h".repeat(63), 123456, row.seq, row.body);
      expect(Buffer.byteLength(text)).toBeLessThanOrEqual(MAX_PAYLOAD_BYTES);
      reportSchema.parse(JSON.parse(text));
    }
    type Body = { changes: Array<Record<string, unknown>>; errors: unknown[]; summary: Record<string, number> };
    const [first, second] = rows.map((r) => JSON.parse(r.body) as Body);
    expect(first?.changes).toHaveLength(40);
    expect(first?.changes.filter((c) => c.diffOmitted).length).toBeGreaterThan(20);
    expect(first?.changes.find((c) => c.diff === diff)).toBeDefined();
    const kept = second?.errors.length ?? 0;
    expect(kept).toBeLessThan(3000);
    expect(second?.summary.errorsOmitted).toBe(3000 - kept);
    state.close();
  });
});

describe("driftless apply on a host with a broker", () => {
  it("records its run in the outbox of the state directory", () => {
    const dir = tempDir();
    const repo = makeRepo({
      "fleet.yaml": fleet("  - match: {}\n    profiles: [base]\n"),
      "base.yaml": profile("base", 'files:\n  - { path: /etc/a.conf, content: "a=1\\n" }\n'),
    });
    const stateDir = path.join(dir, "state");
    const config = path.join(dir, "agent.yaml");
    writeFileSync(
      config,
      `apiVersion: driftless/v1\nkind: AgentConfig\nhost: edge-9\nstateDir: ${stateDir}\nsource:\n  url: ${repo}\nbroker:\n  url: mqtt://127.0.0.1:1\n`,
    );
    const result = spawnSync(process.execPath, [CLI, "apply", "--config", config, "--root", path.join(dir, "root")], {
      encoding: "utf8",
    });
    expect(result.status, result.stderr).toBe(2);
    expect(outboxOf(stateDir)).toEqual([{ seq: 1, kind: "run" }]);
  });
});

describe("the broker settings a run hands to the supervisor", () => {
  async function load(text: string, env: Record<string, string> = {}) {
    const dir = tempDir();
    const file = path.join(dir, "agent.yaml");
    writeFileSync(
      file,
      `apiVersion: driftless/v1\nkind: AgentConfig\nsource:\n  url: /srv/repo\n  splay: 30s\n${text}`,
    );
    const { loaded, errors } = await loadAgentConfig(new HostFs("/"), file, env);
    if (!loaded) throw new Error(errors.map((e) => e.toString()).join("; "));
    return { config: loaded.config, dir };
  }

  it("defaults the user name to the host id and outboxLimit to 500, paths relative to the file, CA from the environment", async () => {
    const { config, dir } = await load(
      "host: edge-7\nbroker:\n  url: mqtts://cp:8883\n  passwordFile: mqtt-password\n",
      {
        DRIFTLESS_BROKER_CA: "/etc/ca.pem",
      },
    );
    expect(config.broker?.outboxLimit).toBe(500);
    expect(brokerSettings(config, "machine-name")).toEqual({
      url: "mqtts://cp:8883",
      host: "edge-7",
      username: "edge-7",
      passwordFile: path.join(dir, "mqtt-password"),
      ca: "/etc/ca.pem",
      stateDir: "/var/lib/driftless",
      splayMs: 30_000,
    });
  });

  it("takes the hostname without host:, none without broker:, and none for a host id MQTT cannot carry", async () => {
    expect(brokerSettings((await load("broker:\n  url: mqtt://cp\n")).config, "gw-3")?.host).toBe("gw-3");
    expect(brokerSettings((await load("")).config, "gw-3")).toBeNull();
    expect(
      brokerSettings((await load(`host: ${"h".repeat(64)}\nbroker:\n  url: mqtt://cp\n`)).config, "gw-3"),
    ).toBeNull();
  });
});
