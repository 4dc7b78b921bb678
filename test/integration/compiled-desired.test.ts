/**
 * The compiled desired state (state/compiled.ts): a run whose inputs did not change takes its
 * desired state from the state database instead of loading the repository; any changed input
 * (repository file, host, labels, --profile, a fact the load read, the build) loads it again.
 * In-process runs use `converge` with real ports rooted in temp dirs and real SQLite files.
 */
import { chmodSync, existsSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import * as path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import type { RunOptions, RunOutcome, RunPorts } from "../../agent/src/engine/run.js";
import { HostFs } from "../../agent/src/host/fs.js";
import { COMPILED_FORMAT, THIS_BUILD } from "../../agent/src/state/compiled.js";
import { StateStore } from "../../agent/src/state/db.js";
import { openSqlite } from "../../agent/src/state/sqlite.js";
import { run } from "../support/ports.js";
import { cleanupTemp, fleet, makeRepo, profile, tempDir, writeTree } from "../support/repo.js";

afterAll(cleanupTemp);

const FACTS = {
  hostname: "vm-1",
  os: { arch: "amd64", name: "Debian 12", codename: "bookworm" },
  memory: { totalBytes: 1024 },
  uptimeS: 100,
};

const FILES: Record<string, string> = {
  "fleet.yaml": fleet(
    [
      '  - match: { hostname: "edge-*" }',
      "    profiles: [base]",
      "  - match: { labels: { role: gateway } }",
      "    profiles: [gateway]",
      '  - match: { facts: { "os.arch": arm64 } }',
      "    profiles: [arm]",
      "",
    ].join("\n"),
  ),
  "base.yaml": profile(
    "base",
    `vars: { greeting: hello }
files:
  - { path: /etc/inline.conf, content: "inline one\\n" }
  - { path: /etc/motd, template: motd.liquid }
  - { path: /etc/src.conf, source: .files/src.conf }
`,
  ),
  "gateway.yaml": profile("gateway", 'files:\n  - { path: /etc/gateway.conf, content: "gateway\\n" }\n'),
  "arm.yaml": profile("arm", 'files:\n  - { path: /etc/arm.conf, content: "arm\\n" }\n'),
  "extra.yaml": profile("extra", 'files:\n  - { path: /etc/extra.conf, content: "extra\\n" }\n'),
  "motd.liquid": "{{ vars.greeting }} from {{ host.name }} on {{ facts.os.name }}\n",
  ".files/src.conf": "source one\n",
};

interface Host {
  root: string;
  stateDir: string;
  repo: string;
  /** The options every run of this host takes, changed by the tests. */
  options: Partial<RunOptions>;
}

function newHost(files: Record<string, string> = FILES): Host {
  return {
    root: tempDir(),
    stateDir: tempDir(),
    repo: makeRepo(files),
    options: { host: "edge-1", labels: {}, facts: FACTS },
  };
}

/** An apply as `driftless apply` makes it: the state written, the compiled state kept. */
async function apply(host: Host, extra: Partial<RunOptions> = {}, ports: Partial<RunPorts> = {}): Promise<RunOutcome> {
  const state = StateStore.open(host.stateDir);
  try {
    const outcome = await run(
      host.root,
      host.repo,
      {
        mode: "apply",
        state,
        keepCompiled: true,
        ...host.options,
        ...extra,
      },
      ports,
    );
    expect(outcome.errors).toEqual([]);
    return outcome;
  } finally {
    state.close();
  }
}

/** A plan as `driftless plan` makes it: the state database opened read-only. */
async function plan(host: Host): Promise<RunOutcome> {
  const state = existsSync(path.join(host.stateDir, "state.db"))
    ? StateStore.open(host.stateDir, { readonly: true })
    : null;
  try {
    return await run(host.root, host.repo, { mode: "plan", state, ...host.options });
  } finally {
    state?.close();
  }
}

const read = (host: Host, file: string) => readFileSync(path.join(host.root, file), "utf8");

/** The stored entry, as SQLite holds it: its key, facts, and its header and resources as one text. */
function storedEntry(stateDir: string): { key: string; body: string; facts: string } | null {
  const db = openSqlite(path.join(stateDir, "state.db"), { readonly: true, fileMustExist: true });
  try {
    const row = db.prepare("SELECT cache_key AS key, header, facts_used AS facts FROM compiled_desired").get() as
      | { key: string; header: string; facts: string }
      | undefined;
    if (!row) return null;
    const resources = db.prepare("SELECT resource FROM compiled_resources ORDER BY seq").pluck().all() as string[];
    return { key: row.key, facts: row.facts, body: [row.header, ...resources].join("\n") };
  } finally {
    db.close();
  }
}

/** Two applies: the first loads the repository and keeps what it compiled, the second uses it. */
async function converged(host: Host): Promise<void> {
  const first = await apply(host);
  expect(first.desiredFrom).toBe("repository");
  const second = await apply(host);
  expect(second.desiredFrom).toBe("cache");
  expect(second.status).toBe("in-sync");
}

describe("the compiled desired state", () => {
  it("serves a run whose inputs did not change, with the same source and profiles", async () => {
    const host = newHost();
    const first = await apply(host);
    expect(first).toMatchObject({ desiredFrom: "repository", exitCode: 2 });
    expect(read(host, "etc/motd")).toBe("hello from edge-1 on Debian 12\n");

    const second = await apply(host);
    expect(second).toMatchObject({ desiredFrom: "cache", exitCode: 0, status: "in-sync" });
    expect(second.source).toBe(first.source);
    expect(second.profiles).toEqual(["base"]);
    expect(second.plan?.order).toEqual(first.plan?.order);
    // No file content is kept, and only the facts the load read.
    const entry = storedEntry(host.stateDir);
    expect(entry?.body).not.toContain("inline one");
    expect(entry?.body).not.toContain("source one");
    expect(entry?.body).not.toContain("hello from");
    const used = JSON.parse(entry?.facts ?? "[]") as Array<{ path: string[]; seen: string }>;
    expect(used).toEqual(
      expect.arrayContaining([
        { path: ["os"], seen: "object" },
        { path: ["os", "arch"], seen: "string:amd64" },
        { path: ["os", "name"], seen: "string:Debian 12" },
      ]),
    );
    // Besides, only what Liquid probes (toLiquid, next), all absent.
    expect(used.filter((u) => u.seen !== "absent")).toHaveLength(3);
  });

  const changes: Array<[string, (host: Host) => void, (host: Host) => void]> = [
    [
      "a profile's YAML",
      (h) => writeTree(h.repo, { "base.yaml": FILES["base.yaml"]?.replace("inline one", "inline two") as string }),
      (h) => expect(read(h, "etc/inline.conf")).toBe("inline two\n"),
    ],
    [
      "a template",
      (h) => writeTree(h.repo, { "motd.liquid": "{{ vars.greeting }}, {{ host.name }}\n" }),
      (h) => expect(read(h, "etc/motd")).toBe("hello, edge-1\n"),
    ],
    [
      "a source: file in a hidden folder",
      (h) => writeTree(h.repo, { ".files/src.conf": "source two\n" }),
      (h) => expect(read(h, "etc/src.conf")).toBe("source two\n"),
    ],
    [
      "the host name",
      (h) => {
        h.options.host = "edge-2";
      },
      (h) => expect(read(h, "etc/motd")).toBe("hello from edge-2 on Debian 12\n"),
    ],
    [
      "the labels",
      (h) => {
        h.options.labels = { role: "gateway" };
      },
      (h) => expect(read(h, "etc/gateway.conf")).toBe("gateway\n"),
    ],
    [
      "the --profile list",
      (h) => {
        h.options.profiles = ["base", "extra"];
      },
      (h) => expect(read(h, "etc/extra.conf")).toBe("extra\n"),
    ],
    [
      "a fact a template reads",
      (h) => {
        h.options.facts = { ...FACTS, os: { ...FACTS.os, name: "Debian 13" } };
      },
      (h) => expect(read(h, "etc/motd")).toBe("hello from edge-1 on Debian 13\n"),
    ],
    [
      "a fact a fleet match reads",
      (h) => {
        h.options.facts = { ...FACTS, os: { ...FACTS.os, arch: "arm64" } };
      },
      (h) => expect(read(h, "etc/arm.conf")).toBe("arm\n"),
    ],
  ];

  it.each(changes)("loads the repository again when %s changed, and converges to it", async (_, change, check) => {
    const host = newHost();
    await converged(host);
    change(host);
    const after = await apply(host);
    expect(after).toMatchObject({ desiredFrom: "repository", exitCode: 2 });
    check(host);
    // The new state is kept in turn.
    expect(await apply(host)).toMatchObject({ desiredFrom: "cache", exitCode: 0 });
  });

  it.each([
    ["version", { ...THIS_BUILD, version: "99.0.0" }],
    ["commit", { ...THIS_BUILD, commit: "0123456789abcdef0123456789abcdef01234567" }],
    ["entry format", { ...THIS_BUILD, format: COMPILED_FORMAT + 1 }],
  ])("does not use an entry another agent %s compiled", async (_, build) => {
    const host = newHost();
    await converged(host);
    expect(await apply(host, { build })).toMatchObject({ desiredFrom: "repository", exitCode: 0 });
    expect(await apply(host, { build })).toMatchObject({ desiredFrom: "cache" });
    expect(await apply(host)).toMatchObject({ desiredFrom: "repository" });
  });

  it("keys a checkout of the agent's Git cache by its commit", async () => {
    const host = newHost();
    const commit = "1111111111111111111111111111111111111111";
    expect(await apply(host, { sourceCommit: commit })).toMatchObject({ desiredFrom: "repository" });
    expect(await apply(host, { sourceCommit: commit })).toMatchObject({ desiredFrom: "cache" });
    const next = "2222222222222222222222222222222222222222";
    expect(await apply(host, { sourceCommit: next })).toMatchObject({ desiredFrom: "repository" });
  });

  it("is still used when facts nothing read changed", async () => {
    const host = newHost();
    await converged(host);
    host.options.facts = {
      ...FACTS,
      hostname: "vm-2",
      os: { ...FACTS.os, codename: "trixie" },
      memory: { totalBytes: 4096 },
      uptimeS: 100_000,
      disks: [{ name: "sda" }],
    };
    expect(await apply(host)).toMatchObject({ desiredFrom: "cache", exitCode: 0 });
  });

  it("records a whole facts object a template prints, and reloads when any of it changes", async () => {
    const host = newHost({
      "fleet.yaml": fleet("  - match: {}\n    profiles: [p]\n"),
      "p.yaml": profile("p", "files:\n  - { path: /etc/facts.json, template: facts.liquid }\n"),
      "facts.liquid": "{{ facts.os | json }}\n{% for pair in facts.memory %}{{ pair[0] }}{% endfor %}\n",
    });
    await converged(host);
    host.options.facts = { ...FACTS, uptimeS: 5 };
    expect(await apply(host)).toMatchObject({ desiredFrom: "cache" });
    host.options.facts = { ...FACTS, os: { ...FACTS.os, codename: "trixie" } };
    expect(await apply(host)).toMatchObject({ desiredFrom: "repository", exitCode: 2 });
    expect(read(host, "etc/facts.json")).toContain('"codename":"trixie"');
    host.options.facts = { ...FACTS, os: { ...FACTS.os, codename: "trixie" }, memory: { totalBytes: 1, freeBytes: 1 } };
    expect(await apply(host)).toMatchObject({ desiredFrom: "repository", exitCode: 2 });
    expect(read(host, "etc/facts.json")).toContain("totalBytesfreeBytes");
  });

  it("corrects a drifted file with the repository's content, and shows its diff", async () => {
    const host = newHost();
    await converged(host);
    writeFileSync(path.join(host.root, "etc/inline.conf"), "drifted\n");

    const planned = await plan(host);
    expect(planned.desiredFrom).toBe("repository");
    expect(planned.timings.reload).toBeDefined();
    expect(planned.plan?.changes.map((c) => [c.resource, c.diff])).toEqual([
      ["file:/etc/inline.conf", expect.stringMatching(/^-drifted\n\+inline one$/m)],
    ]);

    const applied = await apply(host);
    expect(applied).toMatchObject({ desiredFrom: "repository", exitCode: 2 });
    expect(applied.timings.reload).toBeDefined();
    expect(applied.plan?.changes[0]?.diff).toMatch(/^-drifted\n\+inline one$/m);
    expect(read(host, "etc/inline.conf")).toBe("inline one\n");
    expect(read(host, "etc/src.conf")).toBe("source one\n");
    expect(await apply(host)).toMatchObject({ desiredFrom: "cache", exitCode: 0 });
  });

  it("corrects drift that needs no content (a mode) from the compiled state alone", async () => {
    const host = newHost({
      "fleet.yaml": fleet("  - match: {}\n    profiles: [p]\n"),
      "p.yaml": profile("p", 'files:\n  - { path: /etc/app.conf, content: "app\\n", mode: "0640" }\n'),
    });
    await converged(host);
    chmodSync(path.join(host.root, "etc/app.conf"), 0o666);
    const applied = await apply(host);
    expect(applied).toMatchObject({ desiredFrom: "cache", exitCode: 2 });
    expect(applied.timings.reload).toBeUndefined();
    expect(statSync(path.join(host.root, "etc/app.conf")).mode & 0o777).toBe(0o640);
    expect(read(host, "etc/app.conf")).toBe("app\n");
  });

  it("copies a large source: file from the repository with the compiled state alone", async () => {
    const large = `${"0123456789abcdef".repeat(20_000)}\n`; // over 256 KiB: copied in chunks, never held
    const host = newHost({
      "fleet.yaml": fleet("  - match: {}\n    profiles: [p]\n"),
      "p.yaml": profile("p", "files:\n  - { path: /srv/blob, source: data/blob.bin }\n"),
      "data/blob.bin": large,
    });
    await converged(host);
    writeFileSync(path.join(host.root, "srv/blob"), "drifted\n");
    const applied = await apply(host);
    expect(applied).toMatchObject({ desiredFrom: "cache", exitCode: 2 });
    expect(applied.plan?.changes.map((c) => c.diff)).toEqual(["binary or large content differs"]);
    expect(read(host, "srv/blob")).toBe(large);
    expect(storedEntry(host.stateDir)?.body).toContain('"contentFrom":"data/blob.bin"');
  });

  it("never puts file content, sensitive or not, into the state database", async () => {
    const secret = "s3cret-9d1f7c";
    const host = newHost({
      "fleet.yaml": fleet("  - match: {}\n    profiles: [p]\n"),
      "p.yaml": profile(
        "p",
        `vars: { token: ${secret}-template }
files:
  - { path: /etc/a.key, content: "${secret}-inline\\n", sensitive: true }
  - { path: /etc/b.key, source: b.key, sensitive: true }
  - { path: /etc/c.key, template: c.liquid, sensitive: true }
  - { path: /etc/plain.conf, content: "plain-7a2b\\n" }
`,
      ),
      "b.key": `${secret}-source\n`,
      "c.liquid": "{{ vars.token }}\n",
    });
    await converged(host);
    // A drift makes the run load the repository again for the content it writes.
    writeFileSync(path.join(host.root, "etc/a.key"), "drifted\n");
    expect(await apply(host)).toMatchObject({ desiredFrom: "repository", exitCode: 2 });
    expect(read(host, "etc/a.key")).toBe(`${secret}-inline\n`);
    expect(storedEntry(host.stateDir)?.body).not.toContain("plain-7a2b");
    for (const name of readdirSync(host.stateDir)) {
      const bytes = readFileSync(path.join(host.stateDir, name));
      expect(bytes.includes(secret), name).toBe(false);
    }
  });

  it("is never written by a plan, which may read it", async () => {
    const host = newHost();
    expect((await plan(host)).desiredFrom).toBe("repository");
    await apply(host);
    const entry = storedEntry(host.stateDir);
    expect((await plan(host)).desiredFrom).toBe("cache");

    writeTree(host.repo, { "motd.liquid": "changed\n" });
    expect(await plan(host)).toMatchObject({ desiredFrom: "repository", exitCode: 2 });
    expect(storedEntry(host.stateDir)).toEqual(entry);
    // A run that writes but does not keep (the default) leaves it too.
    const state = StateStore.open(host.stateDir);
    try {
      await run(host.root, host.repo, { mode: "apply", state, ...host.options });
    } finally {
      state.close();
    }
    expect(storedEntry(host.stateDir)).toEqual(entry);
  });

  it("is kept by a run that writes but applies nothing (the agent in report mode)", async () => {
    const host = newHost();
    const state = StateStore.open(host.stateDir);
    try {
      const reported = await run(host.root, host.repo, { mode: "plan", state, keepCompiled: true, ...host.options });
      expect(reported).toMatchObject({ desiredFrom: "repository", exitCode: 2 });
      expect(reported.timings.record).toBeDefined();
    } finally {
      state.close();
    }
    // The files are still to create: the plan from the kept state needs their content.
    const next = await plan(host);
    expect(next).toMatchObject({ desiredFrom: "repository", exitCode: 2 });
    expect(next.timings.reload).toBeDefined();
    expect(next.timings.record).toBeUndefined();
  });

  it.each([
    ["whose header is not JSON", "UPDATE compiled_desired SET header = '{not json'"],
    ["whose header has a wrong type", `UPDATE compiled_desired SET header = json_set(header, '$.profiles', 'base')`],
    ["with a resource that is not JSON", "UPDATE compiled_resources SET resource = '{' WHERE seq = 1"],
    ["with a resource of another shape", "UPDATE compiled_resources SET resource = '{}' WHERE seq = 0"],
    ["with a resource missing", "DELETE FROM compiled_resources WHERE seq = 2"],
    [
      "with a source path out of the repository",
      `UPDATE compiled_resources SET resource = json_set(resource, '$.contentFrom', '../x') WHERE seq = 2`,
    ],
  ])("ignores an entry %s: the run loads the repository", async (_, damage) => {
    const host = newHost();
    await converged(host);
    const db = openSqlite(path.join(host.stateDir, "state.db"), {});
    try {
      expect(db.prepare(damage).run().changes).toBe(1);
    } finally {
      db.close();
    }
    expect(await apply(host)).toMatchObject({ desiredFrom: "repository", exitCode: 0 });
    expect(await apply(host)).toMatchObject({ desiredFrom: "cache", exitCode: 0 });
  });

  it("keeps nothing when the repository changed while it was being loaded", async () => {
    const host = newHost();
    /** The machine's filesystem, with someone editing the template just after the profiles were read. */
    class EditedFs extends HostFs {
      edited = false;
      override readFile(file: string): Buffer {
        const bytes = super.readFile(file);
        if (!this.edited && file.endsWith("base.yaml")) {
          this.edited = true;
          writeTree(host.repo, { "motd.liquid": "edited\n" });
        }
        return bytes;
      }
    }
    expect(await apply(host, {}, { repoFs: new EditedFs("/") })).toMatchObject({ desiredFrom: "repository" });
    expect(read(host, "etc/motd")).toBe("edited\n");
    // Back as it was when the run began: what that run loaded is not this state.
    writeTree(host.repo, { "motd.liquid": FILES["motd.liquid"] as string });
    expect(await apply(host)).toMatchObject({ desiredFrom: "repository", exitCode: 2 });
    expect(read(host, "etc/motd")).toBe("hello from edge-1 on Debian 12\n");
  });

  it("leaves .git out of the digest, and keeps nothing when the load read a file under it", async () => {
    const host = newHost();
    writeTree(host.repo, { ".git/HEAD": "ref: refs/heads/main\n" });
    await converged(host);
    writeTree(host.repo, { ".git/HEAD": "ref: refs/heads/other\n" });
    expect(await apply(host)).toMatchObject({ desiredFrom: "cache" });

    const odd = newHost({
      "fleet.yaml": fleet("  - match: {}\n    profiles: [p]\n"),
      "p.yaml": profile("p", "files:\n  - { path: /etc/head, source: .git/HEAD }\n"),
      ".git/HEAD": "ref: refs/heads/main\n",
    });
    expect(await apply(odd)).toMatchObject({ desiredFrom: "repository", exitCode: 2 });
    expect(await apply(odd)).toMatchObject({ desiredFrom: "repository", exitCode: 0 });
  });
});
