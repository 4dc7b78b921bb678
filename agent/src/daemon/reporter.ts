/**
 * The supervisor's side of reporting: it holds the MQTT connection (MQTT 3.1.1, TLS with a CA
 * file, user name and password file, client id = host id), publishes presence, facts and the
 * outbox the runs fill, and turns the control plane's commands into runs. Loaded only when the
 * configuration has `broker:`; it loads no YAML, no zod and none of the run's code.
 *
 * - Each connect first increments the session counter (`session` in the state directory, 0600,
 *   written atomically); the status (`online`, retained) and the last will (`lost`, retained)
 *   both carry it, so a late will of an old connection never marks a reconnected host lost.
 *   A clean stop publishes `offline`, then disconnects (no will).
 * - Reports are published in seq order, at most `maxInFlight` unacknowledged at a time; a report
 *   leaves the outbox only on the control plane's `ack {upTo}` (never on the broker's PUBACK),
 *   and only once it was sent on this connection.
 *   After a reconnect, or `ackTimeoutMs` without an ack, every unacknowledged report is sent again;
 *   so are those after `upTo` when the same ack comes twice while later reports were sent (a
 *   report lost between the broker and the control plane leaves a gap the acks cannot pass).
 * - Facts (retained) are published when their hash differs from the last published one, kept in
 *   state.db: a restart does not publish them again.
 * - Commands: `converge` runs now; `refresh` (host or fleet) fetches and runs after a random part
 *   of the splay; a second refresh while one waits does not add another. Retained commands and
 *   acks (left on a broker by mistake) are ignored; so is anything malformed or for another host.
 * - A lost connection is retried with a capped, jittered backoff, each attempt a new connection.
 */
import * as path from "node:path";
import type BetterSqlite3 from "better-sqlite3";
import { connect, type IClientOptions, type MqttClient } from "mqtt";
import { FLEET_CMD_TOPIC, HEARTBEAT_MS, hostTopic, PROTOCOL_VERSION } from "../../../protocol/topics.js";
import type { Clock } from "../host/clock.js";
import type { HostFs } from "../host/fs.js";
import type { Logger } from "../log.js";
import {
  ackReports,
  envelope,
  getReporting,
  outboxSize,
  pendingReports,
  REPORTING_KEYS,
  setReporting,
} from "../report/outbox.js";
import { type BrokerSettings, sameSettings } from "../report/settings.js";
import { openSqlite } from "../state/sqlite.js";

export interface ReporterDeps {
  /** The machine's filesystem: password and CA files, the session counter. */
  fs: HostFs;
  clock: Clock;
  log: Logger;
  /** Starts a run (the supervisor's trigger). */
  trigger(kind: "converge" | "refresh"): void;
  /** The agent's version, in the status. */
  version: string;
  /** In [0, 1): the part of the splay a refresh waits. */
  random?: () => number;
  heartbeatMs?: number;
  /** Unacknowledged reports are sent again after this long without an ack. */
  ackTimeoutMs?: number;
  /** Reports published and not yet acknowledged, at most. */
  maxInFlight?: number;
  /** Reconnect backoff: first delay and cap. */
  retryMs?: { first: number; max: number };
}

/** Bytes of reports in flight beyond which no more are published until acks come (at least one always goes). */
const MAX_IN_FLIGHT_BYTES = 4 * 1024 * 1024;
/** How long a clean stop waits for the broker to take the `offline` status. */
const OFFLINE_TIMEOUT_MS = 2_000;

/**
 * The broker URL (`mqtt://` or `mqtts://`, checked by the configuration's schema) as MQTT.js
 * options. Given the URL as a string, MQTT.js parses it with `url.parse()`, which Node 24 marks
 * deprecated (DEP0169: a warning in the daemon's journal). Credentials in the URL win over the
 * configured ones, as they did when MQTT.js parsed it.
 */
