/**
 * Real Debian test hosts: systemd booted with systemd-nspawn on an overlay of the cached rootfs,
 * reached with `nsenter`. See README.md in this folder.
 *
 *   const host = await bootHost({ binds: agentBinds() });   // resolves once systemd is up
 *   const { stdout } = await host.exec("systemctl", ["is-system-running"]);
 *   await host.stop();
 *
 * Every host lives in its own folder under `/var/tmp/driftless-hosts/` (overlay upper and work
 * dirs, the mounted root, the console log). Hosts are powered off and their folders removed by
 * `stop()`, by `stopAllHosts()`, and, as a last resort, synchronously when the test process exits;
 * hosts left behind by a process that was killed outright are reaped by the next `bootHost()`.
 */
import { spawn, spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { closeSync, existsSync, openSync, readdirSync, readFileSync, readlinkSync, rmSync, statSync } from "node:fs";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { defaultEnv, type ExecResult, run, runChecked, sleep, tail } from "./process.js";
import { ensureRootfs, isAlive, type RootfsOptions, removeTree } from "./rootfs.js";

export type { ExecResult } from "./process.js";

/** A folder of this machine made visible inside the host. */
export interface Bind {
  source: string;
  /** Path inside the host; default: same as `source`. */
  target?: string;
  /** Default false: read-only. */
  writable?: boolean;
}

export interface RootOptions {
  /** Which cached rootfs to start from (built on first use). */
  rootfs?: RootfsOptions;
}

export interface BootOptions extends RootOptions {
  /** Machine name and hostname; default `dl-` and random hex. Must be unique among running hosts. */
  name?: string;
  binds?: Bind[];
  /** More `systemd-nspawn` arguments, e.g. `--setenv=X=1` or `--private-network`. */
  nspawnArgs?: string[];
  /** How long boot may take until `running`/`degraded`; default 90 s. */
  bootTimeoutMs?: number;
}

export interface ExecOptions {
  /** Written to standard input; without it standard input is /dev/null. */
  input?: string;
  /** Added to the clean environment (PATH, HOME=/root, LANG=C.UTF-8). */
  env?: Record<string, string>;
  /** Default 5 minutes. */
  timeoutMs?: number;
}

export interface TestHost {
  readonly name: string;
  /** Pid (on this machine) of the host's systemd (a new one after `reboot()`). */
  readonly pid: number;
  /** The host's `/` as a path on this machine; valid until `stop()`. */
  readonly rootDir: string;
  /** The host's console output (boot messages), for debugging. */
  readonly consoleLog: string;
  /** Runs a program inside the host (all its namespaces) as root; never rejects on a non-zero exit. */
  exec(file: string, args?: readonly string[], options?: ExecOptions): Promise<ExecResult>;
  /** Like `exec`, but rejects with the output when the program exits non-zero. */
  execChecked(file: string, args?: readonly string[], options?: ExecOptions): Promise<ExecResult>;
  /** Waits until `systemctl is-system-running` says running or degraded; returns which. */
  waitRunning(timeoutMs?: number): Promise<string>;
  /**
   * Sends SIGKILL to every process of a unit's control group at once, as a crash or the OOM
   * killer would (`systemctl kill` cannot reach the processes of a unit inside an nspawn host on
   * a cgroup v1 machine); systemd sees its main process die and applies the unit's `Restart=`.
   * Returns the pids it killed (this machine's).
   */
  killUnit(unit: string): Promise<number[]>;
  /**
   * `systemctl reboot` inside the host, then boots it again on the same root (its files, its
   * enabled units, its machine id kept), and waits until systemd is up as `bootHost()` does.
   * `pid` is the new systemd's afterwards; `rootDir` stays.
   */
  reboot(timeoutMs?: number): Promise<void>;
  /** Powers the host off (killing it if it does not stop in time) and removes its folder. Idempotent. */
  stop(): Promise<void>;
}

/** A host root that is not booted (for `--root` tests): an overlay of the cached rootfs. */
export interface HostRoot {
  /** The root as a path on this machine. */
  readonly rootDir: string;
  /** Unmounts and removes it. Idempotent. */
  dispose(): Promise<void>;
}

/** The project checkout (this harness lives in `<checkout>/test/harness`). */
export const PROJECT_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");

/**
 * Binds to run the agent inside a host as `node /opt/driftless/bin/driftless.js`: the checkout
 * read-only at `/opt/driftless` and this machine's Node binary at `/usr/bin/node` (it needs only
 * glibc and libstdc++, which the rootfs has).
 */
export function agentBinds(projectDir: string = PROJECT_DIR): Bind[] {
  return [{ source: projectDir, target: "/opt/driftless" }, nodeBind()];
}

/** This machine's Node binary at `/usr/bin/node` inside the host. */
export function nodeBind(): Bind {
  return { source: process.execPath, target: "/usr/bin/node" };
}

const HOSTS_DIR = process.env.DRIFTLESS_TEST_HOSTS ?? "/var/tmp/driftless-hosts";
const HOST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/** systemd powers off on SIGRTMIN+4 (SIGRTMIN is 34 with glibc). */
const SIGRTMIN_PLUS_4 = 38;

interface Slot {
  dir: string;
  rootDir: string;
  nspawnPid?: number;
  initPid?: number;
}

/** Everything this process has running or mounted, for the exit hook. */
const live = new Set<Slot>();
const stoppers = new Set<() => Promise<void>>();

export async function bootHost(options: BootOptions = {}): Promise<TestHost> {
  await prepareMachine();
  const name = options.name ?? `dl-${randomBytes(3).toString("hex")}`;
  if (!/^[a-z0-9][a-z0-9-]{0,62}$/.test(name)) throw new Error(`invalid host name: ${name}`);
  const extraArgs = [...(options.binds ?? []).map(bindArg), ...(options.nspawnArgs ?? [])];
  const slot = await mountRoot(name, options.rootfs);
  const consoleLog = path.join(slot.dir, "console.log");
  const bootTimeoutMs = options.bootTimeoutMs ?? 90_000;

  /** The container now running on the slot's root (a new one after each reboot). */
  let current: Container | undefined;

  const exec = (file: string, execArgs: readonly string[] = [], execOptions: ExecOptions = {}) => {
    const container = current;
    if (!container || container.exited()) return Promise.reject(new Error(`host ${name} is not running`));
    return run("nsenter", ["-t", String(container.initPid), "-a", "--", file, ...execArgs], {
      ...(execOptions.input !== undefined ? { input: execOptions.input } : {}),
      env: { PATH: HOST_PATH, HOME: "/root", LANG: "C.UTF-8", ...execOptions.env },
      timeoutMs: execOptions.timeoutMs ?? 5 * 60_000,
    });
  };

  const waitRunning = async (timeoutMs = 90_000) => {
    const deadline = Date.now() + timeoutMs;
    let last = "";
    while (Date.now() < deadline && current && !current.exited()) {
      const result = await exec("systemctl", ["is-system-running", "--wait"], {
        timeoutMs: Math.max(1000, deadline - Date.now()),
      }).catch((error: Error) => ({ exitCode: -1, stdout: "", stderr: error.message }));
      last = (result.stdout.trim() || result.stderr.trim()).split("\n").pop() ?? "";
      if (last === "running" || last === "degraded") return last;
      // "offline" and bus errors: systemd is not answering yet, early in boot.
      await sleep(100);
    }
    throw new Error(`host ${name} did not finish booting (last state: ${last || "none"})`);
  };

  /** Starts systemd-nspawn on the slot's root and waits until its systemd is up. */
  const boot = async (): Promise<void> => {
    const container = await startContainer(name, slot, consoleLog, extraArgs);
    current = container;
    const initPid = await findInit(container.nspawnPid, container.exited, 30_000);
    if (initPid === null) return bootFailure("systemd-nspawn exited or its systemd did not appear");
    container.initPid = initPid;
    slot.initPid = initPid;
    await writeFile(path.join(slot.dir, "pids"), `${container.nspawnPid} ${initPid}\n`);
    try {
      await waitRunning(bootTimeoutMs);
    } catch (error) {
      return bootFailure((error as Error).message);
    }
  };

  const bootFailure = async (reason: string): Promise<never> => {
    const log = await readFile(consoleLog, "utf8").catch(() => "");
    await stop();
    throw new Error(`host ${name}: ${reason}\n--- console (last lines) ---\n${tail(log, 30)}`);
  };

  let stopping: Promise<void> | undefined;
  const stop = () => {
    stopping ??= stopSlot(slot, current).finally(() => stoppers.delete(stop));
    return stopping;
  };
  stoppers.add(stop);

  const host: TestHost = {
    name,
    get pid() {
      return current?.initPid ?? 0;
    },
    rootDir: slot.rootDir,
    consoleLog,
    exec,
    async execChecked(file, execArgs = [], execOptions = {}) {
      const result = await exec(file, execArgs, execOptions);
      if (result.exitCode !== 0) {
        throw new Error(
          `${name}: ${file} ${execArgs.join(" ")} exited ${result.exitCode}\n${tail(result.stdout + result.stderr, 40)}`,
        );
      }
      return result;
    },
    waitRunning,
    async killUnit(unit) {
      const group = (await exec("systemctl", ["show", "-p", "ControlGroup", "--value", unit])).stdout.trim();
      const initPid = current?.initPid;
      if (!group || initPid === undefined) throw new Error(`${name}: ${unit} has no control group`);
      const killed: number[] = [];
      // Until none is left: a process may fork while the others are being killed.
      for (let pass = 0; pass < 50; pass++) {
        const pids = unitProcesses(initPid, group);
        if (pids.length === 0) return killed;
        for (const pid of pids) signal(pid, "SIGKILL");
        killed.push(...pids.filter((pid) => !killed.includes(pid)));
        await sleep(20);
      }
      throw new Error(
        `${name}: processes of ${unit} still there after SIGKILL: ${unitProcesses(initPid, group).join(" ")}`,
      );
    },
    async reboot(timeoutMs = 60_000) {
      const container = current;
      if (stopping || !container || container.exited()) throw new Error(`host ${name} is not running`);
      // The connection to the host goes down with it: the exit code of this call says nothing.
      await exec("systemctl", ["reboot"], { timeoutMs }).catch(() => undefined);
      if (!(await container.within(timeoutMs))) throw new Error(`host ${name} did not shut down for the reboot`);
      // systemd-nspawn -b ends with 133 when its container asks for a reboot (systemd-nspawn(1)).
      if (container.exitCode() !== 133) {
        const log = await readFile(consoleLog, "utf8").catch(() => "");
        throw new Error(
          `host ${name}: systemd-nspawn ended with ${container.exitCode()}, not 133 (reboot)\n${tail(log, 30)}`,
        );
      }
      if (stopping) throw new Error(`host ${name} was stopped during its reboot`);
      await boot();
    },
    stop,
  };

  await boot();
  return host;
}

/** One run of systemd-nspawn on a slot's root: from boot to poweroff or reboot. */
interface Container {
  nspawnPid: number;
  /** Its systemd, once found. */
  initPid?: number;
  exited(): boolean;
  /** systemd-nspawn's exit code once it has exited (null while running or when killed by a signal). */
  exitCode(): number | null;
  /** Resolves true once systemd-nspawn has exited, false when `ms` pass first. */
  within(ms: number): Promise<boolean>;
}

async function startContainer(name: string, slot: Slot, consoleLog: string, extraArgs: string[]): Promise<Container> {
  const args = ["-D", slot.rootDir, "-b", "--register=no", "--keep-unit", "-M", name, "--console=read-only", "-q"];
  args.push(...extraArgs);
  const logFd = openSync(consoleLog, "a");
  const child = spawn("systemd-nspawn", args, {
    stdio: ["ignore", logFd, logFd],
    detached: true,
    env: defaultEnv(),
  });
  closeSync(logFd);
  child.unref();
  if (child.pid === undefined) {
    await releaseSlot(slot);
    throw new Error("systemd-nspawn did not start");
  }
  slot.nspawnPid = child.pid;
  let exited = false;
  let code: number | null = null;
  const exit = new Promise<void>((resolve) => {
    child.on("exit", (exitCode) => {
      exited = true;
      code = exitCode;
      resolve();
    });
    child.on("error", () => {
      exited = true;
      resolve();
    });
  });
  return {
    nspawnPid: child.pid,
    exited: () => exited,
    exitCode: () => code,
    within: (ms) =>
      new Promise<boolean>((resolve) => {
        const timer = setTimeout(() => resolve(exited), ms);
        void exit.then(() => {
          clearTimeout(timer);
          resolve(true);
        });
      }),
  };
}

/** Boots `count` hosts in parallel, named `<prefix>-1`, `<prefix>-2`, ... */
export async function bootHosts(count: number, options: BootOptions = {}): Promise<TestHost[]> {
  const prefix = options.name ?? `dl-${randomBytes(3).toString("hex")}`;
  const results = await Promise.allSettled(
    Array.from({ length: count }, (_, i) => bootHost({ ...options, name: `${prefix}-${i + 1}` })),
  );
  const hosts = results.flatMap((result) => (result.status === "fulfilled" ? [result.value] : []));
  const failure = results.find((result) => result.status === "rejected");
  if (failure) {
    await Promise.all(hosts.map((host) => host.stop()));
    throw (failure as PromiseRejectedResult).reason;
  }
  return hosts;
}

/** Stops every host this process booted (for `afterAll`). */
export async function stopAllHosts(): Promise<void> {
  await Promise.all([...stoppers].map((stop) => stop()));
}

/** An unbooted root on an overlay of the cached rootfs, e.g. for `HostFs(rootDir)` tests. */
export async function createRoot(options: RootOptions = {}): Promise<HostRoot> {
  await prepareMachine();
  const slot = await mountRoot(`root-${randomBytes(3).toString("hex")}`, options.rootfs);
  let disposing: Promise<void> | undefined;
  return {
    rootDir: slot.rootDir,
    dispose: () => {
      disposing ??= releaseSlot(slot);
      return disposing;
    },
  };
}

function bindArg(bind: Bind): string {
  const target = bind.target ?? bind.source;
  for (const p of [bind.source, target]) {
    if (!path.isAbsolute(p) || p.includes(":")) throw new Error(`bind paths must be absolute, without ':' (${p})`);
  }
  return `${bind.writable ? "--bind" : "--bind-ro"}=${bind.source}:${target}`;
}

/** Waits for the child of systemd-nspawn that is pid 1 of the container and has exec'ed systemd. */
async function findInit(nspawnPid: number, exited: () => boolean, timeoutMs: number): Promise<number | null> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline && !exited()) {
    for (const pid of childrenOf(nspawnPid)) {
      const status = readProc(`/proc/${pid}/status`);
      const nsPids = /^NSpid:\s*(.*)$/m.exec(status)?.[1]?.trim().split(/\s+/) ?? [];
      const comm = readProc(`/proc/${pid}/comm`).trim();
      if (nsPids.length > 1 && nsPids.at(-1) === "1" && comm === "systemd") return pid;
    }
    await sleep(50);
  }
  return null;
}

