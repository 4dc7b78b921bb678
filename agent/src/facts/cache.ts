/**
 * The facts cache (`STATE_DIR/facts.json`): the probed facts that cannot change while the host is
 * up, keyed by its boot id and os-release (`factsCacheKey`). A file that is missing, unreadable,
 * not JSON, of another shape or of another key is no cache at all, never an error.
 */
import type { HostFs } from "../host/fs.js";
import { isObject } from "../yaml/fields.js";

export const CACHE_VERSION = 1;

export interface Probed {
  cpu?: { model: string; vendor: string; physicalCores: number; speedGHz?: number };
  disks?: { device: string; mount: string; type: string; sizeBytes: number }[];
  virtualization?: { virtual: boolean; type: string };
}

export interface FactsCache {
  v: typeof CACHE_VERSION;
  key: string;
  writtenAt: string;
  probed: Probed;
  /** Probes that failed or timed out, with why; tried again after `retryAt`. */
  failed: Record<string, string>;
  retryAt?: string;
}

/** The cache in `file` when it is valid and made for `key`; null otherwise (never throws). */
export function readFactsCache(fs: HostFs, file: string, key: string): FactsCache | null {
  try {
    const text = fs.readTextIfExists(file);
    if (text === null) return null;
    const cache = asFactsCache(JSON.parse(text));
    return cache?.key === key ? cache : null;
  } catch {
    return null;
  }
}

/**
 * Writes the cache atomically (temp file, fsync, rename), creating its directory if needed.
 * Returns false when it cannot (a directory this user may not write): facts are then probed on
 * every run, which is slower but not wrong.
 */
export function writeFactsCache(fs: HostFs, file: string, cache: FactsCache): boolean {
  try {
    fs.ensureParent(file);
    fs.writeFileAtomic(file, Buffer.from(`${JSON.stringify(cache, null, 2)}\n`), { mode: 0o644 });
    return true;
  } catch {
    return false;
  }
}

/**
 * The cache held in `value`, with only the fields it knows (as they were written), or null for
 * any other shape. Checked by hand, not with a schema library: every run reads this file, and
 * zod's first use in a process costs about 0.8 MB of a small run's peak memory.
 */
function asFactsCache(value: unknown): FactsCache | null {
  if (!isObject(value) || value.v !== CACHE_VERSION) return null;
  const { key, writtenAt, retryAt, failed, probed } = value;
  if (typeof key !== "string" || typeof writtenAt !== "string") return null;
  if (retryAt !== undefined && typeof retryAt !== "string") return null;
  if (!isObject(failed) || !Object.values(failed).every((why) => typeof why === "string")) return null;
  if (!isObject(probed)) return null;
  const out: Probed = {};
  const { cpu, disks, virtualization } = probed;
  if (cpu !== undefined) {
    if (!isObject(cpu) || !strings(cpu, "model", "vendor") || typeof cpu.physicalCores !== "number") return null;
    if (cpu.speedGHz !== undefined && typeof cpu.speedGHz !== "number") return null;
    out.cpu = {
      model: cpu.model as string,
      vendor: cpu.vendor as string,
      physicalCores: cpu.physicalCores,
      ...(cpu.speedGHz !== undefined ? { speedGHz: cpu.speedGHz } : {}),
    };
  }
  if (disks !== undefined) {
    if (!Array.isArray(disks)) return null;
    out.disks = [];
    for (const disk of disks) {
      if (!isObject(disk) || !strings(disk, "device", "mount", "type") || typeof disk.sizeBytes !== "number")
        return null;
      out.disks.push({
        device: disk.device as string,
        mount: disk.mount as string,
        type: disk.type as string,
        sizeBytes: disk.sizeBytes,
      });
    }
  }
  if (virtualization !== undefined) {
    if (!isObject(virtualization) || typeof virtualization.virtual !== "boolean") return null;
    if (typeof virtualization.type !== "string") return null;
    out.virtualization = { virtual: virtualization.virtual, type: virtualization.type };
  }
  return {
    v: CACHE_VERSION,
    key,
    writtenAt,
    probed: out,
    failed: { ...(failed as Record<string, string>) },
    ...(retryAt !== undefined ? { retryAt } : {}),
  };
}

function strings(record: Record<string, unknown>, ...keys: string[]): boolean {
  return keys.every((k) => typeof record[k] === "string");
}
