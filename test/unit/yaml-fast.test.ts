/**
 * The parse without positions (yaml/fast.ts, js-yaml) against the parse with positions
 * (yaml/located.ts, the `yaml` library): the same values for every profile and configuration we
 * have and for YAML's corner cases, and no value at all (the file goes the slow way) wherever
 * the two could differ.
 */
import { readdirSync, readFileSync } from "node:fs";
import * as path from "node:path";
import { describe, expect, it } from "vitest";
import type { DriftlessError } from "../../agent/src/errors.js";
import { parseFast } from "../../agent/src/yaml/fast.js";
import { parseLocatedYaml } from "../../agent/src/yaml/located.js";

function withPositions(text: string): { values: unknown[]; errors: DriftlessError[] } {
  const errors: DriftlessError[] = [];
  const values = parseLocatedYaml(text, "t.yaml", errors).map((d) => d.value);
  return { values, errors };
}

/** Both parsers read `text` without error and give deep-equal values (prototypes included). */
function expectSameValues(text: string): void {
  const slow = withPositions(text);
  expect(slow.errors).toEqual([]);
  const fast = parseFast(text);
  expect(fast).not.toBeNull();
  expect(fast).toStrictEqual(slow.values);
}

/** The repository's profiles and the YAML examples of its docs (profiles, agent configuration). */
function corpus(): Array<[string, string]> {
  const out: Array<[string, string]> = [];
  for (const name of readdirSync("profiles").filter((n) => n.endsWith(".yaml"))) {
    out.push([`profiles/${name}`, readFileSync(path.join("profiles", name), "utf8")]);
  }
  const docs = [...readdirSync("docs").map((n) => path.join("docs", n)), "README.md"].filter((f) => f.endsWith(".md"));
  for (const file of docs) {
    const blocks = readFileSync(file, "utf8").matchAll(/^```yaml\n([\s\S]*?)^```$/gm);
    for (const [i, block] of [...blocks].entries()) out.push([`${file} block ${i + 1}`, block[1] as string]);
  }
  return out;
}

/** Profiles and configurations as the integration tests write them. */
const FIXTURES: Record<string, string> = {
  fleet: `apiVersion: driftless/v1
kind: Fleet
assignments:
  - match: { hostname: "edge-*" }
    profiles: [gateway]
  - match: { labels: { role: kiosk } }
    profiles: [kiosk]
  - match: { facts: { os.arch: arm64 } }
    profiles: [arm]
`,
  "profile with every kind": `apiVersion: driftless/v1
kind: Profile
name: base
include: [common]
vars: { port: 1883, nested: { list: [1, two, 3.5], flag: true } }
packages:
  - { name: nginx, state: installed }
  - name: curl
    version: "7.88.1-10+deb12u5"
files:
  - path: /etc/a
    mdoe: "0644"
  - path: relative/b
    mode: 644
  - { path: /etc/web.conf, template: web.conf.liquid, notify: [service:nginx] }
  - { path: /a, content: x, after: [package:nginx], notify: [file:/b] }
  - { path: /etc/app.yaml, source: files/app.yaml, sensitive: true }
  - { path: /var/lib/edge, state: directory, mode: "0750", owner: root, group: "0" }
  - { path: /etc/edge/current, state: link, target: /etc/edge/v2 }
services:
  - { name: nginx, enabled: true, state: running, onNotify: reload }
`,
  "content block scalars": `apiVersion: driftless/v1
kind: Profile
name: content
files:
  - path: /etc/motd
    content: |
      Welcome to {{ host.name }}
        indented line
      last line
  - path: /etc/folded
    content: >-
      folded
      text

      paragraph
  - path: /etc/keep
    content: |+
      kept trailing newlines

  - path: /usr/local/bin/run
    mode: "0755"
    content: "#!/bin/sh\\nexec /usr/bin/true \\"$@\\"\\n"
`,
  "agent configuration": `apiVersion: driftless/v1
kind: AgentConfig
mdoe: report
source:
  url: https://git.example.com/fleet.git
  interval: soon
  tokenFile: /t
broker: { url: http://cp:1883 }
`,
  "agent configuration with paths": `apiVersion: driftless/v1
kind: AgentConfig
source:
  url: /srv/repo
  splay: 30s
  tokenFile: secrets/token
  interval: 90s
  fetchTimeout: 3s
host: edge-7
broker:
  url: mqtts://cp:8883
  passwordFile: mqtt-password
state: { keepRuns: 50 }
`,
};

