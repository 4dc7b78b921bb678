/**
 * MQTT protocol v1: the schema of every payload, written once. The control plane validates
 * every message it receives with these; the agent's run process builds its reports to them;
 * `docs/protocol.schema.json` is generated from them (`driftlessctl schema`).
 */
import * as z from "zod";

const common = {
  v: z.literal(1),
  host: z.string().min(1).max(63),
  /** Incremented by the agent (and kept on disk) before each connect. */
  session: z.number().int().nonnegative(),
};

const isoTime = z.string().min(1).max(40);

export const syncStateSchema = z.enum(["in-sync", "drifted", "failed"]);

/** One run's short form, as the status and the fleet views show it. */
export const runBriefSchema = z.strictObject({
  runId: z.string().min(1).max(80),
  seq: z.number().int().nonnegative(),
  result: z.string().min(1).max(40),
  endedAt: isoTime,
});

/** `hosts/{id}/status`, retained; the last will is `{v, host, session, state: "lost"}`. */
export const statusSchema = z.strictObject({
  ...common,
  state: z.enum(["online", "offline", "lost"]),
  at: isoTime.optional(),
  version: z.string().max(40).optional(),
  commit: z.string().max(64).nullable().optional(),
  sync: syncStateSchema.optional(),
  mode: z.enum(["enforce", "report"]).optional(),
  lastRun: runBriefSchema.nullable().optional(),
  /** The labels of the agent's configuration (the fleet views filter on them). */
  labels: z.record(z.string().max(63), z.string().max(200)).optional(),
});

/** `hosts/{id}/heartbeat`, QoS 0, every 60 s. */
export const heartbeatSchema = z.strictObject({
  ...common,
  at: isoTime,
});

export const driftEntrySchema = z.strictObject({
  resource: z.string().max(4200),
  field: z.string().max(80),
  desired: z.unknown(),
  actual: z.unknown(),
});

export const reportChangeSchema = z
  .object({
    resource: z.string().max(4200),
    action: z.string().max(40),
    outcome: z.string().max(40).optional(),
    diff: z.string().optional(),
  })
  .loose();

export const reportErrorSchema = z
  .object({
    code: z.string().max(40),
    message: z.string(),
  })
  .loose();

/** `hosts/{id}/report`: one run, or (kind `summary`) older runs folded when the outbox overflowed. */
export const runReportSchema = z.strictObject({
  ...common,
  kind: z.literal("run").default("run"),
  runId: z.string().min(1).max(80),
  /** Per host, increasing: the ack says "stored up to seq". */
  seq: z.number().int().nonnegative(),
  commit: z.string().max(64).nullable(),
  source: z.string().max(200).optional(),
  mode: z.enum(["apply", "report", "plan"]),
  /** in-sync, changed, changes, failed, error, interrupted */
  result: z.string().min(1).max(40),
  sync: syncStateSchema,
  startedAt: isoTime,
  endedAt: isoTime,
  profiles: z.array(z.string().max(200)).max(1000).optional(),
  changes: z.array(reportChangeSchema),
  drift: z.array(driftEntrySchema),
  errors: z.array(reportErrorSchema),
  timings: z.record(z.string(), z.number()),
  summary: z.record(z.string(), z.number()).optional(),
});

export const summaryReportSchema = z.strictObject({
  ...common,
  kind: z.literal("summary"),
  /** Synthetic id of the fold, stable across resends. */
  runId: z.string().min(1).max(80),
  /** The last seq folded in. */
  seq: z.number().int().nonnegative(),
  fromSeq: z.number().int().nonnegative(),
  count: z.number().int().positive(),
  firstStartedAt: isoTime,
  lastEndedAt: isoTime,
  /** How many folded runs ended with each result. */
  results: z.record(z.string(), z.number().int().nonnegative()),
});

export const reportSchema = z.union([summaryReportSchema, runReportSchema]);

/** `hosts/{id}/facts`, retained, published when they change. */
export const factsSchema = z.strictObject({
  ...common,
  at: isoTime,
  /** sha256 of the facts' canonical JSON. */
  hash: z.string().max(80),
  facts: z.record(z.string(), z.unknown()),
});

/** `hosts/{id}/ack` (control plane to agent): every report up to `upTo` is stored. */
export const ackSchema = z.strictObject({
  v: z.literal(1),
  host: z.string().min(1).max(63),
  upTo: z.number().int().nonnegative(),
});

/** `hosts/{id}/cmd` (control plane to agent). */
export const hostCommandSchema = z.strictObject({
  v: z.literal(1),
  host: z.string().min(1).max(63),
  cmd: z.enum(["converge", "refresh"]),
  id: z.string().max(80).optional(),
});

/** `fleet/cmd` (control plane to all agents), after a push. */
export const fleetCommandSchema = z.strictObject({
  v: z.literal(1),
  cmd: z.literal("refresh"),
  commit: z.string().max(64).optional(),
  ref: z.string().max(200).optional(),
  id: z.string().max(80).optional(),
});

export type StatusPayload = z.infer<typeof statusSchema>;
export type HeartbeatPayload = z.infer<typeof heartbeatSchema>;
export type RunReportPayload = z.infer<typeof runReportSchema>;
export type SummaryReportPayload = z.infer<typeof summaryReportSchema>;
export type ReportPayload = z.infer<typeof reportSchema>;
export type FactsPayload = z.infer<typeof factsSchema>;
export type AckPayload = z.infer<typeof ackSchema>;
export type HostCommandPayload = z.infer<typeof hostCommandSchema>;
export type FleetCommandPayload = z.infer<typeof fleetCommandSchema>;

/** Every payload's schema by topic kind, for the ingest and for the JSON Schema. */
export const payloadSchemas = {
  status: statusSchema,
  heartbeat: heartbeatSchema,
  report: reportSchema,
  facts: factsSchema,
  ack: ackSchema,
  cmd: hostCommandSchema,
  "fleet/cmd": fleetCommandSchema,
} as const;

/** The JSON Schema of every payload (draft 2020-12), under `$defs` by topic kind. */
export function protocolJsonSchema(): Record<string, unknown> {
  const defs: Record<string, unknown> = {};
  for (const [kind, schema] of Object.entries(payloadSchemas)) {
    defs[kind] = z.toJSONSchema(schema, { io: "input", target: "draft-2020-12", unrepresentable: "any" });
  }
  return {
    $schema: "https://json-schema.org/draft/2020-12/schema",
    title: "Driftless MQTT protocol v1 payloads",
    $defs: defs,
  };
}
