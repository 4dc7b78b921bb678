#!/usr/bin/env -S node --max-semi-space-size=1
// Entry point of the `driftless` command: runs the bundled agent built by `npm run build`.
// A 1 MB young generation keeps the agent's peak memory low (docs/benchmarks.md) at no cost in speed.
import { main } from "../dist/driftless.mjs";

// Exit as soon as the command is done (a fact probe that timed out may still have a child
// running), once what was written to stdout and stderr has been handed over.
const code = await main(process.argv.slice(2));
await Promise.all(
  [process.stdout, process.stderr].map((stream) => new Promise((resolve) => stream.write("", resolve))),
);
process.exit(code);
