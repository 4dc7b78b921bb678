/**
 * `sensitive: true`: the content of such a file never leaves the agent's memory. The built CLI
 * plans and applies a changed secret; neither the old nor the new secret may appear in its
 * output (human or JSON) nor anywhere in the state database's files.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import * as path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { driftless, handOver } from "../support/cli.js";
import { cleanupTemp, fleet, makeRepo, profile, tempDir, writeTree } from "../support/repo.js";

afterAll(cleanupTemp);

const OLD = "old-secret-7f3a91";
const NEW = "new-secret-c24e08";

/** Every byte of the state directory (state.db, its WAL and shared memory), as text. */
function stateBytes(dir: string): string {
  return readdirSync(dir)
    .map((name) => readFileSync(path.join(dir, name)).toString("latin1"))
    .join("\n");
}

describe("a sensitive file", () => {
  it("keeps old and new content out of plan and apply output and out of the state database", () => {
    const root = tempDir();
    const stateDir = tempDir();
    mkdirSync(path.join(root, "etc/edge"), { recursive: true });
    writeFileSync(path.join(root, "etc/edge/key.pem"), `${OLD}\n`);
    writeFileSync(path.join(root, "etc/edge/plain.conf"), "plain old\n");
    handOver(root, path.join(root, "etc"), path.join(root, "etc/edge"), stateDir);
    handOver(path.join(root, "etc/edge/key.pem"), path.join(root, "etc/edge/plain.conf"));
    const repo = makeRepo({
      "fleet.yaml": fleet("  - match: {}\n    profiles: [p]\n"),
      "p.yaml": profile(
        "p",
        `files:
  - { path: /etc/edge/key.pem, source: files/key.pem, mode: "0600", sensitive: true }
  - { path: /etc/edge/new.pem, template: files/new.pem.liquid, sensitive: true }
  - { path: /etc/edge/plain.conf, content: "plain new\\n" }
`,
      ),
      "files/key.pem": `${NEW}\n`,
      "files/new.pem.liquid": `{{ "${NEW}" }}-2\n`,
    });
    const args = ["--source", repo, "--root", root, "--state", stateDir];

    const human = driftless(["plan", ...args]);
    const json = driftless(["plan", ...args, "--json"]);
    const applied = driftless(["apply", ...args, "--json"]);
    const again = driftless(["apply", ...args, "--json"]);
    expect([human.exitCode, json.exitCode, applied.exitCode, again.exitCode], applied.stderr).toEqual([2, 2, 2, 0]);
    expect(readFileSync(path.join(root, "etc/edge/key.pem"), "utf8")).toBe(`${NEW}\n`);
    expect(readFileSync(path.join(root, "etc/edge/new.pem"), "utf8")).toBe(`${NEW}-2\n`);

    // Said to differ, not shown; the file that is not sensitive still gets its diff.
    expect(human.stdout).toContain("content differs (sensitive)");
    expect(human.stdout).toContain("content not shown (sensitive)");
    expect(human.stdout).toContain("+plain new");
    const report = JSON.parse(json.stdout) as { changes: Array<{ resource: string; diff?: string }> };
    expect(report.changes.map((c) => [c.resource, c.diff])).toEqual([
      ["file:/etc/edge/key.pem", "content differs (sensitive)"],
      ["file:/etc/edge/new.pem", "content not shown (sensitive)"],
      ["file:/etc/edge/plain.conf", expect.stringContaining("-plain old\n+plain new")],
    ]);

    for (const run of [human, json, applied, again]) {
      for (const secret of [OLD, NEW]) {
        expect(run.stdout).not.toContain(secret);
        expect(run.stderr).not.toContain(secret);
      }
    }
    expect(existsSync(path.join(stateDir, "state.db"))).toBe(true);
    const state = stateBytes(stateDir);
    expect(state).toContain("plain new"); // the check can see content that is stored
    expect(state).not.toContain(OLD);
    expect(state).not.toContain(NEW);

    // Drift by hand: reported with hashes only.
    writeTree(root, { "etc/edge/key.pem": `${OLD}\n` });
    const drift = driftless(["plan", ...args, "--json"]);
    expect(drift.exitCode).toBe(2);
    expect(drift.stdout).not.toContain(OLD);
    expect(JSON.parse(drift.stdout).drift).toEqual([
      {
        resource: "file:/etc/edge/key.pem",
        field: "content",
        desired: expect.stringMatching(/^sha256:[0-9a-f]{64}$/),
        actual: expect.stringMatching(/^sha256:[0-9a-f]{64}$/),
      },
    ]);
  });
});
