import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import Database from "better-sqlite3";
import { afterAll, describe, expect, it } from "vitest";
import { MIGRATIONS, SqliteFleetStore } from "../../controlplane/src/store/sqlite.js";
import { runReport, statusPayload } from "../support/payloads.js";
import { describeFleetStore } from "../support/store-suite.js";

const dirs: string[] = [];
const tempDir = () => {
  const dir = mkdtempSync(path.join(tmpdir(), "driftless-store-"));
  dirs.push(dir);
  return dir;
};
afterAll(() => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

describeFleetStore("sqlite", async (options) => SqliteFleetStore.open(tempDir(), options ?? {}));

describe("SqliteFleetStore", () => {
  it("keeps its data in DATA/fleet.db across a reopen, migrated once", async () => {
    const dir = tempDir();
    const first = SqliteFleetStore.open(dir);
    expect(first.schemaVersion).toBe(3);
    await first.addCredential("edge-1", "h");
    await first.recordStatus("edge-1", statusPayload("edge-1"), new Date());
    await first.recordReport("edge-1", runReport("edge-1", 1), new Date());
    await first.close();
    const second = SqliteFleetStore.open(dir);
    expect(await second.credentialHash("edge-1")).toBe("h");
    expect(await second.listRuns("edge-1", { limit: 5 })).toHaveLength(1);
    expect((await second.getHost("edge-1", new Date()))?.presence).toBe("online");
    expect(second.schemaVersion).toBe(3);
    await second.close();
  });

  it("migrates a version 1 database: its runs are kept, with no source", async () => {
    const dir = tempDir();
    const old = new Database(path.join(dir, "fleet.db"));
    old.exec(MIGRATIONS[0] ?? "");
    old.pragma("user_version = 1");
    old
      .prepare(
        `INSERT INTO runs (host, run_id, seq, kind, git_commit, mode, result, sync, started_at, ended_at, changes,
           drift, errors, fold, received_at) VALUES ('edge-1', 'run-1', 1, 'run', 'c0ffee', 'apply', 'in-sync',
           'in-sync', '2026-01-01T00:00:00.000Z', '2026-01-01T00:00:01.000Z', '[]', '[]', '[]', NULL,
           '2026-01-01T00:00:02.000Z')`,
      )
      .run();
    old.close();
    const store = SqliteFleetStore.open(dir);
    expect(store.schemaVersion).toBe(3);
    const [run] = await store.listRuns("edge-1", { limit: 5 });
    expect(run).toMatchObject({ runId: "run-1", commit: "c0ffee" });
    expect(run?.source).toBeUndefined();
    await store.recordReport("edge-1", runReport("edge-1", 2, { source: "git" }), new Date());
    expect((await store.listRuns("edge-1", { limit: 1 }))[0]?.source).toBe("git");
    await store.close();
  });
});
