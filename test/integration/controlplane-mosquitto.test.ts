/**
 * The control plane against a real Mosquitto (its own instance per file, configured with the
 * shipped docs/mosquitto/driftless.acl): the ACL keeps hosts on their own topics, the ingest
 * checks the rest, and the control plane's persistent session keeps what arrives while it is away.
 */
import { spawn, spawnSync } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import type { MqttClient } from "mqtt";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { silentLogger } from "../../agent/src/log.js";
import { ExternalBroker } from "../../controlplane/src/broker/external.js";
import { createIngest, type Ingest } from "../../controlplane/src/ingest/ingest.js";
import { SqliteFleetStore } from "../../controlplane/src/store/sqlite.js";
import { hostTopic } from "../../protocol/topics.js";
import { haveMosquitto, type Mosquitto, startMosquitto } from "../support/mosquitto.js";
import { collect, connectHost, waitFor } from "../support/mqtt.js";
import { runReport, statusPayload } from "../support/payloads.js";

const USERS = { driftlessctl: "cp-secret-0123456789", "edge-1": "pw-edge-1-0123", "edge-2": "pw-edge-2-0123" };

describe.skipIf(!haveMosquitto)("control plane with Mosquitto", () => {
  let mosquitto: Mosquitto;
  let dir: string;
  let store: SqliteFleetStore;
  let broker: ExternalBroker;
  let ingest: Ingest;
  const clients: MqttClient[] = [];

  const startControlPlane = async (shared = false) => {
    broker = new ExternalBroker({
      url: mosquitto.url,
      clientId: "driftlessctl-test",
      username: "driftlessctl",
      password: USERS.driftlessctl,
      shared,
      log: silentLogger,
    });
    ingest = createIngest({ store, broker, log: silentLogger, now: () => new Date() });
    broker.onMessage(ingest.handle);
    await broker.start();
  };

  beforeAll(async () => {
    mosquitto = await startMosquitto({
      users: USERS,
      aclFile: path.resolve("docs/mosquitto/driftless.acl"),
      extra: ["max_packet_size 1114112"],
    });
    dir = mkdtempSync(path.join(tmpdir(), "driftless-cp-mosq-"));
    store = SqliteFleetStore.open(dir);
    await startControlPlane();
  });

  afterAll(async () => {
    await broker?.close();
    await store?.close();
    await mosquitto?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  afterEach(async () => {
    for (const client of clients.splice(0)) await client.endAsync(true).catch(() => {});
  });

  const host = async (name: "edge-1" | "edge-2", session = 1) => {
    const client = await connectHost({ port: mosquitto.port, host: name, password: USERS[name], session });
    clients.push(client);
    return client;
  };
  const publish = (client: MqttClient, topic: string, payload: unknown) =>
    client.publishAsync(
      topic,
      typeof payload === "string" || Buffer.isBuffer(payload) ? payload : JSON.stringify(payload),
      {
        qos: 1,
      },
    );
  let next = 100;
  const reportAcked = async (client: MqttClient, acks: unknown[], name = "edge-1") => {
    const seq = next++;
    await publish(client, hostTopic(name, "report"), runReport(name, seq, { runId: `r-${seq}` }));
    await waitFor(`ack ${seq}`, () => acks.some((a) => (a as { upTo: number }).upTo >= seq));
    return seq;
  };

  it("stores a report and acknowledges it through the broker", async () => {
    const client = await host("edge-1");
    const acks = await collect(client, hostTopic("edge-1", "ack"));
    const seq = await reportAcked(client, acks);
    expect(acks).toEqual([{ v: 1, host: "edge-1", upTo: seq }]);
    expect((await store.listRuns("edge-1", { limit: 5 }))[0]?.runId).toBe(`r-${seq}`);
  });

  it("lets no host publish on another host's topics or on cmd and ack", async () => {
    const victim = await host("edge-2");
    const commands = await collect(victim, hostTopic("edge-2", "cmd"));
    const client = await host("edge-1");
    const acks = await collect(client, hostTopic("edge-1", "ack"));
    await publish(client, hostTopic("edge-2", "report"), runReport("edge-2", 1, { runId: "forged" }));
    await publish(client, hostTopic("edge-2", "status"), statusPayload("edge-2", { state: "lost" }));
    await publish(client, hostTopic("edge-2", "cmd"), { v: 1, host: "edge-2", cmd: "converge" });
    await publish(client, hostTopic("edge-1", "ack"), { v: 1, host: "edge-1", upTo: 999999 });
    // Messages of one connection are handled in order: once a later report is acked, the
    // earlier ones were dropped by the broker, not merely late.
    const seq = await reportAcked(client, acks);
    expect(acks.map((a) => (a as { upTo: number }).upTo)).toEqual([seq]);
    expect(await store.getHost("edge-2", new Date())).toBeNull();
    await broker.publish(hostTopic("edge-2", "cmd"), JSON.stringify({ v: 1, host: "edge-2", cmd: "refresh" }), {
      qos: 1,
    });
    await waitFor("our command", () => commands.length === 1);
    expect(commands).toEqual([{ v: 1, host: "edge-2", cmd: "refresh" }]);
    // Nor read another host's acks (Mosquitto 2 may grant the subscription, and delivers nothing).
    const spied = await collect(client, hostTopic("edge-2", "ack")).catch(() => []);
    await broker.publish(hostTopic("edge-2", "ack"), JSON.stringify({ v: 1, host: "edge-2", upTo: 1 }), { qos: 1 });
    await reportAcked(client, acks);
    expect(spied).toEqual([]);
  });

  it("drops malformed and misaddressed payloads, counts them, and goes on", async () => {
    const client = await host("edge-1");
    const acks = await collect(client, hostTopic("edge-1", "ack"));
    const before = { ...ingest.stats.dropped };
    await publish(client, hostTopic("edge-1", "report"), "{nope");
    await publish(client, hostTopic("edge-1", "report"), { v: 1, host: "edge-1" });
    // Within its own topic, a payload claiming to be another host.
    await publish(client, hostTopic("edge-1", "report"), runReport("edge-2", 1, { runId: "claims-edge-2" }));
    await reportAcked(client, acks);
    expect(ingest.stats.dropped).toMatchObject({
      json: before.json + 1,
      schema: before.schema + 1,
      identity: before.identity + 1,
    });
    expect(await store.listRuns("edge-2", { limit: 10 })).toEqual([]);
  });

  it("refuses a 10 MB packet at the broker (max_packet_size), and goes on", async () => {
    const client = await host("edge-1");
    const closed = new Promise<void>((resolve) => client.once("close", () => resolve()));
    client.publish(hostTopic("edge-1", "report"), Buffer.alloc(10 * 1024 * 1024, 0x20), { qos: 1 });
    await closed;
    const again = await host("edge-1");
    await reportAcked(again, await collect(again, hostTopic("edge-1", "ack")));
  });

  it("sees a host's will as lost, and ignores it when it is from an older session", async () => {
    const first = await host("edge-1", 50);
    await publish(first, hostTopic("edge-1", "status"), statusPayload("edge-1", { session: 50 }));
    await waitFor("online", async () => (await store.getHost("edge-1", new Date()))?.session === 50);
    first.stream.destroy();
    await waitFor("lost", async () => (await store.getHost("edge-1", new Date()))?.presence === "lost");
    const second = await host("edge-1", 51);
    await publish(second, hostTopic("edge-1", "status"), statusPayload("edge-1", { session: 51 }));
    await waitFor("online", async () => (await store.getHost("edge-1", new Date()))?.presence === "online");
    const ignored = ingest.stats.statusIgnored;
    await publish(second, hostTopic("edge-1", "status"), { v: 1, host: "edge-1", session: 50, state: "lost" });
    await waitFor("ignored", () => ingest.stats.statusIgnored === ignored + 1);
    expect((await store.getHost("edge-1", new Date()))?.presence).toBe("online");
  });

  it("gets what hosts published while it was stopped (persistent session)", async () => {
    await broker.close();
    const client = await host("edge-1");
    await publish(client, hostTopic("edge-1", "report"), runReport("edge-1", next++, { runId: "while-away" }));
    await startControlPlane();
    await waitFor("the report sent while away", async () =>
      (await store.listRuns("edge-1", { limit: 50 })).some((r) => r.runId === "while-away"),
    );
    await reportAcked(client, await collect(client, hostTopic("edge-1", "ack")));
  });

  it("as a replica (shared): reads reports through $share, and the retained status at start", async () => {
    await broker.close();
    const client = await host("edge-2", 7);
    const status = statusPayload("edge-2", { session: 7, version: "9.9.9" });
    await client.publishAsync(hostTopic("edge-2", "status"), JSON.stringify(status), { qos: 1, retain: true });
    await startControlPlane(true);
    // Retained status: a plain subscription, delivered at subscribe (a $share one would not get it).
    await waitFor("the retained status", async () => (await store.getHost("edge-2", new Date()))?.version === "9.9.9");
    await reportAcked(client, await collect(client, hostTopic("edge-2", "ack")), "edge-2");
  });

  it("runs as `driftlessctl serve --broker` with its password in a file, and says so when refused", async () => {
    await broker.close(); // only the serve process consumes now
    const data = path.join(dir, "serve-data");
    const passwordFile = path.join(dir, "cp-password");
    writeFileSync(passwordFile, `${USERS.driftlessctl}\n`, { mode: 0o600 });
    const cli = path.resolve("bin/driftlessctl.js");
    const args = ["serve", "--data", data, "--http", "127.0.0.1:0", "--broker", mosquitto.url];
    const child = spawn(
      process.execPath,
      [cli, ...args, "--broker-username", "driftlessctl", "--broker-password-file", passwordFile],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    let output = "";
    child.stderr?.on("data", (chunk) => {
      output += chunk;
    });
    try {
      await waitFor("serve connected", () => output.includes("connected to the broker"));
      const client = await host("edge-1");
      const seq = await reportAcked(client, await collect(client, hostTopic("edge-1", "ack")));
      const served = SqliteFleetStore.open(data);
      try {
        expect((await served.listRuns("edge-1", { limit: 1 }))[0]?.seq).toBe(seq);
      } finally {
        await served.close();
      }
    } finally {
      const exited = new Promise((resolve) => child.once("exit", resolve));
      child.kill("SIGTERM");
      await exited;
    }
    writeFileSync(passwordFile, "wrong\n");
    const refused = spawnSync(
      process.execPath,
      [cli, ...args, "--broker-username", "driftlessctl", "--broker-password-file", passwordFile],
      { encoding: "utf8" },
    );
    expect(refused.status).toBe(1);
    expect(refused.stderr).toMatch(/cannot use the broker mqtt:\/\/127\.0\.0\.1:\d+.*(Not authorized|Bad username)/i);
  });
});
