/**
 * What `driftless install` makes of its flags: the configuration keys (merged into an existing
 * file, which keeps everything else), the files it copies, the unit's hardening, and the flag
 * errors. Pure functions with plain values.
 */
import { describe, expect, it } from "vitest";
import { parse as parseYaml } from "yaml";
import { BROKER_PASSWORD_FILE, installSettings, TOKEN_FILE, unitFile } from "../../agent/src/cli/install.js";
import { type ConfigSetting, mergeConfig } from "../../agent/src/config/merge.js";
import { agentConfigSchema } from "../../agent/src/config/schema.js";
import { DriftlessError } from "../../agent/src/errors.js";

const FILE = "/etc/driftless/agent.yaml";
const DEFAULTS: ConfigSetting[] = [
  { key: ["host"], value: undefined },
  { key: ["labels"], value: {} },
  { key: ["mode"], value: "enforce" },
  { key: ["source", "url"], value: undefined },
  { key: ["source", "ref"], value: "main" },
];

const set = (key: string, value: unknown): ConfigSetting => ({ key: key.split("."), value });

describe("mergeConfig", () => {
  it("starts a new file from the defaults, the flags in their places", () => {
    const { text, changed } = mergeConfig(
      null,
      [set("source.url", "https://git.example.com/f.git"), set("host", "edge-1"), set("labels", { role: "gw" })],
      DEFAULTS,
      FILE,
    );
    expect(text).toMatch(/^# Driftless agent configuration/);
    expect(Object.keys(parseYaml(text) as object)).toEqual(["apiVersion", "kind", "host", "labels", "mode", "source"]);
    expect(parseYaml(text)).toEqual({
      apiVersion: "driftless/v1",
      kind: "AgentConfig",
      host: "edge-1",
      labels: { role: "gw" },
      mode: "enforce",
      source: { url: "https://git.example.com/f.git", ref: "main" },
    });
    expect(changed).toContain("source.url");
    expect(agentConfigSchema.safeParse(parseYaml(text)).success).toBe(true);
  });

  it("returns the text itself when every key given already has its value (labels in any order)", () => {
    const existing = `# mine\napiVersion: driftless/v1\nkind: AgentConfig\nlabels:   { b: "2", a: '1' }\nsource:\n  url: https://h/f.git   # the fleet\n`;
    const merged = mergeConfig(
      existing,
      [set("labels", { a: "1", b: "2" }), set("source.url", "https://h/f.git"), set("source.tokenFile", undefined)],
      DEFAULTS,
      FILE,
    );
    expect(merged).toEqual({ text: existing, changed: [] });
  });

  it("sets the keys given and keeps every other key, comment and edit", () => {
    const existing = `# Operator's note: report only until the migration.
apiVersion: driftless/v1
kind: AgentConfig
host: edge-1
labels: { role: gw, site: lyon }
mode: report   # for now
source:
  url: https://old.example.com/f.git
  ref: stable
  usernameFile: /etc/driftless/user
  passwordFile: /etc/driftless/pass
  interval: 10m
`;
    const { text, changed } = mergeConfig(
      existing,
      [
        set("labels", { role: "db" }),
        set("source.url", "https://new.example.com/f.git"),
        set("source.tokenFile", TOKEN_FILE),
        set("source.usernameFile", undefined),
        set("source.passwordFile", undefined),
        set("broker.url", "mqtt://cp:1883"),
      ],
      DEFAULTS,
      FILE,
    );
    expect(changed).toEqual([
      "labels",
      "source.url",
      "source.tokenFile",
      "source.usernameFile",
      "source.passwordFile",
      "broker.url",
    ]);
    expect(text).toContain("# Operator's note: report only until the migration.");
    expect(text).toContain("mode: report # for now");
    expect(parseYaml(text)).toEqual({
      apiVersion: "driftless/v1",
      kind: "AgentConfig",
      host: "edge-1",
      labels: { role: "db" },
      mode: "report",
      source: { url: "https://new.example.com/f.git", ref: "stable", interval: "10m", tokenFile: TOKEN_FILE },
      broker: { url: "mqtt://cp:1883" },
    });
  });

  it("refuses a file that is not YAML, or not a mapping, naming the file and line", () => {
    const error = (text: string) => {
      try {
        mergeConfig(text, [set("host", "x")], DEFAULTS, FILE);
      } catch (e) {
        return e as DriftlessError;
      }
      throw new Error("no error");
    };
    const bad = error("apiVersion: driftless/v1\nlabels: { a: 1\n");
    expect(bad).toBeInstanceOf(DriftlessError);
    expect(bad.location).toMatchObject({ file: FILE, line: expect.any(Number) });
    expect(bad.message).toContain("fix the file or remove it");
    expect(error("- a\n- b\n").message).toContain("one AgentConfig mapping");
  });
});

describe("installSettings", () => {
  const message = (fn: () => unknown) => {
    try {
      fn();
    } catch (e) {
      return (e as Error).message;
    }
    return "";
  };

  it("maps the flags to keys and the credential files to copies under /etc/driftless", () => {
    const { settings, copies } = installSettings(
      {
        source: "https://git.example.com/f.git",
        ref: "v2",
        host: "edge-1",
        label: ["role=gw", "site=lyon"],
        "token-file": "/tmp/token",
        broker: "mqtts://cp.example.com:8883",
        "broker-password-file": "/tmp/pw",
        "broker-ca": "/tmp/ca.pem",
      },
      null,
    );
    expect(Object.fromEntries(settings.map((s) => [s.key.join("."), s.value]))).toEqual({
      "source.url": "https://git.example.com/f.git",
      "source.ref": "v2",
      host: "edge-1",
      labels: { role: "gw", site: "lyon" },
      "source.tokenFile": TOKEN_FILE,
      "source.usernameFile": undefined,
      "source.passwordFile": undefined,
      "broker.url": "mqtts://cp.example.com:8883",
      "broker.passwordFile": BROKER_PASSWORD_FILE,
      "broker.ca": "/etc/driftless/ca.pem",
    });
    expect(copies).toEqual([
      { flag: "--token-file", from: "/tmp/token", to: TOKEN_FILE, mode: 0o600, sensitive: true },
      { flag: "--broker-password-file", from: "/tmp/pw", to: BROKER_PASSWORD_FILE, mode: 0o600, sensitive: true },
      { flag: "--broker-ca", from: "/tmp/ca.pem", to: "/etc/driftless/ca.pem", mode: 0o644, sensitive: false },
    ]);
    // Nothing given, nothing set: the existing keys stay.
    expect(installSettings({}, { source: { url: "x" } })).toEqual({ settings: [], copies: [] });
  });

  it("names the flag in every error", () => {
    expect(message(() => installSettings({ source: "ftp://h/f" }, null))).toMatch(/^--source ftp:\/\/h\/f: expected/);
    expect(message(() => installSettings({ source: "fleet" }, null))).toMatch(/^--source fleet: expected/);
    expect(message(() => installSettings({ source: "https://" }, null))).toMatch(/^--source https:\/\/: expected/);
    expect(message(() => installSettings({ source: "https://u:secret@h/f" }, null))).toBe(
      "--source: the URL holds credentials; put the token in a file and pass --token-file F",
    );
    expect(message(() => installSettings({ label: ["role"] }, null))).toBe("--label role: expected KEY=VALUE");
    expect(message(() => installSettings({ label: ["=x"] }, null))).toBe("--label =x: expected KEY=VALUE");
    expect(message(() => installSettings({ host: "a b" }, null))).toMatch(/^--host "a b": expected a host id/);
    expect(message(() => installSettings({ ref: " " }, null))).toMatch(/^--ref: /);
    expect(message(() => installSettings({ broker: "http://cp" }, null))).toMatch(/^--broker http:\/\/cp: expected/);
    expect(message(() => installSettings({ broker: "mqtt://edge:pw@cp" }, null))).toMatch(/^--broker: the URL holds/);
  });

  it("--broker needs --broker-password-file, unless the configuration has one; the broker files need a broker", () => {
    expect(message(() => installSettings({ broker: "mqtt://cp" }, null))).toMatch(
      /^--broker needs --broker-password-file F/,
    );
    const configured = { broker: { url: "mqtt://old", passwordFile: BROKER_PASSWORD_FILE } };
    expect(message(() => installSettings({ broker: "mqtt://cp" }, configured))).toBe("");
    expect(message(() => installSettings({ "broker-password-file": "/tmp/pw" }, null))).toBe(
      "--broker-password-file and --broker-ca need --broker URL",
    );
    expect(message(() => installSettings({ "broker-ca": "/tmp/ca" }, null))).toMatch(/need --broker URL/);
    // A new password for the configured broker.
    expect(message(() => installSettings({ "broker-password-file": "/tmp/pw" }, configured))).toBe("");
  });
});

describe("unitFile", () => {
  const unit = unitFile("/usr/local/bin/driftless");
  const directives = new Map(
    unit
      .split("\n")
      .filter((line) => /^[A-Z]\w*=/.test(line))
      .map((line) => [line.slice(0, line.indexOf("=")), line.slice(line.indexOf("=") + 1)]),
  );

  it("runs the agent with the configuration", () => {
    expect(directives.get("ExecStart")).toBe("/usr/local/bin/driftless agent --config /etc/driftless/agent.yaml");
    expect(directives.get("Restart")).toBe("always");
  });

  it("hardens what the agent does not need, and yields to the host's workload", () => {
    for (const key of ["ProtectKernelLogs", "ProtectControlGroups", "RestrictRealtime", "LockPersonality"]) {
      expect(directives.get(key), key).toBe("yes");
    }
    expect(directives.get("SystemCallArchitectures")).toBe("native");
    expect(directives.get("Nice")).toBe("10");
    expect(directives.get("CPUWeight")).toBe("20");
    expect(directives.get("IOSchedulingClass")).toBe("best-effort");
    expect(directives.get("MemoryHigh")).toBe("25%");
    expect(directives.has("MemoryMax")).toBe(false); // slowed down, never killed mid-apply
  });

  it("sets none of the options that would stop it managing the host, and says why in a comment", () => {
    for (const key of [
      "ProtectSystem",
      "ProtectHome",
      "PrivateTmp",
      "ProtectKernelModules",
      "ProtectKernelTunables",
      "ProtectClock",
      "PrivateDevices",
      "DevicePolicy",
      "ProtectHostname",
      "RestrictNamespaces",
      "RestrictSUIDSGID",
      "NoNewPrivileges",
      "MemoryDenyWriteExecute",
      "User",
    ]) {
      expect(directives.has(key), key).toBe(false);
      if (key !== "User") expect(unit, `${key} explained`).toMatch(new RegExp(`^#.*\\b${key}\\b`, "m"));
    }
    // Every hardening line has a comment above it.
    const lines = unit.split("\n");
    for (const key of ["ProtectKernelLogs", "ProtectControlGroups", "RestrictRealtime", "LockPersonality"]) {
      const at = lines.findIndex((l) => l.startsWith(`${key}=`));
      expect(lines[at - 1], key).toMatch(/^# /);
    }
  });
});
