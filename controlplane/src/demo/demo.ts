/**
 * `driftlessctl demo`: the whole loop on one machine, without root. In one directory it makes a
 * Git repository from the project's `profiles/` (served over smart HTTP by `git http-backend`),
 * a work clone to edit and push from, a control plane (serve, embedded broker, SQLite), and N
 * hosts: sandbox trees converged by `driftless agent --root` child processes that report to it.
 * A push to the served repository sends the fleet `refresh`, as a Git webhook would. The fleet
 * table is printed whenever it changes. SIGINT or SIGTERM stops everything, in order.
 *
 * Layout of the demo directory:
 *   data/                   the control plane's data (fleet.db, api-token)
 *   git/fleet.git           the served bare repository
 *   work/                   a clone of it (origin: the HTTP URL)
 *   hosts/NAME/             a host's tree: etc/driftless/agent.yaml and mqtt-password,
 *                           var/lib/driftless (its state), and what its profiles converge
 *   logs/                   controlplane.log, NAME.log (each agent's JSON log)
 *   driftlessctl            the fleet CLI with this demo's URL and token
 */
import { type ChildProcess, spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import * as fs from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { makeStyle, type Style } from "../../../agent/src/cli/style.js";
import { createLogger, type Logger } from "../../../agent/src/log.js";
import { generatePassword, hashPassword } from "../auth/password.js";
import { hostsTable } from "../cli/fleet.js";
import { FleetError } from "../errors.js";
import type { HostPort, HttpStarter, RunningServe } from "../serve.js";
import { startServe } from "../serve.js";
import type { HostSummary } from "../store/types.js";
import { type GitHttpServer, git, gitEnv, startGitHttpServer } from "./git-http.js";

export interface DemoOptions {
  /** The demo directory; absent: a new temp dir. */
  dir?: string;
  hosts: number;
  http: HostPort;
  mqtt: HostPort;
  /** Keep the directory when the demo stops. */
  keep: boolean;
  /** How often each agent runs (default 30 s). */
  interval?: string;
  /** How often the fleet table is read (default 1 s). */
  pollMs?: number;
}

export interface DemoDeps {
  out(line: string): void;
  err(line: string): void;
  /** Resolves at the next SIGINT or SIGTERM. */
  stopSignal(): Promise<string>;
  /** Colours in the fleet table. */
  color: boolean;
  createHttp: HttpStarter;
}

const REPO = "fleet";
const BRANCH = "main";
/** How long agents get to stop after SIGTERM (they finish within 10 s) before SIGKILL. */
const AGENT_GRACE_MS = 12_000;
const IDENTITY = {
  GIT_AUTHOR_NAME: "Driftless Demo",
  GIT_AUTHOR_EMAIL: "demo@driftless.invalid",
  GIT_COMMITTER_NAME: "Driftless Demo",
  GIT_COMMITTER_EMAIL: "demo@driftless.invalid",
};

interface Agent {
  name: string;
  root: string;
  log: string;
  child: ChildProcess;
  exited: Promise<void>;
}

export async function runDemo(options: DemoOptions, deps: DemoDeps): Promise<number> {
  if (!Number.isInteger(options.hosts) || options.hosts < 1 || options.hosts > 50) {
    throw new FleetError(`--hosts ${options.hosts}: expected a whole number from 1 to 50`, { code: "EUSAGE" });
  }
  const stopping = deps.stopSignal();
  let stopRequested = false;
  void stopping.then(() => {
    stopRequested = true;
  });
  const pkg = packageRoot();
  const { dir, created } = demoDir(options.dir);
  const logsDir = path.join(dir, "logs");
  fs.mkdirSync(logsDir, { recursive: true });
  const logFd = fs.openSync(path.join(logsDir, "controlplane.log"), "a");
  const log = createLogger({
    write: (line) => fs.writeSync(logFd, `${line}\n`),
    json: true,
    level: process.env.DRIFTLESS_DEBUG ? "debug" : "info",
    now: () => new Date(),
  });
  const closers: Array<() => Promise<void>> = [
    async () => {
      fs.closeSync(logFd);
      if (created && !options.keep) fs.rmSync(dir, { recursive: true, force: true });
    },
  ];
  const close = async () => {
    for (const closer of closers.splice(0).reverse()) {
      try {
        await closer();
      } catch (error) {
        deps.err(`driftlessctl demo: while stopping: ${(error as Error).message}`);
      }
    }
  };
  const agents: Agent[] = [];
  try {
    const env = { ...gitEnv(dir), ...IDENTITY };
    const bare = path.join(dir, "git", `${REPO}.git`);
    let serve: RunningServe | null = null;
    const gitServer: GitHttpServer = await startGitHttpServer({
      root: path.dirname(bare),
      host: "127.0.0.1",
      port: 0,
      onPush: (repository) => {
        if (repository === `${REPO}.git` && serve) void announcePush(serve, bare, env, log, deps);
      },
    });
    closers.push(() => gitServer.close());
    const repoUrl = gitServer.url(REPO);
    const work = path.join(dir, "work");
    await makeRepository(path.join(pkg, "profiles"), bare, work, repoUrl, env);

    const printed: string[] = [];
    serve = await startServe(
      { dataDir: path.join(dir, "data"), http: options.http, mqtt: options.mqtt },
      { log, now: () => new Date(), print: (line) => printed.push(line), createHttp: deps.createHttp },
    );
    const running = serve;
    closers.push(() => running.close());
    const apiUrl = running.httpUrl as string;
    const tokenFile = path.join(dir, "data", "api-token");
    const ctl = writeCtlScript(dir, pkg, apiUrl, tokenFile);
    const brokerUrl = `mqtt://${reachable(options.mqtt.host)}:${running.mqttPort}`;

    const names = Array.from({ length: options.hosts }, (_, i) => `demo-${i + 1}`);
    for (const [i, name] of names.entries()) {
      const root = path.join(dir, "hosts", name);
      const password = generatePassword();
      const labels = { role: "demo", site: i % 2 === 0 ? "lyon" : "porto" };
      const store = running.context.store;
      // As `hosts add --label`: the fleet shows these labels whatever the agent reports.
      if ((await store.credentialHash(name)) !== null) await store.removeCredential(name);
      await store.addCredential(name, await hashPassword(password), labels);
      writeAgentConfig(root, {
        host: name,
        labels,
        sourceUrl: repoUrl,
        interval: options.interval ?? "30s",
        brokerUrl,
        password,
      });
    }
    closers.push(() => stopAgents(agents, deps));
    for (const name of names) {
      agents.push(startAgent(pkg, dir, name, deps, () => stopRequested));
    }

    const style = makeStyle(deps.color);
    const first = names[0] as string;
    const lines = [
      `Driftless demo: ${names.length} hosts converge sandbox trees from a Git repository and report to a control plane.`,
      `  directory   ${dir}${created && !options.keep ? "  (removed when the demo stops; --keep keeps it)" : ""}`,
      `  dashboard   ${running.loginUrl}`,
      `  API         ${apiUrl}  (token in ${tokenFile})`,
      `  MQTT        ${brokerUrl}`,
      `  Git         ${repoUrl}  (made from ${path.join(pkg, "profiles")})`,
      `  hosts       ${path.join(dir, "hosts")}/{${names.join(",")}}: each host's tree (agent.yaml in etc/driftless/)`,
      `  logs        ${logsDir}`,
      "",
      style.bold("Push a commit; the fleet picks it up within seconds:"),
      `  cd ${dir}/work && sed -i 's/site: lab/site: lyon/' base.yaml && git commit -qam "Move to Lyon" && git push`,
      style.bold("Make drift; the agent puts it back (enforce mode) and reports what it corrected:"),
      `  echo edited >> ${path.join(dir, "hosts", first, "etc", "motd")}`,
      `  ${ctl} converge ${first}; sleep 2; ${ctl} drift ${first}`,
      style.bold("The fleet CLI for this demo:"),
      `  ${ctl} hosts    (or: driftlessctl hosts --url ${apiUrl} --token-file ${tokenFile})`,
      "",
      "Ctrl-C stops everything.",
      "",
    ];
    for (const line of lines) deps.out(line);

    const stopWatching = watchFleet(running, style, deps.out, options.pollMs ?? 1000);
    closers.push(async () => stopWatching());
    const signal = await stopping;
    stopRequested = true;
    deps.out(`\n${signal}: stopping the agents, the control plane and the Git server...`);
    // A second Ctrl-C while stopping must not kill this process before its children are gone.
    const hold = () =>
      void deps.stopSignal().then(() => {
        deps.out("still stopping...");
        hold();
      });
    hold();
    await close();
    deps.out(created && !options.keep ? `Stopped; removed ${dir}.` : `Stopped; kept ${dir}.`);
    return 0;
  } catch (error) {
    stopRequested = true;
    await close();
    throw error;
  }
}

/** The package's root: the folder with bin/driftless.js and profiles/ (from the source or the bundle). */
function packageRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (fs.existsSync(path.join(dir, "bin", "driftless.js")) && fs.existsSync(path.join(dir, "profiles", "fleet.yaml")))
      return dir;
    const parent = path.dirname(dir);
    if (parent === dir) {
      throw new FleetError("cannot find the Driftless package (bin/driftless.js and profiles/) above this program", {
        code: "ECONFIG",
      });
    }
    dir = parent;
  }
}

