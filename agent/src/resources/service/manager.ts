/** The service manager interface, implemented for systemd. */
import type { HostFs } from "../../host/fs.js";
import type { Runner } from "../../host/runner.js";
import type { ActualService } from "../types.js";

export type ServiceAction =
  | "enable"
  | "disable"
  | "start"
  | "stop"
  | "restart"
  | "try-restart"
  | "reload-or-restart"
  | "try-reload-or-restart";

export interface ServiceManager {
  /** True when only unit files can be changed (a `--root` tree: enable/disable, no start/stop). */
  readonly offline: boolean;
  /** Reads every unit of the run in one call. Names without a suffix are `.service` units. */
  query(names: string[], signal?: AbortSignal): Promise<Map<string, ActualService>>;
  /** Runs one action on one unit; throws a DriftlessError (phase "apply") with systemd's message on failure. */
  act(action: ServiceAction, name: string, signal?: AbortSignal): Promise<void>;
  /** `systemctl daemon-reload`; a no-op when offline. */
  daemonReload(signal?: AbortSignal): Promise<void>;
}

export interface ServiceManagerContext {
  fs: HostFs;
  runner: Runner;
}
