/**
 * The cached Git repository of a host (`STATE/git`, a bare repository) and the checkouts made
 * from it (`STATE/checkouts/<commit>`).
 *
 * A fetch asks for the tracked ref only (shallow on the first clone); it never decides what the
 * host converges from: the commit the host uses is recorded in the state database only after it
 * was fetched, verified, checked out and validated. A checkout is built in a temp directory and
 * renamed into place, so a killed agent leaves either a whole checkout or none. A cache that a
 * killed fetch left unreadable is thrown away and fetched again; a fetch that fails while the
 * cache still reads (the server sent garbage, or took too long) leaves it as it is.
 *
 * The remote's URL carries no credentials (see `splitCredentials`): they go in `auth`, so they
 * are never written into the cache's config or shown in an error.
 */
import * as path from "node:path";
import type { HttpClient, PromiseFsClient } from "isomorphic-git";
import { DriftlessError, errorMessage } from "../errors.js";
import type { HostFs } from "../host/fs.js";
import { redactUrl } from "../log.js";
import { splitSignedCommit } from "./verify.js";

type Git = typeof import("isomorphic-git");

export interface GitRemote {
  /** Without user information (credentials go in `auth`). */
  url: string;
  /** Branch, tag or full commit id. */
  ref: string;
  auth?: { username: string; password: string };
}

export interface GitPorts {
  /** The machine's filesystem (HostFs rooted at /). */
  fs: HostFs;
  /** The same filesystem in the form isomorphic-git takes. */
  gitFs: PromiseFsClient | typeof import("node:fs");
  /** A client per fetch, bound to the fetch's cancellation. */
  http: (signal?: AbortSignal) => HttpClient;
}

export interface CommitInfo {
  oid: string;
  /** The commit object without its signature: what a signature signs, byte for byte. */
  payload: Uint8Array;
  /** The `gpgsig` header, when signed. */
  signature?: string;
  parents: string[];
  message: string;
}

const NETWORK_CODES = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ENOTFOUND",
  "EAI_AGAIN",
  "ETIMEDOUT",
  "ETIMEOUT",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "EPIPE",
  "HttpError",
  "SmartHttpError",
  "UnknownTransportError",
  "UrlParseError",
  "CERT_HAS_EXPIRED",
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "ERR_TLS_CERT_ALTNAME_INVALID",
  "NotFoundError",
  "UserCanceledError",
  "ABORT_ERR",
]);

const COMMIT_ID = /^[0-9a-f]{40}$/;

export class GitCache {
  readonly #ports: GitPorts;
  readonly #gitdir: string;
  readonly #checkouts: string;
  #git: Git | undefined;
  #cache: object = {};

  constructor(ports: GitPorts, stateDir: string) {
    this.#ports = ports;
    this.#gitdir = path.join(stateDir, "git");
    this.#checkouts = path.join(stateDir, "checkouts");
  }

  /** What every isomorphic-git call on the cache takes. */
  get #repo() {
    return { fs: this.#ports.gitFs, gitdir: this.#gitdir, cache: this.#cache };
  }

