/**
 * The driftlessctl single binary (`npm run build:binary`) run as a plain process on this machine:
 * the x64 one directly, the arm64 one under qemu-aarch64-static. Each: version and help, `hosts
 * add` into a data directory (the SQLite addon written to DATA/native/), the glibc it needs. The
 * x64 one also serves: from a folder with no dist/ beside it, its dashboard's files come from the
 * binary (the same bytes the build makes), an agent's connection and report reach the store,
 * and the API answers with the bearer token serve made; and it serves through an external broker.
 */
import { createHash } from "node:crypto";
import { copyFileSync, readdirSync, readFileSync } from "node:fs";
import * as path from "node:path";
import type { MqttClient } from "mqtt";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { VERSION } from "../../controlplane/src/main.js";
import { hostTopic } from "../../protocol/topics.js";
// @ts-expect-error: a build script, JavaScript without types
import { dashboardFiles } from "../../scripts/build-common.mjs";
import {
  type Arch,
  type Binary,
  BUILD_TIMEOUT_MS,
  binarySupport,
  compareVersions,
  ensureBinary,
  GLIBC_FLOOR,
  newestGlibc,
  type Running,
  startProcess,
} from "../support/binary.js";
import { connectHost, waitFor } from "../support/mqtt.js";
import { runReport, statusPayload } from "../support/payloads.js";
import { freePort } from "../support/ports.js";
import { cleanupTemp, tempDir } from "../support/repo.js";
import { AedesBroker } from "../support/reporting.js";

afterAll(cleanupTemp);

/** `hosts add NAME --data DIR --json` with the binary; the host's password. */
async function addHost(bin: Binary, data: string, host: string): Promise<string> {
  const result = await bin.run(["hosts", "add", host, "--data", data, "--json"]);
  expect(result.exitCode, result.stderr).toBe(0);
  const added = JSON.parse(result.stdout) as { host: string; username: string; password: string };
  expect(added).toEqual({ host, username: host, password: expect.stringMatching(/^\S{20,}$/) });
  return added.password;
}

