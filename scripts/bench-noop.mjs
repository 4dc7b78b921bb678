// No-op benchmark (method in docs/benchmarks.md, "No-op runs and the compiled desired state"): for
// each N, a profile of N files (the converge benchmark's, without packages) applied three times
// in a row into a new state directory: the first apply, the second (file records not trusted
// yet), and a third 3 s later (the steady no-op). Several builds can be compared, their runs
// interleaved so that they share the machine's load.
//
//   node scripts/bench-noop.mjs [--bin LABEL=FILE]... [--reps R] [N...]
//
// Default: --bin this=bin/driftless.js (built first), 3 repetitions, N = 1000 10000. Prints one
// Markdown row per build, size and apply: medians of `timings.load`, wall time and peak RSS (GNU
// time), and where the desired state came from (`desiredFrom`).
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import * as path from "node:path";
import { parseArgs } from "node:util";
import { writeBenchRepo } from "./bench-profile.mjs";

const GNU_TIME = "/usr/bin/time";
const { values, positionals } = parseArgs({
  options: { bin: { type: "string", multiple: true }, reps: { type: "string", default: "3" } },
  allowPositionals: true,
});
const sizes = positionals.length ? positionals.map(Number) : [1000, 10000];
const reps = Number(values.reps);
const builds = (values.bin ?? ["this=bin/driftless.js"]).map((spec) => {
  const [label, file] = spec.includes("=") ? spec.split("=", 2) : [spec, spec];
  return { label, file: path.resolve(file) };
});
if (!existsSync(GNU_TIME)) {
  console.error("bench-noop needs GNU time (/usr/bin/time): apt-get install time");
  process.exit(1);
}
if (!values.bin) execFileSync(process.execPath, ["scripts/build.mjs"], { stdio: "inherit" });

function timedApply(bin, repo, state) {
  const result = spawnSync(
    GNU_TIME,
    // The program itself, as users run it (its #! line gives Node its options).
    ["-f", "BENCH %e %M", bin, "apply", "--source", repo, "--state", state, "--json"],
    { encoding: "utf8", maxBuffer: 256 * 1024 * 1024 },
  );
  const match = /BENCH ([\d.]+) (\d+)/.exec(result.stderr);
  if (!match) throw new Error(`no timing from GNU time:\n${result.stderr}`);
  const report = JSON.parse(result.stdout);
  return {
    exitCode: result.status,
    from: report.desiredFrom ?? "repository",
    load: report.timings.load,
    wall: Number(match[1]),
    rssMb: Number(match[2]) / 1024,
  };
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const APPLIES = ["first apply", "second apply", "no-op (3 s later)"];
console.log(
  `load average at start: ${loadavg()
    .map((l) => l.toFixed(2))
    .join(" ")}`,
);
console.log("| build | files | apply | exit | desired state from | load | wall | peak RSS |");
console.log("| --- | ---: | --- | --- | --- | ---: | ---: | ---: |");
for (const n of sizes) {
  const runs = new Map(builds.map((b) => [b.label, [[], [], []]]));
  for (let rep = 0; rep < reps; rep++) {
    for (const build of builds) {
      const dir = mkdtempSync(path.join(tmpdir(), "driftless-bench-noop-"));
      const repo = writeBenchRepo(n, path.join(dir, "target"), [], "driftless-bench-noop-repo-");
      try {
        for (let i = 0; i < APPLIES.length; i++) {
          if (i === 2) execFileSync("sleep", ["3"]); // past the two seconds after which a record is trusted
          runs.get(build.label)[i].push(timedApply(build.file, repo, path.join(dir, "state")));
        }
      } finally {
        rmSync(dir, { recursive: true, force: true });
        rmSync(repo, { recursive: true, force: true });
      }
    }
  }
  for (const build of builds) {
    runs.get(build.label).forEach((results, i) => {
      const exits = [...new Set(results.map((r) => r.exitCode))].join(",");
      const from = [...new Set(results.map((r) => r.from))].join(",");
      const load = median(results.map((r) => r.load));
      const wall = median(results.map((r) => r.wall));
      const rss = median(results.map((r) => r.rssMb));
      console.log(
        `| ${build.label} | ${n.toLocaleString("en-US")} | ${APPLIES[i]} | ${exits} | ${from} | ${load.toFixed(0)} ms | ${wall.toFixed(2)} s | ${rss.toFixed(0)} MB |`,
      );
    });
  }
}
console.log(
  `load average at end: ${loadavg()
    .map((l) => l.toFixed(2))
    .join(" ")}`,
);
