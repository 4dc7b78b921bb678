import { chmodSync, existsSync, readFileSync, statSync, writeFileSync } from "node:fs";
import * as path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { driftless, handOver } from "../support/cli.js";
import { cleanupTemp, fleet, makeRepo, profile, tempDir } from "../support/repo.js";

afterAll(cleanupTemp);

const PROFILES = path.resolve("profiles");

describe("the driftless CLI, run as an unprivileged user", () => {
  it("converges the example repository into a sandbox root, then is in sync", () => {
    const root = tempDir();
    handOver(root);
    const args = ["--source", PROFILES, "--root", root, "--host", "demo-1"];

    const plan = driftless(["plan", ...args]);
    expect(plan.stderr).toBe("");
    expect(plan.exitCode).toBe(2);
    expect(plan.stdout).toContain("+ file:/etc/motd  create");
    expect(existsSync(path.join(root, "etc"))).toBe(false);

    const first = driftless(["apply", ...args]);
    expect(first.exitCode).toBe(2);
    expect(readFileSync(path.join(root, "etc/motd"), "utf8")).toMatch(/^demo-1 \(.*\) at site lab\n/);
    expect(readFileSync(path.join(root, "etc/driftless-example/timesyncd.conf"), "utf8")).toContain(
      "NTP=0.debian.pool.ntp.org 1.debian.pool.ntp.org",
    );

    const second = driftless(["apply", ...args]);
    expect(second.exitCode).toBe(0);
    expect(second.stdout).toMatch(/In sync: 5 resources, nothing changed/);

    chmodSync(path.join(root, "etc/motd"), 0o600);
    const json = driftless(["plan", ...args, "--json"]);
    expect(json.exitCode).toBe(2);
    const report = JSON.parse(json.stdout);
    expect(report.changes).toEqual([
      { resource: "file:/etc/motd", action: "update", drift: [{ field: "mode", desired: "0644", actual: "0600" }] },
    ]);

    const status = driftless(["status", "--state", path.join(root, "var/lib/driftless"), "--json"]);
    expect(status.exitCode).toBe(0);
    const runs = JSON.parse(status.stdout).runs;
    expect(runs.map((r: { result: string }) => r.result)).toEqual(["in-sync", "changed"]);
    expect(runs[1].changes.length).toBe(4);
    expect(runs[1].summary).toMatchObject({ resources: 5, changed: 4, failed: 0 });
  });

  it("shows a first apply of 2,500 files in status --json with every change, as apply --json said", () => {
    const root = tempDir();
    handOver(root);
    const files = Array.from(
      { length: 2500 },
      (_, i) => `  - { path: /etc/many/d${i % 25}/f-${i}.conf, content: "v${i}" }`,
    );
    const repo = makeRepo({
      "fleet.yaml": fleet("  - match: {}\n    profiles: [many]\n"),
      "many.yaml": profile("many", `files:\n${files.join("\n")}\n`),
    });
    const apply = driftless(["apply", "--source", repo, "--root", root, "--host", "h", "--json"]);
    expect(apply.exitCode).toBe(2);
    const applied = JSON.parse(apply.stdout).changes;
    expect(applied).toHaveLength(2500);
    expect(applied[0]).toMatchObject({ action: "create", outcome: "changed", diff: expect.any(String) });

    const status = driftless(["status", "--state", path.join(root, "var/lib/driftless"), "--json"]);
    expect(status.exitCode).toBe(0);
    const [run] = JSON.parse(status.stdout).runs;
    expect(run.changes).toEqual(applied);
    expect(run.summary).toMatchObject({ resources: 2500, changed: 2500, failed: 0 });
  });

  it("exits 1 and applies nothing when any profile is invalid, printing every error", () => {
    const root = tempDir();
    handOver(root);
    const repo = makeRepo({
      "fleet.yaml": fleet("  - match: {}\n    profiles: [p, q]\n"),
      "p.yaml": profile(
        "p",
        "files:\n  - { path: /good, content: ok }\n  - { path: /bad, content: x, mdoe: '0644' }\n",
      ),
      "q.yaml": profile("q", "files:\n  - { path: /t, template: t.liquid }\n"),
      "t.liquid": "{{ vars.nope }}",
    });
    const result = driftless(["apply", "--source", repo, "--root", root]);
    expect(result.exitCode).toBe(1);
    expect(result.stderr).toContain('p.yaml:6:31: files[1].mdoe: unknown field "mdoe"');
    expect(result.stderr).toMatch(/t\.liquid:1:\d+: undefined variable: vars\.nope/);
    expect(result.stderr).toContain("2 errors; nothing was applied.");
    expect(existsSync(path.join(root, "good"))).toBe(false);
  });

  it("reports failed resources with exit code 4 and still applies the rest", () => {
    const root = tempDir();
    handOver(root);
    writeFileSync(path.join(root, "blocker"), "");
    const repo = makeRepo({
      "fleet.yaml": fleet("  - match: {}\n    profiles: [p]\n"),
      "p.yaml": profile("p", "files:\n  - { path: /blocker/x, content: x }\n  - { path: /ok, content: ok }\n"),
    });
    const result = driftless(["apply", "--source", repo, "--root", root, "--state", root]);
    expect(result.exitCode).toBe(4);
    expect(result.stdout).toMatch(/✗ file:\/blocker\/x {2}create {2}\/blocker is not a directory/);
    expect(result.stdout).toContain("1 changed, 1 failed");
    expect(statSync(path.join(root, "ok")).isFile()).toBe(true);
  });

  it("says a host without a supported package manager cannot manage packages, and applies the rest", () => {
    const root = tempDir();
    handOver(root);
    const repo = makeRepo({
      "fleet.yaml": fleet("  - match: {}\n    profiles: [p]\n"),
      "p.yaml": profile("p", "packages:\n  - { name: nginx }\nfiles:\n  - { path: /etc/app.conf, content: ok }\n"),
    });
    const plan = driftless(["plan", "--source", repo, "--root", root, "--json"]);
    expect(plan.exitCode).toBe(4);
    expect(JSON.parse(plan.stdout).problems).toEqual({
      "package:nginx": "no supported package manager (apt/dpkg) on this host",
    });
    expect(JSON.parse(plan.stdout).drift).toEqual([
      { resource: "file:/etc/app.conf", field: "state", desired: "file", actual: "absent" },
      { resource: "file:/etc/app.conf", field: "content", desired: expect.stringMatching(/^sha256:/), actual: null },
    ]);
    const apply = driftless(["apply", "--source", repo, "--root", root]);
    expect(apply.exitCode).toBe(4);
    expect(apply.stdout).toContain("✗ package:nginx  failed  no supported package manager (apt/dpkg) on this host");
    expect(readFileSync(path.join(root, "etc/app.conf"), "utf8")).toBe("ok");
  });

  it("refuses bad flags with exit 1 and has --help on every command", () => {
    expect(driftless(["apply", "--sauce", "x"]).exitCode).toBe(1);
    expect(driftless(["apply", "--sauce", "x"]).stderr).toMatch(/--sauce/);
    expect(driftless(["plan"]).stderr).toMatch(/--source DIR is required/);
    for (const command of ["plan", "apply", "status", "facts", "schema"]) {
      const help = driftless([command, "--help"]);
      expect(help.exitCode).toBe(0);
      expect(help.stdout).toMatch(new RegExp(`^Usage: driftless ${command}`));
    }
    expect(driftless(["--help"]).stdout).toContain("Commands:");
  });

  it("prints facts that fleet matching uses", () => {
    const result = driftless(["facts", "--json"]);
    expect(result.exitCode).toBe(0);
    const facts = JSON.parse(result.stdout);
    expect(facts.os.arch).toMatch(/^(amd64|arm64|armhf|i386|riscv64|ppc64el|s390x)$/);
    expect(typeof facts.hostname).toBe("string");
    expect(facts.os.distro).toBe("debian");
  });
});
