// The long-lived `driftless agent` (and `--once`, `install`/`uninstall`) as users run it: the
// built CLI in its own process, following a DIRECTORY source (no Git, so runs are quick), with
// short intervals. What it did is read back from its JSON log lines on stderr, the files it
// converged under --root, its exit code and `driftless status --json`.
//
// Every CLI call is spawned asynchronously: the test keeps reading the daemon's log while a
// `driftless apply` runs next to it. A few tests need a run that lasts: a profile of
// SLOW_FILES small files (a few seconds of apply on this machine kind).
import { type ChildProcess, spawn } from "node:child_process";
import {
  closeSync,
  existsSync,
  lstatSync,
  mkdirSync,
  openSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import * as path from "node:path";
import { createInterface } from "node:readline";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import { CLI, isRoot } from "../support/cli.js";
import { cleanupTemp, fleet, makeRepo, profile, tempDir } from "../support/repo.js";

afterAll(cleanupTemp);

// ---------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------

interface LogLine {
  time: string;
  level: string;
  msg: string;
  [field: string]: unknown;
}

/** This process's environment without anything that would change the agent's configuration. */
function childEnv(extra: Record<string, string> = {}): Record<string, string> {
  const env: Record<string, string> = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (value !== undefined && !key.startsWith("DRIFTLESS_")) env[key] = value;
  }
  return { ...env, NO_COLOR: "1", ...extra };
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `check` until it returns something other than undefined/false. */
async function until<T>(what: string, check: () => T | undefined | false, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = check();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(20);
  }
}

interface CliResult {
  exitCode: number;
  stdout: string;
  stderr: string;
  /** When the process was seen to exit (Date.now()). */
  endedAt: number;
  ms: number;
}

/** Runs the CLI to completion, asynchronously. Rejects (after SIGKILL) when it outlives `timeoutMs`. */
function cli(args: string[], options: { env?: Record<string, string>; timeoutMs?: number } = {}): Promise<CliResult> {
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [CLI, ...args], {
      env: childEnv(options.env),
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.setEncoding("utf8").on("data", (chunk: string) => {
      stdout += chunk;
    });
    child.stderr.setEncoding("utf8").on("data", (chunk: string) => {
      stderr += chunk;
    });
    const timeoutMs = options.timeoutMs ?? 30_000;
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`driftless ${args.join(" ")} still running after ${timeoutMs} ms\n${stderr}`));
    }, timeoutMs);
    child.on("error", reject);
    child.on("close", (code, signal) => {
      clearTimeout(timer);
      const endedAt = Date.now();
      resolve({
        exitCode: code ?? (signal ? 128 : -1),
        stdout,
        stderr,
        endedAt,
        ms: endedAt - started,
      });
    });
  });
}

/** The JSON log lines of a `--once` run's stderr (lines that are not JSON are skipped). */
function logsOf(stderr: string): LogLine[] {
  return stderr
    .split("\n")
    .filter((line) => line.startsWith("{"))
    .map((line) => JSON.parse(line) as LogLine);
}

const daemons: Daemon[] = [];

/** A running `driftless agent`, with its stderr read line by line. */
class Daemon {
  readonly child: ChildProcess;
  /** Every stderr line, as written. */
  readonly raw: string[] = [];
  /** The stderr lines that parse as JSON objects (the log). */
  readonly lines: LogLine[] = [];
  stdout = "";
  exit: { code: number | null; signal: NodeJS.Signals | null; at: number } | undefined;
  readonly exited: Promise<void>;

