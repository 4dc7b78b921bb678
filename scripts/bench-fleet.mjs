// Fleet benchmark (method and figures in docs/benchmarks.md), two parts:
// 1. ingest: simulated agents (scripts/bench-fleet-worker.mjs: a few processes, many MQTT
//    connections each, real report payloads, in order, a window of unacknowledged reports)
//    against one `driftlessctl serve` (embedded broker, SQLite); reports stored and acknowledged
//    per second;
// 2. push to converged: AGENTS real agent daemons (`driftless agent`, files only, --root temp
//    dirs, a Git source over git http-backend, splay 5 s) and one serve; the time from a signed
//    webhook to the last host reporting the new commit, beside the CPU floor
//    (AGENTS x one run's CPU time / cores).
// Usage: scripts/bench-fleet [ingest] [push]. Environment: BENCH_WORKERS (3), BENCH_HOSTS (600),
// BENCH_REPORTS (50 per host), BENCH_AGENTS (50), BENCH_SPLAY (5s), BENCH_AGENT_BIN (the agent as a
// single binary, e.g. dist/driftless-linux-x64; default: node bin/driftless.js). Loopback only;
// every wait is bounded.
import { spawn } from "node:child_process";
import { createHmac, randomUUID } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { createInterface } from "node:readline";
import { bundleForBench } from "./bench-bundle.mjs";

const parts = process.argv.slice(2).length > 0 ? process.argv.slice(2) : ["ingest", "push"];
const WORKERS = Number(process.env.BENCH_WORKERS ?? 3);
const HOSTS = Number(process.env.BENCH_HOSTS ?? 600);
const REPORTS = Number(process.env.BENCH_REPORTS ?? 50);
const AGENTS = Number(process.env.BENCH_AGENTS ?? 50);
const SPLAY = process.env.BENCH_SPLAY ?? "5s";
const CORES = os.cpus().length;
const CTL = path.resolve("bin/driftlessctl.js");
const AGENT_BIN = process.env.BENCH_AGENT_BIN ? path.resolve(process.env.BENCH_AGENT_BIN) : null;
/** The agent's command line: the single binary, or Node running the built bundle. */
const agentArgv = (args) =>
  AGENT_BIN ? [AGENT_BIN, args] : [process.execPath, [path.resolve("bin/driftless.js"), ...args]];
const PASSWORD = "bench-password-0123456789abcdef";

// The control plane's store and password hashing, and the test Git server, bundled for this script.
const { SqliteFleetStore, hashPassword, startGitServer, createRepo, cleanup } = await bundleForBench("fleet", {
  "controlplane/src/store/sqlite.ts": ["SqliteFleetStore"],
  "controlplane/src/auth/password.ts": ["hashPassword"],
  "test/support/git-server.ts": ["startGitServer", "createRepo", "cleanup"],
});

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const temp = mkdtempSync(path.join(os.tmpdir(), "driftless-bench-fleet-"));
const children = new Set();
const load = () =>
  os
    .loadavg()
    .map((l) => l.toFixed(2))
    .join(" ");

async function until(what, check, timeoutMs) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      const value = await check();
      if (value) return value;
    } catch (error) {
      // A busy machine: a refused or reset request is tried again until the deadline.
      last = error;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}: ${last ?? ""}`);
    await sleep(100);
  }
}

function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

/** CPU seconds (user + system) of a process so far, from /proc. */
function cpuSeconds(pid) {
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in clock ticks (USER_HZ 100)
}

/** CPU seconds of a process and of its children it has waited for (a daemon's runs). */
/** CPU seconds of a process itself and of the children it has waited for (its runs), from /proc. */
function splitCpuSeconds(pid) {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    return { self: (Number(f[11]) + Number(f[12])) / 100, children: (Number(f[13]) + Number(f[14])) / 100 };
  } catch {
    return { self: 0, children: 0 };
  }
}

/** Busy and total CPU seconds of the whole machine so far (/proc/stat). */
function machineCpu() {
  const line = readFileSync("/proc/stat", "utf8").split("\n")[0];
  const v = line.split(/\s+/).slice(1).map(Number);
  const total = v.reduce((a, b) => a + b, 0);
  const idle = (v[3] ?? 0) + (v[4] ?? 0);
  return { busy: (total - idle) / 100, total: total / 100 };
}

/** A data directory with `hosts` credentials (one password, hashed once). */
async function dataWith(hosts) {
  const data = mkdtempSync(path.join(temp, "data-"));
  const store = SqliteFleetStore.open(data);
  const hash = await hashPassword(PASSWORD);
  for (const host of hosts) await store.addCredential(host, hash);
  await store.close();
  return data;
}

async function serve(data, extra = []) {
  const http = await freePort();
  const mqttPort = await freePort();
  const child = spawn(
    process.execPath,
    [CTL, "serve", "--data", data, "--http", `127.0.0.1:${http}`, "--mqtt", `127.0.0.1:${mqttPort}`, ...extra],
    { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env, NO_COLOR: "1" } },
  );
  children.add(child);
  let output = "";
  child.stdout.on("data", (c) => {
    output += c;
  });
  child.stderr.on("data", (c) => {
    if (output.length < 100_000) output += c;
  });
  await until(
    "serve",
    () => {
      if (child.exitCode !== null) throw new Error(`serve exited: ${output}`);
      return output.includes("Driftless control plane:");
    },
    30_000,
  );
  const token = readFileSync(path.join(data, "api-token"), "utf8").trim();
  const api = async (route, init = {}) => {
    const response = await fetch(`http://127.0.0.1:${http}${route}`, {
      ...init,
      headers: { authorization: `Bearer ${token}`, ...(init.headers ?? {}) },
    });
    if (!response.ok) throw new Error(`${route}: ${response.status} ${await response.text()}`);
    return route === "/metrics" ? response.text() : response.json();
  };
  return { child, http, mqttPort, api };
}

