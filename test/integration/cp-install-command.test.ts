/**
 * `driftlessctl hosts add NAME --install-command` as an operator runs it, and the line it prints
 * run by a real shell: the binary is downloaded with curl from an HTTP server in this test (a
 * stand-in that records the arguments it was run with), the password file written. The line's
 * host paths (/etc/driftless, /usr/local/bin) are moved into a temp directory so that it runs
 * here without root; nothing else of it is changed.
 */
import { execFile, spawnSync } from "node:child_process";
import { mkdirSync, readdirSync, readFileSync, statSync } from "node:fs";
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cleanupTemp, tempDir } from "../support/repo.js";

const CTL = path.resolve("bin/driftlessctl.js");
const ARCH = process.arch === "arm64" ? "arm64" : "x64";

function ctl(args: string[]) {
  const run = spawnSync(process.execPath, [CTL, ...args], { encoding: "utf8", env: { ...process.env, NO_COLOR: "1" } });
  return { exitCode: run.status ?? -1, stdout: run.stdout, stderr: run.stderr };
}

/** Runs a shell line without blocking this process (the HTTP server the line downloads from lives here). */
function sh(line: string): Promise<{ status: number; stderr: string }> {
  return new Promise((resolve) => {
    execFile("sh", ["-c", line], { timeout: 60_000 }, (error, _stdout, stderr) => {
      resolve({ status: error ? Number((error as { code?: unknown }).code ?? -1) : 0, stderr });
    });
  });
}

/** Occurrences of `needle` in `text`. */
const count = (text: string, needle: string) => text.split(needle).length - 1;

describe("driftlessctl hosts add --install-command", () => {
  let server: Server;
  let downloadUrl: string;
  const downloads: string[] = [];
  /** Where the stand-in binary writes its arguments, one per line (NUL-separated). */
  const work = tempDir("driftless-install-line-");
  const argsFile = path.join(work, "args");

  beforeAll(async () => {
    // A shell script in place of driftless-linux-*: it records how the line ran it.
    const binary = `#!/bin/sh\nprintf '%s\\0' "$0" "$@" > '${argsFile}'\nexit 2\n`;
    server = createServer((req, res) => {
      downloads.push(req.url ?? "");
      if (req.url === `/releases/v1/driftless-linux-${ARCH}`) res.end(binary);
      else res.writeHead(404).end();
    });
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    downloadUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/releases/v1`;
  });

  afterAll(async () => {
    await new Promise((resolve) => server?.close(resolve));
    cleanupTemp();
  });

  const SOURCE = "https://git.example.com/fleet.git?ref='main'&x=$HOME";
  const LABELS = ["role=gate way", "note=it's `uname` & $(id)", "site=lyon"];

  it("prints the line with the password once, quoted; the line runs: password file 0600, binary fetched for this arch, driftless install run with every flag intact", async () => {
    const data = tempDir("driftless-cp-");
    const run = ctl([
      "hosts",
      "add",
      "edge-1",
      "--data",
      data,
      "--install-command",
      "--source",
      SOURCE,
      "--broker-url",
      "mqtts://cp.example.com:8883",
      "--download-url",
      downloadUrl,
      ...LABELS.flatMap((l) => ["--label", l]),
    ]);
    expect(run.exitCode, run.stderr).toBe(0);
    expect(run.stderr).toBe(""); // no placeholder left
    const line = run.stdout.split("\n").find((l) => l.startsWith("(set -e;")) ?? "";
    expect(line).not.toBe("");
    const password = /printf '%s\\n' '([A-Za-z0-9_-]{32})' >/.exec(line)?.[1] ?? "";
    expect(password, line).not.toBe("");
    // The password shows once, in the line, single-quoted; nothing else of the credentials.
    expect(count(run.stdout, password)).toBe(1);
    expect(run.stdout).not.toContain("password:");

    // A real shell reads it (syntax first), then runs it with the host paths moved here.
    expect(spawnSync("sh", ["-n", "-c", line]).status).toBe(0);
    const etc = path.join(work, "etc/driftless");
    const bin = path.join(work, "usr/local/bin");
    mkdirSync(bin, { recursive: true });
    const moved = line.replaceAll("/etc/driftless", etc).replaceAll("/usr/local/bin", bin);
    const shell = await sh(moved);
    // driftless install's exit code (2: it changed things) is the line's.
    expect(shell.status, shell.stderr).toBe(2);

    expect(readFileSync(path.join(etc, "mqtt-password"), "utf8")).toBe(`${password}\n`);
    expect(statSync(path.join(etc, "mqtt-password")).mode & 0o777).toBe(0o600);
    expect(downloads).toEqual([`/releases/v1/driftless-linux-${ARCH}`]);
    const [program, ...args] = readFileSync(argsFile, "utf8").split("\0").slice(0, -1);
    expect(path.dirname(program ?? "")).toBe(bin);
    expect(args).toEqual([
      "install",
      "--source",
      SOURCE,
      "--host",
      "edge-1",
      ...LABELS.flatMap((l) => ["--label", l]),
      "--broker",
      "mqtts://cp.example.com:8883",
      "--broker-password-file",
      path.join(etc, "mqtt-password"),
    ]);
    // The downloaded file is removed: driftless install copied it to /usr/local/bin/driftless.
    expect(readdirSync(bin)).toEqual([]);
  });

  it("--json adds the line as installCommand; without flags the line holds placeholders, named on stderr", () => {
    const data = tempDir("driftless-cp-");
    const run = ctl(["hosts", "add", "edge-2", "--data", data, "--install-command", "--json"]);
    expect(run.exitCode, run.stderr).toBe(0);
    const out = JSON.parse(run.stdout) as Record<string, string>;
    expect(Object.keys(out)).toEqual(["host", "username", "password", "installCommand"]);
    expect(out).toMatchObject({ host: "edge-2", username: "edge-2" });
    expect(out.installCommand).toContain(`printf '%s\\n' '${out.password}' > /etc/driftless/mqtt-password`);
    expect(out.installCommand).toContain('https://DOWNLOAD-HOST/"driftless-linux-$a"');
    expect(out.installCommand).toContain("--source https://GIT-HOST/fleet.git --host edge-2 --broker mqtt://");
    expect(out.installCommand).toContain(":1883 --broker-password-file /etc/driftless/mqtt-password)");
    expect(spawnSync("sh", ["-n", "-c", out.installCommand ?? ""]).status).toBe(0);
    expect(run.stderr).toMatch(/placeholders: replace DOWNLOAD-HOST, GIT-HOST/);
  });

  it("refuses bad URLs before it creates any credentials", () => {
    const data = tempDir("driftless-cp-");
    for (const [flag, value] of [
      ["--broker-url", "http://cp:1883"],
      ["--source", "git@example.com:fleet.git"],
      ["--download-url", "ftp://dl.example.com/"],
    ] as const) {
      const run = ctl(["hosts", "add", "edge-3", "--data", data, "--install-command", flag, value]);
      expect(run.exitCode, flag).toBe(1);
      expect(run.stderr).toContain(`${flag} ${value}: expected`);
    }
    const withoutLine = ctl(["hosts", "add", "edge-3", "--data", data, "--source", "https://h/f.git"]);
    expect(withoutLine.exitCode).toBe(1);
    expect(withoutLine.stderr).toContain("--source needs --install-command");
    // None of them created edge-3.
    expect(ctl(["hosts", "remove", "edge-3", "--data", data]).exitCode).toBe(3);
  });
});
