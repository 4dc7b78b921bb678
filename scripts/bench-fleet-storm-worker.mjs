// One process of simulated hosts for scripts/bench-fleet (storm part): connects all its hosts at
// once (a fleet reconnecting after a broker restart), each with its will and a retained `online`
// status, then, on "beat SECONDS" on stdin, sends every host's heartbeat once spread over SECONDS.
// Input: one JSON line of settings in argv[2]. Output, JSON lines on stdout: {"connected":N,
// "seconds":S} once every host is connected and its status published, {"beats":N,"cpuSeconds":S}
// after each heartbeat round.
import { createInterface } from "node:readline";
import mqtt from "mqtt";

const { url, hosts, password } = JSON.parse(process.argv[2]);
const say = (o) => process.stdout.write(`${JSON.stringify(o)}\n`);
const topic = (host, kind) => `driftless/v1/hosts/${host}/${kind}`;

const t0 = performance.now();
const clients = await Promise.all(
  hosts.map(async (host) => {
    const client = await mqtt.connectAsync(url, {
      clientId: host,
      username: host,
      password,
      protocolVersion: 4,
      clean: true,
      reconnectPeriod: 0,
      connectTimeout: 300_000,
      keepalive: 300,
      will: {
        topic: topic(host, "status"),
        payload: JSON.stringify({ v: 1, host, session: 1, state: "lost" }),
        qos: 1,
        retain: true,
      },
    });
    const status = { v: 1, host, session: 1, state: "online", version: "0.1.0", mode: "enforce" };
    await client.publishAsync(topic(host, "status"), JSON.stringify(status), { qos: 1, retain: true });
    return { host, client };
  }),
);
say({ connected: clients.length, seconds: (performance.now() - t0) / 1000 });

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  const [verb, arg] = line.split(" ");
  if (verb === "stop") break;
  if (verb !== "beat") continue;
  const spreadMs = Number(arg) * 1000;
  const cpuAt = process.cpuUsage();
  const at = new Date().toISOString();
  await Promise.all(
    clients.map(
      ({ host, client }, i) =>
        new Promise((resolve) =>
          setTimeout(
            () => {
              client.publish(topic(host, "heartbeat"), JSON.stringify({ v: 1, host, session: 1, at }), { qos: 0 });
              resolve();
            },
            (i / clients.length) * spreadMs,
          ),
        ),
    ),
  );
  const cpu = process.cpuUsage(cpuAt);
  say({ beats: clients.length, cpuSeconds: (cpu.user + cpu.system) / 1e6 });
}
await Promise.all(clients.map(({ client }) => client.endAsync(true)));
process.exit(0);
