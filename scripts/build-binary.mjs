// `npm run build:binary`: the agent as one file per architecture, dist/driftless-linux-x64 and
// dist/driftless-linux-arm64: Node single executable applications (Node NODE_VERSION from the npm
// registry) carrying a small main script (agent/src/sea-main.ts), the agent as two CommonJS
// programs with their V8 code caches (the daemon's supervisor; everything else, in chunks), and
// better-sqlite3's addon compiled in a Debian bullseye tree (glibc 2.31). The control plane too,
// dist/driftlessctl-linux-x64 and -arm64, with the same Node and addon and the dashboard's files
// (scripts/binary/ctl.mjs). See docs/install.md, "Building the binary".
//
//   node scripts/build-binary.mjs [--program driftless|driftlessctl]... [--arch x64|arm64]... [--json]
//
// Needs root (debootstrap, chroot), debootstrap, and qemu-aarch64-static for arm64. Everything is
// cached by its inputs under /var/cache/driftless-build ($DRIFTLESS_BUILD_CACHE): a build with
// nothing changed bundles the agent, finds the binaries in the cache and copies them into dist/.
// --json prints one line per binary: {program, arch, binary, sysroot, glibc, glibcxx, cached}.
import { execFileSync, spawnSync } from "node:child_process";
import {
  chmodSync,
  copyFileSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import * as path from "node:path";
import { parseArgs } from "node:util";
import { build, transform } from "esbuild";
import { cachedDir, cacheRoot, hashOf, prune } from "./binary/cache.mjs";
import { ctlBinary, ctlBundle } from "./binary/ctl.mjs";
import { glibcFloor, injectBlob, nodeCommand, seaBlob } from "./binary/sea.mjs";
import { arm64Sysroot, bullseyeTree, NODE_VERSION, nodePackage, sqliteAddon } from "./binary/toolchain.mjs";
import { agentBundleOptions, asciiOnly } from "./build-common.mjs";

/** Bump when this script changes how a binary is made from the same inputs. */
const RECIPE = 9;
/** Node options built into the binary: bin/driftless.js's, and two for Node 24 (docs/benchmarks.md, "Memory notes"). */
const EXEC_ARGV = [
  "--max-semi-space-size=1",
  // Node 24's V8 starts and grows the young generation past the maximum above unless told not to:
  // 20 MB less peak on a 10,000-file first apply. Node 20 needs neither (bin/driftless.js), and its
  // first line must stay under the 127 bytes older kernels read of a #! line.
  "--min-semi-space-size=1",
  "--semi-space-growth-factor=1",
  "--optimize-for-size",
  "--no-opt",
  "--no-maglev",
  "--no-sparkplug",
  "--max-lazy",
];
/** The asset name agent/src/state/sqlite.ts loads (SQLITE_ADDON_ASSET). */
const ADDON_ASSET = "better_sqlite3.node";
const ARCHES = ["x64", "arm64"];
const PROGRAM_NAMES = ["driftless", "driftlessctl"];

const { values } = parseArgs({
  options: {
    program: { type: "string", multiple: true },
    arch: { type: "string", multiple: true },
    json: { type: "boolean", default: false },
  },
});
const arches = values.arch ?? ARCHES;
for (const arch of arches) if (!ARCHES.includes(arch)) fail(`unknown --arch ${arch} (x64 or arm64)`);
const programs = values.program ?? PROGRAM_NAMES;
for (const name of programs) {
  if (!PROGRAM_NAMES.includes(name)) fail(`unknown --program ${name} (driftless or driftlessctl)`);
}

function fail(message) {
  process.stderr.write(`build-binary: ${message}\n`);
  process.exit(1);
}

if (process.getuid?.() !== 0) fail("needs root (debootstrap and chroot build the addon)");

// One build at a time: the second waits, then finds the first one's work in the cache.
if (!process.env.DRIFTLESS_BUILD_LOCKED) {
  mkdirSync(cacheRoot(), { recursive: true });
  const locked = spawnSync(
    "flock",
    [path.join(cacheRoot(), "build.lock"), process.execPath, ...process.argv.slice(1)],
    {
      stdio: "inherit",
      env: { ...process.env, DRIFTLESS_BUILD_LOCKED: "1" },
    },
  );
  process.exit(locked.status ?? 1);
}

/** The binary's main script and its two programs (agent/src/sea-main.ts), in the bundle cache. */
const PROGRAMS = {
  /** The long-lived `driftless agent`: what supervise() needs, nothing of the runs. One asset. */
  supervisor: { entry: "agent/src/daemon/supervisor-main.ts", asset: "supervisor.js", warmUp: [["agent", "--help"]] },
  /**
   * Everything else, and every run: `driftless.js` and its chunks. Its code caches are made after
   * loading every command's modules.
   */
  full: {
    entry: "agent/src/main.ts",
    asset: "driftless.js",
    warmUp: [
      ["--help"],
      ...["plan", "apply", "agent", "status", "install", "facts", "schema"].map((command) => [command, "--help"]),
    ],
  },
};
const DISPATCHER = "dispatcher.cjs";
/** Modules the supervisor program must not hold (checked on esbuild's metafile). */
const NOT_IN_SUPERVISOR = ["agent/src/main.ts", "agent/src/cli/agent-run.ts", "agent/src/daemon/cycle.ts"];

/** esbuild options of the binary's scripts: CommonJS (a SEA's require() loads only Node's builtins). */
function binaryOptions() {
  const common = agentBundleOptions();
  return {
    ...common,
    write: false,
    format: "cjs",
    target: "node24",
    minify: true,
    keepNames: false,
    // One file per program unless chunkedProgram splits it. import.meta only in code for unbundled sources.
    define: { ...common.define, "import.meta.url": "__driftlessModuleUrl" },
    alias: { ws: path.resolve("scripts/binary/no-websocket.cjs") },
  };
}

/** A program's code as the function expression agent/src/sea-main.ts calls (no string is concatenated at run time). */
const WRAPPER = {
  banner:
    '(function (exports, require, module, __filename, __dirname) {var __driftlessModuleUrl = require("node:url").pathToFileURL(__filename).href;',
  footer: "\n})",
};

/** A program of one asset: `entry` bundled and wrapped. Returns its files by asset name and the modules in it. */
async function program(entry, asset) {
  const result = await build({
    ...binaryOptions(),
    entryPoints: [entry],
    outfile: asset,
    metafile: true,
    banner: { js: WRAPPER.banner },
    footer: { js: WRAPPER.footer },
  });
  // The modules with code in the output (metafile.inputs also lists those tree-shaken away).
  const inputs = Object.values(result.metafile.outputs)[0].inputs;
  const modules = Object.keys(inputs).filter((module) => inputs[module].bytesInOutput > 0);
  return { files: { [asset]: asciiOnly(result.outputFiles[0].text, entry) }, modules };
}

/**
 * A program in chunks, as the npm package is built: `entry` bundled as ES modules with code
 * splitting (the entry as `asset`, chunks as `c-<hash>.js`), each turned into CommonJS (an
 * import of another chunk becomes `require("./c-<hash>.js")`, an `import()` a require on first
 * use) and wrapped. Returns its files by asset name.
 */
async function chunkedProgram(entry, asset) {
  const result = await build({
    ...binaryOptions(),
    format: "esm",
    splitting: true,
    entryPoints: { [path.basename(asset, ".js")]: entry },
    outdir: "program",
    chunkNames: "c-[hash]",
  });
  const files = {};
  for (const output of result.outputFiles) {
    const name = path.basename(output.path);
    const cjs = await transform(output.text, {
      format: "cjs",
      platform: "node",
      target: "node24",
      supported: { "dynamic-import": false }, // import("./c-….js") becomes a require when called
      minify: true,
    });
    files[name] = asciiOnly(`${WRAPPER.banner}${cjs.code}${WRAPPER.footer}`, name);
  }
  if (!files[asset]) fail(`the chunked build of ${entry} made no ${asset}`);
  return files;
}

/** The dispatcher and the two programs (a folder each), in the bundle cache (keyed by their bytes). */
async function bundle() {
  const dispatcher = await build({ ...binaryOptions(), entryPoints: ["agent/src/sea-main.ts"], outfile: DISPATCHER });
  const supervisor = await program(PROGRAMS.supervisor.entry, PROGRAMS.supervisor.asset);
  const strays = NOT_IN_SUPERVISOR.filter((module) => supervisor.modules.includes(module));
  if (strays.length > 0) fail(`the supervisor program holds ${strays.join(", ")}: keep the run's code out of it`);
  const programs = {
    supervisor: supervisor.files,
    full: await chunkedProgram(PROGRAMS.full.entry, PROGRAMS.full.asset),
  };
  const files = { [DISPATCHER]: asciiOnly(dispatcher.outputFiles[0].text, DISPATCHER) };
  for (const [name, assets] of Object.entries(programs)) {
    for (const [asset, text] of Object.entries(assets)) files[`${name}/${asset}`] = text;
  }
  const hash = hashOf(files);
  const { dir } = await cachedDir("bundle", hash, (temp) => {
    for (const name of Object.keys(programs)) mkdirSync(path.join(temp, name));
    for (const [name, text] of Object.entries(files)) writeFileSync(path.join(temp, name), text);
  });
  return { dir, hash };
}

/** Node `arch` with the SEA blob (the dispatcher, the programs and their code caches, the addon) injected. */
async function seaBinary(arch, agent, tree) {
  const node = await nodePackage(arch);
  const addon = await sqliteAddon(arch, tree);
  const addonHash = hashOf(readFileSync(addon));
  const key = hashOf({ bundle: agent.hash, addon: addonHash, node: NODE_VERSION, arch, recipe: RECIPE, EXEC_ARGV });
  return cachedDir("binary", key, (temp) => {
    process.stderr.write(`build-binary: making the ${arch} binary\n`);
    const config = path.join(temp, "sea-config.json");
    const blob = path.join(temp, "sea.blob");
    const addonHashFile = path.join(temp, "addon.sha256");
    writeFileSync(addonHashFile, addonHash);
    // Each program's code cache: V8's, for this Node and architecture, made with the binary's V8
    // flags (else V8 rejects it). Without one, compiling even the supervisor's 0.6 MB leaves 6 MB
    // of the parser's memory in the daemon's malloc heap (docs/benchmarks.md).
    const [command, ...args] = nodeCommand(arch, node, tree);
    const assets = {};
    const dispatcher = path.join(agent.dir, DISPATCHER);
    for (const [name, { asset, warmUp }] of Object.entries(PROGRAMS)) {
      const dir = path.join(agent.dir, name);
      const caches = path.join(temp, `${name}-caches`);
      mkdirSync(caches);
      const warm = warmUp.map((argv) => JSON.stringify(argv));
      execFileSync(
        command,
        [...args, ...EXEC_ARGV, path.resolve("scripts/binary/code-cache.cjs"), dispatcher, dir, asset, caches, ...warm],
        {
          stdio: ["ignore", "ignore", "pipe"],
          env: { ...process.env, NO_COLOR: "1" },
        },
      );
      for (const file of readdirSync(dir)) {
        Object.assign(assets, { [file]: path.join(dir, file), [`${file}.cache`]: path.join(caches, `${file}.cache`) });
      }
    }
    writeFileSync(
      config,
      JSON.stringify({
        main: path.join(agent.dir, DISPATCHER),
        output: blob,
        disableExperimentalSEAWarning: true,
        useCodeCache: false,
        execArgv: EXEC_ARGV,
        assets: {
          [ADDON_ASSET]: addon,
          // Its hash too, so the addon's pages are not read at every start (agent/src/host/native.ts).
          [`${ADDON_ASSET}.sha256`]: addonHashFile,
          ...assets,
        },
      }),
    );
    seaBlob(arch, node, tree, EXEC_ARGV, config);
    const binary = path.join(temp, `driftless-linux-${arch}`);
    injectBlob(arch, node, tree, blob, binary);
    rmSync(blob);
    for (const name of Object.keys(PROGRAMS)) rmSync(path.join(temp, `${name}-caches`), { recursive: true });
    writeFileSync(path.join(temp, "versions.json"), `${JSON.stringify(glibcFloor([binary, addon]))}\n`);
  }).then(({ dir, hit }) => ({ binary: path.join(dir, `driftless-linux-${arch}`), dir, hit }));
}

const started = Date.now();
const tree = await bullseyeTree();
mkdirSync("dist", { recursive: true });
if (programs.includes("driftless")) {
  const agent = await bundle();
  for (const arch of arches) report("driftless", arch, await seaBinary(arch, agent, tree));
  // Bundles and binaries change with every commit: keep the last few of each.
  prune("bundle", 4);
  prune("binary", 4);
}
if (programs.includes("driftlessctl")) {
  const ctl = await ctlBundle();
  for (const arch of arches) report("driftlessctl", arch, await ctlBinary(arch, ctl, tree));
  prune("ctl-binary", 4);
}
if (!values.json) process.stdout.write(`build-binary: done in ${((Date.now() - started) / 1000).toFixed(1)} s\n`);

/** Copies the binary `made` into dist/ and says so. */
function report(program, arch, made) {
  const out = path.resolve("dist", `${program}-linux-${arch}`);
  const temp = `${out}.tmp-${process.pid}`;
  copyFileSync(made.binary, temp);
  chmodSync(temp, 0o755);
  renameSync(temp, out);
  const versions = JSON.parse(readFileSync(path.join(made.dir, "versions.json"), "utf8"));
  const summary = {
    program,
    arch,
    binary: out,
    sysroot: arch === "arm64" ? arm64Sysroot(tree) : null,
    ...versions,
    cached: made.hit,
  };
  if (values.json) process.stdout.write(`${JSON.stringify(summary)}\n`);
  else {
    const mb = (statSync(out).size / 1e6).toFixed(1);
    process.stdout.write(
      `${path.relative(process.cwd(), out)}: ${mb} MB, node ${NODE_VERSION}, needs glibc ${versions.glibc} / GLIBCXX ${versions.glibcxx}${made.hit ? " (cached)" : ""}\n`,
    );
  }
}
