/**
 * `driftlessctl serve`: wires the store, the broker (embedded Aedes or an external one), the
 * ingest, and the HTTP part (given as `createHttp`, see ServeContext).
 *
 * A running serve with the embedded broker notices credentials removed by `driftlessctl hosts
 * remove` (another process on the same data directory or database) by reading the credential
 * table every `credentialPollMs`, and closes those hosts' connections; their reconnect is refused
 * at once, as every connect reads the store. Replicas on one PostgreSQL database each read it, so
 * a removal reaches every one of them.
 */
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import * as path from "node:path";
import type { Logger } from "../../agent/src/log.js";
import type { FleetCommandPayload, HostCommandPayload } from "../../protocol/schema.js";
import { FLEET_CMD_TOPIC, hostTopic, PROTOCOL_VERSION } from "../../protocol/topics.js";
import { EmbeddedBroker, type RefusalReason } from "./broker/embedded.js";
import { ExternalBroker } from "./broker/external.js";
import type { FleetBroker } from "./broker/types.js";
import { FleetError } from "./errors.js";
import { createFleetEvents, type FleetEvents } from "./events/events.js";
import { createIngest, type IngestStats } from "./ingest/ingest.js";
import { openFleetStore } from "./store/open.js";
import type { FleetStore } from "./store/types.js";

export interface HostPort {
  host: string;
  port: number;
}

export interface ExternalBrokerSettings {
  url: string;
  username?: string;
  passwordFile?: string;
  caFile?: string;
  shared: boolean;
  /** This replica's name: its MQTT client id is `driftlessctl-ID` (default: DATA/broker-client-id). */
  replicaId?: string;
}

export interface ServeOptions {
  dataDir: string;
  http: HostPort;
  /** The embedded broker's address (ignored with `broker`). */
  mqtt: HostPort;
  broker?: ExternalBrokerSettings;
  /** `sqlite:PATH` or `postgres://...` (`postgresql://`); absent: DATA/fleet.db. */
  database?: string;
  /** Where `database` came from, for messages (default `--database`). */
  databaseOrigin?: string;
  apiTokenFile?: string;
  webhookSecretFile?: string;
  /** How often removed credentials are looked for (default 2 s). */
  credentialPollMs?: number;
}

/** Everything the HTTP part needs from a running serve. */
export interface ServeContext {
  store: FleetStore;
  broker: FleetBroker;
  /** The ingest's counters (read at each scrape of /metrics). */
  ingestStats: IngestStats;
  /** What the ingest stored, as it happens (the dashboard's live updates). */
  events: FleetEvents;
  /** What the embedded broker refused, by reason; null with an external broker. */
  brokerRefused: Readonly<Record<RefusalReason, number>> | null;
  /** Publishes a command on a host's cmd topic, or (host null) on fleet/cmd; QoS 1. */
  publishCommand(host: string | null, command: ServeCommand): Promise<void>;
  dataDir: string;
  apiToken: string;
  webhookSecret: string | null;
  log: Logger;
  now: () => Date;
}

export type ServeCommand =
  | Omit<HostCommandPayload, "v" | "host">
  | (Omit<FleetCommandPayload, "v" | "cmd"> & { cmd: "refresh" });

/** Starts the HTTP part on `address`; resolves with what serve prints. */
export type HttpStarter = (
  context: ServeContext,
  address: HostPort,
) => Promise<{ url: string; loginUrl: string; close(): Promise<void> }>;

export interface RunningServe {
  context: ServeContext;
  /** The embedded broker's port (null with an external broker). */
  mqttPort: number | null;
  httpUrl: string | null;
  loginUrl: string | null;
  close(): Promise<void>;
}

export interface ServeDeps {
  log: Logger;
  now: () => Date;
  /** Lines for the operator (the dashboard URL). */
  print: (line: string) => void;
  createHttp?: HttpStarter;
}

