/** The file planner: pure, (desired, actual) -> change. */
import type { createTwoFilesPatch } from "diff";
import type { Change, FileStep } from "../../engine/types.js";
import type { Accounts, ActualFile, DesiredFile, Drift } from "../types.js";
import { nameOf, resolveId } from "./accounts.js";

const DEFAULT_FILE_MODE = 0o644;
const DEFAULT_DIR_MODE = 0o755;
/** What a sensitive file shows instead of a diff: its content goes nowhere but into the file. */
export const SENSITIVE_NEW = "content not shown (sensitive)";
export const SENSITIVE_CHANGED = "content differs (sensitive)";
/** Larger content is never diffed, nor held to be diffed. */
export const MAX_DIFF_BYTES = 256 * 1024;

export function formatMode(mode: number | undefined): string | undefined {
  return mode === undefined ? undefined : `0${mode.toString(8).padStart(3, "0")}`;
}

/**
 * The diff library's patch function. Only a changed text file needs it, so the caller loads it
 * then (`loadTextPatch`): a run with no content to change never loads the library.
 */
export type TextPatch = typeof createTwoFilesPatch;

export async function loadTextPatch(): Promise<TextPatch> {
  return (await import("diff")).createTwoFilesPatch;
}

/** True when planning these files shows a text diff, that is, needs `TextPatch`. */
export function needsTextPatch(files: Iterable<ActualFile>): boolean {
  for (const file of files) if (file.text !== undefined) return true;
  return false;
}

export function planFile(
  desired: DesiredFile,
  actual: ActualFile,
  accounts: Accounts,
  textPatch?: TextPatch,
): Change | null {
  const drift: Drift[] = [];
  const steps: FileStep[] = [];
  const { path } = desired;
  const owner = desired.owner !== undefined ? { owner: desired.owner } : {};
  const group = desired.group !== undefined ? { group: desired.group } : {};

  if (desired.state === "absent") {
    if (actual.type === "absent") return null;
    drift.push({ field: "state", desired: "absent", actual: actual.type });
    return change(desired, "delete", drift, [{ op: "file.remove", path }]);
  }

  const replacing = actual.type !== "absent" && actual.type !== desired.state;
  if (actual.type === "absent" || replacing) {
    drift.push({ field: "state", desired: desired.state, actual: actual.type });
    if (replacing && !(desired.state === "link" && actual.type === "file")) steps.push({ op: "file.remove", path });
    let diff: string | undefined;
    if (desired.state === "file") {
      steps.push(writeStep(desired, { mode: desired.mode ?? DEFAULT_FILE_MODE, ...owner, ...group }));
      if (desired.contentHash) drift.push({ field: "content", desired: `sha256:${desired.contentHash}`, actual: null });
      diff = desired.sensitive ? SENSITIVE_NEW : desired.content && unifiedDiff(path, "", desired.content);
    } else if (desired.state === "directory") {
      steps.push({ op: "file.mkdir", path, mode: desired.mode ?? DEFAULT_DIR_MODE, ...owner, ...group });
    } else {
      steps.push({ op: "file.link", path, target: desired.target as string });
      drift.push({ field: "target", desired: desired.target, actual: null });
      if (desired.owner !== undefined || desired.group !== undefined)
        steps.push({ op: "file.chown", path, ...owner, ...group });
    }
    return change(desired, replacing ? "replace" : "create", drift, steps, diff);
  }

  const ownerDiffers = differs(desired.owner, actual.uid, accounts.users);
  const groupDiffers = differs(desired.group, actual.gid, accounts.groups);
  if (ownerDiffers) drift.push({ field: "owner", desired: desired.owner, actual: nameOf(actual.uid, accounts.users) });
  if (groupDiffers) drift.push({ field: "group", desired: desired.group, actual: nameOf(actual.gid, accounts.groups) });

  if (desired.state === "link") {
    if (actual.target !== desired.target) {
      drift.push({ field: "target", desired: desired.target, actual: actual.target });
      steps.push({ op: "file.link", path, target: desired.target as string });
    }
    if (ownerDiffers || groupDiffers || (steps.length > 0 && (desired.owner || desired.group))) {
      steps.push({ op: "file.chown", path, ...owner, ...group });
    }
    return steps.length ? change(desired, "update", drift, steps) : null;
  }

  const modeDiffers = desired.mode !== undefined && desired.mode !== actual.mode;
  if (modeDiffers) drift.push({ field: "mode", desired: formatMode(desired.mode), actual: formatMode(actual.mode) });

  let diff: string | undefined;
  if (desired.state === "file" && desired.contentHash !== undefined && desired.contentHash !== actual.contentHash) {
    drift.unshift({
      field: "content",
      desired: `sha256:${desired.contentHash}`,
      actual: `sha256:${actual.contentHash}`,
    });
    // A new copy replaces the file: it keeps the current mode and owner unless the profile sets them.
    steps.push(
      writeStep(desired, {
        mode: desired.mode ?? actual.mode ?? DEFAULT_FILE_MODE,
        owner: desired.owner ?? String(actual.uid),
        group: desired.group ?? String(actual.gid),
      }),
    );
    if (desired.sensitive) diff = SENSITIVE_CHANGED;
    else if (actual.text !== undefined && desired.content) {
      diff = unifiedDiff(path, actual.text, desired.content, textPatch);
    }
    diff ??= "binary or large content differs";
  } else {
    // Owner first, then mode: a change of owner clears setuid and setgid, the mode set after it
    // keeps them, so one run converges.
    const keptMode = desired.mode ?? actual.mode;
    if (ownerDiffers || groupDiffers) {
      steps.push({
        op: "file.chown",
        path,
        ...(ownerDiffers ? owner : {}),
        ...(groupDiffers ? group : {}),
      });
    }
    if (modeDiffers || ((ownerDiffers || groupDiffers) && keptMode !== undefined && keptMode & 0o6000)) {
      steps.push({ op: "file.chmod", path, mode: keptMode as number });
    }
  }
  return steps.length ? change(desired, "update", drift, steps, diff) : null;
}

