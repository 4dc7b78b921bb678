/**
 * The facts cache (`STATE_DIR/facts.json`): the probed facts that cannot change while the host is
 * up, keyed by its boot id and os-release (`factsCacheKey`). A file that is missing, unreadable,
 * not JSON, of another shape or of another key is no cache at all, never an error.
 */
import * as z from "zod";
import type { HostFs } from "../host/fs.js";

export const CACHE_VERSION = 1;

const cpuSchema = z.object({
  model: z.string(),
  vendor: z.string(),
  physicalCores: z.number(),
  speedGHz: z.number().optional(),
});
const diskSchema = z.object({ device: z.string(), mount: z.string(), type: z.string(), sizeBytes: z.number() });
const virtualizationSchema = z.object({ virtual: z.boolean(), type: z.string() });

export const probedSchema = z.object({
  cpu: cpuSchema.optional(),
  disks: z.array(diskSchema).optional(),
  virtualization: virtualizationSchema.optional(),
});

const cacheSchema = z.object({
  v: z.literal(CACHE_VERSION),
  key: z.string(),
  writtenAt: z.string(),
  probed: probedSchema,
  /** Probes that failed or timed out, with why; tried again after `retryAt`. */
  failed: z.record(z.string(), z.string()),
  retryAt: z.string().optional(),
});

export type Probed = z.infer<typeof probedSchema>;
export type FactsCache = z.infer<typeof cacheSchema>;

/** The cache in `file` when it is valid and made for `key`; null otherwise (never throws). */
export function readFactsCache(fs: HostFs, file: string, key: string): FactsCache | null {
  try {
    const text = fs.readTextIfExists(file);
    if (text === null) return null;
    const parsed = cacheSchema.safeParse(JSON.parse(text));
    if (!parsed.success || parsed.data.key !== key) return null;
    return parsed.data;
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
