/**
 * What a cycle needs besides the configuration, made the same way for the daemon, `apply` and
 * `plan`: the Git source (cache, URL without credentials, credentials from their files or taken
 * out of the URL), the trust check and the facts. A failure here (a trusted-keys file missing, a
 * credentials file unreadable) stops the run before its cycle; the caller records it.
 */
import type { HttpClient, PromiseFsClient } from "isomorphic-git";
import type { AgentConfig } from "../config/schema.js";
import type { Facts } from "../facts/collect.js";
import type { HostFs } from "../host/fs.js";
import type { Logger } from "../log.js";
import { GitCache, type GitRemote, isGitUrl, splitCredentials } from "../source/git.js";
import type { GitSource, TrustCheck } from "./cycle.js";

export interface SourceDeps {
  /** The machine's filesystem (configuration, credentials, state, cache). */
  fs: HostFs;
  gitFs: PromiseFsClient | typeof import("node:fs");
  http: (signal?: AbortSignal) => HttpClient;
  facts: (config: AgentConfig) => Promise<Facts>;
  trust: (config: AgentConfig) => Promise<TrustCheck | null>;
  log: Logger;
}

export interface Prepared {
  git: GitSource | null;
  trust: TrustCheck | null;
  facts: Facts;
}

export const URL_CREDENTIALS_WARNING =
  "source.url holds credentials: they are used, never shown or stored, but anyone who can read the configuration or the command line sees them; put them in source.tokenFile (or usernameFile + passwordFile) instead";

/** The Git remote of the configuration; null for a directory source. */
export function gitRemote(fs: HostFs, config: AgentConfig, log: Logger): GitRemote | null {
  const s = config.source;
  if (!isGitUrl(s.url)) return null;
  const { url, auth: fromUrl } = splitCredentials(s.url);
  if (fromUrl) log.warn(URL_CREDENTIALS_WARNING, { url });
  // Read at every run, so a rotated secret needs no restart.
  const read = (file: string) => (fs.readTextIfExists(file) ?? "").trim();
  let auth = fromUrl;
  if (s.tokenFile) auth = { username: s.username ?? "git", password: read(s.tokenFile) };
  else if (s.usernameFile && s.passwordFile) auth = { username: read(s.usernameFile), password: read(s.passwordFile) };
  return { url, ref: s.ref, ...(auth ? { auth } : {}) };
}

/** The Git source (its cache in `cacheDir`), the trust check and the facts; throws what stops a run. */
export async function prepareCycle(deps: SourceDeps, config: AgentConfig, cacheDir: string): Promise<Prepared> {
  const remote = gitRemote(deps.fs, config, deps.log);
  const git = remote
    ? { cache: new GitCache({ fs: deps.fs, gitFs: deps.gitFs, http: deps.http }, cacheDir), remote }
    : null;
  return { git, trust: git ? await deps.trust(config) : null, facts: await deps.facts(config) };
}
