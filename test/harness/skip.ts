/**
 * Whether this machine can boot test hosts. Tests use it as:
 *
 *   const hosts = hostSupport();
 *   describe.skipIf(!hosts.can)("...", () => { ... });
 *
 * When hosts cannot boot, the reason is printed once with console.warn so a skipped suite is
 * visible in the output. Set DRIFTLESS_SKIP_HOSTS=1 to skip them on purpose.
 */
import { existsSync } from "node:fs";
import { which } from "./process.js";
import { type RootfsOptions, rootfsPath } from "./rootfs.js";

export interface HostSupport {
  can: boolean;
  /** Why hosts cannot boot; empty when they can. */
  reason: string;
}

const warned = new Set<string>();

export function hostSupport(options: { rootfs?: RootfsOptions; quiet?: boolean } = {}): HostSupport {
  const support = check(options.rootfs);
  if (!support.can && !options.quiet && !warned.has(support.reason)) {
    warned.add(support.reason);
    console.warn(`[driftless] skipping tests on systemd-nspawn hosts: ${support.reason}`);
  }
  return support;
}

function check(rootfs: RootfsOptions | undefined): HostSupport {
  if (process.env.DRIFTLESS_SKIP_HOSTS === "1") return { can: false, reason: "DRIFTLESS_SKIP_HOSTS=1" };
  if (process.platform !== "linux") return { can: false, reason: `not Linux (${process.platform})` };
  if (process.getuid?.() !== 0) return { can: false, reason: "not running as root" };
  const missing = ["systemd-nspawn", "nsenter", "mount", "dpkg-deb"].filter((program) => !which(program));
  if (!existsSync(rootfsPath(rootfs)) && !which("debootstrap")) missing.push("debootstrap");
  if (missing.length > 0) {
    return {
      can: false,
      reason: `missing ${missing.join(", ")} (apt-get install systemd-container debootstrap util-linux dpkg)`,
    };
  }
  return { can: true, reason: "" };
}
