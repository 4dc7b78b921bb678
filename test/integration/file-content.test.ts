/**
 * Where a file's content comes from, within bounds: inline content up to 1 MiB, templates that
 * must be UTF-8 and stop at their limits (time, memory, output), and large `source:` files that
 * are streamed from the checkout instead of held.
 */
import { createHash } from "node:crypto";
import { mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import * as path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { HostFs } from "../../agent/src/host/fs.js";
import { createTemplateRenderer, TEMPLATE_LIMITS } from "../../agent/src/profile/template.js";
import { StateStore } from "../../agent/src/state/db.js";
import { driftless, handOver } from "../support/cli.js";
import { run } from "../support/ports.js";
import { cleanupTemp, fleet, makeRepo, profile, tempDir } from "../support/repo.js";

afterAll(cleanupTemp);

const everyone = fleet("  - match: {}\n    profiles: [p]\n");

async function errorsOf(repo: string) {
  const outcome = await run(tempDir(), repo);
  expect(outcome.exitCode).toBe(1);
  return outcome.errors.map(
    (e) => `${e.location?.file}:${e.location?.line}:${e.location?.column} ${e.location?.field ?? ""} ${e.message}`,
  );
}

/** A repository whose profile renders `t.liquid` (written as raw bytes) into /etc/t. */
function templateRepo(template: string | Buffer): string {
  const repo = makeRepo({
    "fleet.yaml": everyone,
    "p.yaml": profile("p", "files:\n  - { path: /etc/t, template: t.liquid }\n"),
  });
  writeFileSync(path.join(repo, "t.liquid"), template);
  return repo;
}

describe("inline content", () => {
  it("refuses more than 1 MiB, pointing at the field and at source:", async () => {
    const big = "x".repeat(1024 * 1024 + 1);
    const errors = await errorsOf(
      makeRepo({
        "fleet.yaml": everyone,
        "p.yaml": profile(
          "p",
          `files:\n  - { path: /etc/ok, content: "${"y".repeat(1024 * 1024)}" }\n  - path: /etc/big\n    content: ${big}\n`,
        ),
      }),
    );
    expect(errors).toEqual([expect.stringMatching(/^p\.yaml:7:14 files\[1\]\.content .*1 MiB.*source:/)]);
  });
  it("does not parse a YAML file over 4 MiB: an error unless a profile uses it as source", async () => {
    const big = `apiVersion: driftless/v1\nkind: Profile\nname: q\nfiles:\n  - path: /etc/big\n    content: ${"x".repeat(4 * 1024 * 1024)}\n`;
    const errors = await errorsOf(makeRepo({ "fleet.yaml": everyone, "p.yaml": profile("p", ""), "big.yaml": big }));
    expect(errors).toEqual([
      expect.stringMatching(/^big\.yaml:undefined:undefined {2}\d+ bytes: .*at most 4 MiB.*source:/),
    ]);

    const root = tempDir();
    const repo = makeRepo({
      "fleet.yaml": everyone,
      "p.yaml": profile("p", "files:\n  - { path: /srv/data.yaml, source: data.yaml }\n"),
      "data.yaml": `items: [${"1, ".repeat(2 * 1024 * 1024)}1]\n`,
    });
    expect((await run(root, repo, { mode: "apply" })).exitCode).toBe(2);
    expect(statSync(path.join(root, "srv/data.yaml")).size).toBe(statSync(path.join(repo, "data.yaml")).size);
  });
});

describe("templates", () => {
  it("refuses bytes that are not UTF-8, naming the template, line and column", async () => {
    const errors = await errorsOf(
      templateRepo(Buffer.from([...Buffer.from("ok\nbad "), 0xff, ...Buffer.from(" here\n")])),
    );
    expect(errors).toEqual([
      expect.stringMatching(/^t\.liquid:2:5 {2}not valid UTF-8.*\(rendering file:\/etc\/t, p\.yaml:5\)$/),
    ]);
  });

  it("refuses a partial that is not UTF-8", async () => {
    const repo = templateRepo('{% render "part" %}\n');
    writeFileSync(path.join(repo, "part.liquid"), Buffer.from([0x61, 0xc3, 0x28]));
    const errors = await errorsOf(repo);
    expect(errors).toEqual([expect.stringMatching(/^t\.liquid:1:1 .*part\.liquid:1:2: not valid UTF-8/)]);
  });

  it("stops a huge loop at the memory limit with an error located in the template", async () => {
    const loop = "line\n{% for a in (1..1000000000) %}{{ a }}{% endfor %}\n";
    const errors = await errorsOf(templateRepo(loop));
    expect(errors).toEqual([
      expect.stringMatching(/^t\.liquid:2:\d+ {2}memory alloc limit exceeded.*\(rendering file:\/etc\/t/),
    ]);
  });

  it("stops a render that outgrows the output limit", async () => {
    const errors = await errorsOf(templateRepo(`{% for a in (1..5000) %}${"x".repeat(1000)}{% endfor %}`));
    expect(errors).toEqual([expect.stringMatching(/^t\.liquid:1:\d+ {2}.*output limit exceeded/)]);
  });

  it("stops a render that runs past its time limit", async () => {
    const dir = tempDir();
    const renderer = await createTemplateRenderer(new HostFs("/"), dir, { ...TEMPLATE_LIMITS, renderMs: 20 });
    const slow = "{% for a in (1..3000) %}{% for b in (1..3000) %}{% endfor %}{% endfor %}";
    const result = renderer.render(Buffer.from(slow), "slow.liquid", {});
    expect(result).toMatchObject({ code: "ETEMPLATE", message: expect.stringMatching(/render limit exceeded/) });
    expect(renderer.render(Buffer.from("{{ x }}"), "fast.liquid", { x: 1 })).toBe("1");
  });

  it("renders dates the same whatever the host's locale", () => {
    const repo = makeRepo({
      "fleet.yaml": everyone,
      "p.yaml": profile("p", "files:\n  - { path: /etc/when, template: when.liquid }\n"),
      "when.liquid": '{{ "2024-03-05T12:00:00Z" | date: "%A %B" }}\n',
    });
    const root = tempDir();
    handOver(repo, root);
    const result = driftless(["plan", "--source", repo, "--root", root, "--host", "h", "--json"], {
      env: { LC_ALL: "fr_FR.UTF-8", LANG: "fr_FR.UTF-8" },
    });
    expect(result.exitCode, result.stderr).toBe(2);
    const report = JSON.parse(result.stdout) as { changes: Array<{ resource: string; diff?: string }> };
    expect(report.changes.find((c) => c.resource === "file:/etc/when")?.diff).toMatch(/^\+Tuesday March$/m);
  });

  it("refuses a template over 1 MiB before reading it", async () => {
    const errors = await errorsOf(templateRepo("x".repeat(1024 * 1024 + 1)));
    expect(errors).toEqual([expect.stringMatching(/^p\.yaml:5:\d+ files\[0\]\.template t\.liquid is 1048577 bytes/)]);
  });
});

describe("large source files", () => {
  it("are copied from the checkout, not held, and are in sync afterwards", async () => {
    const root = tempDir();
    const stateDir = tempDir();
    const bytes = Buffer.alloc(3 * 1024 * 1024 + 17);
    for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 31 + (i >> 12)) & 0xff;
    const repo = makeRepo({
      "fleet.yaml": everyone,
      "p.yaml": profile("p", 'files:\n  - { path: /srv/blob, source: files/blob, mode: "0640" }\n'),
    });
    mkdirSync(path.join(repo, "files"));
    writeFileSync(path.join(repo, "files/blob"), bytes);

    const state = StateStore.open(stateDir);
    try {
      const first = await run(root, repo, { mode: "apply", state });
      expect(first.exitCode).toBe(2);
      expect(first.plan?.changes[0]?.steps).toEqual([
        expect.objectContaining({ op: "file.copy", from: path.join(repo, "files/blob"), mode: 0o640 }),
      ]);
      expect(first.plan?.changes[0]?.steps[0]).not.toHaveProperty("content");
      const written = readFileSync(path.join(root, "srv/blob"));
      expect(createHash("sha256").update(written).digest("hex")).toBe(createHash("sha256").update(bytes).digest("hex"));
      expect(statSync(path.join(root, "srv/blob")).mode & 0o7777).toBe(0o640);
      expect((await run(root, repo, { mode: "apply", state })).exitCode).toBe(0);
    } finally {
      state.close();
    }

    writeFileSync(path.join(root, "srv/blob"), Buffer.concat([bytes, Buffer.from("tail")]));
    const drifted = await run(root, repo);
    expect(drifted.plan?.changes[0]?.diff).toBe("binary or large content differs");
  });

  it("replaces nothing when the source no longer has the planned hash", () => {
    const root = tempDir();
    const source = path.join(tempDir(), "src");
    writeFileSync(source, "changed since it was hashed");
    writeFileSync(path.join(root, "target"), "before");
    const fs = new HostFs(root);
    expect(() => fs.writeFileAtomicFrom("/target", source, { mode: 0o644, sha256: "0".repeat(64) })).toThrow(
      /changed while the run was using it/,
    );
    expect(readFileSync(path.join(root, "target"), "utf8")).toBe("before");
    expect(readdirSync(root)).toEqual(["target"]);
  });
});
