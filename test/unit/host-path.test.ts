import * as path from "node:path";
import { describe, expect, it } from "vitest";
import { normalizeHostPath, STALE_TEMP, tempName } from "../../agent/src/host/fs-ops.js";

/** What normalizeHostPath gives by definition: path.posix.normalize, less a final slash. */
const slow = (p: string) => path.posix.normalize(p).replace(/(.)\/+$/, "$1");

describe("normalizeHostPath", () => {
  it("gives what path.posix.normalize gives, less a final slash, for every shape of path", () => {
    const tricky = [
      "/",
      "//",
      "///etc",
      "/etc/",
      "/etc//nginx",
      "/etc/./nginx",
      "/etc/../etc/nginx",
      "/etc/nginx/.",
      "/etc/nginx/..",
      "/.hidden",
      "/..hidden/..x",
      "/etc/nginx.conf.",
      "/a/b./c",
      "/a/.b/c",
      "/a/...",
      "/a/b/",
      "/a/b//",
      "/..",
      "/.",
    ];
    for (const p of tricky) expect(normalizeHostPath(p), p).toBe(slow(p));
    // Every path of up to four segments drawn from the pieces that matter.
    const pieces = ["", ".", "..", "...", "a", ".a", "a."];
    const walk = (prefix: string, depth: number) => {
      if (prefix !== "") expect(normalizeHostPath(prefix), prefix).toBe(slow(prefix));
      if (depth === 0) return;
      for (const piece of pieces) walk(`${prefix}/${piece}`, depth - 1);
    };
    walk("", 4);
  });

  it("refuses a relative path", () => {
    expect(() => normalizeHostPath("etc/nginx")).toThrow(/path must be absolute: etc\/nginx/);
  });
});

describe("temp names", () => {
  it("are new every time, in the directory, and of the shape stale temp files are cleaned by", () => {
    const names = Array.from({ length: 1000 }, () => tempName("/etc/app"));
    expect(new Set(names).size).toBe(names.length);
    for (const name of names) {
      expect(path.dirname(name)).toBe("/etc/app");
      expect(STALE_TEMP.test(path.basename(name))).toBe(true);
    }
  });

  it("draw a new random prefix after a clash", () => {
    const before = path.basename(tempName("/d")).slice(0, 19);
    const fresh = [1, 2, 3].map(() => path.basename(tempName("/d", true)).slice(0, 19));
    // Three new 32-bit prefixes: the same as before for all three is not chance.
    expect(fresh.every((p) => p === before)).toBe(false);
  });
});
