/**
 * End to end, a host that goes down hard: Debian hosts (systemd-nspawn) running driftless.service,
 * `driftlessctl serve` and a Git smart-HTTP server on this machine (test/support/fleet-hosts.ts).
 *
 * - The agent is killed with SIGKILL (the service's whole control group: the daemon, its run,
 *   apt and dpkg under it) in the middle of an apply: systemd restarts it, the host converges,
 *   no file is half-written and the state database is intact.
 * - A host is rebooted: the agent comes back by itself and reports.
 *
 * Two hosts booted once for the file, one per test; each test publishes its own profile, assigned
 * to its host by name.
 */
import * as path from "node:path";
import Database from "better-sqlite3";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AGENT_STATE_DIR, driftless } from "../harness/agent.js";
import type { TestHost } from "../harness/host.js";
import { eventually } from "../support/fleet.js";
import { E2EFleet, FLEET_START_TIMEOUT_MS, fleetSupport } from "../support/fleet-hosts.js";
import { fleet as fleetDoc, profile } from "../support/repo.js";

const support = fleetSupport();

/** Where dl-slow's postinst says it started, and waits until the test lets it go on. */
const STARTED = "/run/dl-slow/started";
const GO = "/run/dl-slow/go";

/** A package whose configuration waits for the test: a run can be caught in the middle of an apply. */
const SLOW_PACKAGE = {
  name: "dl-slow",
  version: "1.0",
  postinst: `mkdir -p /run/dl-slow\ntouch ${STARTED}\nwhile [ ! -e ${GO} ]; do sleep 0.2; done\n`,
};