  constructor(args: string[], env: Record<string, string> = {}) {
    // Its own process group, so that cleanup also reaches the run it may have started.
    this.child = spawn(process.execPath, [CLI, "agent", ...args], {
      env: childEnv(env),
      stdio: ["ignore", "pipe", "pipe"],
      detached: true,
    });
    this.child.stdout?.setEncoding("utf8").on("data", (chunk: string) => {
      this.stdout += chunk;
    });
    const stderr = this.child.stderr;
    if (!stderr) throw new Error("no stderr");
    createInterface({ input: stderr }).on("line", (line) => {
      this.raw.push(line);
      try {
        const parsed: unknown = JSON.parse(line);
        if (parsed && typeof parsed === "object") this.lines.push(parsed as LogLine);
      } catch {
        // kept in raw only
      }
    });
    this.exited = new Promise((resolve) => {
      // "close": the streams are drained too, so every line has been read.
      this.child.on("close", (code, signal) => {
        this.exit = { code, signal, at: Date.now() };
        resolve();
      });
    });
    daemons.push(this);
  }

  get pid(): number {
    return this.child.pid as number;
  }

  /** The index (in `lines`) of the first line from `from` on that matches; waits for it. */
  async waitFor(match: string | ((line: LogLine) => boolean), timeoutMs: number, from = 0): Promise<number> {
    const test = typeof match === "string" ? (line: LogLine) => line.msg === match : match;
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const index = this.lines.findIndex((line, i) => i >= from && test(line));
      if (index >= 0) return index;
      if (this.exit) throw new Error(`the agent exited (${this.exit.code ?? this.exit.signal}):\n${this.log()}`);
      if (Date.now() > deadline)
        throw new Error(`timed out after ${timeoutMs} ms waiting for ${match}:\n${this.log()}`);
      await sleep(20);
    }
  }

  /** Indexes of the lines with this message. */
  indexesOf(msg: string): number[] {
    return this.lines.flatMap((line, i) => (line.msg === msg ? [i] : []));
  }

  signal(name: NodeJS.Signals): void {
    this.child.kill(name);
  }

  /** SIGTERM, then the time it took to exit. */
  async terminate(timeoutMs = 15_000): Promise<{ code: number | null; ms: number }> {
    const started = Date.now();
    this.signal("SIGTERM");
    await Promise.race([this.exited, sleep(timeoutMs)]);
    if (!this.exit) throw new Error(`the agent did not exit within ${timeoutMs} ms of SIGTERM:\n${this.log()}`);
    return { code: this.exit.code, ms: this.exit.at - started };
  }

  log(): string {
    return this.raw.join("\n");
  }

  /** Kills what is left of it (its whole process group). */
  async kill(): Promise<void> {
    if (!this.exit) {
      try {
        process.kill(-this.pid, "SIGKILL");
      } catch {
        // already gone
      }
      await Promise.race([this.exited, sleep(5_000)]);
    }
    // A run the agent started may outlive an agent killed on purpose: its group goes too.
    try {
      process.kill(-this.pid, "SIGKILL");
    } catch {
      // nothing left
    }
  }
}

afterEach(async () => {
  for (const daemon of daemons.splice(0)) await daemon.kill();
});

// ---------------------------------------------------------------------------------------------
// Repositories, configurations, roots
// ---------------------------------------------------------------------------------------------

/** A small profile repository: a templated motd (host and a label) and a plain file. */
function smallRepo(): string {
  return makeRepo({
    "fleet.yaml": fleet("  - match: {}\n    profiles: [base]\n"),
    "base.yaml": profile(
      "base",
      'files:\n  - { path: /etc/motd, template: motd.liquid }\n  - { path: /etc/app/a.conf, content: "a=1\\n" }\n',
    ),
    "motd.liquid": "{{ host.name }} role={{ labels.role }}\n",
  });
}

const SLOW_FILES = 6000;

/** A repository whose apply lasts: SLOW_FILES small files under /big. */
function slowRepo(): string {
  const lines: string[] = [];
  for (let i = 0; i < SLOW_FILES; i++) lines.push(`  - { path: /big/d${Math.floor(i / 500)}/f${i}, content: "x${i}" }`);
  return makeRepo({
    "fleet.yaml": fleet("  - match: {}\n    profiles: [big]\n"),
    "big.yaml": profile("big", `files:\n${lines.join("\n")}\n`),
  });
}

