/** The service planner: pure, (desired, actual) -> change. */
import type { Change, ServiceStep } from "../../engine/types.js";
import type { ActualService, DesiredService, Drift } from "../types.js";

const ENABLED = new Set(["enabled", "enabled-runtime", "alias", "linked", "linked-runtime"]);
/** States where enable/disable has no meaning; they satisfy either wish. */
const NEUTRAL = new Set(["static", "indirect", "generated", "transient"]);
const RUNNING = new Set(["active", "activating", "reloading"]);

export function planService(desired: DesiredService, actual: ActualService, offline: boolean): Change | null {
  const drift: Drift[] = [];
  const steps: ServiceStep[] = [];
  const actions: string[] = [];
  const fileState = actual.loaded ? (actual.unitFileState ?? "unknown") : "not-found";

  if (desired.enabled !== undefined && !NEUTRAL.has(fileState)) {
    const isEnabled = ENABLED.has(fileState);
    if (desired.enabled !== isEnabled) {
      const action = desired.enabled ? "enable" : "disable";
      drift.push({ field: "enabled", desired: desired.enabled, actual: fileState });
      steps.push({ op: "service", action, name: desired.name });
      actions.push(action);
    }
  }

  if (desired.state !== undefined && !offline) {
    const active = actual.loaded ? (actual.activeState ?? "unknown") : "not-found";
    const running = RUNNING.has(active);
    if ((desired.state === "running") !== running) {
      const action = desired.state === "running" ? "start" : "stop";
      drift.push({ field: "state", desired: desired.state, actual: active });
      steps.push({ op: "service", action, name: desired.name });
      actions.push(action);
    }
  }
  if (steps.length === 0) return null;
  return { resource: desired.id, kind: "service", action: actions.join("+"), drift, steps };
}

/**
 * What a changed file asks of its service: a restart (or reload) after the change, once. When the
 * run starts the unit anyway, the start becomes a restart: a package installed in the same run may
 * have started the daemon with its own default configuration before the file was written.
 */
export function planNotify(
  desired: DesiredService,
  own: Change | null,
  triggeredBy: string[],
  offline: boolean,
): { own: Change | null; notify: Change | null } {
  if (offline || desired.state === "stopped") return { own, notify: null };
  if (own?.steps.some((s) => s.op === "service" && s.action === "start")) {
    const steps = own.steps.map((s) =>
      s.op === "service" && s.action === "start" ? { ...s, action: "restart" as const } : s,
    );
    // Still a "start" to the reader: the unit was not running when the run began.
    return { own: { ...own, steps }, notify: null };
  }
  const running = desired.state === "running";
  const reload = desired.onNotify === "reload";
  const action = reload
    ? running
      ? "reload-or-restart"
      : "try-reload-or-restart"
    : running
      ? "restart"
      : "try-restart";
  return {
    own,
    notify: {
      resource: desired.id,
      kind: "service",
      action: reload ? "reload" : "restart",
      drift: [],
      steps: [{ op: "service", action, name: desired.name }],
      triggeredBy,
    },
  };
}
