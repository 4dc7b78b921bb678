/**
 * The control plane's data path on real parts: the embedded Aedes broker on a real port, real
 * MQTT.js clients publishing protocol payloads as hosts, the ingest, a real SQLite store.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import type { MqttClient } from "mqtt";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { silentLogger } from "../../agent/src/log.js";
import { hashPassword } from "../../controlplane/src/auth/password.js";
import { EmbeddedBroker } from "../../controlplane/src/broker/embedded.js";
import { createIngest, type Ingest } from "../../controlplane/src/ingest/ingest.js";
import { SqliteFleetStore } from "../../controlplane/src/store/sqlite.js";
import { FLEET_CMD_TOPIC, hostTopic, MAX_PAYLOAD_BYTES } from "../../protocol/topics.js";
import { collect, connectHost, waitFor } from "../support/mqtt.js";
import { runReport, statusPayload } from "../support/payloads.js";

const PASSWORD = { "edge-1": "pw-edge-1-0123456789", "edge-2": "pw-edge-2-0123456789" };

let dir: string;
let store: SqliteFleetStore;
let broker: EmbeddedBroker;
let ingest: Ingest;
const clients: MqttClient[] = [];

beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), "driftless-cp-"));
  store = SqliteFleetStore.open(dir);
  for (const [host, password] of Object.entries(PASSWORD))
    await store.addCredential(host, await hashPassword(password));
  broker = new EmbeddedBroker({ host: "127.0.0.1", port: 0, credentials: store, log: silentLogger, now: Date.now });
  ingest = createIngest({ store, broker, log: silentLogger, now: () => new Date() });
  broker.onMessage(ingest.handle);
  await broker.start();
});

afterAll(async () => {
  await broker.close();
  await store.close();
  rmSync(dir, { recursive: true, force: true });
});

afterEach(async () => {
  for (const client of clients.splice(0)) await client.endAsync(true).catch(() => {});
});

async function host(name: "edge-1" | "edge-2", options: { session?: number; will?: null } = {}) {
  const client = await connectHost({ port: broker.port, host: name, password: PASSWORD[name], ...options });
  clients.push(client);
  return client;
}

const publish = (client: MqttClient, topic: string, payload: unknown, qos: 0 | 1 = 1) =>
  client.publishAsync(
    topic,
    typeof payload === "string" || Buffer.isBuffer(payload) ? payload : JSON.stringify(payload),
    {
      qos,
    },
  );

/** A report from edge-1 with a fresh run id: stored and acknowledged. */
async function expectReportAcked(client: MqttClient, acks: unknown[], seq: number) {
  await publish(
    client,
    hostTopic("edge-1", "report"),
    runReport("edge-1", seq, { runId: `ok-${seq}-${Math.random()}` }),
  );
  await waitFor(`ack of seq ${seq}`, () => acks.some((a) => (a as { upTo: number }).upTo >= seq));
}

