/**
 * How profiles and the agent configuration are parsed: without positions (js-yaml) when valid,
 * so a valid run never loads the `yaml` library; with positions (`yaml`) for a file with a
 * problem, whose result counts and whose errors name line and column.
 */
import { spawnSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import * as path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { afterAll, describe, expect, it } from "vitest";
import { CLI } from "../support/cli.js";
import { run } from "../support/ports.js";
import { cleanupTemp, fleet, makeRepo, profile, tempDir } from "../support/repo.js";

afterAll(cleanupTemp);

const everyone = fleet("  - match: {}\n    profiles: [base]\n");
const DIST = path.resolve("dist");
/** A message of the `yaml` library's own: the bundle's chunk that holds the library has it. */
const YAML_LIBRARY_MARK = "Map keys must be unique";

/**
 * Runs the built CLI with a module hook that lists the files it loads, and says whether one of
 * them holds the `yaml` library.
 */
function cliLoading(args: string[]): { exitCode: number; stdout: string; stderr: string; loadsYaml: boolean } {
  const dir = tempDir();
  const log = path.join(dir, "loaded.log");
  writeFileSync(
    path.join(dir, "hooks.mjs"),
    `import { appendFileSync } from "node:fs";
export async function load(url, context, next) {
  appendFileSync(${JSON.stringify(log)}, url + "\\n");
  return next(url, context);
}
`,
  );
  writeFileSync(
    path.join(dir, "register.mjs"),
    `import { register } from "node:module";\nregister(${JSON.stringify(pathToFileURL(path.join(dir, "hooks.mjs")).href)});\n`,
  );
  const result = spawnSync(process.execPath, ["--import", path.join(dir, "register.mjs"), CLI, ...args], {
    encoding: "utf8",
    env: { ...process.env, NO_COLOR: "1" },
  });
  const loaded = readFileSync(log, "utf8")
    .split("\n")
    .filter((url) => url.startsWith("file:"))
    .map((url) => fileURLToPath(url))
    .filter((file) => file.startsWith(`${DIST}/`));
  expect(loaded.length).toBeGreaterThan(1); // the hook saw the bundle and its chunks
  return {
    exitCode: result.status ?? -1,
    stdout: result.stdout,
    stderr: result.stderr,
    loadsYaml: loaded.some((file) => readFileSync(file, "utf8").includes(YAML_LIBRARY_MARK)),
  };
}

function agentConfig(source: string, extra = ""): string {
  const dir = tempDir();
  const file = path.join(dir, "agent.yaml");
  writeFileSync(
    file,
    `apiVersion: driftless/v1\nkind: AgentConfig\nhost: edge-1\nstateDir: ${dir}/state\nsource:\n  url: ${source}\n${extra}`,
  );
  return file;
}

describe("loading profiles and the agent configuration", () => {
  it("never loads the yaml library for valid files, and loads it to locate an error", () => {
    const root = tempDir();
    const repo = makeRepo({
      "fleet.yaml": everyone,
      "base.yaml": profile("base", "files:\n  - { path: /etc/a, content: x }\n  - { path: /etc/b, content: y }\n"),
    });
    const valid = cliLoading(["plan", "--config", agentConfig(repo), "--root", root]);
    expect(valid.stderr).toBe("");
    expect(valid.exitCode).toBe(2);
    expect(valid.loadsYaml).toBe(false);

    const badProfile = makeRepo({ "fleet.yaml": everyone, "base.yaml": profile("base", "bogus: 1\n") });
    const invalid = cliLoading(["plan", "--config", agentConfig(badProfile), "--root", root]);
    expect(invalid.exitCode).toBe(1);
    expect(invalid.stderr).toContain('base.yaml:4:1: bogus: unknown field "bogus"');
    expect(invalid.loadsYaml).toBe(true);

    const badConfig = cliLoading(["plan", "--config", agentConfig(repo, "mdoe: report\n"), "--root", root]);
    expect(badConfig.exitCode).toBe(1);
    expect(badConfig.stderr).toMatch(/agent\.yaml:7:1: mdoe: unknown field "mdoe"/);
    expect(badConfig.loadsYaml).toBe(true);
  });

  it("refuses a billion laughs with its position, without expanding it", async () => {
    const lines = ["vars:", `  a0: &a0 [${"lol, ".repeat(9)}lol]`];
    for (let i = 1; i < 12; i++) lines.push(`  a${i}: &a${i} [${new Array(10).fill(`*a${i - 1}`).join(", ")}]`);
    const repo = makeRepo({ "fleet.yaml": everyone, "base.yaml": profile("base", lines.join("\n")) });
    const outcome = await run(tempDir(), repo);
    expect(outcome.exitCode).toBe(1);
    const yamlError = outcome.errors.find((e) => e.code === "EYAML");
    expect(yamlError?.location).toEqual({ file: "base.yaml", line: 1, column: 1 });
    expect(yamlError?.message).toMatch(/alias/i);
  });

  it("reads the slow way what the fast parser leaves to it: aliases, directives, lax indentation", async () => {
    const outcome = await run(
      tempDir(),
      makeRepo({
        "fleet.yaml":
          "%YAML 1.2\n---\napiVersion: driftless/v1\nkind: Fleet\nassignments: [\n  { match: {}, profiles: [base] }\n]\n",
        "base.yaml": profile(
          "base",
          'files:\n  - { path: /etc/a, content: &text "same\\n" }\n  - { path: /etc/b, content: *text }\n',
        ),
      }),
    );
    expect(outcome.errors).toEqual([]);
    const writes = outcome.plan?.changes.flatMap((c) => c.steps).filter((step) => step.op === "file.write");
    expect(writes?.map((w) => [w.path, w.content.toString()])).toEqual([
      ["/etc/a", "same\n"],
      ["/etc/b", "same\n"],
    ]);
  });

  it("locates errors found after loading in valid files, in whichever document of the file", async () => {
    const second = "files:\n  - path: /c\n    after: [file:/d]\n  - { path: /d, after: [file:/c] }\n";
    const files = {
      "fleet.yaml": fleet("  - match: {}\n    profiles: [base, other]\n"),
      "base.yaml": `${profile("base", "")}---\n${profile("other", second)}`,
    };
    const cycle = await run(tempDir(), makeRepo(files));
    expect(
      cycle.errors.map((e) => `${e.location?.file}:${e.location?.line}:${e.location?.column} ${e.message}`),
    ).toEqual(["base.yaml:9:5 dependency cycle: file:/c -> file:/d -> file:/c"]);
    const duplicate = await run(
      tempDir(),
      makeRepo({
        ...files,
        "base.yaml": `${profile("base", "files:\n  - { path: /c }\n")}---\n${profile("other", second)}`,
      }),
    );
    expect(
      duplicate.errors.map((e) => `${e.location?.file}:${e.location?.line}:${e.location?.column} ${e.message}`),
    ).toEqual(["base.yaml:11:11 file:/c is already declared at base.yaml:5:13"]);
  });
});
