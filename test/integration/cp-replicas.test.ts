/**
 * `driftlessctl serve --broker --shared --database postgres://` as two replicas (child processes
 * of the built CLI) on a private Mosquitto with the shipped ACL and a PostgreSQL database of this
 * file's own. Simulated agents (real MQTT clients, real credentials, real payloads, resending what
 * is not acknowledged as the agent does) report through both replicas; one replica is frozen with
 * reports in hand and killed with SIGKILL: nothing is lost, nothing stored twice, and every
 * replica's API answers the same. Every wait is for a condition.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { haveMosquitto, type Mosquitto, startMosquitto } from "../support/mosquitto.js";
import { waitFor } from "../support/mqtt.js";
import { createDatabase, PG_ADMIN_URL, postgresUnreachable, type TestDatabase } from "../support/postgres.js";
import { SimAgent } from "../support/sim-agent.js";

const HOSTS = 40;
const REPORTS = 25;
/** Reports each host sends before replica a is frozen. */
const HOLD_AFTER = 6;
const CP_PASSWORD = "cp-secret-0123456789";
const TOKEN = "replica-test-token";
const SECRET = "replica-hook-secret";
const hostName = (i: number) => `edge-${String(i).padStart(2, "0")}`;
const password = (host: string) => `pw-${host}-0123456789`;

const unreachable = await postgresUnreachable();
if (unreachable) console.warn(`PostgreSQL at ${PG_ADMIN_URL} unreachable (${unreachable}): cp-replicas skipped`);

interface Replica {
  name: string;
  child: ChildProcess;
  url: string;
  output: () => string;
}