for (const arch of ["x64", "arm64"] as const satisfies readonly Arch[]) {
  const support = binarySupport(arch, "driftlessctl");

  describe.skipIf(!support.can)(`the ${arch} driftlessctl binary`, () => {
    let bin: Binary;
    beforeAll(async () => {
      bin = await ensureBinary(arch, "driftlessctl");
    }, BUILD_TIMEOUT_MS);

    it("prints its version and its help", async () => {
      const version = await bin.run(["--version"]);
      expect(version).toMatchObject({ exitCode: 0, stdout: `${VERSION}\n`, stderr: "" });
      const help = await bin.run(["--help"]);
      expect(help.exitCode, help.stderr).toBe(0);
      expect(help.stdout).toMatch(/^driftlessctl .*: the Driftless control plane\./);
      expect(help.stdout).toContain("  serve ");
      const serveHelp = await bin.run(["serve", "--help"]);
      expect(serveHelp.stdout).toContain("Usage: driftlessctl serve [options]");
    });

    it("adds and removes a host in a data directory, its SQLite addon written to DATA/native", async () => {
      const data = tempDir("driftlessctl-bin-data-");
      await addHost(bin, data, "edge-1");
      const native = readdirSync(path.join(data, "native"));
      expect(native).toEqual([expect.stringMatching(/^better_sqlite3-[0-9a-f]{16}\.node$/)]);
      const addon = path.join(data, "native", native[0] as string);
      const hash = createHash("sha256").update(readFileSync(addon)).digest("hex").slice(0, 16);
      expect(native[0]).toBe(`better_sqlite3-${hash}.node`);

      const again = await bin.run(["hosts", "add", "edge-1", "--data", data, "--json"]);
      expect(again.exitCode).toBe(1);
      const removed = await bin.run(["hosts", "remove", "edge-1", "--data", data, "--json"]);
      expect(removed.exitCode, removed.stderr).toBe(0);
      expect(JSON.parse(removed.stdout)).toEqual({ host: "edge-1", removed: true });
      const gone = await bin.run(["hosts", "remove", "edge-1", "--data", data, "--json"]);
      expect(gone.exitCode).toBe(3);

      // The oldest glibc: what the executable and its SQLite addon need (docs/install.md).
      expect(compareVersions(await newestGlibc([bin.path, addon]), GLIBC_FLOOR)).toBeLessThanOrEqual(0);
    });

    it("says the demo needs the npm package", async () => {
      const result = await bin.run(["demo"]);
      expect(result.exitCode).toBe(1);
      expect(result.stderr).toContain("the demo runs from the npm package or a checkout");
    });

    // Under qemu, serve adds nothing the x64 run does not show.
    if (arch === "x64")
      it("serves through an external broker, with no warning from Node 24", async () => {
        const broker = new AedesBroker(await freePort());
        await broker.start();
        const data = tempDir("driftlessctl-bin-data-");
        const serve = bin.start(["serve", "--data", data, "--http", "127.0.0.1:0", "--broker", broker.url]);
        try {
          await waitFor(
            () => `serve connected to ${broker.url}:\n${serve.output()}`,
            () => serve.output().includes('"connected to the broker"') && serve.output().includes("Open the dashboard"),
            60_000,
          );
        } finally {
          await serve.stop();
          await broker.stop();
        }
        expect(await serve.exited, serve.output()).toBe(0);
        // MQTT.js given the URL as a string calls url.parse(): DEP0169 on Node 24.
        expect(serve.output()).not.toContain("Warning");
      });

    if (arch === "x64")
      describe("serve", () => {
        let serve: Running | undefined;
        let data: string;
        let base: string;
        let loginUrl: string;
        let mqttPort: number;
        let client: MqttClient | undefined;
        let password: string;

        beforeAll(async () => {
          // A folder of its own: no dist/dashboard/ beside the binary, or above it, to read.
          const dir = tempDir("driftlessctl-bin-serve-");
          const binary = path.join(dir, "driftlessctl");
          copyFileSync(bin.path, binary);
          data = path.join(dir, "data");
          password = await addHost(bin, data, "edge-1");
          mqttPort = await freePort();
          const running = startProcess([
            binary,
            ...["serve", "--data", data, "--http", "127.0.0.1:0", "--mqtt", `127.0.0.1:${mqttPort}`],
          ]);
          serve = running;
          const [, url] = await waitFor(
            () => `serve's dashboard URL:\n${running.output()}`,
            () => {
              const code = running.child.exitCode;
              if (code !== null) throw new Error(`serve exited ${code}: ${running.output()}`);
              return /^Open the dashboard \(one-time login\): (http:\/\/\S+)$/m.exec(running.output()) ?? undefined;
            },
            60_000,
          );
          loginUrl = url as string;
          base = new URL(loginUrl).origin;
        }, BUILD_TIMEOUT_MS);

        afterAll(async () => {
          await client?.endAsync(true);
          await serve?.stop();
        });

        it("serves the dashboard it carries to the one-time login's session", async () => {
          expect(serve?.output()).not.toContain("minimal page");
          const login = await fetch(loginUrl, { redirect: "manual" });
          expect(login.status).toBe(303);
          const cookie = (login.headers.get("set-cookie") ?? "").split(";")[0] as string;
          expect(cookie).toMatch(/^driftless_session=./);

          // What the build makes of this checkout's dashboard: the binary must serve those bytes.
          const built = (await dashboardFiles()) as Record<string, string | Uint8Array>;
          const page = await fetch(`${base}/`, { headers: { cookie } });
          expect(page.status).toBe(200);
          expect(page.headers.get("content-type")).toBe("text/html; charset=utf-8");
          const html = await page.text();
          expect(html).toBe(built["index.html"]);
          expect(html).toContain('<div id="app">');

          const types = { ".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8" };
          const linked = [...html.matchAll(/(?:href|src)="\/(assets\/[^"]+)"/g)].map((m) => m[1] as string);
          expect(linked.map((file) => path.extname(file)).sort()).toEqual([".css", ".js"]);
          for (const file of [...linked, `${linked[0]}.map`]) {
            const response = await fetch(`${base}/${file}`, { headers: { cookie } });
            expect({ file, status: response.status }).toEqual({ file, status: 200 });
            const type = file.endsWith(".map")
              ? "application/json; charset=utf-8"
              : types[path.extname(file) as keyof typeof types];
            expect({ file, type: response.headers.get("content-type") }).toEqual({ file, type });
            expect(Buffer.from(await response.arrayBuffer()).equals(Buffer.from(built[file] as Uint8Array))).toBe(true);
          }
          // Behind the login, as from the npm package.
          expect((await fetch(`${base}/${linked[0]}`)).status).toBe(401);
        });

        it("stores what an agent reports and answers the API with the token it made", async () => {
          client = await connectHost({ port: mqttPort, host: "edge-1", password });
          await client.publishAsync(hostTopic("edge-1", "status"), JSON.stringify(statusPayload("edge-1")), {
            qos: 1,
            retain: true,
          });
          await client.publishAsync(hostTopic("edge-1", "report"), JSON.stringify(runReport("edge-1", 1)), { qos: 1 });

          const token = readFileSync(path.join(data, "api-token"), "utf8").trim();
          const api = (what: string, headers: Record<string, string> = { authorization: `Bearer ${token}` }) =>
            fetch(`${base}/api/v1/${what}`, { headers });
          expect((await api("hosts", {})).status).toBe(401);
          const runs = await waitFor(
            "the report stored",
            async () => {
              const body = (await (await api("hosts/edge-1/runs")).json()) as { runs: { runId: string }[] };
              return body.runs.length > 0 ? body.runs : undefined;
            },
            30_000,
          );
          expect(runs.map((run) => run.runId)).toEqual(["run-1"]);
          const host = (await (await api("hosts/edge-1")).json()) as { presence: string };
          expect(host.presence).toBe("online");
          const hosts = (await (await api("hosts")).json()) as { hosts: { id: string }[] };
          expect(hosts.hosts.map((h) => h.id)).toEqual(["edge-1"]);
        });
      });
  });
}
