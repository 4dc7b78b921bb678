import {
  chmodSync,
  existsSync,
  lstatSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  statSync,
  utimesSync,
  writeFileSync,
} from "node:fs";
import * as path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import type { Clock } from "../../agent/src/host/clock.js";
import { systemClock } from "../../agent/src/host/clock.js";
import { HostFs } from "../../agent/src/host/fs.js";
import { type FileRecord, fingerprintOf, readFiles } from "../../agent/src/resources/file/read.js";
import { StateStore } from "../../agent/src/state/db.js";
import { file, sha256 } from "../support/desired.js";
import { run } from "../support/ports.js";
import { cleanupTemp, fleet, makeRepo, profile, tempDir } from "../support/repo.js";

afterAll(cleanupTemp);

const repoFiles = {
  "fleet.yaml": fleet('  - match: { hostname: "edge-*" }\n    profiles: [edge]\n'),
  "edge.yaml": profile(
    "edge",
    `vars: { port: 1883 }
files:
  - { path: /etc/edge, state: directory, mode: "0750" }
  - { path: /etc/edge/edge.conf, template: edge.conf.liquid, mode: "0640" }
  - { path: /etc/edge/static.txt, content: "static\\n" }
  - { path: /etc/edge/current, state: link, target: /etc/edge/edge.conf }
  - { path: /etc/edge/old.conf, state: absent }
`,
  ),
  "edge.conf.liquid": "host {{ host.name }} port {{ vars.port }} arch {{ facts.os.arch }} site {{ labels.site }}\n",
};

async function apply(root: string, source: string, stateDir: string, extra = {}) {
  const state = StateStore.open(stateDir);
  try {
    return await run(root, source, { mode: "apply", state, labels: { site: "lyon" }, ...extra });
  } finally {
    state.close();
  }
}