/** The demo directory: `--dir` (new, empty, or a kept demo's), or a new temp dir. */
function demoDir(given: string | undefined): { dir: string; created: boolean } {
  if (given === undefined) return { dir: fs.mkdtempSync(path.join(tmpdir(), "driftless-demo-")), created: true };
  const dir = path.resolve(given);
  let entries: string[] | null = null;
  try {
    entries = fs.readdirSync(dir);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ENOENT") {
      throw new FleetError(`--dir ${dir}: ${(error as Error).message}`, { code: "EUSAGE" });
    }
  }
  if (entries === null) {
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    return { dir, created: true };
  }
  if (entries.length > 0 && !fs.existsSync(path.join(dir, "git", `${REPO}.git`))) {
    throw new FleetError(`--dir ${dir}: not empty, and not a demo's directory; give a new or empty one`, {
      code: "EUSAGE",
    });
  }
  return { dir, created: false };
}

/** The bare repository (from `profiles/`, first commit) and the work clone, unless a kept demo has them. */
async function makeRepository(
  profiles: string,
  bare: string,
  work: string,
  url: string,
  env: Record<string, string>,
): Promise<void> {
  if (!fs.existsSync(bare)) {
    fs.mkdirSync(bare, { recursive: true });
    await git(["init", "--quiet", "--bare", `--initial-branch=${BRANCH}`, bare], { env });
    await git(["config", "http.receivepack", "true"], { cwd: bare, env });
    fs.rmSync(work, { recursive: true, force: true });
    await git(["init", "--quiet", `--initial-branch=${BRANCH}`, work], { env });
    fs.cpSync(profiles, work, { recursive: true });
    await git(["add", "--all"], { cwd: work, env });
    await git(["commit", "--quiet", "-m", "Fleet profiles from the Driftless example"], { cwd: work, env });
    await git(["remote", "add", "origin", bare], { cwd: work, env });
    await git(["push", "--quiet", "--set-upstream", "origin", BRANCH], { cwd: work, env });
    // The user's commits work without a global identity (this clone only).
    await git(["config", "user.name", IDENTITY.GIT_AUTHOR_NAME], { cwd: work, env });
    await git(["config", "user.email", IDENTITY.GIT_AUTHOR_EMAIL], { cwd: work, env });
  }
  // Pushes go over HTTP, through the server that tells the fleet (its port is new at each start).
  if (fs.existsSync(work)) await git(["remote", "set-url", "origin", url], { cwd: work, env });
}

