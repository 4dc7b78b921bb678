// The agent reporting to the control plane, on real parts: the built daemon (`driftless agent`,
// a directory source, files only, under --root) as a child process; a real broker (the machine's
// Mosquitto on 127.0.0.1:1883, or an in-process Aedes that the test stops and starts again); the
// control plane played by a real MQTT.js client that checks every payload against
// protocol/schema.ts and sends the acks. Runs are started with SIGHUP or commands; every wait is
// a condition polled with a deadline.
import { spawn } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import * as path from "node:path";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import { HOST_ID_PATTERN } from "../../protocol/topics.js";
import { CLI } from "../support/cli.js";
import { freePort } from "../support/ports.js";
import { cleanupTemp, tempDir } from "../support/repo.js";
import {
  AedesBroker,
  AgentDaemon,
  agentSetup,
  ControlPlane,
  makeCertificates,
  outboxOf,
  until,
} from "../support/reporting.js";

const MOSQUITTO = "mqtt://127.0.0.1:1883";

const daemons: AgentDaemon[] = [];
const planes: ControlPlane[] = [];
const brokers: AedesBroker[] = [];

function daemon(config: string, root: string): AgentDaemon {
  const d = new AgentDaemon(config, root);
  daemons.push(d);
  return d;
}

async function plane(
  url: string,
  host: string,
  options: { autoAck?: boolean; ca?: Buffer } = {},
): Promise<ControlPlane> {
  const cp = new ControlPlane(url, host, options);
  await cp.connect();
  planes.push(cp);
  return cp;
}

async function aedes(port?: number): Promise<AedesBroker> {
  const broker = new AedesBroker(port ?? (await freePort()));
  await broker.start();
  brokers.push(broker);
  return broker;
}

afterEach(async () => {
  for (const d of daemons.splice(0)) await d.kill();
  for (const cp of planes.splice(0)) {
    await cp.clearRetained();
    await cp.close();
  }
  for (const b of brokers.splice(0)) await b.stop();
});
afterAll(cleanupTemp);

const seqs = (reports: Array<Record<string, unknown>>) => reports.map((r) => r.seq as number);