describe.skipIf(!support.can)("hosts that go down hard", () => {
  let fleet: E2EFleet;
  let crashing: TestHost;
  let rebooting: TestHost;

  beforeAll(async () => {
    fleet = await E2EFleet.start({ hosts: 2, packages: [SLOW_PACKAGE] });
    [crashing, rebooting] = fleet.hosts as [TestHost, TestHost];
  }, FLEET_START_TIMEOUT_MS);

  afterAll(async () => {
    await fleet?.stop();
  });

  const out = async (host: TestHost, file: string, ...args: string[]) => (await host.exec(file, args)).stdout.trim();

  /** Publishes `body` as the profile of `host` alone (by host name); returns the commit. */
  async function publishFor(host: TestHost, files: Record<string, string>, body: string): Promise<string> {
    await fleet.install(host);
    return fleet.publish({
      "fleet.yaml": fleetDoc(`  - match: { hostname: ${host.name} }\n    profiles: [mine]\n`),
      "mine.yaml": profile("mine", body),
      ...files,
    });
  }

  it("SIGKILL in the middle of an apply: systemd restarts the agent, the host converges, no file half-written, state database intact", async () => {
    const host = crashing;
    // Files written before the package (which waits in its postinst), and files after it.
    const content = (name: string) => `${name}\n${"x".repeat(256 * 1024)}\n`;
    const names = Array.from({ length: 8 }, (_, i) => [`before-${i}`, `after-${i}`]).flat();
    const files = Object.fromEntries(names.map((n) => [`files/${n}`, content(n)]));
    const before = names.filter((n) => n.startsWith("before-"));
    const body = [
      "packages:",
      `  - { name: dl-slow, state: present, after: [${before.map((n) => `"file:/etc/crash/${n}.conf"`).join(", ")}] }`,
      "files:",
      ...names.map(
        (n) =>
          `  - { path: /etc/crash/${n}.conf, source: files/${n}, mode: "0644"${n.startsWith("after-") ? ', after: ["package:dl-slow"]' : ""} }`,
      ),
      "",
    ].join("\n");
    await host.exec("rm", ["-rf", "/run/dl-slow"]);
    const commit = await publishFor(host, files, body);
    const mainPid = await out(host, "systemctl", "show", "-p", "MainPID", "--value", "driftless");
    const restarts = Number(await out(host, "systemctl", "show", "-p", "NRestarts", "--value", "driftless"));

    try {
      expect(await fleet.webhook(commit)).toMatchObject({ status: 202 });
      // The run is under way: the files before the package are written, dpkg is configuring it.
      await eventually(
        "dl-slow's postinst to start",
        async () => (await host.exec("test", ["-e", STARTED])).exitCode === 0,
        60_000,
      );
      const killedAt = new Date().toISOString();
      const killed = await host.killUnit("driftless");
      expect(killed.length, "the daemon, its run, apt, dpkg, the postinst").toBeGreaterThanOrEqual(4);
      await host.execChecked("touch", [GO]);

      // systemd restarts the service (Restart=always) and the new agent converges.
      await eventually(
        "systemd to restart driftless",
        async () =>
          Number(await out(host, "systemctl", "show", "-p", "NRestarts", "--value", "driftless")) > restarts &&
          (await out(host, "systemctl", "is-active", "driftless")) === "active",
        60_000,
      );
      expect(await out(host, "systemctl", "show", "-p", "MainPID", "--value", "driftless")).not.toBe(mainPid);
      const [detail] = await fleet.untilHosts(
        "the host in sync after the restart",
        [host.name],
        (h) => h.sync === "in-sync" && h.commit === commit && h.lastRun !== null && h.lastRun.endedAt > killedAt,
        120_000,
      );
      expect(detail?.online).toBe(true);
      // The killed run had written the files before the package; the new one finished the rest
      // (as the host recorded it: the report to the API leaves out changes beyond its size limit).
      const [run] = await fleet.hostRuns(host, 1);
      expect(run).toMatchObject({ commit, result: "changed", id: detail?.lastRun?.runId });
      expect((run?.changes ?? []).map((c) => c.resource).sort()).toEqual(
        [
          "package:dl-slow",
          ...names.filter((n) => n.startsWith("after-")).map((n) => `file:/etc/crash/${n}.conf`),
        ].sort(),
      );
    } finally {
      await host.exec("touch", [GO]);
    }

    expect(await out(host, "dpkg-query", "-W", "-f", ["$", "{db:Status-Abbrev}"].join(""), "dl-slow")).toBe("ii");
    for (const name of names) {
      expect(fleet.read(host, `/etc/crash/${name}.conf`), `/etc/crash/${name}.conf whole`).toBe(content(name));
    }
    expect(await out(host, "find", "/etc", "-name", ".driftless-*")).toBe("");

    // The state database: readable by the agent, and whole.
    const status = await driftless(host, "status", "--json");
    expect(status.exitCode, status.stderr).toBe(0);
    const runs = (JSON.parse(status.stdout) as { runs: Array<{ commit: string; result: string }> }).runs;
    expect(runs[0]).toMatchObject({ commit, result: "changed" });
    const db = new Database(path.join(host.rootDir, AGENT_STATE_DIR, "state.db"), { readonly: true });
    try {
      expect(db.pragma("integrity_check", { simple: true })).toBe("ok");
    } finally {
      db.close();
    }
  });

  it("a rebooted host: the agent comes back by itself and reports (online again, a new session)", async () => {
    const host = rebooting;
    const commit = await publishFor(host, {}, 'files:\n  - { path: /etc/reboot/app.conf, content: "v1\\n" }\n');
    expect(await fleet.webhook(commit)).toMatchObject({ status: 202 });
    const [before] = await fleet.untilHosts(
      "the host in sync",
      [host.name],
      (h) => h.sync === "in-sync" && h.commit === commit,
    );
    if (!before) throw new Error("no host detail");
    const pid = host.pid;

    await host.reboot();
    expect(host.pid).not.toBe(pid);
    expect(await out(host, "systemctl", "is-enabled", "driftless")).toBe("enabled");

    const [after] = await fleet.untilHosts(
      "the host online again in a new session, with a run after the boot",
      [host.name],
      (h) => h.online && h.session > before.session && h.lastRun !== null && h.lastRun.seq > (before.lastRun?.seq ?? 0),
      120_000,
    );
    expect(after).toMatchObject({ sync: "in-sync", commit });
    // The shutdown was clean: the agent said offline (not lost) before the reboot.
    const history = (after?.history ?? []).filter((e) => e.field === "presence" && e.at > (before.lastSeen ?? ""));
    expect(history.map((e) => e.to).reverse()).toEqual(["offline", "online"]);
    // The run after the boot is the new agent's (the host's own records say so too).
    const [run] = (
      JSON.parse((await driftless(host, "status", "--json", "--limit", "1")).stdout) as {
        runs: Array<{ id: string }>;
      }
    ).runs;
    expect(run?.id).toBe(after?.lastRun?.runId);
    // A machine that booted again still has its files.
    expect(fleet.read(host, "/etc/reboot/app.conf")).toBe("v1\n");
  });
});