/** Processes (this machine's pids) in the host of `initPid` whose control group is the host's `group`. */
function unitProcesses(initPid: number, group: string): number[] {
  const namespace = pidNamespace(initPid);
  if (namespace === null) return [];
  const pids: number[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    if (pid === initPid || pidNamespace(pid) !== namespace) continue;
    // Each line is `id:controllers:path`; the host's paths are under its container's own group.
    const inGroup = readProc(`/proc/${pid}/cgroup`)
      .split("\n")
      .some((line) => line.slice(line.indexOf(":", line.indexOf(":") + 1) + 1).endsWith(group));
    if (inGroup) pids.push(pid);
  }
  return pids;
}

function pidNamespace(pid: number): string | null {
  try {
    return readlinkSync(`/proc/${pid}/ns/pid`);
  } catch {
    return null;
  }
}

function childrenOf(pid: number): number[] {
  const children: number[] = [];
  let tasks: string[] = [];
  try {
    tasks = readdirSync(`/proc/${pid}/task`);
  } catch {
    return [];
  }
  for (const task of tasks) {
    for (const child of readProc(`/proc/${pid}/task/${task}/children`).trim().split(/\s+/)) {
      if (child) children.push(Number(child));
    }
  }
  return children;
}

function readProc(file: string): string {
  try {
    return readFileSync(file, "utf8");
  } catch {
    return "";
  }
}

