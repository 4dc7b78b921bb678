// Bundles the agent into dist/driftless.mjs (one ESM file; the better-sqlite3 addon stays external).
import { build } from "esbuild";

await build({
  entryPoints: ["agent/src/main.ts"],
  outfile: "dist/driftless.mjs",
  bundle: true,
  platform: "node",
  target: "node20",
  format: "esm",
  external: ["better-sqlite3"],
  sourcemap: "linked",
  legalComments: "none",
  logLevel: "warning",
  // Bundled CommonJS modules call require(); give them one.
  banner: {
    js: "import { createRequire as __driftlessRequire } from 'node:module'; const require = __driftlessRequire(import.meta.url);",
  },
});
