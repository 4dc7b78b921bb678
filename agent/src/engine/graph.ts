/**
 * The order of application: packages, then files, then services, in declaration order, changed
 * by dependency edges (`after:`, `notify:`, and a file on its managed parent directory). A cycle
 * is an error.
 */
import { DriftlessError } from "../errors.js";
import type { Desired } from "../resources/types.js";

const PHASE: Record<Desired["kind"], number> = { package: 0, file: 1, service: 2 };

export interface Ordering {
  order: Desired[];
  /** id -> ids that depend on it (directly). */
  dependents: Map<string, string[]>;
}

export function dependenciesOf(resource: Desired, byId: Map<string, Desired>): string[] {
  const deps = new Set(resource.after);
  if (resource.kind === "file") {
    // A file inside a directory the profile manages comes after that directory.
    let dir = resource.path;
    while (dir !== "/") {
      dir = dir.slice(0, dir.lastIndexOf("/")) || "/";
      const parent = byId.get(`file:${dir}`);
      if (parent?.kind === "file" && parent.state === "directory") {
        deps.add(parent.id);
        break;
      }
    }
  }
  return [...deps];
}

export function orderResources(resources: Desired[]): Ordering {
  const byId = new Map(resources.map((r) => [r.id, r]));
  const index = new Map(resources.map((r, i) => [r.id, i]));
  const dependents = new Map<string, string[]>();
  const waiting = new Map<string, number>();
  const addEdge = (from: string, to: string) => {
    const list = dependents.get(from);
    if (list) {
      if (!list.includes(to)) list.push(to);
      else return;
    } else dependents.set(from, [to]);
    waiting.set(to, (waiting.get(to) ?? 0) + 1);
  };
  for (const resource of resources) {
    for (const dep of dependenciesOf(resource, byId)) if (byId.has(dep)) addEdge(dep, resource.id);
    if (resource.kind === "file") for (const svc of resource.notify) if (byId.has(svc)) addEdge(resource.id, svc);
  }
  const priority = (id: string) => {
    const r = byId.get(id) as Desired;
    return PHASE[r.kind] * 1e9 + (index.get(id) ?? 0);
  };
  const ready = new MinHeap<string>(priority);
  for (const r of resources) if (!waiting.get(r.id)) ready.push(r.id);
  const order: Desired[] = [];
  while (ready.size > 0) {
    const id = ready.pop() as string;
    order.push(byId.get(id) as Desired);
    for (const next of dependents.get(id) ?? []) {
      const left = (waiting.get(next) ?? 0) - 1;
      waiting.set(next, left);
      if (left === 0) ready.push(next);
    }
  }
  if (order.length < resources.length) {
    const stuck = resources.filter((r) => (waiting.get(r.id) ?? 0) > 0);
    const cycle = findCycle(
      stuck.map((r) => r.id),
      dependents,
    );
    const first = byId.get(cycle[0] ?? "") ?? stuck[0];
    // Its line and column are the caller's to find (from `first.declaredAt`): that reads the file.
    throw new DriftlessError(`dependency cycle: ${cycle.join(" -> ")}`, {
      code: "ECYCLE",
      phase: "plan",
      ...(first ? { location: { file: first.declaredAt.file }, resource: first.id } : {}),
    });
  }
  return { order, dependents };
}

function findCycle(ids: string[], dependents: Map<string, string[]>): string[] {
  const inSet = new Set(ids);
  const state = new Map<string, "visiting" | "done">();
  const stack: string[] = [];
  const visit = (id: string): string[] | null => {
    state.set(id, "visiting");
    stack.push(id);
    for (const next of dependents.get(id) ?? []) {
      if (!inSet.has(next)) continue;
      if (state.get(next) === "visiting") return [...stack.slice(stack.indexOf(next)), next];
      if (!state.has(next)) {
        const found = visit(next);
        if (found) return found;
      }
    }
    stack.pop();
    state.set(id, "done");
    return null;
  };
  for (const id of ids) {
    if (!state.has(id)) {
      const found = visit(id);
      if (found) return found;
    }
  }
  return ids;
}

/**
 * All resources that must be skipped when `failed` fails (transitively), added to `out`; the
 * dependents of an id already in `out` are taken to be there too (`out` grows over a batch).
 */
export function transitiveDependents(
  failed: string,
  dependents: Map<string, string[]>,
  out = new Set<string>(),
): Set<string> {
  const queue = [...(dependents.get(failed) ?? [])];
  while (queue.length > 0) {
    const id = queue.pop() as string;
    if (out.has(id)) continue;
    out.add(id);
    queue.push(...(dependents.get(id) ?? []));
  }
  return out;
}

class MinHeap<T> {
  readonly #items: T[] = [];
  readonly #key: (item: T) => number;

  constructor(key: (item: T) => number) {
    this.#key = key;
  }

  get size(): number {
    return this.#items.length;
  }

  push(item: T): void {
    const items = this.#items;
    items.push(item);
    let i = items.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (this.#key(items[parent] as T) <= this.#key(items[i] as T)) break;
      [items[parent], items[i]] = [items[i] as T, items[parent] as T];
      i = parent;
    }
  }

  pop(): T | undefined {
    const items = this.#items;
    const top = items[0];
    const last = items.pop();
    if (items.length > 0 && last !== undefined) {
      items[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let smallest = i;
        if (l < items.length && this.#key(items[l] as T) < this.#key(items[smallest] as T)) smallest = l;
        if (r < items.length && this.#key(items[r] as T) < this.#key(items[smallest] as T)) smallest = r;
        if (smallest === i) break;
        [items[smallest], items[i]] = [items[i] as T, items[smallest] as T];
        i = smallest;
      }
    }
    return top;
  }
}
