/**
 * The full facts collector. Cheap facts come from os-release and node:os every time (host name,
 * OS, kernel, cores, memory, network addresses). The facts that need commands (CPU details,
 * disks, virtualization) come from the `systeminformation` package, each probe time-boxed, and
 * are cached until the next boot or os-release change: with a valid cache the package is not
 * even loaded, so a no-op run pays nothing for it.
 */
import * as os from "node:os";
import type { Clock } from "../host/clock.js";
import { HostFs } from "../host/fs.js";
import { CACHE_VERSION, type FactsCache, type Probed, readFactsCache, writeFactsCache } from "./cache.js";
import { baseFacts, readOsRelease } from "./collect.js";
import {
  cpuFrom,
  type DiskFact,
  defaultRouteInterface,
  factsCacheKey,
  fqdnFrom,
  interfacesFrom,
  type NetworkFact,
  pickDisks,
  pickPrimaryIPv4,
  type VirtualizationFact,
  virtualizationFrom,
} from "./derive.js";

export interface FactsOptions {
  /** The managed host's root (its /etc/os-release is read through it). */
  fs: HostFs;
  clock: Clock;
  /** A JSON cache file path on this machine, e.g. /var/lib/driftless/facts.json; undefined: no cache. */
  cacheFile?: string;
  /** False: read the cache but never write it (`driftless plan` writes nothing). Default true. */
  writeCache?: boolean;
  /** HostFs("/") used to read/write the cache file (the default). */
  cacheFs?: HostFs;
  /**
   * The root of the machine the agent runs on, for /proc (boot id, default route, CPU clock),
   * /etc/hosts (fqdn) and container markers; default HostFs("/"). Under `--root`, `fs` is the
   * managed tree and this is still the running machine.
   */
  machineFs?: HostFs;
  /** Per-probe time limit; a probe that takes longer is left out (and named in facts.incomplete). Default 2000 ms. */
  timeoutMs?: number;
  /** Ignore the cache (probe again, then rewrite it). */
  refresh?: boolean;
}

/** The facts `gatherFacts` returns; a plain JSON object (assignable to `Facts`). */
export type HostFacts = {
  hostname: string;
  fqdn?: string;
  os: {
    family: string;
    distro: string;
    name: string;
    release: string;
    codename: string;
    arch: string;
    machine: string;
  };
  kernel: { release: string; version: string };
  cpu: { model: string; vendor?: string; cores: number; physicalCores?: number; speedGHz?: number };
  memory: { totalBytes: number };
  disks?: DiskFact[];
  network: NetworkFact;
  virtualization?: VirtualizationFact;
  bootId?: string;
  /** Probes that timed out or failed (their facts are absent or partial); absent when none. */
  incomplete?: string[];
};

export const PROBES = ["cpu", "disks", "virtualization"] as const;
export type ProbeName = (typeof PROBES)[number];

export const DEFAULT_PROBE_TIMEOUT_MS = 2000;
/** A probe that failed is tried again on the first run this long after (not on every run). */
export const RETRY_FAILED_AFTER_MS = 15 * 60 * 1000;

export async function gatherFacts(options: FactsOptions): Promise<HostFacts> {
  const machineFs = options.machineFs ?? new HostFs("/");
  const cacheFs = options.cacheFs ?? new HostFs("/");
  const osRelease = readOsRelease(options.fs);
  const base = baseFacts(osRelease);
  const bootId = readQuiet(machineFs, "/proc/sys/kernel/random/boot_id").trim() || undefined;
  // Without a boot id nothing tells a stale cache from a valid one: no cache then.
  const key = bootId ? factsCacheKey(bootId, osRelease) : undefined;
  const cacheFile = key ? options.cacheFile : undefined;
  const now = options.clock.now();

  const cached = cacheFile && key && !options.refresh ? readFactsCache(cacheFs, cacheFile, key) : null;
  const due = cached ? dueProbes(cached, now) : [...PROBES];
  let cache: FactsCache;
  if (cached && due.length === 0) {
    cache = cached;
  } else {
    const result = await runProbes(due, {
      clock: options.clock,
      machineFs,
      timeoutMs: options.timeoutMs ?? DEFAULT_PROBE_TIMEOUT_MS,
    });
    const failed = { ...cached?.failed };
    for (const name of due) delete failed[name];
    Object.assign(failed, result.failed);
    cache = {
      v: CACHE_VERSION,
      key: key ?? "",
      writtenAt: now.toISOString(),
      probed: { ...cached?.probed, ...result.probed },
      failed,
      ...(Object.keys(failed).length > 0
        ? { retryAt: new Date(now.getTime() + RETRY_FAILED_AFTER_MS).toISOString() }
        : {}),
    };
    if (cacheFile && options.writeCache !== false) writeFactsCache(cacheFs, cacheFile, cache);
  }

  const incomplete = Object.keys(cache.failed);
  if (!bootId) incomplete.push("bootId");
  const probed = cache.probed;
  const interfaces = interfacesFrom(os.networkInterfaces());
  const primaryIPv4 = pickPrimaryIPv4(interfaces, defaultRouteInterface(readQuiet(machineFs, "/proc/net/route")));
  const fqdn = fqdnFrom(base.hostname, readQuiet(machineFs, "/etc/hosts"));
  return {
    hostname: base.hostname,
    ...(fqdn ? { fqdn } : {}),
    os: base.os,
    kernel: base.kernel,
    cpu: probed.cpu
      ? {
          model: probed.cpu.model,
          vendor: probed.cpu.vendor,
          cores: base.cpu.cores,
          physicalCores: probed.cpu.physicalCores,
          ...(probed.cpu.speedGHz !== undefined ? { speedGHz: probed.cpu.speedGHz } : {}),
        }
      : base.cpu,
    memory: base.memory,
    ...(probed.disks ? { disks: probed.disks } : {}),
    network: { interfaces, ...(primaryIPv4 ? { primaryIPv4 } : {}) },
    ...(probed.virtualization ? { virtualization: probed.virtualization } : {}),
    ...(bootId ? { bootId } : {}),
    ...(incomplete.length > 0 ? { incomplete: incomplete.sort() } : {}),
  };
}

