/**
 * The single binary's main script (scripts/build-binary.mjs): a few kilobytes that answer
 * `--version` themselves and run one of the two programs the binary carries as assets:
 *
 * - `supervisor.js`: the long-lived `driftless agent` (daemon/supervisor-main.ts), a small part
 *   of the agent, so the daemon never holds the whole agent's code;
 * - `driftless.js`: everything (main.ts), with a V8 code cache made at build time
 *   (`driftless.js.cache`), for every other command and every run (`agent --run`).
 *
 * Each asset is the bundle wrapped as a CommonJS function expression at build time; it is
 * compiled with `vm.Script` and called with this script's `require` (Node's builtins), a module
 * object, and the binary as its file name. With DRIFTLESS_DEBUG set, says on stderr whether V8
 * took the code cache.
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

function codeCache(asset: string): Uint8Array | undefined {
  try {
    return new Uint8Array(sea.getRawAsset(`${asset}${CODE_CACHE_SUFFIX}`) as ArrayBuffer);
  } catch {
    return undefined;
  }
}

/** Compiles and runs the asset `asset`; returns its `main`. */
function load(asset: string): (argv: string[]) => Promise<number> {
  const cachedData = codeCache(asset);
  const script = new Script(sea.getAsset(asset, "utf8") as string, {
    filename: asset,
    ...(cachedData ? { cachedData } : {}),
  });
  if (process.env.DRIFTLESS_DEBUG) {
    const cache = cachedData ? (script.cachedDataRejected ? "rejected" : "accepted") : "none";
    process.stderr.write(`driftless: ${asset}: code cache ${cache}\n`);
  }
  const program = script.runInThisContext() as Program;
  const module: Parameters<Program>[2] = { exports: {} };
  program(module.exports, require, module, process.execPath, path.dirname(process.execPath));
  const main = module.exports.main;
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
