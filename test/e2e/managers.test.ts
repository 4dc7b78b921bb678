/**
 * The apt and systemd managers against real dpkg, apt and systemd: inside a booted Debian host
 * (online), and from outside against an unbooted root (offline, `--root`).
 *
 * The managers run inside the host as a small driver bundled with esbuild; packages come from a
 * local repository of .debs built here.
 */
import { cpSync, existsSync, lstatSync, mkdirSync, readlinkSync, writeFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DriftlessError } from "../../agent/src/errors.js";
import { HostFs } from "../../agent/src/host/fs.js";
import { systemRunner } from "../../agent/src/host/runner.js";
import { detectPackageManager } from "../../agent/src/resources/package/apt.js";
import { createSystemdManager } from "../../agent/src/resources/service/systemd.js";
import type { ActualPackage, ActualService } from "../../agent/src/resources/types.js";
import { type AptRepo, createAptRepo, type DebSpec, useAptRepo } from "../harness/deb.js";
import { bootHost, createRoot, type HostRoot, nodeBind, type TestHost } from "../harness/host.js";
import { hostSupport } from "../harness/skip.js";
import type { DriverCommand, DriverOutput } from "./fixtures/manager-driver.js";

const support = hostSupport();

const plain = (name: string, version: string): DebSpec => ({ name, version });
const withService = (name: string, version: string): DebSpec => ({ name, version, service: {} });
const broken: DebSpec = {
  name: "dl-broken",
  version: "1.0",
  postinst: 'if [ "$1" = configure ]; then echo "dl-broken: configure fails on purpose" >&2; exit 1; fi',
};

async function bundleDriver(): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), "driftless-driver-"));
  await build({
    entryPoints: [fileURLToPath(new URL("./fixtures/manager-driver.ts", import.meta.url))],
    outfile: path.join(dir, "manager-driver.mjs"),
    bundle: true,
    platform: "node",
    target: "node20",
    format: "esm",
    // CommonJS dependencies inside an ESM bundle need a require.
    banner: { js: "import { createRequire } from 'node:module'; const require = createRequire(import.meta.url);" },
    logLevel: "silent",
  });
  return dir;
}

