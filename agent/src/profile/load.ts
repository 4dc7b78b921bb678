/**
 * Loads a profile repository directory: every `*.yaml` document (hidden folders skipped),
 * validated against the schema, with every error located by file, line, column and field.
 */
import * as path from "node:path";
import { DriftlessError, type Location } from "../errors.js";
import type { HostFs } from "../host/fs.js";
import { isObject, issuesToErrors, type Locator, parseLocatedYaml } from "../yaml/located.js";

export type { Locator };

import { API_VERSION, type Document, documentSchema, type FleetDoc, type ProfileDoc } from "./schema.js";

/** A validated document and how to locate its fields. */
export interface Loaded<T> {
  doc: T;
  /** Repository-relative path of the file. */
  file: string;
  locate: Locator;
}

export interface Repository {
  /** Absolute path of the repository directory on this machine. */
  dir: string;
  fleet?: Loaded<FleetDoc>;
  profiles: Map<string, Loaded<ProfileDoc>>;
  /** Repository-relative paths of the documents read, sorted. */
  files: string[];
  /** Names of profiles whose document failed validation (their errors are already reported). */
  brokenProfiles: Set<string>;
  /** True when fleet.yaml exists but failed validation. */
  brokenFleet: boolean;
}

/** Reads and validates a repository; returns every problem found, not the first. */
export function loadRepository(fs: HostFs, dir: string): { repo: Repository; errors: DriftlessError[] } {
  const repo: Repository = {
    dir: path.resolve(dir),
    profiles: new Map(),
    files: [],
    brokenProfiles: new Set(),
    brokenFleet: false,
  };
  const root = repo.dir;
  const errors: DriftlessError[] = [];
  const unreadable = (message: string) => {
    errors.push(new DriftlessError(message, { code: "ESOURCE", phase: "load" }));
    return { repo, errors };
  };
  const rootStat = fs.lstat(root);
  if (!rootStat || (rootStat.type !== "directory" && rootStat.type !== "link")) {
    return unreadable(`profile repository not found: ${root}`);
  }
  let files: string[];
  try {
    files = listYamlFiles(fs, root);
  } catch (error) {
    return unreadable(`cannot read profile repository: ${(error as Error).message}`);
  }
  const nonDocuments: NonDocument[] = [];
  const tooLarge: Array<{ file: string; size: number }> = [];
  for (const file of files) {
    // Too large to parse with positions at a bounded memory cost: data for a source, or an error.
    const size = fs.lstat(path.join(root, file))?.size ?? 0;
    if (size > MAX_DOCUMENT_BYTES) {
      tooLarge.push({ file, size });
      continue;
    }
    let text: string;
    try {
      text = fs.readFile(path.join(root, file)).toString("utf8");
    } catch (error) {
      errors.push(located(`cannot read: ${(error as Error).message}`, { file }, "ESOURCE"));
      continue;
    }
    for (const loaded of parseDocuments(text, file, errors, nonDocuments, repo)) {
      const { doc } = loaded;
      if (doc.kind === "Fleet") {
        if (file !== "fleet.yaml") {
          errors.push(
            located(
              "a Fleet document belongs in fleet.yaml at the repository root",
              loaded.locate(["kind"]),
              "ELOCATION",
            ),
          );
        } else if (repo.fleet) {
          errors.push(located("only one Fleet document is allowed", loaded.locate(["kind"]), "EDUPLICATE"));
        } else {
          repo.fleet = loaded as Loaded<FleetDoc>;
        }
      } else {
        const previous = repo.profiles.get(doc.name);
        if (previous) {
          const first = previous.locate(["name"]);
          errors.push(
            located(
              `profile ${doc.name} is already defined at ${first.file}:${first.line}`,
              loaded.locate(["name"]),
              "EDUPLICATE",
            ),
          );
        } else {
          repo.profiles.set(doc.name, loaded as Loaded<ProfileDoc>);
        }
      }
    }
  }
  // A YAML file without apiVersion is data, allowed only as a profile's `source:` or `template:`.
  const referenced = referencedFiles(repo);
  for (const { file, location } of nonDocuments) {
    if (!referenced.has(file)) {
      errors.push(
        located(
          `missing apiVersion: every .yaml file is a ${API_VERSION} document unless a profile uses it as source or template`,
          { ...location, field: "apiVersion" },
          "ESCHEMA",
        ),
      );
    }
  }
  for (const { file, size } of tooLarge) {
    if (!referenced.has(file)) {
      errors.push(
        located(
          `${size} bytes: a document may have at most 4 MiB; put large content in a file of its own and use source:`,
          { file },
          "ETOOLARGE",
        ),
      );
    }
  }
  repo.files = files.filter((f) => !referenced.has(f) && !tooLarge.some((t) => t.file === f));
  return { repo, errors };
}

