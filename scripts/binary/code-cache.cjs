// Makes the V8 code caches of a program of the single binary (scripts/build-binary.mjs): its
// entry asset and every chunk beside it. Run by the Node that goes into the binary, with the
// binary's V8 flags (under qemu for arm64): V8 takes a cache only from the same version and flags.
//
//   node --max-semi-space-size=1 ... code-cache.cjs DISPATCHER.cjs DIR ENTRY OUT [ARGV_JSON]...
//
// DIR holds the program's assets (ENTRY and its chunks, `c-<hash>.js`). The program is loaded as
// the binary loads it (loadProgram of agent/src/sea-main.ts, from the built dispatcher) and its
// main() called with each ARGV_JSON (commands that touch nothing, such as `plan --help`: their
// modules' code is compiled then, so the caches hold more than the top levels). Then every asset
// not loaded by those commands is compiled too, and each one's cache is written to OUT as
// `<asset>.cache`. stdout is the commands' output: the build discards it.
"use strict";
const { readdirSync, readFileSync, writeFileSync } = require("node:fs");
const path = require("node:path");
const { Script } = require("node:vm");

async function make() {
  const [dispatcher, dir, entry, out, ...commands] = process.argv.slice(2);
  const { loadProgram } = require(path.resolve(dispatcher));
  const scripts = new Map();
  const text = (asset) => readFileSync(path.join(dir, asset), "utf8");
  const program = loadProgram(
    entry,
    { text, cache: () => undefined, compiled: (asset, script) => scripts.set(asset, script) },
    path.join(dir, entry),
  );
  for (const argv of commands) {
    const code = await program.main(JSON.parse(argv));
    if (code !== 0) throw new Error(`${entry} ${argv}: exit code ${code}`);
  }
  for (const asset of readdirSync(dir).filter((name) => name.endsWith(".js"))) {
    const script = scripts.get(asset) ?? new Script(text(asset), { filename: asset });
    writeFileSync(path.join(out, `${asset}.cache`), script.createCachedData());
  }
}

make().then(
  () => process.exit(0),
  (error) => {
    process.stderr.write(`code-cache: ${error.stack ?? error}\n`);
    process.exit(1);
  },
);
