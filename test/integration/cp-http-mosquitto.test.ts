/**
 * Commands from the HTTP part through an external broker: a real Mosquitto configured with the
 * shipped ACL (docs/mosquitto/driftless.acl), the control plane as its client, and hosts as MQTT.js
 * clients of the same Mosquitto. A push to the webhook and a converge from the API reach them.
 */
import { createHmac } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { silentLogger } from "../../agent/src/log.js";
import { ExternalBroker } from "../../controlplane/src/broker/external.js";
import { createHttpServer, type HttpServer } from "../../controlplane/src/http/server.js";
import { createIngest } from "../../controlplane/src/ingest/ingest.js";
import { createFleetMetrics } from "../../controlplane/src/metrics.js";
import { SqliteFleetStore } from "../../controlplane/src/store/sqlite.js";
import { FLEET_CMD_TOPIC, hostTopic } from "../../protocol/topics.js";
import { haveMosquitto, type Mosquitto, startMosquitto } from "../support/mosquitto.js";
import { connectHost, type HostConnection } from "../support/mqtt-inbox.js";

const USERS = { driftlessctl: "cp-secret-0123456789", "edge-1": "pw-edge-1-0123" };
const TOKEN = "token-for-the-mosquitto-test";
const SECRET = "hook-secret";
const SHA = "4444444444444444444444444444444444444444";

describe.skipIf(!haveMosquitto)("HTTP commands through Mosquitto", () => {
  let mosquitto: Mosquitto;
  let dir: string;
  let store: SqliteFleetStore;
  let broker: ExternalBroker;
  let http: HttpServer;
  let base: string;
  let host: HostConnection;

  beforeAll(async () => {
    mosquitto = await startMosquitto({ users: USERS, aclFile: path.resolve("docs/mosquitto/driftless.acl") });
    dir = mkdtempSync(path.join(tmpdir(), "driftless-cp-http-mosq-"));
    store = SqliteFleetStore.open(dir);
    broker = new ExternalBroker({
      url: mosquitto.url,
      clientId: "driftlessctl-http-test",
      username: "driftlessctl",
      password: USERS.driftlessctl,
      shared: false,
      log: silentLogger,
    });
    const ingest = createIngest({ store, broker, log: silentLogger, now: () => new Date() });
    broker.onMessage(ingest.handle);
    await broker.start();
    http = createHttpServer({
      store,
      publish: (topic, payload, options) => broker.publish(topic, payload, options),
      metrics: createFleetMetrics(),
      counters: { ingest: ingest.stats },
      apiToken: TOKEN,
      webhookSecret: SECRET,
      logger: silentLogger,
      now: () => new Date(),
    });
    base = (await http.listen("127.0.0.1", 0)).url;
    // The host is known to the store as `hosts add` makes it; its password is Mosquitto's business.
    await store.addCredential("edge-1", "(kept by Mosquitto)");
    host = await connectHost(mosquitto.url, "edge-1", USERS["edge-1"], [FLEET_CMD_TOPIC, hostTopic("edge-1", "cmd")]);
  }, 60_000);

  afterAll(async () => {
    await host?.client.endAsync(true);
    await http?.close();
    await broker?.close();
    await store?.close();
    await mosquitto?.stop();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it("a signed GitHub push reaches the host as refresh; a converge from the API as converge", async () => {
    const body = JSON.stringify({ ref: "refs/heads/main", before: "0".repeat(40), after: SHA, commits: [] });
    const push = await fetch(`${base}/hooks/git`, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        "x-github-event": "push",
        "x-github-delivery": "mosq-1",
        "x-hub-signature-256": `sha256=${createHmac("sha256", SECRET).update(body).digest("hex")}`,
      },
      body,
    });
    expect(push.status).toBe(202);
    expect(await host.next()).toMatchObject({ topic: FLEET_CMD_TOPIC, json: { cmd: "refresh", commit: SHA } });

    const converge = await fetch(`${base}/api/v1/hosts/edge-1/converge`, {
      method: "POST",
      headers: { authorization: `Bearer ${TOKEN}` },
    });
    expect(converge.status).toBe(202);
    const { id } = (await converge.json()) as { id: string };
    expect(await host.next()).toEqual({
      topic: hostTopic("edge-1", "cmd"),
      json: { v: 1, host: "edge-1", cmd: "converge", id },
    });
  });
});
