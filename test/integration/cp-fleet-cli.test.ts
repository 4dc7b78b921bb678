/**
 * The control plane as users run it: a `driftlessctl serve` process (embedded broker and HTTP on
 * free ports, a temp data dir, a webhook secret), hosts enrolled with `driftlessctl hosts add` and
 * connected as real MQTT.js clients, then the fleet CLI (`bin/driftlessctl.js`, a child process)
 * and a signed GitHub delivery against it.
 *
 * No sleeps: serve is ready when it prints its URL; reports are stored when their ack arrives;
 * commands are checked by the subscribed host receiving them.
 */
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { createHmac } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { FLEET_CMD_TOPIC, hostTopic } from "../../protocol/topics.js";
import { connectHost, type HostConnection } from "../support/mqtt-inbox.js";
import { runReport, statusPayload } from "../support/payloads.js";
import { freePort } from "../support/ports.js";

const CTL = path.resolve("bin/driftlessctl.js");
const SECRET = "push-secret-42";
const SHA_A = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const SHA_B = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
const SHA_C = "cccccccccccccccccccccccccccccccccccccccc";

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

function ctl(args: string[], env: Record<string, string> = {}): Promise<Result> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [CTL, ...args],
      { cwd: dir, env: { ...process.env, NO_COLOR: "1", DRIFTLESS_URL: "", DRIFTLESS_TOKEN_FILE: "", ...env } },
      (error, stdout, stderr) => {
        const code = error ? (typeof error.code === "number" ? error.code : -1) : 0;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

let dir: string;
let serve: ChildProcess;
let url: string;
let loginUrl: string;
let brokerUrl: string;
let tokenFile: string;
let apiToken: string;
const passwords: Record<string, string> = {};
const connections: HostConnection[] = [];

/** Flags every fleet CLI call gets. */
const conn = () => ["--url", url, "--token-file", tokenFile];

async function connect(host: string, topics: string[]) {
  const connection = await connectHost(brokerUrl, host, passwords[host] as string, topics);
  connections.push(connection);
  return connection;
}

async function report(host: string, seq: number, overrides: Parameters<typeof runReport>[2]) {
  const connection = await connect(host, [hostTopic(host, "ack")]);
  await connection.client.publishAsync(hostTopic(host, "status"), JSON.stringify(statusPayload(host)), { qos: 1 });
  await connection.client.publishAsync(hostTopic(host, "report"), JSON.stringify(runReport(host, seq, overrides)), {
    qos: 1,
  });
  expect((await connection.next()).json).toEqual({ v: 1, host, upTo: seq });
  return connection;
}

/** Starts serve and reads its HTTP URL (stdout) and the embedded broker's port (its log, stderr). */
function startServe(): Promise<void> {
  const secretFile = path.join(dir, "webhook-secret");
  writeFileSync(secretFile, `${SECRET}\n`);
  serve = spawn(
    process.execPath,
    [
      CTL,
      "serve",
      "--data",
      path.join(dir, "data"),
      "--http",
      "127.0.0.1:0",
      "--mqtt",
      "127.0.0.1:0",
      "--webhook-secret-file",
      secretFile,
    ],
    { env: { ...process.env, NO_COLOR: "1" }, stdio: ["ignore", "pipe", "pipe"] },
  );
  return new Promise((resolve, reject) => {
    let out = "";
    let err = "";
    const check = () => {
      const http = /Driftless control plane: (http:\/\/\S+)/.exec(out);
      const login = /one-time login\): (http:\/\/\S+)/.exec(out);
      const mqtt = /"address":"127\.0\.0\.1:(\d+)"/.exec(err) ?? /address=127\.0\.0\.1:(\d+)/.exec(err);
      if (http && login && mqtt) {
        url = http[1] as string;
        loginUrl = login[1] as string;
        brokerUrl = `mqtt://127.0.0.1:${mqtt[1]}`;
        resolve();
      }
    };
    serve.stdout?.on("data", (chunk: Buffer) => {
      out += chunk.toString();
      check();
    });
    serve.stderr?.on("data", (chunk: Buffer) => {
      err += chunk.toString();
      check();
    });
    serve.once("exit", (code) => reject(new Error(`serve exited with ${code}: ${err}`)));
  });
}

beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), "driftless-fleet-cli-"));
  const data = path.join(dir, "data");
  for (const [host, labels] of [
    ["web-1", ["--label", "role=web"]],
    ["web-2", ["--label", "role=web"]],
    ["db-1", ["--label", "role=db"]],
    ["listener", []],
  ] as const) {
    const added = await ctl(["hosts", "add", host, "--data", data, "--json", ...labels]);
    expect(added.code, added.stderr).toBe(0);
    passwords[host] = (JSON.parse(added.stdout) as { password: string }).password;
  }
  await startServe();
  tokenFile = path.join(data, "api-token");
  apiToken = readFileSync(tokenFile, "utf8").trim();
  await (await report("web-1", 1, { commit: SHA_A })).close();
  await (
    await report("web-2", 4, {
      commit: SHA_B,
      result: "changes",
      sync: "drifted",
      drift: [{ resource: "package:nginx", field: "version", desired: "1.24", actual: "1.22" }],
    })
  ).close();
}, 60_000);

afterAll(async () => {
  for (const connection of connections) await connection.client.endAsync(true);
  if (serve && serve.exitCode === null) {
    const exited = new Promise((resolve) => serve.once("exit", resolve));
    serve.kill("SIGTERM");
    await exited;
  }
  rmSync(dir, { recursive: true, force: true });
});

