// Idle memory of `driftless agent` (method in docs/benchmarks.md): the daemon follows a profile
// of 1,000 files with a 3 s interval; its resident memory is sampled from /proc between runs,
// after several runs, and the peak of one run (a child process) is measured with GNU time.
import { execFileSync, spawn, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";

const FILES = 1000;
execFileSync(process.execPath, ["scripts/build.mjs"], { stdio: "inherit" });
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

const agent = spawn("bin/driftless.js", ["agent", "--config", config, "--root", root, "--log-format", "json"], {
  stdio: ["ignore", "ignore", "pipe"],
});
let finished = 0;
const samples = [];
agent.stderr.on("data", (chunk) => {
  finished += (chunk.toString().match(/"run finished"/g) ?? []).length;
});
const rssOf = (pid) => {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0) / 1024;
};
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
while (finished < 6) {
  await sleep(250);
  // Between runs: 1.5 s after a run finished, the next starts 3 s after it.
  if (finished >= 2) samples.push(rssOf(agent.pid));
}
agent.kill("SIGTERM");
await new Promise((r) => agent.on("close", r));

const once = spawnSync(
  "/usr/bin/time",
  ["-f", "%M", "bin/driftless.js", "agent", "--once", "--config", config, "--root", root, "--log-format", "json"],
  { encoding: "utf8" },
);
const runPeak = Number(once.stderr.trim().split("\n").at(-1)) / 1024;
console.log(`\nagent daemon following ${FILES} files, 6 runs, 3 s apart`);
console.log(
  `  daemon resident memory (VmRSS, every 250 ms over 4 runs), max: ${Math.max(...samples).toFixed(1)} MB (target < 60 MB)`,
);
console.log(
  `  daemon resident memory, median:                                ${samples.sort((a, b) => a - b)[Math.floor(samples.length / 2)].toFixed(1)} MB`,
);
console.log(
  `  one run (the child process), peak RSS:                       ${existsSync("/usr/bin/time") ? runPeak.toFixed(1) : "?"} MB`,
);
rmSync(dir, { recursive: true, force: true });