/** Powers off (SIGRTMIN+4 to its systemd), waits, kills if needed, then unmounts and removes. */
async function stopSlot(slot: Slot, container: Container | undefined): Promise<void> {
  if (container && !container.exited() && container.initPid !== undefined) {
    signal(container.initPid, SIGRTMIN_PLUS_4);
    if (!(await container.within(30_000))) {
      signal(container.initPid, "SIGKILL");
      if (!(await container.within(5_000))) signal(container.nspawnPid, "SIGKILL");
    }
  } else if (container && !container.exited()) {
    signal(container.nspawnPid, "SIGKILL");
  }
  await container?.within(5_000);
  await releaseSlot(slot);
}

function signal(pid: number, sig: NodeJS.Signals | number): void {
  try {
    process.kill(pid, sig);
  } catch {
    // already gone
  }
}

/** Creates the host's folder and mounts its root: an overlay of the cache, or a copy of it. */
async function mountRoot(name: string, rootfs: RootfsOptions | undefined): Promise<Slot> {
  const lower = await ensureRootfs(rootfs);
  const dir = path.join(HOSTS_DIR, `${name}-${randomBytes(3).toString("hex")}`);
  const slot: Slot = { dir, rootDir: path.join(dir, "root") };
  for (const sub of ["upper", "work", "root"]) await mkdir(path.join(dir, sub), { recursive: true });
  await writeFile(path.join(dir, "owner"), `${process.pid}\n`);
  live.add(slot);
  const options = `lowerdir=${lower},upperdir=${dir}/upper,workdir=${dir}/work`;
  try {
    const overlay = await run("mount", ["-t", "overlay", "overlay", "-o", options, slot.rootDir]);
    if (overlay.exitCode !== 0) {
      // No overlayfs here (e.g. the cache is itself on an overlay): fall back to a copy.
      await runChecked("cp", ["-a", "--reflink=auto", `${lower}/.`, slot.rootDir]);
    }
  } catch (error) {
    await releaseSlot(slot);
    throw error;
  }
  return slot;
}

