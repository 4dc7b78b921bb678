/**
 * The whole fleet on real parts: `driftlessctl serve` as users run it (the built
 * bin/driftlessctl.js, a child process that a test can SIGKILL and start again on the same data
 * directory and ports), host credentials from `driftlessctl hosts add`, agent configurations for
 * real `driftless agent` daemons (support/reporting.ts), the HTTP API polled with deadlines, and a
 * TCP proxy whose connections a test can cut.
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import * as net from "node:net";
import * as path from "node:path";
import { waitFor } from "./mqtt.js";
import { acceptsConnections, freePort } from "./ports.js";
import { tempDir } from "./repo.js";

export const CTL = path.resolve("bin/driftlessctl.js");

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `check` (sync or async) until it returns something other than undefined/false. */
export function eventually<T>(
  what: string | (() => string),
  check: () => Promise<T | undefined | false> | T | undefined | false,
  timeoutMs = 30_000,
): Promise<T> {
  return waitFor(what, check, timeoutMs);
}

export function ctl(args: string[], env: Record<string, string> = {}) {
  const result = spawnSync(process.execPath, [CTL, ...args], {
    encoding: "utf8",
    env: { ...process.env, NO_COLOR: "1", ...env },
  });
  return { exitCode: result.status ?? -1, stdout: result.stdout, stderr: result.stderr };
}

/** `driftlessctl hosts add NAME --json`: the host's password. */
export function addHost(data: string, host: string): string {
  const result = ctl(["hosts", "add", host, "--data", data, "--json"]);
  if (result.exitCode !== 0) throw new Error(`hosts add ${host}: ${result.stderr}`);
  return (JSON.parse(result.stdout) as { password: string }).password;
}

export interface ServeSettings {
  data: string;
  httpPort: number;
  /** The embedded broker's port (ignored with `broker`). */
  mqttPort: number;
  /** An external broker: `--broker URL --broker-username U --broker-password-file F`. */
  broker?: { url: string; username: string; passwordFile: string };
  webhookSecretFile?: string;
}

/** A `driftlessctl serve` child process. */
export class ServeProcess {
  readonly settings: ServeSettings;
  child: ChildProcess | undefined;
  output = "";

  constructor(settings: ServeSettings) {
    this.settings = settings;
  }

  /** A data directory and free ports; not started. */
  static async create(options: Partial<ServeSettings> = {}): Promise<ServeProcess> {
    return new ServeProcess({
      data: options.data ?? path.join(tempDir("driftless-fleet-"), "data"),
      httpPort: options.httpPort ?? (await freePort()),
      mqttPort: options.mqttPort ?? (await freePort()),
      ...(options.broker ? { broker: options.broker } : {}),
      ...(options.webhookSecretFile ? { webhookSecretFile: options.webhookSecretFile } : {}),
    });
  }

  get url(): string {
    return `http://127.0.0.1:${this.settings.httpPort}`;
  }

  get mqttUrl(): string {
    return this.settings.broker?.url ?? `mqtt://127.0.0.1:${this.settings.mqttPort}`;
  }

  get tokenFile(): string {
    return path.join(this.settings.data, "api-token");
  }

  get running(): boolean {
    return this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null;
  }

  async start(): Promise<void> {
    const s = this.settings;
    const args = [CTL, "serve", "--data", s.data, "--http", `127.0.0.1:${s.httpPort}`];
    if (s.broker)
      args.push(
        "--broker",
        s.broker.url,
        "--broker-username",
        s.broker.username,
        "--broker-password-file",
        s.broker.passwordFile,
      );
    else args.push("--mqtt", `127.0.0.1:${s.mqttPort}`);
    if (s.webhookSecretFile) args.push("--webhook-secret-file", s.webhookSecretFile);
    const child = spawn(process.execPath, args, { stdio: ["ignore", "pipe", "pipe"], env: { ...process.env } });
    this.child = child;
    const mark = this.output.length;
    const append = (chunk: Buffer) => {
      this.output += chunk.toString("utf8");
    };
    child.stdout?.on("data", append);
    child.stderr?.on("data", append);
    await eventually(
      () => `serve to print its URL:\n${this.output.slice(mark)}`,
      () => {
        if (child.exitCode !== null) throw new Error(`serve exited ${child.exitCode}: ${this.output.slice(mark)}`);
        return this.output.slice(mark).includes("Driftless control plane:");
      },
      30_000,
    );
  }

