// Fleet benchmark (method and figures in docs/benchmarks.md), two parts:
// 1. ingest: simulated agents (scripts/bench-fleet-worker.mjs: a few processes, many MQTT
//    connections each, real report payloads, in order, a window of unacknowledged reports)
//    against one `driftlessctl serve` (embedded broker, SQLite); reports stored and acknowledged
//    per second;
// 2. push to converged: AGENTS real agent daemons (`driftless agent`, files only, --root temp
//    dirs, a Git source over git http-backend, splay 5 s) and one serve; the time from a signed
//    webhook to the last host reporting the new commit, beside the CPU floor
//    (AGENTS x one run's CPU time / cores).
// 3. pg-ingest: as 1, against `serve --broker --shared --database postgres://` replicas (1, then
//    2: BENCH_REPLICAS "1,2") on a private Mosquitto (shipped ACL) and a PostgreSQL database made
//    for the run (BENCH_PG, default postgres://postgres@127.0.0.1:5432/postgres); the CPU split
//    between broker, database, replicas and load generator;
// 4. storm: BENCH_STORM_HOSTS (10,000) simulated hosts connect at once to Mosquitto, each with a
//    will and a retained status, against one replica on PostgreSQL: the time until every host is
//    connected and stored online, then heartbeat rounds (every host once per BENCH_BEAT_SECONDS,
//    10 s: six times the real rate) with serve's CPU and memory.
// Usage: scripts/bench-fleet [ingest] [push] [pg-ingest] [storm] (default ingest and push).
// Environment: BENCH_WORKERS (3), BENCH_HOSTS (600),
// BENCH_REPORTS (50 per host), BENCH_AGENTS (50), BENCH_SPLAY (5s), BENCH_AGENT_BIN (the agent as a
// single binary, e.g. dist/driftless-linux-x64; default: node bin/driftless.js). Loopback only;
// every wait is bounded.
import { spawn } from "node:child_process";
import { createHmac, pbkdf2Sync, randomBytes, randomUUID } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import * as net from "node:net";
import * as os from "node:os";
import * as path from "node:path";
import { createInterface } from "node:readline";
import pg from "pg";
import { bundleForBench } from "./bench-bundle.mjs";

const parts = process.argv.slice(2).length > 0 ? process.argv.slice(2) : ["ingest", "push"];
const PG_ADMIN = process.env.BENCH_PG ?? "postgres://postgres@127.0.0.1:5432/postgres";
const REPLICAS = (process.env.BENCH_REPLICAS ?? "1,2").split(",").map(Number);
const STORM_HOSTS = Number(process.env.BENCH_STORM_HOSTS ?? 10_000);
const BEAT_SECONDS = Number(process.env.BENCH_BEAT_SECONDS ?? 10);
const CP_PASSWORD = "bench-cp-password-0123456789";
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

/** WORKERS processes of simulated agents (bench-fleet-worker.mjs) sharing `hosts`, all connected. */
async function reportWorkers(port, hosts) {
  const per = Math.ceil(hosts.length / WORKERS);
  const workers = [];
  for (let w = 0; w < WORKERS; w++) {
    const mine = hosts.slice(w * per, (w + 1) * per);
    const settings = { port, hosts: mine, perHost: REPORTS, password: PASSWORD, window: 32 };
    const child = spawn(process.execPath, [path.resolve("scripts/bench-fleet-worker.mjs"), JSON.stringify(settings)], {
      stdio: ["pipe", "pipe", "inherit"],
    });
    children.add(child);
    const events = [];
    createInterface({ input: child.stdout }).on("line", (line) => events.push(JSON.parse(line)));
    workers.push({ child, events });
  }
  await until("the simulated hosts to connect", () => workers.every((w) => w.events.some((e) => e.ready)), 180_000);
  return workers;
}

