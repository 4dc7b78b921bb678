/**
 * A real smart-HTTP Git server for tests, plus work repositories and signing keys made with the
 * real git, ssh-keygen and gpg. No mocks: the agent under test fetches over HTTP from
 * `git http-backend`, exactly as from a forge.
 *
 *   const server = await startGitServer();                 // or { auth: { username, password } }
 *   const repo = await createRepo(server, "fleet");        // bare repo served at server.url("fleet")
 *   const ssh = await makeSshKey("alice");                 // ssh.allowedSigners: a line for allowed_signers
 *   await repo.writeFiles({ "fleet.yaml": "..." });
 *   const sha = await repo.commit("first", { sign: ssh });
 *   await repo.push();                                     // main; push("v1") or push("refs/tags/v1")
 *   ...
 *   afterAll(cleanup);                                     // servers, gpg agents, temp dirs
 *
 * Server:
 * - `startGitServer({ auth? })`: `git http-backend` as CGI behind node:http on 127.0.0.1, on an
 *   ephemeral port (the handler is the demo's, controlplane/src/demo/git-http.ts). With `auth`, every request needs HTTP basic auth with those credentials
 *   (401 otherwise).
 * - `server.url(name, credentials?)`: `http://127.0.0.1:PORT/NAME.git` (credentials go in the
 *   URL's user info, for `git clone`).
 * - `server.requests`: every request, logged when it arrives and updated as it progresses
 *   (`done`, `status`, `bytes` of body sent, `aborted` when the client went away first).
 * - `server.delay(ms)`: from now on, the response body of each `git-upload-pack` POST (the pack)
 *   is sent in small chunks spread over `ms`, so a test can kill a client mid-fetch;
 *   `delay(null)` switches it off.
 * - `server.stop()`: the server goes down (connections cut, CGI processes killed);
 *   `server.start()`: it comes back on the same port; `server.close()`: stops for good.
 *
 * Repositories: `createRepo(server, name)` makes the bare repository `ROOT/NAME.git` (with
 * `http.receivepack` on, so clients may also push over HTTP) and a work clone that pushes to it
 * through the filesystem. Commits use a fixed identity and no global or system git config.
 *
 * Keys: `makeSshKey(name, { type? })` (ssh-keygen, no passphrase) and `makeGpgKey(name, email,
 * { algo? })` (a temp GNUPGHOME, no passphrase). Pass either as `commit(msg, { sign })`.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { Socket } from "node:net";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { runGitHttpBackend, safePathInfo } from "../../controlplane/src/demo/git-http.js";

// ---------------------------------------------------------------------------------------------
// Types
// ---------------------------------------------------------------------------------------------

export interface Credentials {
  username: string;
  password: string;
}

export interface GitServerOptions {
  /** Require HTTP basic auth with these credentials on every request. */
  auth?: Credentials;
}

export interface GitRequest {
  method: string;
  /** URL path, e.g. `/fleet.git/git-upload-pack`. */
  path: string;
  /** Query string without `?` (`service=git-upload-pack`). */
  query: string;
  /** HTTP status; 0 until the response starts. */
  status: number;
  /** Response body bytes sent so far. */
  bytes: number;
  /** The response was sent whole, or the client went away. */
  done: boolean;
  /** The client closed the connection before the whole response was sent. */
  aborted: boolean;
}

export interface GitServer {
  /** Directory holding the served bare repositories (`NAME.git`). */
  readonly root: string;
  readonly port: number;
  /** The clone URL of repository `name` (`http://127.0.0.1:PORT/NAME.git`). */
  url(name: string, credentials?: Credentials): string;
  readonly requests: GitRequest[];
  /** Spread each upload-pack POST response body over `ms` (null: full speed). */
  delay(ms: number | null): void;
  /** Stop listening; cut open connections and kill running CGI processes. */
  stop(): Promise<void>;
  /** Listen again, on the same port. */
  start(): Promise<void>;
  /** Stop for good and remove the served repositories. */
  close(): Promise<void>;
}

export interface SshKey {
  kind: "ssh";
  name: string;
  type: string;
  privateKeyPath: string;
  publicKeyPath: string;
  /** `ssh-ed25519 AAAA... NAME`. */
  publicKey: string;
  /** `SHA256:...`, as `ssh-keygen -l` prints it. */
  fingerprint: string;
  /** `NAME@example.test`, the principal of `allowedSigners`. */
  principal: string;
  /** A line for an allowed_signers file: `NAME@example.test ssh-ed25519 AAAA...`. */
  allowedSigners: string;
}

