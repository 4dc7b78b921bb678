/**
 * `driftless install --root DIR` as an operator runs it, into a temp tree (an image: enabled, not
 * started): the built CLI in its own process, as root (it sets owners and modes). What it did is
 * read back from the tree: the configuration, the copied credentials, the unit (checked by
 * `systemd-analyze verify`), and from its output, which must never hold a secret.
 */
import { spawnSync } from "node:child_process";
import {
  appendFileSync,
  copyFileSync,
  lstatSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parse as parseYaml } from "yaml";
import { BUILD_TIMEOUT_MS, binarySupport, ensureBinary } from "../support/binary.js";
import { CLI, type CliResult, driftless, isRoot } from "../support/cli.js";
import { cleanupTemp, tempDir } from "../support/repo.js";

afterAll(cleanupTemp);

if (!isRoot) console.warn("[driftless] skipping driftless install --root tests: not running as root");

const TOKEN = "glpat-token-that-must-not-show";
const PASSWORD = "mqtt-password-that-must-not-show";
const PASSWORD_2 = "the-rotated-password-that-must-not-show";
const CA = "-----BEGIN CERTIFICATE-----\nnot a real one\n-----END CERTIFICATE-----\n";

/** What every run must not print. */
function expectNoSecret(run: CliResult): void {
  for (const secret of [TOKEN, PASSWORD, PASSWORD_2]) {
    expect(run.stdout + run.stderr, "a secret was printed").not.toContain(secret);
  }
}

/** The resources a run changed, from its output (`  + file:/etc/driftless  create`). */
const changed = (run: CliResult) =>
  run.stdout
    .split("\n")
    .map((line) => /^ {2}\S+ ((?:file|service|systemd):\S+) {2}/.exec(line)?.[1])
    .filter(Boolean);

/** Every file of the tree with its inode and mtime: what a run that changes nothing leaves as it was. */
function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const rel of readdirSync(dir, { recursive: true, encoding: "utf8" })) {
    const st = lstatSync(path.join(dir, rel), { bigint: true });
    out[rel] = `${st.ino} ${st.mtimeNs} ${st.mode}`;
  }
  return out;
}

