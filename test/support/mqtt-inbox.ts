/** A host's MQTT connection for tests: the messages it receives, in order, awaited one by one. */
import mqtt, { type MqttClient } from "mqtt";

export interface Received {
  topic: string;
  json: Record<string, unknown>;
}

export interface HostConnection {
  client: MqttClient;
  /** The next message received (already received ones first), on any subscribed topic. */
  next(): Promise<Received>;
  /** Messages received and not yet taken by `next`. */
  pending(): number;
  close(): Promise<void>;
}

/** Connects as `host` (MQTT 3.1.1, clean session) and subscribes to `topics` (QoS 1). */
export async function connectHost(
  brokerUrl: string,
  host: string,
  password: string,
  topics: string[],
): Promise<HostConnection> {
  const client = await mqtt.connectAsync(brokerUrl, {
    clientId: host,
    username: host,
    password,
    protocolVersion: 4,
    clean: true,
    reconnectPeriod: 0,
  });
  const queue: Received[] = [];
  const waiting: Array<(message: Received) => void> = [];
  client.on("message", (topic, payload) => {
    const message = { topic, json: JSON.parse(payload.toString("utf8")) as Record<string, unknown> };
    const waiter = waiting.shift();
    if (waiter) waiter(message);
    else queue.push(message);
  });
  if (topics.length > 0) await client.subscribeAsync(topics, { qos: 1 });
  return {
    client,
    next: () => {
      const first = queue.shift();
      return first ? Promise.resolve(first) : new Promise((resolve) => waiting.push(resolve));
    },
    pending: () => queue.length,
    close: () => client.endAsync(),
  };
}
