/**
 * The compiled desired state: what loading, selecting and rendering the repository gave for this
 * host, kept in the state database so that a run where nothing changed does not parse, validate
 * or render anything. One entry, the latest, stored by runs that write (apply, agent runs) after a
 * load without errors; `plan` only reads it.
 *
 * An entry is found under a key over everything the desired state depends on (the repository,
 * host name, labels, `--profile` list, this build and the entry format), and used only when the
 * facts the load read (facts/usage.ts) still hold what they held. The repository is its Git
 * commit when the run converges a checkout of the agent's own cache, else a digest of every file
 * under the source directory but `.git`.
 *
 * No file content is stored, sensitive or not: a file keeps its hash. A plan from the cache that
 * has content to write (or to diff) loads the repository again (engine/run.ts). An entry that does
 * not decode is ignored: the run loads the repository as if there were none.
 */
import { createHash, type Hash } from "node:crypto";
import * as path from "node:path";
import type { FactUse } from "../facts/usage.js";
import { factsStillHold } from "../facts/usage.js";
import type { HostFs } from "../host/fs.js";
import type { Desired } from "../resources/types.js";
import { COMMIT, VERSION } from "../version.js";
import { isObject } from "../yaml/fields.js";
import type { StateStore } from "./db.js";

/** Bump when what an entry holds, or how it is encoded, changes: older entries are then not used. */
export const COMPILED_FORMAT = 1;

/** The build that compiled an entry: another version, commit or format never reads it. */
export interface BuildIdentity {
  version: string;
  commit: string;
  format: number;
}

export const THIS_BUILD: BuildIdentity = { version: VERSION, commit: COMMIT, format: COMPILED_FORMAT };

/** What a load gave, as a run uses it. */
export interface CompiledDesired {
  resources: Desired[];
  /** The profiles applied, in order. */
  profiles: string[];
  /** The desired state's digest (profile/desired.ts): the run's `source`. */
  digest: string;
}

export interface CompiledInputs {
  /** The source directory on this machine. */
  dir: string;
  /** The commit `dir` is a checkout of (the agent's own Git cache); absent: a digest of the files. */
  commit?: string | undefined;
  host: string;
  labels: Record<string, string>;
  /** Profiles named on the command line; absent: fleet.yaml's assignments. */
  profiles?: string[] | undefined;
  build: BuildIdentity;
}

export interface CompiledCache {
  /** The entry for these inputs when the facts it used still hold, else null. */
  read(facts: Record<string, unknown>): CompiledDesired | null;
  /**
   * Stores `compiled` (replacing any entry); false when it cannot be: the source changed since
   * the key was made, or a file is copied from outside it.
   */
  write(compiled: CompiledDesired, used: FactUse[], storedAt: Date): boolean;
}

/**
 * The cache of `state` for these inputs; null when their key cannot be made (a file of the
 * source that cannot be read: the load will say what is wrong).
 */
export function compiledCache(fs: HostFs, state: StateStore, inputs: CompiledInputs): CompiledCache | null {
  const keyNow = () => {
    const repository = inputs.commit ? { commit: inputs.commit } : { digest: repositoryDigest(fs, inputs.dir) };
    return createHash("sha256")
      .update(
        JSON.stringify({
          build: inputs.build,
          repository,
          host: inputs.host,
          labels: Object.entries(inputs.labels).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)),
          profiles: inputs.profiles?.length ? inputs.profiles : null,
        }),
      )
      .digest("hex");
  };
  let key: string;
  try {
    key = keyNow();
  } catch {
    return null;
  }
  const realRoot = () => fs.realpath(inputs.dir) ?? path.resolve(inputs.dir);
  return {
    read(facts) {
      try {
        const row = state.compiledDesired(key);
        if (!row) return null;
        if (!factsStillHold(facts, decodeFactUses(row.factsUsed))) return null;
        return decode(row.header, () => state.compiledResources(), inputs.build.format, realRoot());
      } catch {
        return null; // not decodable, or a database without the table (a plan's older copy)
      }
    },
    write(compiled, used, storedAt) {
      // Files changed while they were loaded: what was loaded may be neither the old nor the new state.
      if (!inputs.commit && keyNow() !== key) return false;
      const root = realRoot();
      if (
        !compiled.resources.every(
          (r) => r.kind !== "file" || r.contentFrom === undefined || within(root, r.contentFrom),
        )
      ) {
        return false;
      }
      const header: Header = {
        format: inputs.build.format,
        profiles: compiled.profiles,
        digest: compiled.digest,
        count: compiled.resources.length,
      };
      state.saveCompiledDesired(
        { key, factsUsed: JSON.stringify(used), header: JSON.stringify(header), storedAt: storedAt.toISOString() },
        encodeResources(compiled.resources, root),
      );
      return true;
    },
  };
}