/** Files under `dir`, recursively (0 when it does not exist). */
function countFiles(dir: string): number {
  if (!existsSync(dir)) return 0;
  let n = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    n += entry.isDirectory() ? countFiles(path.join(dir, entry.name)) : 1;
  }
  return n;
}

interface ConfigOptions {
  source: string;
  stateDir: string;
  interval?: string;
  splay?: string;
  host?: string;
  role?: string;
  /** Extra lines under `source:`. */
  sourceExtra?: string;
  /** Extra top-level lines. */
  extra?: string;
}

function configText(o: ConfigOptions): string {
  return [
    "apiVersion: driftless/v1",
    "kind: AgentConfig",
    `host: ${o.host ?? "web-1"}`,
    `labels: { role: ${o.role ?? "web"} }`,
    `stateDir: ${o.stateDir}`,
    ...(o.extra ? [o.extra] : []),
    "source:",
    `  url: ${JSON.stringify(o.source)}`,
    `  interval: ${o.interval ?? "1h"}`,
    `  splay: ${o.splay ?? "0s"}`,
    ...(o.sourceExtra ? [o.sourceExtra] : []),
    "",
  ].join("\n");
}

interface Sandbox {
  root: string;
  stateDir: string;
  configFile: string;
  dir: string;
}

/** A managed root, a state directory and an agent.yaml for `source`. */
function sandbox(options: Omit<ConfigOptions, "stateDir">): Sandbox {
  const dir = tempDir("driftless-agent-");
  const root = path.join(dir, "root");
  const stateDir = path.join(dir, "state");
  const configFile = path.join(dir, "agent.yaml");
  writeFileSync(configFile, configText({ ...options, stateDir }));
  return { root, stateDir, configFile, dir };
}

function startAgent(box: Sandbox, extraArgs: string[] = ["--log-format", "json"], env: Record<string, string> = {}) {
  return new Daemon(["--config", box.configFile, "--root", box.root, ...extraArgs], env);
}

interface RunRecord {
  mode: string;
  result: string;
  summary: { resources: number; changed: number; failed: number };
}

/**
 * `driftless status --json`, its stdout sent to a file: through a pipe, a large output is cut
 * short (see "prints large JSON whole through a pipe" below).
 */
async function status(stateDir: string): Promise<RunRecord[]> {
  const out = path.join(tempDir("driftless-status-"), "status.json");
  const fd = openSync(out, "w");
  try {
    const code = await new Promise<number | null>((resolve, reject) => {
      const child = spawn(process.execPath, [CLI, "status", "--state", stateDir, "--json", "--limit", "50"], {
        env: childEnv(),
        stdio: ["ignore", fd, "inherit"],
      });
      child.on("error", reject);
      child.on("close", resolve);
    });
    expect(code).toBe(0);
  } finally {
    closeSync(fd);
  }
  return (JSON.parse(readFileSync(out, "utf8")) as { runs: RunRecord[] }).runs;
}

const ms = (line: LogLine | undefined) => Date.parse(String(line?.time));

// ---------------------------------------------------------------------------------------------
// 1. Timer
// ---------------------------------------------------------------------------------------------

