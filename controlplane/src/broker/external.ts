/**
 * An external broker (Mosquitto, EMQX, HiveMQ): the control plane is one MQTT.js client with its
 * own credentials. It subscribes to the four topics agents publish on, QoS 1, with a stable
 * client id.
 *
 * Alone (`shared` off), it keeps a persistent session: what hosts publish while the control
 * plane restarts waits in the broker.
 *
 * As one of several replicas (`shared`), reports and heartbeats go through shared subscriptions
 * (`$share/driftlessctl/...`): each is delivered to one replica. Status and facts stay plain
 * subscriptions: every replica receives every one, and the retained ones when it starts (a
 * broker sends no retained message to a shared subscription); the store applies them so that
 * copies and orders make no difference (store/logic.ts, statusApplies). The session is clean:
 * Mosquitto 2.0.11 (Debian 12) does not restore the `$share` subscriptions of a persistent
 * session, and a replica's crash loses nothing anyway, since an agent sends again every report
 * the control plane has not acknowledged.
 *
 * The broker authenticates hosts and its ACL makes the topic's id the sender's username
 * (Mosquitto: `pattern write driftless/v1/hosts/%u/...`, docs/mosquitto/); the sender is not
 * known from a message, so the ingest checks that the topic's id and the payload's host agree.
 * Revoking a host is done in the broker's password file: `disconnect` cannot close a
 * connection it does not own, it only logs.
 */
import mqtt, { type IClientOptions, type MqttClient } from "mqtt";
import type { Logger } from "../../../agent/src/log.js";
import { SHARED_GROUP, TOPIC_ROOT } from "../../../protocol/topics.js";
import { FleetError } from "../errors.js";
import type { FleetBroker, InboundMessage } from "./types.js";

export interface ExternalBrokerOptions {
  /** mqtt://, mqtts://, ws:// or wss:// URL; user:password in it are used when no username is given. */
  url: string;
  clientId: string;
  username?: string;
  password?: string;
  /** PEM CA bundle for mqtts:// (else the system's). */
  ca?: Buffer;
  /** Share the ingest with other replicas (`$share/driftlessctl/`). */
  shared: boolean;
  log: Logger;
  /** Time allowed for the first connection (default 30 s). */
  connectTimeoutMs?: number;
}

/**
 * The broker URL without its credentials as MQTT.js options: what MQTT.js's own parsing of the
 * string made (protocol, host, port; the path and query for ws:// and wss://), without it, since
 * it calls `url.parse()`, which Node 24 (the driftlessctl binary's) marks deprecated (DEP0169:
 * a warning in serve's log).
 */
export function externalBrokerAddress(url: string): IClientOptions {
  const parsed = new URL(url);
  const protocol = parsed.protocol.replace(/:$/, "") as NonNullable<IClientOptions["protocol"]>;
  const hostname = parsed.hostname.replace(/^\[(.*)\]$/, "$1"); // [::1] to ::1, as net.connect wants
  return {
    protocol,
    host: hostname,
    hostname,
    ...(parsed.port ? { port: Number(parsed.port) } : {}),
    ...(protocol === "ws" || protocol === "wss" ? { path: `${parsed.pathname}${parsed.search}` } : {}),
  };
}

/** The topics of the ingest: what agents publish (acks and commands are not read back). */
export function ingestFilters(shared: boolean): string[] {
  return ["status", "heartbeat", "report", "facts"].map((kind) => {
    const filter = `${TOPIC_ROOT}/hosts/+/${kind}`;
    return shared && (kind === "report" || kind === "heartbeat") ? `$share/${SHARED_GROUP}/${filter}` : filter;
  });
}

export class ExternalBroker implements FleetBroker {
  readonly #options: ExternalBrokerOptions;
  readonly #handlers: Array<(message: InboundMessage) => void> = [];
  #client: MqttClient | null = null;

  constructor(options: ExternalBrokerOptions) {
    this.#options = options;
  }

  onMessage(handler: (message: InboundMessage) => void): void {
    this.#handlers.push(handler);
  }

  async start(): Promise<void> {
    const { url, log } = this.#options;
    const parsed = new URL(url);
    const options: IClientOptions = {
      ...externalBrokerAddress(url),
      clientId: this.#options.clientId,
      protocolVersion: 4,
      clean: this.#options.shared,
      reconnectPeriod: 2000,
      connectTimeout: this.#options.connectTimeoutMs ?? 30_000,
      resubscribe: true,
    };
    const username = this.#options.username ?? (parsed.username ? decodeURIComponent(parsed.username) : undefined);
    const password = this.#options.password ?? (parsed.password ? decodeURIComponent(parsed.password) : undefined);
    if (username !== undefined) options.username = username;
    if (password !== undefined) options.password = password;
    if (this.#options.ca) options.ca = this.#options.ca;
    parsed.username = "";
    parsed.password = "";
    const client = mqtt.connect(options);
    client.on("message", (topic, payload, packet) => {
      const message: InboundMessage = { topic, payload, sender: null, retained: packet.retain };
      for (const handler of this.#handlers) handler(message);
    });
    client.on("reconnect", () => log.info("reconnecting to the broker", { url: parsed.toString() }));
    client.on("offline", () => log.warn("broker unreachable", { url: parsed.toString() }));
    try {
      await new Promise<void>((resolve, reject) => {
        client.once("connect", () => resolve());
        client.once("error", reject);
        client.once("close", () => reject(new Error("connection closed")));
      });
      const granted = await client.subscribeAsync(ingestFilters(this.#options.shared), { qos: 1 });
      const refused = granted.filter((g) => g.qos === 128).map((g) => g.topic);
      if (refused.length > 0) throw new Error(`subscription refused by the broker's ACL: ${refused.join(", ")}`);
    } catch (error) {
      client.end(true);
      throw new FleetError(`cannot use the broker ${parsed.toString()}: ${(error as Error).message}`, {
        code: "EBROKER",
        retryable: true,
        cause: error,
      });
    }
    client.on("error", (error) => log.warn("broker error", { error: error.message }));
    client.on("connect", () => log.info("connected to the broker", { url: parsed.toString() }));
    this.#client = client;
    log.info("connected to the broker", { url: parsed.toString(), shared: this.#options.shared });
  }

  async publish(topic: string, payload: string, options: { qos: 0 | 1; retain?: boolean }): Promise<void> {
    const client = this.#client;
    if (!client) throw new FleetError("the broker is not started", { code: "EBROKER" });
    await client.publishAsync(topic, payload, { qos: options.qos, retain: options.retain ?? false });
  }

  async disconnect(host: string): Promise<void> {
    this.#options.log.warn("with an external broker, revoke the host in the broker's password file too", { host });
  }

  async close(): Promise<void> {
    const client = this.#client;
    this.#client = null;
    if (client) await client.endAsync();
  }
}
