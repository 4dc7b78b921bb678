// `plan`, `apply` and `agent --once` are one cycle (docs/cli.md, "One way in"): the same
// configuration, fetch, signature check, fallback and records. The built CLI runs in its own
// process against a real `git http-backend` server (test/support/git-server.ts) in this process,
// so every call is spawned asynchronously. Some runs are made as `nobody` when the tests run as
// root, as an unprivileged user would.
import { type ChildProcess, spawn } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import {
  chmodSync,
  chownSync,
  existsSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { createServer, request as httpRequest, type Server } from "node:http";
import type { Socket } from "node:net";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { CLI, isRoot } from "../support/cli.js";
import { cleanup, createRepo, exec, makeSshKey, startGitServer, type WorkRepo } from "../support/git-server.js";
import { cleanupTemp, fleet, makeRepo, profile, tempDir } from "../support/repo.js";

afterAll(async () => {
  await cleanup();
  cleanupTemp();
});

const HOST = "edge-1";
const NOBODY = 65534;

// ---------------------------------------------------------------------------------------------
// Running the CLI
// ---------------------------------------------------------------------------------------------

interface CliRun {
  exitCode: number;
  stdout: string;
  stderr: string;
  ms: number;
}

interface RunRecord {
  source: string;
  commit: string | null;
  result: string;
  errors: Array<{ code?: string; message: string; location?: Record<string, unknown> }>;
}

function cliEnv(): Record<string, string> {
  const env: Record<string, string> = { NO_COLOR: "1" };
  for (const [key, value] of Object.entries(process.env)) {
    if (value !== undefined && !key.startsWith("DRIFTLESS_")) env[key] = value;
  }
  return env;
}

/** The built CLI, asynchronously; as `nobody` with `asNobody` when we are root. Killed after `timeoutMs`. */
function cli(
  args: string[],
  options: { asNobody?: boolean; timeoutMs?: number; env?: Record<string, string> } = {},
): Promise<CliRun> {
  const command =
    options.asNobody && isRoot
      ? ["setpriv", `--reuid=${NOBODY}`, `--regid=${NOBODY}`, "--clear-groups", process.execPath, CLI, ...args]
      : [process.execPath, CLI, ...args];
  const started = Date.now();
  return new Promise((resolve, reject) => {
    const child: ChildProcess = spawn(command[0] as string, command.slice(1), {
      env: { ...cliEnv(), ...options.env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout?.setEncoding("utf8").on("data", (c: string) => {
      stdout += c;
    });
    child.stderr?.setEncoding("utf8").on("data", (c: string) => {
      stderr += c;
    });
    const timeoutMs = options.timeoutMs ?? 60_000;
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`driftless ${args.join(" ")} still running after ${timeoutMs} ms\n${stderr}`));
    }, timeoutMs);
    child.on("error", reject);
    child.on("close", (code) => {
      clearTimeout(timer);
      resolve({ exitCode: code ?? -1, stdout, stderr, ms: Date.now() - started });
    });
  });
}

async function runs(args: string[]): Promise<RunRecord[]> {
  const result = await cli(["status", ...args, "--json", "--limit", "50"]);
  expect(result.exitCode, result.stderr).toBe(0);
  return (JSON.parse(result.stdout) as { runs: RunRecord[] }).runs;
}

const allErrors = (run: RunRecord | undefined) => (run?.errors ?? []).map((e) => e.message).join("\n");

// ---------------------------------------------------------------------------------------------
// Hosts and repositories
// ---------------------------------------------------------------------------------------------

function releaseFiles(name: string) {
  return {
    "fleet.yaml": fleet("  - match: {}\n    profiles: [app]\n"),
    "app.yaml": profile("app", `files:\n  - { path: /etc/app/release, content: "${name}\\n", mode: "0644" }\n`),
  };
}

async function pushRelease(repo: WorkRepo, name: string, options: Parameters<WorkRepo["commit"]>[1] = {}) {
  await repo.writeFiles(releaseFiles(name));
  const sha = await repo.commit(`release ${name}`, options);
  await repo.push();
  return sha;
}

class Host {
  readonly dir = tempDir("driftless-host-");
  readonly root = path.join(this.dir, "root");
  readonly stateDir = path.join(this.dir, "state");
  readonly configFile = path.join(this.dir, "agent.yaml");