export async function startServe(options: ServeOptions, deps: ServeDeps): Promise<RunningServe> {
  const { log, now } = deps;
  fs.mkdirSync(options.dataDir, { recursive: true, mode: 0o700 });
  const apiToken = options.apiTokenFile
    ? readSecret(options.apiTokenFile, "--api-token-file")
    : dataToken(options.dataDir);
  const webhookSecret = options.webhookSecretFile
    ? readSecret(options.webhookSecretFile, "--webhook-secret-file")
    : null;
  const store = await openFleetStore(options.database, options.dataDir, options.databaseOrigin);
  const closers: Array<() => Promise<void>> = [() => store.close()];
  const close = async () => {
    for (const closer of closers.splice(0).reverse()) {
      try {
        await closer();
      } catch (error) {
        log.warn("error while stopping", { error: (error as Error).message });
      }
    }
  };
  try {
    let broker: FleetBroker;
    let embedded: EmbeddedBroker | null = null;
    if (options.broker) {
      const settings = options.broker;
      broker = new ExternalBroker({
        url: settings.url,
        clientId: settings.replicaId ? `driftlessctl-${settings.replicaId}` : brokerClientId(options.dataDir),
        ...(settings.username !== undefined ? { username: settings.username } : {}),
        ...(settings.passwordFile ? { password: readSecret(settings.passwordFile, "--broker-password-file") } : {}),
        ...(settings.caFile ? { ca: readFile(settings.caFile, "--broker-ca") } : {}),
        shared: settings.shared,
        log,
      });
    } else {
      embedded = new EmbeddedBroker({
        host: options.mqtt.host,
        port: options.mqtt.port,
        credentials: store,
        log,
        now: () => now().getTime(),
      });
      broker = embedded;
    }
    const events = createFleetEvents();
    const ingest = createIngest({ store, broker, log, now, events });
    broker.onMessage(ingest.handle);
    await broker.start();
    closers.push(async () => {
      await broker.close();
      await ingest.idle();
    });
    if (embedded) {
      log.info("MQTT broker listening", { address: `${options.mqtt.host}:${embedded.port}` });
      closers.push(watchCredentials(store, embedded, log, options.credentialPollMs ?? 2000));
    }

    const context: ServeContext = {
      store,
      broker,
      ingestStats: ingest.stats,
      events,
      brokerRefused: embedded ? embedded.refused : null,
      publishCommand: (host, command) => publishCommand(broker, host, command),
      dataDir: options.dataDir,
      apiToken,
      webhookSecret,
      log,
      now,
    };
    let httpUrl: string | null = null;
    let loginUrl: string | null = null;
    if (deps.createHttp) {
      const http = await deps.createHttp(context, options.http);
      closers.push(() => http.close());
      httpUrl = http.url;
      loginUrl = http.loginUrl;
      deps.print(`Driftless control plane: ${http.url}`);
      deps.print(`Open the dashboard (one-time login): ${http.loginUrl}`);
    }
    return { context, mqttPort: embedded ? embedded.port : null, httpUrl, loginUrl, close };
  } catch (error) {
    await close();
    throw error;
  }
}

async function publishCommand(broker: FleetBroker, host: string | null, command: ServeCommand): Promise<void> {
  if (host === null) {
    await broker.publish(FLEET_CMD_TOPIC, JSON.stringify({ v: PROTOCOL_VERSION, ...command }), { qos: 1 });
  } else {
    await broker.publish(hostTopic(host, "cmd"), JSON.stringify({ v: PROTOCOL_VERSION, host, ...command }), {
      qos: 1,
    });
  }
}

/** Closes the connections of hosts whose credentials were removed; returns the stopper. */
function watchCredentials(
  store: FleetStore,
  broker: EmbeddedBroker,
  log: Logger,
  everyMs: number,
): () => Promise<void> {
  let running: Promise<void> = Promise.resolve();
  const check = async () => {
    const connected = broker.connectedHosts();
    if (connected.length === 0) return;
    const allowed = new Set(await store.listCredentials());
    for (const host of connected) {
      if (allowed.has(host)) continue;
      log.info("credentials removed: disconnecting", { host });
      await broker.disconnect(host);
    }
  };
  const timer = setInterval(() => {
    running = running
      .then(check)
      .catch((error: Error) => log.warn("credential check failed", { error: error.message }));
  }, everyMs);
  timer.unref();
  return async () => {
    clearInterval(timer);
    await running;
  };
}

/** DATA/api-token: read, or made (random, mode 0600) the first time. */
function dataToken(dataDir: string): string {
  const file = path.join(dataDir, "api-token");
  if (fs.existsSync(file)) return readSecret(file, "api-token");
  const token = randomBytes(32).toString("base64url");
  fs.writeFileSync(file, `${token}\n`, { mode: 0o600, flag: "wx" });
  return token;
}

/** DATA/broker-client-id: the external broker's session is this control plane's across restarts. */
function brokerClientId(dataDir: string): string {
  const file = path.join(dataDir, "broker-client-id");
  try {
    return fs.readFileSync(file, "utf8").trim();
  } catch {
    const id = `driftlessctl-${randomBytes(6).toString("hex")}`;
    fs.writeFileSync(file, `${id}\n`, { mode: 0o600 });
    return id;
  }
}

function readFile(file: string, flag: string): Buffer {
  try {
    return fs.readFileSync(file);
  } catch (error) {
    throw new FleetError(`${flag} ${file}: ${(error as Error).message}`, { code: "ECONFIG", cause: error });
  }
}

/** A secret file's first line, which must not be empty. */
function readSecret(file: string, flag: string): string {
  const value = readFile(file, flag).toString("utf8").split("\n")[0]?.trim() ?? "";
  if (!value) throw new FleetError(`${flag} ${file}: the file is empty`, { code: "ECONFIG" });
  return value;
}
