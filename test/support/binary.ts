/**
 * The single binaries for the tests: `ensureBinary(arch)` (the agent) or `ensureBinary(arch,
 * "driftlessctl")` runs `npm run build:binary`'s script for that program and architecture (cached
 * outside the checkout: seconds when nothing changed, about ten minutes on a machine that has
 * never built it) and says how to run the result here (arm64: under qemu-aarch64-static with the
 * build tree's arm64 glibc 2.31 as sysroot).
 *
 *   const support = binarySupport("x64");
 *   describe.skipIf(!support.can)("...", () => { beforeAll(async () => { bin = await ensureBinary("x64"); }, BUILD_TIMEOUT_MS) });
 *
 * When the binary cannot be built here, the reason is printed once with console.warn, so the
 * skip is visible.
 */
import { type ChildProcess, spawn } from "node:child_process";
import * as path from "node:path";
import { PROJECT_DIR } from "../harness/host.js";
import { defaultEnv, type ExecResult, run, runChecked, which } from "../harness/process.js";
import { fleet, makeRepo, profile } from "./repo.js";

export type Arch = "x64" | "arm64";
export type Program = "driftless" | "driftlessctl";

/** The Node inside the binary (scripts/binary/toolchain.mjs). */
export const BINARY_NODE_VERSION = "v24.22.3";
/** The oldest glibc a binary may need: Debian 11, Ubuntu 20.04, Raspberry Pi OS bullseye. */
export const GLIBC_FLOOR = "2.31";
/** A first build debootstraps a tree and compiles SQLite twice: give it time. */
export const BUILD_TIMEOUT_MS = 30 * 60_000;

export interface Binary {
  arch: Arch;
  /** dist/<program>-linux-<arch>. */
  path: string;
  /** The newest GLIBC_ and GLIBCXX_ symbol versions the binary and its addon require. */
  glibc: string;
  glibcxx: string;
  /** The program and arguments that run the binary on this machine. */
  command(args: readonly string[]): [string, ...string[]];
  /** Runs the binary with `args` (NO_COLOR, a 2 minute limit); never rejects on a non-zero exit. */
  run(args: readonly string[], options?: { env?: Record<string, string> }): Promise<ExecResult>;
  /** Starts the binary with `args` (a daemon, a server), NO_COLOR and `env` added to this process's. */
  start(args: readonly string[], env?: Record<string, string>): Running;
}

/** A process of the binary: what it wrote so far, stdout and stderr mixed. */
export interface Running {
  child: ChildProcess;
  output(): string;
  /** Its exit code (null: killed by a signal). */
  exited: Promise<number | null>;
  /** SIGTERM, then its exit code. */
  stop(): Promise<number | null>;
}

const warned = new Set<string>();

export function binarySupport(arch: Arch, program: Program = "driftless"): { can: boolean; reason: string } {
  const reason = missing(arch);
  const warning = `skipping tests of the ${arch} ${program} single binary: ${reason}`;
  if (reason && !warned.has(warning)) {
    warned.add(warning);
    console.warn(`[driftless] ${warning}`);
  }
  return { can: !reason, reason };
}

function missing(arch: Arch): string {
  if (process.env.DRIFTLESS_SKIP_BINARY === "1") return "DRIFTLESS_SKIP_BINARY=1";
  if (process.platform !== "linux" || process.arch !== "x64")
    return `not linux-x64 (${process.platform}-${process.arch})`;
  if (process.getuid?.() !== 0) return "not running as root (the build chroots into a debootstrap'd tree)";
  const tools = ["debootstrap", "chroot", "unshare", "flock", "readelf", "tar"];
  if (arch === "arm64") tools.push("qemu-aarch64-static");
  const absent = tools.filter((tool) => !which(tool));
  if (absent.length > 0) {
    return `missing ${absent.join(", ")} (apt-get install debootstrap util-linux binutils qemu-user-static)`;
  }
  return "";
}

const built = new Map<string, Promise<Binary>>();

/** Builds (or finds in the cache) `program`'s binary for `arch`; once per test file. */
export function ensureBinary(arch: Arch, program: Program = "driftless"): Promise<Binary> {
  let pending = built.get(`${program}-${arch}`);
  if (!pending) {
    pending = build(arch, program);
    built.set(`${program}-${arch}`, pending);
  }
  return pending;
}

