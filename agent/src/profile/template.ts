/**
 * Liquid templates. Strict: an undefined variable or filter is an error (`{% if %}` and the
 * `default` filter may still test a variable that is not set). Partials (`{% render %}`,
 * `{% include %}`) resolve inside the repository only.
 */
import * as path from "node:path";
import type { FS, Liquid as LiquidEngine } from "liquidjs";
import { DriftlessError } from "../errors.js";
import type { HostFs } from "../host/fs.js";

export interface TemplateRenderer {
  /** The rendered text, or the error located in the template file. */
  render(text: string, file: string, context: Record<string, unknown>): string | DriftlessError;
}

export async function createTemplateRenderer(fs: HostFs, repoDir: string): Promise<TemplateRenderer> {
  // Loaded on demand (a separate chunk of the bundle); its CommonJS build arrives as `default`.
  const liquidjs = (await import("liquidjs")) as typeof import("liquidjs") & { default?: typeof import("liquidjs") };
  const Liquid = liquidjs.Liquid ?? liquidjs.default?.Liquid;
  const realRoot = fs.realpath(repoDir) ?? repoDir;
  const inside = (file: string) => {
    const real = fs.realpath(file);
    if (real === null) return false;
    const rel = path.relative(realRoot, real);
    return !rel.startsWith("..") && !path.isAbsolute(rel);
  };
  const repoFs: FS = {
    exists: async (file) => inside(file),
    existsSync: (file) => inside(file),
    readFile: async (file) => fs.readFile(file).toString("utf8"),
    readFileSync: (file) => fs.readFile(file).toString("utf8"),
    resolve: (dir, file, ext) => path.resolve(dir, path.extname(file) ? file : file + ext),
    contains: async (_root, file) => inside(file),
    containsSync: (_root, file) => inside(file),
    dirname: (file) => path.dirname(file),
    sep: "/",
  };
  const engine: LiquidEngine = new Liquid({
    root: [repoDir],
    partials: [repoDir],
    relativeReference: true,
    extname: ".liquid",
    fs: repoFs,
    strictVariables: true,
    strictFilters: true,
    lenientIf: true,
    ownPropertyOnly: true,
    cache: false,
  });
  return {
    render(text, file, context) {
      try {
        const templates = engine.parse(text, path.join(repoDir, file));
        return engine.renderSync(templates, context) as string;
      } catch (error) {
        return templateError(error, file);
      }
    },
  };
}

function templateError(error: unknown, file: string): DriftlessError {
  const e = error as { message?: string; token?: { getPosition?: () => [number, number] } };
  const position = e.token?.getPosition?.();
  const message = (e.message ?? String(error)).replace(/, line:\d+, col:\d+$/, "").replace(/^\s+/, "");
  return new DriftlessError(message, {
    code: "ETEMPLATE",
    phase: "render",
    location: { file, ...(position ? { line: position[0], column: position[1] } : {}) },
  });
}