export interface GpgKey {
  kind: "gpg";
  name: string;
  email: string;
  /** The GNUPGHOME holding the secret key. */
  home: string;
  /** The primary key's fingerprint (40 hex digits, upper case). */
  fingerprint: string;
  /** The long key id (last 16 hex digits of the fingerprint). */
  keyId: string;
  /** `gpg --export --armor`. */
  publicKeyArmored: string;
}

export type SigningKey = SshKey | GpgKey;

export interface CommitOptions {
  sign?: SigningKey;
  /** Author and committer date (git's formats, e.g. `2024-01-01T00:00:00Z` or `@1700000000 +0000`). */
  date?: string;
  /** Commit even when nothing changed. */
  allowEmpty?: boolean;
}

export interface WorkRepo {
  /** The work tree (a normal clone of the served repository). */
  dir: string;
  /** The served bare repository. */
  bareDir: string;
  /** Writes files (path relative to the repository -> content); `null` deletes. */
  writeFiles(files: Record<string, string | null>): Promise<void>;
  /** Stages everything and commits; returns the new commit's id. */
  commit(message: string, options?: CommitOptions): Promise<string>;
  /** Pushes HEAD to the served repository: `main` by default, a branch name or a full ref. */
  push(ref?: string, options?: { force?: boolean }): Promise<void>;
  resetHard(sha: string): Promise<void>;
  /** Runs git in the work tree; returns standard output (rejects on a non-zero exit). */
  git(
    args: readonly string[],
    options?: { input?: string | Uint8Array; env?: Record<string, string> },
  ): Promise<string>;
}

// ---------------------------------------------------------------------------------------------
// Cleanup
// ---------------------------------------------------------------------------------------------

const cleanups: (() => Promise<void> | void)[] = [];

/** Closes every server, stops every gpg-agent and removes every temp dir made by this module. */
export async function cleanup(): Promise<void> {
  for (const step of cleanups.splice(0).reverse()) {
    try {
      await step();
    } catch {
      // best effort: the next step still runs
    }
  }
}

