#!/usr/bin/env node
// Entry point of the `driftless` command: runs the bundled agent built by `npm run build`.
import { main } from "../dist/driftless.mjs";

process.exitCode = await main(process.argv.slice(2));
