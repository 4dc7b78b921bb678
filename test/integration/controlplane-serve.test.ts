/**
 * `driftlessctl` as users run it (the built bin/driftlessctl.js): hosts add/remove, serve with
 * the embedded broker, a SIGKILL and a restart on the same data directory.
 */
import { type ChildProcess, spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { SqliteFleetStore } from "../../controlplane/src/store/sqlite.js";
import { hostTopic } from "../../protocol/topics.js";
import { CTL, ServeProcesses } from "../support/ctl-serve.js";
import { collect, connectHost, waitFor } from "../support/mqtt.js";
import { runReport, statusPayload } from "../support/payloads.js";
import { freePort } from "../support/ports.js";

function ctl(args: string[]) {
  const result = spawnSync(process.execPath, [CTL, ...args], {
    encoding: "utf8",
    env: { ...process.env, NO_COLOR: "1" },
  });
  return { exitCode: result.status ?? -1, stdout: result.stdout, stderr: result.stderr };
}

let dir: string;
const processes = new ServeProcesses();

beforeAll(() => {
  dir = mkdtempSync(path.join(tmpdir(), "driftless-ctl-"));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));
afterEach(() => processes.stop());

async function serve(data: string, mqttPort: number): Promise<ChildProcess> {
  return processes.serve([
    "--data",
    data,
    "--mqtt",
    `127.0.0.1:${mqttPort}`,
    "--http",
    `127.0.0.1:${await freePort()}`,
  ]);
}

function hostClient(port: number, password: string, session: number) {
  return processes.connect({ port, host: "edge-1", password, session });
}

describe("driftlessctl", () => {
  it("prints its version and the help of every command", () => {
    expect(ctl(["--version"])).toMatchObject({ exitCode: 0, stdout: "0.1.0\n" });
    for (const args of [["--help"], ["serve", "--help"], ["hosts", "add", "--help"], ["hosts", "remove", "--help"]]) {
      const result = ctl(args);
      expect(result.exitCode, args.join(" ")).toBe(0);
      expect(result.stdout).toMatch(/Usage: driftlessctl/);
    }
    expect(ctl(["serve", "--nope"])).toMatchObject({ exitCode: 1 });
    // PostgreSQL is accepted: an unreachable server is a store error, a password never printed.
    expect(ctl(["serve", "--database", "postgres://u:secret@127.0.0.1:1/y", "--data", dir])).toMatchObject({
      exitCode: 1,
      stderr: expect.stringMatching(/cannot open the fleet database postgres:\/\/u:\*\*\*@127\.0\.0\.1:1\/y/),
    });
    expect(ctl(["serve", "--database", "mysql://x/y", "--data", dir]).stderr).toMatch(/expected sqlite:PATH, postgres/);
    expect(ctl(["hosts", "add", "bad/name", "--data", dir])).toMatchObject({ exitCode: 1 });
    // Replica flags: only with an external broker, and a name fit for a client id; nothing starts.
    expect(ctl(["serve", "--replica-id", "a", "--data", dir])).toMatchObject({
      exitCode: 1,
      stderr: expect.stringContaining("--shared and --replica-id need --broker"),
    });
    expect(ctl(["serve", "--broker", "mqtt://127.0.0.1:1", "--replica-id", "a/#", "--data", dir])).toMatchObject({
      exitCode: 1,
      stderr: expect.stringContaining("--replica-id a/#: expected 1 to 41 letters"),
    });
  });

  it("prints the protocol's JSON Schema, the one kept in docs/protocol.schema.json", () => {
    const result = ctl(["schema"]);
    expect(result.exitCode).toBe(0);
    expect(JSON.parse(result.stdout)).toEqual(JSON.parse(readFileSync("docs/protocol.schema.json", "utf8")));
  });

  it("adds a host once, keeps its data across a SIGKILL, and disconnects it when removed", async () => {
    const data = path.join(dir, "data");
    const added = ctl(["hosts", "add", "edge-1", "--data", data, "--json", "--label", "site=lyon"]);
    expect(added.exitCode, added.stderr).toBe(0);
    const credentials = JSON.parse(added.stdout) as { host: string; username: string; password: string };
    expect(credentials).toMatchObject({ host: "edge-1", username: "edge-1" });
    expect(credentials.password.length).toBeGreaterThanOrEqual(32);
    expect(ctl(["hosts", "add", "edge-1", "--data", data])).toMatchObject({ exitCode: 1 });
    expect(readFileSync(path.join(data, "fleet.db")).includes(credentials.password)).toBe(false);

    const port = await freePort();
    const first = await serve(data, port);
    expect(statSync(path.join(data, "api-token")).mode & 0o777).toBe(0o600);
    const client = await hostClient(port, credentials.password, 1);
    const acks = await collect(client, hostTopic("edge-1", "ack"));
    await client.publishAsync(hostTopic("edge-1", "status"), JSON.stringify(statusPayload("edge-1")), { qos: 1 });
    await client.publishAsync(hostTopic("edge-1", "report"), JSON.stringify(runReport("edge-1", 1)), { qos: 1 });
    await waitFor("the ack", () => acks.length === 1);

    // Killed without a chance to close anything: what was acknowledged is on disk.
    const exited = new Promise((resolve) => first.once("exit", resolve));
    first.kill("SIGKILL");
    await exited;
    await serve(data, port);
    const store = SqliteFleetStore.open(data);
    try {
      expect((await store.listRuns("edge-1", { limit: 5 })).map((r) => r.runId)).toEqual(["run-1"]);
      expect(await store.getHost("edge-1", new Date())).toMatchObject({ labels: { site: "lyon" }, sync: "in-sync" });
    } finally {
      await store.close();
    }

    // The host reconnects and goes on where it was.
    const again = await hostClient(port, credentials.password, 2);
    const acks2 = await collect(again, hostTopic("edge-1", "ack"));
    await again.publishAsync(hostTopic("edge-1", "report"), JSON.stringify(runReport("edge-1", 2)), { qos: 1 });
    await waitFor("the ack after the restart", () => acks2.length === 1);
    expect(acks2).toEqual([{ v: 1, host: "edge-1", upTo: 2 }]);

    // Removed: its connection is closed, its reconnects refused.
    const closed = new Promise<void>((resolve) => again.once("close", () => resolve()));
    expect(ctl(["hosts", "remove", "edge-1", "--data", data])).toMatchObject({ exitCode: 0 });
    await closed;
    await expect(connectHost({ port, host: "edge-1", password: credentials.password, session: 3 })).rejects.toThrow();
    expect(ctl(["hosts", "remove", "edge-1", "--data", data])).toMatchObject({ exitCode: 3 });
  });
});