describe("files converge into a root", () => {
  it("creates, links and removes, then is in sync", async () => {
    const root = tempDir();
    const stateDir = tempDir();
    const repo = makeRepo(repoFiles);
    writeFileSync(path.join(root, "old.conf"), "");
    const first = await apply(root, repo, stateDir);
    expect(first.exitCode).toBe(2);
    expect(readFileSync(path.join(root, "etc/edge/edge.conf"), "utf8")).toBe(
      "host edge-1 port 1883 arch amd64 site lyon\n",
    );
    expect(statSync(path.join(root, "etc/edge")).mode & 0o7777).toBe(0o750);
    expect(statSync(path.join(root, "etc/edge/edge.conf")).mode & 0o7777).toBe(0o640);
    expect(statSync(path.join(root, "etc/edge/static.txt")).mode & 0o7777).toBe(0o644);
    expect(readlinkSync(path.join(root, "etc/edge/current"))).toBe("/etc/edge/edge.conf");
    expect(first.results.map((r) => `${r.resource} ${r.outcome}`)).toEqual([
      "file:/etc/edge changed",
      "file:/etc/edge/edge.conf changed",
      "file:/etc/edge/static.txt changed",
      "file:/etc/edge/current changed",
    ]);

    const second = await apply(root, repo, stateDir);
    expect(second.exitCode).toBe(0);
    expect(second.status).toBe("in-sync");
    expect(second.plan?.changes).toEqual([]);
  });

  it("fixes a mode-only drift without rewriting the content", async () => {
    const root = tempDir();
    const stateDir = tempDir();
    const repo = makeRepo(repoFiles);
    await apply(root, repo, stateDir);
    const conf = path.join(root, "etc/edge/edge.conf");
    chmodSync(conf, 0o666);
    const before = statSync(conf);
    const planned = await run(root, repo, { labels: { site: "lyon" } });
    expect(planned.exitCode).toBe(2);
    expect(planned.plan?.changes.map((c) => [c.resource, c.drift])).toEqual([
      ["file:/etc/edge/edge.conf", [{ field: "mode", desired: "0640", actual: "0666" }]],
    ]);
    const fixed = await apply(root, repo, stateDir);
    expect(fixed.exitCode).toBe(2);
    const after = statSync(conf);
    expect(after.mode & 0o7777).toBe(0o640);
    expect(after.ino).toBe(before.ino);
    expect(after.mtimeMs).toBe(before.mtimeMs);
  });

  it("rewrites drifted content atomically, leaving no temp file", async () => {
    const root = tempDir();
    const stateDir = tempDir();
    const repo = makeRepo(repoFiles);
    await apply(root, repo, stateDir);
    const conf = path.join(root, "etc/edge/static.txt");
    writeFileSync(conf, "edited by hand\n");
    const inode = statSync(conf).ino;
    const planned = await run(root, repo, { labels: { site: "lyon" } });
    expect(planned.plan?.changes[0]?.diff).toContain("-edited by hand\n+static");
    await apply(root, repo, stateDir);
    expect(readFileSync(conf, "utf8")).toBe("static\n");
    expect(statSync(conf).ino).not.toBe(inode);
    expect(readdirSync(path.dirname(conf)).filter((n) => n.includes("driftless"))).toEqual([]);
  });

  it("never misses a same-size edit that restores the mtime, even with a trusted record", async () => {
    const root = tempDir();
    const stateDir = tempDir();
    const repo = makeRepo(repoFiles);
    await apply(root, repo, stateDir);
    // A clock an hour ahead: the records taken now are past the racy window, so they are trusted.
    const later: Clock = { ...systemClock, now: () => new Date(Date.now() + 3600_000) };
    const state = StateStore.open(stateDir);
    await run(root, repo, { mode: "apply", state, labels: { site: "lyon" } }, { clock: later });
    const record = state.fileRecords().get("file:/etc/edge/static.txt");
    state.close();
    const fs = new HostFs(root);
    const desired = file("/etc/edge/static.txt", { content: Buffer.from("static\n") });
    const nowNs = BigInt(Date.now()) * 1_000_000n;
    const trusted = readFiles(fs, [desired], new Map([[desired.id, record as FileRecord]]), nowNs);
    expect(trusted.actual.get(desired.id)?.fromFingerprint).toBe(true);

    const conf = path.join(root, "etc/edge/static.txt");
    const { mtime } = statSync(conf);
    writeFileSync(conf, "STATIC\n");
    utimesSync(conf, mtime, mtime);
    const planned = await run(root, repo, {
      labels: { site: "lyon" },
      state: StateStore.open(stateDir, { readonly: true }),
    });
    expect(planned.plan?.changes.map((c) => c.resource)).toEqual(["file:/etc/edge/static.txt"]);
  });

  it("trusts a record only for an unchanged file outside the racy window", () => {
    const root = tempDir();
    const fs = new HostFs(root);
    writeFileSync(path.join(root, "a"), "x");
    const desired = file("/a", { content: Buffer.from("x") });
    const st = fs.lstat("/a");
    if (!st) throw new Error("no file");
    const later = st.ctimeNs + 10_000_000_000n;
    const recorded = (recordedAtNs: bigint) =>
      new Map([[desired.id, { fingerprint: fingerprintOf(st), contentHash: sha256("x"), recordedAtNs }]]);
    const trusted = readFiles(fs, [desired], recorded(later), later);
    expect(trusted.actual.get(desired.id)).toMatchObject({ contentHash: sha256("x"), fromFingerprint: true });
    expect(trusted.records.size).toBe(0);
    const racy = readFiles(fs, [desired], recorded(st.ctimeNs), later);
    expect(racy.actual.get(desired.id)).toMatchObject({ contentHash: sha256("x") });
    expect(racy.actual.get(desired.id)?.fromFingerprint).toBeUndefined();
    expect(racy.records.size).toBe(1);
  });

  it("fails one resource, skips what depends on it, and applies the rest", async () => {
    const root = tempDir();
    writeFileSync(path.join(root, "blocker"), "a file where a directory is needed");
    const repo = makeRepo({
      "fleet.yaml": fleet("  - match: {}\n    profiles: [p]\n"),
      "p.yaml": profile(
        "p",
        `files:
  - { path: /blocker/child.conf, content: "x" }
  - { path: /after-child, content: "y", after: [file:/blocker/child.conf] }
  - { path: /independent, content: "z" }
`,
      ),
    });
    const outcome = await apply(root, repo, tempDir());
    expect(outcome.exitCode).toBe(4);
    expect(outcome.results.map((r) => `${r.resource} ${r.outcome}`)).toEqual([
      "file:/blocker/child.conf failed",
      "file:/after-child skipped",
      "file:/independent changed",
    ]);
    expect(existsSync(path.join(root, "after-child"))).toBe(false);
    expect(readFileSync(path.join(root, "independent"), "utf8")).toBe("z");
  });

  it("plans without writing anything", async () => {
    const root = tempDir();
    const outcome = await run(root, makeRepo(repoFiles), { labels: { site: "lyon" } });
    expect(outcome.exitCode).toBe(2);
    expect(readdirSync(root)).toEqual([]);
  });

  it("keeps writes inside the root when a parent directory is an absolute symlink", async () => {
    const root = tempDir();
    const outside = tempDir();
    const { mkdirSync, symlinkSync } = await import("node:fs");
    mkdirSync(path.join(root, "run"));
    mkdirSync(path.join(root, "var"));
    symlinkSync("/run", path.join(root, "var/run"));
    // An absolute link that, followed outside the root, would lead to `outside`.
    symlinkSync(outside, path.join(root, "escape"));
    const repo = makeRepo({
      "fleet.yaml": fleet("  - match: {}\n    profiles: [p]\n"),
      "p.yaml": profile(
        "p",
        `files:\n  - { path: /var/run/x.pid, content: "1" }\n  - { path: ${outside}/y, content: "2" }\n`,
      ),
    });
    const outcome = await apply(root, repo, tempDir());
    expect(outcome.exitCode).toBe(2);
    expect(readFileSync(path.join(root, "run/x.pid"), "utf8")).toBe("1");
    expect(readdirSync(outside)).toEqual([]);
    expect(lstatSync(path.join(root, outside, "y")).isFile()).toBe(true);
  });

  const asRoot = process.getuid?.() === 0;
  if (!asRoot) console.warn("skipping ownership test: needs root (CI runs it)");
  it.skipIf(!asRoot)("sets owner and group by name from the root's /etc/passwd and /etc/group", async () => {
    const root = tempDir();
    const { mkdirSync } = await import("node:fs");
    mkdirSync(path.join(root, "etc"));
    writeFileSync(path.join(root, "etc/passwd"), "root:x:0:0::/root:/bin/sh\nedge:x:4242:4343::/:/bin/false\n");
    writeFileSync(path.join(root, "etc/group"), "root:x:0:\nedge:x:4343:\n");
    const repo = makeRepo({
      "fleet.yaml": fleet("  - match: {}\n    profiles: [p]\n"),
      "p.yaml": profile(
        "p",
        `files:\n  - { path: /srv/edge.conf, content: "x", owner: edge, group: edge, mode: "0600" }\n`,
      ),
    });
    const stateDir = tempDir();
    expect((await apply(root, repo, stateDir)).exitCode).toBe(2);
    const st = statSync(path.join(root, "srv/edge.conf"));
    expect([st.uid, st.gid, st.mode & 0o7777]).toEqual([4242, 4343, 0o600]);
    expect((await apply(root, repo, stateDir)).exitCode).toBe(0);
  });
});
