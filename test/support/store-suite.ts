/**
 * The behaviour every FleetStore must have, written once: SQLite runs it now
 * (test/integration/store-sqlite.test.ts), PostgreSQL will run the same suite.
 */
import { afterEach, describe, expect, it } from "vitest";
import { STALE_AFTER_MS } from "../../controlplane/src/store/logic.js";
import type { FleetStore } from "../../controlplane/src/store/types.js";
import { factsPayload, heartbeatPayload, runReport, statusPayload, summaryReport } from "./payloads.js";

export interface StoreOptions {
  runsPerHost?: number;
}

const T0 = new Date("2026-03-01T10:00:00.000Z");
const at = (ms: number) => new Date(T0.getTime() + ms);

export function describeFleetStore(name: string, open: (options?: StoreOptions) => Promise<FleetStore>): void {
  describe(`FleetStore: ${name}`, () => {
    const stores: FleetStore[] = [];
    const fresh = async (options?: StoreOptions) => {
      const store = await open(options);
      stores.push(store);
      return store;
    };
    afterEach(async () => {
      for (const store of stores.splice(0)) await store.close();
    });

    it("adds, reads, lists and removes credentials", async () => {
      const store = await fresh();
      await store.addCredential("edge-1", "scrypt$hash-1", { site: "lyon" });
      await expect(store.addCredential("edge-1", "scrypt$other")).rejects.toMatchObject({ code: "EEXISTS" });
      expect(await store.credentialHash("edge-1")).toBe("scrypt$hash-1");
      expect(await store.credentialHash("edge-2")).toBeNull();
      expect(await store.listCredentials()).toEqual(["edge-1"]);
      const [host] = await store.listHosts({}, T0);
      expect(host).toMatchObject({
        id: "edge-1",
        presence: "unknown",
        sync: "never-reported",
        labels: { site: "lyon" },
      });
      expect(await store.removeCredential("edge-1")).toBe(true);
      expect(await store.removeCredential("edge-1")).toBe(false);
      expect(await store.credentialHash("edge-1")).toBeNull();
      expect(await store.listHosts({}, T0)).toEqual([]);
    });

    it("ignores a status or will from an older session than the host's current one", async () => {
      const store = await fresh();
      expect(await store.recordStatus("edge-1", statusPayload("edge-1", { session: 2 }), at(0))).toBe(true);
      // The will of session 1 arrives after session 2 said online: ignored.
      expect(await store.recordStatus("edge-1", statusPayload("edge-1", { session: 1, state: "lost" }), at(1000))).toBe(
        false,
      );
      expect((await store.getHost("edge-1", at(2000)))?.presence).toBe("online");
      expect(await store.recordStatus("edge-1", statusPayload("edge-1", { session: 2, state: "lost" }), at(3000))).toBe(
        true,
      );
      const lost = await store.getHost("edge-1", at(4000));
      expect(lost).toMatchObject({ presence: "lost", online: false, session: 2 });
      await store.recordStatus("edge-1", statusPayload("edge-1", { session: 3 }), at(5000));
      await store.recordStatus("edge-1", statusPayload("edge-1", { session: 3, state: "offline" }), at(6000));
      const host = await store.getHost("edge-1", at(7000));
      expect(host?.presence).toBe("offline");
      expect(host?.history.map((h) => [h.field, h.from, h.to, h.at])).toEqual([
        ["presence", "online", "offline", at(6000).toISOString()],
        ["presence", "lost", "online", at(5000).toISOString()],
        ["presence", "online", "lost", at(3000).toISOString()],
        ["presence", null, "online", at(0).toISOString()],
      ]);
    });

    it("comes to the same state whatever order replicas apply a session's statuses in", async () => {
      const store = await fresh();
      const online = statusPayload("edge-1", { session: 3 });
      const offline = statusPayload("edge-1", { session: 3, state: "offline" });
      expect(await store.recordStatus("edge-1", online, at(0))).toBe(true);
      expect(await store.recordStatus("edge-1", offline, at(1000))).toBe(true);
      // Another replica applies its copies late: the online of a finished session changes nothing.
      expect(await store.recordStatus("edge-1", online, at(2000))).toBe(false);
      expect(await store.recordStatus("edge-1", offline, at(3000))).toBe(true);
      const host = await store.getHost("edge-1", at(4000));
      expect(host?.presence).toBe("offline");
      expect(host?.history.map((h) => [h.from, h.to])).toEqual([
        ["online", "offline"],
        [null, "online"],
      ]);
    });

    it("takes a replayed (retained) status or facts as news only when the store did not know them", async () => {
      const store = await fresh();
      const replayed = { replayed: true };
      // Unknown host: the retained status is all there is.
      expect(await store.recordStatus("edge-1", statusPayload("edge-1", { session: 2 }), at(0), replayed)).toBe(true);
      await store.recordFacts("edge-1", factsPayload("edge-1"), at(0), replayed);
      // A replica starting later replays the same status and facts: no sign of life.
      expect(
        await store.recordStatus("edge-1", statusPayload("edge-1", { session: 2 }), at(STALE_AFTER_MS), replayed),
      ).toBe(false);
      await store.recordFacts("edge-1", factsPayload("edge-1"), at(STALE_AFTER_MS), replayed);
      const host = await store.getHost("edge-1", at(STALE_AFTER_MS + 1));
      expect(host).toMatchObject({ presence: "stale", lastSeen: at(0).toISOString() });
      // A replayed status of a newer session was missed: applied.
      expect(await store.recordStatus("edge-1", statusPayload("edge-1", { session: 3 }), at(1000), replayed)).toBe(
        true,
      );
    });

    it("never moves the last sign of life backwards when replicas apply heartbeats out of order", async () => {
      const store = await fresh();
      await store.recordStatus("edge-1", statusPayload("edge-1"), at(0));
      await store.recordHeartbeat("edge-1", heartbeatPayload("edge-1"), at(60_000));
      await store.recordHeartbeat("edge-1", heartbeatPayload("edge-1"), at(30_000));
      expect((await store.getHost("edge-1", at(60_000 + STALE_AFTER_MS)))?.presence).toBe("online");
      expect((await store.getHost("edge-1", at(60_000 + STALE_AFTER_MS + 1)))?.presence).toBe("stale");
    });

    it("keeps what the status says: version, mode, commit, labels, last run", async () => {
      const store = await fresh();
      await store.recordStatus(
        "edge-1",
        statusPayload("edge-1", {
          version: "1.2.3",
          mode: "report",
          commit: "abc123",
          labels: { role: "gateway" },
          lastRun: { runId: "r9", seq: 9, result: "changed", endedAt: "2026-01-01T00:00:00.000Z" },
        }),
        at(0),
      );
      const host = await store.getHost("edge-1", at(0));
      expect(host).toMatchObject({
        version: "1.2.3",
        mode: "report",
        commit: "abc123",
        labels: { role: "gateway" },
        lastRun: { runId: "r9", seq: 9 },
        lastSeen: at(0).toISOString(),
        sync: "never-reported",
      });
    });

    it("computes stale from the last heartbeat, and records it once the host beats again", async () => {
      const store = await fresh();
      await store.recordStatus("edge-1", statusPayload("edge-1"), at(0));
      expect((await store.getHost("edge-1", at(STALE_AFTER_MS)))?.presence).toBe("online");
      const stale = await store.getHost("edge-1", at(STALE_AFTER_MS + 1));
      expect(stale).toMatchObject({ presence: "stale", online: false });
      expect(stale?.history[0]).toMatchObject({ from: "online", to: "stale", at: at(STALE_AFTER_MS).toISOString() });
      expect((await store.summary(at(STALE_AFTER_MS + 1))).presence.stale).toBe(1);

      // A heartbeat in time keeps it online.
      await store.recordHeartbeat("edge-1", heartbeatPayload("edge-1"), at(STALE_AFTER_MS - 1000));
      expect((await store.getHost("edge-1", at(STALE_AFTER_MS + 1)))?.presence).toBe("online");

      // A heartbeat after a silence: stale then online, both in the history.
      const late = STALE_AFTER_MS - 1000 + STALE_AFTER_MS + 5000;
      await store.recordHeartbeat("edge-1", heartbeatPayload("edge-1"), at(late));
      const host = await store.getHost("edge-1", at(late));
      expect(host?.presence).toBe("online");
      expect(host?.history.slice(0, 2).map((h) => [h.from, h.to, h.at])).toEqual([
        ["stale", "online", at(late).toISOString()],
        ["online", "stale", at(2 * STALE_AFTER_MS - 1000).toISOString()],
      ]);
    });

    it("ignores a heartbeat of an older session; one of a newer session means online", async () => {
      const store = await fresh();
      await store.recordStatus("edge-1", statusPayload("edge-1", { session: 5, state: "lost" }), at(0));
      await store.recordHeartbeat("edge-1", heartbeatPayload("edge-1", { session: 4 }), at(1000));
      expect((await store.getHost("edge-1", at(1000)))?.presence).toBe("lost");
      await store.recordHeartbeat("edge-1", heartbeatPayload("edge-1", { session: 6 }), at(2000));
      expect(await store.getHost("edge-1", at(2000))).toMatchObject({ presence: "online", session: 6 });
    });

    it("takes the sync state, commit, last run and drift from the last report", async () => {
      const store = await fresh();
      await store.recordStatus("edge-1", statusPayload("edge-1"), at(0));
      expect((await store.getHost("edge-1", at(0)))?.sync).toBe("never-reported");
      const drift = [{ resource: "file:/etc/motd", field: "content", desired: "a", actual: "b" }];
      await store.recordReport(
        "edge-1",
        runReport("edge-1", 1, { sync: "drifted", result: "changes", drift }),
        at(1000),
      );
      await store.recordReport(
        "edge-1",
        runReport("edge-1", 3, { sync: "failed", commit: "bbb", result: "failed" }),
        at(2000),
      );
      // seq 2 arrives late (a gap filled): stored, but the host's state stays that of seq 3.
      await store.recordReport("edge-1", runReport("edge-1", 2, { sync: "in-sync" }), at(3000));
      const host = await store.getHost("edge-1", at(3000));
      expect(host).toMatchObject({
        sync: "failed",
        commit: "bbb",
        lastRun: { runId: "run-3", seq: 3, result: "failed" },
      });
      expect(host?.drift).toEqual([]);
      expect(host?.history.filter((h) => h.field === "sync").map((h) => [h.from, h.to])).toEqual([
        ["drifted", "failed"],
        ["never-reported", "drifted"],
      ]);
      await store.recordReport("edge-1", runReport("edge-1", 4, { sync: "drifted", drift }), at(4000));
      expect((await store.getHost("edge-1", at(4000)))?.drift).toEqual(drift);
    });

    it("stores a report once by (host, runId) and acknowledges it every time", async () => {
      const store = await fresh();
      expect(await store.recordReport("edge-1", runReport("edge-1", 7), at(0))).toEqual({
        duplicate: false,
        ackUpTo: 7,
      });
      expect(await store.recordReport("edge-1", runReport("edge-1", 7), at(1000))).toEqual({
        duplicate: true,
        ackUpTo: 7,
      });
      // Another host may use the same run id.
      expect(await store.recordReport("edge-2", runReport("edge-2", 7), at(0))).toEqual({
        duplicate: false,
        ackUpTo: 7,
      });
      expect(await store.listRuns("edge-1", { limit: 10 })).toHaveLength(1);
    });

    it("acknowledges up to the highest seq below which every report is stored", async () => {
      const store = await fresh();
      const ack = async (report: Parameters<FleetStore["recordReport"]>[1]) =>
        (await store.recordReport("edge-1", report, at(0))).ackUpTo;
      expect(await ack(runReport("edge-1", 1))).toBe(1);
      expect(await ack(runReport("edge-1", 2))).toBe(2);
      // 3 lost on the way: 4 and 5 are stored but not acknowledged past 2.
      expect(await ack(runReport("edge-1", 4))).toBe(2);
      expect(await ack(runReport("edge-1", 5))).toBe(2);
      // The agent sends again from 3: everything up to 5 is now stored.
      expect(await ack(runReport("edge-1", 3))).toBe(5);
      expect(await ack(runReport("edge-1", 4))).toBe(5);
      // A summary folds 6..40; then 41.
      expect(await ack(summaryReport("edge-1", 6, 40))).toBe(40);
      expect(await ack(runReport("edge-1", 41))).toBe(41);
      // A summary beyond a gap waits for it too.
      expect(await ack(summaryReport("edge-1", 50, 60))).toBe(41);
      expect(await ack(summaryReport("edge-1", 42, 49))).toBe(60);
    });

    it("lists runs newest first, pages with beforeSeq, and shows folds", async () => {
      const store = await fresh();
      await store.recordReport("edge-1", summaryReport("edge-1", 1, 9), at(0));
      for (const seq of [10, 11]) await store.recordReport("edge-1", runReport("edge-1", seq), at(seq));
      await store.recordReport("edge-1", runReport("edge-1", 12, { source: "offline" }), at(12));
      const runs = await store.listRuns("edge-1", { limit: 2 });
      expect(runs.map((r) => r.seq)).toEqual([12, 11]);
      expect(runs[0]).toMatchObject({
        runId: "run-12",
        kind: "run",
        mode: "apply",
        result: "in-sync",
        commit: "c0ffee",
        source: "offline",
      });
      expect(runs[1]?.source).toBeUndefined();
      const older = await store.listRuns("edge-1", { limit: 10, beforeSeq: 11 });
      expect(older.map((r) => r.seq)).toEqual([10, 9]);
      expect(older[1]).toMatchObject({ kind: "summary", fold: { fromSeq: 1, count: 9, results: { "in-sync": 9 } } });
      expect(await store.listRuns("nobody", { limit: 10 })).toEqual([]);
    });

    it("keeps only the newest runs of each host", async () => {
      const store = await fresh({ runsPerHost: 3 });
      for (let seq = 1; seq <= 6; seq++) await store.recordReport("edge-1", runReport("edge-1", seq), at(seq));
      await store.recordReport("edge-2", runReport("edge-2", 1), at(0));
      expect((await store.listRuns("edge-1", { limit: 100 })).map((r) => r.seq)).toEqual([6, 5, 4]);
      expect(await store.listRuns("edge-2", { limit: 100 })).toHaveLength(1);
    });

    it("stores facts", async () => {
      const store = await fresh();
      await store.recordFacts("edge-1", factsPayload("edge-1", { os: { arch: "arm64" } }), at(0));
      expect((await store.getHost("edge-1", at(0)))?.facts).toEqual({ os: { arch: "arm64" } });
      expect(await store.getHost("nobody", at(0))).toBeNull();
    });

    it("filters hosts by label, state and commit, and sums up the fleet", async () => {
      const store = await fresh();
      await store.addCredential("a", "h", { site: "lyon" });
      await store.recordStatus("a", statusPayload("a", { labels: { role: "gw", site: "paris" } }), at(0));
      await store.recordReport("a", runReport("a", 1, { commit: "abc111", sync: "drifted" }), at(0));
      await store.recordStatus("b", statusPayload("b", { state: "offline", labels: { role: "gw" } }), at(0));
      await store.recordReport("b", runReport("b", 1, { commit: "abc222" }), at(0));
      await store.recordStatus("c", statusPayload("c", { labels: { role: "db" } }), at(0));
      const ids = async (filter: Parameters<FleetStore["listHosts"]>[0]) =>
        (await store.listHosts(filter, at(1000))).map((h) => h.id);
      expect(await ids({})).toEqual(["a", "b", "c"]);
      // The label given with `hosts add` wins over the agent's own.
      expect(await ids({ labels: { site: "lyon" } })).toEqual(["a"]);
      expect(await ids({ labels: { role: "gw" } })).toEqual(["a", "b"]);
      expect(await ids({ labels: { role: "gw", site: "lyon" } })).toEqual(["a"]);
      expect(await ids({ state: "drifted" })).toEqual(["a"]);
      expect(await ids({ state: "offline" })).toEqual(["b"]);
      expect(await ids({ state: "never-reported" })).toEqual(["c"]);
      expect(await ids({ commit: "abc2" })).toEqual(["b"]);
      expect(await ids({ name: "B" })).toEqual(["b"]);
      expect(await ids({ name: "x" })).toEqual([]);
      expect(await store.summary(at(1000))).toEqual({
        hosts: 3,
        presence: { online: 2, stale: 0, offline: 1, lost: 0, unknown: 0 },
        sync: { "in-sync": 1, drifted: 1, failed: 0, "never-reported": 1 },
        commits: { abc111: 1, abc222: 1, c0ffee: 1 },
        // Reported together: the last one stored is the newest seen.
        head: { commit: "abc222", ref: null, at: at(0).toISOString(), from: "seen" },
        labels: { role: { gw: 2, db: 1 }, site: { lyon: 1 } },
      });
    });

    it("takes the fleet's head from the last push, else from the commit first reported last", async () => {
      const store = await fresh();
      expect((await store.summary(at(0))).head).toBeNull();
      await store.recordReport("a", runReport("a", 1, { commit: "aaa111" }), at(0));
      await store.recordReport("a", runReport("a", 2, { commit: "bbb222" }), at(1000));
      // An old commit reported again later does not become the head.
      await store.recordReport("b", runReport("b", 1, { commit: "aaa111" }), at(2000));
      expect((await store.summary(at(3000))).head).toEqual({
        commit: "bbb222",
        ref: null,
        at: at(1000).toISOString(),
        from: "seen",
      });
      await store.recordPush({ commit: "CCC333", ref: "main" }, at(4000));
      await store.recordReport("b", runReport("b", 2, { commit: "ddd444" }), at(5000));
      expect((await store.summary(at(6000))).head).toEqual({
        commit: "ccc333",
        ref: "main",
        at: at(4000).toISOString(),
        from: "push",
      });
    });

    it("remembers webhook deliveries", async () => {
      const store = await fresh();
      expect(await store.markDelivery("d-1", at(0))).toBe(true);
      expect(await store.markDelivery("d-1", at(1000))).toBe(false);
      expect(await store.markDelivery("d-2", at(1000))).toBe(true);
    });

    it("commits writes made together, one failing write failing alone", async () => {
      const store = await fresh();
      await store.addCredential("edge-1", "h");
      const writes = [
        store.recordReport("edge-1", runReport("edge-1", 1), at(0)),
        store.addCredential("edge-1", "again"),
        store.recordReport("edge-1", runReport("edge-1", 2), at(0)),
      ];
      const outcomes = await Promise.allSettled(writes);
      expect(outcomes.map((o) => o.status)).toEqual(["fulfilled", "rejected", "fulfilled"]);
      expect((await store.listRuns("edge-1", { limit: 10 })).map((r) => r.seq)).toEqual([2, 1]);
    });
  });
}
