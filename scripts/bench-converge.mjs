// Converge benchmark (method in docs/benchmarks.md): for each N, a profile of N files with
// distinct content (mode 0644) plus 5 installed packages; one first apply, then no-op applies.
// Wall time and peak RSS of each `driftless apply` process come from GNU time.
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { writeBenchRepo } from "./bench-profile.mjs";

const sizes = process.argv.slice(2).map(Number);
const NS = sizes.length ? sizes : [100, 1000, 10000];
const NOOP_RUNS = 5;
const PACKAGES = ["bash", "coreutils", "dpkg", "grep", "sed"];
const GNU_TIME = "/usr/bin/time";

if (!existsSync(GNU_TIME)) {
  console.error("bench-converge needs GNU time (/usr/bin/time): apt-get install time");
  process.exit(1);
}
execFileSync(process.execPath, ["scripts/build.mjs"], { stdio: "inherit" });

function timedApply(repo, state) {
  const result = spawnSync(
    GNU_TIME,
    ["-f", "BENCH %e %M", "bin/driftless.js", "apply", "--source", repo, "--state", state, "--json"],
    { encoding: "utf8", maxBuffer: 256 * 1024 * 1024 },
  );
  const match = /BENCH ([\d.]+) (\d+)/.exec(result.stderr);
  if (!match) throw new Error(`no timing from GNU time:\n${result.stderr}`);
  let report;
  try {
    report = JSON.parse(result.stdout);
  } catch {
    throw new Error(`apply printed no JSON (exit ${result.status}):\n${result.stderr}`);
  }
  return { exitCode: result.status, wall: Number(match[1]), rssMb: Number(match[2]) / 1024, report };
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const rows = [];
for (const n of NS) {
  const target = mkdtempSync(path.join(tmpdir(), "driftless-bench-target-"));
  const state = mkdtempSync(path.join(tmpdir(), "driftless-bench-state-"));
  mkdirSync(target, { recursive: true });
  const repo = writeBenchRepo(n, target, PACKAGES, "driftless-bench-repo-");
  const first = timedApply(repo, state);
  if (first.exitCode !== 2) throw new Error(`first apply exited ${first.exitCode}`);
  // The second apply reads every file once more (the records of files written a moment ago are
  // not trusted yet, see docs/benchmarks.md); the no-op applies after it are measured.
  const settle = timedApply(repo, state);
  const noops = [];
  for (let i = 0; i < NOOP_RUNS; i++) {
    const run = timedApply(repo, state);
    if (run.exitCode !== 0) throw new Error(`no-op apply exited ${run.exitCode}`);
    noops.push(run);
  }
  rows.push({
    n,
    first: first.wall,
    firstRss: first.rssMb,
    settle: settle.wall,
    noopMedian: median(noops.map((r) => r.wall)),
    noopMax: Math.max(...noops.map((r) => r.wall)),
    noopRss: Math.max(...noops.map((r) => r.rssMb)),
    timings: noops.at(-1)?.report.timings,
  });
  for (const dir of [target, state, repo]) rmSync(dir, { recursive: true, force: true });
}

console.log("\nfiles  first apply        second apply  no-op apply (median / max of 5)  no-op peak RSS");
for (const r of rows) {
  console.log(
    `${String(r.n).padStart(5)}  ${r.first.toFixed(2).padStart(6)} s ${r.firstRss.toFixed(0).padStart(4)} MB  ${r.settle
      .toFixed(2)
      .padStart(9)} s  ${r.noopMedian.toFixed(2).padStart(12)} s / ${r.noopMax.toFixed(2)} s${" ".repeat(13)}${r.noopRss
      .toFixed(0)
      .padStart(4)} MB`,
  );
}
for (const r of rows) console.log(`phases of a no-op apply, N=${r.n} (ms): ${JSON.stringify(r.timings)}`);
const base = rows.find((r) => r.n === 1000);
const big = rows.find((r) => r.n === 10000);
if (base && big) {
  console.log(
    `no-op growth 1,000 -> 10,000 files: ${(big.noopMedian / base.noopMedian).toFixed(1)}x for 10x the files`,
  );
}
