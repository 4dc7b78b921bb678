// `driftless agent --once` following a real Git repository over smart HTTP (`git http-backend`
// behind test/support/git-server.ts). The agent runs as its own process, the built CLI; what it
// did is read back from the files it converged under --root, its exit code, `driftless status
// --json` and its JSON log lines. The Git server runs in this process, so every CLI call that may
// talk to it is spawned asynchronously (spawnSync would block the server it is waiting for).
import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import * as path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { CLI } from "../support/cli.js";
import {
  cleanup,
  createRepo,
  exec,
  type GitRequest,
  type GitServer,
  type GitServerOptions,
  makeGpgKey,
  makeSshKey,
  startGitServer,
  type WorkRepo,
} from "../support/git-server.js";
import { cleanupTemp, fleet, profile, tempDir } from "../support/repo.js";

afterAll(async () => {
  await cleanup();
  cleanupTemp();
});

const HOST = "edge-1";

// ---------------------------------------------------------------------------------------------
// Running the CLI
// ---------------------------------------------------------------------------------------------

interface LogLine {
  level: string;
  msg: string;
  [field: string]: unknown;
}

interface CliRun {
  exitCode: number;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  /** The JSON log lines of stderr. */
  logs: LogLine[];
}

interface RunRecord {
  id: string;
  source: string;
  commit: string | null;
  result: string;
  errors: Array<{ code?: string; message: string }>;
  changes: Array<{ resource: string; action: string }>;
}

/** The environment of the CLI, without the DRIFTLESS_* overrides of whoever runs the tests. */
function cliEnv(): Record<string, string> {
  const env: Record<string, string> = { NO_COLOR: "1" };
  for (const [key, value] of Object.entries(process.env)) {
    if (value !== undefined && !key.startsWith("DRIFTLESS_")) env[key] = value;
  }
  return env;
}

function parseLogs(stderr: string): LogLine[] {
  const logs: LogLine[] = [];
  for (const line of stderr.split("\n")) {
    if (!line.startsWith("{")) continue;
    try {
      logs.push(JSON.parse(line) as LogLine);
    } catch {
      // not a log line
    }
  }
  return logs;
}

/** Starts the CLI (`node bin/driftless.js ARGS`) as a child process. */
function startCli(args: string[]): { child: ChildProcess; done: Promise<CliRun> } {
  const child = spawn(process.execPath, [CLI, ...args], { env: cliEnv(), stdio: ["ignore", "pipe", "pipe"] });
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  child.stdout?.on("data", (c: Buffer) => out.push(c));
  child.stderr?.on("data", (c: Buffer) => err.push(c));
  const done = new Promise<CliRun>((resolve, reject) => {
    child.on("error", reject);
    child.on("close", (code, signal) => {
      const stderr = Buffer.concat(err).toString("utf8");
      resolve({
        exitCode: code ?? -1,
        signal,
        stdout: Buffer.concat(out).toString("utf8"),
        stderr,
        logs: parseLogs(stderr),
      });
    });
  });
  return { child, done };
}

function cli(args: string[]): Promise<CliRun> {
  return startCli(args).done;
}

const NO_STACK = /^\s+at .+(:\d+:\d+\)?|\(native\))$/m;

// ---------------------------------------------------------------------------------------------
// A host following a repository
// ---------------------------------------------------------------------------------------------

interface AgentOptions {
  trust?: { allowedSigners?: string; openpgpKeys?: string; allowRollback?: boolean };
  tokenFile?: string;
  username?: string;
}

class Host {
  readonly dir = tempDir("driftless-agent-");
  readonly root = path.join(this.dir, "root");
  readonly stateDir = path.join(this.dir, "state");
  readonly configFile = path.join(this.dir, "agent.yaml");

  constructor(
    readonly url: string,
    options: AgentOptions = {},
  ) {
    mkdirSync(this.root);
    this.configure(options);
  }

