/**
 * Reporting tests on real parts: the built agent daemon as a child process, an in-process Aedes
 * broker that can be stopped and started again on the same port, and the control plane played
 * by a real MQTT.js client that validates every payload with protocol/schema.ts and acks.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import * as net from "node:net";
import * as path from "node:path";
import { createInterface } from "node:readline";
import * as tls from "node:tls";
import { Aedes } from "aedes";
import Database from "better-sqlite3";
import { connect, type MqttClient } from "mqtt";
import { payloadSchemas } from "../../protocol/schema.js";
import { FLEET_CMD_TOPIC, hostTopic } from "../../protocol/topics.js";
import { CLI } from "./cli.js";
import { fleet, makeRepo, profile, tempDir } from "./repo.js";

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `check` until it returns something other than undefined/false; fails after `timeoutMs`. */
export async function until<T>(what: string, check: () => T | undefined | false, timeoutMs = 60_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = check();
    if (value !== undefined && value !== false) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(25);
  }
}

/**
 * An in-process Aedes 1.x broker (no persistence) on `port`; `stop` drops every connection.
 * While `admitAgents` is false it refuses every client but the control plane's (`cp-...`), so a
 * test restarting it decides that the control plane is subscribed before the agent is back.
 */
export class AedesBroker {
  readonly port: number;
  admitAgents = true;
  /** TLS key and certificate: the broker listens on mqtts. */
  tls: { key: Buffer; cert: Buffer } | undefined;
  /** Password each user must give (absent: any); every agent CONNECT is kept in `connects`. */
  passwords: Record<string, string> | undefined;
  readonly connects: Array<{ clientId: string; username: string | undefined; password: string | undefined }> = [];
  #broker: Aedes | undefined;
  #server: net.Server | undefined;
  readonly #sockets = new Set<net.Socket>();

  constructor(port: number) {
    this.port = port;
  }

  get url(): string {
    return this.tls ? `mqtts://localhost:${this.port}` : `mqtt://127.0.0.1:${this.port}`;
  }

  async start(): Promise<void> {
    const broker = await Aedes.createBroker({
      authenticate: (client, username, password, done) => {
        if (client.id.startsWith("cp-")) return done(null, true);
        const given = password?.toString("utf8");
        this.connects.push({ clientId: client.id, username, password: given });
        const ok = !this.passwords || (username !== undefined && this.passwords[username] === given);
        done(null, this.admitAgents && ok);
      },
    });
    const onSocket = (socket: net.Socket) => {
      this.#sockets.add(socket);
      socket.on("close", () => this.#sockets.delete(socket));
      broker.handle(socket);
    };
    const server = this.tls ? tls.createServer(this.tls, onSocket) : net.createServer(onSocket);
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(this.port, "127.0.0.1", () => resolve());
    });
    this.#broker = broker;
    this.#server = server;
  }

  async stop(): Promise<void> {
    const server = this.#server;
    const broker = this.#broker;
    this.#server = undefined;
    this.#broker = undefined;
    for (const socket of this.#sockets) socket.destroy();
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
    if (broker) await new Promise<void>((resolve) => broker.close(() => resolve()));
  }
}

/** A CA and a certificate for `localhost` it signed, made with openssl in `dir`. */
export function makeCertificates(dir: string): { ca: string; key: Buffer; cert: Buffer } {
  const run = (args: string[]) => execFileSync("openssl", args, { cwd: dir, stdio: "ignore" });
  run([
    "req",
    "-x509",
    "-newkey",
    "rsa:2048",
    "-nodes",
    "-keyout",
    "ca.key",
    "-out",
    "ca.pem",
    "-days",
    "2",
    "-subj",
    "/CN=test-ca",
  ]);
  run([
    "req",
    "-newkey",
    "rsa:2048",
    "-nodes",
    "-keyout",
    "server.key",
    "-out",
    "server.csr",
    "-subj",
    "/CN=localhost",
  ]);
  writeFileSync(path.join(dir, "ext.cnf"), "subjectAltName=DNS:localhost,IP:127.0.0.1\n");
  run([
    "x509",
    "-req",
    "-in",
    "server.csr",
    "-CA",
    "ca.pem",
    "-CAkey",
    "ca.key",
    "-CAcreateserial",
    "-out",
    "server.pem",
    "-days",
    "2",
    "-extfile",
    "ext.cnf",
  ]);
  return {
    ca: path.join(dir, "ca.pem"),
    key: readFileSync(path.join(dir, "server.key")),
    cert: readFileSync(path.join(dir, "server.pem")),
  };
}

