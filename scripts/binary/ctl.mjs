// driftlessctl as a single binary, dist/driftlessctl-linux-<arch>: the same Node as the agent's
// binary, carrying the control plane bundled as its CommonJS main script (controlplane/src/
// sea-main.ts; pg, Aedes and MQTT.js are JavaScript, bundled too), better-sqlite3's addon (the
// agent's, loaded the agent's way), and the dashboard's files, served from the binary's memory
// (controlplane/src/http/dashboard.ts). No code cache: a server starts once.
import { mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import * as path from "node:path";
import { build } from "esbuild";
import { agentBundleOptions, asciiOnly, dashboardFiles } from "../build-common.mjs";
import { cachedDir, hashOf } from "./cache.mjs";
import { glibcFloor, injectBlob, seaBlob } from "./sea.mjs";
import { NODE_VERSION, nodePackage, sqliteAddon } from "./toolchain.mjs";

/** Bump when this module changes how the binary is made from the same inputs. */
const RECIPE = 1;
const MAIN = "driftlessctl.cjs";
/** The asset agent/src/state/sqlite.ts loads (SQLITE_ADDON_ASSET), as in the agent's binary. */
const ADDON_ASSET = "better_sqlite3.node";
/** The dashboard's assets (controlplane/src/http/dashboard.ts: DASHBOARD_ASSET_PREFIX, DASHBOARD_MANIFEST_ASSET). */
const DASHBOARD_PREFIX = "dashboard/";
const DASHBOARD_MANIFEST = "dashboard/files.json";

/** The main script and the dashboard's files, in memory, by asset name; `hash` keys the binary. */
export async function ctlBundle() {
  const common = agentBundleOptions();
  const main = await build({
    ...common,
    entryPoints: ["controlplane/src/sea-main.ts"],
    outfile: MAIN,
    write: false,
    format: "cjs",
    target: "node24",
    minify: true,
    // pg's optional libpq binding, required only when asked for (never here).
    external: ["pg-native"],
    // import.meta only in code for unbundled sources (the demo's package root, the dashboard's dist/).
    define: { ...common.define, "import.meta.url": "__driftlessModuleUrl" },
    banner: { js: 'var __driftlessModuleUrl = require("node:url").pathToFileURL(process.execPath).href;' },
  });
  const dashboard = await dashboardFiles();
  const names = ["index.html", ...Object.keys(dashboard).filter((name) => name !== "index.html")];
  const files = { [MAIN]: asciiOnly(main.outputFiles[0].text, MAIN), [DASHBOARD_MANIFEST]: JSON.stringify(names) };
  for (const name of names) files[`${DASHBOARD_PREFIX}${name}`] = dashboard[name];
  const hashes = Object.fromEntries(
    Object.entries(files).map(([name, contents]) => [name, hashOf(Buffer.from(contents))]),
  );
  return { files, hash: hashOf(hashes) };
}

/** dist/driftlessctl-linux-`arch`, made (or found) in the cache: `{ binary, dir, hit }`. */
export async function ctlBinary(arch, bundle, tree) {
  const node = await nodePackage(arch);
  const addon = await sqliteAddon(arch, tree);
  const addonHash = hashOf(readFileSync(addon));
  const key = hashOf({ bundle: bundle.hash, addon: addonHash, node: NODE_VERSION, arch, recipe: RECIPE });
  const name = `driftlessctl-linux-${arch}`;
  const { dir, hit } = await cachedDir("ctl-binary", key, (temp) => {
    process.stderr.write(`build-binary: making the ${arch} driftlessctl binary\n`);
    const sources = path.join(temp, "sources");
    const assets = { [ADDON_ASSET]: addon };
    for (const [file, contents] of Object.entries({ ...bundle.files, [`${ADDON_ASSET}.sha256`]: addonHash })) {
      const at = path.join(sources, file);
      mkdirSync(path.dirname(at), { recursive: true });
      writeFileSync(at, contents);
      if (file !== MAIN) assets[file] = at;
    }
    const config = path.join(temp, "sea-config.json");
    const blob = path.join(temp, "sea.blob");
    writeFileSync(
      config,
      JSON.stringify({
        main: path.join(sources, MAIN),
        output: blob,
        disableExperimentalSEAWarning: true,
        useCodeCache: false,
        assets,
      }),
    );
    seaBlob(arch, node, tree, [], config);
    const binary = path.join(temp, name);
    injectBlob(arch, node, tree, blob, binary);
    for (const done of [blob, config, sources]) rmSync(done, { recursive: true });
    writeFileSync(path.join(temp, "versions.json"), `${JSON.stringify(glibcFloor([binary, addon]))}\n`);
  });
  return { binary: path.join(dir, name), dir, hit };
}
