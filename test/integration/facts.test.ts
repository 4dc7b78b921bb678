/**
 * The full facts collector on this machine: real probes (systeminformation's commands), a real
 * cache file, and the built CLI.
 */
import { spawnSync } from "node:child_process";
import {
  chmodSync,
  cpSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync,
} from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { type Facts, readOsRelease } from "../../agent/src/facts/collect.js";
import { factsCacheKey } from "../../agent/src/facts/derive.js";
import { type FactsOptions, gatherFacts, type HostFacts, RETRY_FAILED_AFTER_MS } from "../../agent/src/facts/gather.js";
import { type Clock, systemClock } from "../../agent/src/host/clock.js";
import { HostFs } from "../../agent/src/host/fs.js";
import { driftless, handOver } from "../support/cli.js";
import { cleanupTemp, tempDir, writeTree } from "../support/repo.js";

afterAll(cleanupTemp);

const BOOT_ID = readFileSync("/proc/sys/kernel/random/boot_id", "utf8").trim();
// Generous: the probes take tens of milliseconds, but the machine may be busy booting test hosts.
const TIMEOUT_MS = 20_000;
const PROBED = ["cpu", "disks", "virtualization"];

function gather(options: Partial<FactsOptions> = {}): Promise<HostFacts> {
  return gatherFacts({ fs: new HostFs("/"), clock: systemClock, timeoutMs: TIMEOUT_MS, ...options });
}

/** The cache file's JSON, the parts the tests look at or plant. */
interface CacheJson {
  key: string;
  probed: { cpu: { vendor: string }; disks?: unknown; virtualization?: unknown };
  failed: Record<string, string>;
  retryAt?: string;
}

function readCache(file: string): CacheJson {
  return JSON.parse(readFileSync(file, "utf8"));
}

/** Changes the cache file as a test fixture: `edit` gets the parsed JSON. */
function plant(file: string, edit: (cache: CacheJson) => void): void {
  const cache = readCache(file);
  edit(cache);
  writeFileSync(file, JSON.stringify(cache));
}

function tool(file: string, args: string[]): string | null {
  const result = spawnSync(file, args, { encoding: "utf8" });
  return result.error ? null : result.stdout.trim();
}