function metric(text, name) {
  const line = text.split("\n").find((l) => l.startsWith(`${name} `));
  return line ? Number(line.split(" ")[1]) : 0;
}

async function stop(child, signal = "SIGTERM") {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once("exit", resolve));
  try {
    process.kill(child.spawnargs.includes("agent") ? -child.pid : child.pid, signal);
  } catch {
    // gone
  }
  await Promise.race([exited, sleep(15_000)]);
  if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
  children.delete(child);
}

// ---------------------------------------------------------------------------------------------
// 1. Ingest
// ---------------------------------------------------------------------------------------------

async function ingest() {
  const hosts = Array.from({ length: HOSTS }, (_, i) => `sim-${String(i).padStart(4, "0")}`);
  const data = await dataWith(hosts);
  const cp = await serve(data);
  const per = Math.ceil(HOSTS / WORKERS);
  const workers = [];
  for (let w = 0; w < WORKERS; w++) {
    const mine = hosts.slice(w * per, (w + 1) * per);
    const settings = { port: cp.mqttPort, hosts: mine, perHost: REPORTS, password: PASSWORD, window: 32 };
    const child = spawn(process.execPath, [path.resolve("scripts/bench-fleet-worker.mjs"), JSON.stringify(settings)], {
      stdio: ["pipe", "pipe", "inherit"],
    });
    children.add(child);
    const events = [];
    createInterface({ input: child.stdout }).on("line", (line) => events.push(JSON.parse(line)));
    workers.push({ child, events });
  }
  await until("the simulated hosts to connect", () => workers.every((w) => w.events.some((e) => e.ready)), 180_000);
  const loadBefore = load();
  const cpuBefore = cpuSeconds(cp.child.pid);
  const start = performance.now();
  for (const w of workers) w.child.stdin.write("go\n");
  await until("every ack", () => workers.every((w) => w.events.some((e) => e.done)), 600_000);
  const seconds = (performance.now() - start) / 1000;
  const cpu = cpuSeconds(cp.child.pid) - cpuBefore;
  const workersCpu = workers.reduce((sum, w) => sum + w.events.find((e) => e.done).cpuSeconds, 0);
  const metrics = await cp.api("/metrics");
  const total = HOSTS * REPORTS;
  const stored = metric(metrics, "driftless_reports_ingested_total");
  const dropped = metrics
    .split("\n")
    .filter((l) => l.startsWith("driftless_messages_dropped_total{") && !l.endsWith(" 0"));
  for (const w of workers) await stop(w.child);
  await stop(cp.child);
  if (stored !== total) throw new Error(`stored ${stored} reports of ${total}; dropped: ${dropped.join(", ")}`);
  return {
    total,
    seconds,
    rate: total / seconds,
    serveCpuPerReportUs: (cpu / total) * 1e6,
    serveCpuShare: cpu / seconds,
    workersCpuShare: workersCpu / seconds,
    loadBefore,
    loadAfter: load(),
  };
}

// ---------------------------------------------------------------------------------------------
// 2. Push to converged
// ---------------------------------------------------------------------------------------------

