/**
 * Turns the profiles selected for a host into the list of desired resources: contents read or
 * rendered, ids checked for duplicates, references (`after`, `notify`) checked.
 */
import { createHash, type Hash } from "node:crypto";
import * as path from "node:path";
import { DriftlessError, errorMessage } from "../errors.js";
import type { HostFs } from "../host/fs.js";
import { MAX_DIFF_BYTES } from "../resources/file/plan.js";
import type { Desired, DesiredFile } from "../resources/types.js";
import type { Loaded, Repository } from "./load.js";
import type { ProfileDoc } from "./schema.js";
import { type HostIdentity, mergeVars } from "./select.js";
import { createTemplateRenderer, TEMPLATE_LIMITS, type TemplateRenderer } from "./template.js";

export interface DesiredSet {
  resources: Desired[];
  vars: Record<string, unknown>;
  /** sha256 over every repository file that went into this desired state. */
  digest: string;
}

export async function buildDesired(
  fs: HostFs,
  repo: Repository,
  profiles: Loaded<ProfileDoc>[],
  host: HostIdentity,
  options: { checkReferences: boolean } = { checkReferences: true },
): Promise<{ desired: DesiredSet; errors: DriftlessError[] }> {
  const errors: DriftlessError[] = [];
  const digest = createHash("sha256");
  for (const file of repo.files) {
    digest
      .update(`${file}\0`)
      .update(fs.readFile(path.join(repo.dir, file)))
      .update("\0");
  }
  const vars = mergeVars(profiles.map((p) => p.doc.vars));
  const context = { vars, labels: host.labels, facts: host.facts, host: { name: host.name } };
  let renderer: TemplateRenderer | undefined;
  const getRenderer = async () => {
    renderer ??= await createTemplateRenderer(fs, repo.dir);
    return renderer;
  };
  const resources: Desired[] = [];
  const origins = new Map<string, Origin>();

  // Positions are found only for an error: for a duplicate, both places are located then.
  const add = async (resource: Desired, loaded: Loaded<ProfileDoc>, field: Array<string | number>) => {
    const origin = origins.get(resource.id);
    if (origin) {
      const first = await origin.loaded.locate(origin.field);
      errors.push(
        new DriftlessError(`${resource.id} is already declared at ${first.file}:${first.line}:${first.column}`, {
          code: "EDUPLICATE",
          phase: "validate",
          location: await loaded.locate(field),
          resource: resource.id,
        }),
      );
      return;
    }
    origins.set(resource.id, { loaded, field });
    resources.push(resource);
  };

  for (const loaded of profiles) {
    const { doc } = loaded;
    for (const [i, pkg] of (doc.packages ?? []).entries()) {
      await add(
        {
          kind: "package",
          id: `package:${pkg.name}`,
          name: pkg.name,
          state: pkg.state,
          ...(pkg.version !== undefined ? { version: pkg.version } : {}),
          after: (pkg.after ?? []).map(normalizeId),
          declaredAt: loaded.declaredAt(["packages", i]),
          profile: doc.name,
        },
        loaded,
        ["packages", i, "name"],
      );
    }
    for (const [i, entry] of (doc.files ?? []).entries()) {
      const filePath = path.posix.normalize(entry.path).replace(/(.)\/+$/, "$1");
      const file: DesiredFile = {
        kind: "file",
        id: `file:${filePath}`,
        path: filePath,
        state: entry.state,
        after: (entry.after ?? []).map(normalizeId),
        notify: (entry.notify ?? []).map(normalizeId),
        declaredAt: loaded.declaredAt(["files", i]),
        profile: doc.name,
      };
      if (entry.mode !== undefined) file.mode = Number.parseInt(entry.mode, 8);
      if (entry.owner !== undefined) file.owner = entry.owner;
      if (entry.group !== undefined) file.group = entry.group;
      if (entry.target !== undefined) file.target = entry.target;
      if (entry.sensitive) file.sensitive = true;
      if (entry.content !== undefined) {
        setContent(file, Buffer.from(entry.content, "utf8"));
      } else if (entry.source !== undefined || entry.template !== undefined) {
        const field = entry.source !== undefined ? "source" : "template";
        const ref = (entry.source ?? entry.template) as string;
        const at = ["files", i, field];
        const resolved = resolveInRepository(fs, repo, loaded, ref);
        if (typeof resolved === "string") {
          errors.push(
            new DriftlessError(resolved, { code: "EPATH", phase: "validate", location: await loaded.locate(at) }),
          );
          await add(file, loaded, ["files", i, "path"]); // declared all the same: a duplicate is reported too
          continue;
        }
        digest.update(`${resolved.relative}\0`);
        const problem =
          field === "source"
            ? readSource(fs, resolved, file, digest)
            : await renderTemplate(fs, resolved, file, digest, getRenderer, context);
        digest.update("\0");
        if (problem) {
          const declared = await loaded.locate(at);
          const location = problem.location ?? declared;
          const message =
            field === "template"
              ? `${problem.message} (rendering ${file.id}, ${declared.file}:${declared.line})`
              : problem.message;
          errors.push(
            new DriftlessError(message, { code: problem.code, phase: problem.phase, location, resource: file.id }),
          );
          await add(file, loaded, ["files", i, "path"]);
          continue;
        }
      }
      await add(file, loaded, ["files", i, "path"]);
    }
    for (const [i, svc] of (doc.services ?? []).entries()) {
      await add(
        {
          kind: "service",
          id: normalizeId(`service:${svc.name}`),
          name: svc.name,
          ...(svc.enabled !== undefined ? { enabled: svc.enabled } : {}),
          ...(svc.state !== undefined ? { state: svc.state } : {}),
          onNotify: svc.onNotify,
          after: (svc.after ?? []).map(normalizeId),
          declaredAt: loaded.declaredAt(["services", i]),
          profile: doc.name,
        },
        loaded,
        ["services", i, "name"],
      );
    }
  }

  // With profiles missing (invalid), references to their resources would only add noise.
  if (options.checkReferences) errors.push(...(await checkReferences(resources, origins)));
  return { desired: { resources, vars, digest: digest.digest("hex") }, errors };
}