describe.skipIf(!support.can)("apt and systemd managers on a booted Debian host", () => {
  let host: TestHost;
  let repo: AptRepo;
  let driverDir: string;

  beforeAll(async () => {
    [repo, driverDir] = await Promise.all([createAptRepo(), bundleDriver()]);
    await repo.publish(plain("dl-hello", "1.0"), plain("dl-up", "1.0"), plain("dl-good", "1.0"), broken);
    await repo.publish(plain("dl-good2", "1.0"), withService("dl-svc", "1.0"), plain("dl-half", "1.0"));
    await repo.publish(plain("dl-after", "1.0"));
    await repo.publish(plain("dl-keep", "1.0"), { name: "dl-rival", version: "1.0", conflicts: ["dl-keep"] });
    host = await bootHost({ binds: [repo.bind, nodeBind(), { source: driverDir, target: "/opt/driver" }] });
    await useAptRepo(host, repo);
  });

  afterAll(async () => {
    await host?.stop();
    await repo?.dispose();
    if (driverDir) await rm(driverDir, { recursive: true, force: true });
  });

  async function drive<T>(command: DriverCommand): Promise<T> {
    const run = await host.exec("node", ["/opt/driver/manager-driver.mjs", JSON.stringify(command)]);
    const line = run.stdout.trim().split("\n").pop() ?? "";
    let output: DriverOutput;
    try {
      output = JSON.parse(line) as DriverOutput;
    } catch {
      throw new Error(`driver printed no JSON (exit ${run.exitCode}):\n${run.stdout}\n${run.stderr}`);
    }
    if (!output.ok) throw Object.assign(new Error(String(output.error.message)), output.error);
    return output.result as T;
  }
  const packages = (names: string[], candidates: string[] = [], refreshIndex = false) =>
    drive<Record<string, ActualPackage>>({ op: "packages.query", query: { names, candidates, refreshIndex } });
  const apply = (install: { name: string; version?: string }[], remove: string[] = []) =>
    drive<{ failed: Record<string, string>; lines: number }>({ op: "packages.apply", operation: { install, remove } });
  const services = (names: string[]) => drive<Record<string, ActualService>>({ op: "services.query", names });
  const act = (action: string, name: string) => drive<null>({ op: "services.act", action, name } as DriverCommand);

  it("detects apt", async () => {
    expect(await drive<string | null>({ op: "detect" })).toBe("apt");
  });

  it("installs and removes a package from the local repository", async () => {
    expect(await packages(["dl-hello", "no-such-package"])).toEqual({
      "dl-hello": { installed: false },
      "no-such-package": { installed: false },
    });

    const installed = await apply([{ name: "dl-hello" }]);
    expect(installed.failed).toEqual({});
    expect(installed.lines).toBeGreaterThan(0); // apt's output reached onLine
    expect(await packages(["dl-hello"])).toEqual({ "dl-hello": { installed: true, version: "1.0" } });

    expect((await apply([], ["dl-hello"])).failed).toEqual({});
    expect(await packages(["dl-hello"])).toEqual({ "dl-hello": { installed: false } });
    // biome-ignore lint/suspicious/noTemplateCurlyInString: dpkg-query's own field syntax
    const status = await host.exec("dpkg-query", ["-W", "-f=${Status}", "dl-hello"]);
    expect(status.stdout).not.toContain(" installed");
  });

  it("sees version 2 as the candidate once published, upgrades to it, and pins back", async () => {
    expect((await apply([{ name: "dl-up" }])).failed).toEqual({});
    expect(await packages(["dl-up"], ["dl-up"])).toEqual({
      "dl-up": { installed: true, version: "1.0", candidate: "1.0" },
    });

    await repo.publish(plain("dl-up", "2.0"));
    // Without a refresh the host's index is stale; with one, it sees 2.0.
    expect((await packages(["dl-up"], ["dl-up"], false))["dl-up"]?.candidate).toBe("1.0");
    expect(await packages(["dl-up"], ["dl-up"], true)).toEqual({
      "dl-up": { installed: true, version: "1.0", candidate: "2.0" },
    });

    expect((await apply([{ name: "dl-up" }])).failed).toEqual({});
    expect((await packages(["dl-up"]))["dl-up"]).toEqual({ installed: true, version: "2.0" });

    // An exact version below the installed one is a downgrade, which apply allows.
    expect((await apply([{ name: "dl-up", version: "1.0" }])).failed).toEqual({});
    expect((await packages(["dl-up"]))["dl-up"]).toEqual({ installed: true, version: "1.0" });
  });

  it("reads candidates from the cached index when apt-get update fails", async () => {
    await host.execChecked("sh", [
      "-c",
      "echo 'deb [trusted=yes] file:/srv/gone ./' > /etc/apt/sources.list.d/gone.list",
    ]);
    try {
      // The refresh fails (a source is unreachable): the cached index still has dl-hello...
      expect(await packages(["dl-hello"], ["dl-hello"], true)).toEqual({
        "dl-hello": { installed: false, candidate: "1.0" },
      });
      // ...but not a package it has never seen, which is then an error that says why.
      const error = await packages(["dl-nowhere"], ["dl-nowhere"], true).catch((e: unknown) => e);
      expect(error).toMatchObject({ code: "EPKGINDEX", phase: "read", retryable: true });
      expect((error as Error).message).toMatch(/apt-get update failed \(.*\/srv\/gone.*\).*dl-nowhere/);
    } finally {
      await host.execChecked("rm", ["/etc/apt/sources.list.d/gone.list"]);
    }
  });

  it("fails only the bad packages of a batch", async () => {
    // apt refuses the whole batch for a name it cannot find: the good one goes through on retry.
    const unresolved = await apply([
      { name: "dl-good" },
      { name: "no-such-package" },
      { name: "dl-up", version: "9.9" },
    ]);
    expect(Object.keys(unresolved.failed).sort()).toEqual(["dl-up", "no-such-package"]);
    expect(unresolved.failed["no-such-package"]).toBe("Unable to locate package no-such-package");
    expect(unresolved.failed["dl-up"]).toBe("Version '9.9' for 'dl-up' was not found");
    expect((await packages(["dl-good"]))["dl-good"]?.installed).toBe(true);

    // A failing postinst fails the whole apt-get call, though dpkg installed the other package.
    const configure = await apply([{ name: "dl-broken" }, { name: "dl-good2" }]);
    expect(Object.keys(configure.failed)).toEqual(["dl-broken"]);
    expect(configure.failed["dl-broken"]).toMatch(
      /error processing package dl-broken \(--configure\).*post-installation script .* exit status 1/,
    );
    expect(await packages(["dl-broken", "dl-good2"])).toEqual({
      "dl-broken": { installed: false }, // half-configured
      "dl-good2": { installed: true, version: "1.0" },
    });

    // While dl-broken stays half-configured, every apt-get call fails on it; others still succeed.
    expect((await apply([], ["dl-good", "dl-good2"])).failed).toEqual({});
    expect(await packages(["dl-good", "dl-good2"])).toEqual({
      "dl-good": { installed: false },
      "dl-good2": { installed: false },
    });
    expect((await apply([], ["dl-broken"])).failed).toEqual({});
    expect((await host.exec("apt-get", ["check"])).exitCode).toBe(0);
  });

  it("never removes an unrelated package to install one that conflicts with it", async () => {
    expect((await apply([{ name: "dl-keep" }])).failed).toEqual({});
    const refused = await apply([{ name: "dl-rival" }]);
    expect(Object.keys(refused.failed)).toEqual(["dl-rival"]);
    expect(refused.failed["dl-rival"]).toMatch(/remove is disabled/);
    expect(await packages(["dl-keep", "dl-rival"])).toEqual({
      "dl-keep": { installed: true, version: "1.0" },
      "dl-rival": { installed: false },
    });

    // Removing it in the same run is the profile's own choice: the removal goes first, in its own call.
    expect((await apply([{ name: "dl-rival" }], ["dl-keep"])).failed).toEqual({});
    expect(await packages(["dl-keep", "dl-rival"])).toEqual({
      "dl-keep": { installed: false },
      "dl-rival": { installed: true, version: "1.0" },
    });
    expect((await apply([], ["dl-rival"])).failed).toEqual({});
  });

  it("finishes an interrupted dpkg run, then installs", async () => {
    // As a power loss half way through an apt-get call leaves it: unpacked, journal pending.
    await host.execChecked("sh", [
      "-c",
      "dpkg --unpack /srv/repo/dl-half_1.0_all.deb && touch /var/lib/dpkg/updates/0000",
    ]);
    expect((await packages(["dl-half"]))["dl-half"]).toEqual({ installed: false });
    expect((await host.exec("apt-get", ["install", "-y", "-q", "dl-after"])).stderr).toContain("dpkg was interrupted");

    expect((await apply([{ name: "dl-after" }])).failed).toEqual({});
    expect(await packages(["dl-half", "dl-after"])).toEqual({
      "dl-half": { installed: true, version: "1.0" },
      "dl-after": { installed: true, version: "1.0" },
    });
  });

  it("enables, starts, restarts, reloads, stops and disables a service from a package", async () => {
    expect((await apply([{ name: "dl-svc" }])).failed).toEqual({});
    await drive({ op: "services.daemonReload" });
    expect(await services(["dl-svc"])).toEqual({
      "dl-svc": { loaded: true, unitFileState: "disabled", activeState: "inactive" },
    });

    await act("enable", "dl-svc");
    expect((await services(["dl-svc"]))["dl-svc"]?.unitFileState).toBe("enabled");

    await act("start", "dl-svc.service");
    const started = (await services(["dl-svc"]))["dl-svc"];
    expect(started?.activeState).toBe("active");
    expect(started?.mainPid).toBeGreaterThan(0);

    await act("restart", "dl-svc");
    const restarted = (await services(["dl-svc"]))["dl-svc"];
    expect(restarted?.activeState).toBe("active");
    expect(restarted?.mainPid).toBeGreaterThan(0);
    expect(restarted?.mainPid).not.toBe(started?.mainPid);

    await act("reload", "dl-svc");
    expect((await services(["dl-svc"]))["dl-svc"]?.mainPid).toBe(restarted?.mainPid);

    await act("stop", "dl-svc");
    expect(await services(["dl-svc"])).toEqual({
      "dl-svc": { loaded: true, unitFileState: "enabled", activeState: "inactive" },
    });
    await act("disable", "dl-svc");
    expect((await services(["dl-svc"]))["dl-svc"]?.unitFileState).toBe("disabled");
  });

  it("reads many units in one call, unknown ones as not loaded", async () => {
    expect(await services(["no-such-unit", "dbus", "systemd-journald.service", "dl-svc"])).toEqual({
      "no-such-unit": { loaded: false, activeState: "inactive" },
      dbus: { loaded: true, unitFileState: "static", activeState: "active", mainPid: expect.any(Number) },
      "systemd-journald.service": {
        loaded: true,
        unitFileState: "static",
        activeState: "active",
        mainPid: expect.any(Number),
      },
      "dl-svc": { loaded: true, unitFileState: "disabled", activeState: "inactive" },
    });
  });

  it("reports systemd's message when an action fails", async () => {
    const error = await act("start", "no-such-unit").catch((e: unknown) => e);
    expect(error).toMatchObject({
      code: "ESERVICE",
      phase: "apply",
      resource: "service:no-such-unit",
      message: expect.stringContaining("Unit no-such-unit.service not found"),
    });
  });
});

