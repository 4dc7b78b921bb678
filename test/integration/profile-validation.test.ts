import { symlinkSync } from "node:fs";
import * as path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { run } from "../support/ports.js";
import { cleanupTemp, fleet, makeRepo, profile, tempDir } from "../support/repo.js";

afterAll(cleanupTemp);

const everyone = fleet("  - match: {}\n    profiles: [base]\n");

async function errorsOf(files: Record<string, string>) {
  const outcome = await run(tempDir(), makeRepo(files));
  expect(outcome.exitCode).toBe(1);
  expect(outcome.status).toBe("invalid");
  return outcome.errors.map(
    (e) => `${e.location?.file}:${e.location?.line}:${e.location?.column} ${e.location?.field ?? ""} ${e.message}`,
  );
}

describe("profile validation", () => {
  it("names file, line, column and field of an unknown key, and reports every error at once", async () => {
    const errors = await errorsOf({
      "fleet.yaml": everyone,
      "base.yaml": profile(
        "base",
        `files:
  - path: /etc/a
    mdoe: "0644"
  - path: relative/b
    mode: 644
packages:
  - { name: nginx, state: installed }
`,
      ),
    });
    expect(errors).toEqual([
      'base.yaml:6:5 files[0].mdoe unknown field "mdoe"',
      "base.yaml:7:11 files[1].path must be an absolute path",
      'base.yaml:8:11 files[1].mode must be a quoted octal string such as "0644"',
      expect.stringMatching(/^base\.yaml:10:27 packages\[0\]\.state .*present.*absent.*latest/),
    ]);
  });

  it("reports a schema error in one file and a template error in another in the same run", async () => {
    const errors = await errorsOf({
      "fleet.yaml": fleet("  - match: {}\n    profiles: [base, web]\n"),
      "base.yaml": profile("base", "files:\n  - { path: /etc/a, content: x, bogus: 1 }\n"),
      "web.yaml": profile("web", "files:\n  - { path: /etc/web.conf, template: web.conf.liquid }\n"),
      "web.conf.liquid": "port {{ vars.port }}\n",
    });
    expect(errors).toEqual([
      'base.yaml:5:33 files[0].bogus unknown field "bogus"',
      expect.stringMatching(
        /^web\.conf\.liquid:1:\d+ .*undefined variable: vars\.port \(rendering file:\/etc\/web\.conf/,
      ),
    ]);
  });

  it("still renders the valid entries of a profile with a schema error, and of a fleet's valid assignments", async () => {
    const errors = await errorsOf({
      "fleet.yaml": fleet("  - match: {}\n    profiles: [web]\n  - match: {}\n    profiles: [web]\n    bogus: 1\n"),
      "web.yaml": profile(
        "web",
        "files:\n  - { path: /etc/bad, mode: 644 }\n  - { path: /etc/web.conf, template: web.conf.liquid }\n",
      ),
      "web.conf.liquid": "port {{ vars.port }}\n",
    });
    expect(errors).toEqual([
      'fleet.yaml:8:5 assignments[1].bogus unknown field "bogus"',
      expect.stringMatching(
        /^web\.conf\.liquid:1:\d+ .*undefined variable: vars\.port \(rendering file:\/etc\/web\.conf, web\.yaml:6\)/,
      ),
      'web.yaml:5:29 files[0].mode must be a quoted octal string such as "0644"',
    ]);
  });

  it("reports a duplicate id and the template error of its second declaration together", async () => {
    const errors = await errorsOf({
      "fleet.yaml": fleet("  - match: {}\n    profiles: [base, web]\n"),
      "base.yaml": profile("base", "files:\n  - { path: /etc/web.conf, content: x }\n"),
      "web.yaml": profile("web", "files:\n  - { path: /etc/web.conf, template: web.conf.liquid }\n"),
      "web.conf.liquid": "port {{ vars.port }}\n",
    });
    expect(errors).toEqual([
      expect.stringMatching(/^web\.conf\.liquid:1:\d+ .*undefined variable: vars\.port/),
      "web.yaml:5:13 files[0].path file:/etc/web.conf is already declared at base.yaml:5:13",
    ]);
  });

  it("rejects YAML syntax errors with their position", async () => {
    const errors = await errorsOf({
      "fleet.yaml": everyone,
      "base.yaml": profile("base", "files:\n  - path: /a\n   bad: [\n"),
    });
    expect(errors[0]).toMatch(/^base\.yaml:\d+:\d+ /);
  });

  it("rejects two resources with the same id, naming both places", async () => {
    const errors = await errorsOf({
      "fleet.yaml": fleet("  - match: {}\n    profiles: [base, extra]\n"),
      "base.yaml": profile("base", "files:\n  - { path: /etc/a, content: x }\n"),
      "extra.yaml": profile("extra", "files:\n  - { path: /etc/a/, content: y }\n"),
    });
    expect(errors).toEqual(["extra.yaml:5:13 files[0].path file:/etc/a is already declared at base.yaml:5:13"]);
  });

  it("refuses source and template paths that leave the repository", async () => {
    const outside = tempDir();
    const files = {
      "fleet.yaml": everyone,
      "base.yaml": profile(
        "base",
        `files:
  - { path: /a, source: ../../etc/passwd }
  - { path: /b, template: /etc/passwd }
  - { path: /c, source: files/link }
`,
      ),
      "files/.keep": "",
    };
    const repo = makeRepo(files);
    symlinkSync(outside, path.join(repo, "files/link"));
    const outcome = await run(tempDir(), repo);
    expect(outcome.exitCode).toBe(1);
    expect(outcome.errors.map((e) => `${e.location?.field}: ${e.message}`)).toEqual([
      "files[0].source: ../../etc/passwd leaves the repository",
      "files[1].template: /etc/passwd: absolute paths are not allowed; use a path relative to base.yaml",
      "files[2].source: files/link is a symbolic link that points out of the repository",
    ]);
  });

  it("fails on an undefined template variable, located in the template", async () => {
    const errors = await errorsOf({
      "fleet.yaml": everyone,
      "base.yaml": profile("base", "vars: { port: 1883 }\nfiles:\n  - { path: /etc/x.conf, template: x.liquid }\n"),
      "x.liquid": "port {{ vars.port }}\nhost {{ vars.hostnmae }}\n",
    });
    expect(errors).toHaveLength(1);
    expect(errors[0]).toMatch(/^x\.liquid:2:\d+ .*undefined variable: vars\.hostnmae.*file:\/etc\/x\.conf/);
  });

  it("detects include cycles and unknown profiles", async () => {
    const errors = await errorsOf({
      "fleet.yaml": fleet("  - match: {}\n    profiles: [a, nope]\n"),
      "a.yaml": profile("a", "include: [b]\n"),
      "b.yaml": profile("b", "include: [a]\n"),
    });
    expect(errors).toEqual([
      "b.yaml:4:11 include[0] include cycle: a -> b -> a",
      'fleet.yaml:5:19 assignments[0].profiles[1] unknown profile "nope"',
    ]);
  });

  it("rejects references to resources that do not exist and notify of a non-service", async () => {
    const errors = await errorsOf({
      "fleet.yaml": everyone,
      "base.yaml": profile(
        "base",
        "files:\n  - { path: /a, content: x, after: [package:nginx], notify: [file:/b] }\n  - { path: /b }\n",
      ),
    });
    expect(errors.map((e) => e.replace(/^\S+ /, ""))).toEqual([
      "files[0].after[0] package:nginx is not declared for this host",
      "files[0].notify[0] only services can be notified, not file:/b",
    ]);
  });

  it("rejects a dependency cycle", async () => {
    const errors = await errorsOf({
      "fleet.yaml": everyone,
      "base.yaml": profile("base", "files:\n  - { path: /a, after: [file:/b] }\n  - { path: /b, after: [file:/a] }\n"),
    });
    expect(errors[0]).toMatch(
      /dependency cycle: file:\/a -> file:\/b -> file:\/a|dependency cycle: file:\/b -> file:\/a -> file:\/b/,
    );
  });

  it("accepts a YAML data file used as a source, and refuses a stray one", async () => {
    const ok = await run(
      tempDir(),
      makeRepo({
        "fleet.yaml": everyone,
        "base.yaml": profile("base", "files:\n  - { path: /etc/app.yaml, source: files/app.yaml }\n"),
        "files/app.yaml": "listen: 8080\n",
      }),
    );
    expect(ok.errors).toEqual([]);
    const errors = await errorsOf({ "fleet.yaml": everyone, "base.yaml": profile("base", ""), "stray.yaml": "a: 1\n" });
    expect(errors[0]).toMatch(/^stray\.yaml:1:1 apiVersion missing apiVersion/);
  });

  it("selects profiles by hostname, labels and facts, includes first", async () => {
    const repo = makeRepo({
      "fleet.yaml": fleet(`  - match: { hostname: "edge-*" }
    profiles: [gateway]
  - match: { labels: { role: kiosk } }
    profiles: [kiosk]
  - match: { facts: { os.arch: arm64 } }
    profiles: [arm]
`),
      "base.yaml": profile("base", ""),
      "gateway.yaml": profile("gateway", "include: [base]\n"),
      "kiosk.yaml": profile("kiosk", "include: [base]\n"),
      "arm.yaml": profile("arm", ""),
    });
    expect((await run(tempDir(), repo, { host: "edge-7" })).profiles).toEqual(["base", "gateway"]);
    expect((await run(tempDir(), repo, { host: "pc-1", labels: { role: "kiosk" } })).profiles).toEqual([
      "base",
      "kiosk",
    ]);
    const arm = await run(tempDir(), repo, {
      host: "edge-2",
      labels: { role: "kiosk" },
      facts: { os: { arch: "arm64" } },
    });
    expect(arm.profiles).toEqual(["base", "gateway", "kiosk", "arm"]);
  });
});