function tempDir(prefix: string): string {
  const dir = mkdtempSync(path.join(tmpdir(), prefix));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

// ---------------------------------------------------------------------------------------------
// Running programs
// ---------------------------------------------------------------------------------------------

/** git with no system or global configuration, a fixed identity, and no prompts. */
export const GIT_ENV: Record<string, string> = {
  PATH: process.env.PATH ?? "/usr/local/bin:/usr/bin:/bin",
  HOME: tmpdir(),
  LANG: "C",
  GIT_CONFIG_NOSYSTEM: "1",
  GIT_CONFIG_GLOBAL: "/dev/null",
  GIT_TERMINAL_PROMPT: "0",
  GIT_AUTHOR_NAME: "Driftless Test",
  GIT_AUTHOR_EMAIL: "test@example.test",
  GIT_COMMITTER_NAME: "Driftless Test",
  GIT_COMMITTER_EMAIL: "test@example.test",
};

interface ExecOptions {
  cwd?: string;
  env?: Record<string, string>;
  input?: string | Uint8Array;
}

/** Runs a program (no shell); resolves with standard output, rejects with its stderr on failure. */
export function exec(file: string, args: readonly string[], options: ExecOptions = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(file, args, {
      cwd: options.cwd,
      env: { ...GIT_ENV, ...options.env },
      stdio: [options.input === undefined ? "ignore" : "pipe", "pipe", "pipe"],
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout?.on("data", (c: Buffer) => out.push(c));
    child.stderr?.on("data", (c: Buffer) => err.push(c));
    child.on("error", reject);
    child.on("close", (code, signal) => {
      if (code === 0) resolve(Buffer.concat(out).toString("utf8"));
      else {
        const why = signal ? `killed by ${signal}` : `exit ${code}`;
        reject(new Error(`${file} ${args.join(" ")}: ${why}\n${Buffer.concat(err).toString("utf8")}`));
      }
    });
    if (options.input !== undefined) child.stdin?.end(options.input);
  });
}

// ---------------------------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------------------------

export async function startGitServer(options: GitServerOptions = {}): Promise<GitServer> {
  const root = tempDir("driftless-git-root-");
  const requests: GitRequest[] = [];
  const sockets = new Set<Socket>();
  const children = new Set<ChildProcess>();
  let delayMs: number | null = null;
  let port = 0;
  let server: Server | null = null;
  let closed = false;

  const handler = (req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? "/", "http://127.0.0.1");
    const entry: GitRequest = {
      method: req.method ?? "GET",
      path: url.pathname,
      query: url.search.slice(1),
      status: 0,
      bytes: 0,
      done: false,
      aborted: false,
    };
    requests.push(entry);
    res.on("close", () => {
      entry.aborted = !res.writableFinished;
      entry.done = true;
    });
    const reply = (status: number, body: string, headers: Record<string, string> = {}) => {
      entry.status = status;
      entry.bytes += Buffer.byteLength(body);
      res.writeHead(status, { "Content-Type": "text/plain", ...headers });
      res.end(body);
    };
    if (options.auth && !authorized(req, options.auth)) {
      req.resume();
      reply(401, "authentication required\n", { "WWW-Authenticate": 'Basic realm="driftless-test"' });
      return;
    }
    const pathInfo = safePathInfo(url.pathname);
    if (pathInfo === null) {
      req.resume();
      reply(400, "bad path\n");
      return;
    }
    const slow = delayMs !== null && req.method === "POST" && pathInfo.endsWith("/git-upload-pack") ? delayMs : null;
    runCgi(req, res, entry, pathInfo, url.search.slice(1), slow);
  };

  const runCgi = (
    req: IncomingMessage,
    res: ServerResponse,
    entry: GitRequest,
    pathInfo: string,
    query: string,
    slow: number | null,
  ) => {
    runGitHttpBackend(
      req,
      res,
      { projectRoot: root, pathInfo, query, ...(options.auth ? { remoteUser: options.auth.username } : {}) },
      {
        onStatus: (status) => {
          entry.status = status;
        },
        onBytes: (count) => {
          entry.bytes += count;
        },
        ...(slow === null ? {} : { holdBody: (response, body) => drip(response, entry, body, slow) }),
      },
      children,
    );
  };

  const listen = (onPort: number) =>
    new Promise<void>((resolve, reject) => {
      const s = createServer(handler);
      s.on("connection", (socket) => {
        sockets.add(socket);
        socket.on("close", () => sockets.delete(socket));
      });
      s.once("error", reject);
      s.listen(onPort, "127.0.0.1", () => {
        const address = s.address();
        if (address && typeof address === "object") port = address.port;
        server = s;
        resolve();
      });
    });

  const stop = async () => {
    const s = server;
    server = null;
    if (!s) return;
    const closedPromise = new Promise<void>((resolve) => s.close(() => resolve()));
    for (const socket of sockets) socket.destroy();
    for (const child of children) child.kill("SIGKILL");
    await closedPromise;
  };

  await listen(0);
  const api: GitServer = {
    root,
    get port() {
      return port;
    },
    url(name, credentials) {
      const userinfo = credentials
        ? `${encodeURIComponent(credentials.username)}:${encodeURIComponent(credentials.password)}@`
        : "";
      return `http://${userinfo}127.0.0.1:${port}/${name}.git`;
    },
    requests,
    delay(ms) {
      delayMs = ms;
    },
    stop,
    async start() {
      if (closed) throw new Error("the git server was closed");
      if (!server) await listen(port);
    },
    async close() {
      closed = true;
      await stop();
    },
  };
  cleanups.push(() => api.close());
  return api;
}

function authorized(req: IncomingMessage, auth: Credentials): boolean {
  const header = req.headers.authorization ?? "";
  const m = /^Basic\s+(.+)$/i.exec(header);
  if (!m?.[1]) return false;
  const decoded = Buffer.from(m[1], "base64").toString("utf8");
  return decoded === `${auth.username}:${auth.password}`;
}

/** Sends `body` in small chunks spread over `ms`; stops when the client goes away. */
function drip(res: ServerResponse, entry: GitRequest, body: Buffer, ms: number): void {
  const steps = Math.max(1, Math.min(body.length, Math.ceil(ms / 20)));
  const size = Math.ceil(body.length / steps);
  const interval = ms / steps;
  let offset = 0;
  const next = () => {
    if (res.destroyed) return;
    if (offset >= body.length) {
      res.end();
      return;
    }
    const chunk = body.subarray(offset, offset + size);
    offset += chunk.length;
    entry.bytes += chunk.length;
    res.write(chunk);
    setTimeout(next, interval);
  };
  setTimeout(next, interval);
}

// ---------------------------------------------------------------------------------------------
// Repositories
// ---------------------------------------------------------------------------------------------

