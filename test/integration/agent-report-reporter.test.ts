/**
 * The supervisor's reporter in this process (short timers passed in), against an in-process
 * Aedes broker and a state.db filled by real recorded runs: the window of unacknowledged
 * reports, the resend after the ack timeout, heartbeats, refreshes that do not stack, and
 * messages it must ignore (retained, malformed, another host's).
 */
import { afterAll, afterEach, describe, expect, it } from "vitest";
import { Reporter } from "../../agent/src/daemon/reporter.js";
import { systemClock } from "../../agent/src/host/clock.js";
import { HostFs } from "../../agent/src/host/fs.js";
import { silentLogger } from "../../agent/src/log.js";
import type { BrokerSettings } from "../../agent/src/report/settings.js";
import { StateStore } from "../../agent/src/state/db.js";
import { hostTopic } from "../../protocol/topics.js";
import { freePort } from "../support/ports.js";
import { cleanupTemp, tempDir } from "../support/repo.js";
import { AedesBroker, ControlPlane, outboxOf, until } from "../support/reporting.js";

afterAll(cleanupTemp);

const cleanup: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const f of cleanup.splice(0).reverse()) await f();
});

/** A state directory whose outbox holds `runs` reports (seq 1..runs). */
function stateWith(runs: number): string {
  const dir = tempDir();
  const state = StateStore.open(dir);
  for (let n = 1; n <= runs; n++) {
    const at = new Date(Date.UTC(2026, 0, 1, 0, n)).toISOString();
    state.recordRun(
      {
        id: `run-${n}`,
        startedAt: at,
        endedAt: at,
        source: "dir:x",
        commit: null,
        mode: "apply",
        result: "in-sync",
        changes: [],
        errors: [],
        summary: {},
      },
      { outboxLimit: 500, mode: "enforce", facts: { os: { arch: "amd64" } } },
    );
  }
  state.close();
  return dir;
}

async function setup(
  runs: number,
  options: Partial<ConstructorParameters<typeof Reporter>[0]> = {},
  splayMs = 0,
  /** Done by the control plane before the reporter connects. */
  before?: (cp: ControlPlane, host: string) => Promise<void>,
): Promise<{ cp: ControlPlane; reporter: Reporter; stateDir: string; host: string; triggers: string[] }> {
  const broker = new AedesBroker(await freePort());
  await broker.start();
  cleanup.push(() => broker.stop());
  const host = `rp-${Math.random().toString(16).slice(2, 10)}`;
  const cp = new ControlPlane(broker.url, host);
  await cp.connect();
  cleanup.push(() => cp.close());
  await before?.(cp, host);
  const stateDir = stateWith(runs);
  const triggers: string[] = [];
  const reporter = new Reporter({
    fs: new HostFs("/"),
    clock: systemClock,
    log: silentLogger,
    version: "test",
    trigger: (kind) => triggers.push(kind),
    ...options,
  });
  cleanup.push(() => reporter.stop());
  const settings: BrokerSettings = { url: broker.url, host, username: host, stateDir, splayMs };
  await reporter.configure(settings);
  await until("online", () => cp.of("status").some((s) => s.state === "online"));
  return { cp, reporter, stateDir, host, triggers };
}