describe("embedded broker and ingest", () => {
  it("stores a host's report and acknowledges it after the store committed", async () => {
    const client = await host("edge-1");
    const acks = await collect(client, hostTopic("edge-1", "ack"));
    await publish(client, hostTopic("edge-1", "status"), statusPayload("edge-1"));
    await publish(client, hostTopic("edge-1", "report"), runReport("edge-1", 1, { sync: "drifted" }));
    await waitFor("the ack", () => acks.length === 1);
    expect(acks[0]).toEqual({ v: 1, host: "edge-1", upTo: 1 });
    const runs = await store.listRuns("edge-1", { limit: 10 });
    expect(runs.map((r) => r.runId)).toContain("run-1");
    expect(await store.getHost("edge-1", new Date())).toMatchObject({ presence: "online", sync: "drifted" });
  });

  it("stores a report sent twice once, and acknowledges it both times", async () => {
    const client = await host("edge-1");
    const acks = await collect(client, hostTopic("edge-1", "ack"));
    const before = ingest.stats.reportsDuplicate;
    const report = runReport("edge-1", 2, { runId: "twice" });
    await publish(client, hostTopic("edge-1", "report"), report);
    await waitFor("first ack", () => acks.length === 1);
    await publish(client, hostTopic("edge-1", "report"), report);
    await waitFor("second ack", () => acks.length === 2);
    expect(acks).toEqual([
      { v: 1, host: "edge-1", upTo: 2 },
      { v: 1, host: "edge-1", upTo: 2 },
    ]);
    expect((await store.listRuns("edge-1", { limit: 100 })).filter((r) => r.runId === "twice")).toHaveLength(1);
    expect(ingest.stats.reportsDuplicate).toBe(before + 1);
  });

  it("refuses a wrong password, an unknown host, a client id that is not the username, a will elsewhere", async () => {
    const before = broker.refused.auth;
    await expect(connectHost({ port: broker.port, host: "edge-1", password: "wrong" })).rejects.toThrow();
    await expect(connectHost({ port: broker.port, host: "nobody", password: "x" })).rejects.toThrow();
    await expect(
      connectHost({ port: broker.port, host: "edge-1", password: PASSWORD["edge-1"], clientId: "edge-2" }),
    ).rejects.toThrow();
    await expect(
      connectHost({
        port: broker.port,
        host: "edge-1",
        password: PASSWORD["edge-1"],
        will: { topic: hostTopic("edge-2", "status"), payload: "{}" },
      }),
    ).rejects.toThrow();
    expect(broker.refused.auth).toBe(before + 4);
    expect(broker.refused.will).toBeGreaterThanOrEqual(1);
  });

  it("refuses a host publishing as another host, and goes on", async () => {
    const victim = await host("edge-2");
    const before = broker.refused.publish;
    const rogue = await host("edge-1");
    const closed = new Promise<void>((resolve) => rogue.once("close", () => resolve()));
    rogue.publish(hostTopic("edge-2", "report"), JSON.stringify(runReport("edge-2", 1, { runId: "forged" })), {
      qos: 1,
    });
    await closed;
    expect(broker.refused.publish).toBe(before + 1);
    expect(await store.listRuns("edge-2", { limit: 10 })).toEqual([]);
    // The host can still connect and report as itself; the victim is untouched.
    const client = await host("edge-1");
    const acks = await collect(client, hostTopic("edge-1", "ack"));
    await expectReportAcked(client, acks, 3);
    expect(victim.connected).toBe(true);
  });

  it("refuses a host publishing commands or acks, and subscribing to another host's topics", async () => {
    const victim = await host("edge-2");
    const commands = await collect(victim, hostTopic("edge-2", "cmd"));
    const fleetCommands = await collect(victim, FLEET_CMD_TOPIC);
    const before = { publish: broker.refused.publish, subscribe: broker.refused.subscribe };
    for (const topic of [hostTopic("edge-2", "cmd"), FLEET_CMD_TOPIC, hostTopic("edge-1", "ack")]) {
      const rogue = await host("edge-1");
      const closed = new Promise<void>((resolve) => rogue.once("close", () => resolve()));
      rogue.publish(topic, JSON.stringify({ v: 1, host: "edge-2", cmd: "converge" }), { qos: 1 });
      await closed;
    }
    expect(broker.refused.publish).toBe(before.publish + 3);
    const spy = await host("edge-1");
    await expect(collect(spy, hostTopic("edge-2", "ack"))).rejects.toThrow(/refused|Subscribe error/);
    await expect(collect(spy, "driftless/v1/hosts/+/report")).rejects.toThrow(/refused|Subscribe error/);
    expect(broker.refused.subscribe).toBe(before.subscribe + 2);
    // Only what the control plane publishes reaches the host: the first command it receives is ours.
    await broker.publish(hostTopic("edge-2", "cmd"), JSON.stringify({ v: 1, host: "edge-2", cmd: "refresh" }), {
      qos: 1,
    });
    await broker.publish(FLEET_CMD_TOPIC, JSON.stringify({ v: 1, cmd: "refresh", commit: "abc" }), { qos: 1 });
    await waitFor("our commands", () => commands.length === 1 && fleetCommands.length === 1);
    expect(commands).toEqual([{ v: 1, host: "edge-2", cmd: "refresh" }]);
    expect(fleetCommands).toEqual([{ v: 1, cmd: "refresh", commit: "abc" }]);
  });

  it("drops malformed, invalid, misaddressed and oversized payloads, counts them, and goes on", async () => {
    const client = await host("edge-1");
    const acks = await collect(client, hostTopic("edge-1", "ack"));
    const before = { ...ingest.stats.dropped };
    const topic = hostTopic("edge-1", "report");
    await publish(client, topic, "{not json");
    await publish(client, topic, { ...runReport("edge-1", 1), seq: -1 });
    await publish(client, topic, { v: 2, host: "edge-1" });
    await publish(client, topic, runReport("edge-2", 1, { runId: "someone-else" }));
    await publish(client, hostTopic("edge-1", "status"), statusPayload("edge-2"));
    await publish(client, topic, Buffer.alloc(MAX_PAYLOAD_BYTES + 100, 0x20));
    await waitFor("the drops", () => ingest.stats.dropped.size === before.size + 1);
    expect(ingest.stats.dropped).toMatchObject({
      json: before.json + 1,
      schema: before.schema + 2,
      identity: before.identity + 2,
      size: before.size + 1,
    });
    expect((await store.listRuns("edge-2", { limit: 10 })).map((r) => r.runId)).not.toContain("someone-else");
    // The same connection goes on.
    await expectReportAcked(client, acks, 4);
  });

  it("closes a connection sending a 10 MB packet before reading it, and goes on", async () => {
    const before = broker.refused.size;
    const client = await host("edge-1");
    const closed = new Promise<void>((resolve) => client.once("close", () => resolve()));
    client.publish(hostTopic("edge-1", "report"), Buffer.alloc(10 * 1024 * 1024, 0x20), { qos: 1 });
    await closed;
    expect(broker.refused.size).toBe(before + 1);
    const again = await host("edge-1");
    const acks = await collect(again, hostTopic("edge-1", "ack"));
    await expectReportAcked(again, acks, 5);
  });

  it("shows a host lost when its connection dies, online again with a new session, and ignores a late will", async () => {
    const first = await host("edge-2", { session: 10 });
    await publish(first, hostTopic("edge-2", "status"), statusPayload("edge-2", { session: 10 }));
    await waitFor("online", async () => (await store.getHost("edge-2", new Date()))?.presence === "online");
    first.stream.destroy();
    await waitFor("lost", async () => (await store.getHost("edge-2", new Date()))?.presence === "lost");

    const second = await host("edge-2", { session: 11 });
    await publish(second, hostTopic("edge-2", "status"), statusPayload("edge-2", { session: 11 }));
    await waitFor("online again", async () => (await store.getHost("edge-2", new Date()))?.presence === "online");
    // The old session's will, late.
    const ignored = ingest.stats.statusIgnored;
    await publish(second, hostTopic("edge-2", "status"), { v: 1, host: "edge-2", session: 10, state: "lost" });
    await waitFor("the late will ignored", () => ingest.stats.statusIgnored === ignored + 1);
    const detail = await store.getHost("edge-2", new Date());
    expect(detail).toMatchObject({ presence: "online", session: 11 });
    expect(detail?.history.slice(0, 3).map((h) => h.to)).toEqual(["online", "lost", "online"]);

    // A clean stop: offline.
    await publish(second, hostTopic("edge-2", "status"), statusPayload("edge-2", { session: 11, state: "offline" }));
    await second.endAsync();
    await waitFor("offline", async () => (await store.getHost("edge-2", new Date()))?.presence === "offline");
  });

  it("takes heartbeats and facts", async () => {
    const client = await host("edge-1", { session: 20 });
    const beats = ingest.stats.accepted.heartbeat;
    await publish(client, hostTopic("edge-1", "heartbeat"), { v: 1, host: "edge-1", session: 20, at: "now" }, 0);
    await publish(client, hostTopic("edge-1", "facts"), {
      v: 1,
      host: "edge-1",
      session: 20,
      at: "now",
      hash: "h",
      facts: { os: { arch: "riscv64" } },
    });
    await waitFor("facts", async () => (await store.getHost("edge-1", new Date()))?.facts !== null);
    await waitFor("heartbeat", () => ingest.stats.accepted.heartbeat === beats + 1);
    expect(await store.getHost("edge-1", new Date())).toMatchObject({
      facts: { os: { arch: "riscv64" } },
      presence: "online",
      session: 20,
    });
  });

  it("disconnects a host at once, without its will", async () => {
    const client = await host("edge-1", { session: 30 });
    await publish(client, hostTopic("edge-1", "status"), statusPayload("edge-1", { session: 30 }));
    await waitFor("online", async () => (await store.getHost("edge-1", new Date()))?.session === 30);
    const closed = new Promise<void>((resolve) => client.once("close", () => resolve()));
    await broker.disconnect("edge-1");
    await closed;
    expect(broker.connectedHosts()).not.toContain("edge-1");
    // A message published after the disconnect is stored; the will, published at the close, would be before it.
    const other = await host("edge-2", { session: 40 });
    await publish(other, hostTopic("edge-2", "status"), statusPayload("edge-2", { session: 40 }));
    await waitFor("the later message", async () => (await store.getHost("edge-2", new Date()))?.session === 40);
    expect((await store.getHost("edge-1", new Date()))?.presence).toBe("online");
  });
});

