/** Report payloads: the sync state of each result, canonical facts JSON, the fitting of a body. */
import { describe, expect, it } from "vitest";
import { envelope } from "../../agent/src/report/outbox.js";
import { canonicalJson, fitPayload, syncOf } from "../../agent/src/report/payload.js";

describe("report payloads", () => {
  it("maps each run result to the host's sync state", () => {
    expect(
      ["in-sync", "changed", "changes", "interrupted", "failed", "error", "invalid"].map((r) => [r, syncOf(r)]),
    ).toEqual([
      ["in-sync", "in-sync"],
      ["changed", "in-sync"],
      ["changes", "drifted"],
      ["interrupted", "drifted"],
      ["failed", "failed"],
      ["error", "failed"],
      ["invalid", "failed"],
    ]);
  });

  it("writes the same facts as the same text whatever the key order", () => {
    expect(canonicalJson({ b: 1, a: { d: [2, { f: 1, e: 0 }], c: null } })).toBe(
      '{"a":{"c":null,"d":[2,{"e":0,"f":1}]},"b":1}',
    );
  });

  it("drops the largest diffs first and counts the entries it leaves out", () => {
    const body = {
      changes: [
        { resource: "a", action: "update", diff: "x".repeat(100) },
        { resource: "b", action: "update", diff: "y".repeat(1000) },
      ],
      drift: [],
      errors: [],
      summary: {},
    };
    const fitted = fitPayload(structuredClone(body), JSON.stringify(body).length - 500);
    expect(fitted.changes).toEqual([
      { resource: "a", action: "update", diff: "x".repeat(100) },
      {
        resource: "b",
        action: "update",
        diffOmitted: { sha256: expect.stringMatching(/^[0-9a-f]{64}$/), bytes: 1000 },
      },
    ]);
    const tiny = fitPayload(structuredClone(body), 60);
    expect(tiny.changes).toEqual([]);
    expect(tiny.summary).toEqual({ changesOmitted: 2 });
  });

  it("puts the stored body in its envelope", () => {
    expect(JSON.parse(envelope("h-1", 4, 9, '{"kind":"run","runId":"r"}'))).toEqual({
      v: 1,
      host: "h-1",
      session: 4,
      seq: 9,
      kind: "run",
      runId: "r",
    });
  });
});
