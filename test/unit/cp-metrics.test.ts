import { describe, expect, it } from "vitest";
import { createFleetMetrics, hostGauges, ingestFamilies, MetricsRegistry } from "../../controlplane/src/metrics.js";

describe("metrics registry", () => {
  it("renders counters and their labels as Prometheus text, sorted", () => {
    const registry = new MetricsRegistry();
    const dropped = registry.counter("x_dropped_total", "Dropped.", ["reason"]);
    const plain = registry.counter("a_total", "Plain.");
    dropped.inc({ reason: "schema" });
    dropped.inc({ reason: "identity" }, 2);
    dropped.inc({ reason: "schema" });
    plain.inc();
    expect(registry.render()).toBe(
      [
        "# HELP a_total Plain.",
        "# TYPE a_total counter",
        "a_total 1",
        "# HELP x_dropped_total Dropped.",
        "# TYPE x_dropped_total counter",
        'x_dropped_total{reason="identity"} 2',
        'x_dropped_total{reason="schema"} 2',
        "",
      ].join("\n"),
    );
    expect(dropped.value({ reason: "schema" })).toBe(2);
    expect(dropped.value({ reason: "size" })).toBe(0);
  });

  it("escapes label values and help text", () => {
    const registry = new MetricsRegistry();
    registry.counter("c_total", "line\\one\ntwo", ["l"]).inc({ l: 'a"b\\c\nd' });
    expect(registry.render()).toContain("# HELP c_total line\\\\one\\ntwo\n");
    expect(registry.render()).toContain('c_total{l="a\\"b\\\\c\\nd"} 1\n');
  });

  it("refuses wrong label sets, bad names, decreasing counters and duplicates", () => {
    const registry = new MetricsRegistry();
    const counter = registry.counter("c_total", "C.", ["provider", "result"]);
    expect(() => counter.inc({ provider: "github" })).toThrow(/labels must be exactly \[provider, result\]/);
    expect(() => counter.inc({ provider: "github", result: "x" }, -1)).toThrow(/only goes up/);
    expect(() => registry.counter("c_total", "again")).toThrow(/declared twice/);
    expect(() => registry.counter("bad-name", "x")).toThrow(/not a Prometheus name/);
  });

  it("shows the webhook counters at 0 before any delivery, the host gauges from a summary, the ingest's counters", () => {
    const metrics = createFleetMetrics();
    const text = metrics.registry.render([
      ...hostGauges({
        hosts: 3,
        presence: { online: 2, stale: 0, offline: 1, lost: 0, unknown: 0 },
        sync: { "in-sync": 1, drifted: 1, failed: 0, "never-reported": 1 },
        commits: {},
        head: null,
        labels: {},
      }),
      ...ingestFamilies(
        {
          received: 9,
          accepted: { status: 1, heartbeat: 2, report: 3, facts: 0 },
          reportsStored: 2,
          reportsDuplicate: 1,
          statusIgnored: 0,
          acksSent: 2,
          dropped: { schema: 1, identity: 2 },
        },
        { auth: 4 },
      ),
    ]);
    expect(text).toContain('driftless_webhook_deliveries_total{provider="github",result="published"} 0\n');
    expect(text).toContain("driftless_hosts 3\n");
    expect(text).toContain('driftless_hosts_presence{presence="online"} 2\n');
    expect(text).toContain('driftless_hosts_sync{sync="drifted"} 1\n');
    expect(text).toContain("# TYPE driftless_hosts_sync gauge\n");
    expect(text).toContain("driftless_reports_ingested_total 2\n");
    expect(text).toContain("driftless_acks_sent_total 2\n");
    expect(text).toContain('driftless_messages_dropped_total{reason="identity"} 2\n');
    expect(text).toContain('driftless_messages_accepted_total{kind="report"} 3\n');
    expect(text).toContain('driftless_mqtt_refused_total{reason="auth"} 4\n');
  });
});