describe("embedded broker stopping", () => {
  it("closes the hosts' connections without their wills: the control plane is away, not the hosts", async () => {
    const data = mkdtempSync(path.join(tmpdir(), "driftless-cp-stop-"));
    const own = SqliteFleetStore.open(data);
    await own.addCredential("edge-1", await hashPassword(PASSWORD["edge-1"]));
    const stopping = new EmbeddedBroker({
      host: "127.0.0.1",
      port: 0,
      credentials: own,
      log: silentLogger,
      now: Date.now,
    });
    const ownIngest = createIngest({ store: own, broker: stopping, log: silentLogger, now: () => new Date() });
    stopping.onMessage(ownIngest.handle);
    await stopping.start();
    try {
      const client = await connectHost({
        port: stopping.port,
        host: "edge-1",
        password: PASSWORD["edge-1"],
        session: 7,
      });
      clients.push(client);
      await client.publishAsync(
        hostTopic("edge-1", "status"),
        JSON.stringify(statusPayload("edge-1", { session: 7 })),
        {
          qos: 1,
        },
      );
      await waitFor("online", async () => (await own.getHost("edge-1", new Date()))?.session === 7);
      const closed = new Promise<void>((resolve) => client.once("close", () => resolve()));
      await stopping.close();
      await closed;
      await ownIngest.idle();
      expect(ownIngest.stats.accepted.status).toBe(1);
      expect((await own.getHost("edge-1", new Date()))?.presence).toBe("online");
    } finally {
      await stopping.close();
      await own.close();
      rmSync(data, { recursive: true, force: true });
    }
  });
});