async function build(arch: Arch, program: Program): Promise<Binary> {
  const result = await runChecked(
    process.execPath,
    ["scripts/build-binary.mjs", "--program", program, "--arch", arch, "--json"],
    { cwd: PROJECT_DIR, timeoutMs: BUILD_TIMEOUT_MS },
  );
  const summary = JSON.parse(result.stdout.trim().split("\n").at(-1) as string) as {
    program: Program;
    binary: string;
    sysroot: string | null;
    glibc: string;
    glibcxx: string;
  };
  if (summary.program !== program) throw new Error(`build-binary made ${summary.program}, not ${program}`);
  const binary = path.resolve(summary.binary);
  const command = (args: readonly string[]): [string, ...string[]] =>
    summary.sysroot ? ["qemu-aarch64-static", "-L", summary.sysroot, binary, ...args] : [binary, ...args];
  return {
    arch,
    path: binary,
    glibc: summary.glibc,
    glibcxx: summary.glibcxx,
    command,
    start: (args, env = {}) => startProcess(command(args), env),
    run: (args, options = {}) => {
      const [file, ...rest] = command(args);
      return run(file, rest, {
        env: { ...(defaultEnv() as Record<string, string>), NO_COLOR: "1", ...options.env },
        timeoutMs: 2 * 60_000,
      });
    },
  };
}

/** Starts `file args...` with NO_COLOR and `env` added to this process's environment. */
export function startProcess(
  [file, ...args]: readonly [string, ...string[]],
  env: Record<string, string> = {},
): Running {
  const child = spawn(file, args, {
    stdio: ["ignore", "pipe", "pipe"],
    env: { ...process.env, NO_COLOR: "1", ...env },
  });
  let output = "";
  for (const stream of [child.stdout, child.stderr]) {
    stream?.on("data", (chunk: Buffer) => {
      output += chunk.toString("utf8");
    });
  }
  const exited = new Promise<number | null>((resolve) => child.on("close", (code) => resolve(code)));
  return {
    child,
    output: () => output,
    exited,
    stop: () => {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
      return exited;
    },
  };
}

/** Compares dotted versions ("2.29" < "2.31"): negative, zero or positive. */
export function compareVersions(a: string, b: string): number {
  const pa = a.split(".").map(Number);
  const pb = b.split(".").map(Number);
  for (let i = 0; i < Math.max(pa.length, pb.length); i++) {
    const d = (pa[i] ?? 0) - (pb[i] ?? 0);
    if (d !== 0) return d;
  }
  return 0;
}

/** The host path the small profile writes, its content, and a directory it makes. */
export const SMALL_PROFILE = { motd: "/etc/motd", motdText: "Managed by driftless on", dir: "/var/lib/small" };

/** A profile repository (a temp directory) with fleet.yaml and one profile: a template, a file, a directory. */
export function smallRepo(): string {
  return makeRepo({
    "fleet.yaml": fleet('  - match: { hostname: "*" }\n    profiles: [small]\n'),
    "small.yaml": profile(
      "small",
      `vars: { site: lab }
files:
  - { path: ${SMALL_PROFILE.motd}, template: files/motd.liquid, mode: "0644" }
  - { path: /etc/small.conf, content: "enabled = true\\n", mode: "0600" }
  - { path: ${SMALL_PROFILE.dir}, state: directory, mode: "0750" }
`,
    ),
    "files/motd.liquid": `${SMALL_PROFILE.motdText} {{ host.name }} ({{ vars.site }})\n`,
  });
}

/** The newest GLIBC_x.y version `files` (ELF, any architecture) require, measured with readelf. */
export async function newestGlibc(files: readonly string[]): Promise<string> {
  let newest = "0";
  for (const file of files) {
    const { stdout } = await runChecked("readelf", ["-V", "--wide", file]);
    for (const [, version] of stdout.matchAll(/Name: GLIBC_([0-9.]+)/g)) {
      if (compareVersions(version as string, newest) > 0) newest = version as string;
    }
  }
  return newest;
}
