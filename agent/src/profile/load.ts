/**
 * Loads a profile repository directory: every `*.yaml` document (hidden folders skipped),
 * validated against the schema, with every error located by file, line, column and field.
 *
 * A file is parsed without positions first (yaml/fast.ts); only a file with a problem is parsed
 * again with positions, which then says what it holds and where its errors are. Positions of
 * valid files are found later only if an error needs them (a duplicate id, a cycle).
 */
import * as path from "node:path";
import { DriftlessError, type Location } from "../errors.js";
import type { HostFs } from "../host/fs.js";
import type { DeclaredAt } from "../resources/types.js";
import { parseFast } from "../yaml/fast.js";
import { isObject, issuesToErrors } from "../yaml/fields.js";
import { PositionCache, parseWithPositions } from "../yaml/positions.js";
import { API_VERSION, type Document, documentSchema, type FleetDoc, type ProfileDoc } from "./schema.js";

/** A validated document and how to find where its fields are. */
export interface Loaded<T> {
  doc: T;
  /** Repository-relative path of the file. */
  file: string;
  /** Where a field is, as data (no positions): for every resource, at no cost. */
  declaredAt(fieldPath: ReadonlyArray<string | number>): DeclaredAt;
  /** File, line, column and field: the file is parsed again with positions on first use. */
  locate(fieldPath: readonly PropertyKey[], options?: { key?: boolean }): Promise<Location>;
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
export async function loadRepository(fs: HostFs, dir: string): Promise<{ repo: Repository; errors: DriftlessError[] }> {
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
  const positions = new PositionCache((file) => readText(fs, root, file));
  const nonDocuments: NonDocument[] = [];
  const tooLarge: Array<{ file: string; size: number }> = [];
  for (const file of files) {
    // Too large to parse at a bounded memory cost: data for a source, or an error.
    const size = fs.lstat(path.join(root, file))?.size ?? 0;
    if (size > MAX_DOCUMENT_BYTES) {
      tooLarge.push({ file, size });
      continue;
    }
    let text: string;
    try {
      text = readText(fs, root, file);
    } catch (error) {
      errors.push(located(`cannot read: ${(error as Error).message}`, { file }, "ESOURCE"));
      continue;
    }
    for (const loaded of await parseDocuments({ text, file, errors, nonDocuments, repo, positions })) {
      const { doc } = loaded;
      if (doc.kind === "Fleet") {
        if (file !== "fleet.yaml") {
          errors.push(
            located(
              "a Fleet document belongs in fleet.yaml at the repository root",
              await loaded.locate(["kind"]),
              "ELOCATION",
            ),
          );
        } else if (repo.fleet) {
          errors.push(located("only one Fleet document is allowed", await loaded.locate(["kind"]), "EDUPLICATE"));
        } else {
          repo.fleet = loaded as Loaded<FleetDoc>;
        }
      } else {
        const previous = repo.profiles.get(doc.name);
        if (previous) {
          const first = await previous.locate(["name"]);
          errors.push(
            located(
              `profile ${doc.name} is already defined at ${first.file}:${first.line}`,
              await loaded.locate(["name"]),
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
  for (const { file, document } of nonDocuments) {
    if (!referenced.has(file)) {
      errors.push(
        located(
          `missing apiVersion: every .yaml file is a ${API_VERSION} document unless a profile uses it as source or template`,
          { ...(await positions.locate(file, document, [])), field: "apiVersion" },
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
  positions.clear(); // an error found later parses its file again
  return { repo, errors };
}

/** Where a field of a repository's document is declared: file, line and column, for an error. */
export function locateDeclared(fs: HostFs, dir: string, at: DeclaredAt): Promise<Location> {
  const root = path.resolve(dir);
  return new PositionCache((file) => readText(fs, root, file)).locate(at.file, at.document, at.path);
}

function readText(fs: HostFs, root: string, file: string): string {
  return fs.readFile(path.join(root, file)).toString("utf8");
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

/** YAML files larger than this are not parsed (a parse with positions costs many times the size). */
const MAX_DOCUMENT_BYTES = 4 * 1024 * 1024;

/** A document without apiVersion: data for a source or template, or an error. */
interface NonDocument {
  file: string;
  document: number;
}

interface FileToLoad {
  text: string;
  file: string;
  errors: DriftlessError[];
  nonDocuments: NonDocument[];
  repo: Repository;
  positions: PositionCache;
}

/** The documents of a file: parsed without positions when they are all valid, else with positions. */
async function parseDocuments(input: FileToLoad): Promise<Loaded<Document>[]> {
  const { text, file, errors, nonDocuments, repo, positions } = input;
  const valid = validWithoutPositions(input);
  if (valid) {
    nonDocuments.push(...valid.nonDocuments);
    return valid.loaded;
  }
  const documents = await parseWithPositions(text, file, errors);
  positions.add(file, documents); // until the end of loading: errors below and duplicates locate in it
  const out: Loaded<Document>[] = [];
  for (const [document, { value, locate }] of documents.entries()) {
    if (!isObject(value) || !("apiVersion" in value)) {
      nonDocuments.push({ file, document });
      continue;
    }
    const result = documentSchema.safeParse(value);
    if (!result.success) {
      if (value.kind === "Fleet") repo.brokenFleet = true;
      if (value.kind === "Profile" && typeof value.name === "string") repo.brokenProfiles.add(value.name);
      errors.push(...issuesToErrors(result.error.issues, locate));
      // What did validate still goes on, so that later phases report their errors in the same
      // run (a template error beside a schema error); the errors above keep the run from applying.
      const salvaged = salvage(value);
      if (salvaged) out.push(loadedAt(salvaged.doc, file, document, positions, salvaged.original));
      continue;
    }
    out.push(loadedAt(result.data, file, document, positions));
  }
  return out;
}

/** A file's documents when it parses without positions and each of them validates; else null. */
function validWithoutPositions({ text, file, positions }: FileToLoad): {
  loaded: Loaded<Document>[];
  nonDocuments: NonDocument[];
} | null {
  const values = parseFast(text);
  if (!values) return null;
  const loaded: Loaded<Document>[] = [];
  const nonDocuments: NonDocument[] = [];
  for (const [document, value] of values.entries()) {
    if (!isObject(value) || !("apiVersion" in value)) {
      nonDocuments.push({ file, document });
      continue;
    }
    const result = documentSchema.safeParse(value);
    if (!result.success) return null;
    loaded.push(loadedAt(result.data, file, document, positions));
  }
  return { loaded, nonDocuments };
}

type FieldPath = ReadonlyArray<PropertyKey>;

/** `document` of `file`; `original` maps a field path of `doc` to the file's (see salvage). */
function loadedAt<T>(
  doc: T,
  file: string,
  document: number,
  positions: PositionCache,
  original: <P extends FieldPath>(fieldPath: P) => P = (fieldPath) => fieldPath,
): Loaded<T> {
  return {
    doc,
    file,
    declaredAt: (fieldPath) => ({ file, document, path: original(fieldPath) }),
    locate: (fieldPath, options) => positions.locate(file, document, original(fieldPath), options),
  };
}

/** The lists of a document whose entries validate one by one. */
const ENTRY_LISTS: Record<string, readonly string[]> = {
  Fleet: ["assignments"],
  Profile: ["packages", "files", "services"],
};

/**
 * The valid part of a document that failed validation: its entries (assignments; packages,
 * files, services) that validate on their own, when everything else about it does, and the map
 * of a field path of the kept entries back to its place in the file. Null when nothing can be kept.
 */
function salvage(
  value: Record<string, unknown>,
): { doc: Document; original: <P extends FieldPath>(fieldPath: P) => P } | null {
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
  const original = <P extends FieldPath>(fieldPath: P): P => {
    const [key, index, ...rest] = fieldPath;
    const at = typeof key === "string" && typeof index === "number" ? indexes.get(key)?.[index] : undefined;
    return at === undefined ? fieldPath : ([key, at, ...rest] as unknown as P);
  };
  return { doc: result.data, original };
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