export interface Received {
  kind: string;
  payload: Record<string, unknown>;
  retain: boolean;
}

/**
 * The control plane as the agent sees it: subscribed to one host's topics, every payload checked
 * against its schema (a payload that fails is kept in `invalid`), acks sent on demand or as
 * each report arrives (`autoAck`).
 */
export class ControlPlane {
  readonly host: string;
  readonly received: Received[] = [];
  readonly invalid: string[] = [];
  autoAck: boolean;
  #client: MqttClient | undefined;
  #url: string;

  readonly #ca: Buffer | undefined;

  constructor(url: string, host: string, options: { autoAck?: boolean; ca?: Buffer } = {}) {
    this.#url = url;
    this.host = host;
    this.autoAck = options.autoAck ?? false;
    this.#ca = options.ca;
  }

  async connect(url = this.#url): Promise<void> {
    this.#url = url;
    const client = connect(url, {
      protocolVersion: 4,
      clientId: `cp-${this.host}-${Math.random().toString(16).slice(2, 8)}`,
      reconnectPeriod: 300,
      clean: true,
      ...(this.#ca ? { ca: this.#ca } : {}),
    });
    client.on("message", (topic, buffer, packet) => {
      const kind = topic.slice(hostTopic(this.host, "status").length - "status".length);
      const text = buffer.toString("utf8");
      if (text === "") return;
      const schema = payloadSchemas[kind as keyof typeof payloadSchemas];
      let json: unknown;
      try {
        json = JSON.parse(text);
      } catch {
        this.invalid.push(`${kind}: not JSON: ${text.slice(0, 300)}`);
        return;
      }
      const parsed = schema?.safeParse(json);
      if (!parsed?.success) {
        this.invalid.push(`${kind}: ${text.slice(0, 300)} ${parsed?.error.message ?? "no schema"}`);
        return;
      }
      const payload = json as Record<string, unknown>;
      this.received.push({ kind, payload, retain: packet.retain });
      if (kind === "report" && this.autoAck) this.ack(payload.seq as number);
    });
    this.#client = client;
    await until("the control plane's connection", () => client.connected, 10_000);
    // Subscribed before it returns; MQTT.js subscribes again after a reconnect.
    await client.subscribeAsync(`${hostTopic(this.host, "status").slice(0, -"status".length)}+`, { qos: 1 });
  }

  /** Connected and subscribed again (after a broker restart). */
  async reconnected(): Promise<void> {
    const client = this.#client;
    if (!client) throw new Error("not connected");
    await until("the control plane's reconnection", () => client.connected, 20_000);
    await client.subscribeAsync(`${hostTopic(this.host, "status").slice(0, -"status".length)}+`, { qos: 1 });
  }

  of(kind: string): Array<Record<string, unknown>> {
    return this.received.filter((r) => r.kind === kind).map((r) => r.payload);
  }

  /** Reports, first copy of each runId, in arrival order. */
  reports(): Array<Record<string, unknown>> {
    const seen = new Set<string>();
    return this.of("report").filter((r) => {
      const id = r.runId as string;
      if (seen.has(id)) return false;
      seen.add(id);
      return true;
    });
  }

  ack(upTo: number): void {
    this.#client?.publish(hostTopic(this.host, "ack"), JSON.stringify({ v: 1, host: this.host, upTo }), { qos: 1 });
  }

  command(cmd: "converge" | "refresh"): void {
    this.#client?.publish(hostTopic(this.host, "cmd"), JSON.stringify({ v: 1, host: this.host, cmd }), { qos: 1 });
  }

  fleetRefresh(): void {
    this.#client?.publish(FLEET_CMD_TOPIC, JSON.stringify({ v: 1, cmd: "refresh" }), { qos: 1 });
  }

  raw(topic: string, text: string, retain = false): void {
    this.#client?.publish(topic, text, { qos: 1, retain });
  }

  /** Clears what this host left retained on the broker (the system Mosquitto outlives the test). */
  async clearRetained(): Promise<void> {
    const client = this.#client;
    if (!client?.connected) return;
    for (const kind of ["status", "facts"] as const)
      await client.publishAsync(hostTopic(this.host, kind), "", { qos: 1, retain: true });
  }

  async publishRetained(topic: string, text: string): Promise<void> {
    await this.#client?.publishAsync(topic, text, { qos: 1, retain: true });
  }

  async clearRetainedOn(topic: string): Promise<void> {
    await this.#client?.publishAsync(topic, "", { qos: 1, retain: true });
  }

  async close(): Promise<void> {
    await this.#client?.endAsync(true);
    this.#client = undefined;
  }
}

/** A running `driftless agent`, its JSON log read line by line. */
export class AgentDaemon {
  readonly child: ChildProcess;
  readonly lines: Array<Record<string, unknown>> = [];
  readonly raw: string[] = [];
  exited = false;
  readonly done: Promise<void>;

