/** Protocol v1 payloads for tests, valid by default; each builder takes overrides. */
import type {
  FactsPayload,
  HeartbeatPayload,
  RunReportPayload,
  StatusPayload,
  SummaryReportPayload,
} from "../../protocol/schema.js";

export function statusPayload(host: string, overrides: Partial<StatusPayload> = {}): StatusPayload {
  return { v: 1, host, session: 1, state: "online", version: "0.1.0", commit: "c0ffee", mode: "enforce", ...overrides };
}

export function heartbeatPayload(host: string, overrides: Partial<HeartbeatPayload> = {}): HeartbeatPayload {
  return { v: 1, host, session: 1, at: "2026-01-01T00:00:00.000Z", ...overrides };
}

export function runReport(host: string, seq: number, overrides: Partial<RunReportPayload> = {}): RunReportPayload {
  return {
    v: 1,
    host,
    session: 1,
    kind: "run",
    runId: `run-${seq}`,
    seq,
    commit: "c0ffee",
    mode: "apply",
    result: "in-sync",
    sync: "in-sync",
    startedAt: "2026-01-01T00:00:00.000Z",
    endedAt: "2026-01-01T00:00:01.000Z",
    changes: [],
    drift: [],
    errors: [],
    timings: { total: 1000 },
    ...overrides,
  };
}

export function summaryReport(
  host: string,
  fromSeq: number,
  seq: number,
  overrides: Partial<SummaryReportPayload> = {},
): SummaryReportPayload {
  return {
    v: 1,
    host,
    session: 1,
    kind: "summary",
    runId: `fold-${fromSeq}-${seq}`,
    seq,
    fromSeq,
    count: seq - fromSeq + 1,
    firstStartedAt: "2026-01-01T00:00:00.000Z",
    lastEndedAt: "2026-01-01T01:00:00.000Z",
    results: { "in-sync": seq - fromSeq + 1 },
    ...overrides,
  };
}

export function factsPayload(host: string, facts: Record<string, unknown> = { os: { arch: "amd64" } }): FactsPayload {
  return { v: 1, host, session: 1, at: "2026-01-01T00:00:00.000Z", hash: "h1", facts };
}
