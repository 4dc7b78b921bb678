import { createTwoFilesPatch } from "diff";
import { describe, expect, it } from "vitest";
import { loadTextPatch, needsTextPatch, planFile, unifiedDiff } from "../../agent/src/resources/file/plan.js";
import { accounts, file, sha256 } from "../support/desired.js";

const hello = Buffer.from("hello\n");

describe("planFile", () => {
  it("creates a missing file with the default mode and a diff of the new content", () => {
    const change = planFile(file("/etc/a", { content: hello }), { type: "absent" }, accounts);
    expect(change?.action).toBe("create");
    expect(change?.steps).toEqual([{ op: "file.write", path: "/etc/a", content: hello, mode: 0o644 }]);
    expect(change?.diff).toContain("+hello");
  });

  it("is in sync when content, mode and owner match", () => {
    const desired = file("/etc/a", { content: hello, mode: 0o640, owner: "root" });
    const change = planFile(
      desired,
      { type: "file", mode: 0o640, uid: 0, gid: 0, contentHash: sha256(hello) },
      accounts,
    );
    expect(change).toBeNull();
  });

  it("fixes a mode-only drift with chmod, without rewriting the content", () => {
    const desired = file("/etc/a", { content: hello, mode: 0o640 });
    const change = planFile(
      desired,
      { type: "file", mode: 0o644, uid: 0, gid: 0, contentHash: sha256(hello) },
      accounts,
    );
    expect(change?.steps).toEqual([{ op: "file.chmod", path: "/etc/a", mode: 0o640 }]);
    expect(change?.drift).toEqual([{ field: "mode", desired: "0640", actual: "0644" }]);
  });

  it("rewrites changed content keeping the current mode and owner, with a unified diff", () => {
    const desired = file("/etc/a", { content: Buffer.from("b\n") });
    const change = planFile(
      desired,
      { type: "file", mode: 0o600, uid: 33, gid: 33, contentHash: sha256("a\n"), text: "a\n" },
      accounts,
      createTwoFilesPatch,
    );
    expect(change?.steps).toEqual([
      { op: "file.write", path: "/etc/a", content: Buffer.from("b\n"), mode: 0o600, owner: "33", group: "33" },
    ]);
    expect(change?.diff).toMatch(/-a\n\+b/);
    expect(change?.drift[0]?.field).toBe("content");
  });

  it("changes the owner by name, and always plans it for a name this host does not know yet", () => {
    const desired = file("/etc/a", { owner: "www-data", group: "mosquitto" });
    const change = planFile(desired, { type: "file", mode: 0o644, uid: 0, gid: 0 }, accounts);
    expect(change?.steps).toEqual([{ op: "file.chown", path: "/etc/a", owner: "www-data", group: "mosquitto" }]);
    expect(change?.drift).toEqual([
      { field: "owner", desired: "www-data", actual: "root" },
      { field: "group", desired: "mosquitto", actual: "root" },
    ]);
  });

  it("changes the owner before the mode, and sets setuid/setgid again after a change of owner", () => {
    const both = planFile(
      file("/usr/bin/tool", { mode: 0o4755, owner: "www-data" }),
      { type: "file", mode: 0o755, uid: 0, gid: 0 },
      accounts,
    );
    expect(both?.steps).toEqual([
      { op: "file.chown", path: "/usr/bin/tool", owner: "www-data" },
      { op: "file.chmod", path: "/usr/bin/tool", mode: 0o4755 },
    ]);
    // The mode already matches, but the change of owner clears setuid: it is set again.
    const ownerOnly = planFile(
      file("/usr/bin/tool", { owner: "www-data" }),
      { type: "file", mode: 0o2755, uid: 0, gid: 0 },
      accounts,
    );
    expect(ownerOnly?.steps).toEqual([
      { op: "file.chown", path: "/usr/bin/tool", owner: "www-data" },
      { op: "file.chmod", path: "/usr/bin/tool", mode: 0o2755 },
    ]);
    expect(ownerOnly?.drift.map((d) => d.field)).toEqual(["owner"]);
  });

  it("removes a file that should be absent and ignores one already gone", () => {
    expect(planFile(file("/etc/a", { state: "absent" }), { type: "file" }, accounts)?.steps).toEqual([
      { op: "file.remove", path: "/etc/a" },
    ]);
    expect(planFile(file("/etc/a", { state: "absent" }), { type: "absent" }, accounts)).toBeNull();
  });

  it("creates directories with 0755 by default and replaces a file standing where a directory belongs", () => {
    expect(planFile(file("/d", { state: "directory" }), { type: "absent" }, accounts)?.steps).toEqual([
      { op: "file.mkdir", path: "/d", mode: 0o755 },
    ]);
    const change = planFile(file("/d", { state: "directory" }), { type: "file", mode: 0o644 }, accounts);
    expect(change?.action).toBe("replace");
    expect(change?.steps.map((s) => s.op)).toEqual(["file.remove", "file.mkdir"]);
  });

  it("repoints a link whose target differs", () => {
    const desired = file("/l", { state: "link", target: "/etc/v2" });
    const change = planFile(desired, { type: "link", target: "/etc/v1" }, accounts);
    expect(change?.steps).toEqual([{ op: "file.link", path: "/l", target: "/etc/v2" }]);
    expect(planFile(desired, { type: "link", target: "/etc/v2" }, accounts)).toBeNull();
  });

  it("says binary content differs instead of printing it", () => {
    const desired = file("/bin/x", { content: Buffer.from([0, 1, 2]) });
    const change = planFile(desired, { type: "file", mode: 0o755, uid: 0, gid: 0, contentHash: "00" }, accounts);
    expect(change?.diff).toBe("binary or large content differs");
  });

  it("never puts a sensitive file's content in its diff or drift: hashes only", () => {
    const secret = Buffer.from("new-secret\n");
    const desired = file("/etc/key.pem", { content: secret, sensitive: true });
    const created = planFile(desired, { type: "absent" }, accounts);
    expect(created?.diff).toBe("content not shown (sensitive)");
    const actual = { type: "file" as const, mode: 0o600, uid: 0, gid: 0, contentHash: sha256("old\n"), text: "old\n" };
    const updated = planFile(desired, actual, accounts);
    expect(updated?.diff).toBe("content differs (sensitive)");
    expect(updated?.drift).toEqual([
      { field: "content", desired: `sha256:${sha256(secret)}`, actual: `sha256:${sha256("old\n")}` },
    ]);
    for (const change of [created, updated]) {
      const { steps: _steps, ...shown } = change ?? {};
      expect(JSON.stringify(shown)).not.toMatch(/secret|old\\n/);
    }
  });

  it("copies content it does not hold from its repository file, checked against its hash", () => {
    const desired = file("/srv/big.bin", { contentFrom: "/repo/files/big.bin", contentHash: "ab".repeat(32) });
    const created = planFile(desired, { type: "absent" }, accounts);
    expect(created?.steps).toEqual([
      { op: "file.copy", path: "/srv/big.bin", from: "/repo/files/big.bin", sha256: "ab".repeat(32), mode: 0o644 },
    ]);
    expect(created?.diff).toBeUndefined();
    const updated = planFile(desired, { type: "file", mode: 0o600, uid: 0, gid: 0, contentHash: "cd" }, accounts);
    expect(updated?.steps).toEqual([
      {
        op: "file.copy",
        path: "/srv/big.bin",
        from: "/repo/files/big.bin",
        sha256: "ab".repeat(32),
        mode: 0o600,
        owner: "0",
        group: "0",
      },
    ]);
    expect(updated?.diff).toBe("binary or large content differs");
  });
});

