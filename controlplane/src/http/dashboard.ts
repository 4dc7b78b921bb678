/**
 * The dashboard's static files (`index.html` and `assets/` with content-hashed names), read into
 * memory once when the server starts: they are a few hundred kilobytes, and serving from memory
 * keeps requests off the disk. They come from dist/dashboard/, as `npm run build` wrote it, or,
 * in the driftlessctl binary (`npm run build:binary`), from the binary's own assets.
 */
import * as fs from "node:fs";
import * as path from "node:path";
import * as sea from "node:sea";
import { fileURLToPath } from "node:url";

export interface Asset {
  body: Buffer;
  contentType: string;
}

export interface DashboardFiles {
  index: Asset;
  /** By file name under `assets/`. */
  assets: ReadonlyMap<string, Asset>;
}

/**
 * In the driftlessctl binary: the asset listing the dashboard's files (a JSON array of their
 * paths under the dashboard's folder, `index.html` first), each of them the asset
 * `dashboard/PATH` (scripts/build-binary.mjs).
 */
export const DASHBOARD_MANIFEST_ASSET = "dashboard/files.json";
export const DASHBOARD_ASSET_PREFIX = "dashboard/";

const TYPES: Record<string, string> = {
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".map": "application/json; charset=utf-8",
  ".svg": "image/svg+xml",
  ".html": "text/html; charset=utf-8",
};

/** The built dashboard in `dir`, or null when it is not there (the server then shows a minimal page). */
export function loadDashboard(dir: string): DashboardFiles | null {
  const indexFile = path.join(dir, "index.html");
  if (!fs.existsSync(indexFile)) return null;
  const assetDir = path.join(dir, "assets");
  const names = fs.existsSync(assetDir) ? fs.readdirSync(assetDir) : [];
  return dashboardOf(fs.readFileSync(indexFile), names, (name) => fs.readFileSync(path.join(assetDir, name)));
}

/**
 * The dashboard the driftlessctl binary carries, read with `read` (an asset's bytes by name,
 * null when the binary has no such asset); null when it carries none.
 */
export function loadEmbeddedDashboard(read: (asset: string) => Uint8Array | null): DashboardFiles | null {
  const manifest = read(DASHBOARD_MANIFEST_ASSET);
  if (manifest === null) return null;
  const files = JSON.parse(Buffer.from(manifest).toString("utf8")) as string[];
  const bytes = (file: string): Buffer => {
    const body = read(`${DASHBOARD_ASSET_PREFIX}${file}`);
    if (body === null) throw new Error(`the binary lists the dashboard file ${file} but does not carry it`);
    // A view of the bytes, not a copy (an asset of the binary: its pages are read when served).
    return Buffer.from(body.buffer, body.byteOffset, body.byteLength);
  };
  if (!files.includes("index.html")) return null;
  const names = files.filter((file) => file.startsWith("assets/")).map((file) => file.slice("assets/".length));
  return dashboardOf(bytes("index.html"), names, (name) => bytes(`assets/${name}`));
}

/** An asset of this single executable, or null when it has none by that name (or is not one). */
export function seaAsset(name: string): Uint8Array | null {
  if (!sea.isSea()) return null;
  try {
    // Raw: no copy of the bytes, which stay in the binary's pages until read.
    return new Uint8Array(sea.getRawAsset(name) as ArrayBuffer);
  } catch {
    return null;
  }
}

function dashboardOf(index: Buffer, assetNames: readonly string[], read: (name: string) => Buffer): DashboardFiles {
  const assets = new Map<string, Asset>();
  for (const name of assetNames) {
    const contentType = TYPES[path.extname(name)];
    if (!contentType) continue;
    assets.set(name, { body: read(name), contentType });
  }
  return { index: { body: index, contentType: TYPES[".html"] as string }, assets };
}

/**
 * Where the build put the dashboard, seen from this module: next to the bundle (dist/driftlessctl.mjs
 * and dist/dashboard/), one level up from a bundle chunk (dist/chunks/), or, running from the
 * sources, the checkout's dist/.
 */
export function findDashboardDir(moduleUrl: string): string | null {
  const here = path.dirname(fileURLToPath(moduleUrl));
  for (const dir of [
    path.join(here, "dashboard"),
    path.join(here, "..", "dashboard"),
    path.join(here, "..", "..", "..", "dist", "dashboard"),
  ]) {
    if (fs.existsSync(path.join(dir, "index.html"))) return dir;
  }
  return null;
}