describe("the reporter", () => {
  it("keeps at most maxInFlight reports unacknowledged, and sends the next ones as acks come", async () => {
    const { cp, stateDir } = await setup(5, { maxInFlight: 2 });
    await until("two reports", () => cp.of("report").length === 2);
    // Nothing more while those two wait (the next is published only on an ack).
    cp.ack(0);
    await until("the ack for nothing handled", () => cp.of("ack").length === 1);
    expect(cp.of("report").map((r) => r.seq)).toEqual([1, 2]);
    cp.ack(2);
    await until("two more", () => cp.of("report").length === 4);
    expect(outboxOf(stateDir).map((r) => r.seq)).toEqual([3, 4, 5]);
    cp.ack(4);
    await until("the last", () => cp.of("report").length === 5);
    cp.ack(5);
    await until("an empty outbox", () => outboxOf(stateDir).length === 0);
    expect(cp.of("report").map((r) => r.seq)).toEqual([1, 2, 3, 4, 5]);
  });

  it("deletes on an ack only the reports it has sent, however far the ack goes", async () => {
    const { cp, stateDir } = await setup(4, { maxInFlight: 2 });
    await until("two reports", () => cp.of("report").length === 2);
    // A control plane that stored seqs up to 1000 once (a state.db since lost) acks them.
    cp.ack(1000);
    await until("the next two", () => cp.of("report").length === 4);
    expect(outboxOf(stateDir).map((r) => r.seq)).toEqual([3, 4]);
    cp.ack(1000);
    await until("an empty outbox", () => outboxOf(stateDir).length === 0);
    expect(cp.of("report").map((r) => r.seq)).toEqual([1, 2, 3, 4]);
  });

  it("sends the unacknowledged reports again after the ack timeout, on the same connection", async () => {
    const { cp, reporter } = await setup(2, { ackTimeoutMs: 300 });
    await until("both sent twice", () => cp.of("report").length >= 4);
    expect(
      cp
        .of("report")
        .slice(0, 4)
        .map((r) => r.seq),
    ).toEqual([1, 2, 1, 2]);
    expect(new Set(cp.of("report").map((r) => r.session))).toEqual(new Set([reporter.session]));
  });

  it("sends again from the gap when the same ack comes twice while later reports were sent", async () => {
    // No ack timeout in this test: only the repeated ack can make the reporter send seq 2 again.
    const { cp, stateDir } = await setup(3, { ackTimeoutMs: 3_600_000 });
    await until("three reports", () => cp.of("report").length === 3);
    // Seq 2 was lost on its way to the store; 1 and 3 were stored: the acks stay at 1.
    cp.ack(1);
    cp.ack(1);
    await until("seq 2 and 3 again", () => cp.of("report").length === 5);
    expect(cp.of("report").map((r) => r.seq)).toEqual([1, 2, 3, 2, 3]);
    // Once per stuck value: a third ack of 1 sends nothing more. The acks are handled in order,
    // so once the outbox is empty (ack 3) the third ack of 1 was handled too.
    cp.ack(1);
    cp.ack(3);
    await until("an empty outbox", () => outboxOf(stateDir).length === 0);
    expect(cp.of("report")).toHaveLength(5);
  });

  it("ignores acks of another host, malformed ones, and retained acks and commands left on the broker", async () => {
    const { cp, host, stateDir, triggers } = await setup(2, {}, 0, async (cp, host) => {
      // Left retained before the agent connects: it gets them on subscribing, flagged retained.
      await cp.publishRetained(hostTopic(host, "ack"), JSON.stringify({ v: 1, host, upTo: 2 }));
      await cp.publishRetained(hostTopic(host, "cmd"), JSON.stringify({ v: 1, host, cmd: "converge" }));
    });
    await until("two reports", () => cp.of("report").length === 2);
    const ack = hostTopic(host, "ack");
    cp.raw(ack, JSON.stringify({ v: 1, host: "other", upTo: 2 }));
    cp.raw(ack, "{ not json");
    cp.raw(ack, JSON.stringify({ v: 1, host, upTo: -1 }));
    // Then a real ack for the first only: the outbox keeps the second.
    cp.ack(1);
    await until("report 1 gone", () => outboxOf(stateDir).length === 1);
    expect(outboxOf(stateDir).map((r) => r.seq)).toEqual([2]);
    expect(triggers).toEqual([]);
    await cp.clearRetainedOn(ack);
    await cp.clearRetainedOn(hostTopic(host, "cmd"));
  });

  it("beats every heartbeatMs", async () => {
    const { cp, reporter } = await setup(0, { heartbeatMs: 100 });
    await until("three heartbeats", () => cp.of("heartbeat").length >= 3);
    expect(cp.of("heartbeat")[0]).toMatchObject({ v: 1, session: reporter.session, at: expect.any(String) });
    expect(cp.invalid).toEqual([]);
  });

  it("runs a refresh after a random part of the splay, once however many refreshes came meanwhile", async () => {
    const { cp, triggers } = await setup(0, { random: () => 0.5 }, 600);
    cp.command("refresh");
    cp.fleetRefresh();
    cp.command("refresh");
    await until("the refresh", () => triggers.length === 1);
    expect(triggers).toEqual(["refresh"]);
    cp.command("converge");
    await until("the converge", () => triggers.length === 2);
    expect(triggers).toEqual(["refresh", "converge"]);
    cp.command("refresh");
    await until("a later refresh", () => triggers.length === 3);
    expect(triggers).toEqual(["refresh", "converge", "refresh"]);
  });
});