async function ingest() {
  const hosts = Array.from({ length: HOSTS }, (_, i) => `sim-${String(i).padStart(4, "0")}`);
  const data = await dataWith(hosts);
  const cp = await serve(data);
  const workers = await reportWorkers(cp.mqttPort, hosts);
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
// 3. and 4.: Mosquitto, PostgreSQL, serve replicas
// ---------------------------------------------------------------------------------------------

/** A mosquitto_passwd line ($7$: PBKDF2-SHA512, 101 rounds), one hash for every user (one password). */
function passwdLines(users, password) {
  const salt = randomBytes(12);
  const hash = pbkdf2Sync(password, salt, 101, 64, "sha512");
  const secret = `$7$101$${salt.toString("base64")}$${hash.toString("base64")}`;
  return users.map((user) => `${user}:${secret}`).join("\n");
}

/** A private Mosquitto on a free port with the shipped ACL; the users' passwords all PASSWORD. */
async function mosquitto(hosts) {
  const dir = mkdtempSync(path.join(temp, "mosquitto-"));
  writeFileSync(
    path.join(dir, "passwd"),
    `${passwdLines(hosts, PASSWORD)}\n${passwdLines(["driftlessctl"], CP_PASSWORD)}\n`,
  );
  const port = await freePort();
  writeFileSync(
    path.join(dir, "mosquitto.conf"),
    [
      "per_listener_settings false",
      "allow_anonymous false",
      `password_file ${path.join(dir, "passwd")}`,
      `acl_file ${path.resolve("docs/mosquitto/driftless.acl")}`,
      `listener ${port} 127.0.0.1`,
      "persistence false",
      "max_queued_messages 1000000",
      "max_inflight_messages 100",
      "user root",
      "log_dest stderr",
      "log_type error",
      "",
    ].join("\n"),
  );
  const child = spawn("/usr/sbin/mosquitto", ["-c", path.join(dir, "mosquitto.conf")], { stdio: "inherit" });
  children.add(child);
  await until("mosquitto", () => canConnect(port), 10_000);
  return { child, port, url: `mqtt://127.0.0.1:${port}` };
}

function canConnect(port) {
  return new Promise((resolve) => {
    const socket = net.connect(port, "127.0.0.1", () => {
      socket.end();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}

/** A database made for this run (dropped by the returned function). */
async function pgDatabase() {
  const name = `driftless_bench_${randomBytes(4).toString("hex")}`;
  const admin = new pg.Client({ connectionString: PG_ADMIN });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name}`);
  await admin.end();
  const url = new URL(PG_ADMIN);
  url.pathname = `/${name}`;
  const db = new pg.Client({ connectionString: url.toString() });
  await db.connect();
  return {
    url: url.toString(),
    name,
    query: async (text) => (await db.query(text)).rows,
    drop: async () => {
      await db.end().catch(() => {});
      const again = new pg.Client({ connectionString: PG_ADMIN });
      await again.connect();
      await again.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await again.end();
    },
  };
}

/**
 * A CPU meter of the PostgreSQL processes working for `database`: its backends and the cluster's
 * background processes (WAL writer, checkpointer...), found in pg_stat_activity when the meter
 * starts; `read()` gives the CPU seconds they used since (a process gone in between is left out).
 */
async function postgresMeter(database) {
  const rows = await database.query(
    `SELECT pid FROM pg_stat_activity WHERE datname = '${database.name}' OR datname IS NULL`,
  );
  const start = new Map();
  for (const { pid } of rows) {
    try {
      start.set(pid, cpuSeconds(pid));
    } catch {
      // gone
    }
  }
  return {
    read: () => {
      let sum = 0;
      for (const [pid, before] of start) {
        try {
          sum += cpuSeconds(pid) - before;
        } catch {
          // gone
        }
      }
      return sum;
    },
  };
}

/** The cluster's WAL position (bytes); differences are what was written (by anyone on the cluster). */
async function walBytes(database) {
  const [{ lsn }] = await database.query("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint AS lsn");
  return Number(lsn);
}

/** Resident memory of a process in MB. */
function rssMb(pid) {
  const line = readFileSync(`/proc/${pid}/status`, "utf8")
    .split("\n")
    .find((l) => l.startsWith("VmRSS:"));
  return Number(line?.split(/\s+/)[1] ?? 0) / 1024;
}

/** `serve --broker --shared --database` as replica `name`. */
async function replica(name, brokerUrl, databaseUrl) {
  const data = mkdtempSync(path.join(temp, `replica-${name}-`));
  writeFileSync(path.join(data, "cp-password"), `${CP_PASSWORD}\n`);
  return serve(data, [
    ...["--broker", brokerUrl, "--broker-username", "driftlessctl"],
    ...["--broker-password-file", path.join(data, "cp-password"), "--shared", "--replica-id", name],
    ...["--database", databaseUrl],
  ]);
}

async function pgIngest(replicaCount) {
  const hosts = Array.from({ length: HOSTS }, (_, i) => `sim-${String(i).padStart(4, "0")}`);
  const broker = await mosquitto(hosts);
  const database = await pgDatabase();
  const cps = [];
  for (let i = 0; i < replicaCount; i++) cps.push(await replica(`r${i + 1}`, broker.url, database.url));
  const workers = await reportWorkers(broker.port, hosts);
  const loadBefore = load();
  let meter = null;
  const cpu = () => ({
    broker: cpuSeconds(broker.child.pid),
    database: meter ? meter.read() : 0,
    replicas: cps.reduce((sum, cp) => sum + cpuSeconds(cp.child.pid), 0),
    machine: machineCpu(),
  });
  meter = await postgresMeter(database);
  const walBefore = await walBytes(database);
  const before = cpu();
  const start = performance.now();
  for (const w of workers) w.child.stdin.write("go\n");
  await until("every ack", () => workers.every((w) => w.events.some((e) => e.done)), 900_000);
  const seconds = (performance.now() - start) / 1000;
  const after = cpu();
  const walPerReport = ((await walBytes(database)) - walBefore) / (HOSTS * REPORTS);
  const workersCpu = workers.reduce((sum, w) => sum + w.events.find((e) => e.done).cpuSeconds, 0);
  const total = HOSTS * REPORTS;
  const [{ n }] = await database.query("SELECT count(*)::int AS n FROM runs");
  const perReplica = [];
  for (const cp of cps) perReplica.push(metric(await cp.api("/metrics"), "driftless_reports_ingested_total"));
  const [{ size }] = await database.query(
    `SELECT (pg_total_relation_size('runs') + pg_total_relation_size('hosts'))::bigint AS size`,
  );
  for (const w of workers) await stop(w.child);
  for (const cp of cps) await stop(cp.child);
  await stop(broker.child);
  await database.drop();
  const kept = Math.min(REPORTS, 200) * HOSTS;
  if (n !== kept) throw new Error(`${n} runs in the database, expected ${kept}`);
  const share = (x) => `${((x / seconds) * 100).toFixed(0)}%`;
  return {
    replicas: replicaCount,
    total,
    seconds,
    rate: total / seconds,
    perReplica,
    split: {
      broker: share(after.broker - before.broker),
      database: share(after.database - before.database),
      replicas: share(after.replicas - before.replicas),
      clients: share(workersCpu),
    },
    machineBusy: (after.machine.busy - before.machine.busy) / (after.machine.total - before.machine.total),
    bytesPerRun: Number(size) / n,
    walPerReport,
    loadBefore,
    loadAfter: load(),
  };
}

async function storm() {
  const hosts = Array.from({ length: STORM_HOSTS }, (_, i) => `storm-${String(i).padStart(5, "0")}`);
  const broker = await mosquitto(hosts);
  const database = await pgDatabase();
  const cp = await replica("r1", broker.url, database.url);
  const rssIdle = rssMb(cp.child.pid);
  const stormWorkers = 4;
  const per = Math.ceil(STORM_HOSTS / stormWorkers);
  const loadBefore = load();
  const t0 = performance.now();
  const workers = [];
  for (let w = 0; w < stormWorkers; w++) {
    const settings = { url: broker.url, hosts: hosts.slice(w * per, (w + 1) * per), password: PASSWORD };
    const child = spawn(
      process.execPath,
      [path.resolve("scripts/bench-fleet-storm-worker.mjs"), JSON.stringify(settings)],
      { stdio: ["pipe", "pipe", "inherit"] },
    );
    children.add(child);
    const events = [];
    createInterface({ input: child.stdout }).on("line", (line) => events.push(JSON.parse(line)));
    workers.push({ child, events });
  }
  await until("every host connected", () => workers.every((w) => w.events.some((e) => e.connected)), 600_000);
  const connectedSeconds = (performance.now() - t0) / 1000;
  await until(
    "every host stored online",
    async () =>
      (await database.query("SELECT count(*)::int AS n FROM hosts WHERE presence = 'online'"))[0].n === STORM_HOSTS,
    600_000,
  );
  const storedSeconds = (performance.now() - t0) / 1000;
  const rssConnected = rssMb(cp.child.pid);
  const rounds = [];
  for (let round = 0; round < 3; round++) {
    const meter = await postgresMeter(database);
    const walBefore = await walBytes(database);
    const cpuBefore = { serve: cpuSeconds(cp.child.pid), broker: cpuSeconds(broker.child.pid) };
    const accepted = metric(await cp.api("/metrics"), 'driftless_messages_accepted_total{kind="heartbeat"}');
    const r0 = performance.now();
    for (const w of workers) w.child.stdin.write(`beat ${BEAT_SECONDS}\n`);
    await until(
      "a heartbeat round sent",
      () => workers.every((w) => w.events.filter((e) => e.beats).length > round),
      300_000,
    );
    await until(
      "a heartbeat round ingested",
      async () =>
        metric(await cp.api("/metrics"), 'driftless_messages_accepted_total{kind="heartbeat"}') >=
        accepted + STORM_HOSTS,
      300_000,
    );
    const seconds = (performance.now() - r0) / 1000;
    rounds.push({
      seconds,
      serve: (cpuSeconds(cp.child.pid) - cpuBefore.serve) / seconds,
      broker: (cpuSeconds(broker.child.pid) - cpuBefore.broker) / seconds,
      db: meter.read() / seconds,
      walPerBeat: ((await walBytes(database)) - walBefore) / STORM_HOSTS,
      rss: rssMb(cp.child.pid),
    });
  }
  for (const w of workers) w.child.stdin.write("stop\n");
  for (const w of workers) await stop(w.child);
  await stop(cp.child);
  await stop(broker.child);
  await database.drop();
  return { connectedSeconds, storedSeconds, rssIdle, rssConnected, rounds, loadBefore, loadAfter: load() };
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
  if (parts.includes("pg-ingest")) {
    console.log(
      `\nIngest on PostgreSQL: ${HOSTS} simulated hosts in ${WORKERS} processes, ${REPORTS} reports each, window 32, Mosquitto`,
    );
    console.log(
      "| replicas | reports | time | stored and acknowledged | per replica | CPU: broker / database / replicas / clients | machine busy | bytes per run | WAL per report | load before / after |",
    );
    console.log("| ---: | ---: | ---: | ---: | --- | --- | ---: | ---: | ---: | --- |");
    for (const count of REPLICAS) {
      const r = await pgIngest(count);
      console.log(
        `| ${r.replicas} | ${r.total} | ${r.seconds.toFixed(2)} s | **${Math.round(r.rate)} reports/s** | ${r.perReplica.join(" / ")} | ${r.split.broker} / ${r.split.database} / ${r.split.replicas} / ${r.split.clients} of a core | ${(r.machineBusy * 100).toFixed(0)}% | ${Math.round(r.bytesPerRun)} | ${Math.round(r.walPerReport)} | ${r.loadBefore} / ${r.loadAfter} |`,
      );
    }
  }
  if (parts.includes("storm")) {
    const r = await storm();
    console.log(`\nStorm: ${STORM_HOSTS} hosts connecting at once to Mosquitto, one replica on PostgreSQL`);
    console.log(
      `connected: ${r.connectedSeconds.toFixed(1)} s; all stored online: ${r.storedSeconds.toFixed(1)} s; serve RSS idle / connected: ${Math.round(r.rssIdle)} / ${Math.round(r.rssConnected)} MB; load ${r.loadBefore} / ${r.loadAfter}`,
    );
    console.log(
      `heartbeat rounds (every host once per ${BEAT_SECONDS} s = ${Math.round(STORM_HOSTS / BEAT_SECONDS)} beats/s):`,
    );
    console.log("| round | time | CPU: serve / broker / database | WAL per beat | serve RSS |");
    console.log("| ---: | ---: | --- | ---: | ---: |");
    for (const [i, round] of r.rounds.entries()) {
      console.log(
        `| ${i + 1} | ${round.seconds.toFixed(1)} s | ${(round.serve * 100).toFixed(0)}% / ${(round.broker * 100).toFixed(0)}% / ${(round.db * 100).toFixed(0)}% of a core | ${Math.round(round.walPerBeat)} B | ${Math.round(round.rss)} MB |`,
      );
    }
  }
} finally {
  for (const child of children) await stop(child, "SIGKILL");
  rmSync(temp, { recursive: true, force: true });
}
