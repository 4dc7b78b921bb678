/**
 * End to end: the x64 single binary on the oldest system it is built for, a booted Debian 11
 * (bullseye, glibc 2.31) host (systemd-nspawn). The host has no Node: the binary is all it gets,
 * at /usr/local/bin/driftless, with a profile repository bound in at /srv/repo.
 */
import { existsSync, readdirSync, readFileSync } from "node:fs";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { bootHost, type TestHost } from "../harness/host.js";
import { hostSupport } from "../harness/skip.js";
import {
  BINARY_NODE_VERSION,
  type Binary,
  BUILD_TIMEOUT_MS,
  binarySupport,
  ensureBinary,
  SMALL_PROFILE,
  smallRepo,
} from "../support/binary.js";
import { cleanupTemp } from "../support/repo.js";

const ROOTFS = { suite: "bullseye" };
const hosts = hostSupport({ rootfs: ROOTFS });
const binary = binarySupport("x64");
const BIN = "/usr/local/bin/driftless";
const NAME = "dl-bullseye";

describe.skipIf(!hosts.can || !binary.can)("the x64 single binary on a Debian 11 host", () => {
  let bin: Binary;
  let host: TestHost;

  beforeAll(async () => {
    bin = await ensureBinary("x64");
    host = await bootHost({
      name: NAME,
      rootfs: ROOTFS,
      binds: [
        { source: bin.path, target: BIN },
        { source: smallRepo(), target: "/srv/repo" },
      ],
    });
    await host.waitRunning();
  }, BUILD_TIMEOUT_MS);

  afterAll(async () => {
    await host?.stop();
    cleanupTemp();
  });

  it("is a host with glibc 2.31 and no Node", async () => {
    const ldd = await host.exec("ldd", ["--version"]);
    expect(ldd.stdout).toMatch(/ 2\.31$/m);
    expect((await host.exec("sh", ["-c", "command -v node"])).exitCode).not.toBe(0);
  });

  it("prints its version", async () => {
    const result = await host.execChecked(BIN, ["--version"]);
    expect(result.stdout).toContain(`node ${BINARY_NODE_VERSION}, linux-x64)`);
  });

  it("sees the host's facts", async () => {
    const result = await host.execChecked(BIN, ["facts", "--json"]);
    const facts = JSON.parse(result.stdout) as { hostname: string; os: { codename: string; release: string } };
    expect(facts).toMatchObject({ hostname: NAME, os: { codename: "bullseye", release: "11" } });
  });

  it("applies a profile, records the run and is in sync the second time", async () => {
    const first = await host.exec(BIN, ["apply", "--source", "/srv/repo"]);
    expect(first.exitCode, first.stderr).toBe(2);
    expect(readFileSync(path.join(host.rootDir, SMALL_PROFILE.motd), "utf8")).toBe(
      `${SMALL_PROFILE.motdText} ${NAME} (lab)\n`,
    );
    expect(existsSync(path.join(host.rootDir, SMALL_PROFILE.dir))).toBe(true);
    // The SQLite addon was written once into the state directory.
    expect(readdirSync(path.join(host.rootDir, "var/lib/driftless/native"))).toEqual([
      expect.stringMatching(/^better_sqlite3-[0-9a-f]{16}\.node$/),
    ]);

    const again = await host.exec(BIN, ["apply", "--source", "/srv/repo"]);
    expect(again.exitCode, again.stderr).toBe(0);
    const status = await host.execChecked(BIN, ["status", "--json"]);
    expect((JSON.parse(status.stdout) as { runs: { result: string }[] }).runs.map((r) => r.result)).toEqual([
      "in-sync",
      "changed",
    ]);
  });
});