async function releaseSlot(slot: Slot): Promise<void> {
  await removeTree(slot.dir);
  live.delete(slot);
}

let machineReady: Promise<void> | undefined;

/** Once per process: /run/systemd/nspawn on a tmpfs, the hosts folder, stale hosts reaped. */
function prepareMachine(): Promise<void> {
  machineReady ??= (async () => {
    const mountinfo = await readFile("/proc/self/mountinfo", "utf8");
    if (!mountinfo.split("\n").some((line) => line.split(" ")[4] === "/run/systemd/nspawn")) {
      await mkdir("/run/systemd/nspawn", { recursive: true });
      await runChecked("mount", ["-t", "tmpfs", "tmpfs", "/run/systemd/nspawn"]);
    }
    await mkdir(HOSTS_DIR, { recursive: true });
    await reapStaleHosts();
    installExitHook();
  })();
  return machineReady;
}

/** Kills and removes hosts whose test process died without cleaning up. */
async function reapStaleHosts(): Promise<void> {
  for (const entry of readdirSync(HOSTS_DIR)) {
    const dir = path.join(HOSTS_DIR, entry);
    const owner = Number.parseInt(readProc(path.join(dir, "owner")), 10);
    if (!Number.isNaN(owner) && (owner === process.pid || isAlive(owner))) continue;
    const [nspawnPid, initPid] = readProc(path.join(dir, "pids")).trim().split(" ").map(Number);
    // The container outlives a killed systemd-nspawn: kill its systemd (and with it the whole
    // pid namespace) when that process's root is this host's root.
    if (initPid && sameRoot(initPid, path.join(dir, "root"))) {
      signal(initPid, "SIGKILL");
      for (let i = 0; i < 50 && existsSync(`/proc/${initPid}`); i++) await sleep(100);
    }
    if (nspawnPid && readProc(`/proc/${nspawnPid}/cmdline`).includes(`${dir}/root`)) signal(nspawnPid, "SIGKILL");
    await removeTree(dir);
  }
}

function sameRoot(pid: number, rootDir: string): boolean {
  try {
    const theirs = statSync(`/proc/${pid}/root`);
    const ours = statSync(rootDir);
    return theirs.dev === ours.dev && theirs.ino === ours.ino;
  } catch {
    return false;
  }
}

let hookInstalled = false;

function installExitHook(): void {
  if (hookInstalled) return;
  hookInstalled = true;
  process.on("exit", killAllSync);
  for (const sig of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
    process.once(sig, () => {
      killAllSync();
      process.kill(process.pid, sig);
    });
  }
}

/** Last resort, synchronous: kill every container of this process and remove its folder. */
function killAllSync(): void {
  for (const slot of live) {
    for (const pid of [slot.initPid, slot.nspawnPid]) if (pid !== undefined) signal(pid, "SIGKILL");
    for (let i = 0; i < 50 && slot.nspawnPid !== undefined && existsSync(`/proc/${slot.nspawnPid}`); i++) {
      spawnSync("sleep", ["0.1"]);
    }
    spawnSync("umount", ["-l", slot.rootDir]);
    rmSync(slot.dir, { recursive: true, force: true });
  }
  live.clear();
}