  constructor(config: string, root: string) {
    const env: Record<string, string> = {};
    for (const [k, v] of Object.entries(process.env)) if (v !== undefined && !k.startsWith("DRIFTLESS_")) env[k] = v;
    this.child = spawn(process.execPath, [CLI, "agent", "--config", config, "--root", root, "--log-format", "json"], {
      env,
      stdio: ["ignore", "ignore", "pipe"],
      detached: true,
    });
    createInterface({ input: this.child.stderr as NodeJS.ReadableStream }).on("line", (line) => {
      this.raw.push(line);
      try {
        this.lines.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        // kept in raw
      }
    });
    this.done = new Promise((resolve) =>
      this.child.on("close", () => {
        this.exited = true;
        resolve();
      }),
    );
  }

  count(msg: string): number {
    return this.lines.filter((l) => l.msg === msg).length;
  }

  /** Waits until `msg` has been logged `n` times. */
  async waitCount(msg: string, n: number, timeoutMs = 30_000): Promise<void> {
    await until(`${n} × "${msg}" in the agent's log:\n${this.raw.join("\n")}`, () => this.count(msg) >= n, timeoutMs);
  }

  /** SIGHUP (a run now), then waits for it to finish. */
  async runOnce(timeoutMs = 30_000): Promise<void> {
    const before = this.count("run finished") + this.count("run could not start");
    this.child.kill("SIGHUP");
    await until(
      `a run after SIGHUP:\n${this.raw.join("\n")}`,
      () => this.count("run finished") + this.count("run could not start") > before,
      timeoutMs,
    );
  }

  async terminate(): Promise<void> {
    this.child.kill("SIGTERM");
    await Promise.race([this.done, sleep(15_000)]);
  }

  async kill(): Promise<void> {
    try {
      process.kill(-(this.child.pid as number), "SIGKILL");
    } catch {
      // gone
    }
    await Promise.race([this.done, sleep(5_000)]);
  }
}

export interface AgentSetup {
  host: string;
  dir: string;
  config: string;
  root: string;
  stateDir: string;
  /** Rewrites agent.yaml with another broker section (SIGHUP, or the next run, reads it). */
  writeConfig(brokerUrl: string, extra?: string): void;
}

/** A directory source with one small file profile, and agent.yaml naming `brokerUrl`. */
export function agentSetup(brokerUrl: string, extra = ""): AgentSetup {
  const dir = tempDir("driftless-report-");
  const repo = makeRepo({
    "fleet.yaml": fleet("  - match: {}\n    profiles: [base]\n"),
    "base.yaml": profile("base", 'files:\n  - { path: /etc/app/a.conf, content: "a=1\\n" }\n'),
  });
  const host = `rep-${Math.random().toString(16).slice(2, 10)}`;
  const config = path.join(dir, "agent.yaml");
  const stateDir = path.join(dir, "state");
  const writeConfig = (url: string, more = extra) =>
    writeFileSync(
      config,
      [
        "apiVersion: driftless/v1",
        "kind: AgentConfig",
        `host: ${host}`,
        `stateDir: ${stateDir}`,
        "labels: { role: test }",
        "source:",
        `  url: ${repo}`,
        "  interval: 1h",
        "  splay: 0s",
        "broker:",
        `  url: ${url}`,
        more,
        "",
      ].join("\n"),
    );
  writeConfig(brokerUrl);
  return { host, dir, config, root: path.join(dir, "root"), stateDir, writeConfig };
}

/** The seqs and kinds waiting in a state directory's outbox. */
export function outboxOf(stateDir: string): Array<{ seq: number; kind: string }> {
  const file = path.join(stateDir, "state.db");
  if (!existsSync(file)) return [];
  const db = new Database(file, { readonly: true });
  try {
    return db.prepare("SELECT seq, kind FROM outbox ORDER BY seq").all() as Array<{ seq: number; kind: string }>;
  } finally {
    db.close();
  }
}
