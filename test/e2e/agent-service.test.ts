/**
 * End to end: `driftless install` inside a booted Debian host (systemd-nspawn), then the agent
 * as systemd runs it (driftless.service), following a Git repository served over smart HTTP by
 * `git http-backend` on this machine's loopback, which the host shares. No mocks: real systemd,
 * journald, Git over HTTP, the built CLI at /opt/driftless (a copy of the checkout's build, see
 * agentBuild() in test/harness/agent.ts) run by this machine's Node at /usr/bin/node.
 *
 * One host for the file; the tests run in order, each building on what the previous one left
 * (installed, converging every 2 s, a commit pushed, ...). What the service did is read back from
 * the files it converged (through the host's root on this machine), `driftless status --json`
 * and `journalctl -u driftless` inside the host. A test that fails still leaves the host in the
 * state the next tests expect.
 */
import { existsSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse as parseYaml, stringify as stringifyYaml } from "yaml";
import { type AgentBuild, agentBuild, type StatusRun } from "../harness/agent.js";
import { bootHost, type TestHost } from "../harness/host.js";
import { sleep } from "../harness/process.js";
import { hostSupport } from "../harness/skip.js";
import { cleanup, createRepo, type GitServer, startGitServer, type WorkRepo } from "../support/git-server.js";

const support = hostSupport();

const CLI = "/opt/driftless/bin/driftless.js";
const CONFIG = "/etc/driftless/agent.yaml";
const UNIT = "/etc/systemd/system/driftless.service";
const STATE_DIR = "/var/lib/driftless";
/** The file the gateway profile writes. */
const TARGET = "/etc/edge/gateway.conf";

// ---------------------------------------------------------------------------------------------
// The profile repository

const FLEET = `apiVersion: driftless/v1
kind: Fleet
assignments:
  - match: { labels: { role: gateway } }
    profiles: [gateway]
  - match: { labels: { role: database } }
    profiles: [database]
`;

function gatewayProfile(greeting: string): string {
  return `apiVersion: driftless/v1
kind: Profile
name: gateway
vars: { greeting: "${greeting}", port: 1883 }
files:
  - path: ${TARGET}
    template: files/gateway.conf.liquid
    mode: "0640"
`;
}

/** A profile this host must not get (its label says gateway). */
const DATABASE = `apiVersion: driftless/v1
kind: Profile
name: database
files:
  - { path: /etc/edge/database.conf, content: "not for gateways\\n" }
`;

const TEMPLATE = `# {{ host.name }} ({{ labels.role }}) on {{ facts.os.codename }}/{{ facts.os.arch }}: managed by driftless
greeting={{ vars.greeting }}
port={{ vars.port }}
`;

/** What the template renders to on the host. */
const rendered = (greeting: string) =>
  `# edge-1 (gateway) on bookworm/${process.arch === "arm64" ? "arm64" : "amd64"}: managed by driftless\ngreeting=${greeting}\nport=1883\n`;

// ---------------------------------------------------------------------------------------------
// What the agent prints

interface LogLine {
  time: string;
  level: string;
  msg: string;
  [field: string]: unknown;
}

/** Polls `check` until it returns something other than undefined/false/null. */
async function until<T>(
  what: string,
  check: () => Promise<T | undefined | false | null>,
  timeoutMs: number,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined && value !== false && value !== null) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(200);
  }
}

// ---------------------------------------------------------------------------------------------