/** `service:nginx.service` and `service:nginx` are the same resource; file paths are normalised. */
export function normalizeId(id: string): string {
  if (id.startsWith("service:") && id.endsWith(".service")) return id.slice(0, -".service".length);
  if (id.startsWith("file:")) return `file:${path.posix.normalize(id.slice(5)).replace(/(.)\/+$/, "$1")}`;
  return id;
}

/** A file's content held in memory (inline, rendered, or a small source). */
function setContent(file: DesiredFile, content: Buffer): void {
  file.content = content;
  file.contentHash = createHash("sha256").update(content).digest("hex");
}

interface Resolved {
  absolute: string;
  relative: string;
  size: number;
}

/**
 * A `source:` file, copied as is. A small one is held (it can be diffed); a large one is hashed in
 * chunks and copied in chunks when written, never held.
 */
function readSource(fs: HostFs, source: Resolved, file: DesiredFile, digest: Hash): DriftlessError | undefined {
  try {
    if (source.size <= MAX_DIFF_BYTES) {
      const bytes = fs.readFile(source.absolute);
      digest.update(bytes);
      setContent(file, bytes);
      return undefined;
    }
    const hash = createHash("sha256");
    fs.readChunks(source.absolute, (chunk) => {
      hash.update(chunk);
      digest.update(chunk);
    });
    file.contentFrom = source.absolute;
    file.contentHash = hash.digest("hex");
    return undefined;
  } catch (error) {
    return new DriftlessError(`cannot read ${source.relative}: ${errorMessage(error)}`, {
      code: "ESOURCE",
      phase: "load",
    });
  }
}

/** A `template:` file, rendered with `context`; its errors are located in the template. */
async function renderTemplate(
  fs: HostFs,
  template: Resolved,
  file: DesiredFile,
  digest: Hash,
  renderer: () => Promise<TemplateRenderer>,
  context: Record<string, unknown>,
): Promise<DriftlessError | undefined> {
  if (template.size > TEMPLATE_LIMITS.parseChars) {
    return new DriftlessError(`${template.relative} is ${template.size} bytes; a template may have at most 1 MiB`, {
      code: "ETEMPLATE",
      phase: "render",
    });
  }
  let bytes: Buffer;
  try {
    bytes = fs.readFile(template.absolute);
  } catch (error) {
    return new DriftlessError(`cannot read ${template.relative}: ${errorMessage(error)}`, {
      code: "ESOURCE",
      phase: "load",
    });
  }
  digest.update(bytes);
  const rendered = (await renderer()).render(bytes, template.relative, context);
  if (rendered instanceof DriftlessError) return rendered;
  setContent(file, Buffer.from(rendered, "utf8"));
  return undefined;
}

interface Origin {
  loaded: Loaded<ProfileDoc>;
  /** Where its id is: ["files", 3, "path"] */
  field: Array<string | number>;
}

async function checkReferences(resources: Desired[], origins: Map<string, Origin>): Promise<DriftlessError[]> {
  const ids = new Set(resources.map((r) => r.id));
  const errors: DriftlessError[] = [];
  for (const resource of resources) {
    const origin = origins.get(resource.id);
    const refs: Array<[string, string[]]> = [["after", resource.after]];
    if (resource.kind === "file") refs.push(["notify", resource.notify]);
    for (const [field, list] of refs) {
      for (const [j, ref] of list.entries()) {
        let problem: string | undefined;
        if (!ids.has(ref)) problem = `${ref} is not declared for this host`;
        else if (ref === resource.id) problem = `${resource.id} cannot refer to itself`;
        else if (field === "notify" && !ref.startsWith("service:"))
          problem = `only services can be notified, not ${ref}`;
        if (!problem || !origin) continue;
        const location = await origin.loaded.locate([...origin.field.slice(0, 2), field, j]);
        errors.push(
          new DriftlessError(problem, { code: "EREFERENCE", phase: "validate", location, resource: resource.id }),
        );
      }
    }
  }
  return errors;
}

/**
 * Resolves `source:`/`template:` relative to the profile file; refuses anything outside the
 * repository (the reason returned).
 */
function resolveInRepository(fs: HostFs, repo: Repository, loaded: Loaded<ProfileDoc>, ref: string): Resolved | string {
  if (path.posix.isAbsolute(ref))
    return `${ref}: absolute paths are not allowed; use a path relative to ${loaded.file}`;
  const absolute = path.resolve(repo.dir, path.dirname(loaded.file), ref);
  const relative = path.relative(repo.dir, absolute);
  if (relative.startsWith("..") || path.isAbsolute(relative)) return `${ref} leaves the repository`;
  const real = fs.realpath(absolute);
  if (real === null) return `${ref}: no such file in the repository`;
  const realRoot = fs.realpath(repo.dir) ?? repo.dir;
  const realRelative = path.relative(realRoot, real);
  if (realRelative.startsWith("..") || path.isAbsolute(realRelative)) {
    return `${ref} is a symbolic link that points out of the repository`;
  }
  const st = fs.lstat(real);
  if (st?.type !== "file") return `${ref} is not a regular file`;
  return { absolute: real, relative: relative.split(path.sep).join("/"), size: st.size };
}
