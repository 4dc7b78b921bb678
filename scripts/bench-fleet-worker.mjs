// One process of simulated agents for scripts/bench-fleet (ingest part): many MQTT connections,
// each a host that publishes its reports in seq order (QoS 1), at most WINDOW unacknowledged at a
// time as the agent's reporter does, and counts the control plane's acks.
// Input: one JSON line of settings in argv[2]. Output, JSON lines on stdout: {"ready":true} once
// every host is connected and subscribed, then, after "go" on stdin, {"done":true,"acks":N,"cpuSeconds":S}.
import { createInterface } from "node:readline";
import mqtt from "mqtt";

const { port, hosts, perHost, password, window: WINDOW } = JSON.parse(process.argv[2]);
const say = (o) => process.stdout.write(`${JSON.stringify(o)}\n`);

const at = new Date().toISOString();
/** A run report as the agent sends it: a few changes with diffs, their drift, timings. */
function report(host, seq) {
  const changes = [1, 2, 3].map((i) => ({
    resource: `file:/etc/app/conf.d/${i}.conf`,
    action: "update",
    outcome: "changed",
    diff: `--- /etc/app/conf.d/${i}.conf\n+++ /etc/app/conf.d/${i}.conf\n@@ -1,3 +1,3 @@\n listen 0.0.0.0\n-workers ${seq}\n+workers ${seq + 1}\n timeout 30\n`,
    drift: [{ field: "content", desired: `sha256:${"ab".repeat(32)}`, actual: `sha256:${"cd".repeat(32)}` }],
  }));
  return JSON.stringify({
    v: 1,
    host,
    session: 1,
    kind: "run",
    runId: `${host}-run-${seq}-${Math.random().toString(36).slice(2, 10)}`,
    seq,
    commit: "9f2c1e0c4b1d2a3e4f5a6b7c8d9e0f1a2b3c4d5e",
    source: "git",
    mode: "apply",
    result: "changed",
    sync: "in-sync",
    startedAt: at,
    endedAt: at,
    profiles: ["base", "gateway"],
    changes: changes.map(({ drift: _drift, ...c }) => c),
    drift: changes.map((c) => ({ resource: c.resource, ...c.drift[0] })),
    errors: [],
    timings: { total: 1250, load: 300, read: 120, plan: 2, apply: 800, record: 3 },
    summary: { changed: 3, unchanged: 41 },
  });
}

const clients = [];
for (let i = 0; i < hosts.length; i += 50) {
  // Connect in batches: a reconnect storm of a whole fleet is another benchmark.
  const batch = hosts.slice(i, i + 50);
  clients.push(
    ...(await Promise.all(
      batch.map(async (host) => {
        const client = await mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, {
          clientId: host,
          username: host,
          password,
          protocolVersion: 4,
          reconnectPeriod: 0,
          connectTimeout: 60_000,
          keepalive: 120,
        });
        await client.subscribeAsync(`driftless/v1/hosts/${host}/ack`, { qos: 1 });
        return { host, client };
      }),
    )),
  );
}
say({ ready: true });

let acks = 0;
const lines = createInterface({ input: process.stdin });
await new Promise((resolve) => lines.once("line", resolve));
const cpuAtGo = process.cpuUsage();
await Promise.all(
  clients.map(
    ({ host, client }) =>
      new Promise((resolve) => {
        let sent = 0;
        let acked = 0;
        const pump = () => {
          while (sent < perHost && sent - acked < WINDOW) {
            sent++;
            client.publish(`driftless/v1/hosts/${host}/report`, report(host, sent), { qos: 1 });
          }
        };
        client.on("message", (_topic, payload) => {
          acks++;
          const upTo = JSON.parse(payload.toString()).upTo;
          if (upTo > acked) acked = upTo;
          if (acked >= perHost) resolve();
          else pump();
        });
        pump();
      }),
  ),
);
const cpu = process.cpuUsage(cpuAtGo);
say({ done: true, acks, cpuSeconds: (cpu.user + cpu.system) / 1e6 });
await Promise.all(clients.map(({ client }) => client.endAsync()));
process.exit(0);
