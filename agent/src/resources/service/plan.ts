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

/** The restart (or reload) a changed file asks for, unless the run already starts or stops the unit. */
export function planNotify(
  desired: DesiredService,
  own: Change | null,
  triggeredBy: string[],
  offline: boolean,
): Change | null {
  if (offline || desired.state === "stopped") return null;
  if (own?.steps.some((s) => s.op === "service" && (s.action === "start" || s.action === "stop"))) return null;
  const action = desired.onNotify === "reload" ? "reload" : desired.state === "running" ? "restart" : "try-restart";
  return {
    resource: desired.id,
    kind: "service",
    action: action === "try-restart" ? "restart" : action,
    drift: [],
    steps: [{ op: "service", action, name: desired.name }],
    triggeredBy,
  };
}
