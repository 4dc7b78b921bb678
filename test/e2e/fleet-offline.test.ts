/**
 * End to end, the fleet when a part of it goes away: three Debian hosts (systemd-nspawn) running
 * driftless.service, `driftlessctl serve` (embedded broker, SQLite) and a Git smart-HTTP server on
 * this machine (test/support/fleet-hosts.ts).
 *
 * - The Git server stops: hosts keep converging from their cached commit (drift still corrected),
 *   say `source: offline`, and catch up by themselves once it is back.
 * - serve (and with it the broker) stops while hosts run: every report waits in the host's outbox
 *   and arrives once serve is back on the same data directory, none lost, none twice.
 *
 * Hosts run with a 1 h interval: runs happen on `systemctl reload driftless` (SIGHUP), on a push's
 * webhook, or on the agent's own retry after a failed fetch. The hosts are booted once for the
 * file; each test publishes its own profile and restores what it stopped.
 */
import * as path from "node:path";
import Database from "better-sqlite3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AGENT_STATE_DIR, type StatusRun } from "../harness/agent.js";
import type { TestHost } from "../harness/host.js";
import { eventually } from "../support/fleet.js";
import { E2EFleet, FLEET_START_TIMEOUT_MS, fleetSupport } from "../support/fleet-hosts.js";
import { fleet as fleetDoc, profile } from "../support/repo.js";

const support = fleetSupport();