const profileFiles = (version) => {
  const files = Array.from(
    { length: 20 },
    (_, i) => `  - { path: /etc/app/conf.d/${i}.conf, content: "version=${version}\\nfile=${i}\\n" }`,
  );
  return {
    "fleet.yaml": "apiVersion: driftless/v1\nkind: Fleet\nassignments:\n  - match: {}\n    profiles: [base]\n",
    "base.yaml": `apiVersion: driftless/v1\nkind: Profile\nname: base\nfiles:\n${files.join("\n")}\n`,
  };
};

function agentConfig(dir, host, source, broker) {
  const config = path.join(dir, "agent.yaml");
  const passwordFile = path.join(dir, "mqtt-password");
  writeFileSync(passwordFile, `${PASSWORD}\n`, { mode: 0o600 });
  writeFileSync(
    config,
    [
      "apiVersion: driftless/v1",
      "kind: AgentConfig",
      `host: ${host}`,
      `stateDir: ${path.join(dir, "state")}`,
      "source:",
      `  url: ${source}`,
      "  interval: 1h",
      `  splay: ${SPLAY}`,
      ...(broker ? ["broker:", `  url: ${broker}`, `  passwordFile: ${passwordFile}`] : []),
      "",
    ].join("\n"),
  );
  return config;
}

/**
 * CPU seconds (user + system) and wall time of one `driftless agent --once`, from GNU time (run
 * asynchronously: the Git server is in this process).
 */
function runOnceTimed(config, root) {
  return new Promise((resolve, reject) => {
    const child = spawn(
      "/usr/bin/time",
      ["-f", "%U %S %e", ...agentArgv(["agent", "--once", "--config", config, "--root", root]).flat()],
      { stdio: ["ignore", "ignore", "pipe"], env: { ...process.env, DRIFTLESS_LOG_LEVEL: "error" } },
    );
    let stderr = "";
    child.stderr.on("data", (c) => {
      stderr += c;
    });
    child.on("close", (code) => {
      // 0 in sync, 2 changes made; GNU time's line is the last of stderr
      if (code !== 0 && code !== 2) reject(new Error(`agent --once exited ${code}: ${stderr}`));
      else resolve(stderr.trim().split("\n").at(-1));
    });
  });
}

async function push() {
  const git = await startGitServer();
  const repo = await createRepo(git, "fleet");
  await repo.writeFiles(profileFiles(1));
  const first = await repo.commit("v1");
  await repo.push();
  const source = git.url("fleet");

  const hosts = Array.from({ length: AGENTS }, (_, i) => `agent-${String(i).padStart(3, "0")}`);
  const data = await dataWith(hosts);
  const secretFile = path.join(temp, "webhook-secret");
  writeFileSync(secretFile, "bench-webhook-secret\n");
  const cp = await serve(data, ["--webhook-secret-file", secretFile]);

  // One run's CPU: a probe agent (no broker) converges the first commit, then the second.
  const probeDir = mkdtempSync(path.join(temp, "probe-"));
  const probeConfig = agentConfig(probeDir, "probe", source, null);
  await runOnceTimed(probeConfig, path.join(probeDir, "root"));

  const agents = hosts.map((host) => {
    const dir = mkdtempSync(path.join(temp, `${host}-`));
    const config = agentConfig(dir, host, source, `mqtt://127.0.0.1:${cp.mqttPort}`);
    const child = spawn(...agentArgv(["agent", "--config", config, "--root", path.join(dir, "root")]), {
      stdio: ["ignore", "ignore", "ignore"],
      detached: true,
      env: { ...process.env, DRIFTLESS_LOG_LEVEL: "warn" },
    });
    children.add(child);
    return child;
  });
  const onCommit = async (commit) => {
    const { hosts: list } = await cp.api(`/api/v1/hosts?commit=${commit}`);
    return list.filter((h) => h.lastRun !== null).length;
  };
  const startedAt = performance.now();
  await until(`${AGENTS} agents on the first commit`, async () => (await onCommit(first)) === AGENTS, 600_000);
  const startSeconds = (performance.now() - startedAt) / 1000;

  await repo.writeFiles(profileFiles(2));
  const second = await repo.commit("v2");
  await repo.push();
  const [user, system, wall] = (await runOnceTimed(probeConfig, path.join(probeDir, "root"))).split(" ").map(Number);
  const runCpu = user + system;
  // Let the machine settle after the fleet's start (50 processes at once) and the probe run:
  // until the 1-minute load average is under cores + 1, for at most 3 minutes.
  const settle = Date.now() + 180_000;
  while (os.loadavg()[0] > CORES + 1 && Date.now() < settle) await sleep(2_000);

  const body = Buffer.from(JSON.stringify({ ref: "refs/heads/main", before: first, after: second }));
  const loadBefore = load();
  const fleetCpu = () =>
    agents.reduce(
      (sum, a) => {
        const { self, children } = splitCpuSeconds(a.pid);
        return { daemons: sum.daemons + self, runs: sum.runs + children };
      },
      { daemons: 0, runs: 0 },
    );
  const fleetCpuBefore = fleetCpu();
  const machineBefore = machineCpu();
  const t0 = Date.now();
  const response = await fetch(`http://127.0.0.1:${cp.http}/hooks/git`, {
    method: "POST",
    headers: {
      "content-type": "application/json",
      "x-github-event": "push",
      "x-github-delivery": randomUUID(),
      "x-hub-signature-256": `sha256=${createHmac("sha256", "bench-webhook-secret").update(body).digest("hex")}`,
    },
    body,
  });
  if (response.status !== 202) throw new Error(`webhook: ${response.status} ${await response.text()}`);
  await until(`${AGENTS} agents on the pushed commit`, async () => (await onCommit(second)) === AGENTS, 300_000);
  const polled = (Date.now() - t0) / 1000;
  // The daemons' own CPU and their runs' (children they waited for), and the machine's.
  const fleetCpuAfter = fleetCpu();
  const daemonsCpu = fleetCpuAfter.daemons - fleetCpuBefore.daemons;
  const runsCpu = fleetCpuAfter.runs - fleetCpuBefore.runs;
  const machineAfter = machineCpu();
  const machineBusy = (machineAfter.busy - machineBefore.busy) / (machineAfter.total - machineBefore.total);
  const loadAfter = load();
  // The exact moment: when the control plane received each host's first report of the new commit.
  let last = 0;
  for (const host of hosts) {
    const { runs } = await cp.api(`/api/v1/hosts/${host}/runs?limit=20`);
    const received = runs.filter((r) => r.commit === second).map((r) => Date.parse(r.receivedAt));
    last = Math.max(last, Math.min(...received));
  }
  for (const child of agents) await stop(child);
  await stop(cp.child);
  await cleanup();
  return {
    agents: AGENTS,
    startSeconds,
    seconds: (last - t0) / 1000,
    polled,
    runCpu,
    runWall: wall,
    floor: (AGENTS * runCpu) / CORES,
    fleetCpu: daemonsCpu + runsCpu,
    daemonsCpu,
    runsCpu,
    machineBusy,
    loadBefore,
    loadAfter,
  };
}