/** The probes a valid cache lacks: those that failed, once their retry time has come. */
function dueProbes(cache: FactsCache, now: Date): ProbeName[] {
  const failed = PROBES.filter((name) => name in cache.failed || cache.probed[name] === undefined);
  if (failed.length === 0) return [];
  const retryAt = cache.retryAt ? Date.parse(cache.retryAt) : Number.NaN;
  return Number.isNaN(retryAt) || now.getTime() >= retryAt ? failed : [];
}

type SystemInformation = typeof import("systeminformation");

interface ProbeContext {
  clock: Clock;
  machineFs: HostFs;
  timeoutMs: number;
}

/**
 * Runs the named probes at once, each limited to `timeoutMs`. systeminformation is loaded here
 * and only here. A probe that fails or runs out of time is named in `failed` with why; what it
 * started (a command stuck on a dead mount) is left to finish on its own.
 */
export async function runProbes(
  names: readonly ProbeName[],
  ctx: ProbeContext,
): Promise<{ probed: Probed; failed: Record<string, string> }> {
  const probed: Probed = {};
  const failed: Record<string, string> = {};
  let si: SystemInformation;
  try {
    // A CommonJS module: Node's loader offers its functions as named exports too, the bundle's
    // chunk (dist/) only as the default export.
    const loaded: SystemInformation & { default?: SystemInformation } = await import("systeminformation");
    si = loaded.default ?? loaded;
  } catch (error) {
    for (const name of names) failed[name] = `cannot load systeminformation: ${(error as Error).message}`;
    return { probed, failed };
  }
  const probes: { [K in ProbeName]: () => Promise<NonNullable<Probed[K]>> } = {
    cpu: async () => cpuFrom(await si.cpu(), os.cpus()[0]?.model, readQuiet(ctx.machineFs, "/proc/cpuinfo")),
    disks: async () => pickDisks(await si.blockDevices(), readQuiet(ctx.machineFs, "/proc/self/mounts")),
    virtualization: async () => virtualizationFrom(await si.system(), containerMarker(ctx.machineFs)),
  };
  await Promise.all(
    names.map(async (name) => {
      try {
        const value = await timeBox<unknown>(ctx.clock, ctx.timeoutMs, probes[name]());
        (probed as Record<string, unknown>)[name] = value;
      } catch (error) {
        failed[name] = (error as Error).message ?? String(error);
      }
    }),
  );
  return { probed, failed };
}

/** `work`, or a rejection once `ms` have passed on `clock`; the timer is cleared either way. */
export async function timeBox<T>(clock: Clock, ms: number, work: Promise<T>): Promise<T> {
  const stop = new AbortController();
  const timeout = clock.sleep(ms, stop.signal).then(() => {
    throw new Error(`timed out after ${ms} ms`);
  });
  try {
    return await Promise.race([work, timeout]);
  } finally {
    stop.abort();
    timeout.catch(() => {}); // the aborted sleep rejects; nothing waits for it any more
  }
}

/**
 * What says this runs in a container: /run/systemd/container (written by systemd-nspawn, LXC
 * and systemd inside containers), /run/.containerenv (Podman), /.dockerenv (Docker), or
 * `container=` in PID 1's environment (readable by root only). Null when none does.
 */
function containerMarker(fs: HostFs): string | null {
  const systemd = readQuiet(fs, "/run/systemd/container").trim();
  if (systemd) return systemd;
  if (existsQuiet(fs, "/run/.containerenv")) return "podman";
  if (existsQuiet(fs, "/.dockerenv")) return "docker";
  const environ = readQuiet(fs, "/proc/1/environ");
  return /(?:^|\0)container=([^\0]+)/.exec(environ)?.[1] ?? null;
}

/** A file's text, "" when it is missing or cannot be read (facts are best effort). */
function readQuiet(fs: HostFs, hostPath: string): string {
  try {
    return fs.readTextIfExists(hostPath) ?? "";
  } catch {
    return "";
  }
}

function existsQuiet(fs: HostFs, hostPath: string): boolean {
  try {
    return fs.lstat(hostPath) !== null;
  } catch {
    return false;
  }
}
