/**
 * The embedded broker: Aedes 1.x in this process, on a TCP port (`--mqtt HOST:PORT`).
 *
 * Every client is a host: its username is its client id and its id, its password is checked
 * against the scrypt hash in the store (a verified password is remembered for a while, so a
 * reconnect storm costs one hash per host). A host may publish only on its own
 * `driftless/v1/hosts/{id}/(status|heartbeat|report|facts)`, leave a will only on its own status
 * topic, and subscribe only to its own `cmd` and `ack` and to `driftless/v1/fleet/cmd`; only the
 * control plane publishes commands and acks (in-process, no socket). What hosts publish reaches
 * the ingest in-process too. A packet larger than the payload limit (plus room for its topic)
 * closes the connection before it is read whole.
 *
 * Sessions and retained messages are in memory: after a restart hosts reconnect, and their
 * outbox sends again whatever the control plane had not acknowledged.
 */
import { createHash } from "node:crypto";
import * as net from "node:net";
import { Aedes, type AuthenticateError, type Client } from "aedes";
import type { Logger } from "../../../agent/src/log.js";
import { FLEET_CMD_TOPIC, HOST_ID_PATTERN, hostTopic, MAX_PAYLOAD_BYTES } from "../../../protocol/topics.js";
import { verifyPassword } from "../auth/password.js";
import { FleetError } from "../errors.js";
import type { FleetBroker, InboundMessage } from "./types.js";

/** Why the broker refused something; counted in `EmbeddedBroker.refused`. */
export type RefusalReason = "auth" | "will" | "publish" | "subscribe" | "size";

const UP_KINDS = ["status", "heartbeat", "report", "facts"] as const;
/** Room for the topic and the packet's headers above the payload limit. */
const PACKET_SLACK_BYTES = 64 * 1024;

export interface EmbeddedBrokerOptions {
  host: string;
  /** 0: any free port (see `port` once started). */
  port: number;
  credentials: { credentialHash(host: string): Promise<string | null> };
  log: Logger;
  /** Milliseconds since the epoch (the wall clock in production). */
  now: () => number;
  /** How long a verified password is trusted without hashing it again (default 5 minutes). */
  authCacheMs?: number;
  /** Largest MQTT packet accepted (default MAX_PAYLOAD_BYTES + 64 KiB). */
  maxPacketBytes?: number;
}

export class EmbeddedBroker implements FleetBroker {
  readonly refused: Record<RefusalReason, number> = { auth: 0, will: 0, publish: 0, subscribe: 0, size: 0 };
  readonly #options: EmbeddedBrokerOptions;
  readonly #handlers: Array<(message: InboundMessage) => void> = [];
  readonly #clients = new Map<string, Client>();
  readonly #wills = new WeakMap<Client, { topic: string } | null>();
  readonly #revoked = new WeakSet<Client>();
  readonly #authCache = new Map<string, { hash: string; digest: string; until: number }>();
  #aedes: Aedes | null = null;
  #server: net.Server | null = null;
  #port = 0;
  #closing = false;

  constructor(options: EmbeddedBrokerOptions) {
    this.#options = options;
  }

  /** The port it listens on, once started. */
  get port(): number {
    return this.#port;
  }

  /** Hosts connected now. */
  get connections(): number {
    return this.#clients.size;
  }

