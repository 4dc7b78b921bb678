/**
 * The dashboard's static files, as `npm run build` wrote them (dist/dashboard/: `index.html` and
 * `assets/` with content-hashed names), read into memory once when the server starts: they are a
 * few hundred kilobytes, and serving from memory keeps requests off the disk.
 */
import * as fs from "node:fs";
import * as path from "node:path";
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
  const assets = new Map<string, Asset>();
  const assetDir = path.join(dir, "assets");
  if (fs.existsSync(assetDir)) {
    for (const name of fs.readdirSync(assetDir)) {
      const contentType = TYPES[path.extname(name)];
      if (!contentType) continue;
      assets.set(name, { body: fs.readFileSync(path.join(assetDir, name)), contentType });
    }
  }
  return { index: { body: fs.readFileSync(indexFile), contentType: TYPES[".html"] as string }, assets };
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
