#!/usr/bin/env -S node --max-semi-space-size=1 --optimize-for-size --no-opt --no-maglev --no-sparkplug --max-lazy
// Entry point of the `driftless` command: runs the bundled agent built by `npm run build`.
// The V8 options trade speed the agent does not need for memory a small host does (docs/benchmarks.md,
// "Memory notes"): a 1 MB young generation, no optimizing or baseline compilers (a run is short and
// spends its time in the kernel and SQLite), heap sizing for size. The same options are built into
// the single binary (scripts/build-binary.mjs) and written into the unit (cli/install.ts).
import { main } from "../dist/driftless.mjs";

// Exit as soon as the command is done (a fact probe that timed out may still have a child
// running), once what was written to stdout and stderr has been handed over.
const code = await main(process.argv.slice(2));
await Promise.all(
  [process.stdout, process.stderr].map((stream) => new Promise((resolve) => stream.write("", resolve))),
);
process.exit(code);