describe("gatherFacts on this machine", () => {
  it("collects every fact, with values that agree with the system's own tools", async () => {
    const facts = await gather();

    expect(facts.incomplete).toBeUndefined();
    const asRunFacts: Facts = facts; // what converge() and fleet matching take
    expect(JSON.parse(JSON.stringify(asRunFacts))).toEqual(facts); // plain JSON
    expect(facts.hostname).toBe(os.hostname());
    if (facts.fqdn !== undefined) expect(facts.fqdn.startsWith(os.hostname())).toBe(true);

    const dpkgArch = tool("dpkg", ["--print-architecture"]);
    if (dpkgArch !== null) expect(facts.os.arch).toBe(dpkgArch);
    expect(facts.os.family).toBe("linux");
    expect(facts.os.machine).toBe(os.machine());
    expect(facts.os.distro).toMatch(/^[a-z0-9._-]+$/);
    expect(facts.kernel).toEqual({ release: os.release(), version: os.version() });

    expect(facts.cpu.cores).toBe(os.availableParallelism());
    expect(facts.cpu.model.length).toBeGreaterThan(0);
    expect(typeof facts.cpu.vendor).toBe("string");
    expect(facts.cpu.physicalCores).toBeGreaterThanOrEqual(1);
    if (facts.cpu.speedGHz !== undefined) expect(facts.cpu.speedGHz).toBeGreaterThan(0.05);
    if (facts.cpu.speedGHz !== undefined) expect(facts.cpu.speedGHz).toBeLessThan(10);
    expect(facts.memory.totalBytes).toBe(os.totalmem());

    expect(Array.isArray(facts.disks)).toBe(true);
    for (const disk of facts.disks ?? []) {
      expect(disk.device).toMatch(/^\/dev\//);
      expect(disk.mount).toMatch(/^\//);
      expect(["tmpfs", "devtmpfs", "overlay", "squashfs", "proc", "sysfs", "nfs", "nfs4"]).not.toContain(disk.type);
      expect(disk.sizeBytes).toBeGreaterThan(0);
    }
    // Every disk is a filesystem that is mounted right now.
    const mounted = readFileSync("/proc/self/mounts", "utf8");
    for (const disk of facts.disks ?? []) expect(mounted).toContain(` ${disk.mount.replace(/ /g, "\\040")} `);

    const external = Object.entries(os.networkInterfaces()).filter(([, a]) => a?.some((x) => !x.internal));
    expect(facts.network.interfaces.map((i) => i.name)).toEqual(external.map(([name]) => name));
    expect(facts.network.interfaces.map((i) => i.name)).not.toContain("lo");
    for (const iface of facts.network.interfaces) {
      expect(iface.mac).toMatch(/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/);
      for (const a of iface.ipv4) expect(a).toMatch(/^\d+\.\d+\.\d+\.\d+$/);
      for (const a of iface.ipv6) expect(a).toContain(":");
    }
    const allIPv4 = facts.network.interfaces.flatMap((i) => i.ipv4);
    if (allIPv4.length > 0) expect(allIPv4).toContain(facts.network.primaryIPv4);
    else expect(facts.network.primaryIPv4).toBeUndefined();
    // The kernel's own answer, where `ip` is installed: the source address towards the internet.
    const route = tool("ip", ["-4", "route", "get", "192.0.2.123"]);
    const src = route ? /\bsrc (\S+)/.exec(route)?.[1] : undefined;
    if (src && allIPv4.includes(src)) expect(facts.network.primaryIPv4).toBe(src);

    expect(typeof facts.virtualization?.virtual).toBe("boolean");
    expect(facts.virtualization?.type === "none").toBe(facts.virtualization?.virtual === false);
    // systemd's detector, where it is installed, agrees on container / none.
    const detected = tool("systemd-detect-virt", []);
    if (detected === "none") expect(facts.virtualization?.type).toBe("none");
    if (detected !== null && spawnSync("systemd-detect-virt", ["--container", "--quiet"]).status === 0) {
      expect(facts.virtualization?.type).toBe("container");
    }

    expect(facts.bootId).toBe(BOOT_ID);
  });

  it("writes the cache, then answers from it without probing, until the boot id changes", async () => {
    const dir = tempDir();
    const cacheFile = path.join(dir, "state/facts.json"); // its directory is created
    const first = await gather({ cacheFile });
    const osRelease = readOsRelease(new HostFs("/"));
    const cache = readCache(cacheFile);
    expect(cache.key).toBe(factsCacheKey(BOOT_ID, osRelease));
    expect(cache.probed.cpu.vendor).toBe(first.cpu.vendor);
    expect(cache.failed).toEqual({});
    expect(statSync(cacheFile).mode & 0o777).toBe(0o644);

    // Values only the cache has show that it was used instead of the probes.
    plant(cacheFile, (c) => {
      c.probed.cpu.vendor = "PlantedVendor";
      c.probed.disks = [{ device: "/dev/planted", mount: "/planted", type: "ext4", sizeBytes: 1 }];
      c.probed.virtualization = { virtual: true, type: "planted" };
    });
    const cached = await gather({ cacheFile });
    expect(cached.cpu.vendor).toBe("PlantedVendor");
    expect(cached.disks).toEqual([{ device: "/dev/planted", mount: "/planted", type: "ext4", sizeBytes: 1 }]);
    expect(cached.virtualization?.type).toBe("planted");
    // Volatile facts are still read fresh.
    expect(cached.hostname).toBe(os.hostname());
    expect(cached.cpu.cores).toBe(os.availableParallelism());
    expect(cached.bootId).toBe(BOOT_ID);

    // --refresh ignores it and rewrites it.
    const refreshed = await gather({ cacheFile, refresh: true });
    expect(refreshed.cpu.vendor).toBe(first.cpu.vendor);
    expect(readCache(cacheFile).probed.cpu.vendor).toBe(first.cpu.vendor);

    // A cache made for another boot is not used, and is replaced.
    plant(cacheFile, (c) => {
      c.key = factsCacheKey("5e0c7a1e-0000-4000-8000-000000000000", osRelease);
      c.probed.cpu.vendor = "PlantedVendor";
    });
    const otherBoot = await gather({ cacheFile });
    expect(otherBoot.cpu.vendor).toBe(first.cpu.vendor);
    expect(readCache(cacheFile).key).toBe(factsCacheKey(BOOT_ID, osRelease));
  });

  it("reads the boot id of the machine root it is given, and a new boot id invalidates the cache", async () => {
    const machine = tempDir();
    writeTree(machine, { "proc/sys/kernel/random/boot_id": "11111111-aaaa-4bbb-8ccc-000000000001\n" });
    const cacheFile = path.join(machine, "facts.json");
    const machineFs = new HostFs(machine);
    const first = await gather({ machineFs, cacheFile });
    expect(first.bootId).toBe("11111111-aaaa-4bbb-8ccc-000000000001");
    plant(cacheFile, (c) => {
      c.probed.cpu.vendor = "PlantedVendor";
    });
    expect((await gather({ machineFs, cacheFile })).cpu.vendor).toBe("PlantedVendor");

    writeTree(machine, { "proc/sys/kernel/random/boot_id": "22222222-aaaa-4bbb-8ccc-000000000002\n" });
    const rebooted = await gather({ machineFs, cacheFile });
    expect(rebooted.bootId).toBe("22222222-aaaa-4bbb-8ccc-000000000002");
    expect(rebooted.cpu.vendor).toBe(first.cpu.vendor);

    // Without a boot id nothing tells a stale cache from a good one: no cache, and it says so.
    rmSync(path.join(machine, "proc"), { recursive: true });
    const noBoot = await gather({ machineFs, cacheFile });
    expect(noBoot.bootId).toBeUndefined();
    expect(noBoot.incomplete).toEqual(["bootId"]);
    expect(noBoot.cpu.vendor).toBe(first.cpu.vendor);
  });

  it("reads os-release from the managed root, and an os-release change invalidates the cache", async () => {
    const root = tempDir();
    writeTree(root, { "etc/os-release": 'ID=testos\nVERSION_ID="1.0"\nPRETTY_NAME="Test OS 1"\n' });
    const fs = new HostFs(root);
    const cacheFile = path.join(tempDir(), "facts.json");
    const first = await gather({ fs, cacheFile });
    expect(first.os).toMatchObject({ distro: "testos", release: "1.0", name: "Test OS 1", codename: "" });
    plant(cacheFile, (c) => {
      c.probed.cpu.vendor = "PlantedVendor";
    });
    expect((await gather({ fs, cacheFile })).cpu.vendor).toBe("PlantedVendor");

    writeTree(root, { "etc/os-release": 'ID=testos\nVERSION_ID="2.0"\n' });
    const upgraded = await gather({ fs, cacheFile });
    expect(upgraded.os.release).toBe("2.0");
    expect(upgraded.cpu.vendor).toBe(first.cpu.vendor);
    expect(readCache(cacheFile).key).toBe(factsCacheKey(BOOT_ID, 'ID=testos\nVERSION_ID="2.0"\n'));
  });

  it("ignores a corrupt, foreign or unreadable cache and rewrites it", async () => {
    const dir = tempDir();
    const cacheFile = path.join(dir, "facts.json");
    const reference = await gather();
    // Of the right key but of another shape: a field of the wrong type, a disk list that is not one.
    const key = factsCacheKey(BOOT_ID, readOsRelease(new HostFs("/")));
    const shaped = (probed: unknown) => JSON.stringify({ v: 1, key, writtenAt: "x", failed: {}, probed });
    const wrongShapes = [shaped({ cpu: { model: 1, vendor: "v", physicalCores: 2 } }), shaped({ disks: {} })];
    for (const junk of ["{ not json", "", "null", '{"v":1}', '{"v":99,"key":"x"}', "[1,2]", ...wrongShapes]) {
      writeFileSync(cacheFile, junk);
      const facts = await gather({ cacheFile });
      expect(facts.incomplete).toBeUndefined();
      expect(facts.cpu).toEqual(reference.cpu);
      const rewritten = readCache(cacheFile);
      expect(rewritten.key).toBe(factsCacheKey(BOOT_ID, readOsRelease(new HostFs("/"))));
      expect(rewritten.probed.cpu.vendor).toBe(reference.cpu.vendor);
    }
    // A directory where the file should be: cannot be read nor replaced; facts are still given.
    rmSync(cacheFile);
    mkdirSync(path.join(cacheFile, "sub"), { recursive: true });
    const facts = await gather({ cacheFile });
    expect(facts.cpu).toEqual(reference.cpu);
  });

  it("leaves out the probes that run out of time, names them, and tries them again later", async () => {
    const cacheFile = path.join(tempDir(), "facts.json");
    const started = performance.now();
    // Every probe runs a command, which cannot finish before a 0 ms timer fires.
    const hurried = await gather({ cacheFile, timeoutMs: 0 });
    expect(performance.now() - started).toBeLessThan(5000);
    expect(hurried.incomplete).toEqual(PROBED);
    expect(hurried).not.toHaveProperty("disks");
    expect(hurried).not.toHaveProperty("virtualization");
    // The cheap facts are all there.
    expect(hurried.cpu).toEqual({ model: expect.any(String), cores: os.availableParallelism() });
    expect(hurried.memory.totalBytes).toBe(os.totalmem());
    expect(hurried.bootId).toBe(BOOT_ID);
    const cache = readCache(cacheFile);
    expect(Object.keys(cache.failed).sort()).toEqual(PROBED);
    expect(cache.failed.cpu).toBe("timed out after 0 ms");

    // Not on every run: within the retry delay the cache's answer stands...
    const soon = await gather({ cacheFile });
    expect(soon.incomplete).toEqual(PROBED);

    // ...after it, the failed probes run again.
    const later: Clock = { ...systemClock, now: () => new Date(Date.now() + RETRY_FAILED_AFTER_MS + 1000) };
    const retried = await gather({ cacheFile, clock: later });
    expect(retried.incomplete).toBeUndefined();
    expect(retried.disks).toBeDefined();
    expect(readCache(cacheFile).failed).toEqual({});
    expect(readCache(cacheFile)).not.toHaveProperty("retryAt");
  });

  it("does not wait for a command that hangs: its probe is left out, the others are kept", async () => {
    // An lsblk that hangs, as one may on a sick disk; the probes find commands through PATH.
    const bin = tempDir();
    writeTree(bin, { lsblk: "#!/bin/sh\nexec sleep 10\n" });
    chmodSync(path.join(bin, "lsblk"), 0o755);
    const savedPath = process.env.PATH;
    process.env.PATH = `${bin}:${savedPath}`;
    try {
      const started = performance.now();
      const facts = await gather({ timeoutMs: 3000 });
      expect(performance.now() - started).toBeLessThan(8000); // lsblk would take 10 s
      expect(facts.incomplete).toEqual(["disks"]);
      expect(facts).not.toHaveProperty("disks");
      expect(facts.cpu.physicalCores).toBeGreaterThanOrEqual(1);
      expect(typeof facts.virtualization?.virtual).toBe("boolean");
    } finally {
      process.env.PATH = savedPath;
    }
  });
});

describe("driftless facts (the built CLI)", () => {
  it("prints the facts as JSON and as dotted keys, and caches them in --state", () => {
    const state = tempDir();
    handOver(state);
    const json = driftless(["facts", "--json", "--state", state]);
    expect(json.stderr).toBe("");
    expect(json.exitCode).toBe(0);
    const facts = JSON.parse(json.stdout) as HostFacts;
    const dpkgArch = tool("dpkg", ["--print-architecture"]);
    if (dpkgArch !== null) expect(facts.os.arch).toBe(dpkgArch);
    expect(facts.bootId).toBe(BOOT_ID);
    expect(facts.cpu.cores).toBe(os.availableParallelism());
    expect(facts.memory.totalBytes).toBe(os.totalmem());
    expect(facts.incomplete).toBeUndefined();
    expect(readCache(path.join(state, "facts.json")).key).toBe(factsCacheKey(BOOT_ID, readOsRelease(new HostFs("/"))));

    const text = driftless(["facts", "--state", state]);
    expect(text.exitCode).toBe(0);
    expect(text.stdout).toContain(`os.arch = "${facts.os.arch}"\n`);
    expect(text.stdout).toContain(`cpu.cores = ${os.availableParallelism()}\n`);
    expect(text.stdout).toContain(`bootId = "${BOOT_ID}"\n`);
    if (facts.disks?.[0]) expect(text.stdout).toContain(`disks.0.mount = "${facts.disks[0].mount}"\n`);
  });

  it("works without a cache where the default state directory is not writable", () => {
    const root = tempDir();
    writeTree(root, { "etc/os-release": "ID=imageos\n" });
    // As the unprivileged user (when the tests run as root) DIR/var/lib/driftless cannot be made.
    const result = driftless(["facts", "--json", "--root", root]);
    expect(result.exitCode).toBe(0);
    expect(JSON.parse(result.stdout).os.distro).toBe("imageos");
  });

  it("documents its options", () => {
    const help = driftless(["facts", "--help"]);
    expect(help.exitCode).toBe(0);
    for (const option of ["--root DIR", "--state DIR", "--refresh", "--json"]) expect(help.stdout).toContain(option);
  });

  it("does not load systeminformation at all when the cache is valid", () => {
    // A copy of the build without the chunk that holds systeminformation: loading it would fail.
    const app = tempDir("driftless-nosi-");
    cpSync(path.resolve("dist"), path.join(app, "dist"), { recursive: true });
    cpSync(path.resolve("bin"), path.join(app, "bin"), { recursive: true });
    cpSync(path.resolve("package.json"), path.join(app, "package.json"));
    symlinkSync(path.resolve("node_modules"), path.join(app, "node_modules"));
    const chunks = path.join(app, "dist/chunks");
    const siChunks = readdirSync(chunks).filter(
      (name) => name.endsWith(".mjs") && readFileSync(path.join(chunks, name), "utf8").includes("dmidecode -t system"),
    );
    expect(siChunks.length).toBe(1);
    for (const name of siChunks) rmSync(path.join(chunks, name));
    const run = (...args: string[]) =>
      spawnSync(process.execPath, [path.join(app, "bin/driftless.js"), "facts", "--json", ...args], {
        encoding: "utf8",
      });

    const state = tempDir();
    expect(driftless(["facts", "--json", "--state", state], { asRoot: true }).exitCode).toBe(0); // warms the cache
    const warm = run("--state", state);
    expect(warm.status).toBe(0);
    const facts = JSON.parse(warm.stdout) as HostFacts;
    expect(facts.incomplete).toBeUndefined();
    expect(facts.disks).toBeDefined();

    // The same copy without a cache cannot probe: proof that the warm run did not try.
    const cold = run("--state", tempDir());
    expect(cold.status).toBe(0);
    expect(JSON.parse(cold.stdout).incomplete).toEqual(PROBED);
    expect(existsSync(path.join(app, "dist/driftless.mjs"))).toBe(true);
  });
});