  /** Trusts SSH commit signatures by these keys only; returns the allowed_signers file. */
  trustSsh(...keys: { allowedSigners: string }[]): string {
    const signers = path.join(this.dir, "allowed_signers");
    writeFileSync(signers, keys.map((k) => `${k.allowedSigners}\n`).join(""));
    this.configure({ trust: { allowedSigners: signers } });
    return signers;
  }

  /** Writes agent.yaml (JSON scalars are YAML scalars). */
  configure(options: AgentOptions): void {
    const q = (v: string | boolean) => JSON.stringify(v);
    const lines = [
      "apiVersion: driftless/v1",
      "kind: AgentConfig",
      `host: ${HOST}`,
      `stateDir: ${q(this.stateDir)}`,
      "source:",
      `  url: ${q(this.url)}`,
      "  ref: main",
      "  splay: 0s",
    ];
    if (options.tokenFile) lines.push(`  tokenFile: ${q(options.tokenFile)}`);
    if (options.username) lines.push(`  username: ${q(options.username)}`);
    if (options.trust) {
      lines.push("trust:");
      for (const [key, value] of Object.entries(options.trust)) lines.push(`  ${key}: ${q(value)}`);
    }
    writeFileSync(this.configFile, `${lines.join("\n")}\n`);
  }

  agentArgs(): string[] {
    return ["agent", "--config", this.configFile, "--once", "--root", this.root, "--log-format", "json"];
  }

  /** One cycle: `driftless agent --config FILE --once --root ROOT --log-format json`. */
  run(): Promise<CliRun> {
    return cli(this.agentArgs());
  }

  async runs(): Promise<RunRecord[]> {
    const result = await cli(["status", "--state", this.stateDir, "--json", "--limit", "50"]);
    expect(result.exitCode, result.stderr).toBe(0);
    return (JSON.parse(result.stdout) as { runs: RunRecord[] }).runs;
  }

  /** The newest recorded run. */
  async lastRun(): Promise<RunRecord> {
    const [run] = await this.runs();
    if (!run) throw new Error(`no run recorded in ${this.stateDir}`);
    return run;
  }

  read(file: string): string | null {
    const full = path.join(this.root, file);
    return existsSync(full) ? readFileSync(full, "utf8") : null;
  }

  remove(file: string): void {
    rmSync(path.join(this.root, file));
  }

  /** What the host converged to: the release file and the rendered template. */
  release(): { release: string | null; motd: string | null } {
    return { release: this.read("etc/app/release"), motd: this.read("etc/app/motd") };
  }

  /** Entries of STATE/checkouts, each required to be a whole checkout named by its commit. */
  checkouts(): string[] {
    const dir = path.join(this.stateDir, "checkouts");
    if (!existsSync(dir)) return [];
    const names = readdirSync(dir);
    for (const name of names) {
      expect(name, `stray entry in ${dir}`).toMatch(/^[0-9a-f]{40}$/);
      for (const file of ["fleet.yaml", "app.yaml", "motd.liquid"]) {
        expect(existsSync(path.join(dir, name, file)), `${name}/${file}`).toBe(true);
      }
    }
    return names.sort();
  }
}

/** The files of release `name`: a content file and a Liquid template. */
function releaseFiles(name: string, fileLine = `  - { path: /etc/app/release, content: "${name}\\n" }`) {
  return {
    "fleet.yaml": fleet("  - match: {}\n    profiles: [app]\n"),
    "app.yaml": profile(
      "app",
      `vars: { release: "${name}" }\nfiles:\n${fileLine}\n  - { path: /etc/app/motd, template: motd.liquid, mode: "0644" }\n`,
    ),
    "motd.liquid": "{{ host.name }} runs release {{ vars.release }}\n",
  };
}

function converged(name: string) {
  return { release: `${name}\n`, motd: `${HOST} runs release ${name}\n` };
}

async function pushRelease(repo: WorkRepo, name: string, options: Parameters<WorkRepo["commit"]>[1] = {}) {
  await repo.writeFiles(releaseFiles(name));
  const sha = await repo.commit(`release ${name}`, options);
  await repo.push();
  return sha;
}