  /** SIGKILL: nothing closed, nothing flushed. */
  async kill(): Promise<void> {
    await this.#signal("SIGKILL");
  }

  async stop(): Promise<void> {
    await this.#signal("SIGTERM");
  }

  async #signal(signal: NodeJS.Signals): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((resolve) => child.once("exit", resolve));
    child.kill(signal);
    await Promise.race([exited, sleep(15_000)]);
    if (child.exitCode === null && child.signalCode === null) {
      child.kill("SIGKILL");
      await exited;
    }
  }

  /** GET (or POST) on the API with the bearer token; the JSON answer, or throws on an HTTP error. */
  async api<T = Record<string, unknown>>(route: string, method: "GET" | "POST" = "GET"): Promise<T> {
    const token = readFileSync(this.tokenFile, "utf8").trim();
    const request = () =>
      fetch(`${this.url}/api/v1/${route}`, { method, headers: { authorization: `Bearer ${token}` } });
    // A kept-alive connection that serve closes as the next GET goes out fails that GET (the
    // client drops idle connections 2 s before serve does, later on a loaded machine): it is
    // sent again once, as browsers do with an idempotent request.
    const response = await request().catch((error: unknown) => {
      const code = (error as { cause?: { code?: string } }).cause?.code;
      if (method === "GET" && code === "UND_ERR_SOCKET") return request();
      throw error;
    });
    const text = await response.text();
    if (!response.ok) throw new Error(`${method} ${route}: ${response.status} ${text}`);
    return JSON.parse(text) as T;
  }

  /** The host's stored runs, oldest first (seq order). */
  async runs(host: string): Promise<Array<{ runId: string; seq: number; commit: string | null; kind: string }>> {
    const answer = await this.api<{ runs: Array<{ runId: string; seq: number; commit: string | null; kind: string }> }>(
      `hosts/${host}/runs?limit=500`,
    );
    return answer.runs.slice().reverse();
  }

  /** The fleet CLI against this serve. */
  cli(args: string[]) {
    return ctl([...args, "--url", this.url, "--token-file", this.tokenFile]);
  }
}

export interface FleetAgentSetup {
  host: string;
  config: string;
  root: string;
  stateDir: string;
}

/**
 * agent.yaml for host `host` (credentials from `hosts add`, or a broker's password file),
 * following `source` (a directory or a Git URL), files only under its own --root.
 */
export function fleetAgent(options: {
  host: string;
  password: string;
  brokerUrl: string;
  source: string;
  splay?: string;
  labels?: Record<string, string>;
  mode?: "enforce" | "report";
}): FleetAgentSetup {
  const dir = tempDir("driftless-fleet-agent-");
  const config = path.join(dir, "agent.yaml");
  const stateDir = path.join(dir, "state");
  const passwordFile = path.join(dir, "mqtt-password");
  writeFileSync(passwordFile, `${options.password}\n`, { mode: 0o600 });
  const labels = Object.entries(options.labels ?? {})
    .map(([k, v]) => `${k}: ${v}`)
    .join(", ");
  writeFileSync(
    config,
    [
      "apiVersion: driftless/v1",
      "kind: AgentConfig",
      `host: ${options.host}`,
      ...(labels ? [`labels: { ${labels} }`] : []),
      `mode: ${options.mode ?? "enforce"}`,
      `stateDir: ${stateDir}`,
      "source:",
      `  url: ${options.source}`,
      "  interval: 1h",
      `  splay: ${options.splay ?? "0s"}`,
      "broker:",
      `  url: ${options.brokerUrl}`,
      `  passwordFile: ${passwordFile}`,
      "",
    ].join("\n"),
  );
  return { host: options.host, config, root: path.join(dir, "root"), stateDir };
}

/**
 * A TCP proxy on 127.0.0.1 to `target`. `cut()` destroys every connection through it, both
 * sides at once, as a network failure the broker sees (its end closes: the will is published).
 */
export class CuttableProxy {
  readonly target: number;
  port = 0;
  #server: net.Server | undefined;
  readonly #pairs = new Set<[net.Socket, net.Socket]>();

  constructor(target: number) {
    this.target = target;
  }

  get connections(): number {
    return this.#pairs.size;
  }

