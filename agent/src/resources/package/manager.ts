/**
 * The package manager interface. apt/dpkg implements it today; dnf, apk or opkg can be added
 * behind the same interface without touching the planner or the engine.
 */
import type { HostFs } from "../../host/fs.js";
import type { Runner } from "../../host/runner.js";
import type { ActualPackage } from "../types.js";

export interface PackageQuery {
  /** Every package named by the run; all are read in one call. */
  names: string[];
  /** The subset whose installable candidate version is needed (`state: latest`). */
  candidates: string[];
  /** Refresh the package index before reading candidates (`apt-get update`). */
  refreshIndex: boolean;
  signal?: AbortSignal;
}

export interface PackageOperation {
  install: { name: string; version?: string }[];
  remove: string[];
}

export interface PackageOutcome {
  /** Names that failed, with the reason; names not listed succeeded. */
  failed: Map<string, string>;
}

/** Who the package database is now: it changes whenever any package is installed, removed or changed. */
export interface PackageDatabaseStamp {
  id: string;
  /** The newest change time (ctime, ns) among the files `id` describes. */
  changedAtNs: bigint;
}

export interface PackageManager {
  readonly name: string;
  query(query: PackageQuery): Promise<Map<string, ActualPackage>>;
  /**
   * The database's stamp, or null when it cannot be told: a query of installed packages
   * (no candidates) answered under one stamp stands while the stamp is the same.
   */
  databaseStamp?(): PackageDatabaseStamp | null;
  /** Installs and removes in as few calls as possible (one `apt-get` call for apt). */
  apply(
    operation: PackageOperation,
    options: { signal?: AbortSignal; onLine?: (line: string) => void },
  ): Promise<PackageOutcome>;
}

export interface PackageManagerContext {
  fs: HostFs;
  runner: Runner;
}