async function serve(name: string, options: GitServerOptions = {}): Promise<{ server: GitServer; repo: WorkRepo }> {
  const server = await startGitServer(options);
  const repo = await createRepo(server, name);
  return { server, repo };
}

const isUploadPack = (r: GitRequest) => r.method === "POST" && r.path.endsWith("/git-upload-pack");

/** Incompressible bytes, so pack sizes say which objects were sent. */
function writeRandom(repo: WorkRepo, file: string, bytes: number): void {
  const full = path.join(repo.dir, file);
  mkdirSync(path.dirname(full), { recursive: true });
  writeFileSync(full, randomBytes(bytes));
}

async function until(what: string, check: () => boolean, timeoutMs = 15_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > end) throw new Error(`timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const escapeRegExp = (text: string) => text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

function allErrors(run: RunRecord): string {
  return run.errors.map((e) => e.message).join("\n");
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

describe("driftless agent --once on a Git repository over smart HTTP", () => {
  it("clones shallow, converges, is then in sync, and fetches only a new commit", async () => {
    const { server, repo } = await serve("fleet");
    writeRandom(repo, "data/blob.bin", 300_000);
    await pushRelease(repo, "0");
    const first = await pushRelease(repo, "A");
    const host = new Host(server.url("fleet"));

    const run1 = await host.run();
    expect(run1.exitCode, run1.stderr).toBe(2);
    expect(host.release()).toEqual(converged("A"));
    expect(await host.lastRun()).toMatchObject({ commit: first, source: "git", result: "changed" });
    expect(run1.logs.find((l) => l.msg === "run finished")).toMatchObject({ commit: first, source: "git" });

    // One fetch, shallow: the cache knows the tip but not its parent.
    const packs = server.requests.filter(isUploadPack);
    expect(packs).toHaveLength(1);
    const gitdir = path.join(host.stateDir, "git");
    expect(readFileSync(path.join(gitdir, "shallow"), "utf8").trim()).toBe(first);
    const parent = (await repo.git(["rev-parse", `${first}^`])).trim();
    await expect(exec("git", ["--git-dir", gitdir, "cat-file", "-e", parent])).rejects.toThrow();
    await exec("git", ["--git-dir", gitdir, "cat-file", "-e", first]);
    const firstPackBytes = packs[0]?.bytes ?? 0;
    expect(firstPackBytes).toBeGreaterThan(300_000);

    const run2 = await host.run();
    expect(run2.exitCode, run2.stderr).toBe(0);
    expect(await host.lastRun()).toMatchObject({ commit: first, source: "git", result: "in-sync" });

    const second = await pushRelease(repo, "B");
    const before = server.requests.length;
    const run3 = await host.run();
    expect(run3.exitCode, run3.stderr).toBe(2);
    expect(host.release()).toEqual(converged("B"));
    expect(await host.lastRun()).toMatchObject({ commit: second, source: "git", result: "changed" });
    const incremental = server.requests.slice(before).filter(isUploadPack);
    expect(incremental).toHaveLength(1);
    // The 300 kB blob is already cached: only the new commit, its tree and two small blobs come.
    expect(incremental[0]?.bytes).toBeLessThan(firstPackBytes / 20);
    expect(host.checkouts()).toEqual([second]);
  });

  it("keeps what it compiled from a commit, and loads the repository again for a new one or a drift", async () => {
    const { server, repo } = await serve("fleet");
    const first = await pushRelease(repo, "A");
    const host = new Host(server.url("fleet"));
    const finished = (run: CliRun) => run.logs.find((l) => l.msg === "run finished");

    const run1 = await host.run();
    expect(run1.exitCode, run1.stderr).toBe(2);
    expect(finished(run1)).toMatchObject({ commit: first, desiredFrom: "repository" });
    const run2 = await host.run();
    expect(run2.exitCode, run2.stderr).toBe(0);
    expect(finished(run2)).toMatchObject({ commit: first, desiredFrom: "cache", result: "in-sync" });

    // A drifted file needs its content: the repository is loaded for it, and it is corrected.
    writeFileSync(path.join(host.root, "etc/app/motd"), "drifted\n");
    const run3 = await host.run();
    expect(run3.exitCode, run3.stderr).toBe(2);
    expect(finished(run3)).toMatchObject({ desiredFrom: "repository", result: "changed" });
    expect(host.release()).toEqual(converged("A"));

    const second = await pushRelease(repo, "B");
    const run4 = await host.run();
    expect(run4.exitCode, run4.stderr).toBe(2);
    expect(finished(run4)).toMatchObject({ commit: second, desiredFrom: "repository" });
    expect(host.release()).toEqual(converged("B"));
    expect(finished(await host.run())).toMatchObject({ commit: second, desiredFrom: "cache" });
  });

  it("converges from the cached commit while the server is down, then goes back to Git", async () => {
    const { server, repo } = await serve("fleet");
    const sha = await pushRelease(repo, "A");
    const host = new Host(server.url("fleet"));
    expect((await host.run()).exitCode).toBe(2);

    await server.stop();
    host.remove("etc/app/motd");
    const offline = await host.run();
    expect(offline.exitCode, offline.stderr).toBe(2);
    expect(host.release()).toEqual(converged("A"));
    const run = await host.lastRun();
    expect(run).toMatchObject({ commit: sha, source: "offline", result: "changed" });
    expect(run.errors).toContainEqual(expect.objectContaining({ code: "EFETCH" }));
    expect(allErrors(run)).toMatch(/cannot fetch main from http:\/\/127\.0\.0\.1:\d+\/fleet\.git: .*ECONNREFUSED/);
    expect(offline.logs).toContainEqual(
      expect.objectContaining({ level: "warn", msg: "fetch failed; converging from the cached commit", commit: sha }),
    );
    expect(offline.stderr).not.toMatch(NO_STACK);

    await server.start();
    const back = await host.run();
    expect(back.exitCode, back.stderr).toBe(0);
    const last = await host.lastRun();
    expect(last).toMatchObject({ commit: sha, source: "git", result: "in-sync" });
    expect(last.errors).toEqual([]);
  });

  it("survives being killed mid-fetch: the previous commit offline, the new one once the server is back", async () => {
    const { server, repo } = await serve("fleet");
    const good = await pushRelease(repo, "A");
    const host = new Host(server.url("fleet"));
    expect((await host.run()).exitCode).toBe(2);

    for (let i = 0; i < 16; i++) writeRandom(repo, `data/big-${i}.bin`, 64_000);
    const next = await pushRelease(repo, "B");
    const before = server.requests.length;
    server.delay(20_000);
    const { child, done } = startCli(host.agentArgs());
    let fetching: GitRequest | undefined;
    await until("the agent is receiving the pack", () => {
      fetching = server.requests.slice(before).find((r) => isUploadPack(r) && r.status === 200 && r.bytes > 0);
      return fetching !== undefined;
    });
    child.kill("SIGKILL");
    const killed = await done;
    expect(killed.signal).toBe("SIGKILL");
    await until("the server sees the client gone", () => fetching?.done === true);
    expect(fetching?.aborted).toBe(true);
    server.delay(null);
    expect(host.checkouts()).toEqual([good]);

    // Server down: the host converges the last good commit, not anything of the half-fetched one.
    await server.stop();
    host.remove("etc/app/release");
    const offline = await host.run();
    expect(offline.exitCode, offline.stderr).toBe(2);
    expect(host.release()).toEqual(converged("A"));
    expect(await host.lastRun()).toMatchObject({ commit: good, source: "offline" });
    expect(offline.stderr).not.toMatch(NO_STACK);
    expect(host.checkouts()).toEqual([good]);

    await server.start();
    const online = await host.run();
    expect(online.exitCode, online.stderr).toBe(2);
    expect(host.release()).toEqual(converged("B"));
    expect(await host.lastRun()).toMatchObject({ commit: next, source: "git", result: "changed" });
    expect(host.checkouts()).toEqual([next]);
  });

  describe("an invalid commit", () => {
    const invalid = (name: string) =>
      releaseFiles(name, `  - { path: /etc/app/release, content: "${name}\\n", mdoe: "0644" }`);

    it("keeps the host on the last good commit, naming the commit and file:line, until it is fixed", async () => {
      const { server, repo } = await serve("fleet");
      const good = await pushRelease(repo, "A");
      const host = new Host(server.url("fleet"));
      expect((await host.run()).exitCode).toBe(2);

      await repo.writeFiles(invalid("B"));
      const bad = await repo.commit("release B, with a typo");
      await repo.push();
      const refused = await host.run();
      expect(refused.exitCode, refused.stderr).toBe(4);
      expect(host.release()).toEqual(converged("A"));
      const run = await host.lastRun();
      expect(run).toMatchObject({ commit: good, source: "git" });
      const errors = allErrors(run);
      expect(errors).toContain(`commit ${bad.slice(0, 12)} is invalid, staying on ${good.slice(0, 12)}`);
      expect(errors).toMatch(/app\.yaml:6:\d+: files\[0\]\.mdoe: unknown field "mdoe"/);
      expect(run.errors).toContainEqual(
        expect.objectContaining({ location: expect.objectContaining({ file: "app.yaml", line: 6 }) }),
      );
      expect(refused.stderr).toMatch(/app\.yaml:6:\d+/);
      expect(refused.stderr).not.toMatch(NO_STACK);

      // Drift is still corrected, from the last good commit; the run is a failure all the same,
      // since the host is not at the commit the branch names.
      host.remove("etc/app/motd");
      const again = await host.run();
      expect(host.release()).toEqual(converged("A"));
      expect(await host.lastRun()).toMatchObject({ commit: good, result: "failed" });
      expect(again.exitCode).toBe(4);

      const fixed = await pushRelease(repo, "C");
      const ok = await host.run();
      expect(ok.exitCode, ok.stderr).toBe(2);
      expect(host.release()).toEqual(converged("C"));
      const last = await host.lastRun();
      expect(last).toMatchObject({ commit: fixed, source: "git", result: "changed" });
      expect(last.errors).toEqual([]);
    });

    it("exits 4, not 2, when the new commit is invalid even though drift from the old one was corrected", async () => {
      const { server, repo } = await serve("fleet");
      await pushRelease(repo, "A");
      const host = new Host(server.url("fleet"));
      expect((await host.run()).exitCode).toBe(2);
      await repo.writeFiles(invalid("B"));
      await repo.commit("release B, with a typo");
      await repo.push();
      host.remove("etc/app/motd");
      const run = await host.run();
      expect(host.release()).toEqual(converged("A"));
      // 2 means "changes made" and would read as a successful rollout of the new commit.
      expect(run.exitCode).toBe(4);
    });
  });

  describe("commit signatures", () => {
    it("applies only commits signed by a key in trust.allowedSigners (SSH)", async () => {
      const [alice, mallory] = await Promise.all([makeSshKey("alice"), makeSshKey("mallory")]);
      const { server, repo } = await serve("fleet");
      const host = new Host(server.url("fleet"));
      const signers = host.trustSsh(alice);

      const a = await pushRelease(repo, "A", { sign: alice });
      const r1 = await host.run();
      expect(r1.exitCode, r1.stderr).toBe(2);
      expect(host.release()).toEqual(converged("A"));
      expect(await host.lastRun()).toMatchObject({ commit: a, source: "git" });

      const unsigned = await pushRelease(repo, "B");
      const r2 = await host.run();
      expect(r2.exitCode, r2.stderr).toBe(4);
      expect(host.release()).toEqual(converged("A"));
      const refusedRun = await host.lastRun();
      expect(refusedRun.commit).toBe(a);
      expect(refusedRun.errors).toContainEqual(expect.objectContaining({ code: "EREFUSED" }));
      expect(allErrors(refusedRun)).toContain(`commit ${unsigned.slice(0, 7)} is not signed`);
      expect(r2.logs).toContainEqual(expect.objectContaining({ msg: "commit refused", commit: unsigned }));

      const c = await pushRelease(repo, "C", { sign: alice });
      const r3 = await host.run();
      expect(r3.exitCode, r3.stderr).toBe(2);
      expect(host.release()).toEqual(converged("C"));
      expect(await host.lastRun()).toMatchObject({ commit: c, errors: [] });

      const forged = await pushRelease(repo, "D", { sign: mallory });
      const r4 = await host.run();
      expect(r4.exitCode, r4.stderr).toBe(4);
      expect(host.release()).toEqual(converged("C"));
      const forgedRun = await host.lastRun();
      expect(forgedRun.commit).toBe(c);
      expect(allErrors(forgedRun)).toContain(
        `commit ${forged.slice(0, 7)} is signed with SSH key ${mallory.fingerprint}, which is not in ${signers}`,
      );
    });

    it("applies only commits signed by a key in trust.openpgpKeys (GPG)", async () => {
      const [tess, eve] = await Promise.all([
        makeGpgKey("Tess Trusted", "tess@example.test"),
        makeGpgKey("Eve Untrusted", "eve@example.test"),
      ]);
      const { server, repo } = await serve("fleet");
      const host = new Host(server.url("fleet"));
      const keys = path.join(host.dir, "trusted.asc");
      writeFileSync(keys, tess.publicKeyArmored);
      host.configure({ trust: { openpgpKeys: keys } });

      const a = await pushRelease(repo, "A", { sign: tess });
      const r1 = await host.run();
      expect(r1.exitCode, r1.stderr).toBe(2);
      expect(host.release()).toEqual(converged("A"));
      expect(await host.lastRun()).toMatchObject({ commit: a, source: "git", errors: [] });

      const untrusted = await pushRelease(repo, "B", { sign: eve });
      const r2 = await host.run();
      expect(r2.exitCode, r2.stderr).toBe(4);
      expect(host.release()).toEqual(converged("A"));
      const run = await host.lastRun();
      expect(run.commit).toBe(a);
      expect(allErrors(run)).toMatch(
        new RegExp(
          `commit ${untrusted.slice(0, 7)} is signed with .*${eve.keyId}.*, which is not in ${escapeRegExp(keys)}$`,
          "im",
        ),
      );
    });
  });

  it("refuses a force-push back to an older commit unless trust.allowRollback is set", async () => {
    const alice = await makeSshKey("alice");
    const { server, repo } = await serve("fleet");
    const host = new Host(server.url("fleet"));
    const signers = host.trustSsh(alice);

    const a = await pushRelease(repo, "A", { sign: alice });
    expect((await host.run()).exitCode).toBe(2);
    const b = await pushRelease(repo, "B", { sign: alice });
    expect((await host.run()).exitCode).toBe(2);
    expect(host.release()).toEqual(converged("B"));

    await repo.resetHard(a);
    await repo.push("main", { force: true });
    const refused = await host.run();
    expect(refused.exitCode, refused.stderr).toBe(4);
    expect(host.release()).toEqual(converged("B"));
    const run = await host.lastRun();
    expect(run.commit).toBe(b);
    expect(allErrors(run)).toContain(
      `commit ${a.slice(0, 12)} refused: it does not descend from the current commit ${b.slice(0, 12)}`,
    );

    host.configure({ trust: { allowedSigners: signers, allowRollback: true } });
    const rolledBack = await host.run();
    expect(rolledBack.exitCode, rolledBack.stderr).toBe(2);
    expect(host.release()).toEqual(converged("A"));
    expect(await host.lastRun()).toMatchObject({ commit: a, source: "git", errors: [] });
  });

  it("still accepts a descendant after its cache was thrown away and cloned again (shallow)", async () => {
    const { server, repo } = await serve("fleet");
    const host = new Host(server.url("fleet"));
    await pushRelease(repo, "A");
    expect((await host.run()).exitCode).toBe(2);
    // Several commits later, the cache is lost (as after a damaged cache is refetched).
    for (const name of ["B", "C", "D"]) await pushRelease(repo, name);
    rmSync(path.join(host.stateDir, "git"), { recursive: true, force: true });
    const run = await host.run();
    expect(run.exitCode, run.stderr).toBe(2);
    expect(host.release()).toEqual(converged("D"));
    expect((await host.lastRun()).errors).toEqual([]);
  });

  it("authenticates with tokenFile, and never shows the token, right or wrong", async () => {
    const secret = `tok-${randomBytes(12).toString("hex")}`;
    const wrong = `bad-${randomBytes(12).toString("hex")}`;
    // The server accepts only git:<token>, the user name the agent sends with tokenFile by default.
    const { server, repo } = await serve("fleet", { auth: { username: "git", password: secret } });
    const sha = await pushRelease(repo, "A");

    const host = new Host(server.url("fleet"));
    const tokenFile = path.join(host.dir, "git-token");
    writeFileSync(tokenFile, `${secret}\n`, { mode: 0o600 });
    host.configure({ tokenFile });
    const ok = await host.run();
    expect(ok.exitCode, ok.stderr).toBe(2);
    expect(host.release()).toEqual(converged("A"));
    expect(await host.lastRun()).toMatchObject({ commit: sha, source: "git" });

    const stranger = new Host(server.url("fleet"));
    const wrongFile = path.join(stranger.dir, "git-token");
    writeFileSync(wrongFile, `${wrong}\n`, { mode: 0o600 });
    stranger.configure({ tokenFile: wrongFile });
    const denied = await stranger.run();
    expect(denied.exitCode, denied.stderr).toBe(1);
    expect(stranger.release()).toEqual({ release: null, motd: null });
    expect(denied.logs).toContainEqual(
      expect.objectContaining({
        level: "warn",
        msg: "fetch failed; converging from the cached commit",
        error: expect.stringMatching(
          /^cannot fetch main from http:\/\/127\.0\.0\.1:\d+\/fleet\.git: authentication refused \(HTTP 401\)$/,
        ),
      }),
    );
    expect(denied.logs).toContainEqual(
      expect.objectContaining({ level: "error", msg: "nothing to converge from", reason: "no commit fetched yet" }),
    );
    expect(denied.stderr).not.toMatch(NO_STACK);
    expect(server.requests.some((r) => r.status === 401)).toBe(true);

    for (const run of [ok, denied]) {
      for (const token of [secret, wrong]) {
        expect(run.stdout).not.toContain(token);
        expect(run.stderr).not.toContain(token);
      }
    }
    // Nor in what the agent keeps (state database, cached repository).
    for (const [stateDir, token] of [
      [host.stateDir, secret],
      [stranger.stateDir, wrong],
    ] as const) {
      for (const file of filesUnder(stateDir)) {
        expect(readFileSync(file).includes(token), file).toBe(false);
      }
    }
  });

  it("driftless apply --source URL converges the branch tip into --root", async () => {
    const { server, repo } = await serve("fleet");
    await pushRelease(repo, "A");
    const tip = await pushRelease(repo, "B");
    const dir = tempDir("driftless-apply-");
    const root = path.join(dir, "root");
    mkdirSync(root);
    const stateDir = path.join(dir, "state");
    const result = await cli([
      "apply",
      "--source",
      server.url("fleet"),
      "--root",
      root,
      "--state",
      stateDir,
      "--host",
      HOST,
      "--json",
    ]);
    expect(result.exitCode, result.stderr).toBe(2);
    const report = JSON.parse(result.stdout) as { commit: string; changes: Array<{ resource: string }> };
    expect(report.commit).toBe(tip);
    expect(report.changes.map((c) => c.resource).sort()).toEqual(["file:/etc/app/motd", "file:/etc/app/release"]);
    expect(readFileSync(path.join(root, "etc/app/release"), "utf8")).toBe("B\n");
    expect(readFileSync(path.join(root, "etc/app/motd"), "utf8")).toBe(`${HOST} runs release B\n`);
  });
});

function filesUnder(dir: string): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) out.push(...filesUnder(full));
    else if (statSync(full).isFile()) out.push(full);
  }
  return out;
}
