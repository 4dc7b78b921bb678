/**
 * Reading files against recorded fingerprints: a trusted record saves the read of an unchanged
 * file, but never the read a planned content change needs for its diff. Records are made trusted
 * on purpose (recorded long after the file's last change), never by waiting.
 */
import { writeFileSync } from "node:fs";
import * as path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import type { Clock } from "../../agent/src/host/clock.js";
import { systemClock } from "../../agent/src/host/clock.js";
import { fingerprintOf, HostFs } from "../../agent/src/host/fs.js";
import { loadTextPatch, planFile } from "../../agent/src/resources/file/plan.js";
import { type FileRecord, readFiles } from "../../agent/src/resources/file/read.js";
import { StateStore } from "../../agent/src/state/db.js";
import { accounts, file, sha256 } from "../support/desired.js";
import { run } from "../support/ports.js";
import { cleanupTemp, fleet, makeRepo, profile, tempDir, writeTree } from "../support/repo.js";

afterAll(cleanupTemp);

/** The real filesystem, counting the reads of file content. */
class CountingFs extends HostFs {
  reads = 0;
  override readFile(hostPath: string): Buffer {
    this.reads++;
    return super.readFile(hostPath);
  }
  override readChunks(hostPath: string, onChunk: (chunk: Buffer) => void): void {
    this.reads++;
    super.readChunks(hostPath, onChunk);
  }
}

/** A record of `/a` as it is now, trusted: taken ten seconds after the file's last change. */
function trustedRecord(fs: HostFs, hostPath: string, contentHash: string): FileRecord {
  const st = fs.lstat(hostPath);
  if (!st) throw new Error(`no ${hostPath}`);
  return { fingerprint: fingerprintOf(st), contentHash, recordedAtNs: st.ctimeNs + 10_000_000_000n };
}

describe("reading files with trusted records", () => {
  it("reads a file whose content the profile changed, so the plan shows the diff", async () => {
    const root = tempDir();
    writeFileSync(path.join(root, "a"), "greeting=hello\n");
    const fs = new CountingFs(root);
    const record = trustedRecord(fs, "/a", sha256("greeting=hello\n"));
    const desired = file("/a", { content: Buffer.from("greeting=bonjour\n") });

    const read = readFiles(fs, [desired], new Map([[desired.id, record]]), record.recordedAtNs);
    expect(fs.reads).toBe(1);
    const actual = read.actual.get(desired.id);
    expect(actual).toMatchObject({ contentHash: sha256("greeting=hello\n"), text: "greeting=hello\n" });
    const change = planFile(desired, actual ?? { type: "absent" }, accounts, await loadTextPatch());
    expect(change?.diff).toMatch(/^-greeting=hello\n\+greeting=bonjour$/m);
  });

  it("does not read an unchanged file whose record is trusted", () => {
    const root = tempDir();
    writeFileSync(path.join(root, "a"), "same\n");
    const fs = new CountingFs(root);
    const desired = file("/a", { content: Buffer.from("same\n") });
    const record = trustedRecord(fs, "/a", sha256("same\n"));

    const read = readFiles(fs, [desired], new Map([[desired.id, record]]), record.recordedAtNs);
    expect(fs.reads).toBe(0);
    expect(read.actual.get(desired.id)).toMatchObject({ fromFingerprint: true, contentHash: sha256("same\n") });
    expect(planFile(desired, read.actual.get(desired.id) ?? { type: "absent" }, accounts)).toBeNull();
  });

  it("shows the diff of a profile-side change after an apply whose records are trusted", async () => {
    const root = tempDir();
    const stateDir = tempDir();
    const doc = (greeting: string) =>
      profile("p", `vars: { greeting: ${greeting} }\nfiles:\n  - { path: /etc/web.conf, template: web.liquid }\n`);
    const repo = makeRepo({
      "fleet.yaml": fleet("  - match: {}\n    profiles: [p]\n"),
      "p.yaml": doc("hello"),
      "web.liquid": "greeting={{ vars.greeting }}\n",
    });
    // Records taken by a clock an hour ahead are past the racy window: trusted on the next run.
    const later: Clock = { ...systemClock, now: () => new Date(Date.now() + 3600_000) };
    const state = StateStore.open(stateDir);
    try {
      expect((await run(root, repo, { mode: "apply", state }, { clock: later })).exitCode).toBe(2);
    } finally {
      state.close();
    }

    writeTree(repo, { "p.yaml": doc("bonjour") });
    const readonly = StateStore.open(stateDir, { readonly: true });
    try {
      const planned = await run(root, repo, { state: readonly });
      expect(planned.plan?.changes.map((c) => c.diff)).toEqual([
        expect.stringMatching(/^-greeting=hello\n\+greeting=bonjour$/m),
      ]);
    } finally {
      readonly.close();
    }
  });
});
