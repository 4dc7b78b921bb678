/**
 * The driftlessctl binary's main script (scripts/build-binary.mjs): the whole control plane,
 * bundled as CommonJS (a single executable's require() loads only Node's builtins), run as
 * bin/driftlessctl.js runs the npm package's bundle. The better-sqlite3 addon and the dashboard's
 * files are assets of the binary (store/sqlite.ts through the agent's openSqlite, http/dashboard.ts).
 */
import * as sea from "node:sea";
import { defaultCtlIo, main } from "./main.js";

// Only as the binary's main script: imported elsewhere (a test), this module does nothing.
if (sea.isSea()) {
  main(process.argv.slice(2), defaultCtlIo()).then(
    async (code) => {
      // Exit once stdout and stderr are flushed, as bin/driftlessctl.js does.
      await Promise.all([process.stdout, process.stderr].map((s) => new Promise((done) => s.write("", done))));
      process.exit(code);
    },
    (error: unknown) => {
      process.stderr.write(`driftlessctl: internal error: ${(error as Error).message ?? String(error)}\n`);
      process.exit(1);
    },
  );
}
