/**
 * Pure parts of the single binary: which program a command line runs (agent/src/sea-main.ts),
 * and the ASCII escaping of the bundles (scripts/build-common.mjs), whose output must mean the
 * same to V8 as its input.
 */
import { runInThisContext } from "node:vm";
import { describe, expect, it } from "vitest";
import { programFor } from "../../agent/src/sea-main.js";
// @ts-expect-error: a build script, JavaScript without types
import { asciiOnly } from "../../scripts/build-common.mjs";

describe("programFor", () => {
  it("runs the supervisor only for `agent` without --once or --run", () => {
    expect(programFor(["agent"])).toBe("supervisor");
    expect(programFor(["agent", "--config", "/etc/driftless/agent.yaml", "--log-format", "json"])).toBe("supervisor");
    expect(programFor(["agent", "--help"])).toBe("supervisor");
    expect(programFor(["agent", "--once"])).toBe("full");
    expect(programFor(["agent", "--run", "--config", "x", "--failures", "0"])).toBe("full");
    expect(programFor(["apply", "agent"])).toBe("full");
    expect(programFor([])).toBe("full");
  });
});

describe("asciiOnly", () => {
  it("escapes every non-ASCII code unit, in regular expressions with and without the u flag, strings and identities", () => {
    const source = String.raw`[/[àáâãäå]/g.test("ä"), /[\ud800-￿]/.test("\uffff"), /[😀]/u.test("😀"), /^.$/u.test("😀"), /\é/.test("é"), "é😀", ${"`"}ü${"`"}, (() => { const é = 1; return é; })()]`;
    const ascii = asciiOnly(source, "test.js") as string;
    expect(ascii).toMatch(/^[\x20-\x7e]*$/);
    expect(ascii).toContain(String.raw`/[\u00e0\u00e1\u00e2\u00e3\u00e4\u00e5]/g`);
    expect(runInThisContext(ascii)).toEqual(runInThisContext(source));
  });
});
