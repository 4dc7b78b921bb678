// The converge benchmarks' desired state (bench-converge, bench-peers): n files with distinct
// content, mode 0644, 100 per directory under `target`, plus `packages` installed.
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";

/** File i's content, without its final newline. */
export const benchContent = (i) => `setting-${i} = ${(i * 7919) % 100003}`;
/** File i's path under `target`. */
export const benchFile = (target, i) => `${target}/d${Math.floor(i / 100)}/file-${i}.conf`;

/** A profile repository (a temp directory named from `prefix`) that gives every host that state. */
export function writeBenchRepo(n, target, packages, prefix) {
  const repo = mkdtempSync(path.join(tmpdir(), prefix));
  writeFileSync(
    path.join(repo, "fleet.yaml"),
    "apiVersion: driftless/v1\nkind: Fleet\nassignments:\n  - match: {}\n    profiles: [bench]\n",
  );
  const lines = ["apiVersion: driftless/v1", "kind: Profile", "name: bench"];
  // An empty `packages:` would be null, which the schema refuses.
  if (packages.length) lines.push("packages:");
  for (const name of packages) lines.push(`  - { name: ${name}, state: present }`);
  lines.push("files:");
  for (let i = 0; i < n; i++) {
    lines.push(`  - { path: ${benchFile(target, i)}, content: "${benchContent(i)}\\n", mode: "0644" }`);
  }
  writeFileSync(path.join(repo, "bench.yaml"), `${lines.join("\n")}\n`);
  return repo;
}
