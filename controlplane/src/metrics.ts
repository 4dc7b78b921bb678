/**
 * A small metrics registry: counters with labels, kept in memory and rendered as Prometheus text
 * (exposition format 0.0.4). Gauges computed at scrape time (hosts by presence and sync state, from
 * the store) are passed to `render` as families; the registry does not reach into the store.
 *
 * Output is sorted (families by name, samples by their label values), so two scrapes of the same
 * state read the same and tests can compare lines.
 */

import type { FleetSummary } from "./store/types.js";

export type Labels = Readonly<Record<string, string>>;

export interface Counter {
  /** Adds `by` (default 1) to the sample with these labels (exactly the counter's label names). */
  inc(labels?: Labels, by?: number): void;
  /** The current value of one sample (0 when never incremented). */
  value(labels?: Labels): number;
}

export interface Sample {
  labels: Labels;
  value: number;
}

export interface MetricFamily {
  name: string;
  help: string;
  type: "counter" | "gauge";
  samples: Sample[];
}

/** Metric and label names Prometheus accepts. */
const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

class LabelledCounter implements Counter {
  readonly #samples = new Map<string, Sample>();

  constructor(
    readonly name: string,
    readonly help: string,
    readonly labelNames: readonly string[],
  ) {}

  inc(labels: Labels = {}, by = 1): void {
    if (!(by >= 0) || !Number.isFinite(by)) throw new RangeError(`${this.name}: a counter only goes up (got ${by})`);
    const sample = this.#sample(labels);
    sample.value += by;
  }

  value(labels: Labels = {}): number {
    return this.#samples.get(this.#key(labels))?.value ?? 0;
  }

  /** Makes a sample show as 0 before its first increment (known label values, such as results). */
  touch(labels: Labels = {}): void {
    this.#sample(labels);
  }

  family(): MetricFamily {
    return { name: this.name, help: this.help, type: "counter", samples: [...this.#samples.values()] };
  }

  #sample(labels: Labels): Sample {
    const key = this.#key(labels);
    let sample = this.#samples.get(key);
    if (!sample) {
      sample = { labels: { ...labels }, value: 0 };
      this.#samples.set(key, sample);
    }
    return sample;
  }

  #key(labels: Labels): string {
    const names = Object.keys(labels).sort();
    const expected = [...this.labelNames].sort();
    if (names.length !== expected.length || names.some((n, i) => n !== expected[i])) {
      throw new Error(`${this.name}: labels must be exactly [${expected.join(", ")}], got [${names.join(", ")}]`);
    }
    return JSON.stringify(expected.map((n) => labels[n]));
  }
}

export class MetricsRegistry {
  readonly #counters = new Map<string, LabelledCounter>();

