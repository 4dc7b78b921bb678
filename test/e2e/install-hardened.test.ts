/**
 * End to end: the unit `driftless install` writes, with its hardening, in a booted Debian host
 * (systemd-nspawn). The agent runs under it as systemd starts it and still manages the host: it
 * installs a package from a local apt repository (dpkg and the maintainer scripts run under the
 * same restrictions), writes a file in /etc and starts a service through systemd. The hardening is
 * seen in force on the running process (a seccomp filter, a read-only cgroup tree, the nice
 * level), not only in the unit's text. Then install again: the same flags change nothing and
 * leave the agent running; another label updates the configuration and restarts it.
 *
 * The agent is the checkout's build (agentBinds: node /opt/driftless/bin/driftless.js); the
 * profile repository a directory bound at /srv/profiles.
 */
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse as parseYaml } from "yaml";
import { type AptRepo, createAptRepo, useAptRepo } from "../harness/deb.js";
import { agentBinds, bootHost, type TestHost } from "../harness/host.js";
import { hostSupport } from "../harness/skip.js";
import { waitFor } from "../support/mqtt.js";
import { cleanupTemp, fleet, makeRepo, profile } from "../support/repo.js";

const support = hostSupport();

const CLI = "/opt/driftless/bin/driftless.js";
const CONF = "/etc/dl-hello/greeting.conf";