describe.skipIf(!isRoot)("driftless install --root DIR (an image)", () => {
  const dir = isRoot ? tempDir("driftless-install-") : "";
  const secrets = isRoot ? tempDir("driftless-secrets-") : "";
  const tokenFile = path.join(secrets, "token");
  const passwordFile = path.join(secrets, "password");
  const caFile = path.join(secrets, "ca.pem");
  const at = (rel: string) => path.join(dir, rel);
  const config = () => parseYaml(readFileSync(at("etc/driftless/agent.yaml"), "utf8")) as Record<string, unknown>;
  const install = (...args: string[]) => driftless(["install", "--root", dir, ...args], { asRoot: true });
  const FLAGS = [
    "--source",
    "https://git.example.com/fleet.git",
    "--ref",
    "stable",
    "--host",
    "edge-1",
    "--label",
    "role=gateway",
    "--label",
    "site=lyon",
    "--token-file",
    tokenFile,
    "--broker",
    "mqtts://cp.example.com:8883",
    "--broker-password-file",
    passwordFile,
    "--broker-ca",
    caFile,
  ];

  it("first run: writes the configuration from the flags, copies the credentials, writes and enables the unit (exit 2)", () => {
    writeFileSync(tokenFile, `${TOKEN}\n`, { mode: 0o644 });
    writeFileSync(passwordFile, `${PASSWORD}\n`, { mode: 0o644 });
    writeFileSync(caFile, CA);
    const run = install(...FLAGS);
    expect(run.exitCode, run.stdout + run.stderr).toBe(2);
    expectNoSecret(run);
    expect(run.stdout).toContain("content not shown (sensitive)");
    expect(run.stdout).toContain("driftless.service is enabled (not started)");

    expect(config()).toEqual({
      apiVersion: "driftless/v1",
      kind: "AgentConfig",
      host: "edge-1",
      labels: { role: "gateway", site: "lyon" },
      mode: "enforce",
      stateDir: "/var/lib/driftless",
      source: {
        url: "https://git.example.com/fleet.git",
        ref: "stable",
        tokenFile: "/etc/driftless/git-token",
        interval: "5m",
        splay: "1m",
      },
      broker: {
        url: "mqtts://cp.example.com:8883",
        passwordFile: "/etc/driftless/mqtt-password",
        ca: "/etc/driftless/ca.pem",
      },
    });
    const mode = (rel: string) => (statSync(at(rel)).mode & 0o777).toString(8);
    expect(readFileSync(at("etc/driftless/git-token"), "utf8")).toBe(`${TOKEN}\n`);
    expect(readFileSync(at("etc/driftless/mqtt-password"), "utf8")).toBe(`${PASSWORD}\n`);
    expect(readFileSync(at("etc/driftless/ca.pem"), "utf8")).toBe(CA);
    expect(
      [
        "etc/driftless/agent.yaml",
        "etc/driftless/git-token",
        "etc/driftless/mqtt-password",
        "etc/driftless/ca.pem",
      ].map(mode),
    ).toEqual(["600", "600", "600", "644"]);
    expect(mode("var/lib/driftless")).toBe("700");
    expect(lstatSync(at("etc/systemd/system/multi-user.target.wants/driftless.service")).isSymbolicLink()).toBe(true);
  });

  it("the unit passes systemd-analyze verify: every hardening key known and valid to this systemd", () => {
    const unit = readFileSync(at("etc/systemd/system/driftless.service"), "utf8");
    expect(unit).toMatch(/^ExecStart=.* agent --config \/etc\/driftless\/agent\.yaml$/m);
    expect(unit).toMatch(/^ProtectKernelLogs=yes$/m);
    // verify checks that ExecStart's program exists: the checkout's Node and script may not be
    // readable from here; /bin/true stands in.
    const copy = path.join(tempDir("driftless-unit-"), "driftless.service");
    writeFileSync(copy, unit.replace(/^ExecStart=.*$/m, "ExecStart=/bin/true agent"));
    const verify = spawnSync("systemd-analyze", ["verify", copy], { encoding: "utf8" });
    expect(verify.stderr.trim()).toBe("");
    expect(verify.status).toBe(0);
  });

  it("a second run with the same flags changes nothing (exit 0) and says so", () => {
    const before = snapshot(dir);
    const run = install(...FLAGS);
    expect(run.exitCode, run.stdout + run.stderr).toBe(0);
    expect(run.stdout).toContain("Nothing changed");
    expect(changed(run)).toEqual([]);
    expectNoSecret(run);
    expect(snapshot(dir)).toEqual(before);
  });

  it("another --label updates only the configuration; the operator's edits, the other keys and the credentials stay", () => {
    // The temp files are gone (as an operator would delete them); an edit made by hand.
    rmSync(secrets, { recursive: true, force: true });
    const file = at("etc/driftless/agent.yaml");
    writeFileSync(file, readFileSync(file, "utf8").replace("mode: enforce", "mode: report # until the migration"));

    const run = install("--label", "role=database");
    expect(run.exitCode, run.stdout + run.stderr).toBe(2);
    expectNoSecret(run);
    expect(changed(run)).toEqual(["file:/etc/driftless/agent.yaml"]);
    expect(run.stdout).toContain("-labels: { role: gateway, site: lyon }");
    expect(run.stdout).toContain("+labels: { role: database }");
    expect(run.stdout).toContain("updated: labels.");
    const text = readFileSync(file, "utf8");
    expect(text).toContain("mode: report # until the migration");
    expect(config()).toMatchObject({
      host: "edge-1",
      labels: { role: "database" },
      mode: "report",
      source: { url: "https://git.example.com/fleet.git", ref: "stable", tokenFile: "/etc/driftless/git-token" },
      broker: { url: "mqtts://cp.example.com:8883", passwordFile: "/etc/driftless/mqtt-password" },
    });
    expect(readFileSync(at("etc/driftless/mqtt-password"), "utf8")).toBe(`${PASSWORD}\n`);

    // And the same again: nothing.
    const again = install("--label", "role=database");
    expect(again.exitCode, again.stdout).toBe(0);
  });

  it("a new --broker-password-file replaces the copy, shown as changed but never shown", () => {
    const freshDir = tempDir("driftless-secrets-");
    writeFileSync(path.join(freshDir, "password"), `${PASSWORD_2}\n`, { mode: 0o600 });
    // A path relative to the working directory, as typed.
    const child = spawnSync(process.execPath, [CLI, "install", "--root", dir, "--broker-password-file", "password"], {
      cwd: freshDir,
      encoding: "utf8",
      env: { ...process.env, NO_COLOR: "1" },
    });
    const run = { exitCode: child.status ?? -1, stdout: child.stdout, stderr: child.stderr };
    expect(run.exitCode, run.stdout + run.stderr).toBe(2);
    expectNoSecret(run);
    expect(changed(run)).toEqual(["file:/etc/driftless/mqtt-password"]);
    expect(run.stdout).toContain("content differs (sensitive)");
    expect(readFileSync(at("etc/driftless/mqtt-password"), "utf8")).toBe(`${PASSWORD_2}\n`);
    expect(statSync(at("etc/driftless/mqtt-password")).mode & 0o777).toBe(0o600);
  });

  it("refuses bad flags before it changes anything, naming the flag (exit 1)", () => {
    const empty = tempDir("driftless-install-");
    const pw = path.join(tempDir("driftless-secrets-"), "password");
    writeFileSync(pw, `${PASSWORD}\n`, { mode: 0o600 });
    const cases: [string[], RegExp][] = [
      [["--source", "git.example.com/fleet.git"], /--source git\.example\.com\/fleet\.git: expected an https:\/\//],
      [["--source", "https://u:tok@git.example.com/f.git"], /--source: the URL holds credentials/],
      [["--source", "https://h/f.git", "--broker", "mqtt://cp"], /--broker needs --broker-password-file/],
      [
        ["--source", "https://h/f.git", "--broker", "tcp://cp", "--broker-password-file", pw],
        /--broker tcp:\/\/cp: expected/,
      ],
      [["--source", "https://h/f.git", "--broker-password-file", pw], /need --broker URL/],
      [["--source", "https://h/f.git", "--label", "gateway"], /--label gateway: expected KEY=VALUE/],
      [
        ["--source", "https://h/f.git", "--token-file", "/nonexistent/token"],
        /--token-file \/nonexistent\/token: no such file/,
      ],
      [["--host", "edge-1"], /there is no \/etc\/driftless\/agent\.yaml yet; pass --source URL/],
    ];
    for (const [args, error] of cases) {
      const run = driftless(["install", "--root", empty, ...args], { asRoot: true });
      expect(run.exitCode, args.join(" ")).toBe(1);
      expect(run.stderr).toMatch(error);
      expectNoSecret(run);
    }
    expect(readdirSync(empty)).toEqual([]);
  });

  it("refuses an existing configuration it cannot read, naming the file, and changes nothing", () => {
    const tree = tempDir("driftless-install-");
    const file = path.join(tree, "etc/driftless/agent.yaml");
    spawnSync("mkdir", ["-p", path.dirname(file)]);
    writeFileSync(file, "apiVersion: driftless/v1\nlabels: { role: gw\n");
    const run = driftless(["install", "--root", tree, "--label", "role=db"], { asRoot: true });
    expect(run.exitCode).toBe(1);
    expect(run.stderr).toContain(`${file}:`);
    expect(run.stderr).toContain("fix the file or remove it");
    expect(readdirSync(path.join(tree, "etc"))).toEqual(["driftless"]);
  });
});

// The single binary (npm run build:binary): run from where it was downloaded, it copies itself to
// /usr/local/bin/driftless and the unit runs that; a different binary replaces it. Built here (or
// taken from the build cache), so the test never depends on another file having built it.
const x64 = binarySupport("x64");

describe.skipIf(!isRoot || !x64.can)("the single binary's driftless install --root DIR", () => {
  let BINARY = "";
  beforeAll(async () => {
    BINARY = (await ensureBinary("x64")).path;
  }, BUILD_TIMEOUT_MS);

  it("copies itself to /usr/local/bin/driftless (0755) for the unit; again: nothing; another build: replaced", () => {
    const dir = tempDir("driftless-install-");
    const downloads = tempDir("driftless-download-");
    const run = (file: string) =>
      spawnSync(`./${file}`, ["install", "--root", dir, "--source", "https://git.example.com/fleet.git"], {
        cwd: downloads,
        encoding: "utf8",
        env: { ...process.env, NO_COLOR: "1" },
      });
    copyFileSync(BINARY, path.join(downloads, "driftless-linux-x"));
    const first = run("driftless-linux-x");
    expect(first.status, first.stdout + first.stderr).toBe(2);
    const installed = path.join(dir, "usr/local/bin/driftless");
    expect(readFileSync(installed).equals(readFileSync(BINARY))).toBe(true);
    expect(statSync(installed).mode & 0o777).toBe(0o755);
    expect(readFileSync(path.join(dir, "etc/systemd/system/driftless.service"), "utf8")).toMatch(
      /^ExecStart=\/usr\/local\/bin\/driftless agent --config \/etc\/driftless\/agent\.yaml$/m,
    );

    expect(run("driftless-linux-x").status).toBe(0);

    // Another build (a byte more at the end: it still runs): the installed one is replaced.
    copyFileSync(BINARY, path.join(downloads, "driftless-linux-y"));
    appendFileSync(path.join(downloads, "driftless-linux-y"), "\n");
    const upgrade = run("driftless-linux-y");
    expect(upgrade.status, upgrade.stdout + upgrade.stderr).toBe(2);
    expect(changed({ exitCode: 2, stdout: upgrade.stdout, stderr: "" })).toEqual(["file:/usr/local/bin/driftless"]);
    expect(statSync(installed).size).toBe(statSync(BINARY).size + 1);
  });
});