describe.skipIf(!support.can)("apt and systemd managers under --root (offline)", () => {
  let root: HostRoot;
  let repo: AptRepo;
  const unit =
    "[Unit]\nDescription=offline test\n[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n";

  beforeAll(async () => {
    [root, repo] = await Promise.all([createRoot(), createAptRepo()]);
    writeFileSync(path.join(root.rootDir, "etc/systemd/system/dl-offline.service"), unit);
  });

  afterAll(async () => {
    await root?.dispose();
    await repo?.dispose();
  });

  it("enables and disables a unit with systemctl --root, refuses to start it", async () => {
    const manager = createSystemdManager({ fs: new HostFs(root.rootDir), runner: systemRunner });
    expect(manager.offline).toBe(true);
    expect(Object.fromEntries(await manager.query(["dl-offline", "no-such-unit", "getty@tty1"]))).toEqual({
      "dl-offline": { loaded: true, unitFileState: "disabled" },
      "no-such-unit": { loaded: false },
      "getty@tty1": { loaded: true, unitFileState: "enabled" },
    });

    await manager.act("enable", "dl-offline");
    const wants = path.join(root.rootDir, "etc/systemd/system/multi-user.target.wants/dl-offline.service");
    expect(lstatSync(wants).isSymbolicLink()).toBe(true);
    expect(readlinkSync(wants)).toBe("/etc/systemd/system/dl-offline.service");
    expect((await manager.query(["dl-offline"])).get("dl-offline")).toEqual({ loaded: true, unitFileState: "enabled" });

    await manager.act("disable", "dl-offline");
    expect(existsSync(wants)).toBe(false);
    expect((await manager.query(["dl-offline"])).get("dl-offline")?.unitFileState).toBe("disabled");

    const refused = await manager.act("start", "dl-offline").catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(DriftlessError);
    expect(refused).toMatchObject({ code: "EOFFLINE", phase: "apply", resource: "service:dl-offline" });
    await manager.daemonReload(); // a no-op offline
  });

  it("reads dpkg's database with --admindir and installs through chroot", async () => {
    const manager = detectPackageManager({ fs: new HostFs(root.rootDir), runner: systemRunner });
    expect(manager?.name).toBe("apt");
    if (!manager) return;
    const before = await manager.query({ names: ["dpkg", "dl-hello"], candidates: [], refreshIndex: false });
    expect(before.get("dpkg")).toMatchObject({ installed: true });
    expect(before.get("dl-hello")).toEqual({ installed: false });

    // The repository inside the tree, as an image build would have it.
    await repo.publish(plain("dl-hello", "1.0"));
    mkdirSync(path.join(root.rootDir, "srv/repo"), { recursive: true });
    cpSync(repo.dir, path.join(root.rootDir, "srv/repo"), { recursive: true });
    writeFileSync(path.join(root.rootDir, "etc/apt/sources.list"), `${repo.sourceLine}\n`);

    const query = await manager.query({ names: ["dl-hello"], candidates: ["dl-hello"], refreshIndex: true });
    expect(query.get("dl-hello")).toEqual({ installed: false, candidate: "1.0" });
    const outcome = await manager.apply({ install: [{ name: "dl-hello" }], remove: [] }, {});
    expect(Object.fromEntries(outcome.failed)).toEqual({});
    expect((await manager.query({ names: ["dl-hello"], candidates: [], refreshIndex: false })).get("dl-hello")).toEqual(
      {
        installed: true,
        version: "1.0",
      },
    );
  });

  it("finds no package manager where there is no dpkg database", async () => {
    const empty = await mkdtemp(path.join(tmpdir(), "driftless-empty-root-"));
    try {
      expect(detectPackageManager({ fs: new HostFs(empty), runner: systemRunner })).toBeNull();
    } finally {
      await rm(empty, { recursive: true, force: true });
    }
  });
});
