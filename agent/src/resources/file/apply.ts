/** Executes file steps through the filesystem port. */

import type { FileStep } from "../../engine/types.js";
import { DriftlessError } from "../../errors.js";
import type { HostFs } from "../../host/fs.js";
import type { Accounts } from "../types.js";
import { readAccounts, resolveId } from "./accounts.js";

export interface FileApplyContext {
  fs: HostFs;
  /** Re-read when a name is unknown: a package installed earlier in the run may have created it. */
  accounts: Accounts;
}

export function applyFileSteps(steps: FileStep[], ctx: FileApplyContext, resource: string): void {
  for (const step of steps) {
    switch (step.op) {
      case "file.write":
        ctx.fs.ensureParent(step.path);
        ctx.fs.writeFileAtomic(step.path, step.content, {
          mode: step.mode,
          uid: resolveOwner(ctx, "users", step.owner, resource),
          gid: resolveOwner(ctx, "groups", step.group, resource),
        });
        break;
      case "file.copy":
        ctx.fs.ensureParent(step.path);
        ctx.fs.writeFileAtomicFrom(step.path, step.from, {
          sha256: step.sha256,
          mode: step.mode,
          uid: resolveOwner(ctx, "users", step.owner, resource),
          gid: resolveOwner(ctx, "groups", step.group, resource),
        });
        break;
      case "file.mkdir":
        ctx.fs.ensureParent(step.path);
        ctx.fs.mkdir(
          step.path,
          step.mode,
          resolveOwner(ctx, "users", step.owner, resource),
          resolveOwner(ctx, "groups", step.group, resource),
        );
        break;
      case "file.link":
        ctx.fs.ensureParent(step.path);
        ctx.fs.symlink(step.target, step.path);
        break;
      case "file.chmod":
        ctx.fs.chmod(step.path, step.mode);
        break;
      case "file.chown":
        ctx.fs.chown(
          step.path,
          resolveOwner(ctx, "users", step.owner, resource),
          resolveOwner(ctx, "groups", step.group, resource),
        );
        break;
      case "file.remove":
        ctx.fs.remove(step.path);
        break;
    }
  }
}

function resolveOwner(
  ctx: FileApplyContext,
  kind: "users" | "groups",
  name: string | undefined,
  resource: string,
): number | undefined {
  if (name === undefined) return undefined;
  let id = resolveId(name, ctx.accounts[kind]);
  if (id === undefined) {
    ctx.accounts = readAccounts(ctx.fs);
    id = resolveId(name, ctx.accounts[kind]);
  }
  if (id === undefined) {
    throw new DriftlessError(`${kind === "users" ? "user" : "group"} "${name}" does not exist on this host`, {
      code: "EACCOUNT",
      phase: "apply",
      resource,
    });
  }
  return id;
}
