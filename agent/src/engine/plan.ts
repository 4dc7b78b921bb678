/**
 * The planner: pure. Desired resources in order plus what the readers found -> the changes, in
 * order, including the restarts asked for by `notify` and the daemon-reload a unit file needs.
 */
import { planFile, type TextPatch } from "../resources/file/plan.js";
import { planPackage } from "../resources/package/plan.js";
import { planNotify, planService } from "../resources/service/plan.js";
import type { ActualState, DesiredService } from "../resources/types.js";
import type { Ordering } from "./graph.js";
import type { Change, Plan } from "./types.js";

export interface PlanInput {
  ordering: Ordering;
  actual: ActualState;
  /** Resources whose actual state could not be read, with the reason. */
  readProblems: Map<string, string>;
  /** Services can only be enabled or disabled (a `--root` tree). */
  servicesOffline: boolean;
  /** Makes the diff of a changed text file; needed when a file's actual state has `text`. */
  textPatch?: TextPatch;
}

const UNIT_DIRS = ["/etc/systemd/system/", "/usr/lib/systemd/system/", "/lib/systemd/system/", "/run/systemd/system/"];

export function isUnitFile(path: string): boolean {
  return UNIT_DIRS.some((dir) => path.startsWith(dir));
}

export function plan(input: PlanInput): Plan {
  const { ordering, actual, readProblems, servicesOffline, textPatch } = input;
  const changes: Change[] = [];
  const problems = new Map(readProblems);
  const changed = new Set<string>();
  const unitFilesChanged: string[] = [];
  let lastUnitFileChange = -1;

  for (const desired of ordering.order) {
    if (problems.has(desired.id)) continue;
    let change: Change | null = null;
    switch (desired.kind) {
      case "file": {
        const found = actual.files.get(desired.id);
        if (!found) {
          problems.set(desired.id, "actual state was not read");
          continue;
        }
        change = planFile(desired, found, actual.accounts, textPatch);
        if (change && isUnitFile(desired.path) && !servicesOffline) {
          unitFilesChanged.push(desired.id);
          lastUnitFileChange = changes.length;
        }
        break;
      }
      case "package": {
        const found = actual.packages.get(desired.name);
        if (!found) {
          problems.set(desired.id, "actual state was not read");
          continue;
        }
        change = planPackage(desired, found);
        break;
      }
      case "service": {
        const found = actual.services.get(desired.name);
        if (!found) {
          problems.set(desired.id, "actual state was not read");
          continue;
        }
        change = planService(desired, found, servicesOffline);
        const triggers = notifiersOf(desired, ordering, changed);
        let notify: Change | null = null;
        if (triggers.length) ({ own: change, notify } = planNotify(desired, change, triggers, servicesOffline));
        if (change) changes.push(change);
        if (notify) changes.push(notify);
        if (change) changed.add(desired.id);
        continue;
      }
    }
    if (change) {
      changes.push(change);
      changed.add(desired.id);
    }
  }

  if (unitFilesChanged.length > 0) {
    changes.splice(lastUnitFileChange + 1, 0, {
      resource: "systemd:daemon-reload",
      kind: "service",
      action: "daemon-reload",
      drift: [],
      steps: [{ op: "systemd.daemon-reload" }],
      triggeredBy: unitFilesChanged,
    });
  }

  return {
    order: ordering.order.map((r) => r.id),
    changes,
    problems,
    dependents: ordering.dependents,
  };
}

function notifiersOf(service: DesiredService, ordering: Ordering, changed: Set<string>): string[] {
  const out: string[] = [];
  for (const r of ordering.order) {
    if (r.kind === "file" && changed.has(r.id) && r.notify.includes(service.id)) out.push(r.id);
  }
  return out;
}
