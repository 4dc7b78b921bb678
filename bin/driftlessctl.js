#!/usr/bin/env node
// Entry point of the `driftlessctl` command: runs the bundled control plane built by `npm run build`.
import { defaultCtlIo, main } from "../dist/driftlessctl.mjs";

const code = await main(process.argv.slice(2), defaultCtlIo());
await Promise.all(
  [process.stdout, process.stderr].map((stream) => new Promise((resolve) => stream.write("", resolve))),
);
process.exit(code);
