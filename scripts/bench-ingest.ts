// Ingest throughput through the embedded broker: `npx tsx scripts/bench-ingest.ts [HOSTS] [REPORTS_PER_HOST]`
// (or node --experimental-strip-types). Real MQTT.js clients publish run reports (QoS 1); the
// time is from the first publish to the last ack received.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import mqtt from "mqtt";
import { silentLogger } from "../agent/src/log.js";
import { hashPassword } from "../controlplane/src/auth/password.js";
import { EmbeddedBroker } from "../controlplane/src/broker/embedded.js";
import { createIngest } from "../controlplane/src/ingest/ingest.js";
import { SqliteFleetStore } from "../controlplane/src/store/sqlite.js";
import { hostTopic } from "../protocol/topics.js";

const hosts = Number(process.argv[2] ?? 50);
const perHost = Number(process.argv[3] ?? 200);
const dir = mkdtempSync(path.join(tmpdir(), "driftless-bench-"));
const store = SqliteFleetStore.open(dir);
const hash = await hashPassword("pw");
for (let i = 0; i < hosts; i++) await store.addCredential(`h${i}`, hash);
const broker = new EmbeddedBroker({ host: "127.0.0.1", port: 0, credentials: store, log: silentLogger, now: Date.now });
const ingest = createIngest({ store, broker, log: silentLogger, now: () => new Date() });
broker.onMessage(ingest.handle);
await broker.start();

const clients = await Promise.all(
  Array.from({ length: hosts }, async (_, i) => {
    const host = `h${i}`;
    const client = await mqtt.connectAsync(`mqtt://127.0.0.1:${broker.port}`, {
      clientId: host,
      username: host,
      password: "pw",
      protocolVersion: 4,
    });
    await client.subscribeAsync(hostTopic(host, "ack"), { qos: 1 });
    return { host, client };
  }),
);
const report = (host: string, seq: number) =>
  JSON.stringify({
    v: 1,
    host,
    session: 1,
    kind: "run",
    runId: `r${seq}`,
    seq,
    commit: "0123456789abcdef0123456789abcdef01234567",
    mode: "apply",
    result: "changed",
    sync: "in-sync",
    startedAt: "2026-01-01T00:00:00.000Z",
    endedAt: "2026-01-01T00:00:01.000Z",
    changes: [{ resource: "file:/etc/motd", action: "update", outcome: "changed" }],
    drift: [],
    errors: [],
    timings: { total: 1000, read: 200, apply: 700 },
  });

const start = performance.now();
await Promise.all(
  clients.map(
    ({ host, client }) =>
      new Promise<void>((resolve) => {
        client.on("message", (_topic, payload) => {
          if ((JSON.parse(payload.toString()) as { upTo: number }).upTo >= perHost) resolve();
        });
        for (let seq = 1; seq <= perHost; seq++)
          client.publish(hostTopic(host, "report"), report(host, seq), { qos: 1 });
      }),
  ),
);
const seconds = (performance.now() - start) / 1000;
const total = hosts * perHost;
console.log(
  `${total} reports from ${hosts} hosts in ${seconds.toFixed(2)} s: ${Math.round(total / seconds)} reports/s, ` +
    `${ingest.stats.acksSent} acks, dropped ${JSON.stringify(ingest.stats.dropped)}`,
);
await Promise.all(clients.map(({ client }) => client.endAsync()));
await broker.close();
await store.close();
rmSync(dir, { recursive: true, force: true });
