/**
 * The single binary's main script (scripts/build-binary.mjs): a few kilobytes that answer
 * `--version` themselves and run one of the two programs the binary carries as assets:
 *
 * - `supervisor.js`: the long-lived `driftless agent` (daemon/supervisor-main.ts), a small part
 *   of the agent, so the daemon never holds the whole agent's code;
 * - `driftless.js`: everything else (main.ts) and every run (`agent --run`), split into chunks
 *   (`c-<hash>.js`) as the npm package is: a command compiles only the chunks it loads, the way
 *   `node bin/driftless.js` reads only the files it imports.
 *
 * Each asset is a CommonJS function expression made at build time, compiled with `vm.Script`
 * with its V8 code cache (`<asset>.cache`) and called with a `require` that gives Node's
 * builtins and, for `./<asset>`, the exports of another chunk (loaded once, on first use). With
 * DRIFTLESS_DEBUG set, says on stderr for each asset whether V8 took its code cache.
 */
import * as path from "node:path";
import * as sea from "node:sea";
import { Script } from "node:vm";
import { versionLine } from "./version.js";

/** The asset names scripts/build-binary.mjs writes. */
export const PROGRAM_ASSETS = { supervisor: "supervisor.js", full: "driftless.js" } as const;
/** The code cache of an asset: `<asset>.cache`, when the build made one. */
export const CODE_CACHE_SUFFIX = ".cache";

type Program = (
  exports: object,
  require: NodeJS.Require,
  module: { exports: { main?: (argv: string[]) => Promise<number> } },
  filename: string,
  dirname: string,
) => void;

/** The program a command line needs: the supervisor only for `agent` without --once or --run. */
export function programFor(argv: readonly string[]): keyof typeof PROGRAM_ASSETS {
  const [command, ...args] = argv;
  return command === "agent" && !args.includes("--once") && !args.includes("--run") ? "supervisor" : "full";
}

/** Where a program's assets come from: the binary's own assets, or files (the build's code-cache step). */
export interface ProgramAssets {
  /** The asset's text (a CommonJS function expression). */
  text(asset: string): string;
  /** Its V8 code cache, when there is one. */
  cache(asset: string): Uint8Array | undefined;
  /** Called with each asset's compiled script, once compiled, before it runs. */
  compiled?(asset: string, script: Script): void;
}

type ChunkModule = Parameters<Program>[2];

/**
 * Runs the program whose entry asset is `entry` and returns its exports. A chunk required as
 * `./<asset>` runs once, on its first require; its exports object exists before it runs, so two
 * chunks that require each other (as ES modules may) see each other's exports.
 */
export function loadProgram(entry: string, assets: ProgramAssets, filename = process.execPath): ChunkModule["exports"] {
  const loaded = new Map<string, ChunkModule>();
  const chunkRequire = ((id: string) => (id.startsWith("./") ? run(id.slice(2)) : require(id))) as NodeJS.Require;
  function run(asset: string): ChunkModule["exports"] {
    const known = loaded.get(asset);
    if (known) return known.exports;
    const module: ChunkModule = { exports: {} };
    loaded.set(asset, module);
    const cachedData = assets.cache(asset);
    const script = new Script(assets.text(asset), { filename: asset, ...(cachedData ? { cachedData } : {}) });
    if (process.env.DRIFTLESS_DEBUG) {
      const cache = cachedData ? (script.cachedDataRejected ? "rejected" : "accepted") : "none";
      process.stderr.write(`driftless: ${asset}: code cache ${cache}\n`);
    }
    assets.compiled?.(asset, script);
    const program = script.runInThisContext() as Program;
    program(module.exports, chunkRequire, module, filename, path.dirname(filename));
    return module.exports;
  }
  return run(entry);
}

/** The binary's own assets: views of its pages, nothing copied but each text. */
const seaAssets: ProgramAssets = {
  text: (asset) => sea.getAsset(asset, "utf8") as string,
  cache(asset) {
    try {
      return new Uint8Array(sea.getRawAsset(`${asset}${CODE_CACHE_SUFFIX}`) as ArrayBuffer);
    } catch {
      return undefined;
    }
  },
};

/** Runs the program asset `asset`; returns its `main`. */
function load(asset: string): (argv: string[]) => Promise<number> {
  const main = loadProgram(asset, seaAssets).main;
  if (typeof main !== "function") throw new Error(`${asset}: exports no main()`);
  return main;
}

async function start(argv: string[]): Promise<number> {
  if (argv[0] === "--version" || argv[0] === "-V") {
    process.stdout.write(`${versionLine()}\n`);
    return 0;
  }
  return load(PROGRAM_ASSETS[programFor(argv)])(argv);
}

// Only as the binary's main script: imported elsewhere (a test), this module does nothing.
if (sea.isSea()) {
  start(process.argv.slice(2)).then(
    async (code) => {
      // Exit as soon as the command is done (as bin/driftless.js does), once stdout and stderr are flushed.
      await Promise.all([process.stdout, process.stderr].map((s) => new Promise((done) => s.write("", done))));
      process.exit(code);
    },
    (error: unknown) => {
      process.stderr.write(`driftless: internal error: ${(error as Error).message ?? String(error)}\n`);
      process.exit(1);
    },
  );
}
