/**
 * The ingest: every message hosts publish passes here. It is accepted only when its topic is a
 * host topic the agent publishes on, its payload is within the size limit, is JSON and passes
 * the payload's schema, and the topic's id, the payload's `host` and the sender's identity (when
 * the broker knows it) agree. Anything else is dropped and counted by reason; nothing here
 * throws. An accepted report is stored, then acknowledged (`hosts/{id}/ack`, QoS 1) once the
 * store committed it; acks for one host within one event-loop turn are sent as one.
 */
import type { Logger } from "../../../agent/src/log.js";
import { payloadSchemas } from "../../../protocol/schema.js";
import { hostTopic, MAX_PAYLOAD_BYTES, PROTOCOL_VERSION, parseHostTopic } from "../../../protocol/topics.js";
import type { FleetBroker, InboundMessage } from "../broker/types.js";
import type { FleetEvents } from "../events/events.js";
import type { FleetStore } from "../store/types.js";

export type DropReason = "topic" | "size" | "json" | "schema" | "identity" | "store";

export interface IngestStats {
  /** Messages seen, accepted or not. */
  received: number;
  /** Accepted messages by kind (status, heartbeat, report, facts). */
  accepted: Record<"status" | "heartbeat" | "report" | "facts", number>;
  /** Reports stored (new); duplicates are counted apart. */
  reportsStored: number;
  reportsDuplicate: number;
  /** Statuses and wills from an older session, ignored. */
  statusIgnored: number;
  acksSent: number;
  dropped: Record<DropReason, number>;
}

export interface IngestDeps {
  store: FleetStore;
  broker: Pick<FleetBroker, "publish">;
  log: Logger;
  now: () => Date;
  /** Told once a status, report or facts message is stored (the dashboard's live updates). */
  events?: Pick<FleetEvents, "emit">;
}

export interface Ingest {
  readonly stats: IngestStats;
  /** Takes one message; returns at once, never throws. */
  handle(message: InboundMessage): void;
  /** Resolves when every message handled so far is stored and its ack sent. */
  idle(): Promise<void>;
}

const UP_KINDS = new Set(["status", "heartbeat", "report", "facts"]);

export function createIngest(deps: IngestDeps): Ingest {
  const stats: IngestStats = {
    received: 0,
    accepted: { status: 0, heartbeat: 0, report: 0, facts: 0 },
    reportsStored: 0,
    reportsDuplicate: 0,
    statusIgnored: 0,
    acksSent: 0,
    dropped: { topic: 0, size: 0, json: 0, schema: 0, identity: 0, store: 0 },
  };
  const inFlight = new Set<Promise<void>>();
  const acks = new Map<string, number>();
  let ackFlush: Promise<void> | null = null;

  const drop = (reason: DropReason, message: InboundMessage, detail: string | undefined) => {
    stats.dropped[reason]++;
    deps.log.warn("message dropped", {
      reason,
      topic: message.topic.slice(0, 200),
      sender: message.sender,
      ...(detail ? { detail: detail.slice(0, 300) } : {}),
    });
  };

  const flushAcks = async () => {
    await new Promise<void>((resolve) => setImmediate(resolve));
    const batch = [...acks];
    acks.clear();
    ackFlush = null;
    await Promise.all(
      batch.map(async ([host, upTo]) => {
        try {
          await deps.broker.publish(hostTopic(host, "ack"), JSON.stringify({ v: PROTOCOL_VERSION, host, upTo }), {
            qos: 1,
          });
          stats.acksSent++;
        } catch (error) {
          // The agent sends the report again; it is a duplicate then, and acknowledged.
          deps.log.warn("ack not sent", { host, upTo, error: (error as Error).message });
        }
      }),
    );
  };

  const ack = (host: string, upTo: number) => {
    acks.set(host, Math.max(acks.get(host) ?? upTo, upTo));
    if (!ackFlush) ackFlush = flushAcks();
    return ackFlush;
  };

  const store = async (kind: string, host: string, payload: unknown, message: InboundMessage) => {
    const receivedAt = deps.now();
    const replay = { replayed: message.retained === true };
    try {
      switch (kind) {
        case "status": {
          const recorded = await deps.store.recordStatus(host, payload as never, receivedAt, replay);
          if (!recorded) stats.statusIgnored++;
          else deps.events?.emit({ kind: "status", host });
          break;
        }
        case "heartbeat":
          await deps.store.recordHeartbeat(host, payload as never, receivedAt);
          break;
        case "facts":
          await deps.store.recordFacts(host, payload as never, receivedAt, replay);
          deps.events?.emit({ kind: "facts", host });
          break;
        case "report": {
          const result = await deps.store.recordReport(host, payload as never, receivedAt);
          if (result.duplicate) stats.reportsDuplicate++;
          else {
            stats.reportsStored++;
            deps.events?.emit({ kind: "report", host });
          }
          await ack(host, result.ackUpTo);
          break;
        }
      }
    } catch (error) {
      drop("store", message, (error as Error).message);
    }
  };

  const handle = (message: InboundMessage): void => {
    stats.received++;
    let verdict: Verdict;
    try {
      verdict = validate(message);
    } catch (error) {
      // Nothing in validate should throw; if it does, the message is dropped, never the ingest.
      verdict = { drop: "schema", detail: (error as Error).message };
    }
    if ("drop" in verdict) {
      drop(verdict.drop, message, verdict.detail);
      return;
    }
    stats.accepted[verdict.kind]++;
    const work = store(verdict.kind, verdict.host, verdict.payload, message);
    inFlight.add(work);
    void work.finally(() => inFlight.delete(work));
  };

  const idle = async () => {
    while (inFlight.size > 0 || ackFlush) {
      await Promise.all([...inFlight, ackFlush]);
    }
  };

  return { stats, handle, idle };
}

type UpKind = keyof IngestStats["accepted"];
type Verdict = { kind: UpKind; host: string; payload: unknown } | { drop: DropReason; detail?: string };

/** Accepts a message (its kind, host and parsed payload) or says why it is dropped. */
export function validate(message: InboundMessage): Verdict {
  const topic = parseHostTopic(message.topic);
  if (!topic || !UP_KINDS.has(topic.kind)) return { drop: "topic" };
  if (message.payload.length > MAX_PAYLOAD_BYTES) return { drop: "size", detail: `${message.payload.length} bytes` };
  let json: unknown;
  try {
    json = JSON.parse(message.payload.toString("utf8"));
  } catch (error) {
    return { drop: "json", detail: (error as Error).message };
  }
  const kind = topic.kind as UpKind;
  const parsed = payloadSchemas[kind].safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    return { drop: "schema", detail: issue ? `${issue.path.join(".") || "(payload)"}: ${issue.message}` : "" };
  }
  const payload = parsed.data as { host: string };
  if (payload.host !== topic.host || (message.sender !== null && message.sender !== topic.host)) {
    return { drop: "identity", detail: `payload host ${payload.host}, sender ${message.sender ?? "unknown"}` };
  }
  return { kind, host: topic.host, payload };
}