  constructor(url: string, extra: { source?: string[]; top?: string[] } = {}) {
    mkdirSync(this.root);
    this.configure(url, extra);
  }

  configure(url: string, extra: { source?: string[]; top?: string[] } = {}): void {
    const lines = [
      "apiVersion: driftless/v1",
      "kind: AgentConfig",
      `host: ${HOST}`,
      `stateDir: ${JSON.stringify(this.stateDir)}`,
      ...(extra.top ?? []),
      "source:",
      `  url: ${JSON.stringify(url)}`,
      "  splay: 0s",
      ...(extra.source ?? []).map((l) => `  ${l}`),
    ];
    writeFileSync(this.configFile, `${lines.join("\n")}\n`);
  }

  agent(): Promise<CliRun> {
    return cli(["agent", "--config", this.configFile, "--once", "--root", this.root, "--log-format", "json"]);
  }

  async lastRun(): Promise<RunRecord | undefined> {
    return (await runs(["--config", this.configFile]))[0];
  }

  release(): string | null {
    const file = path.join(this.root, "etc/app/release");
    return existsSync(file) ? readFileSync(file, "utf8") : null;
  }
}

/** Every entry under `dir` with its type, size, mode, mtime and content hash ({} when absent). */
function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  if (!existsSync(dir)) return out;
  const walk = (d: string) => {
    for (const entry of readdirSync(d, { withFileTypes: true })) {
      const full = path.join(d, entry.name);
      const st = lstatSync(full);
      const hash = st.isFile() ? createHash("sha256").update(readFileSync(full)).digest("hex") : "";
      out[path.relative(dir, full)] = `${st.mode.toString(8)} ${st.size} ${st.mtimeMs} ${hash}`;
      if (entry.isDirectory()) walk(full);
    }
  };
  walk(dir);
  return out;
}

function filesUnder(dir: string): string[] {
  if (!existsSync(dir)) return [];
  const out: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) out.push(...filesUnder(full));
    else if (statSync(full).isFile()) out.push(full);
  }
  return out;
}

/**
 * An HTTP front for the Git server, on a URL of its own: `proxy` passes requests on, `trickle`
 * answers every request with one byte a second, forever; `garbage` passes the ref advertisement
 * on but answers the pack request with random bytes.
 */