/** A push arrived: the fleet gets `refresh` with the new commit, as after a webhook. */
async function announcePush(
  serve: RunningServe,
  bare: string,
  env: Record<string, string>,
  log: Logger,
  deps: DemoDeps,
): Promise<void> {
  try {
    const commit = (await git(["rev-parse", `refs/heads/${BRANCH}`], { cwd: bare, env })).trim();
    const id = randomUUID();
    // Recorded as a webhook's push is: the dashboard marks it as the fleet's newest commit.
    await serve.context.store.recordPush({ commit, ref: BRANCH }, serve.context.now());
    serve.context.events.emit({ kind: "push", host: null });
    await serve.context.publishCommand(null, { cmd: "refresh", commit, ref: BRANCH, id });
    log.info("push received", { provider: "demo", branch: BRANCH, commit, id });
    deps.out(`${clock()} push: ${BRANCH} is now ${commit.slice(0, 12)}; refresh sent to the fleet`);
  } catch (error) {
    log.error("push not announced", { error: (error as Error).message });
    deps.err(`driftlessctl demo: the push was not announced to the fleet: ${(error as Error).message}`);
  }
}

interface AgentFiles {
  host: string;
  labels: Record<string, string>;
  sourceUrl: string;
  interval: string;
  brokerUrl: string;
  password: string;
}

/** HOST_ROOT/etc/driftless/agent.yaml and mqtt-password; the state in HOST_ROOT/var/lib/driftless. */
function writeAgentConfig(root: string, files: AgentFiles): void {
  const etc = path.join(root, "etc", "driftless");
  const stateDir = path.join(root, "var", "lib", "driftless");
  fs.mkdirSync(etc, { recursive: true, mode: 0o700 });
  fs.mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  fs.writeFileSync(path.join(etc, "mqtt-password"), `${files.password}\n`, { mode: 0o600 });
  const labels = Object.entries(files.labels)
    .map(([k, v]) => `${k}: ${v}`)
    .join(", ");
  const yaml = `# Written by driftlessctl demo: this host's agent, converging the tree it is in (--root).
apiVersion: driftless/v1
kind: AgentConfig
host: ${files.host}
labels: { ${labels} }
mode: enforce
stateDir: ${JSON.stringify(stateDir)}
source:
  url: ${files.sourceUrl}
  ref: ${BRANCH}
  interval: ${files.interval}
  splay: 2s
broker:
  url: ${files.brokerUrl}
  username: ${files.host}
  passwordFile: mqtt-password
`;
  fs.writeFileSync(path.join(etc, "agent.yaml"), yaml, { mode: 0o600 });
}