describe("driftlessctl fleet CLI against a running serve", () => {
  it("hosts --json lists every host; exit 2 because one is drifted", async () => {
    const result = await ctl(["hosts", "--json", ...conn()]);
    expect(result.code, result.stderr).toBe(2);
    const { hosts } = JSON.parse(result.stdout) as { hosts: Array<{ id: string; sync: string; presence: string }> };
    expect(Object.fromEntries(hosts.map((h) => [h.id, h.sync]))).toEqual({
      "db-1": "never-reported",
      listener: "never-reported",
      "web-1": "in-sync",
      "web-2": "drifted",
    });
    expect(hosts.find((h) => h.id === "web-1")?.presence).toBe("online");
  });

  it("hosts filters by label, state and commit; exit 0 when every listed host is in sync", async () => {
    const ids = async (args: string[]) => {
      const result = await ctl(["hosts", "--json", ...args, ...conn()]);
      return {
        code: result.code,
        ids: (JSON.parse(result.stdout) as { hosts: Array<{ id: string }> }).hosts.map((h) => h.id),
      };
    };
    expect(await ids(["--state", "in-sync"])).toEqual({ code: 0, ids: ["web-1"] });
    expect(await ids(["--label", "role=db"])).toEqual({ code: 0, ids: ["db-1"] });
    expect(await ids(["--commit", SHA_B])).toEqual({ code: 2, ids: ["web-2"] });
  });

  it("prints a plain table (no colours) when stdout is not a terminal", async () => {
    const result = await ctl(["hosts", ...conn()], { NO_COLOR: "" });
    expect(result.code).toBe(2);
    const lines = result.stdout.trimEnd().split("\n");
    expect(lines[0]).toMatch(/^HOST\s+PRESENCE\s+SYNC\s+COMMIT\s+LAST SEEN\s+LAST RUN\s+LABELS$/);
    expect(lines.find((l) => l.startsWith("web-2"))).toMatch(/^web-2\s+online\s+drifted\s+bbbbbbbbbbbb\s/);
    expect(result.stdout).not.toContain("\x1b[");
  });

  it("host ID shows one host; exit 3 for an unknown one", async () => {
    const result = await ctl(["host", "web-2", "--json", ...conn()]);
    expect(result.code, result.stderr).toBe(0);
    expect(JSON.parse(result.stdout)).toMatchObject({
      id: "web-2",
      sync: "drifted",
      commit: SHA_B,
      labels: { role: "web" },
      lastRun: { seq: 4 },
      drift: [{ resource: "package:nginx", field: "version", desired: "1.24", actual: "1.22" }],
    });
    const missing = await ctl(["host", "nope", ...conn()]);
    expect(missing.code).toBe(3);
    expect(missing.stderr).toContain(`no host nope at ${url}`);
  });

  it("drift lists the drifted hosts' drift (exit 2); drift ID of an in-sync host exits 0", async () => {
    const all = await ctl(["drift", "--json", ...conn()]);
    expect(all.code).toBe(2);
    expect(JSON.parse(all.stdout)).toEqual({
      hosts: [
        {
          id: "web-2",
          sync: "drifted",
          commit: SHA_B,
          lastRun: expect.objectContaining({ seq: 4 }),
          drift: [{ resource: "package:nginx", field: "version", desired: "1.24", actual: "1.22" }],
        },
      ],
    });
    const table = await ctl(["drift", ...conn()]);
    expect(table.stdout).toMatch(/package:nginx\s+version\s+1\.24\s+1\.22/);
    const one = await ctl(["drift", "web-1", "--json", ...conn()]);
    expect(one.code).toBe(0);
    expect(JSON.parse(one.stdout)).toMatchObject({ hosts: [{ id: "web-1", sync: "in-sync", drift: [] }] });
  });

  it("runs ID lists the stored runs", async () => {
    const result = await ctl(["runs", "web-2", "--json", ...conn()]);
    expect(result.code, result.stderr).toBe(0);
    expect(JSON.parse(result.stdout)).toMatchObject({ runs: [{ seq: 4, result: "changes", commit: SHA_B }] });
    expect((await ctl(["runs", "nope", ...conn()])).code).toBe(3);
  });

  it("converge ID makes the host receive a converge command", async () => {
    const host = await connect("web-1", [hostTopic("web-1", "cmd")]);
    const result = await ctl(["converge", "web-1", "--json", ...conn()]);
    expect(result.code, result.stderr).toBe(0);
    const { id } = JSON.parse(result.stdout) as { id: string };
    expect(await host.next()).toEqual({
      topic: hostTopic("web-1", "cmd"),
      json: { v: 1, host: "web-1", cmd: "converge", id },
    });
    expect((await ctl(["converge", "nope", ...conn()])).code).toBe(3);
    await host.close();
  });

  it("refresh makes every subscribed host receive refresh with the commit", async () => {
    const host = await connect("listener", [FLEET_CMD_TOPIC]);
    const result = await ctl(["refresh", "--commit", SHA_C, ...conn()]);
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toMatch(/^refresh sent to the fleet \(command [0-9a-f-]{36}\)/);
    expect((await host.next()).json).toMatchObject({ v: 1, cmd: "refresh", commit: SHA_C });
    await host.close();
  });

  it("reads DRIFTLESS_URL and DRIFTLESS_TOKEN_FILE", async () => {
    const result = await ctl(["hosts", "--json", "--state", "in-sync"], {
      DRIFTLESS_URL: url,
      DRIFTLESS_TOKEN_FILE: tokenFile,
    });
    expect(result.code, result.stderr).toBe(0);
    // Set but empty: the defaults.
    const empty = await ctl(["hosts"], { DRIFTLESS_URL: "", DRIFTLESS_TOKEN_FILE: "" });
    expect(empty.code).toBe(1);
    expect(empty.stderr).toContain("cannot read the API token file ./driftless-data/api-token (ENOENT)");
  });

  it("exits 1 naming the URL, never the token, when the token is refused or the API is unreachable", async () => {
    const wrongFile = path.join(dir, "wrong-token");
    writeFileSync(wrongFile, "not-the-token\n");
    const refused = await ctl(["hosts", "--url", url, "--token-file", wrongFile]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toContain(`the control plane at ${url} refused the API token from ${wrongFile}`);
    expect(refused.stderr).not.toContain("not-the-token");

    // A port nothing listens on (one that was free a moment ago).
    const closed = await freePort();
    const unreachable = await ctl(["hosts", "--url", `http://127.0.0.1:${closed}`, "--token-file", tokenFile]);
    expect(unreachable.code).toBe(1);
    expect(unreachable.stderr).toContain(`cannot reach the control plane at http://127.0.0.1:${closed}: ECONNREFUSED`);
    expect(unreachable.stderr).not.toContain(apiToken);

    const noFile = await ctl(["hosts", "--url", url, "--token-file", path.join(dir, "missing")]);
    expect(noFile.code).toBe(1);
    expect(noFile.stderr).toContain("cannot read the API token file");
  });

  it("exits 1 on bad usage, 0 with --help on every verb", async () => {
    for (const verb of ["hosts", "host", "drift", "runs", "converge", "refresh"]) {
      const help = await ctl([verb, "--help"]);
      expect(help.code, verb).toBe(0);
      expect(help.stdout).toContain(`Usage: driftlessctl ${verb}`);
    }
    expect((await ctl(["hosts", "--help"])).stdout).toContain("2 a listed host is drifted or");
    expect((await ctl(["host", ...conn()])).code).toBe(1);
    expect((await ctl(["hosts", "--colour", ...conn()])).code).toBe(1);
    expect((await ctl(["hosts", "--label", "role", ...conn()])).code).toBe(1);
  });
});

describe("serve's HTTP part", () => {
  it("a signed GitHub push reaches a subscribed host as refresh; a wrong signature gets 401 and publishes nothing", async () => {
    const host = await connect("listener", [FLEET_CMD_TOPIC]);
    // The bytes GitHub sends: compact JSON, signed as they are.
    const body = JSON.stringify({ ref: "refs/heads/main", before: SHA_A, after: SHA_B, deleted: false, commits: [] });
    const send = (secret: string, delivery: string) =>
      fetch(`${url}/hooks/git`, {
        method: "POST",
        headers: {
          "content-type": "application/json",
          "x-github-event": "push",
          "x-github-delivery": delivery,
          "x-hub-signature-256": `sha256=${createHmac("sha256", secret).update(body).digest("hex")}`,
        },
        body,
      });
    expect((await send("wrong", "gh-1")).status).toBe(401);
    expect((await send(SECRET, "gh-2")).status).toBe(202);
    expect((await send(SECRET, "gh-2")).status).toBe(200);
    // The first message is the valid delivery's, and there is no second.
    expect((await host.next()).json).toMatchObject({ cmd: "refresh", commit: SHA_B, ref: "main" });
    const api = await fetch(`${url}/api/v1/fleet/refresh`, {
      method: "POST",
      headers: { authorization: `Bearer ${apiToken}` },
      body: JSON.stringify({ commit: SHA_C }),
    });
    expect(api.status).toBe(202);
    expect((await host.next()).json).toMatchObject({ cmd: "refresh", commit: SHA_C });
    await host.close();
  });

  it("counts on /metrics what the fleet did", async () => {
    const text = await (await fetch(`${url}/metrics`)).text();
    expect(text).toContain("driftless_hosts 4\n");
    expect(text).toContain('driftless_hosts_sync{sync="drifted"} 1\n');
    expect(text).toContain("driftless_reports_ingested_total 2\n");
    expect(text).toContain("driftless_acks_sent_total 2\n");
    expect(text).toContain('driftless_webhook_deliveries_total{provider="github",result="published"} 1\n');
    expect(text).toContain('driftless_webhook_deliveries_total{provider="github",result="duplicate"} 1\n');
    expect(text).toContain('driftless_webhook_deliveries_total{provider="github",result="unauthorized"} 1\n');
  });

  it("the printed login link opens the page once", async () => {
    const first = await fetch(loginUrl, { redirect: "manual" });
    expect(first.status).toBe(303);
    const cookie = (first.headers.get("set-cookie") ?? "").split(";")[0] as string;
    // The session opens the dashboard, and its API calls (the cookie, no bearer token) see the fleet.
    expect(await (await fetch(`${url}/`, { headers: { cookie } })).text()).toContain('<div id="app">');
    const hosts = (await (await fetch(`${url}/api/v1/hosts`, { headers: { cookie } })).json()) as {
      hosts: Array<{ id: string }>;
    };
    expect(hosts.hosts.map((h) => h.id)).toContain("web-2");
    expect((await fetch(loginUrl, { redirect: "manual" })).status).toBe(401);
  });
});
