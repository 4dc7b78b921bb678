/**
 * Liquid templates. Strict: an undefined variable or filter is an error (`{% if %}` and the
 * `default` filter may still test a variable that is not set). Partials (`{% render %}`,
 * `{% include %}`) resolve inside the repository only. Templates and partials must be UTF-8.
 *
 * Bounded: a template (with its partials) is at most 1 MiB of text, renders in at most 5 s,
 * allocates at most 16 Mi units of Liquid's memory count (characters of strings it builds,
 * elements of ranges and arrays), and its output is at most 4 MiB; past a limit, the render
 * stops with an error located in the template, so a loop in a template cannot hang a host.
 */
import * as path from "node:path";
import type { Emitter, FS, Liquid as LiquidEngine } from "liquidjs";
import { DriftlessError } from "../errors.js";
import type { HostFs } from "../host/fs.js";

export interface TemplateLimits {
  /** Characters of template text parsed in one parse (liquidjs `parseLimit`). */
  parseChars: number;
  /** Milliseconds of one render (liquidjs `renderLimit`). */
  renderMs: number;
  /** liquidjs `memoryLimit`: characters and elements allocated by one render. */
  memoryUnits: number;
  /** Bytes of output (UTF-16 code units, counted as they are written). */
  outputChars: number;
}

export const TEMPLATE_LIMITS: TemplateLimits = {
  parseChars: 1024 * 1024,
  renderMs: 5_000,
  memoryUnits: 16 * 1024 * 1024,
  outputChars: 4 * 1024 * 1024,
};

export interface TemplateRenderer {
  /** The rendered text, or the error located in the template file. */
  render(bytes: Uint8Array, file: string, context: Record<string, unknown>): string | DriftlessError;
}

export async function createTemplateRenderer(
  fs: HostFs,
  repoDir: string,
  limits: TemplateLimits = TEMPLATE_LIMITS,
): Promise<TemplateRenderer> {
  // Loaded on demand (a separate chunk of the bundle); its CommonJS build arrives as `default`.
  const liquidjs = (await import("liquidjs")) as typeof import("liquidjs") & { default?: typeof import("liquidjs") };
  const Liquid = liquidjs.Liquid ?? liquidjs.default?.Liquid;
  const Context = liquidjs.Context ?? liquidjs.default?.Context;
  const toValueSync = liquidjs.toValueSync ?? liquidjs.default?.toValueSync;
  const realRoot = fs.realpath(repoDir) ?? repoDir;
  const inside = (file: string) => {
    const real = fs.realpath(file);
    if (real === null) return false;
    const rel = path.relative(realRoot, real);
    return !rel.startsWith("..") && !path.isAbsolute(rel);
  };
  const readPartial = (file: string) => {
    const text = decodeUtf8(fs.readFile(file));
    if (typeof text !== "string") {
      throw new Error(`${path.relative(repoDir, file)}:${text.line}:${text.column}: not valid UTF-8`);
    }
    return text;
  };
  const repoFs: FS = {
    exists: async (file) => inside(file),
    existsSync: (file) => inside(file),
    readFile: async (file) => readPartial(file),
    readFileSync: (file) => readPartial(file),
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
    // A fixed locale: a template renders the same on every host, whatever its system locale (and
    // the engine does not load the system's locale data, ~30 ms of every run).
    locale: "en-US",
    parseLimit: limits.parseChars,
    renderLimit: limits.renderMs,
    memoryLimit: limits.memoryUnits,
  });
  return {
    render(bytes, file, context) {
      const text = decodeUtf8(bytes);
      if (typeof text !== "string") {
        return new DriftlessError("not valid UTF-8 (templates must be UTF-8 text; use source: for other bytes)", {
          code: "ETEMPLATE",
          phase: "render",
          location: { file, ...text },
        });
      }
      try {
        const templates = engine.parse(text, path.join(repoDir, file));
        const output = new LimitedEmitter(limits.outputChars);
        const ctx = new Context(context, engine.options, { sync: true }, { liquid: engine });
        toValueSync(engine.renderer.renderTemplates(templates, ctx, output));
        return output.buffer;
      } catch (error) {
        return templateError(error, file);
      }
    },
  };
}

/** Collects the output, refusing to grow past `limit` characters. */
class LimitedEmitter implements Emitter {
  buffer = "";
  constructor(readonly limit: number) {}
  write(html: unknown): void {
    const text = html === null || html === undefined ? "" : String(html);
    if (this.buffer.length + text.length > this.limit) {
      throw new Error(`output limit exceeded (${this.limit} characters); use source: for large files`);
    }
    this.buffer += text;
  }
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

/** The text, or where its first byte that is not UTF-8 is (line and column, from 1). */
export function decodeUtf8(bytes: Uint8Array): string | { line: number; column: number } {
  try {
    return utf8.decode(bytes);
  } catch {
    const at = firstInvalidUtf8(bytes);
    const lineStart = bytes.lastIndexOf(0x0a, at - 1) + 1;
    let line = 1;
    for (let i = 0; i < lineStart; i++) if (bytes[i] === 0x0a) line++;
    return { line, column: utf8.decode(bytes.subarray(lineStart, at)).length + 1 };
  }
}

function firstInvalidUtf8(bytes: Uint8Array): number {
  let i = 0;
  while (i < bytes.length) {
    const b = bytes[i] as number;
    const n = b < 0x80 ? 1 : b >= 0xc2 && b < 0xe0 ? 2 : b >= 0xe0 && b < 0xf0 ? 3 : b >= 0xf0 && b < 0xf5 ? 4 : 0;
    if (n === 0 || i + n > bytes.length) return i;
    try {
      utf8.decode(bytes.subarray(i, i + n)); // continuation bytes, overlong forms, surrogates
    } catch {
      return i;
    }
    i += n;
  }
  return bytes.length;
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