describe("driftless agent: runs at start, then on the timer", () => {
  it("converges at once, then on the timer (never sooner than the interval after the last run) and corrects drift", async () => {
    const box = sandbox({ source: smallRepo(), interval: "1s", splay: "1s" });
    const agent = startAgent(box);
    const motd = path.join(box.root, "etc/motd");
    const conf = path.join(box.root, "etc/app/a.conf");

    const first = await agent.waitFor("run finished", 10_000);
    expect(agent.lines[first]?.result).toBe("changed");
    expect(readFileSync(motd, "utf8")).toBe("web-1 role=web\n");

    // Drift: only a later timer run can put the file back (nothing else triggers a run).
    rmSync(conf);
    const restored = await agent.waitFor((l) => l.msg === "run finished" && l.result === "changed", 10_000, first + 1);
    expect(readFileSync(conf, "utf8")).toBe("a=1\n");
    await agent.waitFor("run finished", 10_000, restored + 1);

    // Every run starts at least `interval` after the previous one finished (splay only adds).
    const finished = agent.indexesOf("run finished");
    const started = agent.indexesOf("run started");
    expect(finished.length).toBeGreaterThanOrEqual(3);
    for (let i = 0; i + 1 < finished.length && i + 1 < started.length; i++) {
      const gap = ms(agent.lines[started[i + 1] as number]) - ms(agent.lines[finished[i] as number]);
      expect(gap, `gap before run ${i + 2}`).toBeGreaterThanOrEqual(990);
    }
    // ...and the agent is still there: it is long-lived, not a --once.
    expect(agent.exit).toBeUndefined();
    const stop = await agent.terminate();
    expect(stop.code).toBe(0);
    // Every run is recorded (one SIGTERM may have interrupted is recorded too, and logged).
    expect((await status(box.stateDir)).length).toBe(agent.indexesOf("run finished").length);
  });
});

// ---------------------------------------------------------------------------------------------
// 2 and 3. Signals
// ---------------------------------------------------------------------------------------------

describe("driftless agent: signals", () => {
  it("SIGHUP runs at once with the reloaded configuration; an invalid one is logged and the old one kept", async () => {
    const box = sandbox({ source: smallRepo(), interval: "1h" });
    const config = (role: string, extra?: string) =>
      configText({
        source: readSource(box),
        stateDir: box.stateDir,
        interval: "1h",
        role,
        ...(extra ? { extra } : {}),
      });
    const motd = path.join(box.root, "etc/motd");
    const agent = startAgent(box);
    let at = await agent.waitFor("run finished", 10_000);
    expect(readFileSync(motd, "utf8")).toBe("web-1 role=web\n");

    // A new label; with a 1 h interval only the SIGHUP can cause the next run.
    writeFileSync(box.configFile, config("db"));
    const hup = Date.now();
    agent.signal("SIGHUP");
    at = await agent.waitFor("run finished", 10_000, at + 1);
    expect(Date.now() - hup).toBeLessThan(10_000);
    expect(agent.lines[at]?.result).toBe("changed");
    expect(readFileSync(motd, "utf8")).toBe("web-1 role=db\n");

    // An invalid configuration: logged as an error, the agent stays, and runs with the old one.
    writeFileSync(box.configFile, config("cache", "mode: sometimes"));
    rmSync(motd);
    const before = agent.lines.length;
    agent.signal("SIGHUP");
    await agent.waitFor((l) => l.level === "error", 10_000, before);
    at = await agent.waitFor("run finished", 10_000, before);
    const errors = agent.lines.slice(before).filter((l) => l.level === "error");
    expect(errors.map((l) => JSON.stringify(l)).join("\n")).toMatch(/agent\.yaml.*mode/);
    expect(readFileSync(motd, "utf8")).toBe("web-1 role=db\n");
    await sleep(300);
    expect(agent.exit).toBeUndefined();

    // Fixed: the next SIGHUP takes it.
    writeFileSync(box.configFile, config("cache"));
    agent.signal("SIGHUP");
    at = await agent.waitFor("run finished", 10_000, at + 1);
    expect(readFileSync(motd, "utf8")).toBe("web-1 role=cache\n");

    // SIGTERM while idle: gone at once, exit 0.
    const stop = await agent.terminate();
    expect(stop.code).toBe(0);
    expect(stop.ms).toBeLessThan(10_000);
    const runs = await status(box.stateDir);
    expect(runs.length).toBeGreaterThanOrEqual(4);
    expect(runs.every((r) => r.result !== "interrupted")).toBe(true);
  });

  it("SIGTERM during a run: the resource under way finishes, the rest are not started, the run is recorded as interrupted, exit 0 within 10 s", async () => {
    const box = sandbox({ source: slowRepo(), interval: "1h" });
    const agent = startAgent(box);
    const big = path.join(box.root, "big");
    await agent.waitFor("run started", 20_000);
    // The apply is under way once the first file is there.
    await until("the first file of the run", () => existsSync(big), 30_000);
    const stop = await agent.terminate(15_000);
    const written = countFiles(big);

    expect(stop.ms, agent.log()).toBeLessThan(10_000);
    expect(stop.code, agent.log()).toBe(0);
    const runs = await status(box.stateDir);
    expect(runs[0]?.result, agent.log()).toBe("interrupted");
    expect(written).toBeGreaterThan(0);
    expect(written, `${written} of ${SLOW_FILES} files written after SIGTERM`).toBeLessThan(SLOW_FILES);
    // The record says what was done: every file written is counted, none is half-written.
    expect(runs[0]?.summary.changed).toBe(written);
    const finished = agent.lines.find((l) => l.msg === "run finished");
    expect(finished?.result).toBe("interrupted");
  });
});

