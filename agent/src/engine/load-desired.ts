/**
 * The desired state from the repository: load and validate (YAML, zod), select, render (Liquid).
 * engine/run.ts imports this module on demand, so that a run served by the compiled desired state
 * (state/compiled.ts) loads none of these modules.
 */
import * as path from "node:path";
import { DriftlessError } from "../errors.js";
import { type FactUse, recordFactsUse } from "../facts/usage.js";
import type { HostFs } from "../host/fs.js";
import { buildDesired, type DesiredSet } from "../profile/desired.js";
import { loadRepository } from "../profile/load.js";
import { assignedProfiles, expandProfiles, type HostIdentity, type ProfileRequest } from "../profile/select.js";
import type { RunOptions, RunPorts } from "./run.js";

export interface LoadedDesired {
  desired: DesiredSet;
  profiles: string[];
  /** With `record`: the fact paths the load read, and what they held. */
  factsUsed: FactUse[];
  /** With `record`: true when every file the load read is one the repository digest covers (not under `.git`). */
  cacheable: boolean;
}

export type LoadResult = LoadedDesired | { errors: DriftlessError[]; profiles: string[] };

/**
 * Load, select, render: every error of the repository is found before anything is read or
 * applied. With `record`, what the load depends on is noted for the compiled desired state.
 */
export async function loadDesired(ports: RunPorts, options: RunOptions, record: boolean): Promise<LoadResult> {
  const recorder = record ? recordFactsUse(options.facts) : null;
  let cacheable = true;
  const repoFs = record
    ? watchReads(ports.repoFs, options.source, () => {
        cacheable = false;
      })
    : ports.repoFs;
  const { repo, errors } = await loadRepository(repoFs, options.source);
  const identity: HostIdentity = {
    name: options.host,
    labels: options.labels,
    facts: recorder?.facts ?? options.facts,
  };
  let requests: ProfileRequest[];
  if (options.profiles?.length) {
    requests = options.profiles.map((name) => ({ name }));
  } else if (repo.fleet) {
    requests = assignedProfiles(repo.fleet, identity);
  } else {
    if (!repo.brokenFleet && !errors.some((e) => e.code === "ESOURCE")) {
      errors.push(
        new DriftlessError(`no fleet.yaml in ${repo.dir}; add one or name profiles with --profile`, {
          code: "EFLEET",
          phase: "select",
        }),
      );
    }
    return { errors, profiles: [] };
  }
  const { profiles, errors: selectErrors } = await expandProfiles(repo, requests);
  errors.push(...selectErrors);
  const profileNames = profiles.map((p) => p.doc.name);
  const { desired, errors: desiredErrors } = await buildDesired(repoFs, repo, profiles, identity, {
    checkReferences: errors.length === 0,
  });
  errors.push(...desiredErrors);
  if (errors.length) return { errors, profiles: profileNames };
  return { desired, profiles: profileNames, factsUsed: recorder?.used() ?? [], cacheable };
}

/**
 * `fs` with its content reads checked: `onUncovered` is told of a read outside `dir` or under its
 * `.git` (which the repository digest leaves out), through a link or not.
 */
function watchReads(fs: HostFs, dir: string, onUncovered: () => void): HostFs {
  const realRoot = fs.realpath(dir) ?? path.resolve(dir);
  const check = (file: string) => {
    const rel = path.relative(realRoot, fs.realpath(file) ?? path.resolve(file));
    if (rel.startsWith("..") || path.isAbsolute(rel) || rel.split(path.sep)[0] === ".git") onUncovered();
  };
  const reads = new Set<PropertyKey>(["readFile", "readChunks", "readTextIfExists"]);
  return new Proxy(fs, {
    get(target, property) {
      const value: unknown = Reflect.get(target, property);
      if (typeof value !== "function") return value;
      // Bound to the real instance: its private fields are not reachable through a proxy.
      const bound = (value as (...args: unknown[]) => unknown).bind(target);
      if (!reads.has(property)) return bound;
      return (file: string, ...rest: unknown[]) => {
        check(file);
        return bound(file, ...rest);
      };
    },
  });
}