try {
  console.log(`machine: ${CORES} cores, load average ${load()} (1, 5, 15 min)`);
  if (parts.includes("ingest")) {
    const r = await ingest();
    console.log(`\nIngest: ${HOSTS} simulated hosts in ${WORKERS} processes, ${REPORTS} reports each, window 32`);
    console.log(
      "| reports | time | stored and acknowledged | serve CPU per report | CPU use: serve / clients | load before / after |",
    );
    console.log("| ---: | ---: | ---: | ---: | ---: | --- |");
    console.log(
      `| ${r.total} | ${r.seconds.toFixed(2)} s | **${Math.round(r.rate)} reports/s** | ${Math.round(r.serveCpuPerReportUs)} us | ${(r.serveCpuShare * 100).toFixed(0)}% / ${(r.workersCpuShare * 100).toFixed(0)}% of a core | ${r.loadBefore} / ${r.loadAfter} |`,
    );
  }
  if (parts.includes("push")) {
    const r = await push();
    console.log(`\nPush to converged: ${r.agents} agent daemons, splay ${SPLAY}, ${CORES} cores`);
    console.log(
      "| webhook to last report | (seen by polling) | one run: CPU / wall | CPU floor | fleet CPU (daemons and runs) | per host: daemon / run | machine busy | fleet start | load before / after |",
    );
    console.log("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |");
    console.log(
      `| **${r.seconds.toFixed(2)} s** | ${r.polled.toFixed(2)} s | ${r.runCpu.toFixed(2)} s / ${r.runWall.toFixed(2)} s | ${r.floor.toFixed(1)} s | ${r.fleetCpu.toFixed(1)} s (${(r.fleetCpu / r.agents).toFixed(2)} s per host) | ${(r.daemonsCpu / r.agents).toFixed(2)} s / ${(r.runsCpu / r.agents).toFixed(2)} s | ${(r.machineBusy * 100).toFixed(0)}% | ${r.startSeconds.toFixed(1)} s | ${r.loadBefore} / ${r.loadAfter} |`,
    );
  }
} finally {
  for (const child of children) await stop(child, "SIGKILL");
  rmSync(temp, { recursive: true, force: true });
}