/** The source URL an agent.yaml written by `sandbox` names. */
function readSource(box: Sandbox): string {
  const match = /^ {2}url: (.*)$/m.exec(readFileSync(box.configFile, "utf8"));
  return JSON.parse(match?.[1] ?? '""') as string;
}

// ---------------------------------------------------------------------------------------------
// 4. One run at a time
// ---------------------------------------------------------------------------------------------

describe("driftless agent: one run at a time, with driftless apply", () => {
  it("apply fails fast while the agent runs (naming it, suggesting --wait); apply --wait runs after it", async () => {
    const repo = slowRepo();
    const box = sandbox({ source: repo, interval: "1h" });
    const agent = startAgent(box);
    await agent.waitFor("run started", 20_000);
    await until("the agent's apply", () => existsSync(path.join(box.root, "big")), 30_000);

    const args = ["apply", "--source", repo, "--root", box.root, "--state", box.stateDir];
    const waiting = cli([...args, "--wait"], { timeoutMs: 60_000 });
    const refused = await cli(args);
    expect(refused.exitCode, refused.stderr).toBe(1);
    const named = /another run is in progress: driftless agent \(pid (\d+)\)/.exec(refused.stderr);
    expect(named, refused.stderr).not.toBeNull();
    expect(refused.stderr).toContain("--wait");
    // The pid is the agent's run: the agent itself or a process it started.
    const owner = Number(named?.[1]);
    if (owner !== agent.pid && existsSync(`/proc/${owner}/status`)) {
      expect(readFileSync(`/proc/${owner}/status`, "utf8")).toMatch(new RegExp(`^PPid:\\s+${agent.pid}$`, "m"));
    }
    expect(agent.indexesOf("run finished"), "the agent's run was still under way").toEqual([]);

    const waited = await waiting;
    expect([0, 2], waited.stderr).toContain(waited.exitCode);
    expect(waited.stderr).toMatch(/Waiting: .*driftless agent/);
    const agentDone = await agent.waitFor("run finished", 30_000);
    expect(waited.endedAt).toBeGreaterThanOrEqual(ms(agent.lines[agentDone]));
    // Both runs are recorded, the agent's first.
    const runs = await status(box.stateDir);
    expect(runs.map((r) => r.mode)).toEqual(["apply", "apply"]);
    expect((await agent.terminate()).code).toBe(0);
  });

  it("the agent waits for a driftless apply under way, then runs", async () => {
    const repo = slowRepo();
    const box = sandbox({ source: repo, interval: "1h" });
    const apply = cli(["apply", "--source", repo, "--root", box.root, "--state", box.stateDir], { timeoutMs: 60_000 });
    await until("apply's lock", () => existsSync(path.join(box.stateDir, "run.lock")), 20_000);

    const agent = startAgent(box);
    const waited = await agent.waitFor("waiting for a run in progress", 20_000);
    expect(JSON.stringify(agent.lines[waited])).toMatch(/driftless apply \(pid \d+\)/);
    expect(agent.indexesOf("run started").every((i) => i > waited)).toBe(true);

    const applied = await apply;
    expect(applied.exitCode, applied.stderr).toBe(2);
    const done = await agent.waitFor("run finished", 30_000);
    expect(agent.indexesOf("run started")[0]).toBeGreaterThan(waited);
    // It ran after the apply was complete: nothing left to change.
    expect(agent.lines[done]?.result).toBe("in-sync");
    expect((await agent.terminate()).code).toBe(0);
  });

  it("a stale lock (its process is gone) blocks neither the agent nor apply", async () => {
    const box = sandbox({ source: smallRepo() });
    const dead = spawn(process.execPath, ["-e", ""]);
    const deadPid = dead.pid as number;
    await new Promise((resolve) => dead.on("close", resolve));
    const stale = JSON.stringify({ pid: deadPid, since: "2020-01-01T00:00:00.000Z", what: "driftless apply" });
    mkdirSync(box.stateDir, { recursive: true, mode: 0o700 });
    writeFileSync(path.join(box.stateDir, "run.lock"), stale);

    const once = await cli(["agent", "--config", box.configFile, "--root", box.root, "--once"], { timeoutMs: 20_000 });
    expect(once.exitCode, once.stderr).toBe(2);
    expect(logsOf(once.stderr).some((l) => l.msg === "waiting for a run in progress")).toBe(false);

    writeFileSync(path.join(box.stateDir, "run.lock"), stale);
    const apply = await cli([
      "apply",
      "--source",
      readSource(box),
      "--root",
      box.root,
      "--state",
      box.stateDir,
      "--host",
      "web-1",
      "--label",
      "role=web",
    ]);
    expect(apply.exitCode, apply.stderr).toBe(0);
  });
});

