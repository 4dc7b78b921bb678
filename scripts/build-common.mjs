// What the ESM bundles (scripts/build.mjs) and the single binary (scripts/build-binary.mjs) share.
import { execFileSync } from "node:child_process";
import * as path from "node:path";
import { build } from "esbuild";

/** The commit of this checkout (`git rev-parse HEAD`), or "unknown" outside Git. */
export function gitCommit() {
  try {
    return execFileSync("git", ["rev-parse", "HEAD"], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim();
  } catch {
    return "unknown";
  }
}

/** esbuild options of every agent bundle: `driftless --version` prints the commit. */
export function agentBundleOptions() {
  return {
    bundle: true,
    platform: "node",
    legalComments: "none",
    logLevel: "warning",
    define: { DRIFTLESS_COMMIT: JSON.stringify(gitCommit()) },
  };
}

/**
 * The dashboard (controlplane/dashboard/, Preact), built in memory: browser bundles with
 * content-hashed names under `assets/`, and the index.html that loads them (no inline script: the
 * page's Content-Security-Policy allows none). Returns the files by their path under the
 * dashboard's folder: scripts/build.mjs writes them to dist/dashboard/, scripts/build-binary.mjs
 * carries them in the driftlessctl binary.
 */
export async function dashboardFiles() {
  const outdir = "dist/dashboard/assets"; // where the source maps' paths are relative to
  const web = await build({
    entryPoints: { app: "controlplane/dashboard/main.tsx", style: "controlplane/dashboard/style.css" },
    outdir,
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
  const files = {};
  for (const file of web.outputFiles) files[`assets/${path.relative(outdir, file.path)}`] = file.contents;
  const assetName = (ext) => {
    const name = Object.keys(files).find((f) => f.endsWith(ext));
    if (!name) throw new Error(`dashboard build: no ${ext} output`);
    return name;
  };
  files["index.html"] = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<title>Driftless fleet</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/${assetName(".css")}">
<script type="module" src="/${assetName(".js")}"></script>
</head>
<body>
<div id="app"><noscript>The Driftless dashboard needs JavaScript; the HTTP API and driftlessctl hosts work without.</noscript></div>
</body>
</html>
`;
  return files;
}

/**
 * `code` (JavaScript esbuild wrote) with every non-ASCII UTF-16 code unit written as `\uXXXX`.
 * esbuild escapes strings and identifiers but leaves regular expression literals (`/[àáâ]/`) as
 * they are, and one such character makes V8 hold the whole script source as a two-byte string:
 * twice the bundle's size in the heap of every process. `\uXXXX` means the same code unit in
 * strings, templates, identifiers and regular expressions with or without the u flag (a pair of
 * escaped surrogates is one code point there); an identity escape (`\à`) loses its backslash.
 * The one difference: a template's raw text (String.raw) sees the escape.
 */
export function asciiOnly(code, name) {
  const ascii = code.replace(/(\\*)([\u0080-\uffff])/g, (_, slashes, char) => {
    const kept = slashes.length % 2 === 1 ? slashes.slice(1) : slashes;
    return `${kept}\\u${char.charCodeAt(0).toString(16).padStart(4, "0")}`;
  });
  assertAscii(ascii, name);
  return ascii;
}

/** Fails the build when `code` holds a character outside ASCII. */
export function assertAscii(code, name) {
  const at = code.search(/[\u0080-\uffff]/);
  if (at >= 0)
    throw new Error(`${name}: non-ASCII character at offset ${at}: ${JSON.stringify(code.slice(at - 20, at + 20))}`);
}