/** True when the desired owner (name or id) is not the actual id; an unknown name always differs. */
function differs(desired: string | undefined, actual: number | undefined, ids: Map<string, number>): boolean {
  if (desired === undefined) return false;
  const id = resolveId(desired, ids);
  return id === undefined || id !== actual;
}

/** Writes the desired content: from memory, or copied from its repository file. */
function writeStep(desired: DesiredFile, meta: { mode: number; owner?: string; group?: string }): FileStep {
  const { path } = desired;
  if (desired.contentFrom !== undefined) {
    return { op: "file.copy", path, from: desired.contentFrom, sha256: desired.contentHash as string, ...meta };
  }
  return { op: "file.write", path, content: desired.content ?? Buffer.alloc(0), ...meta };
}

/**
 * The change, with exact-sized copies of its lists: an array grown by `push` keeps room for 17
 * elements, about 120 bytes more than one or two need, and a first apply keeps thousands of
 * changes until its report is written.
 */
function change(desired: DesiredFile, action: string, drift: Drift[], steps: FileStep[], diff?: string): Change {
  return {
    resource: desired.id,
    kind: "file",
    action,
    drift: drift.slice(),
    steps: steps.slice(),
    ...(diff !== undefined ? { diff } : {}),
  };
}

export function isText(content: Buffer): boolean {
  return content.length <= MAX_DIFF_BYTES && !content.subarray(0, 8192).includes(0);
}

export function unifiedDiff(path: string, before: string, after: Buffer, textPatch?: TextPatch): string | undefined {
  if (!isText(after)) return undefined;
  if (before === "") return creationDiff(path, after.toString("utf8"));
  if (!textPatch) throw new Error(`the diff of ${path} needs the text patch function (loadTextPatch)`);
  const patch = textPatch(path, path, before, after.toString("utf8"), undefined, undefined, { context: 3 });
  // Drop the "Index"/"====" header lines; keep ---/+++ and the hunks.
  return patch
    .split("\n")
    .filter((line) => !line.startsWith("Index: ") && !/^=+$/.test(line))
    .join("\n")
    .trimEnd();
}

/**
 * What `unifiedDiff` gives for a new file (every line added), written directly: a first apply
 * plans thousands of them, and the diff library's work and garbage for each was most of the plan.
 */
function creationDiff(path: string, text: string): string {
  const header = `--- ${path}\n+++ ${path}`;
  if (text === "") return header;
  const lines = text.split("\n");
  const complete = lines[lines.length - 1] === "";
  if (complete) lines.pop();
  const tail = complete ? "" : "\n\\ No newline at end of file";
  return `${header}\n@@ -0,0 +1,${lines.length} @@\n+${lines.join("\n+")}${tail}`.trimEnd();
}
