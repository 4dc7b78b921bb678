import { describe, expect, it } from "vitest";
import { factAt, matches, mergeVars } from "../../agent/src/profile/select.js";

const host = {
  name: "edge-12",
  labels: { role: "gateway", site: "lyon" },
  facts: { os: { arch: "arm64", release: "12" } },
};

describe("fleet matching", () => {
  it("matches hostname globs, labels and dotted facts together", () => {
    expect(matches({ hostname: "edge-*" }, host)).toBe(true);
    expect(matches({ hostname: "kiosk-*" }, host)).toBe(false);
    expect(matches({ labels: { role: "gateway" }, facts: { "os.arch": "arm64" } }, host)).toBe(true);
    expect(matches({ labels: { role: "kiosk" } }, host)).toBe(false);
    expect(matches({ facts: { "os.arch": "amd64" } }, host)).toBe(false);
    expect(matches({ facts: { "os.release": 12 } }, host)).toBe(true);
    expect(matches({ facts: { "os.missing": "x" } }, host)).toBe(false);
    expect(matches({}, host)).toBe(true);
  });

  it("reads dotted fact paths", () => {
    expect(factAt(host.facts, "os.arch")).toBe("arm64");
    expect(factAt(host.facts, "os.arch.deeper")).toBeUndefined();
  });

  it("merges vars in order, later wins, nested maps key by key", () => {
    expect(mergeVars([{ a: 1, nested: { x: 1, y: 1 } }, undefined, { a: 2, nested: { y: 2 } }])).toEqual({
      a: 2,
      nested: { x: 1, y: 2 },
    });
  });
});
