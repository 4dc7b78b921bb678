// Makes the V8 code cache of a program asset of the single binary (scripts/build-binary.mjs).
// Run by the Node that goes into the binary, with the binary's V8 flags (under qemu for arm64):
// V8 takes a cache only from the same version and flags.
//
//   node --max-semi-space-size=1 code-cache.cjs PROGRAM.js CACHE [ARGV_JSON]...
//
// PROGRAM.js is the asset's text (a CommonJS function expression); it is compiled, run as the
// binary runs it (agent/src/sea-main.ts), and its main() called with each ARGV_JSON (commands that
// touch nothing, such as `plan --help`: their modules' code is compiled then, so the cache holds
// more than the top level). stdout is the commands' output: the build discards it.
"use strict";
const { readFileSync, writeFileSync } = require("node:fs");
const path = require("node:path");
const { Script } = require("node:vm");

async function make() {
  const [program, cache, ...commands] = process.argv.slice(2);
  const name = path.basename(program);
  const script = new Script(readFileSync(program, "utf8"), { filename: name });
  const module = { exports: {} };
  script.runInThisContext()(module.exports, require, module, program, path.dirname(program));
  for (const argv of commands) {
    const code = await module.exports.main(JSON.parse(argv));
    if (code !== 0) throw new Error(`${name} ${argv}: exit code ${code}`);
  }
  writeFileSync(cache, script.createCachedData());
}

make().then(
  () => process.exit(0),
  (error) => {
    process.stderr.write(`code-cache: ${error.stack ?? error}\n`);
    process.exit(1);
  },
);
