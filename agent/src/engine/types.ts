/** What the planner produces and the executors consume. */
import type { ServiceAction } from "../resources/service/manager.js";
import type { Drift, ResourceKind } from "../resources/types.js";

export type FileStep =
  | { op: "file.write"; path: string; content: Buffer; mode: number; owner?: string; group?: string }
  /** A write whose content is copied, in chunks, from a repository file (`from`, checked against `sha256`). */
  | { op: "file.copy"; path: string; from: string; sha256: string; mode: number; owner?: string; group?: string }
  | { op: "file.mkdir"; path: string; mode: number; owner?: string; group?: string }
  | { op: "file.link"; path: string; target: string }
  | { op: "file.chmod"; path: string; mode: number }
  | { op: "file.chown"; path: string; owner?: string; group?: string }
  | { op: "file.remove"; path: string };

export type PackageStep =
  | { op: "package.install"; name: string; version?: string }
  | { op: "package.remove"; name: string };

export type ServiceStep = { op: "service"; action: ServiceAction; name: string } | { op: "systemd.daemon-reload" };

export type Step = FileStep | PackageStep | ServiceStep;

export interface Change {
  /** Resource id, or `systemd:daemon-reload`. */
  resource: string;
  kind: ResourceKind;
  /** create, update, delete, install, upgrade, downgrade, remove, enable, disable, start, stop, restart, reload, daemon-reload */
  action: string;
  drift: Drift[];
  /** Unified diff of the content, for text files. */
  diff?: string;
  steps: Step[];
  /** Runs only if one of these resources changed in this run (notify, daemon-reload). */
  triggeredBy?: string[];
}

export interface Plan {
  /** Every desired resource id, in the order of application. */
  order: string[];
  /** The changes, in the order of application. */
  changes: Change[];
  /** Problems found while planning one resource (an unknown owner, ...); the rest still plans. */
  problems: Map<string, string>;
  /** resource id -> ids that must not run when it fails. */
  dependents: Map<string, string[]>;
}

export type Outcome = "changed" | "failed" | "skipped" | "unchanged";

export interface ResourceResult {
  resource: string;
  outcome: Outcome;
  action?: string;
  error?: string;
  durationMs?: number;
}