// ---------------------------------------------------------------------------------------------
// 5. Logs
// ---------------------------------------------------------------------------------------------

describe("driftless agent: logs", () => {
  it("writes one JSON object per line when stderr is not a terminal", async () => {
    const box = sandbox({ source: smallRepo() });
    const agent = startAgent(box, []); // no --log-format: the default off a terminal
    await agent.waitFor("run finished", 10_000);
    await agent.terminate();
    const lines = agent.raw.filter((l) => l.trim() !== "");
    expect(lines.length).toBeGreaterThanOrEqual(4);
    for (const line of lines) {
      const entry = JSON.parse(line) as LogLine;
      expect(Number.isNaN(Date.parse(entry.time)), line).toBe(false);
      expect(["debug", "info", "warn", "error"], line).toContain(entry.level);
      expect(typeof entry.msg, line).toBe("string");
    }
    expect(lines.map((l) => (JSON.parse(l) as LogLine).msg)).toEqual(
      expect.arrayContaining(["agent started", "run started", "run finished", "agent stopped"]),
    );
    expect(agent.stdout).toBe("");
  });

  it("--log-level warn hides info lines", async () => {
    const box = sandbox({ source: smallRepo() });
    const base = ["agent", "--config", box.configFile, "--root", box.root, "--once"];
    const quiet = await cli([...base, "--log-level", "warn"]);
    expect(quiet.exitCode, quiet.stderr).toBe(2);
    expect(logsOf(quiet.stderr).filter((l) => l.level === "info" || l.level === "debug")).toEqual([]);
    expect(quiet.stderr).not.toContain("run started");
    // The same run at the default level does log them.
    const loud = await cli(base);
    expect(loud.exitCode, loud.stderr).toBe(0);
    expect(logsOf(loud.stderr).map((l) => l.msg)).toContain("run finished");
  });

  it("never shows the URL's password or the token, with --once or as a daemon", async () => {
    const token = "tok-7f3a9c21e5d84b06";
    const dir = tempDir();
    const tokenFile = path.join(dir, "git-token");
    writeFileSync(tokenFile, `${token}\n`, { mode: 0o600 });
    const box = sandbox({
      source: "https://user:s3cret@127.0.0.1:1/x.git",
      sourceExtra: `  tokenFile: ${tokenFile}`,
      interval: "1h",
    });

    for (const level of ["info", "debug"]) {
      const once = await cli(["agent", "--config", box.configFile, "--root", box.root, "--once", "--log-level", level]);
      expect(once.exitCode).toBe(1); // nothing fetched, nothing cached
      const output = once.stdout + once.stderr;
      expect(output).toMatch(/fetch/i);
      expect(output).not.toContain("s3cret");
      expect(output).not.toContain(token);
    }

    const agent = startAgent(box, ["--log-format", "json", "--log-level", "debug"]);
    await agent.waitFor((l) => l.level === "error" || l.msg === "run finished", 15_000);
    await agent.terminate();
    const output = agent.stdout + agent.log();
    expect(output).toMatch(/fetch/i);
    expect(output).not.toContain("s3cret");
    expect(output).not.toContain(token);
  });
});

