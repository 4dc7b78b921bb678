// Idle memory of `driftless agent` (method in docs/benchmarks.md): the daemon follows a profile
// of 1,000 files with a 3 s interval; its resident memory is sampled from /proc between runs,
// after several runs, and the peak of one run (a child process) is measured with GNU time. Then
// the same with a broker connected: an in-process Aedes, and a control plane (an MQTT.js client
// in this process) that acknowledges every report.
// --binary FILE measures a single binary (npm run build:binary; its Node flags are built in)
// instead of `node bin/driftless.js`.
import { execFileSync, spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { parseArgs } from "node:util";
import { Aedes } from "aedes";
import { connect } from "mqtt";

const FILES = 1000;
// The daemon's Node flags: those of the systemd unit (driftless install), or BENCH_NODE_FLAGS.
const DAEMON_FLAGS = (
  process.env.BENCH_NODE_FLAGS ??
  "--max-semi-space-size=1 --optimize-for-size --no-opt --no-maglev --no-sparkplug --max-lazy"
)
  .split(" ")
  .filter(Boolean);
const { values } = parseArgs({ options: { binary: { type: "string" } } });
/** The program and its first arguments: the single binary, or Node with the bundle. */
const AGENT = values.binary ? [path.resolve(values.binary)] : [process.execPath, ...DAEMON_FLAGS, "bin/driftless.js"];
if (!values.binary) execFileSync(process.execPath, ["scripts/build.mjs"], { stdio: "inherit" });
const dir = mkdtempSync(path.join(tmpdir(), "driftless-bench-rss-"));
const repo = path.join(dir, "repo");
execFileSync("mkdir", ["-p", repo]);
writeFileSync(
  path.join(repo, "fleet.yaml"),
  "apiVersion: driftless/v1\nkind: Fleet\nassignments:\n  - match: {}\n    profiles: [bench]\n",
);
const lines = ["apiVersion: driftless/v1", "kind: Profile", "name: bench", "files:"];
for (let i = 0; i < FILES; i++)
  lines.push(`  - { path: /srv/d${Math.floor(i / 100)}/f-${i}.conf, content: "v${i}\\n", mode: "0644" }`);
writeFileSync(path.join(repo, "bench.yaml"), `${lines.join("\n")}\n`);
const config = path.join(dir, "agent.yaml");
writeFileSync(
  config,
  `apiVersion: driftless/v1\nkind: AgentConfig\nhost: bench\nstateDir: ${dir}/state\nsource:\n  url: ${repo}\n  interval: 3s\n  splay: 0s\n`,
);
const root = path.join(dir, "root");

const rssOf = (pid) => {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0) / 1024;
};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Runs the daemon for 6 runs; its RSS every 250 ms from the end of the second run on. */
async function sampleDaemon(configFile) {
  const agent = spawn(
    AGENT[0],
    [...AGENT.slice(1), "agent", "--config", configFile, "--root", root, "--log-format", "json"],
    { stdio: ["ignore", "ignore", "pipe"] },
  );
  let finished = 0;
  let connected = false;
  const samples = [];
  agent.stderr.on("data", (chunk) => {
    const text = chunk.toString();
    finished += (text.match(/"run finished"/g) ?? []).length;
    if (text.includes('"connected to the broker"')) connected = true;
  });
  while (finished < 6) {
    await sleep(250);
    // Between runs: 1.5 s after a run finished, the next starts 3 s after it.
    if (finished >= 2) samples.push(rssOf(agent.pid));
  }
  agent.kill("SIGTERM");
  await new Promise((r) => agent.on("close", r));
  return { samples, connected };
}

const plain = await sampleDaemon(config);

// The same daemon reporting to a broker (Aedes in this process) and a control plane that acks.
const broker = await Aedes.createBroker();
const server = createServer(broker.handle);
await new Promise((r) => server.listen(0, "127.0.0.1", r));
const port = server.address().port;
const acked = { reports: 0 };
const cp = connect(`mqtt://127.0.0.1:${port}`, { protocolVersion: 4, clientId: "cp-bench" });
await new Promise((r) => cp.once("connect", r));
await cp.subscribeAsync("driftless/v1/hosts/bench/report", { qos: 1 });
cp.on("message", (_topic, payload) => {
  const report = JSON.parse(payload.toString());
  acked.reports++;
  cp.publish("driftless/v1/hosts/bench/ack", JSON.stringify({ v: 1, host: "bench", upTo: report.seq }), { qos: 1 });
});
const reportingConfig = path.join(dir, "agent-broker.yaml");
writeFileSync(reportingConfig, `${readFileSync(config, "utf8")}broker:\n  url: mqtt://127.0.0.1:${port}\n`);
const reporting = await sampleDaemon(reportingConfig);
await cp.endAsync();
await new Promise((r) => broker.close(r));
server.close();

const once = spawnSync(
  "/usr/bin/time",
  ["-f", "%M", ...AGENT, "agent", "--once", "--config", config, "--root", root, "--log-format", "json"],
  { encoding: "utf8" },
);
const runPeak = Number(once.stderr.trim().split("\n").at(-1)) / 1024;
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)].toFixed(1);
console.log(`\nagent daemon (${AGENT.join(" ")}) following ${FILES} files, 6 runs, 3 s apart`);
console.log(
  `  daemon resident memory (VmRSS, every 250 ms over 4 runs), max: ${Math.max(...plain.samples).toFixed(1)} MB (target < 60 MB)`,
);
console.log(`  daemon resident memory, median:                                ${median(plain.samples)} MB`);
console.log(
  `  with a broker connected (${reporting.connected ? "connected" : "NOT connected"}, ${acked.reports} reports acked), max: ${Math.max(...reporting.samples).toFixed(1)} MB (target < 64 MB)`,
);
console.log(`  with a broker connected, median:                              ${median(reporting.samples)} MB`);
console.log(
  `  one run (the child process), peak RSS:                       ${existsSync("/usr/bin/time") ? runPeak.toFixed(1) : "?"} MB`,
);
rmSync(dir, { recursive: true, force: true });
