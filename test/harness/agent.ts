/**
 * The Driftless agent on a test host, installed the way an operator installs it: the program at
 * /usr/local/bin/driftless, its configuration in /etc/driftless, `driftless install` (which
 * writes, enables and starts driftless.service). One place decides how the agent gets there:
 *
 *   const agent = await agentBuild({ form: "binary" });        // once per file; agent.dispose() after
 *   const host = await bootHost({ binds: agent.binds });
 *   await installAgent(host, agent, { source, hostId: "edge-1", labels: { role: "web" }, broker });
 *   await driftless(host, "status", "--json");
 *
 * Two forms:
 * - `binary` (what operators install): the x64 single binary (`npm run build:binary`, built
 *   through test/support/binary.ts) is copied into the host, which has no Node, and its first
 *   `install` is run with the flags an operator pastes (`--source --ref --host --label --broker
 *   --broker-password-file`): the binary copies itself to /usr/local/bin/driftless and writes the
 *   configuration; then the keys the flags do not cover (mode, interval, splay, trust) are written
 *   into that configuration and the agent is reloaded.
 * - `dev`: this checkout's build run by this machine's Node: a copy of bin/, dist/ and
 *   package.json bound read-only at /opt/driftless with node_modules, Node at /usr/bin/node,
 *   /usr/local/bin/driftless a wrapper script, the configuration written here whole and
 *   `driftless install` (without flags) keeping it.
 */
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { stringify as stringifyYaml } from "yaml";
import { ensureBinary } from "../support/binary.js";
import { agentBinds, type Bind, PROJECT_DIR, type TestHost } from "./host.js";
import type { ExecResult } from "./process.js";
import { sleep } from "./process.js";

/** Where the agent's program is on a host, as an operator installs it. */
export const AGENT_PROGRAM = "/usr/local/bin/driftless";
export const AGENT_CONFIG = "/etc/driftless/agent.yaml";
export const AGENT_STATE_DIR = "/var/lib/driftless";
const PASSWORD_FILE = "/etc/driftless/mqtt-password";
const SIGNERS_FILE = "/etc/driftless/allowed_signers";

export interface AgentSettings {
  /** The profile repository's Git URL. */
  source: string;
  /** Default main. */
  ref?: string;
  /** The host id (`host:`, the MQTT client id and user name). */
  hostId: string;
  labels?: Record<string, string>;
  /** Where to report (`broker:`); absent: no reporting. */
  broker?: { url: string; password: string; username?: string };
  /** Default enforce. */
  mode?: "enforce" | "report";
  /** Default 1h: runs are driven by the test (commands, SIGHUP), not by the timer. */
  interval?: string;
  /** Default 0s. */
  splay?: string;
  /** `trust:` with an allowed_signers file of these lines; absent: signatures not checked. */
  trust?: { allowedSigners: string[]; allowRollback?: boolean };
}

/** A run as `driftless status --json` prints it. */
export interface StatusRun {
  id: string;
  startedAt: string;
  endedAt: string;
  source: string;
  commit: string | null;
  mode: string;
  result: string;
  changes: Array<{ resource: string; action: string }>;
  errors: Array<{ code?: string; message?: string }>;
}

export interface AgentBuild {
  form: "binary" | "dev";
  /** What a host needs bound at boot to run the agent (nothing for the binary). */
  binds: Bind[];
  /** The single binary on this machine (form `binary`). */
  binary?: string;
  /** Removes the copy. */
  dispose(): void;
}

/**
 * The agent program for hosts: a copy of the checkout's build (bin/, dist/, package.json) with
 * its node_modules bound in, seen at /opt/driftless as `agentBinds()` lays it out. A copy,
 * because the service runs for the whole test file and starts a process per run: a
 * `node scripts/build.mjs` in the checkout meanwhile (another test run) empties dist/ for a
 * moment, and a run started then dies with ERR_MODULE_NOT_FOUND.
 */
export async function agentBuild(options: { form?: "binary" | "dev" } = {}): Promise<AgentBuild> {
  const dir = mkdtempSync(path.join(tmpdir(), "driftless-agent-build-"));
  if (options.form === "binary") {
    // A copy: a build in the checkout meanwhile replaces dist/'s file.
    const binary = path.join(dir, "driftless-linux-x64");
    cpSync((await ensureBinary("x64")).path, binary);
    return { form: "binary", binds: [], binary, dispose: () => rmSync(dir, { recursive: true, force: true }) };
  }
  for (let attempt = 1; ; attempt++) {
    try {
      for (const entry of ["bin", "dist", "package.json"]) {
        rmSync(path.join(dir, entry), { recursive: true, force: true });
        cpSync(path.join(PROJECT_DIR, entry), path.join(dir, entry), { recursive: true });
      }
      const missing = missingImports(path.join(dir, "dist"));
      if (missing.length === 0) break;
      throw new Error(`the copied build imports missing files: ${missing.join(", ")}`);
    } catch (error) {
      if (attempt >= 5) {
        rmSync(dir, { recursive: true, force: true });
        throw error;
      }
      await sleep(1_000); // a build under way in the checkout
    }
  }
  mkdirSync(path.join(dir, "node_modules"));
  return {
    form: "dev",
    binds: [
      ...agentBinds(dir),
      { source: path.join(PROJECT_DIR, "node_modules"), target: "/opt/driftless/node_modules" },
    ],
    dispose: () => rmSync(dir, { recursive: true, force: true }),
  };
}

