/**
 * Consecutive file writes go through one write batch (host/write-batch.ts, driven by
 * engine/apply.ts): temp files created and filled, fsynced together, renamed, directories
 * fsynced once. Real files in temp directories.
 */
import {
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import * as path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import type { Change, ResourceResult } from "../../agent/src/engine/types.js";
import { HostFs } from "../../agent/src/host/fs.js";
import { StateStore } from "../../agent/src/state/db.js";
import { run } from "../support/ports.js";
import { cleanupTemp, fleet, makeRepo, profile, tempDir } from "../support/repo.js";

afterAll(cleanupTemp);

function everyone(files: string): string {
  return makeRepo({ "fleet.yaml": fleet("  - match: {}\n    profiles: [p]\n"), "p.yaml": profile("p", files) });
}

async function apply(root: string, repo: string, extra: Parameters<typeof run>[2] = {}) {
  const state = StateStore.open(tempDir());
  try {
    return await run(root, repo, { mode: "apply", state, ...extra });
  } finally {
    state.close();
  }
}

/** Every entry under `dir` whose name is one of the agent's temp names. */
function tempFilesUnder(dir: string): string[] {
  return readdirSync(dir, { recursive: true, encoding: "utf8" }).filter((p) =>
    /(^|\/)\.driftless-[0-9a-f]{16}\.tmp$/.test(p),
  );
}

const outcomes = (results: ResourceResult[]) => results.map((r) => `${r.resource} ${r.outcome}`);

describe("a first apply writes its files in batches", () => {
  it("writes every file with its content and mode over several flushes, leaves no temp file, then is in sync", async () => {
    const root = tempDir();
    const lines = ["files:"];
    const n = 650; // more than two full batches, in 7 directories
    for (let i = 0; i < n; i++) {
      const mode = i % 3 === 0 ? "0600" : i % 3 === 1 ? "0640" : "0644";
      lines.push(`  - { path: /srv/d${Math.floor(i / 100)}/f${i}.conf, content: "value ${i}\\n", mode: "${mode}" }`);
    }
    const repo = everyone(`${lines.join("\n")}\n`);
    const outcome = await apply(root, repo);
    expect(outcome.exitCode).toBe(2);
    expect(outcome.results).toHaveLength(n);
    expect(outcome.results.every((r) => r.outcome === "changed")).toBe(true);
    // In the plan's order.
    expect(outcome.results.map((r) => r.resource)).toEqual(outcome.plan?.changes.map((c) => c.resource));
    for (let i = 0; i < n; i++) {
      const file = path.join(root, `srv/d${Math.floor(i / 100)}/f${i}.conf`);
      expect(readFileSync(file, "utf8")).toBe(`value ${i}\n`);
      expect(statSync(file).mode & 0o7777).toBe(i % 3 === 0 ? 0o600 : i % 3 === 1 ? 0o640 : 0o644);
    }
    expect(statSync(path.join(root, "srv/d3")).mode & 0o7777).toBe(0o755);
    expect(tempFilesUnder(root)).toEqual([]);
    expect((await apply(root, repo)).exitCode).toBe(0);
  });

  it("fails one write in the middle, skips what depends on it, writes the rest, and leaves no temp file", async () => {
    const root = tempDir();
    writeFileSync(path.join(root, "blocker"), "a file where a directory is needed");
    const repo = everyone(`files:
  - { path: /etc/a.conf, content: "a" }
  - { path: /blocker/child.conf, content: "x" }
  - { path: /etc/b.conf, content: "b" }
  - { path: /etc/owned.conf, content: "o", owner: no-such-user }
  - { path: /etc/c.conf, content: "c" }
  - { path: /etc/after-child.conf, content: "y", after: [file:/blocker/child.conf] }
  - { path: /etc/after-owned.conf, content: "z", after: [file:/etc/owned.conf] }
  - { path: /etc/d.conf, content: "d" }
`);
    const outcome = await apply(root, repo);
    expect(outcome.exitCode).toBe(4);
    expect(outcomes(outcome.results)).toEqual([
      "file:/etc/a.conf changed",
      "file:/blocker/child.conf failed",
      "file:/etc/b.conf changed",
      "file:/etc/owned.conf failed",
      "file:/etc/c.conf changed",
      "file:/etc/after-child.conf skipped",
      "file:/etc/after-owned.conf skipped",
      "file:/etc/d.conf changed",
    ]);
    expect(outcome.results[1]?.error).toMatch(/\/blocker is not a directory/);
    expect(outcome.results[3]?.error).toMatch(/user "no-such-user" does not exist/);
    expect(readdirSync(path.join(root, "etc")).sort()).toEqual(["a.conf", "b.conf", "c.conf", "d.conf"]);
    expect(readFileSync(path.join(root, "etc/c.conf"), "utf8")).toBe("c");
    expect(tempFilesUnder(root)).toEqual([]);
  });

  it("makes a file durable before the file that comes `after` it starts; files without an edge share a batch", async () => {
    const root = tempDir();
    // /etc/second is declared first but comes after /etc/first.
    const repo = everyone(`files:
  - { path: /etc/second, content: "2", after: [file:/etc/first] }
  - { path: /etc/first, content: "1" }
  - { path: /etc/third, content: "3" }
  - { path: /etc/fourth, content: "4" }
`);
    const events: string[] = [];
    const seen = new Map<string, boolean>();
    const outcome = await apply(root, repo, {
      onStart: (change: Change) => {
        events.push(`start ${change.resource}`);
        // What a change that starts can rely on: the files reported before it are in place.
        if (change.resource === "file:/etc/second") seen.set("first", existsSync(path.join(root, "etc/first")));
      },
      onResult: (result: ResourceResult) => events.push(`done ${result.resource}`),
    });
    expect(outcome.exitCode).toBe(2);
    expect(events).toEqual([
      "start file:/etc/first",
      "done file:/etc/first",
      "start file:/etc/second",
      "start file:/etc/third",
      "start file:/etc/fourth",
      "done file:/etc/second",
      "done file:/etc/third",
      "done file:/etc/fourth",
    ]);
    expect(seen.get("first")).toBe(true);
  });

  it("stops between resources: what was staged is made durable and reported, nothing else, no temp file", async () => {
    const root = tempDir();
    const lines = ["files:"];
    for (let i = 0; i < 20; i++) lines.push(`  - { path: /etc/f${i}, content: "${i}" }`);
    const stop = new AbortController();
    const outcome = await apply(root, everyone(`${lines.join("\n")}\n`), {
      stop: stop.signal,
      onStart: (change: Change) => {
        if (change.resource === "file:/etc/f4") stop.abort();
      },
    });
    expect(outcome.status).toBe("interrupted");
    expect(outcomes(outcome.results)).toEqual([0, 1, 2, 3, 4].map((i) => `file:/etc/f${i} changed`));
    expect(readdirSync(path.join(root, "etc")).sort()).toEqual(["f0", "f1", "f2", "f3", "f4"]);
    expect(readFileSync(path.join(root, "etc/f4"), "utf8")).toBe("4");
    expect(tempFilesUnder(root)).toEqual([]);
  });
});

describe("a write batch of the filesystem port", () => {
  it("fails a write whose rename fails, removes its temp file, and writes the others", async () => {
    const root = tempDir();
    const fs = new HostFs(root);
    const batch = fs.writeBatch();
    batch.stage("/etc/a", Buffer.from("a"), { mode: 0o644 });
    batch.stage("/etc/b", Buffer.from("b"), { mode: 0o644 });
    batch.stage("/etc/c", Buffer.from("c"), { mode: 0o600 });
    // Between staging and the flush, /etc/b becomes a directory that is not empty.
    mkdirSync(path.join(root, "etc/b"));
    writeFileSync(path.join(root, "etc/b/inside"), "kept");
    const errors = await batch.flush();
    expect(errors[0]).toBeUndefined();
    expect(String(errors[1])).toMatch(/cannot write \/etc\/b: .* \(renaming its temp file over it\)/);
    expect(errors[2]).toBeUndefined();
    expect(readFileSync(path.join(root, "etc/a"), "utf8")).toBe("a");
    expect(readFileSync(path.join(root, "etc/b/inside"), "utf8")).toBe("kept");
    expect(statSync(path.join(root, "etc/c")).mode & 0o7777).toBe(0o600);
    expect(tempFilesUnder(root)).toEqual([]);
  });

  it("fails a copy whose source changed after it was hashed, and writes nothing for it", async () => {
    const root = tempDir();
    const source = path.join(tempDir(), "big.bin");
    writeFileSync(source, "as planned");
    const fs = new HostFs(root);
    const batch = fs.writeBatch();
    batch.stageCopy("/opt/big.bin", source, { mode: 0o644, sha256: "0".repeat(64) });
    batch.stage("/opt/small", Buffer.from("s"), { mode: 0o644 });
    const errors = await batch.flush();
    expect(String(errors[0])).toMatch(/changed while the run was using it/);
    expect(errors[1]).toBeUndefined();
    expect(readdirSync(path.join(root, "opt"))).toEqual(["small"]);
  });

  it("renames inside the directory resolved at staging, even when a link to outside the root is swapped in before the flush", async () => {
    const root = tempDir();
    const outside = tempDir();
    const fs = new HostFs(root);
    const batch = fs.writeBatch();
    batch.stage("/opt/tool/tool.conf", Buffer.from("t"), { mode: 0o644 });
    expect(statSync(path.join(root, "opt/tool")).isDirectory()).toBe(true);
    // Someone who can write /opt moves the directory away and puts an absolute link in its
    // place: followed on this machine, it would lead to `outside`.
    renameSync(path.join(root, "opt/tool"), path.join(root, "opt/tool-moved"));
    symlinkSync(outside, path.join(root, "opt/tool"));
    expect(await batch.flush()).toEqual([undefined]);
    expect(readdirSync(outside)).toEqual([]);
    expect(readFileSync(path.join(root, "opt/tool-moved/tool.conf"), "utf8")).toBe("t");
  });

  it("writes under a root given through a symbolic link", async () => {
    const real = tempDir();
    const root = path.join(tempDir(), "root-link");
    symlinkSync(real, root);
    const batch = new HostFs(root).writeBatch();
    batch.stage("/top.conf", Buffer.from("1"), { mode: 0o644 });
    batch.stage("/etc/app.conf", Buffer.from("2"), { mode: 0o644 });
    expect(await batch.flush()).toEqual([undefined, undefined]);
    expect(readFileSync(path.join(real, "top.conf"), "utf8")).toBe("1");
    expect(readFileSync(path.join(real, "etc/app.conf"), "utf8")).toBe("2");
  });

  it("says when it is full, so a caller keeps few descriptors open", async () => {
    const fs = new HostFs(tempDir());
    const batch = fs.writeBatch();
    let staged = 0;
    while (!batch.full) batch.stage(`/d${staged % 3}/f${staged++}`, Buffer.from("x"), { mode: 0o644 });
    expect(staged).toBeGreaterThan(10);
    expect(staged).toBeLessThanOrEqual(1024);
    expect((await batch.flush()).every((e) => e === undefined)).toBe(true);
  });
});
