/** The package planner: pure, (desired, actual) -> change. */
import type { Change, PackageStep } from "../../engine/types.js";
import type { ActualPackage, DesiredPackage, Drift } from "../types.js";

export function planPackage(desired: DesiredPackage, actual: ActualPackage): Change | null {
  const drift: Drift[] = [];
  let step: PackageStep | undefined;
  let action = "install";
  const current = actual.installed ? (actual.version ?? "installed") : "absent";
  switch (desired.state) {
    case "present":
      if (!actual.installed) {
        step = { op: "package.install", name: desired.name, ...(desired.version ? { version: desired.version } : {}) };
        drift.push({ field: "state", desired: desired.version ?? "present", actual: "absent" });
      } else if (desired.version !== undefined && desired.version !== actual.version) {
        step = { op: "package.install", name: desired.name, version: desired.version };
        action = "update";
        drift.push({ field: "version", desired: desired.version, actual: actual.version });
      }
      break;
    case "latest":
      if (!actual.installed) {
        step = { op: "package.install", name: desired.name };
        drift.push({ field: "state", desired: actual.candidate ?? "latest", actual: "absent" });
      } else if (actual.candidate !== undefined && actual.candidate !== actual.version) {
        step = { op: "package.install", name: desired.name, version: actual.candidate };
        action = "upgrade";
        drift.push({ field: "version", desired: actual.candidate, actual: actual.version });
      }
      break;
    case "absent":
      if (actual.installed) {
        step = { op: "package.remove", name: desired.name };
        action = "remove";
        drift.push({ field: "state", desired: "absent", actual: current });
      }
      break;
  }
  if (!step) return null;
  return { resource: desired.id, kind: "package", action, drift, steps: [step] };
}