describe("agent reporting", () => {
  it("keeps reports in its outbox until the control plane acks them, whatever the broker acked, and sends them again after a reconnect", async () => {
    const broker = await aedes();
    const setup = agentSetup(broker.url);
    expect(setup.host).toMatch(HOST_ID_PATTERN);
    const cp = await plane(broker.url, setup.host);
    const agent = daemon(setup.config, setup.root);

    await until("report 1", () => cp.reports().length >= 1);
    await agent.runOnce();
    await until("report 2", () => cp.reports().length >= 2);
    // The broker took both (PUBACK) long ago; no ack from the control plane: both stay.
    expect(seqs(cp.reports())).toEqual([1, 2]);
    expect(outboxOf(setup.stateDir).map((r) => r.seq)).toEqual([1, 2]);
    const firstSession = cp.of("report")[0]?.session as number;

    // The broker restarts (no persistence): the agent reconnects and sends both again.
    await broker.stop();
    broker.admitAgents = false;
    await broker.start();
    await cp.reconnected();
    broker.admitAgents = true;
    const before = cp.of("report").length;
    await until("both reports sent again", () => cp.of("report").length >= before + 2, 60_000);
    const again = cp.of("report").slice(before);
    expect(seqs(again)).toEqual([1, 2]);
    expect(again.every((r) => (r.session as number) > firstSession)).toBe(true);
    expect(outboxOf(setup.stateDir)).toHaveLength(2);

    // Stored: the control plane acks up to 2, and only then the outbox empties.
    cp.ack(2);
    await until("an empty outbox", () => outboxOf(setup.stateDir).length === 0);
    expect(cp.invalid).toEqual([]);
  });

  it("sends every report made while the broker was down exactly once, in order, once it is back", async () => {
    const broker = await aedes();
    const setup = agentSetup(broker.url);
    const cp = await plane(broker.url, setup.host, { autoAck: true });
    const agent = daemon(setup.config, setup.root);
    await until("report 1", () => cp.reports().length === 1);
    await until("report 1 acked", () => outboxOf(setup.stateDir).length === 0);

    await broker.stop();
    for (let i = 0; i < 3; i++) await agent.runOnce();
    expect(outboxOf(setup.stateDir).map((r) => r.seq)).toEqual([2, 3, 4]);

    broker.admitAgents = false;
    await broker.start();
    await cp.reconnected();
    broker.admitAgents = true;
    await until("reports 2 to 4", () => cp.reports().length === 4, 60_000);
    expect(seqs(cp.reports())).toEqual([1, 2, 3, 4]);
    // Exactly once: nothing was sent twice (the window was acked as it went).
    expect(seqs(cp.of("report"))).toEqual([1, 2, 3, 4]);
    await until("an empty outbox", () => outboxOf(setup.stateDir).length === 0);
    expect(cp.invalid).toEqual([]);
  });

  it("presence: a killed agent is lost with its session; restarted, it is online with a higher one and sends what it had not sent; stopped, offline", async () => {
    const setup = agentSetup(MOSQUITTO);
    const cp = await plane(MOSQUITTO, setup.host);
    const first = daemon(setup.config, setup.root);
    await until("report 1", () => cp.reports().length === 1);
    const online1 = await until("online", () => cp.of("status").find((s) => s.state === "online"));
    expect(online1).toMatchObject({
      v: 1,
      host: setup.host,
      version: expect.any(String),
      mode: "enforce",
      labels: { role: "test" },
    });
    expect(online1.lastRun).toMatchObject({ seq: 1 });

    await first.kill();
    const lost = await until("the will", () => cp.of("status").find((s) => s.state === "lost"));
    expect(lost.session).toBe(online1.session);
    expect(outboxOf(setup.stateDir).map((r) => r.seq)).toEqual([1]);

    const second = daemon(setup.config, setup.root);
    const online2 = await until("online again", () =>
      cp.of("status").find((s) => s.state === "online" && (s.session as number) > (online1.session as number)),
    );
    expect(online2.session).toBeGreaterThan(lost.session as number);
    await until("report 1 again and report 2", () => cp.reports().length === 2);
    const resent = cp.of("report").filter((r) => r.seq === 1);
    expect(resent.map((r) => r.session)).toEqual([online1.session, online2.session]);
    cp.ack(2);
    await until("an empty outbox", () => outboxOf(setup.stateDir).length === 0);

    await second.terminate();
    const offline = await until("offline", () => cp.of("status").find((s) => s.state === "offline"));
    expect(offline.session).toBe(online2.session);
    // A clean stop leaves no will behind it.
    expect(cp.of("status").filter((s) => s.state === "lost")).toHaveLength(1);
    expect(cp.invalid).toEqual([]);
  });

  it("runs on a converge command, and on a refresh (host or fleet) after its splay (0 here); ignores what is malformed", async () => {
    const setup = agentSetup(MOSQUITTO);
    const cp = await plane(MOSQUITTO, setup.host, { autoAck: true });
    const agent = daemon(setup.config, setup.root);
    await until("report 1", () => cp.reports().length === 1);
    await until("subscribed (online)", () => cp.of("status").some((s) => s.state === "online"));

    cp.raw(`driftless/v1/hosts/${setup.host}/cmd`, "not json");
    cp.raw(`driftless/v1/hosts/${setup.host}/cmd`, JSON.stringify({ v: 1, host: "someone-else", cmd: "converge" }));
    cp.command("converge");
    await until("a run after converge", () => cp.reports().length === 2);
    cp.command("refresh");
    await until("a run after a host refresh", () => cp.reports().length === 3);
    cp.fleetRefresh();
    await until("a run after a fleet refresh", () => cp.reports().length === 4);
    expect(seqs(cp.reports())).toEqual([1, 2, 3, 4]);
    // The malformed command and the other host's ran nothing.
    expect(agent.count("run finished")).toBe(4);
    expect(agent.lines.filter((l) => l.msg === "command: converge")).toHaveLength(1);
  });

  it("publishes its facts retained once, and not again while they do not change (restart included)", async () => {
    const setup = agentSetup(MOSQUITTO);
    const cp = await plane(MOSQUITTO, setup.host, { autoAck: true });
    const agent = daemon(setup.config, setup.root);
    await until("report 1", () => cp.reports().length === 1);
    const facts = await until("facts", () => cp.of("facts")[0]);
    expect(facts.hash).toMatch(/^[0-9a-f]{64}$/);
    expect((facts.facts as { os?: unknown }).os).toBeDefined();

    await agent.runOnce();
    await until("report 2", () => cp.reports().length === 2);
    await agent.terminate();
    const again = daemon(setup.config, setup.root);
    await until("report 3 after the restart", () => cp.reports().length === 3);
    const firstSession = facts.session as number;
    await until("online after the restart", () =>
      cp.of("status").some((s) => s.state === "online" && (s.session as number) > firstSession),
    );
    expect(cp.of("facts")).toHaveLength(1);

    // Retained: a control plane that subscribes later gets them.
    const late = await plane(MOSQUITTO, setup.host);
    const retained = await until("retained facts", () => late.received.find((r) => r.kind === "facts"));
    expect(retained.retain).toBe(true);
    expect(retained.payload.hash).toBe(facts.hash);
    await again.terminate();
  });

  it("folds the oldest runs into one summary beyond outboxLimit while the broker is unreachable", async () => {
    const port = await freePort();
    const url = `mqtt://127.0.0.1:${port}`;
    const setup = agentSetup(url, "  outboxLimit: 3");
    const agent = daemon(setup.config, setup.root);
    await agent.waitCount("run finished", 1);
    for (let i = 0; i < 4; i++) await agent.runOnce();
    expect(outboxOf(setup.stateDir)).toEqual([
      { seq: 2, kind: "summary" },
      { seq: 3, kind: "run" },
      { seq: 4, kind: "run" },
      { seq: 5, kind: "run" },
    ]);

    const broker = await aedes(port);
    broker.admitAgents = false;
    const cp = await plane(url, setup.host, { autoAck: true });
    broker.admitAgents = true;
    await until("the four reports", () => cp.reports().length === 4, 90_000);
    const [summary, ...runs] = cp.reports();
    expect(summary).toMatchObject({
      kind: "summary",
      fromSeq: 1,
      seq: 2,
      count: 2,
      results: { changed: 1, "in-sync": 1 },
    });
    expect(runs.map((r) => [r.kind, r.seq])).toEqual([
      ["run", 3],
      ["run", 4],
      ["run", 5],
    ]);
    await until("an empty outbox", () => outboxOf(setup.stateDir).length === 0);
    expect(cp.invalid).toEqual([]);
  });

  it("--once reports its run, waits for the ack and exits offline, its outbox empty", async () => {
    const setup = agentSetup(MOSQUITTO);
    const cp = await plane(MOSQUITTO, setup.host, { autoAck: true });
    const code = await new Promise<number | null>((resolve) => {
      const child = spawn(
        process.execPath,
        [CLI, "agent", "--once", "--config", setup.config, "--root", setup.root, "--log-format", "json"],
        { stdio: "ignore" },
      );
      child.on("close", (c) => resolve(c));
    });
    expect(code).toBe(2);
    expect(cp.reports().map((r) => r.seq)).toEqual([1]);
    expect(outboxOf(setup.stateDir)).toEqual([]);
    await until("offline", () => cp.of("status").some((s) => s.state === "offline"));
    expect(cp.of("status").map((s) => s.state)).toEqual(["online", "offline"]);
  });

  it("connects over TLS with the CA file, client id and user name the host id, the password read from its file at each connect", async () => {
    const dir = tempDir();
    const certs = makeCertificates(dir);
    const broker = new AedesBroker(await freePort());
    broker.tls = { key: certs.key, cert: certs.cert };
    const passwordFile = path.join(dir, "mqtt-password");
    writeFileSync(passwordFile, "first-secret\n", { mode: 0o600 });
    const setup = agentSetup(broker.url, `  ca: ${certs.ca}\n  passwordFile: ${passwordFile}`);
    broker.passwords = { [setup.host]: "first-secret" };
    await broker.start();
    brokers.push(broker);
    const ca = readFileSync(certs.ca);
    const cp = await plane(broker.url, setup.host, { ca });
    daemon(setup.config, setup.root);
    await until("report 1 over TLS", () => cp.reports().length === 1);
    expect(broker.connects[0]).toEqual({ clientId: setup.host, username: setup.host, password: "first-secret" });

    // The password rotated: the next connect reads the new one, no restart needed.
    writeFileSync(passwordFile, "second-secret\n");
    broker.passwords = { [setup.host]: "second-secret" };
    await broker.stop();
    broker.admitAgents = false;
    await broker.start();
    await cp.reconnected();
    broker.admitAgents = true;
    const first = cp.of("status").find((s) => s.state === "online")?.session as number;
    await until(
      "online again",
      () => cp.of("status").some((s) => s.state === "online" && (s.session as number) > first),
      60_000,
    );
    expect(broker.connects.at(-1)).toEqual({ clientId: setup.host, username: setup.host, password: "second-secret" });
  });

  it("does not connect to a broker whose certificate its CA file does not vouch for", async () => {
    const dir = tempDir();
    const certs = makeCertificates(dir);
    const other = makeCertificates(tempDir());
    const broker = new AedesBroker(await freePort());
    broker.tls = { key: certs.key, cert: certs.cert };
    await broker.start();
    brokers.push(broker);
    const setup = agentSetup(broker.url, `  ca: ${other.ca}`);
    const agent = daemon(setup.config, setup.root);
    await until("a connection error", () =>
      agent.lines.find((l) => l.msg === "broker connection error" && /certificate/i.test(String(l.error))),
    );
    expect(broker.connects).toEqual([]);
    expect(agent.count("connected to the broker")).toBe(0);
  });
});
