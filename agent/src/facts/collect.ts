/**
 * Facts: what templates (`facts`) and fleet `match` rules see about a host. The cheap ones,
 * read without running a command, are built here; `gatherFacts` (gather.ts) adds CPU details,
 * disks, network and virtualization, with a cache.
 */
import * as os from "node:os";
import type { HostFs } from "../host/fs.js";

export type Facts = Record<string, unknown>;

const DEBIAN_ARCH: Record<string, string> = {
  x64: "amd64",
  arm64: "arm64",
  arm: "armhf",
  ia32: "i386",
  riscv64: "riscv64",
  ppc64: "ppc64el",
  s390x: "s390x",
};

/** The host's os-release(5) text: /etc/os-release, else /usr/lib/os-release, else "". */
export function readOsRelease(fs: HostFs): string {
  return fs.readTextIfExists("/etc/os-release") ?? fs.readTextIfExists("/usr/lib/os-release") ?? "";
}

/** The Debian name of the architecture this agent runs on (amd64, arm64, armhf...). */
export function debianArch(nodeArch: string = process.arch): string {
  return DEBIAN_ARCH[nodeArch] ?? nodeArch;
}

/** The cheap facts: from os-release and node:os, no command run. */
export function baseFacts(osReleaseText: string) {
  const release = parseOsRelease(osReleaseText);
  return {
    hostname: os.hostname(),
    os: {
      family: "linux",
      distro: release.ID ?? "unknown",
      name: release.PRETTY_NAME ?? release.NAME ?? "Linux",
      release: release.VERSION_ID ?? "",
      codename: release.VERSION_CODENAME ?? "",
      arch: debianArch(),
      machine: os.machine(),
    },
    kernel: { release: os.release(), version: os.version() },
    cpu: { cores: os.availableParallelism(), model: os.cpus()[0]?.model ?? "unknown" },
    memory: { totalBytes: os.totalmem() },
  };
}

/** `KEY=value` and `KEY="value"` lines of os-release(5). */
export function parseOsRelease(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split("\n")) {
    const match = /^([A-Z0-9_]+)=(.*)$/.exec(line.trim());
    if (!match) continue;
    let value = match[2] as string;
    if (/^".*"$|^'.*'$/.test(value)) value = value.slice(1, -1).replace(/\\(.)/g, "$1");
    out[match[1] as string] = value;
  }
  return out;
}
