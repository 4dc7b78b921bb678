import {
  chmodSync,
  existsSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statSync,
  symlinkSync,
  utimesSync,
  writeFileSync,
} from "node:fs";
import * as path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import type { FileStep } from "../../agent/src/engine/types.js";
import { readOsRelease } from "../../agent/src/facts/collect.js";
import type { Clock } from "../../agent/src/host/clock.js";
import { systemClock } from "../../agent/src/host/clock.js";
import { fingerprintOf, HostFs } from "../../agent/src/host/fs.js";
import { readAccounts } from "../../agent/src/resources/file/accounts.js";
import { applyFileSteps } from "../../agent/src/resources/file/apply.js";
import { planFile } from "../../agent/src/resources/file/plan.js";
import { type FileRecord, readFiles } from "../../agent/src/resources/file/read.js";
import { StateStore } from "../../agent/src/state/db.js";
import { driftless, handOver } from "../support/cli.js";
import { accounts, file, sha256 } from "../support/desired.js";
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

  it("keeps the default state directory inside the root when /var is an absolute symlink", async () => {
    const root = tempDir();
    const outside = tempDir();
    const { symlinkSync } = await import("node:fs");
    // Inside the root, /var leads to ROOT/<outside>; followed on the machine it would be `outside`.
    symlinkSync(outside, path.join(root, "var"));
    handOver(root, outside);
    const repo = makeRepo({
      "fleet.yaml": fleet("  - match: {}\n    profiles: [p]\n"),
      "p.yaml": profile("p", `files:\n  - { path: /etc/x.conf, content: "x" }\n`),
    });
    const result = driftless(["apply", "--source", repo, "--root", root, "--host", "h"]);
    expect(result.exitCode, result.stderr).toBe(2);
    expect(readdirSync(outside)).toEqual([]);
    expect(lstatSync(path.join(root, outside, "lib/driftless/state.db")).isFile()).toBe(true);
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

describe("files stay inside the root and never go through a swapped link", () => {
  const asRoot = process.getuid?.() === 0;

  function everyone(files: string) {
    return makeRepo({ "fleet.yaml": fleet("  - match: {}\n    profiles: [p]\n"), "p.yaml": profile("p", files) });
  }

  it.each([
    ["an absolute", (outside: string) => outside],
    ["a relative", (outside: string) => `${"../".repeat(30)}${outside.slice(1)}`],
  ])("follows %s link made earlier in the same run inside the root, for files and directories", async (_, targetOf) => {
    const root = tempDir();
    const outside = tempDir();
    mkdirSync(path.join(root, "etc")); // no directory to create: nothing but the link changes before the writes
    const repo = everyone(`files:
  - { path: /etc/app, state: link, target: "${targetOf(outside)}" }
  - { path: /etc/app/x.conf, content: "x" }
  - { path: /etc/app/conf.d, state: directory }
  - { path: /etc/app/conf.d/y.conf, content: "y" }
`);
    const outcome = await apply(root, repo, tempDir());
    expect(outcome.results.map((r) => `${r.resource} ${r.outcome}`)).toEqual([
      "file:/etc/app changed",
      "file:/etc/app/x.conf changed",
      "file:/etc/app/conf.d changed",
      "file:/etc/app/conf.d/y.conf changed",
    ]);
    expect(readdirSync(outside)).toEqual([]);
    const inside = path.join(root, outside);
    expect(readFileSync(path.join(inside, "x.conf"), "utf8")).toBe("x");
    expect(lstatSync(path.join(inside, "conf.d")).isDirectory()).toBe(true);
    expect(readFileSync(path.join(inside, "conf.d/y.conf"), "utf8")).toBe("y");
    expect((await apply(root, repo, tempDir())).exitCode).toBe(0);
  });

  it("resolves a path again at each use: a link made by someone else after a read is followed inside the root", () => {
    const root = tempDir();
    const outside = tempDir();
    mkdirSync(path.join(root, "opt"));
    const fs = new HostFs(root);
    expect(fs.lstat("/opt/tool/tool.conf")).toBeNull(); // read, as planning does
    symlinkSync(outside, path.join(root, "opt/tool")); // as a package's maintainer script could
    fs.ensureParent("/opt/tool/tool.conf");
    fs.writeFileAtomic("/opt/tool/tool.conf", Buffer.from("t"), { mode: 0o644 });
    fs.mkdir("/opt/tool/sub", 0o755);
    expect(readdirSync(outside)).toEqual([]);
    expect(readFileSync(path.join(root, outside, "tool.conf"), "utf8")).toBe("t");
    expect(lstatSync(path.join(root, outside, "sub")).isDirectory()).toBe(true);
  });

  it.each([
    ["under a root", true],
    ["on /", false],
  ])("refuses to change a mode through a link swapped in after planning (%s)", (_, rooted) => {
    const root = tempDir();
    const secret = path.join(tempDir(), "secret");
    writeFileSync(secret, "only root reads this");
    chmodSync(secret, 0o600);
    const fs = new HostFs(rooted ? root : "/");
    const managed = rooted ? "/srv/app.conf" : path.join(root, "app.conf");
    mkdirSync(path.dirname(fs.resolve(managed)), { recursive: true });
    writeFileSync(fs.resolve(managed), "x");
    chmodSync(fs.resolve(managed), 0o600);
    const planned = planFile(file(managed, { mode: 0o644 }), { type: "file", mode: 0o600, uid: 0, gid: 0 }, accounts);
    expect(planned?.steps).toEqual([{ op: "file.chmod", path: managed, mode: 0o644 }]);

    // Someone who can write the directory swaps the file for a link to the secret.
    rmSync(fs.resolve(managed));
    symlinkSync(secret, fs.resolve(managed));
    expect(() => applyFileSteps(planned?.steps as FileStep[], { fs, accounts }, planned?.resource ?? "")).toThrow(
      /is now a symbolic link; its mode and owner were left alone/,
    );
    expect(statSync(secret).mode & 0o7777).toBe(0o600);
  });

  it("reads /etc/hostname, /etc/passwd and /etc/group of a root inside it, even through absolute links", () => {
    const root = tempDir();
    const outside = tempDir();
    mkdirSync(path.join(root, "etc"));
    mkdirSync(path.join(root, outside), { recursive: true });
    for (const [name, machine, image] of [
      ["hostname", "machine\n", "image\n"],
      ["passwd", "edge:x:1:1::/:/bin/false\n", "edge:x:4242:4242::/:/bin/false\n"],
      ["group", "edge:x:1:\n", "edge:x:4343:\n"],
    ] as const) {
      writeFileSync(path.join(outside, `${name}.real`), machine);
      writeFileSync(path.join(root, outside, `${name}.real`), image);
      symlinkSync(path.join(outside, `${name}.real`), path.join(root, "etc", name));
    }
    const fs = new HostFs(root);
    expect(fs.readTextIfExists("/etc/hostname")).toBe("image\n");
    mkdirSync(path.join(root, "usr/lib"), { recursive: true });
    writeFileSync(path.join(root, "usr/lib/os-release"), 'PRETTY_NAME="Image OS"\n');
    symlinkSync("/usr/lib/os-release", path.join(root, "etc/os-release")); // as Debian ships it, made absolute
    expect(readOsRelease(fs)).toBe('PRETTY_NAME="Image OS"\n');
    const found = readAccounts(fs);
    expect([found.users.get("edge"), found.groups.get("edge")]).toEqual([4242, 4343]);
    symlinkSync("/nowhere", path.join(root, "etc/missing"));
    expect(fs.readTextIfExists("/etc/missing")).toBeNull();
  });

  it.skipIf(!asRoot)("keeps setuid and setgid when the owner and the mode change in the same run", async () => {
    const root = tempDir();
    mkdirSync(path.join(root, "usr/bin"), { recursive: true });
    const tool = path.join(root, "usr/bin/tool");
    writeFileSync(tool, "#!/bin/sh\n");
    chmodSync(tool, 0o755);
    const repo = everyone(`files:
  - { path: /usr/bin/tool, mode: "6755", owner: "4242", group: "4343" }
  - { path: /usr/bin/new-tool, content: "#!/bin/sh\\n", mode: "4755", owner: "4242" }
  - { path: /srv/shared, state: directory, mode: "2775", owner: "4242", group: "4343" }
`);
    const stateDir = tempDir();
    expect((await apply(root, repo, stateDir)).exitCode).toBe(2);
    const modes = ["usr/bin/tool", "usr/bin/new-tool", "srv/shared"].map((p) => {
      const st = statSync(path.join(root, p));
      return [p, (st.mode & 0o7777).toString(8), st.uid];
    });
    expect(modes).toEqual([
      ["usr/bin/tool", "6755", 4242],
      ["usr/bin/new-tool", "4755", 4242],
      ["srv/shared", "2775", 4242],
    ]);
    expect((await apply(root, repo, stateDir)).exitCode).toBe(0);
  });

  it("removes the temp files a killed run left, and never fails on one", async () => {
    const root = tempDir();
    const stateDir = tempDir();
    const repo = makeRepo(repoFiles);
    await apply(root, repo, stateDir);
    const dir = path.join(root, "etc/edge");
    writeFileSync(path.join(dir, "static.txt"), "edited by hand\n");
    rmSync(path.join(dir, "current"));
    // The name this process would have used before (`.<name>.driftless-<pid>`, which an agent
    // that is PID 1 in a container reuses at every run), and one of today's names.
    const stale = [
      `.static.txt.driftless-${process.pid}`,
      `.current.driftless-${process.pid}`,
      ".driftless-0123456789abcdef.tmp",
    ];
    for (const name of stale) writeFileSync(path.join(dir, name), "left by a killed run");
    const outcome = await apply(root, repo, stateDir);
    expect(outcome.results.map((r) => `${r.resource} ${r.outcome}`)).toEqual([
      "file:/etc/edge/static.txt changed",
      "file:/etc/edge/current changed",
    ]);
    expect(readFileSync(path.join(dir, "static.txt"), "utf8")).toBe("static\n");
    expect(readdirSync(dir).sort()).toEqual(["current", "edge.conf", "static.txt"]);
  });

  it("removes a directory that holds nothing but a temp file a killed run left", async () => {
    const root = tempDir();
    mkdirSync(path.join(root, "etc/old"), { recursive: true });
    writeFileSync(path.join(root, "etc/old", `.app.conf.driftless-${process.pid}`), "left by a killed run");
    const outcome = await apply(root, everyone("files:\n  - { path: /etc/old, state: absent }\n"), tempDir());
    expect(outcome.results.map((r) => `${r.resource} ${r.outcome}`)).toEqual(["file:/etc/old changed"]);
    expect(existsSync(path.join(root, "etc/old"))).toBe(false);
  });

  it("manages a name of the longest legal length", async () => {
    const root = tempDir();
    const name = "n".repeat(255);
    const repo = everyone(`files:
  - { path: /etc/${name}, content: "x" }
  - { path: /etc/l${name.slice(1)}, state: link, target: /etc/${name} }
`);
    const outcome = await apply(root, repo, tempDir());
    expect(outcome.results.map((r) => r.outcome)).toEqual(["changed", "changed"]);
    expect(readFileSync(path.join(root, "etc", name), "utf8")).toBe("x");
    expect(readlinkSync(path.join(root, "etc", `l${name.slice(1)}`))).toBe(`/etc/${name}`);
  });

  it("refuses /, NUL, line breaks, .. segments and over-long names in a path, located", async () => {
    const outcome = await run(
      tempDir(),
      everyone(`files:
  - { path: /, state: directory }
  - { path: "/etc/a\\0b", content: "x" }
  - { path: "/etc/a\\nb", content: "x" }
  - { path: /etc/../root/.ssh/authorized_keys, content: "x" }
  - { path: /etc/${"n".repeat(256)}, content: "x" }
  - { path: etc/relative, content: "x" }
`),
    );
    expect(outcome.exitCode).toBe(1);
    expect(
      outcome.errors.map((e) => `${e.location?.file}:${e.location?.line} ${e.location?.field} ${e.message}`),
    ).toEqual([
      "p.yaml:5 files[0].path must name an entry below /, not / itself",
      "p.yaml:6 files[1].path must not contain a NUL character",
      "p.yaml:7 files[2].path must not contain a line break",
      'p.yaml:8 files[3].path must not contain ".." segments',
      "p.yaml:9 files[4].path a name in it is longer than 255 bytes",
      "p.yaml:10 files[5].path must be an absolute path",
    ]);
  });
});
