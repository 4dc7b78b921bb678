/**
 * The dashboard as the driftlessctl binary carries it (controlplane/src/http/dashboard.ts): a
 * manifest asset naming the files, each file an asset of its own, read here from a plain map.
 */
import { describe, expect, it } from "vitest";
import {
  DASHBOARD_ASSET_PREFIX,
  DASHBOARD_MANIFEST_ASSET,
  loadEmbeddedDashboard,
} from "../../controlplane/src/http/dashboard.js";

function reader(files: Record<string, string>): (asset: string) => Uint8Array | null {
  return (asset) => (asset in files ? new TextEncoder().encode(files[asset]) : null);
}

function carried(files: Record<string, string>, listed = Object.keys(files)): Record<string, string> {
  const assets: Record<string, string> = { [DASHBOARD_MANIFEST_ASSET]: JSON.stringify(listed) };
  for (const [name, text] of Object.entries(files)) assets[`${DASHBOARD_ASSET_PREFIX}${name}`] = text;
  return assets;
}

describe("loadEmbeddedDashboard", () => {
  it("reads index.html and the assets the manifest lists, typed by their extension", () => {
    const dashboard = loadEmbeddedDashboard(
      reader(
        carried({
          "index.html": "<!doctype html>",
          "assets/app-A1.js": "console.log(1)",
          "assets/app-A1.js.map": "{}",
          "assets/style-B2.css": "body{}",
          "assets/notes.txt": "not served",
        }),
      ),
    );
    expect(dashboard?.index.body.toString()).toBe("<!doctype html>");
    expect(dashboard?.index.contentType).toBe("text/html; charset=utf-8");
    const assets = Object.fromEntries(
      [...(dashboard?.assets ?? [])].map(([name, asset]) => [name, [asset.contentType, asset.body.toString()]]),
    );
    expect(assets).toEqual({
      "app-A1.js": ["text/javascript; charset=utf-8", "console.log(1)"],
      "app-A1.js.map": ["application/json; charset=utf-8", "{}"],
      "style-B2.css": ["text/css; charset=utf-8", "body{}"],
    });
  });

  it("is null without a manifest or an index.html", () => {
    expect(loadEmbeddedDashboard(reader({}))).toBeNull();
    expect(loadEmbeddedDashboard(reader(carried({ "assets/app.js": "x" })))).toBeNull();
  });

  it("fails on a file the manifest lists and the binary lacks", () => {
    const assets = carried({ "index.html": "<!doctype html>" }, ["index.html", "assets/app.js"]);
    expect(() => loadEmbeddedDashboard(reader(assets))).toThrow("assets/app.js");
  });
});