describe.skipIf(!haveMosquitto || unreachable !== null)("serve replicas on Mosquitto and PostgreSQL", () => {
  let mosquitto: Mosquitto;
  let database: TestDatabase;
  let db: pg.Client;
  let dir: string;
  const replicas: Replica[] = [];
  const agents: SimAgent[] = [];

  const startReplica = async (name: string): Promise<Replica> => {
    const args = [
      path.resolve("bin/driftlessctl.js"),
      "serve",
      ...["--data", path.join(dir, name), "--http", "127.0.0.1:0"],
      ...["--broker", mosquitto.url, "--broker-username", "driftlessctl"],
      ...["--broker-password-file", path.join(dir, "cp-password"), "--shared", "--replica-id", name],
      ...["--database", database.url, "--api-token-file", path.join(dir, "token")],
      ...["--webhook-secret-file", path.join(dir, "hook-secret")],
    ];
    const child = spawn(process.execPath, args, { stdio: ["ignore", "pipe", "pipe"] });
    let output = "";
    child.stdout?.on("data", (chunk) => {
      output += chunk;
    });
    child.stderr?.on("data", (chunk) => {
      output += chunk;
    });
    const url = await waitFor(`replica ${name} serving`, () => {
      if (child.exitCode !== null) throw new Error(`replica ${name} exited ${child.exitCode}: ${output}`);
      return output.includes("connected to the broker") && /control plane: (http:\S+)/.exec(output)?.[1];
    });
    const replica = { name, child, url, output: () => output };
    replicas.push(replica);
    return replica;
  };

  const api = async (replica: Replica, route: string) => {
    const response = await fetch(`${replica.url}/api/v1/${route}`, { headers: { authorization: `Bearer ${TOKEN}` } });
    expect(response.status, route).toBe(200);
    return response.json();
  };
  const storedBy = async (replica: Replica) => {
    const text = await (await fetch(`${replica.url}/metrics`)).text();
    return Number(/^driftless_reports_ingested_total (\d+)/m.exec(text)?.[1] ?? Number.NaN);
  };
  const runsStored = async () => Number((await db.query("SELECT count(*) AS n FROM runs")).rows[0].n);
  const published = () => agents.reduce((sum, agent) => sum + agent.published, 0);

  beforeAll(async () => {
    const hosts = Array.from({ length: HOSTS }, (_, i) => hostName(i));
    const users: Record<string, string> = { driftlessctl: CP_PASSWORD };
    for (const host of hosts) users[host] = password(host);
    mosquitto = await startMosquitto({ users, aclFile: path.resolve("docs/mosquitto/driftless.acl") });
    database = await createDatabase("driftless_replicas");
    db = new pg.Client({ connectionString: database.url });
    await db.connect();
    dir = mkdtempSync(path.join(tmpdir(), "driftless-replicas-"));
    writeFileSync(path.join(dir, "cp-password"), `${CP_PASSWORD}\n`, { mode: 0o600 });
    writeFileSync(path.join(dir, "token"), `${TOKEN}\n`, { mode: 0o600 });
    writeFileSync(path.join(dir, "hook-secret"), `${SECRET}\n`, { mode: 0o600 });
    for (const host of hosts) {
      // Each holds after a quarter of its reports, so replica a is frozen with reports still to come.
      agents.push(
        new SimAgent({ url: mosquitto.url, host, password: password(host), reports: REPORTS, holdAfter: HOLD_AFTER }),
      );
    }
  }, 60_000);

  afterAll(async () => {
    for (const agent of agents) await agent.close().catch(() => {});
    for (const { child } of replicas) {
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((resolve) => child.once("exit", resolve));
        child.kill("SIGKILL");
        await exited;
      }
    }
    await db?.end();
    await database?.drop();
    await mosquitto?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it("shares the ingest, loses nothing when one is killed, and answers the same on every replica", async () => {
    const a = await startReplica("a");
    const b = await startReplica("b");
    for (const agent of agents) await agent.connect();
    const done = Promise.all(agents.map((agent) => agent.start()));

    // Both replicas store reports (the broker splits the shared subscription between them).
    await waitFor("reports stored by both replicas", async () => (await storedBy(a)) > 0 && (await storedBy(b)) > 0);
    await waitFor("the first quarter acknowledged", () => agents.every((agent) => agent.ackedUpTo === HOLD_AFTER));
    expect(await runsStored()).toBe(HOSTS * HOLD_AFTER);

    // Replica a freezes, then the agents go on: the broker keeps handing a its share, which it
    // never stores.
    a.child.kill("SIGSTOP");
    const publishedAtStop = published();
    const storedByB = await storedBy(b);
    for (const agent of agents) agent.release();
    await waitFor(
      "reports sent and stored (by b) while a is frozen",
      async () => published() >= publishedAtStop + HOSTS && (await storedBy(b)) > storedByB,
    );
    const killed = new Promise((resolve) => a.child.once("exit", resolve));
    a.child.kill("SIGKILL");
    await killed;

    // The agents send again what was not acknowledged; b stores it.
    await waitFor("every report acknowledged", () => agents.every((agent) => agent.ackedUpTo === REPORTS), 120_000);
    await done;
    expect(published()).toBeGreaterThan(HOSTS * REPORTS); // some were sent again: a had them
    const perHost = await db.query(
      "SELECT host, count(*) AS n, count(DISTINCT seq) AS seqs, min(seq) AS lo, max(seq) AS hi FROM runs GROUP BY host",
    );
    expect(perHost.rows).toHaveLength(HOSTS);
    for (const row of perHost.rows) {
      expect({
        host: row.host,
        n: Number(row.n),
        seqs: Number(row.seqs),
        lo: Number(row.lo),
        hi: Number(row.hi),
      }).toEqual({
        host: row.host,
        n: REPORTS,
        seqs: REPORTS,
        lo: 1,
        hi: REPORTS,
      });
    }

    // A new replica a: cold start on the retained statuses; its API and b's answer the same.
    const again = await startReplica("a");
    const fromB = (await api(b, "hosts")) as { hosts: Array<{ id: string; presence: string; lastRun: unknown }> };
    expect(fromB.hosts).toHaveLength(HOSTS);
    for (const host of fromB.hosts) {
      expect(host).toMatchObject({ presence: "online", lastRun: { seq: REPORTS }, labels: { sim: "yes" } });
    }
    expect(await api(again, "hosts")).toEqual(fromB);
    expect(await api(again, "summary")).toEqual(await api(b, "summary"));
    expect(await api(again, `hosts/${hostName(7)}`)).toEqual(await api(b, `hosts/${hostName(7)}`));

    // A webhook delivered to both (a load balancer retrying on the other replica) acts once.
    const body = JSON.stringify({ ref: "refs/heads/main", before: "0".repeat(40), after: "5".repeat(40), commits: [] });
    const hook = (replica: Replica) =>
      fetch(`${replica.url}/hooks/git`, {
        method: "POST",
        headers: {
          "content-type": "application/json",
          "x-github-event": "push",
          "x-github-delivery": "replicas-1",
          "x-hub-signature-256": `sha256=${createHmac("sha256", SECRET).update(body).digest("hex")}`,
        },
        body,
      });
    expect((await hook(again)).status).toBe(202);
    const second = await hook(b);
    expect(await second.json()).toEqual({ duplicate: true });
  }, 180_000);
});