export function brokerAddress(url: string): IClientOptions {
  const parsed = new URL(url);
  const hostname = parsed.hostname.replace(/^\[(.*)\]$/, "$1"); // [::1] to ::1, as net.connect wants
  return {
    protocol: parsed.protocol === "mqtts:" ? "mqtts" : "mqtt",
    host: hostname,
    hostname,
    ...(parsed.port ? { port: Number(parsed.port) } : {}),
    ...(parsed.username ? { username: decodeURIComponent(parsed.username) } : {}),
    ...(parsed.password ? { password: decodeURIComponent(parsed.password) } : {}),
  };
}

export class Reporter {
  readonly #deps: ReporterDeps;
  #settings: BrokerSettings | null = null;
  #client: MqttClient | undefined;
  #connected = false;
  #session = 0;
  #attempts = 0;
  #reconnectTimer: NodeJS.Timeout | undefined;
  #heartbeat: NodeJS.Timeout | undefined;
  #ackTimer: NodeJS.Timeout | undefined;
  #refreshTimer: NodeJS.Timeout | undefined;
  #db: BetterSqlite3.Database | undefined;
  /** Highest seq published on this connection; reports after it are next. */
  #sentUpTo = 0;
  /** The last ack's `upTo` on this connection, and the one a gap was last resent for. */
  #lastAck: number | undefined;
  #gapResentFor: number | undefined;
  readonly #inFlight = new Map<number, number>();
  #stopping = false;

  constructor(deps: ReporterDeps) {
    this.#deps = deps;
  }

  get session(): number {
    return this.#session;
  }