/** Relative imports of the bundle's modules that name no file (a copy taken mid-build). */
function missingImports(distDir: string): string[] {
  const missing: string[] = [];
  const modules = readdirSync(distDir, { recursive: true, encoding: "utf8" }).filter((f) => f.endsWith(".mjs"));
  if (!modules.includes("driftless.mjs")) return ["driftless.mjs"];
  for (const rel of modules) {
    const text = readFileSync(path.join(distDir, rel), "utf8");
    for (const m of text.matchAll(/(?:from\s*|import\()"(\.\.?\/[^"]+)"/g)) {
      const target = path.join(distDir, path.dirname(rel), m[1] ?? "");
      if (!existsSync(target)) missing.push(path.relative(distDir, target));
    }
  }
  return missing;
}

/**
 * Puts the agent on `host` with `settings` and makes sure driftless.service is enabled and
 * running. Called again with other settings, it rewrites the configuration, which the agent reads
 * before each run: the next run (a command, `systemctl reload driftless`) uses it.
 */
export async function installAgent(host: TestHost, build: AgentBuild, settings: AgentSettings): Promise<void> {
  const onHost = (rel: string) => path.join(host.rootDir, rel);
  if (build.form === "binary" && build.binary) {
    if (existsSync(onHost(AGENT_PROGRAM))) {
      configureAgent(host, settings);
      return;
    }
    // The keys install's flags do not cover, written first as an image may carry them (a reload
    // right after the service starts could come before the agent handles SIGHUP).
    configureAgent(host, settings, { flagKeys: false });
    // As an operator does: the downloaded binary and a password file, then one install command.
    cpSync(build.binary, onHost("/root/driftless-linux-x64"));
    writeFileSync(onHost("/root/mqtt-password"), `${settings.broker?.password ?? ""}\n`, { mode: 0o600 });
    const install = await host.exec("/root/driftless-linux-x64", installFlags(settings), { env: { NO_COLOR: "1" } });
    if (install.exitCode !== 2) {
      throw new Error(`${host.name}: driftless install exited ${install.exitCode}\n${install.stdout}${install.stderr}`);
    }
    rmSync(onHost("/root/driftless-linux-x64"));
    rmSync(onHost("/root/mqtt-password"));
    return;
  }
  mkdirSync(onHost("/usr/local/bin"), { recursive: true });
  writeFileSync(onHost(AGENT_PROGRAM), '#!/bin/sh\nexec /usr/bin/node /opt/driftless/bin/driftless.js "$@"\n', {
    mode: 0o755,
  });
  configureAgent(host, settings);
  const install = await driftless(host, "install");
  if (install.exitCode !== 0 && install.exitCode !== 2) {
    throw new Error(`${host.name}: driftless install exited ${install.exitCode}\n${install.stdout}${install.stderr}`);
  }
}

/** `install` and the flags an operator gives it for `settings` (docs/install.md). */
function installFlags(settings: AgentSettings): string[] {
  const flags = ["install", "--source", settings.source, "--ref", settings.ref ?? "main", "--host", settings.hostId];
  for (const [key, value] of Object.entries(settings.labels ?? {})) flags.push("--label", `${key}=${value}`);
  if (settings.broker) flags.push("--broker", settings.broker.url, "--broker-password-file", "/root/mqtt-password");
  return flags;
}

/**
 * Writes the agent's configuration (and the files it names) for `settings`; nothing else. With
 * `flagKeys: false`, leaves out what `driftless install`'s flags write (host, labels, the source's
 * URL and ref, the broker).
 */
export function configureAgent(host: TestHost, settings: AgentSettings, options: { flagKeys?: boolean } = {}): void {
  const onHost = (rel: string) => path.join(host.rootDir, rel);
  mkdirSync(onHost("/etc/driftless"), { recursive: true, mode: 0o755 });
  const flagKeys = options.flagKeys ?? true;
  const config: Record<string, unknown> = {
    apiVersion: "driftless/v1",
    kind: "AgentConfig",
    ...(flagKeys ? { host: settings.hostId, labels: settings.labels ?? {} } : {}),
    mode: settings.mode ?? "enforce",
    stateDir: AGENT_STATE_DIR,
    source: {
      ...(flagKeys ? { url: settings.source, ref: settings.ref ?? "main" } : {}),
      interval: settings.interval ?? "1h",
      splay: settings.splay ?? "0s",
    },
  };
  if (settings.trust) {
    writeFileSync(onHost(SIGNERS_FILE), `${settings.trust.allowedSigners.join("\n")}\n`, { mode: 0o644 });
    config.trust = { allowedSigners: SIGNERS_FILE, allowRollback: settings.trust.allowRollback ?? false };
  }
  if (settings.broker && flagKeys) {
    writeFileSync(onHost(PASSWORD_FILE), `${settings.broker.password}\n`, { mode: 0o600 });
    config.broker = {
      url: settings.broker.url,
      username: settings.broker.username ?? settings.hostId,
      passwordFile: PASSWORD_FILE,
    };
  }
  writeFileSync(onHost(AGENT_CONFIG), stringifyYaml(config), { mode: 0o600 });
}

/** Runs the agent's CLI on the host (`driftless ARGS...`). */
export function driftless(host: TestHost, ...args: string[]): Promise<ExecResult> {
  return host.exec(AGENT_PROGRAM, args, { env: { NO_COLOR: "1" } });
}