/** YAML's corner cases; each must read the same both ways. */
const EDGE_CASES: Record<string, string> = {
  "dates stay strings": "d: 2024-01-01\nt: 2024-01-01T10:00:00Z\ns: 2001-12-14 21:59:43.10 -5\n",
  "yes, no, on, off stay strings": "a: yes\nb: no\nc: on\nd: off\ne: Yes\nf: NO\ng: y\nh: N\n",
  booleans: "a: true\nb: True\nc: FALSE\nd: false\n",
  "octal-looking numbers and quoted modes": "a: 0644\nb: \"0644\"\nc: '0644'\nd: 0o644\ne: 007\nf: 00\n",
  "other numbers":
    "a: 0x1F\nb: 0b11\nc: 1_000\nd: +12\ne: -0\nf: .5\ng: 1.\nh: 1e3\ni: 1E+3\nj: -1.5e-3\nk: 9007199254740993\n",
  "infinities and not-a-number": "a: .inf\nb: -.inf\nc: +.INF\nd: .nan\ne: .NaN\n",
  nulls: "a: null\nb: ~\nc: Null\nd: NULL\ne:\nf: nULL\nlist:\n  -\n  - ~\n",
  "several documents":
    "apiVersion: driftless/v1\nkind: Profile\nname: a\n---\napiVersion: driftless/v1\nkind: Profile\nname: b\n",
  "a leading ---": "---\na: 1\n",
  "document end markers": "a: 1\n...\n---\nb: 2\n...\n",
  "block and flow styles":
    "block:\n  - a\n  - - b\n    - c\n  - d: e\n    f: g\nflow: {a: [1, 2, {b: c}], d: {}, e: []}\nmixed:\n  - {x: 1}\n  - [y, z]\n",
  "flow collection spread over lines": "a: [\n  1,\n  2,\n  ]\nb: { c: d,\n  e: f }\n",
  "quoted keys and odd keys":
    '\'a b\': 1\n"c\\td": 2\n1: one\ntrue: yes\n2.5: float\n<<: {m: 1}\n__proto__: {p: 1}\n"": empty\n',
  "quoted strings":
    "a: 'it''s'\nb: \"\\u00e9\\x41\\n\\t\\\\\"\nc: \"line\\\n  continued\"\nd: \"\\N\\_\"\ne: '  spaces  '\n",
  "plain multi-line scalars": "a: plain\n  multi line\n  scalar\nb: x # a comment\n",
  "block scalar indicators":
    "a: |2\n    two\n  one\nb: |-\n  strip\n\nc: >+\n  keep\n\nd: >\n  folded\n    more indented\n  back\n",
  comments: "# first\na: 1 # after\n# between\nb:\n  # inside\n  - x # item\n# last\n",
  "non-ASCII": "a: é ü 漢字\nb: '😀'\nc: \"\\U0001F600\"\nclé: valeur\n",
  tabs: 'a:\tb\nc: "\\tx"\n',
  "an anchor without an alias": "a: &anchor 1\nb: [&list 2]\n",
  "a non-specific tag": "a: ! 12\nb: ! true\n",
  "strings that look like numbers": "a: \"1.0\"\nb: '12'\nc: 1.0.0\nd: 1:20\ne: 10:00:00\nf: 0x\ng: 0o\n",
  "a long line": `a: ${"x".repeat(100_000)}\n`,
};

describe("the parse without positions", () => {
  it.each(corpus())("reads %s as the parse with positions does", (_name, text) => {
    expectSameValues(text);
  });

  it.each(Object.entries(FIXTURES))("reads the test fixture '%s' as the parse with positions does", (_name, text) => {
    expectSameValues(text);
  });

  it.each(Object.entries(EDGE_CASES))("reads %s as the parse with positions does", (_name, text) => {
    expectSameValues(text);
  });

  it.each([...corpus(), ...Object.entries(FIXTURES), ...Object.entries(EDGE_CASES)])(
    "reads %s with CRLF line endings and a byte order mark as the parse with positions does",
    (_name, text) => {
      expectSameValues(`\ufeff${text.replace(/\n/g, "\r\n")}`);
    },
  );

  it("finds documents in the corpus (the block pattern still matches the docs)", () => {
    const names = corpus().map(([name]) => name);
    expect(names).toContain("profiles/base.yaml");
    expect(names.filter((n) => n.startsWith("docs/")).length).toBeGreaterThanOrEqual(4);
  });

  it.each([
    ["an alias", "a: &x [1, 2]\nb: *x\n"],
    ["an alias of a scalar", "a: &x 1\nb: *x\n"],
    ["a %YAML 1.1 directive, under which yes is true", "%YAML 1.1\n---\na: yes\n"],
    ["a directive after a byte order mark", "\ufeff%YAML 1.2\n---\na: 1\n"],
    ["a %TAG directive", "%TAG !e! tag:example.com,2000:\n---\na: !e!x 1\n"],
    ["an explicit !! tag", "a: !!float 1\n"],
    ["a verbatim tag", "a: !<tag:yaml.org,2002:str> 1\n"],
    ["binary", "a: !!binary aGk=\n"],
    ["a local tag", "a: !x 1\n"],
    ["a duplicate key", "a: 1\na: 2\n"],
    ["a duplicate null key", "~: 1\nnull: 2\n"],
    ["a syntax error", "files:\n  - path: /a\n   bad: [\n"],
    ["a complex key", "? [a]\n: 1\n"],
    ["a lone ---", "---\n"],
    ["a trailing ---", "a: 1\n---\n"],
    ["a null document", "~\n"],
    ["no document", "# only a comment\n"],
    ["an empty file", ""],
    ["a lone ...", "...\n"],
  ])("leaves %s to the parse with positions", (_name, text) => {
    expect(parseFast(text)).toBeNull();
  });

  it("reads what js-yaml refuses and the `yaml` library accepts the slow way", () => {
    // The closing bracket is less indented than YAML allows; `yaml` lets it pass.
    const text = "a: [\n  1,\n  2,\n]\n";
    expect(parseFast(text)).toBeNull();
    expect(withPositions(text)).toEqual({ values: [{ a: [1, 2] }], errors: [] });
  });

  it("leaves a billion laughs to the parse with positions, which refuses it with a position", () => {
    const lines = [
      "apiVersion: driftless/v1",
      "kind: Profile",
      "name: base",
      "vars:",
      `  a0: &a0 [${"lol, ".repeat(9)}lol]`,
    ];
    for (let i = 1; i < 10; i++)
      lines.push(
        `  a${i}: &a${i} [${Array(10)
          .fill(`*a${i - 1}`)
          .join(", ")}]`,
      );
    const text = `${lines.join("\n")}\n`;
    expect(parseFast(text)).toBeNull();
    const { values, errors } = withPositions(text);
    expect(values).toEqual([]);
    expect(errors.map((e) => [e.code, e.location?.file, e.location?.line])).toEqual([["EYAML", "t.yaml", 1]]);
    expect(errors[0]?.message).toMatch(/alias/i);
  });
});