  /** One fetch of `remote.ref` from origin (or of every branch, for a commit id). */
  async #fetchRef(remote: GitRemote, signal: AbortSignal | undefined, depth: { depth?: number; relative?: boolean }) {
    const git = await this.#lib();
    const isCommitId = COMMIT_ID.test(remote.ref);
    return git.fetch({
      ...this.#repo,
      http: this.#ports.http(signal),
      remote: "origin",
      url: remote.url,
      ...(isCommitId ? {} : { ref: remote.ref, singleBranch: true }),
      tags: false,
      ...depth,
      ...(remote.auth ? { onAuth: () => remote.auth } : {}),
    });
  }

  async #lib(): Promise<Git> {
    if (!this.#git) {
      const mod = (await import("isomorphic-git")) as Git & { default?: Git };
      this.#git = mod.default ?? mod;
    }
    return this.#git;
  }

  /** Fetches the tracked ref; returns the commit it points at. Network and auth failures are retryable errors. */
  async fetch(remote: GitRemote, signal?: AbortSignal): Promise<string> {
    try {
      return await this.#fetchOnce(remote, signal);
    } catch (error) {
      if (isNetworkError(error) || signal?.aborted || (await this.#readable())) throw fetchError(remote, error);
      // The cache itself is damaged (a killed fetch): start again from nothing.
      this.#ports.fs.removeTree(this.#gitdir);
      this.#cache = {};
      try {
        return await this.#fetchOnce(remote, signal);
      } catch (again) {
        throw fetchError(remote, again);
      }
    }
  }

  async #fetchOnce(remote: GitRemote, signal?: AbortSignal): Promise<string> {
    const git = await this.#lib();
    const { fs } = this.#ports;
    const gitdir = this.#gitdir;
    const fresh = !fs.lstat(path.join(gitdir, "config")) || !fs.lstat(path.join(gitdir, "HEAD"));
    if (fresh) {
      fs.removeTree(gitdir);
      fs.mkdirp(gitdir, 0o700);
      await git.init({ fs: this.#ports.gitFs, gitdir, bare: true, defaultBranch: "main" });
    } else {
      this.#removeIncompletePacks();
    }
    // The cache is a bare mirror: remote branches land on local branches, so the next fetch
    // tells the server which commits it already has (and gets only the new ones).
    await git.setConfig({ fs: this.#ports.gitFs, gitdir, path: "remote.origin.url", value: remote.url });
    await git.setConfig({
      fs: this.#ports.gitFs,
      gitdir,
      path: "remote.origin.fetch",
      value: "+refs/heads/*:refs/heads/*",
    });
    const isCommitId = COMMIT_ID.test(remote.ref);
    if (isCommitId && (await this.#hasCommit(remote.ref))) return remote.ref;
    // The first clone is shallow; later fetches bring only the new commits on top of it.
    const result = await this.#fetchRef(remote, signal, fresh && !isCommitId ? { depth: 1 } : {});
    if (isCommitId) {
      if (!(await this.#hasCommit(remote.ref))) {
        throw new DriftlessError(`commit ${remote.ref} is not on ${remote.url}`, { code: "EREF", phase: "load" });
      }
      return remote.ref;
    }
    if (!result.fetchHead) {
      throw new DriftlessError(`${remote.url} has no ref ${remote.ref}`, { code: "EREF", phase: "load" });
    }
    return this.#peel(result.fetchHead);
  }

  /** An annotated tag points at a tag object: follow it to the commit. */
  async #peel(oid: string): Promise<string> {
    const git = await this.#lib();
    let current = oid;
    for (let i = 0; i < 10; i++) {
      const { type, object } = await git.readObject({ ...this.#repo, oid: current });
      if (type === "commit") return current;
      if (type !== "tag")
        throw new DriftlessError(`${oid} is a ${type}, not a commit`, { code: "EREF", phase: "load" });
      current = (object as { object: string }).object;
    }
    throw new DriftlessError(`tag ${oid} is nested too deeply`, { code: "EREF", phase: "load" });
  }

  /**
   * Fetches older history, in growing steps, until `ancestor` is in the cache or the history
   * ends: after the cache was cloned again (shallow), the commit the host is on may be older
   * than what the clone brought, and the rollback check needs the path between them.
   */
  async deepenUntil(remote: GitRemote, ancestor: string, signal?: AbortSignal): Promise<boolean> {
    for (let step = 32; step <= 8192; step *= 4) {
      if (await this.#hasCommit(ancestor)) return true;
      if (!this.#ports.fs.lstat(path.join(this.#gitdir, "shallow"))) return false; // the whole history is here
      await this.#fetchRef(remote, signal, { depth: step, relative: true });
    }
    return this.#hasCommit(ancestor);
  }

  /** True when every branch of the cache resolves to a commit it can read. */
  async #readable(): Promise<boolean> {
    const { fs } = this.#ports;
    if (!fs.lstat(path.join(this.#gitdir, "config")) || !fs.lstat(path.join(this.#gitdir, "HEAD"))) return false;
    try {
      const git = await this.#lib();
      const branches = await git.listBranches({ ...this.#repo });
      for (const branch of branches) {
        const oid = await git.resolveRef({ ...this.#repo, ref: `refs/heads/${branch}` });
        await git.readCommit({ ...this.#repo, oid });
      }
      return true;
    } catch {
      return false;
    }
  }

  async #hasCommit(oid: string): Promise<boolean> {
    try {
      const git = await this.#lib();
      await git.readCommit({ ...this.#repo, oid });
      return true;
    } catch {
      return false;
    }
  }

  /** A pack without its index is what a killed fetch leaves; nothing refers to it. */
  #removeIncompletePacks(): void {
    const packDir = path.join(this.#gitdir, "objects", "pack");
    if (!this.#ports.fs.lstat(packDir)) return;
    const names = new Set(this.#ports.fs.readdir(packDir).map((e) => e.name));
    for (const name of names) {
      if (name.endsWith(".pack") && !names.has(name.replace(/\.pack$/, ".idx"))) {
        this.#ports.fs.remove(path.join(packDir, name));
      }
      if (name.startsWith("tmp") || name.endsWith(".tmp")) this.#ports.fs.remove(path.join(packDir, name));
    }
  }

  async commit(oid: string): Promise<CommitInfo> {
    const git = await this.#lib();
    const { commit } = await git.readCommit({ ...this.#repo, oid });
    // The signed payload is cut from the raw object as git does, not rebuilt from parsed fields.
    const raw = await git.readObject({ ...this.#repo, oid, format: "content" });
    const { payload, signature } = splitSignedCommit(raw.object as Uint8Array);
    return {
      oid,
      payload,
      ...(signature ? { signature } : {}),
      parents: commit.parent,
      message: commit.message,
    };
  }

  /** True when `ancestor` is `oid` or one of its ancestors in the cached history. */
  async isDescendant(oid: string, ancestor: string, limit = 100_000): Promise<boolean> {
    if (oid === ancestor) return true;
    const git = await this.#lib();
    const seen = new Set<string>([oid]);
    const queue = [oid];
    while (queue.length > 0 && seen.size <= limit) {
      const current = queue.shift() as string;
      let parents: string[];
      try {
        parents = (await git.readCommit({ ...this.#repo, oid: current })).commit.parent;
      } catch {
        continue; // beyond a shallow boundary
      }
      for (const parent of parents) {
        if (parent === ancestor) return true;
        if (!seen.has(parent)) {
          seen.add(parent);
          queue.push(parent);
        }
      }
    }
    return false;
  }

  /**
   * The directory holding the files of `oid`, made once, whole or not at all. With `base` (the
   * commit checked out before), files and folders the new commit did not change are hard links
   * to the base checkout's, so a small commit to a large repository is checked out quickly.
   * Checkouts are never modified once made, so sharing their files is safe.
   */
  async checkout(oid: string, base?: string): Promise<string> {
    const { fs } = this.#ports;
    const target = path.join(this.#checkouts, oid);
    if (fs.lstat(target)?.type === "directory") return target;
    fs.mkdirp(this.#checkouts, 0o700);
    const temp = path.join(this.#checkouts, `.tmp-${oid}-${process.pid}`);
    fs.removeTree(temp);
    fs.mkdirp(temp, 0o755);
    try {
      const git = await this.#lib();
      const { commit } = await git.readCommit({ ...this.#repo, oid });
      const baseDir = base ? path.join(this.#checkouts, base) : undefined;
      let baseTree: string | undefined;
      if (base && baseDir && fs.lstat(baseDir)?.type === "directory") {
        baseTree = (await git.readCommit({ ...this.#repo, oid: base })).commit.tree;
      }
      await this.#writeTree(git, commit.tree, temp, baseTree ? { tree: baseTree, dir: baseDir as string } : undefined);
      fs.rename(temp, target);
    } catch (error) {
      fs.removeTree(temp);
      throw new DriftlessError(`cannot check out ${oid.slice(0, 12)}: ${errorMessage(error)}`, {
        code: "ECHECKOUT",
        phase: "load",
        cause: error,
      });
    }
    return target;
  }

  async #writeTree(git: Git, treeOid: string, dir: string, base?: { tree: string; dir: string }): Promise<void> {
    const { fs } = this.#ports;
    if (base && base.tree === treeOid) {
      fs.linkTree(base.dir, dir);
      return;
    }
    const read = async (oid: string) => (await git.readTree({ ...this.#repo, oid })).tree;
    const tree = await read(treeOid);
    const before = new Map((base ? await read(base.tree) : []).map((e) => [e.path, e]));
    for (const entry of tree) {
      if (entry.path === "." || entry.path === ".." || entry.path.includes("/") || entry.path === ".git") {
        throw new DriftlessError(`refusing tree entry "${entry.path}"`, { code: "ECHECKOUT", phase: "load" });
      }
      const target = path.join(dir, entry.path);
      const old = before.get(entry.path);
      const oldPath = base ? path.join(base.dir, entry.path) : undefined;
      if (entry.type === "tree") {
        fs.mkdirp(target, 0o755);
        await this.#writeTree(
          git,
          entry.oid,
          target,
          old?.type === "tree" && oldPath ? { tree: old.oid, dir: oldPath } : undefined,
        );
      } else if (entry.type === "blob") {
        if (old && oldPath && old.oid === entry.oid && old.mode === entry.mode && entry.mode !== "120000") {
          fs.link(oldPath, target);
          continue;
        }
        const { blob } = await git.readBlob({ ...this.#repo, oid: entry.oid });
        if (entry.mode === "120000") fs.symlink(Buffer.from(blob).toString("utf8"), target);
        else fs.writeFile(target, blob, entry.mode === "100755" ? 0o755 : 0o644);
      }
      // Submodules (commit entries) are not part of a profile repository.
    }
  }

  /** Removes checkouts other than `keep`. */
  prune(keep: string[]): void {
    const { fs } = this.#ports;
    if (!fs.lstat(this.#checkouts)) return;
    for (const entry of fs.readdir(this.#checkouts)) {
      if (!keep.includes(entry.name)) fs.removeTree(path.join(this.#checkouts, entry.name));
    }
  }
}

/**
 * A URL's user information taken out: the URL to show, store and fetch, and the credentials to
 * send. A password may hold `@`: everything before the last `@` of the authority is user
 * information (WHATWG URL parsing).
 */
export function splitCredentials(url: string): { url: string; auth?: { username: string; password: string } } {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return { url: redactUrl(url) };
  }
  if (!parsed.username && !parsed.password) return { url };
  const auth = { username: decodeURIComponent(parsed.username), password: decodeURIComponent(parsed.password) };
  parsed.username = "";
  parsed.password = "";
  return { url: parsed.toString(), auth };
}

/** An http(s) URL is fetched with Git; anything else is a directory. */
export function isGitUrl(url: string): boolean {
  return /^https?:\/\//.test(url);
}

export function isNetworkError(error: unknown): boolean {
  const e = error as { code?: string; cause?: { code?: string }; errno?: number };
  return NETWORK_CODES.has(e?.code ?? "") || NETWORK_CODES.has(e?.cause?.code ?? "");
}

function fetchError(remote: GitRemote, error: unknown): DriftlessError {
  if (error instanceof DriftlessError) return error;
  const e = error as { code?: string; data?: { statusCode?: number } };
  const status = e?.data?.statusCode;
  const reason =
    status === 401 || status === 403
      ? `authentication refused (HTTP ${status})`
      : status
        ? `HTTP ${status}`
        : errorMessage(error);
  return new DriftlessError(`cannot fetch ${remote.ref} from ${redactUrl(remote.url)}: ${redactUrl(reason)}`, {
    code: "EFETCH",
    phase: "load",
    retryable: true,
    cause: error,
  });
}
