/**
 * Pure helpers of the full facts collector (`gather.ts`): they turn what the probes and node:os
 * return, and the text of a few /proc and /etc files, into facts. No I/O here.
 */
import { createHash } from "node:crypto";

export interface DiskFact {
  /** The mounted device, as /proc/mounts names it (`/dev/vda1`, `/dev/mapper/vg-root`). */
  device: string;
  mount: string;
  /** The filesystem type (`ext4`, `xfs`, `vfat`...), "" when neither lsblk nor /proc/mounts says. */
  type: string;
  /** Size of the block device that holds the filesystem. */
  sizeBytes: number;
}

export interface InterfaceFact {
  name: string;
  mac: string;
  ipv4: string[];
  ipv6: string[];
}

export interface NetworkFact {
  /** Interfaces with an address, loopback left out, in the kernel's order. */
  interfaces: InterfaceFact[];
  /** The first IPv4 address of the default route's interface (absent when the host has none). */
  primaryIPv4?: string;
}

export interface CpuFact {
  model: string;
  vendor: string;
  physicalCores: number;
  speedGHz?: number;
}

export interface VirtualizationFact {
  virtual: boolean;
  /** `none`, `container`, or the hypervisor in lower case (`kvm`, `vmware`, `xen`...). */
  type: string;
}

/** What `systeminformation.blockDevices()` says of one device (lsblk), the fields used here. */
export interface BlockDevice {
  name: string;
  type: string;
  fsType: string;
  mount: string;
  size: number;
  device?: string;
}

/**
 * Filesystem types that are not disks of the host: read-only images (snaps, live media) and
 * swap. Memory and virtual filesystems (tmpfs, overlay, proc...) never reach this filter, because
 * only mounted block devices do.
 */
const IMAGE_FS_TYPES = new Set(["squashfs", "iso9660", "udf", "erofs", "cramfs", "swap"]);

/**
 * The host's disks: block devices (lsblk) with a mounted filesystem. Left out: devices without a
 * mount point, swap (`[SWAP]`), read-only images (squashfs snaps, iso9660/udf media, erofs,
 * cramfs) and, since lsblk only knows block devices, everything without one (tmpfs, overlay,
 * proc, cgroup, NFS, CIFS, FUSE). The type and device name come from /proc/mounts when it has
 * the mount point.
 */
export function pickDisks(devices: readonly BlockDevice[], procMounts: string): DiskFact[] {
  const mounts = parseProcMounts(procMounts);
  const seen = new Set<string>();
  const disks: DiskFact[] = [];
  for (const dev of devices) {
    if (!dev.mount.startsWith("/") || seen.has(dev.mount)) continue;
    const mounted = mounts.get(dev.mount);
    const type = dev.fsType || mounted?.type || "";
    if (IMAGE_FS_TYPES.has(type)) continue;
    seen.add(dev.mount);
    const device = mounted?.source.startsWith("/dev/") ? mounted.source : (dev.device ?? `/dev/${dev.name}`);
    disks.push({ device, mount: dev.mount, type, sizeBytes: Math.max(0, Math.trunc(dev.size) || 0) });
  }
  return disks.sort((a, b) => a.mount.localeCompare(b.mount));
}

/** /proc/mounts: mount point -> { source, type }; the last mount on a point wins (it is the visible one). */
export function parseProcMounts(text: string): Map<string, { source: string; type: string }> {
  const out = new Map<string, { source: string; type: string }>();
  for (const line of text.split("\n")) {
    const [source, mount, type] = line.split(" ");
    if (!source || !mount || !type) continue;
    out.set(unescapeMountField(mount), { source: unescapeMountField(source), type });
  }
  return out;
}

/** /proc/mounts escapes space, tab, newline and backslash as octal (`\040`). */
function unescapeMountField(field: string): string {
  return field.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(Number.parseInt(octal, 8)));
}

/** The address entries of `os.networkInterfaces()`, the fields used here. */
export interface AddressInfo {
  address: string;
  family: string | number;
  mac: string;
  internal: boolean;
}

/** `os.networkInterfaces()` -> interfaces, loopback (internal) ones left out. */
export function interfacesFrom(raw: Record<string, readonly AddressInfo[] | undefined>): InterfaceFact[] {
  const out: InterfaceFact[] = [];
  for (const [name, addresses] of Object.entries(raw)) {
    if (!addresses || addresses.length === 0 || addresses.every((a) => a.internal)) continue;
    const external = addresses.filter((a) => !a.internal);
    out.push({
      name,
      mac: external[0]?.mac ?? "",
      ipv4: external.filter((a) => a.family === "IPv4" || a.family === 4).map((a) => a.address),
      ipv6: external.filter((a) => a.family === "IPv6" || a.family === 6).map((a) => a.address),
    });
  }
  return out;
}

/**
 * The interface of the IPv4 default route in /proc/net/route (destination and mask 0, route up),
 * the lowest metric first; null when there is none.
 */
