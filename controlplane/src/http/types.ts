/** What the HTTP server is given by `serve`: the store, a way to publish commands, counters, secrets. */
import type { Logger } from "../../../agent/src/log.js";
import type { FleetEvents } from "../events/events.js";
import type { FleetMetrics, IngestCounters } from "../metrics.js";
import type { FleetStore } from "../store/types.js";
import type { DashboardFiles } from "./dashboard.js";
import type { SseOptions } from "./sse.js";

export interface HttpDeps {
  store: FleetStore;
  /** Publishes a command to the agents (the broker's publish). */
  publish(topic: string, payload: string, options: { qos: 0 | 1 }): Promise<void>;
  metrics: FleetMetrics;
  /** Counters kept by other parts, read at each scrape of `/metrics`. */
  counters?: {
    /** The ingest's `stats`. */
    ingest?: IngestCounters;
    /** The embedded broker's `refused` (absent with an external broker). */
    brokerRefused?: Readonly<Record<string, number>>;
  };
  /** The API's bearer token. */
  apiToken: string;
  /** The Git webhooks' secret; null: `POST /hooks/git` answers 404. */
  webhookSecret: string | null;
  logger: Logger;
  now(): Date;
  /** A new command id (a UUID). */
  newId(): string;
  /** The fleet's changes, streamed at `GET /api/v1/events`; absent: that route answers 404. */
  events?: FleetEvents;
  /** The built dashboard served at `/`; null or absent: the minimal server-rendered page. */
  dashboard?: DashboardFiles | null;
  /** Timing of the event stream (tests shorten it). */
  sse?: SseOptions;
}
