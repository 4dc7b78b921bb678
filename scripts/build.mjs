// Bundles the agent (dist/driftless.mjs) and the control plane (dist/driftlessctl.mjs) into dist/
// (ESM; the better-sqlite3 addon stays external). Modules that only some runs need (Liquid, when a profile has templates) are split into chunks loaded on demand,
// so a run without them does not pay for their code in memory or start-up time.
import { mkdirSync, rmSync, writeFileSync } from "node:fs";
import * as path from "node:path";
import { build } from "esbuild";
import { agentBundleOptions, asciiOnly } from "./build-common.mjs";

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

// The dashboard (controlplane/dashboard/, Preact): browser bundles with content-hashed names under
// dist/dashboard/assets/, and the index.html that loads them (no inline script: the page's
// Content-Security-Policy allows none). `driftlessctl serve` reads them at start.
rmSync("dist/dashboard", { recursive: true, force: true });
const web = await build({
  entryPoints: { app: "controlplane/dashboard/main.tsx", style: "controlplane/dashboard/style.css" },
  outdir: "dist/dashboard/assets",
  entryNames: "[name]-[hash]",
  bundle: true,
  format: "esm",
  platform: "browser",
  target: ["chrome110", "firefox110", "safari16"],
  jsx: "automatic",
  jsxImportSource: "preact",
  minify: true,
  sourcemap: "linked",
  legalComments: "none",
  logLevel: "warning",
  write: false,
});
const assetName = (ext) => {
  const file = web.outputFiles.find((f) => f.path.endsWith(ext));
  if (!file) throw new Error(`dashboard build: no ${ext} output`);
  return path.basename(file.path);
};
for (const file of web.outputFiles) {
  mkdirSync(path.dirname(file.path), { recursive: true });
  writeFileSync(file.path, file.contents);
}
writeFileSync(
  "dist/dashboard/index.html",
  `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<title>Driftless fleet</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/assets/${assetName(".css")}">
<script type="module" src="/assets/${assetName(".js")}"></script>
</head>
<body>
<div id="app"><noscript>The Driftless dashboard needs JavaScript; the HTTP API and driftlessctl hosts work without.</noscript></div>
</body>
</html>
`,
);
