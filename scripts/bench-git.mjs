// Git benchmark (method in docs/benchmarks.md): a repository of 10,000 files and 1,000 commits
// served by `git http-backend`; the agent's first clone and its fetch of one new small commit,
// side by side with `git clone` and `git fetch` of the git CLI against the same server.
import { execFile, execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { bundleForBench } from "./bench-bundle.mjs";

const FILES = Number(process.env.BENCH_FILES ?? 10_000);
const COMMITS = Number(process.env.BENCH_COMMITS ?? 1_000);
const ROUNDS = 7;

// The agent's own Git code and the test server, bundled for this script.
const { GitCache, HostFs, gitHttp, startGitServer, createRepo, cleanup } = await bundleForBench("git", {
  "agent/src/source/git.ts": ["GitCache"],
  "agent/src/host/fs.ts": ["HostFs"],
  "agent/src/host/http.ts": ["gitHttp"],
  "test/support/git-server.ts": ["startGitServer", "createRepo", "cleanup"],
});

const server = await startGitServer();
const repo = await createRepo(server, "fleet");
const git = (args, options = {}) => execFileSync("git", args, { cwd: repo.dir, maxBuffer: 1 << 30, ...options });

// History: the first commit adds every file, each later commit changes ten of them.
console.log(`generating ${FILES} files and ${COMMITS} commits...`);
let stream = "";
const t0 = 1_700_000_000;
const blob = (text) => `data ${Buffer.byteLength(text)}\n${text}\n`;
for (let c = 0; c < COMMITS; c++) {
  stream += `commit refs/heads/main\ncommitter Bench <bench@example.com> ${t0 + c} +0000\n${blob(`commit ${c}`)}`;
  const touched =
    c === 0 ? [...Array(FILES).keys()] : Array.from({ length: 10 }, (_, k) => (c * 37 + k * 1009) % FILES);
  for (const i of touched) {
    stream += `M 100644 inline d${Math.floor(i / 100)}/file-${i}.conf\n${blob(`setting-${i} = ${c}\n`)}`;
  }
}
git(["fast-import", "--quiet"], { input: stream });
git(["checkout", "-q", "-f", "main"]);
await repo.push();

function timed(fn) {
  const start = performance.now();
  const value = fn();
  return value instanceof Promise
    ? value.then((v) => ({ ms: performance.now() - start, value: v }))
    : { ms: performance.now() - start, value };
}

// Asynchronous: the server runs in this process and must keep serving while git runs.
function gitCli(args, cwd) {
  return new Promise((resolve, reject) => {
    execFile("git", args, { cwd }, (error, _stdout, stderr) =>
      error ? reject(new Error(`git ${args.join(" ")}: ${stderr}`)) : resolve(),
    );
  });
}

const url = server.url("fleet");
const fs = new HostFs("/");
const ports = { fs, gitFs: HostFs.nodeFs(), http: gitHttp };

// First clone: the agent clones shallow (depth 1) into its bare cache, then checks out the tip.
const agentState = mkdtempSync(path.join(tmpdir(), "driftless-bench-agent-"));
const cache = new GitCache(ports, agentState);
const agentClone = await timed(() => cache.fetch({ url, ref: "main" }));
const agentCheckout = await timed(() => cache.checkout(agentClone.value));
const cliDir = mkdtempSync(path.join(tmpdir(), "driftless-bench-cli-"));
const cliShallow = await timed(() =>
  gitCli(["clone", "-q", "--depth", "1", "--single-branch", "--bare", url, "shallow.git"], cliDir),
);
const cliFull = await timed(() => gitCli(["clone", "-q", "--single-branch", url, "full"], cliDir));

// Incremental: one new small commit, fetched by both; the median of several rounds.
const agentFetch = [];
const agentCheckoutNext = [];
const cliFetch = [];
let previous = agentClone.value;
for (let r = 0; r < ROUNDS; r++) {
  await repo.writeFiles({ [`d0/file-${r}.conf`]: `setting-${r} = round ${r}\n` });
  await repo.commit(`round ${r}`);
  await repo.push();
  const fetched = await timed(() => cache.fetch({ url, ref: "main" }));
  agentFetch.push(fetched.ms);
  agentCheckoutNext.push((await timed(() => cache.checkout(fetched.value, previous))).ms);
  previous = fetched.value;
  cliFetch.push(
    (await timed(() => gitCli(["fetch", "-q", "origin", "main:main"], path.join(cliDir, "shallow.git")))).ms,
  );
}
const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

console.log(`\nfirst clone (${FILES} files, ${COMMITS} commits)`);
console.log(`  agent, shallow fetch into its cache   ${agentClone.ms.toFixed(0).padStart(6)} ms`);
console.log(`  agent, checkout of the tip            ${agentCheckout.ms.toFixed(0).padStart(6)} ms`);
console.log(`  git clone --depth 1 --bare            ${cliShallow.ms.toFixed(0).padStart(6)} ms`);
console.log(`  git clone (full history, work tree)   ${cliFull.ms.toFixed(0).padStart(6)} ms`);
console.log(`\nfetch of one new small commit (median of ${ROUNDS})`);
console.log(
  `  agent (in the daemon's process)       ${median(agentFetch).toFixed(0).padStart(6)} ms   ${agentFetch.map((x) => x.toFixed(0)).join(" ")}`,
);
console.log(
  `  git fetch (a process)                 ${median(cliFetch).toFixed(0).padStart(6)} ms   ${cliFetch.map((x) => x.toFixed(0)).join(" ")}`,
);
console.log(`  agent, checkout of the new commit (unchanged files linked) ${median(agentCheckoutNext).toFixed(0)} ms`);
console.log(
  `  ratio agent / git                     ${(median(agentFetch) / median(cliFetch)).toFixed(2)}x (target < 1.5x)`,
);

await cleanup();
for (const dir of [agentState, cliDir]) rmSync(dir, { recursive: true, force: true });
process.exit(0);
