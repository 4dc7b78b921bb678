/**
 * Reads the agent configuration: the YAML file, then environment variables that override single
 * keys (for containers and tests), validated with every error located (file or variable, line,
 * field). Paths in the file may be relative to the file's directory. The file is parsed with
 * positions (yaml/positions.ts) only when it has a problem. A run that writes state keeps what it
 * validated in the state directory (`CONFIG_CACHE`), and the next load of the same inputs takes
 * it: a no-op run loads no schema library at all.
 */
import { createHash } from "node:crypto";
import * as path from "node:path";
import { DriftlessError, sortByLocation } from "../errors.js";
import { HostFs } from "../host/fs.js";
import { versionLine } from "../version.js";
import { parseFast } from "../yaml/fast.js";
import { formatField, isObject, issuesToErrors, type Locator } from "../yaml/fields.js";
import { parseWithPositions } from "../yaml/positions.js";
import { DEFAULT_CONFIG, DEFAULT_STATE_DIR, ENV_OVERRIDES } from "./env.js";
import type { AgentConfig } from "./schema.js";

export { DEFAULT_CONFIG, ENV_OVERRIDES };

const PATH_KEYS: string[][] = [
  ["stateDir"],
  ["source", "tokenFile"],
  ["source", "usernameFile"],
  ["source", "passwordFile"],
  ["trust", "allowedSigners"],
  ["trust", "openpgpKeys"],
  ["broker", "passwordFile"],
  ["broker", "ca"],
];

/** A single key set on the command line; it overrides the file and the environment. */
export interface ConfigOverride {
  key: string[];
  value: unknown;
  /** The option that set it, for errors: `--host`. */
  option: string;
}

export interface LoadOptions {
  /**
   * The file belongs to the tree mounted at this directory (`--root DIR` without `--config`):
   * its absolute paths, and the default state directory, are read inside the tree.
   */
  treeRoot?: string;
  /** Keys set on the command line; with `source.url` among them no file is needed. */
  overrides?: ConfigOverride[];
  /**
   * Keep the validated configuration in the state directory (`CONFIG_CACHE`), for the next load
   * of the same inputs: a run that writes state sets it; plan, status and install do not.
   */
  keepValidated?: boolean;
}

/**
 * The configuration as last validated, in the state directory: `{key, config}`, the key a digest
 * of this build and of every input (the file's keys with paths resolved, the environment's and the
 * options'). A load of the same inputs takes it instead of validating again: validation (zod) is
 * about 1.4 MB of a small run's peak memory in the single binary, with the facts cache's.
 */
export const CONFIG_CACHE = "config.validated.json";

export interface LoadedConfig {
  config: AgentConfig;
  /** The file read; empty when there was none (everything came from the environment or options). */
  file: string;
  /** Which keys came from the environment. */
  fromEnv: string[];
}

export async function loadAgentConfig(
  fs: HostFs,
  file: string,
  env: Record<string, string | undefined>,
  /** The file's text when already read (the supervisor hands it to each run); else it is read. */
  givenText?: string,
  options: LoadOptions = {},
): Promise<{ loaded?: LoadedConfig; errors: DriftlessError[] }> {
  const text = givenText !== undefined && givenText !== "" ? givenText : fs.readTextIfExists(file);
  const fromEnv = Object.keys(ENV_OVERRIDES).filter((name) => env[name] !== undefined && env[name] !== "");
  const overrides = options.overrides ?? [];
  const sourceGiven =
    fromEnv.includes("DRIFTLESS_SOURCE_URL") || overrides.some((o) => o.key.join(".") === "source.url");
  if (text === null && !sourceGiven) {
    return {
      errors: [
        new DriftlessError(
          `no configuration at ${file}; create it (driftless install writes one) or set DRIFTLESS_SOURCE_URL`,
          { code: "ECONFIG", phase: "load", location: { file } },
        ),
      ],
    };
  }
  const settings: Settings = {
    fs,
    file,
    fromFile: text !== null,
    env,
    fromEnv,
    overrides,
    treeRoot: options.treeRoot,
    keep: options.keepValidated === true,
  };
  const fileOnly: Locator = (fieldPath) => ({ file, field: formatField(fieldPath) });
  if (text === null) return settle({ apiVersion: "driftless/v1", kind: "AgentConfig" }, fileOnly, settings);
  // Parsed without positions first; a file that is valid (nearly always) is never parsed again.
  const fast = parseFast(text);
  const [only] = fast ?? [];
  if (fast?.length === 1 && isObject(only)) {
    const settled = await settle(only, fileOnly, settings);
    if (settled.loaded) return settled;
  }
  // Something is wrong: the parse with positions says what the file holds and where each error is.
  const errors: DriftlessError[] = [];
  const docs = await parseWithPositions(text, file, errors);
  if (errors.length) return { errors };
  const [first] = docs;
  if (docs.length !== 1 || !first || !isObject(first.value)) {
    errors.push(
      new DriftlessError("must hold one AgentConfig mapping", {
        code: "ECONFIG",
        phase: "validate",
        location: { file },
      }),
    );
    return { errors };
  }
  return settle(first.value, first.locate, settings);
}