function referencedFiles(repo: Repository): Set<string> {
  const out = new Set<string>();
  for (const { doc, file } of repo.profiles.values()) {
    for (const entry of doc.files ?? []) {
      const ref = entry.source ?? entry.template;
      if (ref !== undefined && !path.posix.isAbsolute(ref)) out.add(path.posix.join(path.posix.dirname(file), ref));
    }
  }
  return out;
}

/** YAML files larger than this are not parsed (parsing with positions costs many times the size). */
const MAX_DOCUMENT_BYTES = 4 * 1024 * 1024;

interface NonDocument {
  file: string;
  location: Location;
}

function parseDocuments(
  text: string,
  file: string,
  errors: DriftlessError[],
  nonDocuments: NonDocument[],
  repo: Repository,
): Loaded<Document>[] {
  const out: Loaded<Document>[] = [];
  for (const { value, locate } of parseLocatedYaml(text, file, errors)) {
    if (!isObject(value) || !("apiVersion" in value)) {
      nonDocuments.push({ file, location: locate([]) });
      continue;
    }
    const result = documentSchema.safeParse(value);
    if (!result.success) {
      if (value.kind === "Fleet") repo.brokenFleet = true;
      if (value.kind === "Profile" && typeof value.name === "string") repo.brokenProfiles.add(value.name);
      errors.push(...issuesToErrors(result.error.issues, locate));
      // What did validate still goes on, so that later phases report their errors in the same
      // run (a template error beside a schema error); the errors above keep the run from applying.
      const salvaged = salvage(value, locate);
      if (salvaged) out.push({ ...salvaged, file });
      continue;
    }
    out.push({ doc: result.data, file, locate });
  }
  return out;
}

/** The lists of a document whose entries validate one by one. */
const ENTRY_LISTS: Record<string, readonly string[]> = {
  Fleet: ["assignments"],
  Profile: ["packages", "files", "services"],
};

/**
 * The valid part of a document that failed validation: its entries (assignments; packages,
 * files, services) that validate on their own, when everything else about it does. Its locator
 * maps each kept entry back to its place in the file. Null when nothing can be kept.
 */
function salvage(value: Record<string, unknown>, locate: Locator): { doc: Document; locate: Locator } | null {
  const lists = ENTRY_LISTS[String(value.kind)];
  if (!lists) return null;
  const base: Record<string, unknown> = { ...value };
  for (const key of lists) if (key in base) base[key] = [];
  if (!documentSchema.safeParse(base).success) return null;
  const kept: Record<string, unknown> = { ...base };
  const indexes = new Map<string, number[]>();
  for (const key of lists) {
    const entries = value[key];
    if (!Array.isArray(entries)) continue;
    const valid = entries.flatMap((entry, i) =>
      documentSchema.safeParse({ ...base, [key]: [entry] }).success ? [{ entry, i }] : [],
    );
    kept[key] = valid.map((v) => v.entry);
    indexes.set(
      key,
      valid.map((v) => v.i),
    );
  }
  const result = documentSchema.safeParse(kept);
  if (!result.success) return null;
  const mapped: Locator = (fieldPath, options) => {
    const [key, index, ...rest] = fieldPath;
    const original = typeof key === "string" && typeof index === "number" ? indexes.get(key)?.[index] : undefined;
    return locate(original === undefined ? fieldPath : [key as string, original, ...rest], options);
  };
  return { doc: result.data, locate: mapped };
}

function located(message: string, location: Location, code: string): DriftlessError {
  return new DriftlessError(message, { code, phase: "validate", location });
}

function listYamlFiles(fs: HostFs, root: string): string[] {
  const out: string[] = [];
  const walk = (rel: string) => {
    for (const entry of fs.readdir(path.join(root, rel))) {
      if (entry.name.startsWith(".") || entry.name === "node_modules") continue;
      const child = rel ? `${rel}/${entry.name}` : entry.name;
      if (entry.isDirectory()) walk(child);
      else if (entry.isFile() && entry.name.endsWith(".yaml")) out.push(child);
    }
  };
  walk("");
  return out.sort();
}