/** `driftless agent --config HOST_ROOT/etc/driftless/agent.yaml --root HOST_ROOT`, in its own process group. */
function startAgent(pkg: string, dir: string, name: string, deps: DemoDeps, stopping: () => boolean): Agent {
  const root = path.join(dir, "hosts", name);
  const logFile = path.join(dir, "logs", `${name}.log`);
  const fd = fs.openSync(logFile, "a");
  // The demo's settings, not the caller's DRIFTLESS_* overrides.
  const env = Object.fromEntries(Object.entries(process.env).filter(([key]) => !key.startsWith("DRIFTLESS_")));
  const child = spawn(
    process.execPath,
    [
      path.join(pkg, "bin", "driftless.js"),
      "agent",
      "--config",
      path.join(root, "etc", "driftless", "agent.yaml"),
      "--root",
      root,
      "--log-format",
      "json",
    ],
    // Its own process group: Ctrl-C reaches the demo only, which stops the agents in order.
    { detached: true, stdio: ["ignore", fd, fd], env: { ...env, NO_COLOR: "1" } },
  );
  fs.closeSync(fd);
  const exited = new Promise<void>((resolve) => {
    child.once("error", (error) => {
      deps.err(`driftlessctl demo: agent ${name} did not start: ${error.message}`);
      resolve();
    });
    child.once("exit", (code, signal) => {
      if (!stopping())
        deps.err(`driftlessctl demo: agent ${name} exited (${signal ?? `code ${code}`}); see ${logFile}`);
      resolve();
    });
  });
  return { name, root, log: logFile, child, exited };
}

/** SIGTERM to each agent, SIGKILL to what is left of its process group after the grace period. */
async function stopAgents(agents: Agent[], deps: DemoDeps): Promise<void> {
  await Promise.all(
    agents.map(async (agent) => {
      const pid = agent.child.pid;
      if (pid === undefined) return;
      if (agent.child.exitCode === null && agent.child.signalCode === null) agent.child.kill("SIGTERM");
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(true), AGENT_GRACE_MS);
      });
      const killed = await Promise.race([agent.exited.then(() => false), late]);
      clearTimeout(timer);
      if (killed) deps.err(`driftlessctl demo: agent ${agent.name} did not stop in time; killing it`);
      // The whole group: a run the supervisor started goes too.
      try {
        process.kill(-pid, "SIGKILL");
      } catch {
        // the group is gone already
      }
      await agent.exited;
    }),
  );
}

/** Prints the fleet table whenever what it shows changes (ages aside); returns the stopper. */
function watchFleet(serve: RunningServe, style: Style, out: (line: string) => void, everyMs: number): () => void {
  let last = "";
  let busy = false;
  const look = async () => {
    if (busy) return;
    busy = true;
    try {
      const now = new Date();
      const hosts = await serve.context.store.listHosts({}, now);
      const key = JSON.stringify(hosts.map(tableKey));
      if (key === last) return;
      last = key;
      out(style.dim(`${clock()} fleet:`));
      for (const line of hostsTable(hosts, style, now)) out(`  ${line}`);
    } catch {
      // the store is closing
    } finally {
      busy = false;
    }
  };
  void look();
  const timer = setInterval(() => void look(), everyMs);
  return () => clearInterval(timer);
}

/** What a row shows that matters: not the ages, nor a new run that found everything in sync. */
function tableKey(h: HostSummary): unknown[] {
  const run = h.lastRun ? (h.lastRun.result === "in-sync" ? "in-sync" : [h.lastRun.seq, h.lastRun.result]) : null;
  return [h.id, h.presence, h.sync, h.commit, run, h.labels];
}

function clock(): string {
  return new Date().toISOString().slice(11, 19);
}

/** An address others can connect to: a wildcard listen address is reached on loopback. */
function reachable(host: string): string {
  if (host === "0.0.0.0" || host === "") return "127.0.0.1";
  if (host === "::") return "[::1]";
  return host.includes(":") ? `[${host}]` : host;
}

/** DIR/driftlessctl: the fleet CLI with this demo's URL and token file. */
function writeCtlScript(dir: string, pkg: string, url: string, tokenFile: string): string {
  const quote = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
  const file = path.join(dir, "driftlessctl");
  fs.writeFileSync(
    file,
    `#!/bin/sh
# driftlessctl for the demo in this directory: its control plane's URL and API token.
DRIFTLESS_URL=${quote(url)} DRIFTLESS_TOKEN_FILE=${quote(tokenFile)} exec ${quote(process.execPath)} ${quote(path.join(pkg, "bin", "driftlessctl.js"))} "$@"
`,
    { mode: 0o755 },
  );
  return file;
}
