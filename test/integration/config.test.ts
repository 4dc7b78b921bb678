import { chmodSync, existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import * as path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { CONFIG_CACHE, loadAgentConfig } from "../../agent/src/config/load.js";
import { HostFs } from "../../agent/src/host/fs.js";
import { cleanupTemp, makeRepo } from "../support/repo.js";

afterAll(cleanupTemp);

const fs = new HostFs("/");

async function load(text: string | null, env: Record<string, string> = {}) {
  const dir = makeRepo(text === null ? {} : { "agent.yaml": text });
  return { dir, ...(await loadAgentConfig(fs, path.join(dir, "agent.yaml"), env)) };
}

const minimal = `apiVersion: driftless/v1
kind: AgentConfig
source:
  url: https://git.example.com/fleet.git
`;

describe("agent configuration", () => {
  it("fills defaults and resolves relative paths against the file's directory", async () => {
    const { loaded, errors, dir } = await load(`${minimal}  tokenFile: secrets/token\n  interval: 90s\n`);
    expect(errors).toEqual([]);
    expect(loaded?.config).toMatchObject({
      mode: "enforce",
      stateDir: "/var/lib/driftless",
      labels: {},
      source: { ref: "main", interval: 90_000, splay: 60_000, tokenFile: path.join(dir, "secrets/token") },
    });
  });

  it("locates every error, unknown keys included", async () => {
    const { errors } = await load(`apiVersion: driftless/v1
kind: AgentConfig
mdoe: report
source:
  url: https://git.example.com/fleet.git
  interval: soon
  tokenFile: /t
broker: { url: http://cp:1883 }
`);
    expect(errors.map((e) => e.toString().replace(/^.*agent\.yaml/, "agent.yaml"))).toEqual([
      'agent.yaml:3:1: mdoe: unknown field "mdoe"',
      "agent.yaml:6:13: source.interval: must be a duration such as 30s, 5m or 1h",
      "agent.yaml:8:16: broker.url: must be an mqtt:// or mqtts:// URL",
    ]);
  });

  it("checks credentials go together", async () => {
    const { errors } = await load(`${minimal}  tokenFile: /t\n  passwordFile: /p\n`);
    expect(errors.map((e) => e.message).sort()).toEqual([
      "use tokenFile or usernameFile + passwordFile, not both",
      "usernameFile and passwordFile go together",
    ]);
  });

  it("lets environment variables override single keys, and names them in errors", async () => {
    const ok = await load(minimal, {
      DRIFTLESS_MODE: "report",
      DRIFTLESS_SOURCE_REF: "prod",
      DRIFTLESS_HOST: "edge-9",
    });
    expect(ok.loaded?.config).toMatchObject({ mode: "report", host: "edge-9", source: { ref: "prod" } });
    expect(ok.loaded?.fromEnv.sort()).toEqual(["DRIFTLESS_HOST", "DRIFTLESS_MODE", "DRIFTLESS_SOURCE_REF"]);
    const bad = await load(minimal, { DRIFTLESS_MODE: "yolo" });
    expect(bad.errors[0]?.toString()).toMatch(/^environment DRIFTLESS_MODE: mode: Invalid option/);
  });

  it("has a fetch deadline, 2 minutes unless set (file or DRIFTLESS_SOURCE_FETCH_TIMEOUT)", async () => {
    expect((await load(minimal)).loaded?.config.source.fetchTimeout).toBe(120_000);
    expect((await load(`${minimal}  fetchTimeout: 3s\n`)).loaded?.config.source.fetchTimeout).toBe(3000);
    const env = await load(minimal, { DRIFTLESS_SOURCE_FETCH_TIMEOUT: "45s" });
    expect(env.loaded?.config.source.fetchTimeout).toBe(45_000);
  });

  it("takes command-line keys over the file and the environment, and names the option in errors", async () => {
    const { dir } = await load(minimal);
    const file = path.join(dir, "agent.yaml");
    const overrides = [
      { key: ["host"], value: "cli-1", option: "--host" },
      { key: ["labels", "role"], value: "db", option: "--label" },
    ];
    const { loaded } = await loadAgentConfig(fs, file, { DRIFTLESS_HOST: "env-1" }, "", { overrides });
    expect(loaded?.config).toMatchObject({ host: "cli-1", labels: { role: "db" } });
    const bad = await loadAgentConfig(fs, file, {}, "", {
      overrides: [{ key: ["host"], value: "no/slash", option: "--host" }],
    });
    expect(bad.errors[0]?.toString()).toMatch(/^option --host: host: must be a host id/);
    // No file at all: a source on the command line is enough.
    const none = await loadAgentConfig(fs, path.join(dir, "missing.yaml"), {}, "", {
      overrides: [{ key: ["source", "url"], value: "/srv/profiles", option: "--source" }],
    });
    expect(none.loaded?.config).toMatchObject({ source: { url: "/srv/profiles" }, stateDir: "/var/lib/driftless" });
  });

  it("reads a tree's own file with its paths inside the tree", async () => {
    const ok = makeRepo({ "etc/driftless/agent.yaml": `${minimal}  tokenFile: /etc/driftless/token\n` });
    const config = (await loadAgentConfig(fs, path.join(ok, "etc/driftless/agent.yaml"), {}, "", { treeRoot: ok }))
      .loaded?.config;
    expect(config).toMatchObject({
      stateDir: path.join(ok, "var/lib/driftless"),
      source: { tokenFile: path.join(ok, "etc/driftless/token") },
    });
  });

  it("works from the environment alone, and says what is missing otherwise", async () => {
    expect(
      (await load(null, { DRIFTLESS_SOURCE_URL: "https://git.example.com/f.git" })).loaded?.config.source.url,
    ).toBe("https://git.example.com/f.git");
    expect((await load(null)).errors[0]?.message).toMatch(/no configuration at .*agent\.yaml; create it/);
  });
});

describe("the validated configuration kept in the state directory", () => {
  /** A configuration file naming its own state directory (which exists), and a load of it. */
  function setup() {
    const dir = makeRepo({});
    const stateDir = path.join(dir, "state");
    mkdirSync(stateDir);
    const file = path.join(dir, "agent.yaml");
    writeFileSync(file, `${minimal}stateDir: ${stateDir}\nlabels:\n  site: lyon\n`);
    const cacheFile = path.join(stateDir, CONFIG_CACHE);
    const load = (env: Record<string, string> = {}, options: Parameters<typeof loadAgentConfig>[4] = {}) =>
      loadAgentConfig(fs, file, env, undefined, { keepValidated: true, ...options });
    /** Changes what the cache says, keeping its key: a load that returns it took the cache. */
    const plant = (labels: Record<string, string>) => {
      const cached = JSON.parse(readFileSync(cacheFile, "utf8"));
      cached.config.labels = labels;
      writeFileSync(cacheFile, JSON.stringify(cached));
    };
    return { file, stateDir, cacheFile, load, plant };
  }

  it("is written by a load that keeps it, private, and taken for the same inputs", async () => {
    const { cacheFile, load, plant } = setup();
    const first = await load();
    expect(first.loaded?.config.labels).toEqual({ site: "lyon" });
    expect(statSync(cacheFile).mode & 0o777).toBe(0o600);
    expect(JSON.parse(readFileSync(cacheFile, "utf8")).config).toEqual(first.loaded?.config);
    plant({ site: "planted" });
    expect((await load()).loaded?.config.labels).toEqual({ site: "planted" });
  });

  it("is never taken once any input differs: the file, the environment, an option", async () => {
    const { file, load, plant } = setup();
    await load();
    plant({ site: "planted" });
    expect((await load({ DRIFTLESS_HOST: "env-1" })).loaded?.config).toMatchObject({
      host: "env-1",
      labels: { site: "lyon" },
    });
    await load();
    plant({ site: "planted" });
    const option = await load({}, { overrides: [{ key: ["labels", "role"], value: "db", option: "--label" }] });
    expect(option.loaded?.config.labels).toEqual({ site: "lyon", role: "db" });
    await load();
    plant({ site: "planted" });
    writeFileSync(file, `${readFileSync(file, "utf8")}mode: reprot\n`);
    const bad = await load();
    expect(bad.loaded).toBeUndefined();
    expect(bad.errors[0]?.toString()).toMatch(/mode/);
  });

  it("is validated again and rewritten when it is not JSON or holds no configuration", async () => {
    const { cacheFile, load } = setup();
    await load();
    const { key } = JSON.parse(readFileSync(cacheFile, "utf8"));
    for (const junk of ["{ not json", "", JSON.stringify({ key, config: "lyon" }), JSON.stringify({ key })]) {
      writeFileSync(cacheFile, junk, { mode: 0o600 });
      const again = await load();
      expect(again.errors).toEqual([]);
      expect(again.loaded?.config.labels).toEqual({ site: "lyon" });
      expect(JSON.parse(readFileSync(cacheFile, "utf8"))).toEqual({ key, config: again.loaded?.config });
    }
  });

  it("is not written for a URL that may carry credentials", async () => {
    const { file, cacheFile, load } = setup();
    writeFileSync(file, readFileSync(file, "utf8").replace("https://git.", "https://deploy:s3cret@git."));
    expect((await load()).loaded?.config.source.url).toMatch(/s3cret/);
    expect(existsSync(cacheFile)).toBe(false);
  });

  it("is not taken when others may write it, and not written by a load that does not keep it", async () => {
    const { stateDir, cacheFile, load, plant } = setup();
    await load();
    plant({ site: "planted" });
    chmodSync(cacheFile, 0o666);
    expect((await load()).loaded?.config.labels).toEqual({ site: "lyon" });
    const other = setup();
    await other.load({}, { keepValidated: false });
    expect(existsSync(other.cacheFile)).toBe(false);
    expect(existsSync(stateDir)).toBe(true);
  });
});
