/** Builders of desired resources and actual states for pure planner tests. */

import { createHash } from "node:crypto";
import type { Accounts, DesiredFile, DesiredPackage, DesiredService } from "../../agent/src/resources/types.js";

const at = { file: "test.yaml", document: 0, path: [] };

export function file(path: string, extra: Partial<DesiredFile> = {}): DesiredFile {
  const out: DesiredFile = {
    kind: "file",
    id: `file:${path}`,
    path,
    state: "file",
    after: [],
    notify: [],
    declaredAt: at,
    profile: "t",
    ...extra,
  };
  if (out.content && !out.contentHash) out.contentHash = sha256(out.content);
  return out;
}

export function pkg(name: string, extra: Partial<DesiredPackage> = {}): DesiredPackage {
  return {
    kind: "package",
    id: `package:${name}`,
    name,
    state: "present",
    after: [],
    declaredAt: at,
    profile: "t",
    ...extra,
  };
}

export function svc(name: string, extra: Partial<DesiredService> = {}): DesiredService {
  return {
    kind: "service",
    id: `service:${name}`,
    name,
    onNotify: "restart",
    after: [],
    declaredAt: at,
    profile: "t",
    ...extra,
  };
}

export function sha256(data: Buffer | string): string {
  return createHash("sha256").update(data).digest("hex");
}

export const accounts: Accounts = {
  users: new Map([
    ["root", 0],
    ["daemon", 1],
    ["www-data", 33],
  ]),
  groups: new Map([
    ["root", 0],
    ["daemon", 1],
    ["www-data", 33],
  ]),
};