// ---------------------------------------------------------------------------------------------
// 6 and 7. --once, environment overrides
// ---------------------------------------------------------------------------------------------

describe("driftless agent --once", () => {
  it("runs one cycle and exits with apply's exit codes: 2 changed, then 0 in sync", async () => {
    const box = sandbox({ source: smallRepo(), interval: "1s" });
    const args = ["agent", "--config", box.configFile, "--root", box.root, "--once"];
    const first = await cli(args, { timeoutMs: 20_000 });
    expect(first.exitCode, first.stderr).toBe(2);
    expect(readFileSync(path.join(box.root, "etc/motd"), "utf8")).toBe("web-1 role=web\n");
    const second = await cli(args, { timeoutMs: 20_000 });
    expect(second.exitCode, second.stderr).toBe(0);
    // One run each: it did not stay for the 1 s timer.
    expect(logsOf(second.stderr).filter((l) => l.msg === "run finished").length).toBe(1);
    expect((await status(box.stateDir)).map((r) => r.result)).toEqual(["in-sync", "changed"]);
  });

  it("takes DRIFTLESS_HOST and DRIFTLESS_MODE=report from the environment: a plan, recorded, nothing changed", async () => {
    const box = sandbox({ source: smallRepo() });
    const args = ["agent", "--config", box.configFile, "--root", box.root, "--once"];
    const report = await cli(args, { env: { DRIFTLESS_HOST: "edge-9", DRIFTLESS_MODE: "report" } });
    expect(report.exitCode, report.stderr).toBe(2);
    expect(existsSync(path.join(box.root, "etc"))).toBe(false);
    const runs = await status(box.stateDir);
    expect(runs.length).toBe(1);
    expect(runs[0]?.mode).toBe("report");

    const enforce = await cli(args, { env: { DRIFTLESS_HOST: "edge-9" } });
    expect(enforce.exitCode, enforce.stderr).toBe(2);
    expect(readFileSync(path.join(box.root, "etc/motd"), "utf8")).toBe("edge-9 role=web\n");
    const inSync = await cli(args, { env: { DRIFTLESS_HOST: "edge-9", DRIFTLESS_MODE: "report" } });
    expect(inSync.exitCode, inSync.stderr).toBe(0);
  });

  it("fails with exit 1 naming the variable when an environment value is invalid", async () => {
    const box = sandbox({ source: smallRepo() });
    const args = ["agent", "--config", box.configFile, "--root", box.root, "--once"];
    const mode = await cli(args, { env: { DRIFTLESS_MODE: "sometimes" } });
    expect(mode.exitCode).toBe(1);
    expect(mode.stderr).toContain("DRIFTLESS_MODE");
    const interval = await cli(args, { env: { DRIFTLESS_SOURCE_INTERVAL: "soon" } });
    expect(interval.exitCode).toBe(1);
    expect(interval.stderr).toContain("DRIFTLESS_SOURCE_INTERVAL");
    expect(existsSync(path.join(box.root, "etc"))).toBe(false);
  });
});

