/**
 * `driftlessctl hosts add|remove --database postgres://` (the built CLI) on a PostgreSQL database
 * of this file's own, with two `serve` processes on that database, each with its embedded broker:
 * a host added there is accepted by both with its printed password (a wrong one refused), and a
 * removal closes its connections on both. `DRIFTLESS_DATABASE` stands for the flag. Every wait is
 * for a condition.
 */
import { execFile } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import type { MqttClient } from "mqtt";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { PgFleetStore } from "../../controlplane/src/store/pg.js";
import { hostTopic } from "../../protocol/topics.js";
import { CTL, ServeProcesses } from "../support/ctl-serve.js";
import { collect, connectHost, waitFor } from "../support/mqtt.js";
import { runReport, statusPayload } from "../support/payloads.js";
import { freePort } from "../support/ports.js";
import { createDatabase, PG_ADMIN_URL, postgresUnreachable, type TestDatabase } from "../support/postgres.js";

const unreachable = await postgresUnreachable();
if (unreachable) console.warn(`PostgreSQL at ${PG_ADMIN_URL} unreachable (${unreachable}): cp-hosts-postgres skipped`);

/** The environment without the caller's DRIFTLESS_DATABASE, plus `extra`. */
function env(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const { DRIFTLESS_DATABASE: _ignored, ...rest } = process.env;
  return { ...rest, NO_COLOR: "1", ...extra };
}

function ctl(args: string[], extra: Record<string, string> = {}) {
  return new Promise<{ exitCode: number; stdout: string; stderr: string }>((resolve) => {
    execFile(process.execPath, [CTL, ...args], { env: env(extra), encoding: "utf8" }, (error, stdout, stderr) => {
      const code = error ? (typeof error.code === "number" ? error.code : -1) : 0;
      resolve({ exitCode: code, stdout, stderr });
    });
  });
}

async function addHost(host: string, args: string[], extra: Record<string, string> = {}): Promise<string> {
  const added = await ctl(["hosts", "add", host, "--json", ...args], extra);
  expect(added.exitCode, added.stderr).toBe(0);
  const credentials = JSON.parse(added.stdout) as { host: string; username: string; password: string };
  expect(credentials).toMatchObject({ host, username: host });
  return credentials.password;
}

let dir: string;
const processes = new ServeProcesses();

beforeAll(() => {
  dir = mkdtempSync(path.join(tmpdir(), "driftless-hosts-pg-"));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));
afterEach(() => processes.stop());

/** `serve` with the embedded broker on a free port; `database` as a flag, or in DRIFTLESS_DATABASE. */
async function serve(name: string, database: { flag: string } | { env: string }): Promise<number> {
  const port = await freePort();
  const args = ["--data", path.join(dir, name), "--mqtt", `127.0.0.1:${port}`, "--http", "127.0.0.1:0"];
  if ("flag" in database) args.push("--database", database.flag);
  await processes.serve(args, env("env" in database ? { DRIFTLESS_DATABASE: database.env } : {}));
  return port;
}

const connect = (port: number, host: string, password: string) => processes.connect({ port, host, password });
const closed = (client: MqttClient) => new Promise<void>((resolve) => client.once("close", () => resolve()));

