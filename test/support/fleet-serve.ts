/**
 * `driftlessctl serve` in this process, as `serve` wires it (SQLite store in a temp dir, the
 * embedded broker on a free port, the ingest, the event stream, the HTTP server with the built
 * dashboard), and hosts that publish real protocol messages through the broker with their own
 * credentials. A report is stored when the host receives its ack. The HTTP side can be stopped
 * and started again on the same port (its sessions kept), as when a proxy or the network drops
 * the dashboard's connections.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { silentLogger } from "../../agent/src/log.js";
import { hashPassword } from "../../controlplane/src/auth/password.js";
import type { HttpServer } from "../../controlplane/src/http/server.js";
import { createServeHttp } from "../../controlplane/src/http/start.js";
import { type RunningServe, startServe } from "../../controlplane/src/serve.js";
import type { RunReportPayload, StatusPayload } from "../../protocol/schema.js";
import { hostTopic } from "../../protocol/topics.js";
import { connectHost, type HostConnection } from "./mqtt-inbox.js";
import { factsPayload, runReport, statusPayload } from "./payloads.js";

export const WEBHOOK_SECRET = "dashboard webhook secret";

export interface FleetServe {
  running: RunningServe;
  dir: string;
  /** http://127.0.0.1:PORT */
  url: string;
  apiToken: string;
  /** A new one-time login URL. */
  loginUrl(): string;
  enrol(host: string, labels?: Record<string, string>): Promise<void>;
  /** Status, facts and one report as `host`; resolves once the report is stored (its ack). */
  report(
    host: string,
    seq: number,
    overrides?: Partial<RunReportPayload>,
    status?: Partial<StatusPayload>,
  ): Promise<void>;
  /** An MQTT connection as `host` (enrolled), subscribed to `topics`. */
  connect(host: string, topics: string[]): Promise<HostConnection>;
  /** Closes the HTTP server and every connection to it (the broker and the store keep running). */
  stopHttp(): Promise<void>;
  /** Listens again on the same port, with the same sessions (nothing when it listens already). */
  startHttp(): Promise<void>;
  close(): Promise<void>;
}

export async function startFleetServe(): Promise<FleetServe> {
  const dir = mkdtempSync(path.join(tmpdir(), "driftless-dashboard-"));
  const secretFile = path.join(dir, "webhook-secret");
  writeFileSync(secretFile, `${WEBHOOK_SECRET}\n`);
  const loginUrls: string[] = [];
  let http: HttpServer | null = null;
  let port = 0;
  let stopped = false;
  const running = await startServe(
    {
      dataDir: path.join(dir, "data"),
      http: { host: "127.0.0.1", port: 0 },
      mqtt: { host: "127.0.0.1", port: 0 },
      webhookSecretFile: secretFile,
      credentialPollMs: 60_000,
    },
    {
      log: silentLogger,
      now: () => new Date(),
      print: (line) => {
        const match = /(http:\/\/\S+\?token=\S+)/.exec(line);
        if (match?.[1]) loginUrls.push(match[1]);
      },
      createHttp: async (context, address) => {
        const server = createServeHttp(context);
        http = server;
        const bound = await server.listen(address.host, address.port);
        port = bound.port;
        return {
          url: bound.url,
          loginUrl: `${bound.url}/?token=${server.issueLoginToken()}`,
          close: () => server.close(),
        };
      },
    },
  );
  const passwords = new Map<string, string>();
  const brokerUrl = `mqtt://127.0.0.1:${running.mqttPort}`;
  const store = running.context.store;
  return {
    running,
    dir,
    url: running.httpUrl as string,
    apiToken: running.context.apiToken,
    loginUrl() {
      const url = loginUrls.shift();
      if (!url) throw new Error("serve printed one login URL; ask for it once");
      return url;
    },
    async enrol(host, labels = {}) {
      const password = `pw-${host}-secret`;
      passwords.set(host, password);
      await store.addCredential(host, await hashPassword(password), labels);
    },
    async report(host, seq, overrides = {}, status = {}) {
      const password = passwords.get(host);
      if (!password) throw new Error(`enrol ${host} first`);
      const connection = await connectHost(brokerUrl, host, password, [hostTopic(host, "ack")]);
      try {
        const publish = (kind: "status" | "facts" | "report", payload: unknown) =>
          connection.client.publishAsync(hostTopic(host, kind), JSON.stringify(payload), { qos: 1 });
        const run = runReport(host, seq, overrides);
        await publish("status", statusPayload(host, { commit: run.commit, sync: run.sync, ...status }));
        await publish("facts", factsPayload(host, { os: { arch: "amd64", name: "debian" } }));
        await publish("report", run);
        const ack = await connection.next();
        if (ack.json.upTo !== seq) throw new Error(`unexpected ack ${JSON.stringify(ack.json)}`);
      } finally {
        await connection.close();
      }
    },
    async connect(host, topics) {
      const password = passwords.get(host);
      if (!password) throw new Error(`enrol ${host} first`);
      return connectHost(brokerUrl, host, password, topics);
    },
    async stopHttp() {
      stopped = true;
      await http?.close();
    },
    async startHttp() {
      if (!stopped) return;
      await http?.listen("127.0.0.1", port);
      stopped = false;
    },
    async close() {
      await running.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
