// Bundles some of the project's TypeScript modules into one ES module for a benchmark script and
// imports it: `await bundleForBench("git", { "agent/src/source/git.ts": ["GitCache"] })`. The bundle
// goes under node_modules/.cache so that its packages resolve from the project.
import { mkdirSync, writeFileSync } from "node:fs";
import * as path from "node:path";
import { build } from "esbuild";

export async function bundleForBench(name, modules) {
  const work = path.resolve(`node_modules/.cache/driftless-bench-${name}`);
  mkdirSync(work, { recursive: true });
  const entry = path.join(work, "entry.ts");
  writeFileSync(
    entry,
    Object.entries(modules)
      .map(([file, names]) => `export { ${names.join(", ")} } from ${JSON.stringify(path.resolve(file))};`)
      .join("\n"),
  );
  const outfile = path.join(work, "bench.mjs");
  await build({
    entryPoints: [entry],
    outfile,
    bundle: true,
    platform: "node",
    format: "esm",
    external: ["better-sqlite3", "pg-native"],
    logLevel: "warning",
    banner: { js: "import { createRequire as __r } from 'node:module'; const require = __r(import.meta.url);" },
  });
  return import(outfile);
}