/**
 * sha256 over every entry under `dir` but its `.git`, hidden ones included (a `source:` may point
 * into a hidden folder), in path order: a file's path and bytes, a link's path and target.
 */
export function repositoryDigest(fs: HostFs, dir: string): string {
  const hash = createHash("sha256");
  const walk = (rel: string) => {
    const entries = fs.readdir(path.join(dir, rel)).sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
    for (const entry of entries) {
      if (rel === "" && entry.name === ".git") continue;
      const child = rel ? `${rel}/${entry.name}` : entry.name;
      const full = path.join(dir, child);
      if (entry.isDirectory()) {
        walk(child);
      } else if (entry.isSymbolicLink()) {
        hash.update(`l\0${child}\0${fs.readlink(full)}\0`);
      } else if (entry.isFile()) {
        hashFile(hash, fs, full, child);
      } else {
        hash.update(`o\0${child}\0`);
      }
    }
  };
  walk("");
  return hash.digest("hex");
}

function hashFile(hash: Hash, fs: HostFs, full: string, rel: string): void {
  hash.update(`f\0${rel}\0`);
  let size = 0;
  fs.readChunks(full, (chunk) => {
    size += chunk.length;
    hash.update(chunk);
  });
  // The size after the bytes: no two different files give the same stream.
  hash.update(`\0${size}\0`);
}

// -------------------------------------------------------------------------------------------
// Encoding. Resources are stored as they are, less their content, one JSON text each (made and
// parsed one at a time: no large string either way); a file copied from the repository keeps the
// path of its source relative to the source directory.
// -------------------------------------------------------------------------------------------

interface Header {
  format: number;
  profiles: string[];
  digest: string;
  /** How many resources: fewer rows is an undecodable entry. */
  count: number;
}

function* encodeResources(resources: Desired[], realRoot: string): Generator<string> {
  for (const resource of resources) yield JSON.stringify(storedForm(resource, realRoot));
}

/**
 * What is stored of a resource: its fields less its content, its declaration as a triple, and no
 * empty `after` or `notify` nor a file path its id already says. Built field by field (no copy then
 * delete, which makes each copy a dictionary): ten thousand of them are garbage made in one go.
 */
function storedForm(resource: Desired, realRoot: string): Record<string, unknown> {
  const isFile = resource.kind === "file";
  const out: Record<string, unknown> = {};
  for (const key in resource) {
    const value = (resource as unknown as Record<string, unknown>)[key];
    switch (key) {
      case "content":
        continue;
      case "declaredAt": {
        const { file, document, path: field } = resource.declaredAt;
        out.declaredAt = [file, document, field];
        continue;
      }
      case "after":
        if (resource.after.length > 0) out.after = value;
        continue;
    }
    if (isFile) {
      // Most files carry no notify, and every file's path is its id's.
      if (key === "notify" && resource.notify.length === 0) continue;
      if (key === "path" && resource.id === `file:${resource.path}`) continue;
      if (key === "contentFrom" && resource.contentFrom !== undefined) {
        out.contentFrom = path.relative(realRoot, resource.contentFrom);
        continue;
      }
    }
    out[key] = value;
  }
  return out;
}

