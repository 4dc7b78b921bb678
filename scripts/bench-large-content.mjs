// Large file content benchmark (method in docs/benchmarks.md, "Large file content"): the peak
// RSS of runs whose profile has a 100 MB `source:` file, and of a 50 MB inline `content:`.
import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { appendFileSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";

const temp = mkdtempSync(path.join(tmpdir(), "driftless-bench-large-"));
const fleet = "apiVersion: driftless/v1\nkind: Fleet\nassignments:\n  - match: {}\n    profiles: [big]\n";
const profile = (files) => `apiVersion: driftless/v1\nkind: Profile\nname: big\nfiles:\n${files}`;

const sourceRepo = path.join(temp, "source-repo");
mkdirSync(sourceRepo);
writeFileSync(path.join(sourceRepo, "fleet.yaml"), fleet);
writeFileSync(path.join(sourceRepo, "big.bin"), randomBytes(100 * 1024 * 1024));
writeFileSync(
  path.join(sourceRepo, "big.yaml"),
  profile('  - { path: /srv/big.bin, source: big.bin }\n  - { path: /srv/small.txt, content: "small\\n" }\n'),
);
const inlineRepo = path.join(temp, "inline-repo");
mkdirSync(inlineRepo);
writeFileSync(path.join(inlineRepo, "fleet.yaml"), fleet);
writeFileSync(
  path.join(inlineRepo, "big.yaml"),
  profile(`  - { path: /srv/inline.txt, content: "${"x".repeat(50 * 1024 * 1024)}" }\n`),
);

function step(name, verb, repo, root, state) {
  const r = spawnSync(
    "/usr/bin/time",
    [
      "-f",
      "BENCH %e %M",
      process.execPath,
      "bin/driftless.js",
      verb,
      "--source",
      repo,
      "--root",
      root,
      "--state",
      state,
      "--host",
      "x",
    ],
    { encoding: "utf8", maxBuffer: 1 << 26 },
  );
  const line = r.stderr.split("\n").find((l) => l.startsWith("BENCH "));
  if (!line) throw new Error(`${name}: no timing (exit ${r.status}): ${r.stderr.slice(-2000)}`);
  const [, seconds, kb] = line.split(" ");
  console.log(
    `  ${name.padEnd(44)} ${Number(seconds).toFixed(2)} s  ${(Number(kb) / 1024).toFixed(0)} MB  exit ${r.status}`,
  );
}

const root = path.join(temp, "root");
const state = path.join(temp, "state");
console.log("large file content (wall time, peak RSS, exit code)");
step("first apply, 100 MB source:", "apply", sourceRepo, root, state);
step("second apply at once (host copy read)", "apply", sourceRepo, root, state);
await new Promise((resolve) => setTimeout(resolve, 2200));
step("no-op apply (trusted record)", "apply", sourceRepo, root, state);
appendFileSync(path.join(root, "srv/big.bin"), "x".repeat(100));
step("plan after the host's copy changed", "plan", sourceRepo, root, state);
step(
  "apply of a 50 MB inline content: (refused)",
  "apply",
  inlineRepo,
  path.join(temp, "root2"),
  path.join(temp, "state2"),
);
rmSync(temp, { recursive: true, force: true });
