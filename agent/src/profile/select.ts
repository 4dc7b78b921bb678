/**
 * Which profiles a host gets: the fleet assignments that match its name, labels and facts, each
 * profile expanded with its includes first (depth first, each profile once), in order.
 */
import picomatch from "picomatch";
import { DriftlessError } from "../errors.js";
import type { Loaded, Repository } from "./load.js";
import type { FleetDoc, ProfileDoc } from "./schema.js";

export interface HostIdentity {
  name: string;
  labels: Record<string, string>;
  facts: Record<string, unknown>;
}

export interface ProfileRequest {
  name: string;
  /** Where it was asked for, for an unknown-profile error. */
  from?: { loaded: Loaded<ProfileDoc> | Loaded<FleetDoc>; field: PropertyKey[] };
}

/** The profile names the fleet assigns to this host, in order, without duplicates. */
export function assignedProfiles(fleet: Loaded<FleetDoc>, host: HostIdentity): ProfileRequest[] {
  const out: ProfileRequest[] = [];
  fleet.doc.assignments.forEach((assignment, index) => {
    if (!matches(assignment.match, host)) return;
    assignment.profiles.forEach((name, j) => {
      out.push({ name, from: { loaded: fleet, field: ["assignments", index, "profiles", j] } });
    });
  });
  return out;
}

export function matches(match: FleetDoc["assignments"][number]["match"], host: HostIdentity): boolean {
  if (match.hostname !== undefined && !picomatch.isMatch(host.name, match.hostname, { nocase: true, dot: true })) {
    return false;
  }
  for (const [key, value] of Object.entries(match.labels ?? {})) {
    if (host.labels[key] !== value) return false;
  }
  for (const [key, value] of Object.entries(match.facts ?? {})) {
    const actual = factAt(host.facts, key);
    if (actual === undefined || String(actual) !== String(value)) return false;
  }
  return true;
}

/** `os.arch` -> facts.os.arch */
export function factAt(facts: Record<string, unknown>, dotted: string): unknown {
  let value: unknown = facts;
  for (const part of dotted.split(".")) {
    if (typeof value !== "object" || value === null) return undefined;
    value = (value as Record<string, unknown>)[part];
  }
  return value;
}

/** Expands includes: every profile after the ones it includes, each once; cycles are errors. */
export async function expandProfiles(
  repo: Repository,
  requests: ProfileRequest[],
): Promise<{ profiles: Loaded<ProfileDoc>[]; errors: DriftlessError[] }> {
  const problems: Array<{ message: string; code: string; request: ProfileRequest }> = [];
  const done = new Set<string>();
  const out: Loaded<ProfileDoc>[] = [];
  const visit = (request: ProfileRequest, stack: string[]) => {
    const loaded = repo.profiles.get(request.name);
    if (!loaded && repo.brokenProfiles.has(request.name)) return; // its own errors say why
    if (!loaded) {
      problems.push({ message: `unknown profile "${request.name}"`, code: "EPROFILE", request });
      return;
    }
    if (stack.includes(request.name)) {
      problems.push({ message: `include cycle: ${[...stack, request.name].join(" -> ")}`, code: "ECYCLE", request });
      return;
    }
    if (done.has(request.name)) return;
    const nextStack = [...stack, request.name];
    (loaded.doc.include ?? []).forEach((name, index) => {
      visit({ name, from: { loaded, field: ["include", index] } }, nextStack);
    });
    if (done.has(request.name)) return;
    done.add(request.name);
    out.push(loaded);
  };
  for (const request of requests) visit(request, []);
  // Located once the walk is done: a location may mean parsing a file again.
  const errors: DriftlessError[] = [];
  for (const { message, code, request } of problems) {
    const location = request.from ? await request.from.loaded.locate(request.from.field) : undefined;
    errors.push(new DriftlessError(message, { code, phase: "select", location }));
  }
  return { profiles: out, errors };
}

/** Merges vars in order, later wins; nested objects merge key by key. */
export function mergeVars(layers: Array<Record<string, unknown> | undefined>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const layer of layers) if (layer) mergeInto(out, layer);
  return out;
}

function mergeInto(target: Record<string, unknown>, source: Record<string, unknown>): void {
  for (const [key, value] of Object.entries(source)) {
    const existing = target[key];
    if (isPlainObject(existing) && isPlainObject(value)) {
      const copy = { ...existing };
      mergeInto(copy, value);
      target[key] = copy;
    } else {
      target[key] = value;
    }
  }
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}
