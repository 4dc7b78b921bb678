/**
 * The compiled desired state through the built CLI: `--json` says where the desired state came
 * from, a run served by it evaluates none of the repository loader's modules (YAML documents,
 * zod schemas of profiles, Liquid), and `plan` reads it but never writes it.
 */
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import * as path from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";
import { openSqlite } from "../../agent/src/state/sqlite.js";
import { CLI } from "../support/cli.js";
import { cleanupTemp, fleet, makeRepo, profile, tempDir, writeTree } from "../support/repo.js";

afterAll(cleanupTemp);

const REGISTER = path.resolve("test/support/load-log/register.mjs");

/** The repository loader's own modules: none of them may be evaluated by a run from the cache. */
const LOADER_MODULES = [
  /agent\/src\/engine\/load-desired\.ts$/,
  /agent\/src\/profile\/load\.ts$/,
  /agent\/src\/profile\/schema\.ts$/,
  /agent\/src\/profile\/desired\.ts$/,
  /agent\/src\/profile\/select\.ts$/,
  /agent\/src\/profile\/template\.ts$/,
  /agent\/src\/resources\/file\/schema\.ts$/,
  /node_modules\/liquidjs\//,
];

interface Run {
  exitCode: number;
  json: { desiredFrom?: string; status: string; changes: Array<{ resource: string; diff?: string }> };
  stderr: string;
  /** The source files (from the source maps) of the bundle chunks the process evaluated. */
  modules: string[];
}

function driftless(args: string[]): Run {
  const log = path.join(tempDir("driftless-load-log-"), "modules");
  const result = spawnSync(process.execPath, ["--import", REGISTER, CLI, ...args, "--json"], {
    encoding: "utf8",
    env: { ...process.env, NO_COLOR: "1", DRIFTLESS_TEST_LOAD_LOG: log },
  });
  const urls = existsSync(log) ? readFileSync(log, "utf8").split("\n").filter(Boolean) : [];
  const modules = urls
    .filter((url) => url.startsWith("file:") && url.endsWith(".mjs"))
    .flatMap((url) => {
      const file = fileURLToPath(url);
      const map = JSON.parse(readFileSync(`${file}.map`, "utf8")) as { sources: string[] };
      return map.sources.map((source) => path.resolve(path.dirname(file), source));
    });
  return { exitCode: result.status ?? -1, json: JSON.parse(result.stdout), stderr: result.stderr, modules };
}

const loaderModules = (modules: string[]) => modules.filter((m) => LOADER_MODULES.some((re) => re.test(m)));

/** The stored entry: its row and its resources' rows. */
function compiledEntry(stateDir: string): [unknown[], unknown[]] {
  const db = openSqlite(path.join(stateDir, "state.db"), { readonly: true, fileMustExist: true });
  try {
    return [db.prepare("SELECT * FROM compiled_desired").all(), db.prepare("SELECT * FROM compiled_resources").all()];
  } finally {
    db.close();
  }
}

describe("driftless apply and plan with the compiled desired state", () => {
  const setup = () => {
    const repo = makeRepo({
      "fleet.yaml": fleet("  - match: {}\n    profiles: [p]\n"),
      "p.yaml": profile(
        "p",
        'vars: { port: 80 }\nfiles:\n  - { path: /etc/app.conf, template: app.liquid }\n  - { path: /etc/plain, content: "plain\\n" }\n',
      ),
      "app.liquid": "port={{ vars.port }} host={{ host.name }}\n",
    });
    const root = tempDir();
    const stateDir = tempDir();
    const args = (verb: string) => [verb, "--source", repo, "--root", root, "--state", stateDir, "--host", "edge-1"];
    return { repo, root, stateDir, args };
  };

  it("serves a no-op run without evaluating the loader's modules", () => {
    const { args } = setup();
    const first = driftless(args("apply"));
    expect(first.exitCode, first.stderr).toBe(2);
    expect(first.json.desiredFrom).toBe("repository");
    // The check can see them: the first run did evaluate them.
    expect(loaderModules(first.modules)).toHaveLength(LOADER_MODULES.length);

    const second = driftless(args("apply"));
    expect(second.exitCode, second.stderr).toBe(0);
    expect(second.json).toMatchObject({ desiredFrom: "cache", status: "in-sync" });
    expect(second.modules.some((m) => m.endsWith("agent/src/state/compiled.ts"))).toBe(true);
    expect(loaderModules(second.modules)).toEqual([]);
  });

  it("loads the diff library only when a text file's content changes", () => {
    const { root, args } = setup();
    const usesDiff = (run: Run) => run.modules.some((m) => /node_modules\/diff\//.test(m));
    const first = driftless(args("apply"));
    expect(first.exitCode, first.stderr).toBe(2);
    expect(usesDiff(first)).toBe(false); // new files: their diff is written without the library
    expect(usesDiff(driftless(args("apply")))).toBe(false); // a no-op

    writeFileSync(path.join(root, "etc/plain"), "edited by hand\n");
    const corrected = driftless(args("apply"));
    expect(corrected.exitCode, corrected.stderr).toBe(2);
    expect(usesDiff(corrected)).toBe(true);
    expect(JSON.stringify(corrected.json.changes)).toContain("-edited by hand");
  });

  it("plan reads the compiled state and never writes it", () => {
    const { repo, stateDir, args } = setup();
    expect(driftless(args("plan")).json.desiredFrom).toBe("repository");
    expect(existsSync(path.join(stateDir, "state.db"))).toBe(false);

    expect(driftless(args("apply")).exitCode).toBe(2);
    const stored = compiledEntry(stateDir);
    expect(stored[0]).toHaveLength(1);
    expect(stored[1]).toHaveLength(2);
    const planned = driftless(args("plan"));
    expect(planned).toMatchObject({ exitCode: 0, json: { desiredFrom: "cache" } });
    expect(loaderModules(planned.modules)).toEqual([]);

    writeTree(repo, { "app.liquid": "port={{ vars.port }}\n" });
    const changed = driftless(args("plan"));
    expect(changed).toMatchObject({ exitCode: 2, json: { desiredFrom: "repository" } });
    expect(changed.json.changes[0]?.diff).toMatch(/^-port=80 host=edge-1\n\+port=80$/m);
    expect(compiledEntry(stateDir)).toEqual(stored);
  });
});