describe.skipIf(!support.can)("a fleet of three hosts when Git or the broker goes away", () => {
  let fleet: E2EFleet;

  beforeAll(async () => {
    fleet = await E2EFleet.start({ hosts: 3 });
  }, FLEET_START_TIMEOUT_MS);

  afterAll(async () => {
    await fleet?.stop();
  });

  /** Every host in enforce mode following `files`, in sync on it; returns the commit. */
  async function converged(files: Record<string, string>): Promise<string> {
    await Promise.all(fleet.hosts.map((host) => fleet.install(host)));
    const commit = await fleet.publish(files);
    expect(await fleet.webhook(commit)).toMatchObject({ status: 202 });
    await fleet.untilHosts("all hosts in sync", fleet.ids, (h) => h.sync === "in-sync" && h.commit === commit);
    return commit;
  }

  const appTree = (file: string, content: string) => ({
    "fleet.yaml": fleetDoc("  - match: {}\n    profiles: [app]\n"),
    "app.yaml": profile("app", `files:\n  - { path: ${file}, content: "${content}\\n" }\n`),
  });

  /** The state database's outbox: reports not yet acknowledged by the control plane. */
  function outboxSize(host: TestHost): number {
    const db = new Database(path.join(host.rootDir, AGENT_STATE_DIR, "state.db"), { readonly: true });
    try {
      return (db.prepare("SELECT count(*) AS n FROM outbox").get() as { n: number }).n;
    } finally {
      db.close();
    }
  }

  it("Git server stopped: hosts converge from their cache (drift corrected, source offline), and catch up when it returns", async () => {
    const file = "/etc/offline/app.conf";
    const cached = await converged(appTree(file, "v1"));
    const seqs = new Map(await Promise.all(fleet.ids.map(async (id) => [id, await fleet.lastSeq(id)] as const)));
    const before = new Map<string, Set<string>>();
    for (const host of fleet.hosts) before.set(host.name, new Set((await fleet.hostRuns(host)).map((r) => r.id)));

    await fleet.git.stop();
    let next: string;
    try {
      // Hand edits while the server is down; a run on each host (SIGHUP) cannot fetch.
      for (const host of fleet.hosts) fleet.write(host, file, "edited by hand\n");
      await Promise.all(fleet.hosts.map((host) => fleet.reload(host)));
      const offline = await fleet.untilHosts(
        "an offline run on every host",
        fleet.ids,
        (h) => h.lastRun !== null && h.lastRun.seq > (seqs.get(h.id) ?? 0) && h.sync === "in-sync",
      );
      for (const detail of offline) expect(detail.commit).toBe(cached);
      // A commit reaches the repository while the hosts cannot see it.
      next = await fleet.publish(appTree(file, "v2"));
    } finally {
      // Back soon: each failed fetch doubles the agent's wait before its next try.
      await fleet.git.start();
    }
    for (const host of fleet.hosts) {
      // The run that put the file back (the agent may have retried its fetch since: more runs).
      const run = (await fleet.hostRuns(host)).find((r) => !before.get(host.name)?.has(r.id) && r.result === "changed");
      expect(run, `${host.name}: drift corrected offline`).toMatchObject({ source: "offline", commit: cached });
      expect(run?.errors.map((e) => e.code)).toContain("EFETCH");
      const reported = await eventually(`${host.name}: the offline run in the API`, async () =>
        (await fleet.apiRuns(host.name)).find((r) => r.runId === run?.id),
      );
      expect(reported).toMatchObject({ commit: cached, result: "changed", sync: "in-sync" });
      expect((reported.errors as Array<{ code: string }>).map((e) => e.code)).toContain("EFETCH");
      // The run says where it converged from; the control plane keeps it.
      expect(reported.source, "the API's run says source offline").toBe("offline");
    }
    // No trigger: each agent retries its failed fetch on its own (capped backoff) and catches up.
    await fleet.untilHosts(
      "every host caught up",
      fleet.ids,
      (h) => h.sync === "in-sync" && h.commit === next,
      120_000,
    );
    for (const host of fleet.hosts) {
      expect(fleet.read(host, file)).toBe("v2\n");
      const run = (await fleet.hostRuns(host)).find((r) => r.commit === next && r.result === "changed");
      expect(run).toMatchObject({ source: "git", errors: [] });
    }
  });

  it("serve (and its broker) stopped during several runs: every report arrives once it is back, none lost or doubled", async () => {
    const file = "/etc/broker/app.conf";
    await converged(appTree(file, "v1"));
    const RUNS = 3;
    const runsBefore = new Map<string, number>();
    for (const host of fleet.hosts) runsBefore.set(host.name, (await fleet.hostRuns(host)).length);

    await fleet.serve.stop();
    try {
      // Several runs on each host while nobody listens: each corrects a hand edit.
      await Promise.all(
        fleet.hosts.map(async (host) => {
          for (let i = 1; i <= RUNS; i++) {
            fleet.write(host, file, `edit ${i}\n`);
            const count = (await fleet.hostRuns(host)).length;
            await fleet.reload(host);
            await untilStatusRuns(host, `run ${i} recorded`, (runs) => runs.length > count);
            expect(fleet.read(host, file)).toBe("v1\n");
          }
        }),
      );
      for (const host of fleet.hosts) {
        expect(outboxSize(host), `${host.name}: reports waiting`).toBeGreaterThanOrEqual(RUNS);
      }
    } finally {
      await fleet.serve.start(); // same data directory, same ports
    }

    for (const host of fleet.hosts) {
      await untilStatusRuns(host, "the outbox to drain", () => outboxSize(host) === 0, 120_000);
      const local = await fleet.hostRuns(host);
      expect(local.length - (runsBefore.get(host.name) ?? 0)).toBeGreaterThanOrEqual(RUNS);
      const reported = (await fleet.apiRuns(host.name)).filter((r) => r.kind === "run");
      const ids = reported.map((r) => r.runId);
      expect(new Set(ids).size, `${host.name}: no run stored twice`).toBe(ids.length);
      // Every run the host recorded is in the API, and nothing else: same ids, same results.
      expect(reported.map((r) => [r.runId, r.result, r.commit])).toEqual(
        local
          .slice()
          .reverse()
          .map((r) => [r.id, r.result, r.commit]),
      );
      const seqs = reported.map((r) => r.seq);
      expect(seqs).toEqual([...seqs].sort((a, b) => a - b));
    }
    await fleet.untilHosts("every host online again", fleet.ids, (h) => h.online);
  });

  /** Polls the host's own run list until `ok` holds. */
  async function untilStatusRuns(
    host: TestHost,
    what: string,
    ok: (runs: StatusRun[]) => boolean,
    timeoutMs = 60_000,
  ): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (ok(await fleet.hostRuns(host))) return;
      if (Date.now() > deadline) throw new Error(`${host.name}: timed out waiting for ${what}`);
      await new Promise((resolve) => setTimeout(resolve, 250));
    }
  }
});
