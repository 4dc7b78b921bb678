/** Executes file steps through the filesystem port. */

import type { FileStep, Step } from "../../engine/types.js";
import { DriftlessError } from "../../errors.js";
import type { HostFs, WriteBatch } from "../../host/fs.js";
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

/** True when every step writes a file's content: such a change can be staged into a write batch. */
export function onlyWrites(steps: readonly Step[]): boolean {
  return steps.length > 0 && steps.every((step) => step.op === "file.write" || step.op === "file.copy");
}

/**
 * Stages a change's writes into `batch` (made durable by its flush). Throws when one cannot be
 * staged: an unknown owner, a parent that is not a directory, a source that changed.
 */
export function stageFileWrites(
  steps: readonly Step[],
  ctx: FileApplyContext,
  resource: string,
  batch: WriteBatch,
): void {
  for (const step of steps) {
    if (step.op !== "file.write" && step.op !== "file.copy") throw new Error(`${step.op} cannot be staged`);
    const options = {
      mode: step.mode,
      uid: resolveOwner(ctx, "users", step.owner, resource),
      gid: resolveOwner(ctx, "groups", step.group, resource),
    };
    if (step.op === "file.write") batch.stage(step.path, step.content, options);
    else batch.stageCopy(step.path, step.from, { ...options, sha256: step.sha256 });
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