// ---------------------------------------------------------------------------------------------
// 8. install / uninstall
// ---------------------------------------------------------------------------------------------

if (!isRoot) console.warn("[driftless] skipping driftless install/uninstall tests: not running as root");

describe.skipIf(!isRoot)("driftless install / uninstall --root (an image)", () => {
  it("writes the unit, a valid configuration and the state folder, enables the unit; idempotent; uninstall and --purge", async () => {
    const dir = tempDir("driftless-image-");
    const install = ["install", "--root", dir, "--source", "https://git.example.com/fleet.git", "--host", "edge-1"];
    const first = await cli(install);
    expect(first.exitCode, first.stdout + first.stderr).toBe(2);

    const unit = path.join(dir, "etc/systemd/system/driftless.service");
    expect(readFileSync(unit, "utf8")).toMatch(/^ExecStart=.* agent --config \/etc\/driftless\/agent\.yaml$/m);
    const wants = path.join(dir, "etc/systemd/system/multi-user.target.wants/driftless.service");
    expect(lstatSync(wants).isSymbolicLink()).toBe(true);
    const config = path.join(dir, "etc/driftless/agent.yaml");
    expect(statSync(config).mode & 0o777).toBe(0o600);
    expect(readFileSync(config, "utf8")).toContain("https://git.example.com/fleet.git");
    const state = path.join(dir, "var/lib/driftless");
    expect(statSync(state).isDirectory()).toBe(true);
    expect(statSync(state).mode & 0o777).toBe(0o700);

    // The configuration loads: the run gets as far as fetching (offline here), not a config error.
    const stateDir = tempDir();
    const once = await cli(["agent", "--config", config, "--root", dir, "--once"], {
      env: { DRIFTLESS_STATE_DIR: stateDir },
    });
    expect(once.exitCode).toBe(1);
    expect(once.stderr).toMatch(/fetch/i);
    expect(once.stderr).toContain("git.example.com");
    expect(once.stderr).not.toMatch(/config(uration)? .*invalid/i);
    expect(readdirSync(state)).toEqual([]); // DRIFTLESS_STATE_DIR was used

    const second = await cli(install);
    expect(second.exitCode, second.stdout).toBe(0);

    const uninstall = await cli(["uninstall", "--root", dir]);
    expect(uninstall.exitCode, uninstall.stdout + uninstall.stderr).toBe(2);
    expect(existsSync(unit)).toBe(false);
    expect(() => lstatSync(wants)).toThrow();
    expect(existsSync(config)).toBe(true);
    expect(existsSync(state)).toBe(true);

    const purge = await cli(["uninstall", "--root", dir, "--purge"]);
    expect(purge.exitCode, purge.stdout + purge.stderr).toBe(0);
    expect(existsSync(path.join(dir, "etc/driftless"))).toBe(false);
    expect(existsSync(state)).toBe(false);
  });
});

// ---------------------------------------------------------------------------------------------
// Found on the way: large outputs through a pipe
// ---------------------------------------------------------------------------------------------

describe("driftless CLI output through a pipe", () => {
  it("prints large JSON whole through a pipe (status and plan --json of thousands of changes)", async () => {
    const box = sandbox({ source: slowRepo() });
    const plan = await cli(["plan", "--source", readSource(box), "--root", box.root, "--json"]);
    expect(plan.exitCode, plan.stderr).toBe(2);
    // bin/driftless.js calls process.exit() as soon as main() returns; stdout to a pipe is
    // written asynchronously, so whatever the pipe had not taken yet is lost.
    expect(() => JSON.parse(plan.stdout), `${plan.stdout.length} bytes of JSON read`).not.toThrow();
    expect((JSON.parse(plan.stdout) as { changes: unknown[] }).changes.length).toBe(SLOW_FILES);
  });
});