export function defaultRouteInterface(procNetRoute: string): string | null {
  let best: { iface: string; metric: number } | null = null;
  for (const line of procNetRoute.split("\n").slice(1)) {
    const fields = line.trim().split(/\s+/);
    if (fields.length < 8) continue;
    const [iface, destination, , flags, , , metric, mask] = fields;
    if (destination !== "00000000" || mask !== "00000000") continue;
    if ((Number.parseInt(flags as string, 16) & 1) === 0) continue; // RTF_UP
    const m = Number.parseInt(metric as string, 10) || 0;
    if (!best || m < best.metric) best = { iface: iface as string, metric: m };
  }
  return best?.iface ?? null;
}

/**
 * The host's main IPv4 address: the first one of the default route's interface; without a default
 * route, the first address that is not link-local (169.254.0.0/16), then any; undefined when
 * the host has no IPv4 address outside loopback.
 */
export function pickPrimaryIPv4(interfaces: readonly InterfaceFact[], defaultIface: string | null): string | undefined {
  const viaDefault = interfaces.find((i) => i.name === defaultIface)?.ipv4[0];
  if (viaDefault) return viaDefault;
  const all = interfaces.flatMap((i) => i.ipv4);
  return all.find((a) => !a.startsWith("169.254.")) ?? all[0];
}

/**
 * The fully qualified name, as `hostname -f` finds it through /etc/hosts without asking DNS:
 * the hostname itself when it has a dot, else the first /etc/hosts name that is the hostname
 * followed by a domain (`127.0.1.1 edge-1.example.com edge-1`). Undefined when unknown.
 */
export function fqdnFrom(hostname: string, etcHosts: string): string | undefined {
  if (hostname.includes(".")) return hostname;
  const prefix = `${hostname.toLowerCase()}.`;
  for (const line of etcHosts.split("\n")) {
    const names = (line.split("#")[0] ?? "").trim().split(/\s+/).slice(1);
    const fqdn = names.find((n) => n.toLowerCase().startsWith(prefix) && n.length > prefix.length);
    if (fqdn) return fqdn;
  }
  return undefined;
}

/** What `systeminformation.cpu()` says, the fields used here. */
export interface CpuInfo {
  manufacturer: string;
  brand: string;
  vendor: string;
  physicalCores: number;
  speed: number;
  speedMax: number;
}

/**
 * CPU facts. The model is the kernel's (`os.cpus()`, /proc/cpuinfo "model name", the meaning
 * `baseFacts` gives it) when it has one, else systeminformation's manufacturer and brand (ARM
 * boards have no model name in /proc/cpuinfo). The speed is the maximum clock, else the nominal
 * one, else the "cpu MHz" of /proc/cpuinfo (virtual machines often expose only that); absent
 * when none is known.
 */
export function cpuFrom(info: CpuInfo, kernelModel: string | undefined, procCpuinfo: string): CpuFact {
  const siModel = `${info.manufacturer} ${info.brand}`.trim();
  const model = kernelModel && kernelModel !== "unknown" ? kernelModel : siModel || "unknown";
  let ghz = info.speedMax > 0 ? info.speedMax : info.speed;
  if (!(ghz > 0)) {
    const mhz = /^cpu MHz\s*:\s*([\d.]+)/m.exec(procCpuinfo)?.[1];
    ghz = mhz ? Number(mhz) / 1000 : 0;
  }
  return {
    model,
    vendor: info.manufacturer || info.vendor || "unknown",
    physicalCores: info.physicalCores,
    ...(ghz > 0 ? { speedGHz: Math.round(ghz * 100) / 100 } : {}),
  };
}

/** What `systeminformation.system()` says, the fields used here. */
export interface SystemInfo {
  manufacturer: string;
  model: string;
  virtual: boolean;
  virtualHost?: string;
}

/**
 * Virtualization, innermost first as systemd-detect-virt does: a container (whatever it runs
 * on) is `container`; else a virtual machine is its hypervisor (`kvm`, `vmware`...; `vm` when
 * unnamed); else `none`. `containerMarker` is what the container files say (see gather.ts), or null.
 */
export function virtualizationFrom(system: SystemInfo, containerMarker: string | null): VirtualizationFact {
  if (containerMarker !== null || system.model === "Docker Container") return { virtual: true, type: "container" };
  if (!system.virtual) return { virtual: false, type: "none" };
  const named = system.virtualHost || (system.model === "WSL" ? "wsl" : "");
  return { virtual: true, type: named ? named.toLowerCase() : "vm" };
}

/**
 * The cache key of the facts that do not change while the host is up: its boot id and its
 * os-release (a reboot, or an upgrade in place, invalidates the cache).
 */
export function factsCacheKey(bootId: string, osRelease: string): string {
  return `${bootId}/${createHash("sha256").update(osRelease).digest("hex").slice(0, 16)}`;
}
