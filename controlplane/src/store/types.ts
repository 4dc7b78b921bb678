/**
 * The fleet store: what the control plane knows about each host (credentials, presence, sync,
 * runs, drift, facts). Async because PostgreSQL comes later; `sqlite.ts` is the first
 * implementation, and every implementation passes `test/support/store-suite.ts`.
 */
import type { FactsPayload, HeartbeatPayload, ReportPayload, StatusPayload } from "../../../protocol/schema.js";
import type { ReceiveOptions } from "./logic.js";

export type { FactsPayload, HeartbeatPayload, ReportPayload, StatusPayload };

/**
 * `online`/`offline`/`lost` as the host's last status said (a will is `lost`), `stale` when an
 * online host's heartbeat is late by STALE_AFTER_BEATS beats, `unknown` before any status.
 */
export type Presence = "online" | "stale" | "offline" | "lost" | "unknown";
export type SyncState = "in-sync" | "drifted" | "failed" | "never-reported";

export interface HostSummary {
  id: string;
  presence: Presence;
  /** presence is `online` (a `stale` host is not counted as online). */
  online: boolean;
  sync: SyncState;
  commit: string | null;
  /** When the control plane last received anything from the host (ISO time). */
  lastSeen: string | null;
  labels: Record<string, string>;
  version: string | null;
  mode: string | null;
  lastRun: { runId: string; seq: number; result: string; endedAt: string } | null;
}

export interface HistoryEntry {
  at: string;
  field: "presence" | "sync";
  from: string | null;
  to: string;
}

export interface HostDetail extends HostSummary {
  facts: Record<string, unknown> | null;
  /** The drift of the host's last run. */
  drift: Array<{ resource: string; field: string; desired: unknown; actual: unknown }>;
  session: number;
  /** Presence and sync changes, newest first (the last HISTORY_LIMIT kept per host). */
  history: HistoryEntry[];
}

export interface RunView {
  runId: string;
  seq: number;
  kind: "run" | "summary";
  commit: string | null;
  /** Where the run's desired state came from, as the agent reported it: `git`, `offline` (the
   *  cached commit, the Git server unreachable), `directory`; absent when the agent did not say. */
  source?: string;
  /** apply, report, plan; `summary` for a fold of older runs. */
  mode: string;
  /** The run's result; `summary` for a fold (its counts are in `fold.results`). */
  result: string;
  /** in-sync, drifted, failed; `unknown` for a fold. */
  sync: string;
  startedAt: string;
  endedAt: string;
  changes: unknown[];
  drift: unknown[];
  errors: unknown[];
  receivedAt: string;
  /** Extension: for `kind: "summary"`, the runs the agent folded into this one report. */
  fold?: { fromSeq: number; count: number; results: Record<string, number> };
}

export interface HostFilter {
  labels?: Record<string, string>;
  /** A presence or a sync value. */
  state?: string;
  commit?: string;
  /** Extension: part of the host's id, any case (the dashboard's name filter). */
  name?: string;
}

/**
 * The newest commit of the tracked branch: the last one a Git webhook announced (`from: "push"`),
 * else the commit first reported most recently (`from: "seen"`).
 */
export interface FleetHead {
  commit: string;
  ref: string | null;
  at: string;
  from: "push" | "seen";
}

export interface FleetSummary {
  hosts: number;
  presence: Record<Presence, number>;
  sync: Record<SyncState, number>;
  commits: Record<string, number>;
  /** Extension: the newest commit (see FleetHead); null before any push or report. */
  head: FleetHead | null;
  /** Extension: hosts per label value, `{key: {value: count}}` (the dashboard's label filter). */
  labels: Record<string, Record<string, number>>;
}

export interface FleetStore {
  // credentials (driftlessctl hosts add/remove)
  /** Throws a FleetError with code EEXISTS when the host already has credentials. */
  addCredential(host: string, passwordHash: string, labels?: Record<string, string>): Promise<void>;
  removeCredential(host: string): Promise<boolean>;
  credentialHash(host: string): Promise<string | null>;
  // ingest
  /**
   * false: ignored, by the rules of `statusApplies` (store/logic.ts): from an older session, a
   * late `online` after the session's `offline` or `lost`, or a replayed status already known.
   */
  recordStatus(host: string, status: StatusPayload, receivedAt: Date, options?: ReceiveOptions): Promise<boolean>;
  recordHeartbeat(host: string, beat: HeartbeatPayload, receivedAt: Date): Promise<void>;
  /**
   * Idempotent by (host, runId). `ackUpTo`: every report of this host with a seq up to it is
   * stored (docs/protocol.md, "Acknowledgements"); the agent drops those from its outbox.
   */
  recordReport(host: string, report: ReportPayload, receivedAt: Date): Promise<{ duplicate: boolean; ackUpTo: number }>;
  /** Replayed facts the store already has (same hash) change nothing, not even `lastSeen`. */
  recordFacts(host: string, facts: FactsPayload, receivedAt: Date, options?: ReceiveOptions): Promise<void>;
  // queries (now: to compute `stale` from the last heartbeat)
  listHosts(filter: HostFilter, now: Date): Promise<HostSummary[]>;
  getHost(host: string, now: Date): Promise<HostDetail | null>;
  /** Newest first. */
  listRuns(host: string, options: { limit: number; beforeSeq?: number }): Promise<RunView[]>;
  summary(now: Date): Promise<FleetSummary>;
  /** Extension: a Git push announced by a webhook (the fleet's head, see FleetHead). */
  recordPush(push: { commit: string; ref: string }, receivedAt: Date): Promise<void>;
  /** Webhook deliveries seen (dedupe by delivery id); true when new. */
  markDelivery(id: string, receivedAt: Date): Promise<boolean>;
  /** Extension: the hosts that have credentials (a running serve disconnects the ones removed). */
  listCredentials(): Promise<string[]>;
  close(): Promise<void>;
}

/** Runs kept per host (older ones are deleted as new ones arrive). */
export const DEFAULT_RUNS_PER_HOST = 200;
/** Presence and sync changes kept per host. */
export const HISTORY_LIMIT = 200;