interface Settings {
  fs: HostFs;
  file: string;
  /** False when there is no file: everything comes from the environment and the options. */
  fromFile: boolean;
  env: Record<string, string | undefined>;
  /** The environment variables set. */
  fromEnv: string[];
  overrides: ConfigOverride[];
  treeRoot: string | undefined;
  keep: boolean;
}

/**
 * The file's mapping (`raw`, changed in place) with paths resolved and overrides applied,
 * validated, or as validated before for the same inputs.
 */
async function settle(
  raw: Record<string, unknown>,
  locate: Locator,
  { fs, file, fromFile, env, fromEnv, overrides, treeRoot, keep }: Settings,
): Promise<{ loaded?: LoadedConfig; errors: DriftlessError[] }> {
  // Paths in the file are relative to its directory; paths from the environment to the working directory.
  // A tree's own file names paths inside the tree.
  const base = path.dirname(path.resolve(file));
  // Resolved as a chroot would: an absolute link in the tree (`/var -> /data`) stays inside it.
  const tree = treeRoot ? new HostFs(treeRoot) : undefined;
  for (const key of PATH_KEYS) {
    const value = getIn(raw, key);
    if (typeof value !== "string") continue;
    if (!path.isAbsolute(value)) setIn(raw, key, path.resolve(base, value));
    else if (tree) setIn(raw, key, tree.resolveFollowing(value));
  }
  if (tree && raw.stateDir === undefined) raw.stateDir = tree.resolveFollowing("/var/lib/driftless");
  for (const name of fromEnv) setIn(raw, ENV_OVERRIDES[name] as string[], env[name]);
  for (const o of overrides) setIn(raw, o.key, o.value);
  const envOf = new Map(fromEnv.map((name) => [(ENV_OVERRIDES[name] as string[]).join("."), `environment ${name}`]));
  for (const o of overrides) envOf.set(o.key.join("."), `option ${o.option}`);
  const validated = validatedCache(fs, raw);
  const known = validated.read();
  if (known) return { loaded: { config: known, file: fromFile ? file : "", fromEnv }, errors: [] };
  const { agentConfigSchema } = await import("./schema.js");
  const result = agentConfigSchema.safeParse(raw);
  if (!result.success) {
    const locator: Locator = (fieldPath, options) => {
      const origin = envOf.get(fieldPath.join("."));
      return origin ? { file: origin, field: formatField(fieldPath) } : locate(fieldPath, options);
    };
    return { errors: sortByLocation(issuesToErrors(result.error.issues, locator)) };
  }
  if (keep) validated.write(result.data);
  return { loaded: { config: result.data, file: fromFile ? file : "", fromEnv }, errors: [] };
}

/** The cache of the validated configuration for these inputs (`CONFIG_CACHE`); reads and writes never throw. */
function validatedCache(
  fs: HostFs,
  raw: Record<string, unknown>,
): { read(): AgentConfig | null; write(config: AgentConfig): void } {
  const stateDir = typeof raw.stateDir === "string" ? raw.stateDir : DEFAULT_STATE_DIR;
  // Only on the machine itself, and only a file of this user that no one else may write. Never
  // with a URL that may carry credentials (`user:password@`): they are written nowhere.
  const urls = [getIn(raw, ["source", "url"]), getIn(raw, ["broker", "url"])];
  if (fs.isRooted || !path.isAbsolute(stateDir) || urls.some((u) => String(u ?? "").includes("@"))) {
    return { read: () => null, write: () => {} };
  }
  const cacheFile = path.join(stateDir, CONFIG_CACHE);
  const key = createHash("sha256").update(versionLine()).update("\0").update(JSON.stringify(raw)).digest("hex");
  return {
    read() {
      try {
        const st = fs.lstat(cacheFile);
        if (st?.type !== "file" || st.uid !== process.getuid?.() || st.mode & 0o022) return null;
        const cached: unknown = JSON.parse(fs.readTextIfExists(cacheFile) ?? "null");
        if (!isObject(cached) || cached.key !== key || !isObject(cached.config)) return null;
        return cached.config as unknown as AgentConfig;
      } catch {
        return null;
      }
    },
    write(config) {
      try {
        // Only into a state directory that exists: loading the configuration creates nothing.
        if (fs.lstat(stateDir)?.type !== "directory") return;
        fs.writeFileAtomic(cacheFile, Buffer.from(`${JSON.stringify({ key, config })}\n`), { mode: 0o600 });
      } catch {
        // Not kept (a state directory this user may not write): the next load validates again.
      }
    },
  };
}

function getIn(obj: Record<string, unknown>, key: string[]): unknown {
  let value: unknown = obj;
  for (const part of key) value = isObject(value) ? value[part] : undefined;
  return value;
}

function setIn(obj: Record<string, unknown>, key: string[], value: unknown): void {
  let target = obj;
  for (const part of key.slice(0, -1)) {
    if (!isObject(target[part])) target[part] = {};
    target = target[part] as Record<string, unknown>;
  }
  target[key[key.length - 1] as string] = value;
}
