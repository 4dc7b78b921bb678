// Bundles the agent (dist/driftless.mjs) and the control plane (dist/driftlessctl.mjs) into dist/
// (ESM; the better-sqlite3 addon stays external). Modules that only some runs need (Liquid, when a profile has templates) are split into chunks loaded on demand,
// so a run without them does not pay for their code in memory or start-up time.
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import * as path from "node:path";
import { build } from "esbuild";
import { agentBundleOptions, asciiOnly, dashboardFiles } from "./build-common.mjs";

// Only what this build writes: dist/ also holds the single binaries (scripts/build-binary.mjs).
for (const name of ["chunks", "driftless.mjs", "driftless.mjs.map", "driftlessctl.mjs", "driftlessctl.mjs.map"]) {
  rmSync(`dist/${name}`, { recursive: true, force: true });
}
const result = await build({
  entryPoints: { driftless: "agent/src/main.ts", driftlessctl: "controlplane/src/main.ts" },
  outdir: "dist",
  outExtension: { ".js": ".mjs" },
  chunkNames: "chunks/[name]-[hash]",
  ...agentBundleOptions(),
  splitting: true,
  target: "node20",
  format: "esm",
  // pg-native: pg's optional libpq binding, required only when asked for (never here).
  external: ["better-sqlite3", "pg-native"],
  sourcemap: "linked",
  write: false,
  // Bundled CommonJS modules call require(); give them one.
  banner: {
    js: "import { createRequire as __driftlessRequire } from 'node:module'; const require = __driftlessRequire(import.meta.url);",
  },
});
// Written here rather than by esbuild: the scripts pure ASCII (see asciiOnly).
for (const file of result.outputFiles) {
  mkdirSync(path.dirname(file.path), { recursive: true });
  writeFileSync(file.path, file.path.endsWith(".mjs") ? asciiOnly(file.text, file.path) : file.contents);
}

// The dashboard (scripts/build-common.mjs): dist/dashboard/, which `driftlessctl serve` reads at start.
rmSync("dist/dashboard", { recursive: true, force: true });
for (const [name, contents] of Object.entries(await dashboardFiles())) {
  const file = path.join("dist/dashboard", name);
  mkdirSync(path.dirname(file), { recursive: true });
  writeFileSync(file, contents);
}
