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

/**
 * The resources in order. Most profiles declare what a resource depends on before it, in phase
 * order: then every edge points forward in that order and it is the answer as it stands. Otherwise
 * the ready resource that comes first in it goes next (a heap), which gives the same order when no
 * edge points back.
 */
export function orderResources(resources: Desired[]): Ordering {
  const byId = new Map<string, Desired>();
  for (const resource of resources) byId.set(resource.id, resource);
  // A resource's place when nothing reorders it: its phase, then where it was declared.
  const rank = new Map<string, number>();
  for (const [i, resource] of resources.entries()) rank.set(resource.id, PHASE[resource.kind] * resources.length + i);
  const dependents = new Map<string, string[]>();
  const waiting = new Map<string, number>();
  let backward = false;
  const addEdge = (from: string, to: string) => {
    const list = dependents.get(from);
    if (list) {
      if (!list.includes(to)) list.push(to);
      else return;
    } else dependents.set(from, [to]);
    waiting.set(to, (waiting.get(to) ?? 0) + 1);
    // A resource on itself is a cycle: it is not forward either.
    if ((rank.get(from) as number) >= (rank.get(to) as number)) backward = true;
  };
  const managedParent = managedDirectories(byId);
  for (const resource of resources) {
    for (const dep of resource.after) if (byId.has(dep)) addEdge(dep, resource.id);
    if (resource.kind === "file") {
      const parent = managedParent(resource.path);
      if (parent !== undefined) addEdge(parent, resource.id);
      for (const svc of resource.notify) if (byId.has(svc)) addEdge(resource.id, svc);
    }
  }
  if (!backward) {
    const order = [0, 1, 2].flatMap((phase) => resources.filter((r) => PHASE[r.kind] === phase));
    return { order, dependents };
  }
  const ready = new MinHeap<string>((id) => rank.get(id) as number);
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

/**
 * For a file path, the id of the nearest directory above it that the profile manages (a file
 * inside it comes after it), or undefined. Each directory is looked up once: the files of one
 * directory share the answer.
 */
function managedDirectories(byId: Map<string, Desired>): (path: string) => string | undefined {
  const known = new Map<string, string | undefined>();
  const nearest = (dir: string): string | undefined => {
    if (known.has(dir)) return known.get(dir);
    const resource = byId.get(`file:${dir}`);
    let found: string | undefined;
    if (resource?.kind === "file" && resource.state === "directory") found = resource.id;
    else if (dir !== "/") found = nearest(parentOf(dir));
    known.set(dir, found);
    return found;
  };
  return (path) => (path === "/" ? undefined : nearest(parentOf(path)));
}

function parentOf(path: string): string {
  return path.slice(0, path.lastIndexOf("/")) || "/";
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
      const item = items[i] as T;
      items[i] = items[parent] as T;
      items[parent] = item;
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
        const item = items[i] as T;
        items[i] = items[smallest] as T;
        items[smallest] = item;
        i = smallest;
      }
    }
    return top;
  }
}