  /** Declares a counter (once per name); `initial` lists label sets shown as 0 from the start. */
  counter(name: string, help: string, labelNames: readonly string[] = [], initial: readonly Labels[] = []): Counter {
    if (!NAME.test(name)) throw new Error(`metric name ${JSON.stringify(name)} is not a Prometheus name`);
    for (const label of labelNames) {
      if (!LABEL.test(label)) throw new Error(`${name}: label name ${JSON.stringify(label)} is not a Prometheus name`);
    }
    if (this.#counters.has(name)) throw new Error(`metric ${name} is declared twice`);
    const counter = new LabelledCounter(name, help, labelNames);
    if (labelNames.length === 0) counter.touch();
    for (const labels of initial) counter.touch(labels);
    this.#counters.set(name, counter);
    return counter;
  }

  /** Every family as Prometheus text: the registry's counters and `extra` (gauges read at scrape time). */
  render(extra: readonly MetricFamily[] = []): string {
    const families = [...[...this.#counters.values()].map((c) => c.family()), ...extra];
    return renderFamilies(families);
  }
}

export function renderFamilies(families: readonly MetricFamily[]): string {
  const lines: string[] = [];
  for (const family of [...families].sort((a, b) => compare(a.name, b.name))) {
    lines.push(`# HELP ${family.name} ${escapeHelp(family.help)}`);
    lines.push(`# TYPE ${family.name} ${family.type}`);
    const rendered = family.samples.map((s) => `${family.name}${renderLabels(s.labels)} ${formatValue(s.value)}`);
    lines.push(...rendered.sort(compare));
  }
  return lines.length ? `${lines.join("\n")}\n` : "";
}

function renderLabels(labels: Labels): string {
  const names = Object.keys(labels).sort(compare);
  if (names.length === 0) return "";
  return `{${names.map((n) => `${n}="${escapeLabel(labels[n] ?? "")}"`).join(",")}}`;
}

function escapeHelp(text: string): string {
  return text.replace(/\\/g, "\\\\").replace(/\n/g, "\\n");
}

function escapeLabel(text: string): string {
  return text.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/"/g, '\\"');
}

function formatValue(value: number): string {
  if (Number.isNaN(value)) return "NaN";
  if (value === Number.POSITIVE_INFINITY) return "+Inf";
  if (value === Number.NEGATIVE_INFINITY) return "-Inf";
  return String(value);
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * The HTTP server's counters. The ingest and the embedded broker keep their own counters objects
 * (`IngestCounters`, `refused`); `/metrics` renders them at each scrape (`ingestFamilies`).
 */
export interface FleetMetrics {
  registry: MetricsRegistry;
  /** Webhook deliveries, labels `provider` (github, gitea, gitlab, unknown) and `result`. */
  webhookDeliveries: Counter;
  /** HTTP requests answered, labels `route` (the route's pattern, not the path) and `code`. */
  httpRequests: Counter;
}

export const WEBHOOK_RESULTS = [
  "published",
  "duplicate",
  "ignored",
  "unauthorized",
  "invalid",
  "disabled",
  "failed",
] as const;
export type WebhookResult = (typeof WEBHOOK_RESULTS)[number];
export const WEBHOOK_PROVIDERS = ["github", "gitea", "gitlab"] as const;

export function createFleetMetrics(registry = new MetricsRegistry()): FleetMetrics {
  return {
    registry,
    webhookDeliveries: registry.counter(
      "driftless_webhook_deliveries_total",
      "Git webhook deliveries received, by provider and result.",
      ["provider", "result"],
      WEBHOOK_PROVIDERS.flatMap((provider) => [
        { provider, result: "published" },
        { provider, result: "unauthorized" },
      ]),
    ),
    httpRequests: registry.counter(
      "driftless_http_requests_total",
      "HTTP requests answered, by route and status code.",
      ["route", "code"],
    ),
  };
}

/** The ingest's counters (its `stats` object, read at each scrape). */
export interface IngestCounters {
  received: number;
  accepted: Readonly<Record<string, number>>;
  reportsStored: number;
  reportsDuplicate: number;
  statusIgnored: number;
  acksSent: number;
  dropped: Readonly<Record<string, number>>;
}

function counter(name: string, help: string, value: number): MetricFamily {
  return { name, help, type: "counter", samples: [{ labels: {}, value }] };
}

function byLabel(name: string, help: string, label: string, values: Readonly<Record<string, number>>): MetricFamily {
  return {
    name,
    help,
    type: "counter",
    samples: Object.entries(values).map(([key, value]) => ({ labels: { [label]: key }, value })),
  };
}

/** The ingest's and the embedded broker's counters as families. */
export function ingestFamilies(
  ingest: IngestCounters | undefined,
  brokerRefused: Readonly<Record<string, number>> | undefined,
): MetricFamily[] {
  const families: MetricFamily[] = [];
  if (ingest) {
    families.push(
      counter("driftless_messages_received_total", "MQTT messages from hosts seen by the ingest.", ingest.received),
      byLabel(
        "driftless_messages_accepted_total",
        "Messages accepted by the ingest, by kind.",
        "kind",
        ingest.accepted,
      ),
      byLabel(
        "driftless_messages_dropped_total",
        "Messages dropped by the ingest, by reason.",
        "reason",
        ingest.dropped,
      ),
      counter("driftless_reports_ingested_total", "Run reports stored (duplicates excluded).", ingest.reportsStored),
      counter(
        "driftless_reports_duplicate_total",
        "Reports received again and acknowledged again.",
        ingest.reportsDuplicate,
      ),
      counter(
        "driftless_status_ignored_total",
        "Statuses and wills from an older session, ignored.",
        ingest.statusIgnored,
      ),
      counter("driftless_acks_sent_total", "Acks published to hosts after their reports were stored.", ingest.acksSent),
    );
  }
  if (brokerRefused) {
    families.push(
      byLabel(
        "driftless_mqtt_refused_total",
        "What the embedded broker refused (auth, will, publish, subscribe, size).",
        "reason",
        brokerRefused,
      ),
    );
  }
  return families;
}

/** The fleet's gauges, read from the store's summary at each scrape. */
export function hostGauges(summary: FleetSummary): MetricFamily[] {
  return [
    {
      name: "driftless_hosts",
      help: "Hosts known to the control plane.",
      type: "gauge",
      samples: [{ labels: {}, value: summary.hosts }],
    },
    {
      name: "driftless_hosts_presence",
      help: "Hosts by presence (online, stale, offline, lost, unknown).",
      type: "gauge",
      samples: Object.entries(summary.presence).map(([presence, value]) => ({ labels: { presence }, value })),
    },
    {
      name: "driftless_hosts_sync",
      help: "Hosts by sync state (in-sync, drifted, failed, never-reported).",
      type: "gauge",
      samples: Object.entries(summary.sync).map(([sync, value]) => ({ labels: { sync }, value })),
    },
  ];
}