  /** Connects to the broker of `settings`, or reconnects when they changed; null disconnects. */
  async configure(settings: BrokerSettings | null): Promise<void> {
    if (this.#stopping || sameSettings(settings, this.#settings)) return;
    if (this.#settings) await this.#disconnect();
    this.#settings = settings;
    if (settings) {
      this.#deps.log.info("reporting to the control plane", { broker: settings.url, host: settings.host });
      this.#connect();
    }
  }

  /** After each run: the new status, the facts if they changed, and the new reports. */
  runEnded(): void {
    if (!this.#connected) return;
    this.#publishStatus("online");
    this.#publishFacts();
    this.#drain();
  }

  /**
   * Waits (at most `timeoutMs`) until the outbox is empty: every report sent and acknowledged.
   * True when it is. For `driftless agent --once`, which reports and exits.
   */
  async flush(timeoutMs: number): Promise<boolean> {
    const { clock } = this.#deps;
    const deadline = clock.monotonic() + timeoutMs;
    for (;;) {
      if (this.#connected && this.#inFlight.size === 0) {
        const db = this.#openDb();
        const empty = !db || outboxSize(db) === 0;
        if (this.#inFlight.size === 0) this.#closeDb();
        if (empty) return true;
      }
      if (clock.monotonic() >= deadline) return false;
      await clock.sleep(100);
    }
  }

  /** Clean stop: `offline` (retained), then the connection ends without its will. */
  async stop(): Promise<void> {
    this.#stopping = true;
    clearTimeout(this.#refreshTimer);
    await this.#disconnect();
  }

  #connect(): void {
    const settings = this.#settings;
    if (!settings || this.#stopping) return;
    const { fs, log } = this.#deps;
    let options: IClientOptions;
    try {
      this.#session = nextSession(fs, settings.stateDir);
      const password = settings.passwordFile ? fs.readTextIfExists(settings.passwordFile) : undefined;
      if (password === null) throw new Error(`cannot read broker.passwordFile ${settings.passwordFile}`);
      options = {
        protocolVersion: 4,
        clientId: settings.host,
        username: settings.username,
        ...(password !== undefined ? { password: password.trim() } : {}),
        ...(settings.ca ? { ca: fs.readFile(settings.ca) } : {}),
        clean: true,
        // Each attempt is a new connection with a new session number and will: reconnects are ours.
        reconnectPeriod: 0,
        connectTimeout: 30_000,
        keepalive: 60,
        queueQoSZero: false,
        // Without this, mqtt-packet keeps 65,536 two-byte Buffers of packet ids: 8 MB of heap.
        writeCache: false,
        will: {
          topic: hostTopic(settings.host, "status"),
          payload: Buffer.from(this.#presence("lost")),
          qos: 1,
          retain: true,
        },
      };
    } catch (error) {
      log.error("cannot connect to the broker", { broker: settings.url, error: (error as Error).message });
      this.#scheduleReconnect();
      return;
    }
    const client = connect({ ...options, ...brokerAddress(settings.url) });
    this.#client = client;
    client.on("connect", () => {
      if (this.#client === client) void this.#onConnect(client, settings);
    });
    client.on("message", (topic, payload, packet) => {
      if (this.#client === client && !packet.retain) this.#onMessage(topic, payload, settings);
    });
    client.on("error", (error) => {
      if (this.#client === client) log.warn("broker connection error", { broker: settings.url, error: error.message });
    });
    client.on("close", () => {
      if (this.#client !== client) return;
      const was = this.#connected;
      this.#lose();
      client.end(true);
      this.#client = undefined;
      if (was) log.warn("broker connection lost", { broker: settings.url });
      this.#scheduleReconnect();
    });
  }

  async #onConnect(client: MqttClient, settings: BrokerSettings): Promise<void> {
    const { log } = this.#deps;
    try {
      await client.subscribeAsync([hostTopic(settings.host, "ack"), hostTopic(settings.host, "cmd"), FLEET_CMD_TOPIC], {
        qos: 1,
      });
    } catch (error) {
      log.warn("cannot subscribe; reconnecting", { error: (error as Error).message });
      client.end(true);
      return;
    }
    if (this.#client !== client) return;
    this.#attempts = 0;
    this.#connected = true;
    this.#sentUpTo = 0;
    this.#lastAck = undefined;
    this.#gapResentFor = undefined;
    this.#inFlight.clear();
    log.info("connected to the broker", { broker: settings.url, session: this.#session });
    this.#publishStatus("online");
    this.#publishFacts();
    this.#drain();
    this.#heartbeat = setInterval(() => {
      this.#publish("heartbeat", JSON.stringify(this.#envelope({ at: this.#now() })), { qos: 0 });
    }, this.#deps.heartbeatMs ?? HEARTBEAT_MS);
  }

  #lose(): void {
    this.#connected = false;
    clearInterval(this.#heartbeat);
    clearTimeout(this.#ackTimer);
    this.#inFlight.clear();
    this.#sentUpTo = 0;
    this.#closeDb();
  }

  #scheduleReconnect(): void {
    if (this.#stopping || !this.#settings) return;
    const { first, max } = this.#deps.retryMs ?? { first: 1_000, max: 60_000 };
    const base = Math.min(max, first * 2 ** Math.min(this.#attempts, 16));
    this.#attempts++;
    const delay = Math.round(base * (0.5 + this.#random() * 0.5));
    clearTimeout(this.#reconnectTimer);
    this.#reconnectTimer = setTimeout(() => this.#connect(), delay);
  }

  async #disconnect(): Promise<void> {
    clearTimeout(this.#reconnectTimer);
    const client = this.#client;
    if (!client) return;
    if (this.#connected) {
      const offline = new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, OFFLINE_TIMEOUT_MS);
        this.#publish("status", this.#presence("offline", this.#statusFields()), { qos: 1, retain: true }, () => {
          clearTimeout(timer);
          resolve();
        });
      });
      await offline;
    }
    const connected = this.#connected;
    this.#client = undefined;
    this.#lose();
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        client.end(true);
        resolve();
      }, OFFLINE_TIMEOUT_MS);
      client.end(!connected, {}, () => {
        clearTimeout(timer);
        resolve();
      });
    });
    this.#deps.log.info("disconnected from the broker", {});
  }

  #onMessage(topic: string, payload: Buffer, settings: BrokerSettings): void {
    const message = parseObject(payload);
    if (!message || message.v !== PROTOCOL_VERSION) return;
    if (topic === hostTopic(settings.host, "ack")) {
      const upTo = message.upTo;
      if (message.host === settings.host && typeof upTo === "number" && Number.isInteger(upTo) && upTo >= 0) {
        this.#onAck(upTo);
      }
    } else if (topic === hostTopic(settings.host, "cmd")) {
      if (message.host !== settings.host) return;
      if (message.cmd === "converge") {
        this.#deps.log.info("command: converge", {});
        this.#deps.trigger("converge");
      } else if (message.cmd === "refresh") this.#refresh(settings);
    } else if (topic === FLEET_CMD_TOPIC && message.cmd === "refresh") {
      this.#refresh(settings);
    }
  }

  #refresh(settings: BrokerSettings): void {
    if (this.#refreshTimer) return;
    const wait = Math.round(this.#random() * settings.splayMs);
    this.#deps.log.info("command: refresh", { inS: Math.round(wait / 1000) });
    this.#refreshTimer = setTimeout(() => {
      this.#refreshTimer = undefined;
      this.#deps.trigger("refresh");
    }, wait);
  }

  /**
   * Deletes the acknowledged reports: those up to `upTo` that were sent on this connection. An
   * ack beyond them (a control plane that stored seqs of a state.db since lost) deletes nothing
   * not yet sent.
   */
  #onAck(upTo: number): void {
    const sent = Math.min(upTo, this.#sentUpTo);
    const db = this.#openDb();
    if (db) {
      try {
        ackReports(db, sent);
      } catch (error) {
        this.#deps.log.warn("cannot delete acknowledged reports", { error: (error as Error).message });
        return;
      }
    }
    for (const seq of this.#inFlight.keys()) if (seq <= sent) this.#inFlight.delete(seq);
    clearTimeout(this.#ackTimer);
    this.#ackTimer = undefined;
    const repeated = upTo === this.#lastAck;
    this.#lastAck = upTo;
    if (repeated && upTo < this.#sentUpTo && this.#gapResentFor !== upTo) {
      // The same ack again while later reports were sent: the control plane stores them but is
      // missing the one after upTo (taken by the broker, lost before it was stored: a control
      // plane killed in between). Send again from there now, once, not after the ack timeout.
      this.#gapResentFor = upTo;
      this.#deps.log.info("acknowledgements stuck below the reports sent; sending again from the gap", {
        from: upTo + 1,
        to: this.#sentUpTo,
      });
      this.#inFlight.clear();
      this.#sentUpTo = upTo;
    }
    this.#drain();
  }

  /** Publishes the next reports, oldest first, while the window has room. */
  #drain(): void {
    if (!this.#connected || !this.#settings) return;
    const db = this.#openDb();
    if (!db) return;
    const max = this.#deps.maxInFlight ?? 32;
    let rows: ReturnType<typeof pendingReports>;
    try {
      rows = this.#inFlight.size < max ? pendingReports(db, this.#sentUpTo, max - this.#inFlight.size) : [];
    } catch (error) {
      this.#deps.log.warn("cannot read the outbox", { error: (error as Error).message });
      return;
    }
    let bytes = [...this.#inFlight.values()].reduce((a, b) => a + b, 0);
    for (const row of rows) {
      if (this.#inFlight.size > 0 && bytes >= MAX_IN_FLIGHT_BYTES) break;
      const text = envelope(this.#settings.host, this.#session, row.seq, row.body);
      this.#publish("report", text, { qos: 1 });
      this.#inFlight.set(row.seq, text.length);
      this.#sentUpTo = row.seq;
      bytes += text.length;
    }
    if (this.#inFlight.size === 0) {
      // Nothing waits for an ack: the database is not needed until the next run or connect.
      this.#closeDb();
    } else if (!this.#ackTimer) {
      this.#ackTimer = setTimeout(() => {
        this.#ackTimer = undefined;
        this.#deps.log.info("no acknowledgement; sending the unacknowledged reports again", {
          reports: this.#inFlight.size,
        });
        this.#inFlight.clear();
        this.#sentUpTo = 0;
        this.#drain();
      }, this.#deps.ackTimeoutMs ?? 60_000);
    }
  }

  #publishStatus(state: "online"): void {
    this.#publish("status", this.#presence(state, this.#statusFields()), { qos: 1, retain: true });
  }

  #publishFacts(): void {
    const settings = this.#settings;
    const db = this.#openDb();
    if (!db || !settings) return;
    const hash = getReporting(db, REPORTING_KEYS.factsHash);
    const facts = getReporting(db, REPORTING_KEYS.facts);
    const key = `${settings.host}:${hash}`;
    if (!hash || !facts || getReporting(db, REPORTING_KEYS.factsPublished) === key) return;
    const head = JSON.stringify(this.#envelope({ at: this.#now(), hash }));
    this.#publish("facts", `${head.slice(0, -1)},"facts":${facts}}`, { qos: 1, retain: true }, (error) => {
      if (error) return;
      const again = this.#openDb();
      if (again) setReporting(again, REPORTING_KEYS.factsPublished, key);
      if (this.#inFlight.size === 0) this.#closeDb();
    });
  }

  /** What the status says of the last run (from state.db), or nothing before the first. */
  #statusFields(): Record<string, unknown> {
    const db = this.#openDb();
    const text = db ? getReporting(db, REPORTING_KEYS.status) : undefined;
    return { version: this.#deps.version, ...(text ? parseObject(Buffer.from(text)) : {}) };
  }

  #presence(state: "online" | "offline" | "lost", extra: Record<string, unknown> = {}): string {
    return JSON.stringify({ ...this.#envelope({ state }), ...(state === "lost" ? {} : { at: this.#now() }), ...extra });
  }

  #envelope<T extends object>(fields: T): { v: number; host: string; session: number } & T {
    return { v: PROTOCOL_VERSION, host: this.#settings?.host ?? "", session: this.#session, ...fields };
  }

  #publish(
    kind: "status" | "heartbeat" | "report" | "facts",
    text: string,
    options: { qos: 0 | 1; retain?: boolean },
    done?: (error?: Error) => void,
  ): void {
    const client = this.#client;
    if (!client || !this.#settings) {
      done?.(new Error("not connected"));
      return;
    }
    client.publish(
      hostTopic(this.#settings.host, kind),
      text,
      { qos: options.qos, retain: options.retain ?? false },
      (error) => done?.(error ?? undefined),
    );
  }

  /** state.db, opened when there is one with an outbox (a run creates and migrates it). */
  #openDb(): BetterSqlite3.Database | undefined {
    if (this.#db) return this.#db;
    const settings = this.#settings;
    if (!settings) return undefined;
    const file = path.join(settings.stateDir, "state.db");
    if (!this.#deps.fs.lstat(file)) return undefined;
    try {
      const db = openSqlite(file, { fileMustExist: true });
      db.pragma("busy_timeout = 5000");
      // A database no run has migrated yet has no outbox (and nothing to send).
      if (!db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'outbox'").get()) {
        db.close();
        return undefined;
      }
      this.#db = db;
      return db;
    } catch (error) {
      this.#deps.log.warn("cannot open the state database", { file, error: (error as Error).message });
      return undefined;
    }
  }

  #closeDb(): void {
    this.#db?.close();
    this.#db = undefined;
  }

  #now(): string {
    return this.#deps.clock.now().toISOString();
  }

  #random(): number {
    return (this.#deps.random ?? Math.random)();
  }
}

/** Increments the session counter in `stateDir/session` and returns it (written before the connect). */
export function nextSession(fs: HostFs, stateDir: string): number {
  const file = path.join(stateDir, "session");
  const current = Number.parseInt(fs.readTextIfExists(file)?.trim() ?? "0", 10);
  const next = (Number.isSafeInteger(current) && current >= 0 ? current : 0) + 1;
  fs.mkdirp(stateDir, 0o700);
  fs.writeFileAtomic(file, Buffer.from(`${next}\n`), { mode: 0o600 });
  return next;
}

function parseObject(payload: Buffer): Record<string, unknown> | null {
  try {
    const value: unknown = JSON.parse(payload.toString("utf8"));
    return typeof value === "object" && value !== null && !Array.isArray(value)
      ? (value as Record<string, unknown>)
      : null;
  } catch {
    return null;
  }
}