  async start(): Promise<void> {
    const server = net.createServer((inbound) => {
      const outbound = net.connect(this.target, "127.0.0.1");
      const pair: [net.Socket, net.Socket] = [inbound, outbound];
      this.#pairs.add(pair);
      const close = () => {
        inbound.destroy();
        outbound.destroy();
        this.#pairs.delete(pair);
      };
      inbound.on("error", close).on("close", close);
      outbound.on("error", close).on("close", close);
      inbound.pipe(outbound);
      outbound.pipe(inbound);
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(0, "127.0.0.1", () => resolve());
    });
    this.port = (server.address() as net.AddressInfo).port;
    this.#server = server;
  }

  cut(): void {
    for (const [a, b] of this.#pairs) {
      a.destroy();
      b.destroy();
    }
    this.#pairs.clear();
  }

  async close(): Promise<void> {
    this.cut();
    const server = this.#server;
    this.#server = undefined;
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}

/**
 * A real Mosquitto that a test stops and starts again on the same port, with the shipped ACL
 * (docs/mosquitto/driftless.acl), a password file made by mosquitto_passwd, and persistence on
 * as in docs/mosquitto/driftless.conf (the control plane's session survives a restart).
 */
export class RestartableMosquitto {
  readonly dir = tempDir("driftless-mosquitto-");
  port = 0;
  #child: ChildProcess | undefined;
  #stderr = "";

  get url(): string {
    return `mqtt://127.0.0.1:${this.port}`;
  }

  /**
   * A started Mosquitto that knows the control plane (user `driftlessctl`, its password in the
   * returned `passwordFile`) and one host; stopped by the caller's cleanups.
   */
  static async forFleet(
    host: string,
    password: string,
    cleanups: Array<() => Promise<void>>,
  ): Promise<{ mosquitto: RestartableMosquitto; passwordFile: string }> {
    const mosquitto = new RestartableMosquitto();
    mosquitto.user("driftlessctl", "cp-password");
    mosquitto.user(host, password);
    await mosquitto.start();
    cleanups.push(() => mosquitto.stop());
    const passwordFile = path.join(tempDir("driftless-cp-"), "mqtt-password");
    writeFileSync(passwordFile, "cp-password\n");
    return { mosquitto, passwordFile };
  }

  /** Adds (or sets) a user's password; takes effect at the next start. */
  user(name: string, password: string): void {
    const file = path.join(this.dir, "passwd");
    const fresh = spawnSync("test", ["-e", file]).status !== 0;
    const r = spawnSync("mosquitto_passwd", [...(fresh ? ["-c"] : []), "-b", file, name, password]);
    if (r.status !== 0) throw new Error(`mosquitto_passwd ${name}: ${r.stderr}`);
  }

  async start(): Promise<void> {
    if (this.port === 0) this.port = await freePort();
    const conf = path.join(this.dir, "mosquitto.conf");
    writeFileSync(
      conf,
      [
        "per_listener_settings false",
        "allow_anonymous false",
        `password_file ${path.join(this.dir, "passwd")}`,
        `acl_file ${path.resolve("docs/mosquitto/driftless.acl")}`,
        `listener ${this.port} 127.0.0.1`,
        "persistence true",
        `persistence_location ${this.dir}/`,
        "max_queued_messages 100000",
        "user root",
        "log_dest stderr",
        "log_type error",
        "log_type warning",
        "",
      ].join("\n"),
    );
    const child = spawn("/usr/sbin/mosquitto", ["-c", conf], { stdio: ["ignore", "ignore", "pipe"] });
    this.#child = child;
    child.stderr?.on("data", (chunk: Buffer) => {
      this.#stderr += chunk.toString("utf8");
    });
    await eventually(
      () => `mosquitto on ${this.port}: ${this.#stderr}`,
      async () => {
        if (child.exitCode !== null) throw new Error(`mosquitto exited: ${this.#stderr}`);
        return acceptsConnections(this.port);
      },
      10_000,
    );
  }

  /** SIGTERM (Mosquitto saves its persistence file), and waits for the exit. */
  async stop(): Promise<void> {
    const child = this.#child;
    this.#child = undefined;
    if (!child || child.exitCode !== null) return;
    const exited = new Promise((resolve) => child.once("exit", resolve));
    child.kill("SIGTERM");
    await exited;
  }
}
