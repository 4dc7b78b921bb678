/**
 * Which facts a load of the repository used. The fleet's `match` rules (profile/select.ts) and
 * the templates (profile/template.ts) read the facts through a view that notes every path read
 * and what it held there, so that a compiled desired state (state/compiled.ts) is reused while
 * those facts are the same, and not thrown away when a fact nothing read (uptime, addresses)
 * moves. A path read into an object or array notes only its kind (iterating an array reads its
 * length and elements, each noted); one whose keys were listed (printed as JSON, iterated as an
 * object) notes its whole subtree.
 */

/** A fact path (its keys, from the root of the facts) and what it held. */
export interface FactUse {
  path: string[];
  /**
   * `absent`, `null`, `string:…`/`number:…`/`boolean:…` for a value, `object` or `array` for a
   * container only read into, `json:…` (canonical JSON) for a whole subtree.
   */
  seen: string;
}

export interface FactsRecorder {
  /** The facts to hand to the load: a read-only view that records what is read. */
  facts: Record<string, unknown>;
  /** What was read so far, each path once, sorted. */
  used(): FactUse[];
}

/** A view of `facts` that records the paths read (the facts themselves are not changed). */
export function recordFactsUse(facts: Record<string, unknown>): FactsRecorder {
  const uses = new Map<string, FactUse>();
  const views = new Map<string, object>();
  const note = (at: string[], whole: boolean) => {
    const key = JSON.stringify(at);
    const known = uses.get(key);
    if (known && (!whole || known.seen.startsWith("json:"))) return;
    uses.set(key, { path: at, seen: seenAt(facts, at, whole) });
  };
  /** An own property's value: a primitive as it is, an object or array through a view of its own. */
  const follow = (t: object, property: string, child: string[]): unknown => {
    const value = (t as Record<string, unknown>)[property];
    if (typeof value !== "object" || value === null) return value;
    const descriptor = Object.getOwnPropertyDescriptor(t, property);
    if (descriptor && !descriptor.configurable && !descriptor.writable) {
      // A frozen value must be returned as is (a proxy invariant): it counts whole.
      note(child, true);
      return value;
    }
    return view(value, child);
  };
  const view = (target: object, at: string[]): object => {
    const key = JSON.stringify(at);
    const existing = views.get(key);
    if (existing) return existing;
    const made = new Proxy(target, {
      get(t, property, receiver) {
        // Facts are JSON: a symbol (Symbol.iterator, Symbol.toStringTag) finds the prototype's,
        // which depends on the kind already noted; what iterating then reads comes through here.
        if (typeof property === "symbol") return Reflect.get(t, property, receiver);
        const child = [...at, property];
        note(child, false);
        if (!Object.hasOwn(t, property)) return Reflect.get(t, property, receiver);
        return follow(t, property, child);
      },
      has(t, property) {
        if (typeof property === "string") note([...at, property], false);
        return Reflect.has(t, property);
      },
      getOwnPropertyDescriptor(t, property) {
        const descriptor = Reflect.getOwnPropertyDescriptor(t, property);
        if (typeof property === "symbol" || !descriptor) return descriptor;
        const child = [...at, property];
        note(child, false);
        // The value through the view too, so that nothing reads it unnoted.
        return descriptor.configurable && "value" in descriptor
          ? { ...descriptor, value: follow(t, property, child) }
          : descriptor;
      },
      ownKeys(t) {
        note(at, true);
        return Reflect.ownKeys(t);
      },
      set: () => false,
      defineProperty: () => false,
      deleteProperty: () => false,
    });
    views.set(key, made);
    return made;
  };
  return {
    facts: view(facts, []) as Record<string, unknown>,
    used: () => {
      // What lies under a whole subtree is already in it.
      const wholes = [...uses.values()].filter((u) => u.seen.startsWith("json:")).map((u) => u.path);
      const covered = (use: FactUse) =>
        wholes.some((w) => w.length < use.path.length && w.every((key, i) => use.path[i] === key));
      return [...uses.values()].filter((u) => !covered(u)).sort((a, b) => comparePaths(a.path, b.path));
    },
  };
}

/** True when every recorded fact path holds now what it held when it was recorded. */
export function factsStillHold(facts: Record<string, unknown>, uses: FactUse[]): boolean {
  return uses.every((use) => seenAt(facts, use.path, use.seen.startsWith("json:")) === use.seen);
}

/** What `facts` holds at `at` (own properties only, as the templates read them). */
function seenAt(facts: unknown, at: string[], whole: boolean): string {
  let value: unknown = facts;
  for (const key of at) {
    if (typeof value !== "object" || value === null || !Object.hasOwn(value, key)) return "absent";
    value = (value as Record<string, unknown>)[key];
  }
  if (value === undefined) return "absent";
  if (value === null) return "null";
  if (typeof value === "object") {
    if (whole) return `json:${canonical(value)}`;
    return Array.isArray(value) ? "array" : "object";
  }
  return `${typeof value}:${String(value)}`;
}

/** JSON with the keys of every object sorted, so that equal values give equal text. */
function canonical(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) =>
    v && typeof v === "object" && !Array.isArray(v)
      ? Object.fromEntries(Object.entries(v as Record<string, unknown>).sort(([a], [b]) => compare(a, b)))
      : v,
  );
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/** Key by key; a path before the paths under it. */
function comparePaths(a: string[], b: string[]): number {
  for (let i = 0; i < Math.min(a.length, b.length); i++) {
    const order = compare(a[i] as string, b[i] as string);
    if (order !== 0) return order;
  }
  return a.length - b.length;
}