describe.skipIf(!support.can)("driftless install's hardened unit in a booted Debian host", () => {
  let host: TestHost;
  let repo: AptRepo;
  const profilesDir = support.can
    ? makeRepo({
        "fleet.yaml": fleet(
          "  - match: { labels: { role: app } }\n    profiles: [app]\n  - match: { labels: { role: app-2 } }\n    profiles: [app]\n",
        ),
        "app.yaml": profile(
          "app",
          `packages:
  - { name: dl-hello, state: present }
files:
  - { path: ${CONF}, content: "hello from the hardened agent\\n", mode: "0640", notify: [service:dl-hello] }
services:
  - { name: dl-hello, enabled: true, state: running }
`,
        ),
      })
    : "";

  beforeAll(async () => {
    repo = await createAptRepo();
    await repo.publish({ name: "dl-hello", version: "1.0", service: { autostart: false } });
    host = await bootHost({
      name: `dl-inst-${process.pid}`,
      binds: [...agentBinds(), repo.bind, { source: profilesDir, target: "/srv/profiles" }],
    });
    await useAptRepo(host, repo);
  });

  afterAll(async () => {
    await host?.stop();
    await repo?.dispose();
    cleanupTemp();
  });

  const out = async (file: string, ...args: string[]) => (await host.exec(file, args)).stdout.trim();
  const driftless = (...args: string[]) => host.exec("node", [CLI, ...args], { env: { NO_COLOR: "1" } });
  const mainPid = async () => Number(await out("systemctl", "show", "-p", "MainPID", "--value", "driftless"));
  const INSTALL = ["install", "--source", "/srv/profiles", "--host", "edge-h", "--label", "role=app"];

  it("installs: the configuration made before is kept and merged, the unit started with its hardening", async () => {
    // An operator's file from before (a first run at once, then hourly): install merges its flags in.
    const etc = path.join(host.rootDir, "etc/driftless");
    mkdirSync(etc, { recursive: true });
    writeFileSync(
      path.join(etc, "agent.yaml"),
      "apiVersion: driftless/v1\nkind: AgentConfig\n# tuned for the test\nsource: { url: /nowhere, interval: 1h, splay: 0s }\n",
      { mode: 0o600 },
    );
    const install = await driftless(...INSTALL);
    expect(install.exitCode, install.stdout + install.stderr).toBe(2);
    expect(install.stdout).toContain("driftless.service is enabled and running");

    const config = readFileSync(path.join(etc, "agent.yaml"), "utf8");
    expect(config).toContain("# tuned for the test");
    expect(parseYaml(config)).toMatchObject({
      host: "edge-h",
      labels: { role: "app" },
      source: { url: "/srv/profiles", interval: "1h", splay: "0s" },
    });
    expect(await out("systemctl", "is-active", "driftless")).toBe("active");
    const show = await out(
      "systemctl",
      "show",
      "-p",
      "ProtectKernelLogs,ProtectControlGroups,RestrictRealtime,LockPersonality,SystemCallArchitectures,Nice,CPUWeight,IOWeight",
      "driftless",
    );
    expect(Object.fromEntries(show.split("\n").map((l) => l.split("=")))).toEqual({
      ProtectKernelLogs: "yes",
      ProtectControlGroups: "yes",
      RestrictRealtime: "yes",
      LockPersonality: "yes",
      SystemCallArchitectures: "native",
      Nice: "10",
      CPUWeight: "20",
      IOWeight: "20",
    });
  });

  it("the hardening is in force on the running agent: a seccomp filter, /sys/fs/cgroup read-only, nice 10, all capabilities", async () => {
    const pid = await mainPid();
    expect(pid).toBeGreaterThan(0);
    const status = await out("cat", `/proc/${pid}/status`);
    const field = (name: string) => new RegExp(`^${name}:\\s*(.*)$`, "m").exec(status)?.[1];
    expect(field("Seccomp")).toBe("2"); // a filter: SystemCallArchitectures, LockPersonality, RestrictRealtime...
    expect(field("NoNewPrivs")).toBe("0"); // setuid programs in maintainer scripts still work
    // Every capability kept (root managing the host): the bounding set is the host's own.
    expect(field("CapBnd")).toBe(/^CapBnd:\s*(.*)$/m.exec(await out("cat", "/proc/1/status"))?.[1]);
    const cgroupMount = (await out("cat", `/proc/${pid}/mountinfo`))
      .split("\n")
      .find((l) => l.split(" ")[4] === "/sys/fs/cgroup");
    expect(cgroupMount?.split(" ")[5]).toMatch(/^ro\b/);
    // /proc/PID/stat: the 19th field is the nice value (counted from after the command's ")").
    const stat = await out("cat", `/proc/${pid}/stat`);
    expect(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[16]).toBe("10");
  });

  it("under it the agent installs a package, writes /etc and starts the service (its first run, from the directory source)", async () => {
    const run = await waitFor(
      "a run of the service that changed the host",
      async () => {
        const status = await driftless("status", "--json");
        if (status.exitCode !== 0) return undefined;
        const runs = (JSON.parse(status.stdout) as { runs: { result: string; changes: { resource: string }[] }[] })
          .runs;
        return runs.find((r) => r.result !== "in-sync");
      },
      90_000,
    );
    expect(run, JSON.stringify(run)).toMatchObject({ result: "changed" });
    expect(run.changes.map((c) => c.resource)).toEqual(
      expect.arrayContaining(["package:dl-hello", `file:${CONF}`, "service:dl-hello"]),
    );
    // biome-ignore lint/suspicious/noTemplateCurlyInString: dpkg-query's own field syntax
    expect(await out("dpkg-query", "-W", "-f=${Status}", "dl-hello")).toBe("install ok installed");
    expect(readFileSync(path.join(host.rootDir, CONF), "utf8")).toBe("hello from the hardened agent\n");
    expect(await out("stat", "-c", "%a", CONF)).toBe("640");
    expect(await out("systemctl", "is-active", "dl-hello")).toBe("active");
    expect(await out("systemctl", "is-enabled", "dl-hello")).toBe("enabled");
    // Nothing the sandbox refused: no error in the agent's journal.
    const journal = await out("journalctl", "-u", "driftless", "-o", "cat", "--no-pager");
    expect(journal.split("\n").filter((l) => /"level":"(error|warn)"/.test(l))).toEqual([]);
  });

  it("install again: the same flags change nothing and leave the agent running; another label updates the configuration and restarts it", async () => {
    const pid = await mainPid();
    const same = await driftless(...INSTALL);
    expect(same.exitCode, same.stdout + same.stderr).toBe(0);
    expect(same.stdout).toContain("Nothing changed");
    expect(await mainPid()).toBe(pid);

    const other = await driftless(...INSTALL.slice(0, -1), "role=app-2");
    expect(other.exitCode, other.stdout + other.stderr).toBe(2);
    expect(other.stdout).toContain("file:/etc/driftless/agent.yaml");
    expect(other.stdout).toMatch(/service:driftless {2}restart/);
    expect(await out("systemctl", "is-active", "driftless")).toBe("active");
    const restarted = await mainPid();
    expect(restarted).toBeGreaterThan(0);
    expect(restarted).not.toBe(pid);
    expect(parseYaml(readFileSync(path.join(host.rootDir, "etc/driftless/agent.yaml"), "utf8"))).toMatchObject({
      labels: { role: "app-2" },
      source: { interval: "1h" },
    });
  });

  it("uninstall --purge removes the service; what it converged stays", async () => {
    const run = await driftless("uninstall", "--purge");
    expect(run.exitCode, run.stdout + run.stderr).toBe(2);
    expect(await out("systemctl", "show", "-p", "LoadState", "--value", "driftless")).toBe("not-found");
    expect(await out("systemctl", "is-active", "dl-hello")).toBe("active");
  });
});
