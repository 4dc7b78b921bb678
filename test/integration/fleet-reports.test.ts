import { afterAll, afterEach, describe, expect, it } from "vitest";
import {
  addHost,
  eventually,
  type FleetAgentSetup,
  fleetAgent,
  RestartableMosquitto,
  ServeProcess,
} from "../support/fleet.js";
import { haveMosquitto } from "../support/mosquitto.js";
import { cleanupTemp, fleet, makeRepo, profile } from "../support/repo.js";
import { AgentDaemon, outboxOf } from "../support/reporting.js";

type Kind = "embedded" | "mosquitto";

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => {});
});
afterAll(cleanupTemp);

interface Fleet {
  serve: ServeProcess;
  /** Stops the broker (embedded: serve itself, SIGTERM). */
  stopBroker(): Promise<void>;
  startBroker(): Promise<void>;
  agent(host: string): FleetAgentSetup;
}

/** A control plane (and a Mosquitto for `mosquitto`), started, and one host's credentials. */
async function startFleet(kind: Kind, host: string): Promise<Fleet> {
  const source = makeRepo({
    "fleet.yaml": fleet("  - match: {}\n    profiles: [base]\n"),
    "base.yaml": profile("base", 'files:\n  - { path: /etc/app/a.conf, content: "a=1\\n" }\n'),
  });
  const password = `pw-${Math.random().toString(16).slice(2)}`;
  if (kind === "embedded") {
    const serve = await ServeProcess.create();
    const hostPassword = addHost(serve.settings.data, host);
    await serve.start();
    cleanups.push(() => serve.kill());
    return {
      serve,
      stopBroker: () => serve.stop(),
      startBroker: () => serve.start(),
      agent: (name) => fleetAgent({ host: name, password: hostPassword, brokerUrl: serve.mqttUrl, source }),
    };
  }
  const { mosquitto, passwordFile } = await RestartableMosquitto.forFleet(host, password, cleanups);
  const serve = await ServeProcess.create({
    broker: { url: mosquitto.url, username: "driftlessctl", passwordFile },
  });
  await serve.start();
  cleanups.push(() => serve.kill());
  return {
    serve,
    stopBroker: () => mosquitto.stop(),
    startBroker: () => mosquitto.start(),
    agent: (name) => fleetAgent({ host: name, password, brokerUrl: mosquitto.url, source }),
  };
}

function daemon(setup: FleetAgentSetup): AgentDaemon {
  const agent = new AgentDaemon(setup.config, setup.root);
  cleanups.push(() => agent.kill());
  return agent;
}

/** Waits until the control plane stored `n` runs of `host` and the agent's outbox is empty (all acked). */
async function storedAndAcked(serve: ServeProcess, setup: FleetAgentSetup, n: number, timeoutMs = 90_000) {
  await eventually(
    `${n} runs of ${setup.host} stored and acknowledged`,
    async () => (await serve.runs(setup.host)).length >= n && outboxOf(setup.stateDir).length === 0,
    timeoutMs,
  );
  return serve.runs(setup.host);
}

/** Stored once each, seqs 1..n, and received in seq order. */
async function expectOnceInOrder(serve: ServeProcess, host: string, n: number): Promise<void> {
  const answer = await serve.api<{ runs: Array<{ runId: string; seq: number; receivedAt: string }> }>(
    `hosts/${host}/runs?limit=500`,
  );
  const runs = answer.runs.slice().reverse();
  expect(runs.map((r) => r.seq)).toEqual(Array.from({ length: n }, (_, i) => i + 1));
  expect(new Set(runs.map((r) => r.runId)).size).toBe(n);
  const received = runs.map((r) => Date.parse(r.receivedAt));
  expect(received).toEqual(received.slice().sort((a, b) => a - b));
}

async function metric(serve: ServeProcess, name: string): Promise<number> {
  const text = await (await fetch(`${serve.url}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith(`${name} `));
  return line ? Number(line.split(" ")[1]) : 0;
}

const kinds: Kind[] = haveMosquitto ? ["embedded", "mosquitto"] : ["embedded"];

describe.each(kinds)("the agent daemon and driftlessctl serve (%s broker)", (kind) => {
  it("the control plane killed (SIGKILL) and restarted while the agent runs: nothing lost, nothing doubled", async () => {
    const host = `fr-kill-${kind}`;
    const f = await startFleet(kind, host);
    const setup = f.agent(host);
    const agent = daemon(setup);
    await storedAndAcked(f.serve, setup, 1);

    // A run, and the control plane killed right after it: its report may be in flight, stored
    // without its ack sent, or not stored at all.
    await agent.runOnce();
    await f.serve.kill();
    await agent.runOnce();
    await agent.runOnce();
    expect(outboxOf(setup.stateDir).length).toBeGreaterThanOrEqual(2);

    await f.serve.start();
    await storedAndAcked(f.serve, setup, 4);
    await expectOnceInOrder(f.serve, host, 4);
    const detail = await f.serve.api(`hosts/${host}`);
    expect(detail).toMatchObject({ presence: "online", sync: "in-sync", lastRun: { seq: 4 } });
  });

  it("an agent killed with reports in its outbox sends them after its restart", async () => {
    const host = `fr-agent-${kind}`;
    const f = await startFleet(kind, host);
    const setup = f.agent(host);
    const first = daemon(setup);
    await storedAndAcked(f.serve, setup, 1);

    await f.stopBroker();
    await first.runOnce();
    await first.runOnce();
    expect(outboxOf(setup.stateDir).map((r) => r.seq)).toEqual([2, 3]);
    await first.kill();
    expect(outboxOf(setup.stateDir).map((r) => r.seq)).toEqual([2, 3]);

    await f.startBroker();
    // Restarted, the agent runs once at start (seq 4) and sends 2 and 3 first.
    daemon(setup);
    await storedAndAcked(f.serve, setup, 4);
    await expectOnceInOrder(f.serve, host, 4);
  });
});

describe.skipIf(!haveMosquitto)("the agent daemon, serve --broker and a Mosquitto that restarts", () => {
  it("the broker stopped while the agent completes several runs, then started: every report arrives, exactly once, in order", async () => {
    const host = "fr-broker";
    const f = await startFleet("mosquitto", host);
    const setup = f.agent(host);
    const agent = daemon(setup);
    await storedAndAcked(f.serve, setup, 1);

    await f.stopBroker();
    for (let i = 0; i < 3; i++) await agent.runOnce();
    expect(outboxOf(setup.stateDir).map((r) => r.seq)).toEqual([2, 3, 4]);

    await f.startBroker();
    await storedAndAcked(f.serve, setup, 4);
    await expectOnceInOrder(f.serve, host, 4);
    // Exactly once: the control plane received no report twice.
    expect(await metric(f.serve, "driftless_reports_duplicate_total")).toBe(0);
    expect(await metric(f.serve, "driftless_reports_ingested_total")).toBe(4);
  });
});
