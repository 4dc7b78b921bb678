/** Reads user and group names from the managed host's /etc/passwd and /etc/group (works under --root). */
import type { HostFs } from "../../host/fs.js";
import type { Accounts } from "../types.js";

export function readAccounts(fs: HostFs): Accounts {
  return {
    users: parseIds(fs.readTextIfExists("/etc/passwd")),
    groups: parseIds(fs.readTextIfExists("/etc/group")),
  };
}

/** `name:x:id:...` lines -> name -> id */
export function parseIds(text: string | null): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of (text ?? "").split("\n")) {
    const [name, , id] = line.split(":");
    if (name && id !== undefined && /^\d+$/.test(id) && !out.has(name)) out.set(name, Number(id));
  }
  return out;
}

/** A name or a numeric id -> the id, or undefined when the name is unknown. */
export function resolveId(nameOrId: string, ids: Map<string, number>): number | undefined {
  if (/^\d+$/.test(nameOrId)) return Number(nameOrId);
  return ids.get(nameOrId);
}

export function nameOf(id: number | undefined, ids: Map<string, number>): string | number | undefined {
  if (id === undefined) return undefined;
  for (const [name, value] of ids) if (value === id) return name;
  return id;
}
