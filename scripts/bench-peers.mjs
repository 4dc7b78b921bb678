// Side by side with CFEngine (method in docs/benchmarks.md): for each N, the same desired state
// (N files with distinct content, mode 0644, plus 5 installed packages) applied by Driftless and by
// CFEngine's cf-agent: a first apply into an empty directory, then a no-op (the second run).
// Wall time and peak RSS of each process come from GNU time; 3 repetitions, median.
import { execFileSync, spawnSync } from "node:child_process";
import {
  chmodSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import { loadavg, tmpdir } from "node:os";
import * as path from "node:path";
import { benchContent, benchFile, writeBenchRepo } from "./bench-profile.mjs";

const REPS = 3;
const PACKAGES = ["bash", "coreutils", "gzip", "sed", "tar"];
const GNU_TIME = "/usr/bin/time";
const APT_GET_MODULE = "/usr/share/cfengine3/masterfiles/modules/packages/vendored/apt_get.mustache";

const args = process.argv.slice(2);
let binary = existsSync("dist/driftless-linux-x64") ? "dist/driftless-linux-x64" : undefined;
const sizes = [];
for (let i = 0; i < args.length; i++) {
  if (args[i] === "-h" || args[i] === "--help") {
    console.log("Usage: scripts/bench-peers [--binary FILE] [N...]   (default N: 1000 10000; needs root)");
    process.exit(0);
  } else if (args[i] === "--binary") {
    binary = args[++i];
    if (!binary || !existsSync(binary)) fail(`--binary: no such file: ${binary ?? "(missing)"}`);
  } else if (/^\d+$/.test(args[i])) sizes.push(Number(args[i]));
  else fail(`unknown argument: ${args[i]} (see --help)`);
}
const NS = sizes.length ? sizes : [1000, 10000];

function fail(message) {
  console.error(`bench-peers: ${message}`);
  process.exit(1);
}

if (process.getuid?.() !== 0) {
  fail("needs root: cf-agent manages files and packages as root, and cfengine3 may need installing");
}
if (!existsSync(GNU_TIME)) fail("needs GNU time (/usr/bin/time): apt-get install time");
if (spawnSync("cf-agent", ["--version"]).error) {
  console.log("cf-agent is missing: apt-get install -y cfengine3");
  const install = spawnSync("apt-get", ["install", "-y", "cfengine3"], { stdio: "inherit" });
  if (install.status !== 0) fail("apt-get install -y cfengine3 failed");
}
if (!existsSync(APT_GET_MODULE)) fail(`CFEngine's apt_get package module is missing: ${APT_GET_MODULE}`);
if (!existsSync("dist/driftless.mjs")) execFileSync(process.execPath, ["scripts/build.mjs"], { stdio: "inherit" });

// The CFEngine policy: one files promise per file with its content inline (`content =>`, like the
// Driftless profile: no copy from a source tree) and perms 0644; one packages promise per package
// through the apt_get package module (installed packages are read with dpkg-query).
function cfenginePolicy(n, target, dir) {
  const lines = [
    'body common control { bundlesequence => { "bench" }; }',
    'body perms p644 { mode => "0644"; rxdirs => "false"; }',
    "body package_module apt_get {",
    '  query_installed_ifelapsed => "0";',
    '  query_updates_ifelapsed => "100000";',
    '  interpreter => "/usr/bin/python3";',
    "}",
    "bundle agent bench {",
    "packages:",
  ];
  for (const name of PACKAGES) lines.push(`  "${name}" policy => "present", package_module => apt_get;`);
  lines.push("files:");
  for (let i = 0; i < n; i++) {
    lines.push(
      `  "${benchFile(target, i)}" create => "true", perms => p644, content => "${benchContent(i)}$(const.n)";`,
    );
  }
  lines.push("}");
  const file = path.join(dir, "promises.cf");
  writeFileSync(file, `${lines.join("\n")}\n`, { mode: 0o600 });
  return file;
}

function cfengineWorkdir() {
  const workdir = mkdtempSync(path.join(tmpdir(), "bench-peers-cfwork-"));
  const modules = path.join(workdir, "modules", "packages");
  mkdirSync(modules, { recursive: true });
  copyFileSync(APT_GET_MODULE, path.join(modules, "apt_get"));
  chmodSync(path.join(modules, "apt_get"), 0o755);
  // cf-agent validates the policy with WORKDIR/bin/cf-promises before running it.
  mkdirSync(path.join(workdir, "bin"));
  symlinkSync(
    execFileSync("sh", ["-c", "command -v cf-promises"], { encoding: "utf8" }).trim(),
    path.join(workdir, "bin", "cf-promises"),
  );
  chmodSync(workdir, 0o700);
  return workdir;
}

function timed(command, commandArgs, env = process.env) {
  const result = spawnSync(GNU_TIME, ["-f", "BENCH %e %M", command, ...commandArgs], {
    encoding: "utf8",
    env,
    maxBuffer: 256 * 1024 * 1024,
  });
  const match = /BENCH ([\d.]+) (\d+)\s*$/.exec(result.stderr);
  if (!match) throw new Error(`no timing from GNU time for ${command}:\n${result.stderr}`);
  return { status: result.status, wall: Number(match[1]), rssMb: Number(match[2]) / 1024, output: result };
}

function checkTarget(n, target, tool) {
  let count = 0;
  for (const dir of readdirSync(target)) count += readdirSync(path.join(target, dir)).length;
  const last = readFileSync(benchFile(target, n - 1), "utf8");
  if (count !== n || last !== `${benchContent(n - 1)}\n`) {
    throw new Error(`${tool}: after the first apply ${count} files (want ${n}), last one ${JSON.stringify(last)}`);
  }
}

function runDriftless(n, command, prefix) {
  const target = mkdtempSync(path.join(tmpdir(), "bench-peers-target-"));
  const state = mkdtempSync(path.join(tmpdir(), "bench-peers-state-"));
  const repo = writeBenchRepo(n, target, PACKAGES, "bench-peers-repo-");
  const cmd = [...prefix, "apply", "--source", repo, "--state", state, "--json"];
  const first = timed(command, cmd);
  if (first.status !== 2) throw new Error(`driftless first apply exited ${first.status}:\n${first.output.stderr}`);
  checkTarget(n, target, "driftless");
  const noop = timed(command, cmd);
  if (noop.status !== 0) throw new Error(`driftless no-op apply exited ${noop.status}:\n${noop.output.stderr}`);
  for (const dir of [target, state, repo]) rmSync(dir, { recursive: true, force: true });
  return { first, noop };
}

function runCfengine(n) {
  const target = mkdtempSync(path.join(tmpdir(), "bench-peers-target-"));
  const workdir = cfengineWorkdir();
  const policy = cfenginePolicy(n, target, workdir);
  const env = { ...process.env, CFENGINE_TEST_OVERRIDE_WORKDIR: workdir };
  const check = spawnSync("cf-promises", ["-f", policy], { encoding: "utf8", env });
  if (check.status !== 0) throw new Error(`cf-promises rejected the policy:\n${check.stdout}${check.stderr}`);
  const first = timed("cf-agent", ["-K", "-f", policy], env);
  if (first.status !== 0)
    throw new Error(`cf-agent first run exited ${first.status}:\n${first.output.stdout}${first.output.stderr}`);
  checkTarget(n, target, "cf-agent");
  const noop = timed("cf-agent", ["-K", "-f", policy], env);
  if (noop.status !== 0) throw new Error(`cf-agent no-op run exited ${noop.status}:\n${noop.output.stdout}`);
  for (const dir of [target, workdir]) rmSync(dir, { recursive: true, force: true });
  return { first, noop };
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const tools = [{ name: "Driftless (node)", run: (n) => runDriftless(n, "bin/driftless.js", []) }];
if (binary) tools.push({ name: "Driftless (binary)", run: (n) => runDriftless(n, path.resolve(binary), []) });
tools.push({ name: "CFEngine", run: runCfengine });

console.log(`${execFileSync("cf-agent", ["--version"], { encoding: "utf8" }).trim()}; node ${process.version}`);
console.log(
  `load average at start: ${loadavg()
    .map((x) => x.toFixed(2))
    .join(" ")}`,
);
const results = {};
for (const n of NS) {
  const runs = Object.fromEntries(tools.map((t) => [t.name, []]));
  // Repetitions interleave the tools, so a change in the machine's load hits all of them alike.
  for (let rep = 0; rep < REPS; rep++) for (const tool of tools) runs[tool.name].push(tool.run(n));
  for (const tool of tools) {
    for (const phase of ["first", "noop"]) {
      const list = runs[tool.name].map((r) => r[phase]);
      results[`${tool.name}/${n}/${phase}`] = {
        wall: median(list.map((r) => r.wall)),
        rssMb: median(list.map((r) => r.rssMb)),
      };
    }
  }
}
console.log(
  `load average at end: ${loadavg()
    .map((x) => x.toFixed(2))
    .join(" ")}`,
);

// Targets of issue 9: Driftless's median against CFEngine's median.
function target(n, phase) {
  if (phase === "first" && n === 10000)
    return { time: 1, rss: 100, text: "at most CFEngine's time; peak RSS < 100 MB" };
  if (phase === "first") return { time: 1, text: "at most CFEngine's time" };
  if (n === 1000) return { time: 0.5, rss: 60, text: "at most half of CFEngine's time; peak RSS < 60 MB" };
  if (n === 10000) return { time: 0.25, text: "at most a quarter of CFEngine's time" };
  return undefined;
}

const fmt = (r) => `${r.wall.toFixed(2)} s, ${r.rssMb.toFixed(0)} MB`;
const drift = tools.filter((t) => t.name !== "CFEngine").map((t) => t.name);
console.log(`\n| work | ${drift.join(" | ")} | CFEngine | ratio (Driftless / CFEngine) | target | met |`);
console.log(`| --- | ${drift.map(() => "---: | ").join("")}---: | ---: | --- | --- |`);
for (const n of NS) {
  for (const phase of ["first", "noop"]) {
    const cf = results[`CFEngine/${n}/${phase}`];
    const goal = target(n, phase);
    const cells = drift.map((name) => fmt(results[`${name}/${n}/${phase}`]));
    const ratios = drift.map((name) => (results[`${name}/${n}/${phase}`].wall / cf.wall).toFixed(2));
    const met = drift.map((name) => {
      const r = results[`${name}/${n}/${phase}`];
      if (!goal) return "-";
      const ok = r.wall <= goal.time * cf.wall && (goal.rss === undefined || r.rssMb < goal.rss);
      return ok ? "met" : "not met";
    });
    const work = `${phase === "first" ? "first apply" : "no-op"}, ${n.toLocaleString("en")} files`;
    console.log(
      `| ${work} | ${cells.join(" | ")} | ${fmt(cf)} | ${ratios.join(" / ")} | ${goal?.text ?? "-"} | ${met.join(" / ")} |`,
    );
  }
}