export async function createRepo(server: GitServer, name: string): Promise<WorkRepo> {
  const bareDir = path.join(server.root, `${name}.git`);
  mkdirSync(bareDir, { recursive: true });
  await exec("git", ["init", "--quiet", "--bare", "--initial-branch=main", bareDir]);
  await exec("git", ["config", "http.receivepack", "true"], { cwd: bareDir });
  const dir = path.join(tempDir("driftless-work-"), name);
  await exec("git", ["init", "--quiet", "--initial-branch=main", dir]);
  await exec("git", ["remote", "add", "origin", bareDir], { cwd: dir });

  const git: WorkRepo["git"] = (args, options = {}) => exec("git", args, { cwd: dir, ...options });
  return {
    dir,
    bareDir,
    git,
    async writeFiles(files) {
      for (const [rel, content] of Object.entries(files)) {
        const file = path.join(dir, rel);
        if (content === null) {
          rmSync(file, { force: true });
        } else {
          mkdirSync(path.dirname(file), { recursive: true });
          writeFileSync(file, content);
        }
      }
    },
    async commit(message, options = {}) {
      await git(["add", "--all"]);
      const env: Record<string, string> = {};
      if (options.date) {
        env.GIT_AUTHOR_DATE = options.date;
        env.GIT_COMMITTER_DATE = options.date;
      }
      const config: string[] = [];
      const sign = options.sign;
      if (sign?.kind === "ssh") {
        config.push("-c", "gpg.format=ssh", "-c", `user.signingkey=${sign.privateKeyPath}`);
      } else if (sign?.kind === "gpg") {
        config.push("-c", "gpg.format=openpgp", "-c", "gpg.program=gpg", "-c", `user.signingkey=${sign.fingerprint}`);
        env.GNUPGHOME = sign.home;
      }
      const args = [...config, "commit", "--quiet", "--no-verify", "-m", message];
      if (sign) args.push("-S");
      if (options.allowEmpty) args.push("--allow-empty");
      await git(args, { env });
      return (await git(["rev-parse", "HEAD"])).trim();
    },
    async push(ref = "main", options = {}) {
      const target = ref.startsWith("refs/") ? ref : `refs/heads/${ref}`;
      await git(["push", "--quiet", ...(options.force ? ["--force"] : []), "origin", `HEAD:${target}`]);
    },
    async resetHard(sha) {
      await git(["reset", "--quiet", "--hard", sha]);
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Signing keys
// ---------------------------------------------------------------------------------------------

/** An SSH key pair without passphrase (`ssh-keygen -t TYPE -N ""`). */
export async function makeSshKey(name: string, options: { type?: "ed25519" | "rsa" | "ecdsa" } = {}): Promise<SshKey> {
  const type = options.type ?? "ed25519";
  const dir = tempDir("driftless-ssh-");
  const privateKeyPath = path.join(dir, name);
  const bits = type === "rsa" ? ["-b", "3072"] : type === "ecdsa" ? ["-b", "256"] : [];
  await exec("ssh-keygen", ["-q", "-t", type, ...bits, "-N", "", "-C", name, "-f", privateKeyPath]);
  const publicKeyPath = `${privateKeyPath}.pub`;
  const publicKey = readFileSync(publicKeyPath, "utf8").trim();
  const listed = await exec("ssh-keygen", ["-l", "-E", "sha256", "-f", publicKeyPath]);
  const fingerprint = /SHA256:\S+/.exec(listed)?.[0] ?? "";
  const [keyType, base64] = publicKey.split(/\s+/);
  const principal = `${name}@example.test`;
  return {
    kind: "ssh",
    name,
    type: keyType ?? "",
    privateKeyPath,
    publicKeyPath,
    publicKey,
    fingerprint,
    principal,
    allowedSigners: `${principal} ${keyType} ${base64}`,
  };
}

/** An OpenPGP key without passphrase in its own GNUPGHOME (`gpg --quick-gen-key`). */
export async function makeGpgKey(
  name: string,
  email: string,
  options: { algo?: "ed25519" | "rsa3072" } = {},
): Promise<GpgKey> {
  const home = tempDir("driftless-gpg-");
  const env = { GNUPGHOME: home };
  cleanups.push(() => exec("gpgconf", ["--kill", "gpg-agent"], { env }).then(() => undefined));
  const base = ["--batch", "--no-tty", "--pinentry-mode", "loopback", "--passphrase", ""];
  await exec("gpg", [...base, "--quick-gen-key", `${name} <${email}>`, options.algo ?? "ed25519", "sign", "never"], {
    env,
  });
  const colons = await exec("gpg", ["--batch", "--with-colons", "--list-keys", email], { env });
  const fingerprint = /^fpr:+([0-9A-F]{40}):/m.exec(colons)?.[1];
  if (!fingerprint) throw new Error(`gpg made no key for ${email}:\n${colons}`);
  const publicKeyArmored = await exec("gpg", ["--batch", "--armor", "--export", fingerprint], { env });
  return { kind: "gpg", name, email, home, fingerprint, keyId: fingerprint.slice(-16), publicKeyArmored };
}
