/** Real MQTT.js clients acting as hosts, and waiting for conditions with a deadline. */
import mqtt, { type IClientOptions, type MqttClient } from "mqtt";
import { hostTopic } from "../../protocol/topics.js";

/** Polls `check` until it returns a value other than undefined/false, or fails after `timeoutMs`. */
export async function waitFor<T>(
  what: string | (() => string),
  check: () => Promise<T | undefined | false> | T | undefined | false,
  timeoutMs = 15_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value !== undefined && value !== false) return value as T;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline) {
      const name = typeof what === "string" ? what : what();
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${name}${last ? `: ${String(last)}` : ""}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

export interface HostClientOptions {
  port: number;
  host: string;
  password: string;
  /** Client id (default: the host). */
  clientId?: string;
  username?: string;
  session?: number;
  /** A will: default the host's lost status of `session`; null: none. */
  will?: { topic: string; payload: string } | null;
  protocolVersion?: 4 | 5;
}

/** Connects as a host (resolves once connected, rejects when refused). */
export async function connectHost(options: HostClientOptions): Promise<MqttClient> {
  const session = options.session ?? 1;
  const will =
    options.will === undefined
      ? {
          topic: hostTopic(options.host, "status"),
          payload: JSON.stringify({ v: 1, host: options.host, session, state: "lost" }),
        }
      : options.will;
  const clientOptions: IClientOptions = {
    clientId: options.clientId ?? options.host,
    username: options.username ?? options.host,
    password: options.password,
    protocolVersion: options.protocolVersion ?? 4,
    reconnectPeriod: 0,
    connectTimeout: 10_000,
    clean: true,
    ...(will ? { will: { topic: will.topic, payload: Buffer.from(will.payload), qos: 1, retain: true } } : {}),
  };
  const client = mqtt.connect(`mqtt://127.0.0.1:${options.port}`, clientOptions);
  await new Promise<void>((resolve, reject) => {
    client.once("connect", () => resolve());
    client.once("error", (error) => {
      client.end(true);
      reject(error);
    });
    client.once("close", () => reject(new Error("connection closed")));
  });
  return client;
}

/** Collects the JSON messages a client receives on `topic`. */
export async function collect(client: MqttClient, topic: string): Promise<unknown[]> {
  const seen: unknown[] = [];
  client.on("message", (t, payload) => {
    if (t === topic) seen.push(JSON.parse(payload.toString()));
  });
  const granted = await client.subscribeAsync(topic, { qos: 1 });
  if (granted[0]?.qos === 128) throw new Error(`subscription to ${topic} refused`);
  return seen;
}