/** True when `file` is under `root`. */
function within(root: string, file: string): boolean {
  const rel = path.relative(root, file);
  return !rel.startsWith("..") && !path.isAbsolute(rel);
}

/** Thrown for an entry that does not decode (caught by `read`). */
class Undecodable extends Error {}

function decodeFactUses(text: string): FactUse[] {
  const uses: unknown = JSON.parse(text);
  if (!Array.isArray(uses)) throw new Undecodable("facts");
  for (const use of uses) {
    if (!isObject(use) || !isStringArray(use.path) || typeof use.seen !== "string") throw new Undecodable("fact");
  }
  return uses as FactUse[];
}

/** The entry; its resources' rows are read (`rows`) only once its header decodes, and read to the end or closed. */
function decode(headerText: string, rows: () => Iterable<string>, format: number, realRoot: string): CompiledDesired {
  const header: unknown = JSON.parse(headerText);
  if (!isObject(header) || header.format !== format) throw new Undecodable("format");
  if (!isStringArray(header.profiles) || typeof header.digest !== "string" || typeof header.count !== "number") {
    throw new Undecodable("header");
  }
  const resources: Desired[] = [];
  for (const row of rows()) resources.push(decodeResource(JSON.parse(row), realRoot));
  if (resources.length !== header.count) throw new Undecodable("count");
  return { resources, profiles: header.profiles, digest: header.digest };
}

const FILE_STATES = new Set(["file", "directory", "link", "absent"]);
const PACKAGE_STATES = new Set(["present", "absent", "latest"]);

/**
 * A resource as stored, checked field by field (a wrong type is an undecodable entry) and
 * completed in place: it was parsed for this run alone.
 */
function decodeResource(raw: unknown, realRoot: string): Desired {
  if (!isObject(raw)) throw new Undecodable("resource");
  const declared = raw.declaredAt;
  if (!Array.isArray(declared) || declared.length !== 3) throw new Undecodable("declaredAt");
  const [file, document, field] = declared as unknown[];
  raw.after ??= [];
  check(typeof raw.id === "string" && typeof raw.profile === "string" && isStringArray(raw.after));
  check(
    typeof file === "string" &&
      typeof document === "number" &&
      Array.isArray(field) &&
      field.every((part) => typeof part === "string" || typeof part === "number"),
  );
  raw.declaredAt = { file, document, path: field };
  switch (raw.kind) {
    case "file":
      raw.path ??= (raw.id as string).slice("file:".length);
      raw.notify ??= [];
      check(typeof raw.path === "string" && FILE_STATES.has(raw.state as string) && isStringArray(raw.notify));
      check(optional(raw.contentHash, "string") && optional(raw.contentFrom, "string"));
      check(optional(raw.mode, "number") && optional(raw.owner, "string") && optional(raw.group, "string"));
      check(optional(raw.target, "string") && optional(raw.sensitive, "boolean"));
      if (typeof raw.contentFrom === "string") raw.contentFrom = inside(realRoot, raw.contentFrom);
      break;
    case "package":
      check(typeof raw.name === "string" && PACKAGE_STATES.has(raw.state as string) && optional(raw.version, "string"));
      break;
    case "service":
      check(typeof raw.name === "string" && (raw.onNotify === "restart" || raw.onNotify === "reload"));
      check(
        optional(raw.enabled, "boolean") &&
          (raw.state === undefined || raw.state === "running" || raw.state === "stopped"),
      );
      break;
    default:
      throw new Undecodable("kind");
  }
  return raw as unknown as Desired;
}

/** `rel` under `root`; a path that would leave it is an undecodable entry. */
function inside(root: string, rel: string): string {
  const full = path.join(root, rel);
  if (!within(root, full)) throw new Undecodable("contentFrom");
  return full;
}

function check(ok: boolean): void {
  if (!ok) throw new Undecodable("field");
}

function optional(value: unknown, type: "string" | "number" | "boolean"): boolean {
  return value === undefined || typeof value === type;
}

function isStringArray(value: unknown): value is string[] {
  return Array.isArray(value) && value.every((v) => typeof v === "string");
}