  connectedHosts(): string[] {
    return [...this.#clients.keys()];
  }

  onMessage(handler: (message: InboundMessage) => void): void {
    this.#handlers.push(handler);
  }

  async start(): Promise<void> {
    const aedes = new Aedes({
      preConnect: (client, packet, callback) => {
        this.#wills.set(client, packet.will ? { topic: packet.will.topic } : null);
        callback(null, true);
      },
      authenticate: (client, username, password, callback) => {
        this.#authenticate(client, username, password).then(
          (error) => callback(error, error === null),
          (error: Error) => {
            this.#options.log.error("authentication failed", { host: client.id, error: error.message });
            callback(authError(3, "server unavailable"), false);
          },
        );
      },
      authorizePublish: (client, packet, callback) => {
        if (client === null) return callback(null); // the control plane itself
        if (this.#revoked.has(client)) return callback(new Error("credentials revoked"));
        if (this.#closing) return callback(new Error("the control plane is stopping"));
        if (!mayPublish(client.id, packet.topic)) {
          this.refused.publish++;
          this.#options.log.warn("publish refused", { host: client.id, topic: packet.topic });
          return callback(new Error(`not authorized to publish on ${packet.topic}`));
        }
        callback(null);
      },
      authorizeSubscribe: (client, subscription, callback) => {
        if (mayReceive(client.id, subscription.topic)) return callback(null, subscription);
        this.refused.subscribe++;
        this.#options.log.warn("subscription refused", { host: client.id, topic: subscription.topic });
        callback(null, null);
      },
      published: (packet, client, callback) => {
        if (client !== null && !this.#closing && !this.#revoked.has(client) && !packet.topic.startsWith("$SYS")) {
          const message: InboundMessage = { topic: packet.topic, payload: toBuffer(packet.payload), sender: client.id };
          for (const handler of this.#handlers) handler(message);
        }
        callback(null);
      },
    });
    aedes.on("clientReady", (client) => this.#clients.set(client.id, client));
    aedes.on("clientDisconnect", (client) => {
      if (this.#clients.get(client.id) === client) this.#clients.delete(client.id);
    });
    aedes.on("clientError", (client, error) =>
      this.#options.log.debug("client error", { host: client.id, error: error.message }),
    );
    await aedes.listen();
    this.#aedes = aedes;

    const limit = this.#options.maxPacketBytes ?? MAX_PAYLOAD_BYTES + PACKET_SLACK_BYTES;
    const server = net.createServer((socket) => {
      guardPacketSize(socket, limit, () => {
        this.refused.size++;
        this.#options.log.warn("packet too large, connection closed", { remote: socket.remoteAddress });
      });
      aedes.handle(socket);
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", (error) =>
        reject(
          new FleetError(`cannot listen for MQTT on ${this.#options.host}:${this.#options.port}: ${error.message}`, {
            code: "EBROKER",
            cause: error,
          }),
        ),
      );
      server.listen(this.#options.port, this.#options.host, () => resolve());
    });
    this.#server = server;
    this.#port = (server.address() as net.AddressInfo).port;
  }

  publish(topic: string, payload: string, options: { qos: 0 | 1; retain?: boolean }): Promise<void> {
    const aedes = this.#aedes;
    if (!aedes) return Promise.reject(new FleetError("the broker is not started", { code: "EBROKER" }));
    return new Promise((resolve, reject) => {
      aedes.publish(
        {
          cmd: "publish",
          topic,
          payload: Buffer.from(payload),
          qos: options.qos,
          retain: options.retain ?? false,
          dup: false,
        },
        (error) => (error ? reject(error) : resolve()),
      );
    });
  }

  /** Closes the host's connection; its will is not published, nor anything it still sends. */
  async disconnect(host: string): Promise<void> {
    this.#authCache.delete(host);
    const client = this.#clients.get(host);
    if (!client) return;
    this.#revoked.add(client);
    await new Promise<void>((resolve) => client.close(() => resolve()));
    this.#clients.delete(host);
  }

  /**
   * Stops: the hosts' connections are closed without their wills (the hosts are not lost, the
   * control plane is away; they reconnect with a new session when it is back).
   */
  async close(): Promise<void> {
    this.#closing = true;
    const server = this.#server;
    const aedes = this.#aedes;
    this.#server = null;
    this.#aedes = null;
    if (server) {
      for (const client of this.#clients.values()) client.conn.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
    if (aedes) await new Promise<void>((resolve) => aedes.close(() => resolve()));
    this.#clients.clear();
  }

  /** null when the client may connect, else the CONNACK refusal. */
  async #authenticate(
    client: Client,
    username: string | undefined,
    password: Buffer | undefined,
  ): Promise<AuthenticateError | null> {
    const refuse = (code: 4 | 5, why: string) => {
      this.refused.auth++;
      this.#options.log.warn("connection refused", { client: client.id, why });
      return authError(code, why);
    };
    if (username === undefined || password === undefined) return refuse(4, "no username or password");
    if (username !== client.id || !HOST_ID_PATTERN.test(username)) return refuse(5, "client id is not the username");
    const will = this.#wills.get(client);
    if (will && will.topic !== hostTopic(username, "status")) {
      this.refused.will++;
      return refuse(5, `a will on ${will.topic}`);
    }
    const hash = await this.#options.credentials.credentialHash(username);
    if (hash === null) return refuse(4, "no such host");
    const digest = createHash("sha256").update(password).digest("hex");
    const now = this.#options.now();
    const cached = this.#authCache.get(username);
    if (cached && cached.hash === hash && cached.digest === digest && cached.until > now) return null;
    if (!(await verifyPassword(password.toString("utf8"), hash))) return refuse(4, "wrong password");
    this.#authCache.set(username, { hash, digest, until: now + (this.#options.authCacheMs ?? 5 * 60_000) });
    return null;
  }
}

function mayPublish(host: string, topic: string): boolean {
  return UP_KINDS.some((kind) => topic === hostTopic(host, kind));
}

function mayReceive(host: string, filter: string): boolean {
  return filter === hostTopic(host, "cmd") || filter === hostTopic(host, "ack") || filter === FLEET_CMD_TOPIC;
}

function authError(returnCode: number, message: string): AuthenticateError {
  return Object.assign(new Error(message), { returnCode }) as AuthenticateError;
}

function toBuffer(payload: string | Buffer): Buffer {
  return typeof payload === "string" ? Buffer.from(payload) : payload;
}

/**
 * Watches the MQTT fixed headers of what a socket sends (fed the same bytes Aedes reads: a
 * `data` listener does not change a stream read through `readable`), and destroys the socket
 * when a packet announces more than `limit` bytes, before Aedes buffers it.
 */
export function guardPacketSize(socket: net.Socket, limit: number, onRefused: () => void): void {
  let skip = 0; // bytes of the current packet's body still to pass
  let header: number[] = []; // the fixed header read so far (type byte, length bytes)
  socket.on("data", (chunk: Buffer) => {
    let i = 0;
    while (i < chunk.length) {
      if (skip > 0) {
        const n = Math.min(skip, chunk.length - i);
        skip -= n;
        i += n;
        continue;
      }
      header.push(chunk[i] as number);
      i++;
      if (header.length === 1) continue;
      const last = header[header.length - 1] as number;
      if ((last & 0x80) !== 0 && header.length < 5) continue;
      let length = 0;
      for (let k = header.length - 1; k >= 1; k--) length = length * 128 + ((header[k] as number) & 0x7f);
      header = [];
      if (length > limit) {
        onRefused();
        socket.destroy();
        return;
      }
      skip = length;
    }
  });
}
