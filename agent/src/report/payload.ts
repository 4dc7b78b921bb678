/**
 * What a run writes for the control plane (protocol/schema.ts `runReportSchema`, without the
 * envelope the supervisor adds): the run record in the protocol's shape, its sync state, and
 * diffs trimmed so that a payload stays under MAX_PAYLOAD_BYTES. Also the facts' hash.
 */
import { createHash } from "node:crypto";
import { MAX_PAYLOAD_BYTES } from "../../../protocol/topics.js";
import type { RunRecord } from "../state/db.js";
import type { OutboxEntry } from "./outbox.js";

export type SyncState = "in-sync" | "drifted" | "failed";

/**
 * A run's result as the fleet sees the host: in sync (nothing to do, or all done), drifted
 * (changes pending in report mode, or a run stopped part way), failed (resources failed, the
 * repository was invalid or refused, or the run could not start).
 */
export function syncOf(result: string): SyncState {
  switch (result) {
    case "in-sync":
    case "changed":
      return "in-sync";
    case "changes":
    case "interrupted":
      return "drifted";
    default:
      return "failed";
  }
}

/** Room left for the envelope (`v`, `host`, `session`, `seq`) under MAX_PAYLOAD_BYTES. */
const ENVELOPE_BYTES = 512;

export interface ReportExtras {
  profiles?: string[];
  timings?: Record<string, number>;
}

/** The outbox entry of a recorded run. */
export function runReportEntry(run: RunRecord, extras: ReportExtras = {}): OutboxEntry {
  const changes = run.changes.map((c) => asObject(c));
  const drift = changes.flatMap((c) =>
    Array.isArray(c.drift)
      ? (c.drift as unknown[]).map((d) => ({ resource: String(c.resource), ...(asObject(d) as object) }))
      : [],
  ) as Array<Record<string, unknown>>;
  const errors = run.errors.map((e) => {
    const o = asObject(e);
    return { ...o, code: typeof o.code === "string" ? o.code : "EAPPLY", message: String(o.message ?? "") };
  });
  const body: Record<string, unknown> = {
    kind: "run",
    runId: run.id,
    commit: run.commit,
    source: run.source.slice(0, 200),
    mode: run.mode,
    result: run.result,
    sync: syncOf(run.result),
    startedAt: run.startedAt,
    endedAt: run.endedAt,
    profiles: (extras.profiles ?? []).slice(0, 1000),
    changes,
    drift: drift.map(({ resource, field, desired, actual }) => ({ resource, field, desired, actual })),
    errors,
    timings: extras.timings ?? {},
    summary: { ...run.summary },
  };
  return {
    runId: run.id,
    result: run.result,
    startedAt: run.startedAt,
    endedAt: run.endedAt,
    body: fitPayload(body, MAX_PAYLOAD_BYTES - ENVELOPE_BYTES),
  };
}

/**
 * Makes `body` fit in `max` bytes of JSON: first the diffs go (largest first, each replaced by
 * its hash and size), then the second half of the changes, drift entries and errors, again and
 * again; what was left out is counted in `summary` (`changesOmitted`, ...).
 */
export function fitPayload(body: Record<string, unknown>, max: number): Record<string, unknown> {
  const size = () => Buffer.byteLength(JSON.stringify(body), "utf8");
  if (size() <= max) return body;
  const changes = body.changes as Array<Record<string, unknown>>;
  const withDiff = changes
    .map((c, i) => ({ i, bytes: typeof c.diff === "string" ? Buffer.byteLength(c.diff, "utf8") : 0 }))
    .filter((c) => c.bytes > 0)
    .sort((a, b) => b.bytes - a.bytes);
  let total = size();
  for (const { i, bytes } of withDiff) {
    if (total <= max) break;
    const { diff, ...rest } = changes[i] as { diff: string };
    const sha256 = createHash("sha256").update(diff, "utf8").digest("hex");
    changes[i] = { ...rest, diffOmitted: { sha256, bytes } };
    total -= bytes;
  }
  const summary = body.summary as Record<string, number>;
  for (let round = 0; size() > max && round < 64; round++) {
    for (const key of ["changes", "drift", "errors"] as const) {
      const list = body[key] as unknown[];
      if (list.length === 0) continue;
      const keep = Math.floor(list.length / 2);
      summary[`${key}Omitted`] = (summary[`${key}Omitted`] ?? 0) + list.length - keep;
      body[key] = list.slice(0, keep);
    }
  }
  return body;
}

/** The labels the status can carry (protocol: keys up to 63 characters, values up to 200); longer ones are left out. */
export function statusLabels(labels: Record<string, string>): Record<string, string> {
  return Object.fromEntries(Object.entries(labels).filter(([k, v]) => k.length <= 63 && v.length <= 200));
}

/** JSON with object keys sorted: the same facts give the same text, and the same hash. */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) =>
    v && typeof v === "object" && !Array.isArray(v)
      ? Object.fromEntries(Object.entries(v as Record<string, unknown>).sort(([a], [b]) => (a < b ? -1 : 1)))
      : v,
  );
}

export function sha256Hex(text: string): string {
  return createHash("sha256").update(text, "utf8").digest("hex");
}

function asObject(value: unknown): Record<string, unknown> {
  return typeof value === "object" && value !== null ? (value as Record<string, unknown>) : { value };
}
