/** The ingest with a real SQLite store: acks only after the store committed, none when it failed. */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { silentLogger } from "../../agent/src/log.js";
import { createIngest } from "../../controlplane/src/ingest/ingest.js";
import { SqliteFleetStore } from "../../controlplane/src/store/sqlite.js";
import { hostTopic } from "../../protocol/topics.js";
import { runReport } from "../support/payloads.js";

const dirs: string[] = [];
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});
const openStore = () => {
  const dir = mkdtempSync(path.join(tmpdir(), "driftless-ingest-"));
  dirs.push(dir);
  return SqliteFleetStore.open(dir);
};
const report = (seq: number) => ({
  topic: hostTopic("edge-1", "report"),
  payload: Buffer.from(JSON.stringify(runReport("edge-1", seq))),
  sender: "edge-1",
});

describe("ingest", () => {
  it("publishes an ack once the report is in the store, one per host per turn", async () => {
    const store = openStore();
    const acks: Array<{ topic: string; payload: unknown; storedThen: string[] }> = [];
    const ingest = createIngest({
      store,
      broker: {
        publish: async (topic, payload) => {
          // Read the store when the ack goes out: the report must already be there.
          const storedThen = (await store.listRuns("edge-1", { limit: 10 })).map((r) => r.runId);
          acks.push({ topic, payload: JSON.parse(payload), storedThen });
        },
      },
      log: silentLogger,
      now: () => new Date(),
    });
    ingest.handle(report(1));
    ingest.handle(report(2));
    ingest.handle(report(3));
    await ingest.idle();
    expect(acks).toEqual([
      {
        topic: hostTopic("edge-1", "ack"),
        payload: { v: 1, host: "edge-1", upTo: 3 },
        storedThen: ["run-3", "run-2", "run-1"],
      },
    ]);
    expect(ingest.stats).toMatchObject({ reportsStored: 3, acksSent: 1 });
    await store.close();
  });

  it("sends no ack when the store failed, counts it, and goes on", async () => {
    const store = openStore();
    await store.close();
    const published: string[] = [];
    const ingest = createIngest({
      store,
      broker: { publish: async (_topic, payload) => void published.push(payload) },
      log: silentLogger,
      now: () => new Date(),
    });
    ingest.handle(report(1));
    await ingest.idle();
    expect(published).toEqual([]);
    expect(ingest.stats.dropped.store).toBe(1);
    expect(ingest.stats.reportsStored).toBe(0);
  });
});
