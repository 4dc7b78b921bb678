import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { SqliteFleetStore } from "../../controlplane/src/store/sqlite.js";
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
    expect(first.schemaVersion).toBe(1);
    await first.addCredential("edge-1", "h");
    await first.recordStatus("edge-1", statusPayload("edge-1"), new Date());
    await first.recordReport("edge-1", runReport("edge-1", 1), new Date());
    await first.close();
    const second = SqliteFleetStore.open(dir);
    expect(await second.credentialHash("edge-1")).toBe("h");
    expect(await second.listRuns("edge-1", { limit: 5 })).toHaveLength(1);
    expect((await second.getHost("edge-1", new Date()))?.presence).toBe("online");
    await second.close();
  });
});
