import * as path from "node:path";
import type { MqttClient } from "mqtt";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import { silentLogger } from "../../agent/src/log.js";
import { hashPassword } from "../../controlplane/src/auth/password.js";
import { createIngest } from "../../controlplane/src/ingest/ingest.js";
import { type RunningServe, startServe } from "../../controlplane/src/serve.js";
import type { HostDetail } from "../../controlplane/src/store/types.js";
import { hostTopic } from "../../protocol/topics.js";
import { CuttableProxy, eventually, fleetAgent, RestartableMosquitto } from "../support/fleet.js";
import { haveMosquitto } from "../support/mosquitto.js";
import { connectHost } from "../support/mqtt.js";
import { cleanupTemp, fleet, makeRepo, profile, tempDir } from "../support/repo.js";
import { AgentDaemon } from "../support/reporting.js";

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup().catch(() => {});
});
afterAll(cleanupTemp);

const source = () =>
  makeRepo({
    "fleet.yaml": fleet("  - match: {}\n    profiles: [base]\n"),
    "base.yaml": profile("base", 'files:\n  - { path: /etc/app/a.conf, content: "a=1\\n" }\n'),
  });

async function serveInProcess(options: { broker?: { url: string; passwordFile: string } }): Promise<RunningServe> {
  const running = await startServe(
    {
      dataDir: path.join(tempDir("driftless-presence-"), "data"),
      http: { host: "127.0.0.1", port: 0 },
      mqtt: { host: "127.0.0.1", port: 0 },
      ...(options.broker
        ? {
            broker: {
              url: options.broker.url,
              username: "driftlessctl",
              passwordFile: options.broker.passwordFile,
              shared: false,
            },
          }
        : {}),
    },
    { log: silentLogger, now: () => new Date(), print: () => {} },
  );
  cleanups.push(() => running.close());
  return running;
}

async function proxyTo(port: number): Promise<CuttableProxy> {
  const proxy = new CuttableProxy(port);
  await proxy.start();
  cleanups.push(() => proxy.close());
  return proxy;
}

function daemon(config: string, root: string): AgentDaemon {
  const agent = new AgentDaemon(config, root);
  cleanups.push(() => agent.kill());
  return agent;
}

const hostOf = async (running: RunningServe, host: string): Promise<HostDetail | null> =>
  running.context.store.getHost(host, new Date());

/** Waits for `presence` in a session above `after`; returns the host. */
async function presence(running: RunningServe, host: string, state: string, after = 0): Promise<HostDetail> {
  return eventually(
    `${host} ${state} (session > ${after})`,
    async () => {
      const detail = await hostOf(running, host);
      return detail && detail.presence === state && detail.session > after ? detail : undefined;
    },
    60_000,
  );
}

describe("presence of a real agent daemon", () => {
  it("embedded broker: a cut connection shows lost; the agent reconnects and shows online, and the old will arriving late changes nothing", async () => {
    const running = await serveInProcess({});
    const host = "presence-1";
    const password = "a-long-enough-password-for-this-test";
    await running.context.store.addCredential(host, await hashPassword(password));
    const proxy = await proxyTo(running.mqttPort as number);
    const setup = fleetAgent({ host, password, brokerUrl: `mqtt://127.0.0.1:${proxy.port}`, source: source() });
    daemon(setup.config, setup.root);

    const first = await presence(running, host, "online");
    await eventually("the agent's report", async () => (await hostOf(running, host))?.lastRun?.seq === 1);

    proxy.cut();
    const lost = await presence(running, host, "lost");
    expect(lost.session).toBe(first.session);

    const back = await presence(running, host, "online", first.session);
    // The old connection's will, delivered now (after the reconnect), as a broker that noticed the
    // dead connection late would: it is from an older session and is ignored.
    const ignoredBefore = running.context.ingestStats.statusIgnored;
    const late = createIngest({
      store: running.context.store,
      broker: running.context.broker,
      log: silentLogger,
      now: () => new Date(),
    });
    late.handle({
      topic: hostTopic(host, "status"),
      payload: Buffer.from(JSON.stringify({ v: 1, host, session: first.session, state: "lost" })),
      sender: host,
    });
    await late.idle();
    expect(late.stats.statusIgnored).toBe(1);
    expect(running.context.ingestStats.statusIgnored).toBe(ignoredBefore);
    const after = await hostOf(running, host);
    expect(after).toMatchObject({ presence: "online", online: true, session: back.session });
    const presenceChanges = (after?.history ?? [])
      .filter((h) => h.field === "presence")
      .map((h) => h.to)
      .reverse();
    expect(presenceChanges).toEqual(["online", "lost", "online"]);
  });

  it.skipIf(!haveMosquitto)(
    "Mosquitto: a cut connection shows lost; back online, a will that Mosquitto publishes late for an older session does not mark it lost",
    async () => {
      const host = "presence-2";
      const password = "another-long-password-for-this-test";
      const { mosquitto, passwordFile } = await RestartableMosquitto.forFleet(host, password, cleanups);
      const running = await serveInProcess({ broker: { url: mosquitto.url, passwordFile } });
      const proxy = await proxyTo(mosquitto.port);
      const setup = fleetAgent({ host, password, brokerUrl: `mqtt://127.0.0.1:${proxy.port}`, source: source() });
      daemon(setup.config, setup.root);

      const first = await presence(running, host, "online");
      proxy.cut();
      const lost = await presence(running, host, "lost");
      expect(lost.session).toBe(first.session);
      const back = await presence(running, host, "online", first.session);

      // A connection of the same user (another client id) with the first session's will, dropped
      // without a DISCONNECT: Mosquitto itself publishes that will, after the reconnect.
      const old: MqttClient = await connectHost({
        port: mosquitto.port,
        host,
        clientId: `${host}-old-link`,
        password,
        session: first.session,
      });
      const ignoredBefore = running.context.ingestStats.statusIgnored;
      old.stream.destroy();
      await eventually(
        "the late will to reach the control plane",
        () => running.context.ingestStats.statusIgnored > ignoredBefore,
        30_000,
      );
      old.end(true);
      expect(await hostOf(running, host)).toMatchObject({ presence: "online", session: back.session });
    },
  );
});
