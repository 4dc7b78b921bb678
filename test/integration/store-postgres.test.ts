import pg from "pg";
import { afterAll, describe, expect, it, onTestFinished } from "vitest";
import { PG_MIGRATIONS, PgFleetStore } from "../../controlplane/src/store/pg.js";
import { runReport, statusPayload } from "../support/payloads.js";
import { createDatabase, PG_ADMIN_URL, postgresUnreachable, type TestDatabase } from "../support/postgres.js";
import { describeFleetStore } from "../support/store-suite.js";

const unreachable = await postgresUnreachable();
if (unreachable) console.warn(`PostgreSQL at ${PG_ADMIN_URL} unreachable (${unreachable}): store-postgres skipped`);

const databases: TestDatabase[] = [];
const database = async () => {
  const db = await createDatabase();
  databases.push(db);
  return db;
};
afterAll(async () => {
  for (const db of databases.splice(0)) await db.drop();
});

describe.skipIf(unreachable !== null)("postgres", () => {
  // Every store the suite opens is a database of its own: no test sees another's rows.
  describeFleetStore("postgres", async (options) => PgFleetStore.open((await database()).url, options ?? {}));

  describe("PgFleetStore", () => {
    it("migrates once, one replica at a time, and keeps its data across a reopen", async () => {
      const { url } = await database();
      // Replicas starting together: the advisory lock makes one migrate and the others wait.
      const stores = await Promise.all([1, 2, 3].map(() => PgFleetStore.open(url)));
      for (const store of stores) expect(await store.schemaVersion()).toBe(PG_MIGRATIONS.length);
      const [first, second] = stores as [PgFleetStore, PgFleetStore, PgFleetStore];
      await first.addCredential("edge-1", "h");
      await first.recordStatus("edge-1", statusPayload("edge-1"), new Date());
      await first.recordReport("edge-1", runReport("edge-1", 1), new Date());
      // The same report through another replica: stored once, acknowledged.
      expect(await second.recordReport("edge-1", runReport("edge-1", 1), new Date())).toEqual({
        duplicate: true,
        ackUpTo: 1,
      });
      for (const store of stores) await store.close();
      const again = await PgFleetStore.open(url);
      expect(await again.credentialHash("edge-1")).toBe("h");
      expect(await again.listRuns("edge-1", { limit: 5 })).toHaveLength(1);
      expect((await again.getHost("edge-1", new Date()))?.presence).toBe("online");
      await again.close();
    });

    it("stores each report once when replicas write the same reports at the same time", async () => {
      const { url } = await database();
      const [a, b] = await Promise.all([PgFleetStore.open(url), PgFleetStore.open(url)]);
      const hosts = Array.from({ length: 20 }, (_, i) => `edge-${i}`);
      const write = (store: PgFleetStore) =>
        Promise.all(
          hosts.flatMap((host) =>
            [1, 2, 3, 4, 5].map((seq) => store.recordReport(host, runReport(host, seq), new Date())),
          ),
        );
      const [fromA, fromB] = await Promise.all([write(a as PgFleetStore), write(b as PgFleetStore)]);
      const fresh = [...fromA, ...fromB].filter((r) => !r.duplicate);
      expect(fresh).toHaveLength(hosts.length * 5);
      for (const host of hosts) {
        expect((await (a as PgFleetStore).listRuns(host, { limit: 10 })).map((r) => r.seq)).toEqual([5, 4, 3, 2, 1]);
        expect((await (b as PgFleetStore).getHost(host, new Date()))?.lastRun?.seq).toBe(5);
      }
      await a?.close();
      await b?.close();
    });

    it("writes nothing of a host whose row hosts remove deleted between a batch's insert and its lock", async () => {
      const { url } = await database();
      const store = await PgFleetStore.open(url);
      await store.addCredential("edge-1", "h");
      await store.addCredential("edge-gone", "h");
      // The removal, made to land exactly there: a statement trigger on the batch's insert of its
      // hosts deletes edge-gone's row in the batch's own transaction, so the lock finds it gone.
      const admin = new pg.Client({ connectionString: url });
      await admin.connect();
      onTestFinished(async () => {
        await admin.end();
        await store.close();
      });
      await admin.query(`CREATE FUNCTION remove_edge_gone() RETURNS trigger LANGUAGE plpgsql AS $$
          BEGIN DELETE FROM hosts WHERE id = 'edge-gone'; RETURN NULL; END $$;
        CREATE TRIGGER remove_edge_gone AFTER INSERT ON hosts FOR EACH STATEMENT EXECUTE FUNCTION remove_edge_gone();`);
      try {
        const at = new Date();
        // One batch: both hosts' messages are queued in the same turn.
        await Promise.all([
          store.recordStatus("edge-gone", statusPayload("edge-gone", { commit: "90e" }), at),
          store.recordReport("edge-gone", runReport("edge-gone", 1, { commit: "90e" }), at),
          store.recordReport("edge-1", runReport("edge-1", 1), at),
        ]);
      } finally {
        await admin.query("DROP TRIGGER remove_edge_gone ON hosts; DROP FUNCTION remove_edge_gone();");
      }
      const count = async (sql: string) => Number((await admin.query(sql)).rows[0].count);
      expect(await count("SELECT count(*) FROM hosts WHERE id = 'edge-gone'")).toBe(0);
      expect(await count("SELECT count(*) FROM runs WHERE host = 'edge-gone'")).toBe(0);
      expect(await count("SELECT count(*) FROM history WHERE host = 'edge-gone'")).toBe(0);
      expect(await count("SELECT count(*) FROM commits WHERE git_commit = '90e'")).toBe(0);
      // The other host of the batch is written as usual.
      expect((await store.listRuns("edge-1", { limit: 5 })).map((r) => r.runId)).toEqual(["run-1"]);
    });

    it("refuses an unreachable server with a store error", async () => {
      await expect(PgFleetStore.open("postgres://postgres@127.0.0.1:1/none")).rejects.toMatchObject({ code: "ESTORE" });
    });
  });
});
