// Where a Node process's memory goes (method in docs/benchmarks.md, "Where the binary's memory
// goes"): runs COMMAND with a preload (NODE_OPTIONS=-r, which the single binary honours too) that,
// when the process exits, reads /proc/self/status and /proc/self/smaps and V8's heap statistics,
// and prints peak RSS, resident anonymous and file-backed memory, the resident size of each
// mapped file and of the anonymous mappings, and the V8 heap. Repeats R times and prints the run
// with the median peak.
//
//   node scripts/memory-breakdown.mjs [--reps R] -- COMMAND [ARG]...
//
// Examples: the binary's no-op (apply twice into the same state directory first), or Node alone:
//   node scripts/memory-breakdown.mjs -- dist/driftless-linux-x64 apply --source REPO --state DIR --json
//   node scripts/memory-breakdown.mjs -- node --max-semi-space-size=1 -e "require('node:crypto')"
// The command's stdout is discarded.
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { parseArgs } from "node:util";

const { values, positionals } = parseArgs({
  options: { reps: { type: "string", default: "3" }, help: { type: "boolean", short: "h" } },
  allowPositionals: true,
});
if (values.help || positionals.length === 0) {
  console.log("Usage: node scripts/memory-breakdown.mjs [--reps R] -- COMMAND [ARG]...");
  process.exit(values.help ? 0 : 1);
}

// The preload: CommonJS, no dependencies; writes one JSON line to the file MEMORY_BREAKDOWN_OUT.
const PRELOAD = `
const fs = require("node:fs");
const exit = process.exit;
function report() {
  const status = fs.readFileSync("/proc/self/status", "utf8");
  const kb = (key) => Number(new RegExp(key + ":\\\\s+(\\\\d+)").exec(status)?.[1] ?? 0);
  const mappings = {};
  let name = null;
  for (const line of fs.readFileSync("/proc/self/smaps", "utf8").split("\\n")) {
    const head = /^[0-9a-f]+-[0-9a-f]+ \\S+ \\S+ \\S+ \\S+\\s*(.*)$/.exec(line);
    if (head) { name = head[1] || "[anonymous]"; continue; }
    const rss = /^Rss:\\s+(\\d+)/.exec(line);
    if (rss && name) mappings[name] = (mappings[name] ?? 0) + Number(rss[1]);
  }
  const heap = require("node:v8").getHeapStatistics();
  fs.writeFileSync(process.env.MEMORY_BREAKDOWN_OUT, JSON.stringify({
    peakKb: kb("VmHWM"), rssKb: kb("VmRSS"), anonKb: kb("RssAnon"), fileKb: kb("RssFile"),
    heapTotalKb: Math.round(heap.total_physical_size / 1024), mappings,
  }));
}
let done = false;
const once = () => { if (!done) { done = true; report(); } };
process.exit = function (code) { once(); return exit.call(process, code); };
process.on("exit", once);
`;

const work = mkdtempSync(path.join(tmpdir(), "memory-breakdown-"));
const preload = path.join(work, "preload.cjs");
writeFileSync(preload, PRELOAD);
const [command, ...args] = positionals;
const runs = [];
try {
  for (let i = 0; i < Number(values.reps); i++) {
    const out = path.join(work, `run-${i}.json`);
    const env = {
      ...process.env,
      NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ""} -r ${preload}`.trim(),
      MEMORY_BREAKDOWN_OUT: out,
    };
    const result = spawnSync(command, args, { env, stdio: ["ignore", "ignore", "inherit"] });
    if (result.error) throw result.error;
    runs.push({ exitCode: result.status, ...JSON.parse(readFileSync(out, "utf8")) });
  }
} finally {
  rmSync(work, { recursive: true, force: true });
}

runs.sort((a, b) => a.peakKb - b.peakKb);
const run = runs[Math.floor(runs.length / 2)];
const mb = (kb) => `${(kb / 1024).toFixed(1)} MB`;
console.log(`${positionals.join(" ")}  (exit ${run.exitCode}; median of ${runs.length} by peak)`);
console.log(`peak RSS ${mb(run.peakKb)} (all runs: ${runs.map((r) => mb(r.peakKb)).join(", ")})`);
console.log(`at exit: RSS ${mb(run.rssKb)}, anonymous ${mb(run.anonKb)}, file-backed ${mb(run.fileKb)}`);
console.log(`V8 heap (physical) ${mb(run.heapTotalKb)}`);
console.log("resident by mapping:");
for (const [name, kb] of Object.entries(run.mappings)
  .sort((a, b) => b[1] - a[1])
  .slice(0, 10)) {
  console.log(`  ${mb(kb).padStart(9)}  ${name}`);
}
