import { describe, expect, it } from "vitest";
import { writePrettyJson } from "../../agent/src/cli/json-out.js";

function written(value: Record<string, unknown>, pieceChars?: number): { text: string; pieces: string[] } {
  const pieces: string[] = [];
  writePrettyJson(value, (piece) => pieces.push(piece), pieceChars);
  return { text: pieces.map((p) => `${p}\n`).join(""), pieces };
}

describe("--json output in pieces", () => {
  const value = {
    run: "r",
    nothing: null,
    left: undefined,
    fn: () => 1,
    exitCode: 2,
    profiles: ["a", "b"],
    empty: [],
    emptyObject: {},
    changes: [
      { resource: "file:/a", drift: [{ field: "mode", desired: "0644", actual: null }], diff: "--- a\n+++ a\n+x" },
      { resource: "file:/b", nested: { deep: [1, [2, { three: 3 }]] }, skipped: undefined },
      undefined,
      null,
      'text with "quotes" and \u2028',
      [],
      {},
    ],
    problems: { "file:/c": "cannot read" },
    timings: { load: 1.5 },
  };

  it.each([1, 40, 1 << 16])(
    "writes exactly what JSON.stringify(value, null, 2) writes (pieces of %i characters)",
    (n) => {
      expect(written(value, n).text).toBe(`${JSON.stringify(value, null, 2)}\n`);
    },
  );

  it("writes whole lines in each piece, and several pieces for a large array", () => {
    const many = { changes: Array.from({ length: 2000 }, (_, i) => ({ resource: `file:/f${i}`, action: "create" })) };
    const { text, pieces } = written(many, 4096);
    expect(text).toBe(`${JSON.stringify(many, null, 2)}\n`);
    expect(pieces.length).toBeGreaterThan(10);
    expect(pieces.every((p) => !p.endsWith("\n"))).toBe(true);
  });

  it("writes an empty object as JSON.stringify does", () => {
    expect(written({ gone: undefined }).text).toBe("{}\n");
  });
});
