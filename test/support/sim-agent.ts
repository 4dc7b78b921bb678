/**
 * A simulated agent for tests with many hosts: a real MQTT client with the host's credentials
 * that reports like the real reporter (agent/src/daemon/reporter.ts): a retained `online` status
 * with a `lost` will, reports in seq order, at most `window` unacknowledged, each kept until the
 * control plane's ack covers it, and every unacknowledged report sent again when no ack moved
 * for `ackTimeoutMs` (a control plane that died with reports in hand) or when the same ack comes
 * twice while later reports were sent (a gap).
 */
import mqtt, { type MqttClient } from "mqtt";
import { hostTopic } from "../../protocol/topics.js";
import { runReport } from "./payloads.js";

export interface SimAgentOptions {
  url: string;
  host: string;
  password: string;
  session?: number;
  /** Reports to send, seq 1..reports. */
  reports: number;
  window?: number;
  ackTimeoutMs?: number;
  /** Sends seq 1..holdAfter only, until `release()` (a test's fixed point); default: no hold. */
  holdAfter?: number;
}

export class SimAgent {
  readonly host: string;
  /** Every report seq up to this is acknowledged. */
  ackedUpTo = 0;
  /** Reports published, resends included. */
  published = 0;
  readonly #options: Required<Omit<SimAgentOptions, "holdAfter">>;
  /** The last seq it may send now. */
  #limit: number;
  #client: MqttClient | null = null;
  #next = 1;
  #lastAck = -1;
  #gapResentFor = -1;
  #timer: NodeJS.Timeout | undefined;
  #done: Promise<void>;
  #resolveDone!: () => void;

  constructor(options: SimAgentOptions) {
    this.host = options.host;
    const { holdAfter, ...rest } = options;
    this.#options = { session: 1, window: 8, ackTimeoutMs: 2000, ...rest };
    this.#limit = Math.min(holdAfter ?? options.reports, options.reports);
    this.#done = new Promise((resolve) => {
      this.#resolveDone = resolve;
    });
  }

  /** Connects, says online (retained) and subscribes to its acks; reports start with `start`. */
  async connect(): Promise<void> {
    const { host, session } = this.#options;
    const client = await mqtt.connectAsync(this.#options.url, {
      clientId: host,
      username: host,
      password: this.#options.password,
      protocolVersion: 4,
      clean: true,
      reconnectPeriod: 0,
      connectTimeout: 30_000,
      will: {
        topic: hostTopic(host, "status"),
        payload: Buffer.from(JSON.stringify({ v: 1, host, session, state: "lost" })),
        qos: 1,
        retain: true,
      },
    });
    this.#client = client;
    client.on("message", (_topic, payload) => this.#onAck(JSON.parse(payload.toString()).upTo));
    await client.subscribeAsync(hostTopic(host, "ack"), { qos: 1 });
    const status = { v: 1, host, session, state: "online", version: "0.1.0", mode: "enforce", labels: { sim: "yes" } };
    await client.publishAsync(hostTopic(host, "status"), JSON.stringify(status), { qos: 1, retain: true });
  }

  /** Sends the reports; resolves when all are acknowledged. */
  start(): Promise<void> {
    this.#pump();
    return this.#done;
  }

  /** Lifts `holdAfter`: the rest of the reports are sent. */
  release(): void {
    this.#limit = this.#options.reports;
    this.#pump();
  }

  async close(): Promise<void> {
    clearTimeout(this.#timer);
    await this.#client?.endAsync(true);
  }

  #send(seq: number): void {
    const report = runReport(this.host, seq, { session: this.#options.session, runId: `${this.host}-run-${seq}` });
    this.published++;
    this.#client?.publish(hostTopic(this.host, "report"), JSON.stringify(report), { qos: 1 });
  }

  #pump(): void {
    while (this.#next <= this.#limit && this.#next - 1 - this.ackedUpTo < this.#options.window) {
      this.#send(this.#next++);
    }
    this.#arm();
  }

  /** Unacknowledged reports are sent again after ackTimeoutMs without an ack that moves. */
  #arm(): void {
    clearTimeout(this.#timer);
    if (this.ackedUpTo >= this.#next - 1) return;
    this.#timer = setTimeout(() => this.#resend(), this.#options.ackTimeoutMs);
  }

  #resend(): void {
    for (let seq = this.ackedUpTo + 1; seq < this.#next; seq++) this.#send(seq);
    this.#arm();
  }

  #onAck(upTo: number): void {
    const repeated = upTo === this.#lastAck;
    this.#lastAck = upTo;
    if (upTo > this.ackedUpTo) {
      this.ackedUpTo = upTo;
      if (this.ackedUpTo >= this.#options.reports) {
        clearTimeout(this.#timer);
        this.#resolveDone();
        return;
      }
      this.#pump();
    } else if (repeated && upTo < this.#next - 1 && this.#gapResentFor !== upTo) {
      // Stuck below what was sent: one in between was lost; send again from the gap, once.
      this.#gapResentFor = upTo;
      this.#resend();
    }
  }
}