describe("the diff of a new file", () => {
  /** What the planner wrote before it built new files' diffs itself: the diff library's patch, trimmed. */
  function libraryDiff(path: string, text: string): string {
    return createTwoFilesPatch(path, path, "", text, undefined, undefined, { context: 3 })
      .split("\n")
      .filter((line) => !line.startsWith("Index: ") && !/^=+$/.test(line))
      .join("\n")
      .trimEnd();
  }

  it("is what the diff library writes, for contents with and without a final line break, blank lines, CR and spaces", () => {
    const pieces = ["a", "b c", " ", "\t", "\n", "\n", "\r", "\r\n", "é", "\\", "+", "-", "@@", "\u2028", "="];
    let seed = 7;
    const random = (n: number) => {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      return seed % n;
    };
    const samples = ["", "\n", "\n\n", "x", "x\n", "x \n", "x\r\n", " \n \n", "a\n\nb"];
    for (let i = 0; i < 500; i++) {
      samples.push(Array.from({ length: random(12) }, () => pieces[random(pieces.length)]).join(""));
    }
    for (const text of samples) {
      expect(unifiedDiff("/etc/x.conf", "", Buffer.from(text)), JSON.stringify(text)).toBe(
        libraryDiff("/etc/x.conf", text),
      );
    }
  });

  it("needs the diff library only for a changed text file, and says so instead of guessing", async () => {
    const desired = file("/etc/a", { content: Buffer.from("b\n") });
    const changedText = { type: "file" as const, mode: 0o644, uid: 0, gid: 0, contentHash: sha256("a\n"), text: "a\n" };
    expect(needsTextPatch([{ type: "absent" }, { type: "file", contentHash: sha256("b\n") }])).toBe(false);
    expect(needsTextPatch([{ type: "absent" }, changedText])).toBe(true);
    expect(() => planFile(desired, changedText, accounts)).toThrow(/needs the text patch function/);
    expect(planFile(desired, changedText, accounts, await loadTextPatch())?.diff).toMatch(/-a\n\+b/);
  });
});
