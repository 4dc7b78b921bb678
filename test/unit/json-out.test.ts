import { Writable } from "node:stream";
import { describe, expect, it } from "vitest";
import { prettyJsonPieces, writePaced } from "../../agent/src/cli/json-out.js";

function written(value: Record<string, unknown>, pieceChars?: number): { text: string; pieces: string[] } {
  const pieces = [...prettyJsonPieces(value, pieceChars)];
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

  it("hands out a large array in several pieces of whole lines", () => {
    const many = { changes: Array.from({ length: 2000 }, (_, i) => ({ resource: `file:/f${i}`, action: "create" })) };
    const { text, pieces } = written(many, 4096);
    expect(text).toBe(`${JSON.stringify(many, null, 2)}\n`);
    expect(pieces.length).toBeGreaterThan(10);
    expect(pieces.every((p) => !p.endsWith("\n") && p.length < 4096 + 200)).toBe(true);
  });

  it("writes an empty object as JSON.stringify does", () => {
    expect(written({ gone: undefined }).text).toBe("{}\n");
  });
});

describe("writing pieces to a stream that is slow to take them", () => {
  it("waits for the stream instead of queueing everything, and writes it all in order", async () => {
    let held = 0;
    let mostHeld = 0;
    const received: string[] = [];
    const slow = new Writable({
      highWaterMark: 1024,
      write(chunk: Buffer, _encoding, done) {
        received.push(chunk.toString());
        setImmediate(done); // a reader that takes one piece per turn of the event loop
      },
    });
    const pieces = Array.from({ length: 200 }, (_, i) => `piece ${i} ${"x".repeat(500)}`);
    const counted = (function* () {
      for (const piece of pieces) {
        held = slow.writableLength;
        mostHeld = Math.max(mostHeld, held);
        yield piece;
      }
    })();
    await writePaced(slow, counted);
    await new Promise((resolve) => slow.end(resolve)); // the last piece may still be on its way
    expect(received.join("")).toBe(pieces.map((p) => `${p}\n`).join(""));
    expect(mostHeld).toBeLessThan(4 * 1024); // without the waits, all 100 kB would be held
  });
});