async function startFront(target: number): Promise<{ url: (name: string) => string; mode: string; close(): void }> {
  const sockets = new Set<Socket>();
  const timers = new Set<NodeJS.Timeout>();
  const state = { mode: "proxy" };
  const server: Server = createServer((req, res) => {
    const isPack = req.method === "POST" && (req.url ?? "").endsWith("/git-upload-pack");
    if (state.mode === "trickle") {
      req.resume();
      res.writeHead(200, { "Content-Type": "application/x-git-upload-pack-advertisement" });
      const timer = setInterval(() => res.write("0"), 1000);
      timers.add(timer);
      res.on("close", () => clearInterval(timer));
      return;
    }
    if (state.mode === "garbage" && isPack) {
      req.resume();
      req.on("end", () => {
        res.writeHead(200, { "Content-Type": "application/x-git-upload-pack-result" });
        res.end(Buffer.concat([Buffer.from("0008NAK\n"), randomBytes(4096)]));
      });
      return;
    }
    const upstream = httpRequest(
      { host: "127.0.0.1", port: target, method: req.method, path: req.url, headers: req.headers },
      (up) => {
        res.writeHead(up.statusCode ?? 502, up.headers);
        up.pipe(res);
      },
    );
    upstream.on("error", () => res.destroy());
    req.pipe(upstream);
  });
  server.on("connection", (socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as { port: number }).port;
  return {
    url: (name) => `http://127.0.0.1:${port}/${name}.git`,
    get mode() {
      return state.mode;
    },
    set mode(value: string) {
      state.mode = value;
    },
    close() {
      for (const timer of timers) clearInterval(timer);
      for (const socket of sockets) socket.destroy();
      server.close();
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

describe("one way in: apply and plan run the agent's cycle", () => {
  it("apply refuses an unsigned commit when the configuration trusts only signed ones, with or without --source", async () => {
    const alice = await makeSshKey("alice");
    const server = await startGitServer();
    const repo = await createRepo(server, "fleet");
    const url = server.url("fleet");
    const host = new Host(url);
    const signers = path.join(host.dir, "allowed_signers");
    writeFileSync(signers, `${alice.allowedSigners}\n`);
    host.configure(url, { top: ["trust:", `  allowedSigners: ${JSON.stringify(signers)}`] });

    const good = await pushRelease(repo, "A", { sign: alice });
    const first = await cli(["apply", "--config", host.configFile, "--root", host.root]);
    expect(first.exitCode, first.stderr).toBe(2);
    expect(host.release()).toBe("A\n");
    expect(await host.lastRun()).toMatchObject({ commit: good, source: "git", result: "changed" });

    const unsigned = await pushRelease(repo, "B");
    const plan = await cli(["plan", "--config", host.configFile, "--root", host.root]);
    expect(plan.exitCode, plan.stderr).toBe(4);
    expect(plan.stderr).toContain(
      `commit ${unsigned.slice(0, 12)} refused: commit ${unsigned.slice(0, 7)} is not signed`,
    );

    for (const args of [[], ["--source", url]]) {
      const refused = await cli(["apply", "--config", host.configFile, "--root", host.root, ...args]);
      expect(refused.exitCode, refused.stderr).toBe(4);
      expect(refused.stderr).toContain(`commit ${unsigned.slice(0, 7)} is not signed`);
      expect(host.release()).toBe("A\n");
      const run = await host.lastRun();
      expect(run).toMatchObject({ commit: good, source: "git", result: "failed" });
      expect(run?.errors).toContainEqual(expect.objectContaining({ code: "EREFUSED" }));
    }

    // The daemon, from the same state: still refused, still on A.
    const agent = await host.agent();
    expect(agent.exitCode, agent.stderr).toBe(4);
    expect(host.release()).toBe("A\n");
  });

  it("plan writes nothing: no state, no cache, no facts file, for a directory and a Git URL, as root and as nobody", async () => {
    const server = await startGitServer();
    const repo = await createRepo(server, "fleet");
    await pushRelease(repo, "A");
    const url = server.url("fleet");

    // A host the agent already follows: its state and cache must not move.
    const host = new Host(url);
    expect((await host.agent()).exitCode).toBe(2);
    await pushRelease(repo, "B");
    const before = snapshot(host.stateDir);
    expect(Object.keys(before)).toEqual(expect.arrayContaining(["state.db", "git/config", "facts.json"]));
    const plan = await cli(["plan", "--config", host.configFile, "--root", host.root, "--json"]);
    expect(plan.exitCode, plan.stderr).toBe(2);
    expect(JSON.parse(plan.stdout).changes).toEqual([expect.objectContaining({ resource: "file:/etc/app/release" })]);
    expect(snapshot(host.stateDir)).toEqual(before);
    expect(host.release()).toBe("A\n");

    // Fresh trees, a directory and a URL, by root and by nobody: nothing appears anywhere.
    const dirSource = makeRepo(releaseFiles("D"));
    for (const asNobody of [false, true]) {
      for (const source of [dirSource, url]) {
        const root = tempDir("driftless-plan-root-");
        if (isRoot) chownSync(root, NOBODY, NOBODY);
        // A temp directory of its own: other test files running plan at the same time use the shared one.
        const temp = tempDir("driftless-plan-tmp-");
        chmodSync(temp, 0o1777);
        const result = await cli(["plan", "--source", source, "--root", root, "--host", HOST], {
          asNobody,
          env: { TMPDIR: temp },
        });
        expect(result.exitCode, result.stderr).toBe(2);
        expect(result.stdout).toContain("+ file:/etc/app/release  create");
        expect(readdirSync(root), `${source} as ${asNobody ? "nobody" : "root"}`).toEqual([]);
        // Its private fetch directory (driftless-plan-*) is gone, and no cache was made.
        expect(readdirSync(temp)).toEqual([]);
      }
    }
  });

  it("apply --source of a directory that does not exist creates no state", async () => {
    const root = tempDir("driftless-apply-root-");
    const result = await cli(["apply", "--source", path.join(root, "nonexistent"), "--root", root]);
    expect(result.exitCode).toBe(1);
    expect(result.stderr).toMatch(/nonexistent is not a directory; nothing was applied/);
    expect(readdirSync(root)).toEqual([]);
  });

  it("reads the configuration: apply needs no flags, and status finds the same state directory", async () => {
    const source = makeRepo(releaseFiles("C"));
    const host = new Host(source, { top: ["labels: { role: web }"] });
    const apply = await cli(["apply", "--config", host.configFile, "--root", host.root]);
    expect(apply.exitCode, apply.stderr).toBe(2);
    expect(host.release()).toBe("C\n");
    expect(existsSync(path.join(host.stateDir, "state.db"))).toBe(true);
    expect((await host.lastRun())?.result).toBe("changed");

    // Under --root DIR without --config, the tree's own configuration, with its paths in the tree.
    const tree = tempDir("driftless-tree-");
    mkdirSync(path.join(tree, "etc/driftless"), { recursive: true });
    writeFileSync(
      path.join(tree, "etc/driftless/agent.yaml"),
      `apiVersion: driftless/v1\nkind: AgentConfig\nhost: img-1\nstateDir: /var/lib/dl\nsource:\n  url: ${JSON.stringify(source)}\n`,
    );
    const image = await cli(["apply", "--root", tree]);
    expect(image.exitCode, image.stderr).toBe(2);
    expect(readFileSync(path.join(tree, "etc/app/release"), "utf8")).toBe("C\n");
    expect(existsSync(path.join(tree, "var/lib/dl/state.db"))).toBe(true);
    expect((await runs(["--root", tree]))[0]?.result).toBe("changed");

    const missing = await cli(["apply", "--config", path.join(tree, "nope.yaml")]);
    expect(missing.exitCode).toBe(1);
    expect(missing.stderr).toMatch(/--config .*nope\.yaml: no such file/);
  });

  it("records a daemon run that cannot start its cycle: a trusted-keys file missing, a configuration that does not load", async () => {
    const server = await startGitServer();
    const repo = await createRepo(server, "fleet");
    await pushRelease(repo, "A");
    const host = new Host(server.url("fleet"));
    const missing = path.join(host.dir, "allowed_signers");
    host.configure(server.url("fleet"), { top: ["trust:", `  allowedSigners: ${JSON.stringify(missing)}`] });
    const run = await host.agent();
    expect(run.exitCode).toBe(1);
    const [recorded] = await runs(["--state", host.stateDir]);
    expect(recorded).toMatchObject({ result: "error", commit: null });
    expect(allErrors(recorded)).toBe(`trusted keys not found: ${missing}`);
    expect(host.release()).toBe(null);

    host.configure(server.url("fleet"), { top: ["mode: yolo"] });
    const bad = await host.agent();
    expect(bad.exitCode).toBe(1);
    const [invalid] = await runs(["--state", host.stateDir]);
    expect(invalid).toMatchObject({ result: "error", source: "config" });
    expect(invalid?.errors[0]).toMatchObject({
      code: "ESCHEMA",
      message: expect.stringMatching(/^Invalid option/),
      location: { file: host.configFile, line: 5, field: "mode" },
    });
  });
});

describe("credentials in a source URL", () => {
  it("are used, warned about, and never shown or stored, even with @ in the password", async () => {
    const password = `p@ss@word-${randomBytes(6).toString("hex")}`;
    const server = await startGitServer({ auth: { username: "user", password } });
    const repo = await createRepo(server, "fleet");
    const sha = await pushRelease(repo, "A");
    const plain = server.url("fleet");
    const withCredentials = plain.replace("http://", `http://user:${password}@`);
    const host = new Host(withCredentials);

    const outputs: CliRun[] = [];
    outputs.push(await host.agent());
    expect(outputs[0]?.exitCode, outputs[0]?.stderr).toBe(2);
    expect(host.release()).toBe("A\n");
    outputs.push(await cli(["plan", "--source", withCredentials, "--root", host.root, "--host", HOST]));
    outputs.push(await cli(["apply", "--source", withCredentials, "--root", host.root, "--state", host.stateDir]));
    await server.stop();
    outputs.push(await host.agent()); // offline: the fetch error names the URL
    outputs.push(await cli(["status", "--config", host.configFile, "--json"]));
    await server.start();

    const secrets = [password, password.slice(2), encodeURIComponent(password)];
    for (const [i, out] of outputs.entries()) {
      for (const secret of secrets) {
        expect(out.stdout, `stdout of call ${i}`).not.toContain(secret);
        expect(out.stderr, `stderr of call ${i}`).not.toContain(secret);
      }
    }
    for (const i of [0, 1, 2, 3]) expect(outputs[i]?.stderr).toMatch(/source\.url holds credentials/);
    expect(outputs[1]?.exitCode, outputs[1]?.stderr).toBe(0);
    expect(outputs[3]?.exitCode, outputs[3]?.stderr).toBe(0);
    expect(allErrors(await host.lastRun())).toContain(`cannot fetch main from ${plain}`);
    expect(await host.lastRun()).toMatchObject({ commit: sha, source: "offline" });
    for (const file of filesUnder(host.stateDir)) {
      const bytes = readFileSync(file);
      for (const secret of secrets) expect(bytes.includes(secret), file).toBe(false);
    }
    expect(readFileSync(path.join(host.stateDir, "git/config"), "utf8")).toContain(`url = ${plain}`);
  });
});

describe("fetch deadline and a server that sends garbage", () => {
  it("a server that trickles bytes: the run ends at source.fetchTimeout and converges from the cached commit", async () => {
    const server = await startGitServer();
    const repo = await createRepo(server, "fleet");
    const good = await pushRelease(repo, "A");
    const front = await startFront(server.port);
    try {
      const host = new Host(front.url("fleet"), { source: ["fetchTimeout: 3s"] });
      expect((await host.agent()).exitCode).toBe(2);
      rmSync(path.join(host.root, "etc/app/release"));

      front.mode = "trickle";
      const slow = await host.agent();
      expect(slow.exitCode, slow.stderr).toBe(2);
      expect(host.release()).toBe("A\n");
      const run = await host.lastRun();
      expect(run).toMatchObject({ commit: good, source: "offline", result: "changed" });
      expect(allErrors(run)).toContain("not done within 3s (source.fetchTimeout)");
    } finally {
      front.close();
    }
  });

  it("a server that answers the pack request with garbage leaves the cache whole", async () => {
    const server = await startGitServer();
    const repo = await createRepo(server, "fleet");
    const good = await pushRelease(repo, "A");
    const front = await startFront(server.port);
    try {
      const host = new Host(front.url("fleet"));
      expect((await host.agent()).exitCode).toBe(2);
      const gitdir = path.join(host.stateDir, "git");
      rmSync(path.join(host.root, "etc/app/release"));
      rmSync(path.join(host.stateDir, "checkouts"), { recursive: true });

      await pushRelease(repo, "B");
      front.mode = "garbage";
      const run = await host.agent();
      expect(run.exitCode, run.stderr).toBe(2);
      expect(host.release()).toBe("A\n");
      expect(await host.lastRun()).toMatchObject({ commit: good, source: "offline" });
      await exec("git", ["--git-dir", gitdir, "cat-file", "-e", good]);
    } finally {
      front.close();
    }
  });
});

describe.skipIf(!isRoot)("plan as an unprivileged user", () => {
  it("never uses a cache directory another user could have planted", async () => {
    const server = await startGitServer();
    const repo = await createRepo(server, "fleet");
    const tip = await pushRelease(repo, "A");
    // The old private cache's name, planted by another user, with a checkout of the tip that lies.
    const planted = path.join(tmpdir(), `driftless-cache-${NOBODY}`);
    rmSync(planted, { recursive: true, force: true });
    try {
      const evil = path.join(planted, "checkouts", tip);
      mkdirSync(evil, { recursive: true });
      for (const [file, content] of Object.entries(releaseFiles("EVIL"))) writeFileSync(path.join(evil, file), content);
      // Another user's, and writable by anyone, as a planted directory would be.
      await exec("chown", ["-R", "12345:12345", planted]);
      await exec("chmod", ["-R", "0777", planted]);
      const root = tempDir("driftless-plan-root-");
      // A state directory nobody cannot create: the old code fell back to the planted cache then.
      const locked = tempDir("driftless-locked-");
      const result = await cli(
        ["plan", "--source", server.url("fleet"), "--root", root, "--state", path.join(locked, "state"), "--json"],
        { asNobody: true },
      );
      expect(result.exitCode, result.stderr).toBe(2);
      const [change] = JSON.parse(result.stdout).changes as Array<{ diff?: string }>;
      expect(change?.diff).toContain("+A");
      expect(change?.diff).not.toContain("EVIL");
    } finally {
      rmSync(planted, { recursive: true, force: true });
    }
  });
});