describe.skipIf(!support.can)("driftless.service in a booted Debian host, following Git", () => {
  let host: TestHost;
  let server: GitServer;
  let repo: WorkRepo;
  let agent: AgentBuild | undefined;
  /** What the service recorded and logged while it was being stopped mid-fetch. */
  let stopWindow: { runs: StatusRun[]; logs: LogLine[] } | undefined;
  /** The commits pushed so far, oldest first. */
  const commits: string[] = [];

  beforeAll(async () => {
    server = await startGitServer();
    repo = await createRepo(server, "fleet");
    await repo.writeFiles({
      "fleet.yaml": FLEET,
      "gateway.yaml": gatewayProfile("hello"),
      "database.yaml": DATABASE,
      "files/gateway.conf.liquid": TEMPLATE,
    });
    commits.push(await repo.commit("first release"));
    await repo.push();
    agent = await agentBuild();
    host = await bootHost({ name: `dl-svc-${server.port}`, binds: agent.binds });
  });

  afterAll(async () => {
    await host?.stop();
    await cleanup();
    agent?.dispose();
  });

  const onHost = (rel: string) => path.join(host.rootDir, rel);
  const out = async (file: string, ...args: string[]) => (await host.exec(file, args)).stdout.trim();
  const driftless = (...args: string[]) => host.exec("node", [CLI, ...args], { env: { NO_COLOR: "1" } });

  async function runs(): Promise<StatusRun[]> {
    const result = await driftless("status", "--json", "--limit", "50");
    expect(result.exitCode, result.stderr).toBe(0);
    return (JSON.parse(result.stdout) as { runs: StatusRun[] }).runs;
  }

  /** A run recorded after `after` (an ISO time) that satisfies `ok`. */
  const runAfter = (what: string, after: string, ok: (run: StatusRun) => boolean, timeoutMs = 20_000) =>
    until(what, async () => (await runs()).find((r) => r.startedAt > after && ok(r)), timeoutMs);

  /** The target file's content, or null. */
  const target = () => {
    try {
      return readFileSync(onHost(TARGET), "utf8");
    } catch {
      return null;
    }
  };

  /** The agent's journal: its JSON lines, parsed, and everything else. */
  async function journal(): Promise<{ logs: LogLine[]; other: string[] }> {
    const text = await out("journalctl", "-u", "driftless", "-o", "cat", "--no-pager");
    const logs: LogLine[] = [];
    const other: string[] = [];
    for (const line of text.split("\n")) {
      if (!line.startsWith("{")) {
        if (line.trim()) other.push(line);
        continue;
      }
      logs.push(JSON.parse(line) as LogLine);
    }
    return { logs, other };
  }

  /** Changes keys of `source:` in the agent's configuration (an existing file: its mode stays 0600). */
  function setSource(values: Record<string, string>): void {
    const config = parseYaml(readFileSync(onHost(CONFIG), "utf8")) as { source: Record<string, unknown> };
    Object.assign(config.source, values);
    writeFileSync(onHost(CONFIG), stringifyYaml(config));
  }

  /** Host time now, as the agent records it. */
  const hostNow = () => new Date().toISOString();

  it("install writes the unit, enables and starts driftless.service (exit 2)", async () => {
    const install = await driftless(
      "install",
      "--source",
      server.url("fleet"),
      "--host",
      "edge-1",
      "--label",
      "role=gateway",
    );
    expect(install.exitCode, install.stdout + install.stderr).toBe(2);

    expect(await out("systemctl", "is-enabled", "driftless")).toBe("enabled");
    expect(await out("systemctl", "is-active", "driftless")).toBe("active");

    // The unit runs the agent with this very program: the host's node, the checkout's CLI.
    const execStart = await out("systemctl", "show", "-p", "ExecStart", "--value", "driftless");
    expect(execStart).toContain("path=/usr/bin/node");
    expect(execStart).toMatch(
      /argv\[\]=\/usr\/bin\/node .*\/opt\/driftless\/bin\/driftless\.js agent --config \/etc\/driftless\/agent\.yaml/,
    );
    const pid = Number(await out("systemctl", "show", "-p", "MainPID", "--value", "driftless"));
    expect(pid).toBeGreaterThan(0);
    const cmdline = (await out("cat", `/proc/${pid}/cmdline`)).split("\0").filter(Boolean);
    expect(cmdline.slice(-4)).toEqual([CLI, "agent", "--config", CONFIG]);

    // The configuration from the flags, private; the state folder, private.
    const config = parseYaml(readFileSync(onHost(CONFIG), "utf8")) as Record<string, unknown>;
    expect(config).toMatchObject({
      kind: "AgentConfig",
      host: "edge-1",
      labels: { role: "gateway" },
      mode: "enforce",
      source: { url: server.url("fleet"), ref: "main" },
    });
    expect((await out("stat", "-c", "%a", CONFIG, STATE_DIR)).split("\n")).toEqual(["600", "700"]);
  });

  // Minimal Debian hosts (minbase, containers, IoT images) have no /bin/kill (it comes with
  // procps): the unit's ExecReload must not need it (agent/src/cli/install.ts, unitFile()).
  it("systemctl reload driftless passes SIGHUP on: the agent reloads its configuration", async () => {
    // A short interval and no splay, so the next tests see timer runs within seconds.
    setSource({ interval: "2s", splay: "0s" });

    const reload = await host.exec("systemctl", ["reload", "driftless"]);
    const failed = reload.exitCode !== 0;
    if (failed) {
      // So that the next tests stand on their own: the signal ExecReload should have sent.
      await host.execChecked("systemctl", ["kill", "--kill-whom=main", "--signal=SIGHUP", "driftless"]);
    }
    const why = `${reload.stderr}\n${await out("systemctl", "status", "--no-pager", "-n", "5", "driftless")}`;
    expect(failed ? why : "", "systemctl reload driftless").toBe("");
    expect(await out("systemctl", "is-active", "driftless")).toBe("active");
    const { logs } = await until(
      "the agent to log the reload",
      async () => {
        const j = await journal();
        return j.logs.some((l) => l.msg === "reloading the configuration") && j;
      },
      5_000,
    );
    expect(logs.filter((l) => l.msg === "reloading the configuration")).toHaveLength(1);
  });

  // The first run after start waits a random part of the splay (1 min by default); a SIGHUP
  // meanwhile (after `install`, a reload with a new configuration, as the docs suggest) must cut
  // that wait short rather than queue a run behind it (agent/src/daemon/supervisor.ts). Made
  // deterministic here with a 1 h splay.
  it("SIGHUP while the first run waits out its splay runs at once with the new configuration", async () => {
    setSource({ interval: "2s", splay: "1h" });
    const restartedAt = hostNow();
    await host.execChecked("systemctl", ["restart", "driftless"]);
    // The path under test: the new process's first run has said it waits, random() * 1 h. A signal
    // sent before that would test another path (the run under way), or, before the process has its
    // handler, kill it (systemd restarts it after RestartSec).
    await until(
      "the first run to wait out its splay",
      async () => (await journal()).logs.some((l) => l.msg === "first run after the splay" && l.time > restartedAt),
      20_000,
    );
    setSource({ interval: "2s", splay: "0s" });
    await host.execChecked("systemctl", ["kill", "--kill-whom=main", "--signal=SIGHUP", "driftless"]);
    const run = await runAfter("a run after the SIGHUP", restartedAt, () => true, 10_000).catch(() => null);
    if (run === null) {
      // So that the next tests stand on their own: a restart reads the new configuration.
      await host.execChecked("systemctl", ["restart", "driftless"]);
    }
    expect(run === null ? "no run within 10 s of the SIGHUP (still waiting in the old splay)" : "").toBe("");
  });

  it("has converged the profile of its labels from the pushed commit: status shows the commit, source git", async () => {
    await until("the gateway file", async () => target(), 20_000);
    expect(target()).toBe(rendered("hello"));
    expect((await out("stat", "-c", "%a %U %G", TARGET)).trim()).toBe("640 root root");
    // fleet.yaml selected by label: the database profile is not this host's.
    expect(existsSync(onHost("/etc/edge/database.conf"))).toBe(false);

    const all = await runs();
    const first = all.find((r) => r.result === "changed");
    expect(first, JSON.stringify(all, null, 2)).toMatchObject({
      commit: commits[0],
      source: "git",
      mode: "apply",
      result: "changed",
    });
    expect(first?.changes.map((c) => c.resource)).toEqual([`file:${TARGET}`]);
    // Then the timer, on the reloaded 2 s interval: more runs, in sync, same commit.
    const next = await runAfter("a timer run after the first", first?.startedAt ?? "", () => true, 10_000);
    expect(next).toMatchObject({ commit: commits[0], source: "git", result: "in-sync" });
    const gapMs = Date.parse(next.startedAt) - Date.parse(first?.endedAt ?? "");
    expect(gapMs).toBeGreaterThanOrEqual(1_900);
    expect(gapMs).toBeLessThan(5_000);
  });

  it("a new commit pushed reaches the host on the next timer run", async () => {
    await repo.writeFiles({ "gateway.yaml": gatewayProfile("bonjour") });
    commits.push(await repo.commit("second release"));
    const pushedAt = hostNow();
    await repo.push();

    await until("the new greeting", async () => target() === rendered("bonjour"), 15_000);
    const run = await runAfter("the run of the new commit", pushedAt, (r) => r.commit === commits[1]);
    expect(run).toMatchObject({ source: "git", result: "changed", commit: commits[1] });
    expect(run.changes).toMatchObject([{ resource: `file:${TARGET}`, action: "update" }]);
  });

  it("a file deleted by hand comes back on the next timer run (drift corrected)", async () => {
    const deletedAt = hostNow();
    rmSync(onHost(TARGET));
    await until("the file to come back", async () => target(), 15_000);
    expect(target()).toBe(rendered("bonjour"));
    const run = await runAfter("the run that corrected it", deletedAt, (r) => r.result === "changed");
    expect(run).toMatchObject({ commit: commits[1], source: "git" });
    expect(run.changes).toMatchObject([{ resource: `file:${TARGET}`, action: "create" }]);
  });

  it("logs one JSON object per line to the journal, with levels, and 'run finished' with the commit", async () => {
    const { logs, other } = await journal();
    // What is not JSON is systemd's own lines about the unit (Started, Reloading, ...).
    expect(other.filter((line) => !/driftless/i.test(line))).toEqual([]);
    expect(logs.length).toBeGreaterThan(5);
    for (const line of logs) {
      expect(["debug", "info", "warn", "error"]).toContain(line.level);
      expect(Number.isNaN(Date.parse(line.time)), line.time).toBe(false);
      expect(typeof line.msg).toBe("string");
    }
    expect(logs.find((l) => l.msg === "agent started")).toMatchObject({ level: "info", pid: expect.any(Number) });
    expect(logs.find((l) => l.msg === "run started")).toMatchObject({ level: "info", fetch: true });
    const finished = logs.filter((l) => l.msg === "run finished");
    expect(finished.length).toBeGreaterThan(3);
    for (const line of finished) {
      expect(line).toMatchObject({ level: "info", source: "git", run: expect.any(String) });
      expect(commits).toContain(line.commit);
    }
    expect(finished.at(-1)).toMatchObject({ commit: commits[1] });
    expect(finished.filter((l) => l.result === "changed").map((l) => l.commit)).toEqual([
      commits[0], // the first run
      commits[1], // the pushed commit
      commits[1], // the drift corrected
    ]);
    expect(finished.some((l) => l.result === "in-sync")).toBe(true);
    expect(logs.filter((l) => l.level === "error" || l.level === "warn")).toEqual([]);
  });

  it("systemctl stop returns within 10 s, even during a slow fetch; start brings it back and it runs again", async () => {
    // A new commit whose pack the server sends slowly (over 60 s): the run is mid-fetch.
    await repo.writeFiles({ "gateway.yaml": gatewayProfile("salut") });
    commits.push(await repo.commit("third release"));
    server.delay(60_000);
    const fetching = server.requests.length;
    await repo.push();
    await until(
      "a slow upload-pack under way",
      async () => server.requests.slice(fetching).some((r) => r.path.endsWith("/git-upload-pack") && !r.done),
      10_000,
    );

    const stopRequestedAt = hostNow();
    const started = Date.now();
    const stop = await host.exec("systemctl", ["stop", "driftless"]);
    const stopMs = Date.now() - started;
    console.info(`[agent-service] systemctl stop during a fetch took ${stopMs} ms`);
    expect(stop.exitCode, stop.stderr).toBe(0);
    expect(stopMs).toBeLessThan(10_000);
    expect(await out("systemctl", "is-active", "driftless")).toBe("inactive");
    // Stopped by itself, not killed by systemd after TimeoutStopSec.
    expect(await out("systemctl", "show", "-p", "Result", "--value", "driftless")).toBe("success");
    const { logs } = await journal();
    expect(logs.at(-1)).toMatchObject({ msg: "agent stopped" });
    expect(target()).toBe(rendered("bonjour"));
    stopWindow = {
      runs: (await runs()).filter((r) => r.endedAt > stopRequestedAt),
      logs: logs.slice(logs.map((l) => l.msg).lastIndexOf("stopping")),
    };

    // Nothing runs while it is stopped.
    const stoppedAt = hostNow();
    server.delay(null);
    await sleep(2_500);
    expect((await runs()).filter((r) => r.startedAt > stoppedAt)).toEqual([]);

    const startedAt = hostNow();
    await host.execChecked("systemctl", ["start", "driftless"]);
    expect(await out("systemctl", "is-active", "driftless")).toBe("active");
    const run = await runAfter("the run of the third commit", startedAt, (r) => r.commit === commits[2], 15_000);
    expect(run).toMatchObject({ source: "git", result: "changed" });
    expect(target()).toBe(rendered("salut"));
  });

  // SIGTERM cancels a fetch under way, and the cancelled fetch is not taken for a failed one: no
  // "fetch failed" warning, no converging from the cached commit after the stop, no `source:
  // offline` run with an EFETCH error (docs/agent.md, "Stopping": the run is recorded as
  // interrupted; agent/src/daemon/cycle.ts, runCycle()).
  it("a run stopped mid-fetch is not recorded as an offline run with a fetch error", () => {
    expect(stopWindow, "the previous test did not get to stop the service").toBeDefined();
    const { runs: stopped, logs } = stopWindow ?? { runs: [], logs: [] };
    expect(stopped.filter((r) => r.source === "offline" || JSON.stringify(r.errors).includes("EFETCH"))).toEqual([]);
    expect(logs.filter((l) => l.level === "warn" || l.level === "error")).toEqual([]);
    for (const run of stopped) expect(run.result).toBe("interrupted");
  });

  it("keeps converging from the cached commit while the Git server is down (source offline), then goes back to git", async () => {
    await server.stop();
    try {
      const downAt = hostNow();
      const offline = await runAfter("an offline run", downAt, (r) => r.source === "offline", 10_000);
      expect(offline).toMatchObject({ commit: commits[2], result: "in-sync" });
      expect(JSON.stringify(offline.errors)).toMatch(/EFETCH|ECONNREFUSED|fetch/i);

      const deletedAt = hostNow();
      rmSync(onHost(TARGET));
      await until("the file to come back offline", async () => target(), 15_000);
      expect(target()).toBe(rendered("salut"));
      const corrected = await runAfter("the offline run that corrected it", deletedAt, (r) => r.result === "changed");
      expect(corrected).toMatchObject({ commit: commits[2], source: "offline" });
      expect(await out("systemctl", "is-active", "driftless")).toBe("active");
    } finally {
      await server.start();
    }
    const backAt = hostNow();
    const back = await runAfter("a git run once the server is back", backAt, (r) => r.source === "git", 15_000);
    expect(back).toMatchObject({ commit: commits[2], result: "in-sync", errors: [] });
    // Offline runs warn, they do not fail.
    const { logs } = await journal();
    expect(logs.some((l) => l.level === "warn" && l.msg.startsWith("fetch failed"))).toBe(true);
  });

  it("uninstall --purge stops and removes the service, its configuration and its state", async () => {
    const uninstall = await driftless("uninstall", "--purge");
    expect(uninstall.exitCode, uninstall.stdout + uninstall.stderr).toBe(2);

    expect(existsSync(onHost(UNIT))).toBe(false);
    expect(existsSync(onHost("/etc/driftless"))).toBe(false);
    expect(existsSync(onHost(STATE_DIR))).toBe(false);
    expect((await host.exec("systemctl", ["is-active", "driftless"])).stdout.trim()).toBe("inactive");
    expect((await host.exec("systemctl", ["is-enabled", "driftless"])).exitCode).not.toBe(0);
    // systemd forgot the unit (daemon-reload after its file went).
    expect(await out("systemctl", "show", "-p", "LoadState", "--value", "driftless")).toBe("not-found");
    // No agent process left behind.
    const procs = await out("sh", "-c", "cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' '");
    expect(procs).not.toContain(`${CLI} agent`);
    // What it converged stays.
    expect(target()).toBe(rendered("salut"));
  });
});