describe("hosts add and hosts remove: --database", () => {
  it("is in the help of both commands, with DRIFTLESS_DATABASE", async () => {
    for (const command of ["add", "remove"]) {
      const help = await ctl(["hosts", command, "--help"]);
      expect(help.exitCode).toBe(0);
      expect(help.stdout).toMatch(/--database URL +the fleet store, as serve's: sqlite:PATH, or postgres:\/\//);
      expect(help.stdout).toContain("env DRIFTLESS_DATABASE");
    }
  });

  it("refuses a database that is neither SQLite nor PostgreSQL, naming where it came from", async () => {
    const data = path.join(dir, "refused");
    expect(await ctl(["hosts", "add", "edge-1", "--data", data, "--database", "mysql://x/y"])).toMatchObject({
      exitCode: 1,
      stderr: expect.stringContaining("--database mysql://x/y: expected sqlite:PATH, postgres://"),
    });
    expect(
      await ctl(["hosts", "remove", "edge-1", "--data", data], { DRIFTLESS_DATABASE: "mysql://x/y" }),
    ).toMatchObject({
      exitCode: 1,
      stderr: expect.stringContaining("DRIFTLESS_DATABASE mysql://x/y: expected sqlite:PATH"),
    });
    expect(await ctl(["serve", "--data", data], { DRIFTLESS_DATABASE: "mysql://x/y" })).toMatchObject({
      exitCode: 1,
      stderr: expect.stringContaining("DRIFTLESS_DATABASE mysql://x/y: expected sqlite:PATH"),
    });
    // Nothing was written where --data points.
    expect(existsSync(path.join(data, "fleet.db"))).toBe(false);
  });

  it("takes a sqlite:PATH database, the file serve would open", async () => {
    const file = path.join(dir, "elsewhere.db");
    await addHost("edge-1", ["--data", path.join(dir, "unused"), "--database", `sqlite:${file}`]);
    expect(existsSync(file)).toBe(true);
    expect(existsSync(path.join(dir, "unused", "fleet.db"))).toBe(false);
    expect(await ctl(["hosts", "remove", "edge-1"], { DRIFTLESS_DATABASE: `sqlite:${file}` })).toMatchObject({
      exitCode: 0,
    });
  });
});

describe.skipIf(unreachable !== null)("hosts add and hosts remove on PostgreSQL, two serves", () => {
  let database: TestDatabase;
  beforeAll(async () => {
    database = await createDatabase();
  });
  afterAll(async () => {
    await database?.drop();
  });

  it("adds hosts both serves accept, refuses a wrong password, and removes a host from both at once", async () => {
    const ctlData = path.join(dir, "ctl-data");
    const password1 = await addHost("edge-1", ["--data", ctlData, "--database", database.url, "--label", "site=lyon"]);
    // The credentials are in PostgreSQL, nothing in the data directory.
    expect(existsSync(path.join(ctlData, "fleet.db"))).toBe(false);

    const portA = await serve("a", { flag: database.url });
    const portB = await serve("b", { env: database.url });

    await expect(connectHost({ port: portA, host: "edge-1", password: `${password1}x` })).rejects.toThrow();
    const onA = await connect(portA, "edge-1", password1);
    const acks = await collect(onA, hostTopic("edge-1", "ack"));
    await onA.publishAsync(hostTopic("edge-1", "status"), JSON.stringify(statusPayload("edge-1")), { qos: 1 });
    await onA.publishAsync(hostTopic("edge-1", "report"), JSON.stringify(runReport("edge-1", 1)), { qos: 1 });
    await waitFor("the ack", () => acks.length === 1);
    expect(acks).toEqual([{ v: 1, host: "edge-1", upTo: 1 }]);

    // Added while both serves run, through DRIFTLESS_DATABASE: the other serve accepts it at once.
    const password2 = await addHost("edge-2", [], { DRIFTLESS_DATABASE: database.url });
    await expect(connectHost({ port: portB, host: "edge-2", password: password1 })).rejects.toThrow();
    const edge2 = await connect(portB, "edge-2", password2);
    // Each serve has its own broker: the same host may be connected to both.
    const onB = await connect(portB, "edge-1", password1);

    const store = await PgFleetStore.open(database.url);
    try {
      expect((await store.listRuns("edge-1", { limit: 5 })).map((r) => r.runId)).toEqual(["run-1"]);
      expect(await store.getHost("edge-1", new Date())).toMatchObject({ labels: { site: "lyon" }, sync: "in-sync" });

      const closedA = closed(onA);
      const closedB = closed(onB);
      expect(await ctl(["hosts", "remove", "edge-1", "--database", database.url])).toMatchObject({ exitCode: 0 });
      await Promise.all([closedA, closedB]);
      for (const port of [portA, portB]) {
        await expect(connectHost({ port, host: "edge-1", password: password1, session: 2 })).rejects.toThrow();
      }
      // The other host stays.
      expect(edge2.connected).toBe(true);
      expect(await store.listCredentials()).toEqual(["edge-2"]);
      expect(await store.getHost("edge-1", new Date())).toBeNull();
      expect(await store.listRuns("edge-1", { limit: 5 })).toEqual([]);
    } finally {
      await store.close();
    }
    expect(await ctl(["hosts", "remove", "edge-1", "--json"], { DRIFTLESS_DATABASE: database.url })).toMatchObject({
      exitCode: 3,
      stderr: expect.stringContaining(`no host edge-1 in postgres://`),
    });
  }, 60_000);
});
