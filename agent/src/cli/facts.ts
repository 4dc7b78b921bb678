/** `driftless facts`: what templates and fleet.yaml `match` see. */
import * as path from "node:path";
import { gatherFacts } from "../facts/gather.js";
import { HostFs } from "../host/fs.js";
import { parse } from "./args.js";
import type { Io } from "./io.js";

export const FACTS_HELP = `Usage: driftless facts [--root DIR] [--state DIR] [--refresh] [--json]

Prints the facts of this host, as templates ({{ facts.os.arch }}) and fleet.yaml
match rules (facts: { os.arch: arm64 }) see them. CPU details, disks and
virtualization are probed once per boot and cached in STATE/facts.json; host
name and network addresses are read every time. Facts a probe could not get in
time are left out and named in 'incomplete'.

Options:
  --root DIR    read the facts of the tree mounted at DIR (its /etc/os-release)
  --state DIR   where the cache lives (default /var/lib/driftless, or
                DIR/var/lib/driftless under --root); not written when not writable
  --refresh     probe again instead of using the cache (and rewrite it)
  --json        print JSON
  -h, --help    show this help
`;

export async function runFacts(args: string[], io: Io): Promise<number> {
  const { values } = parse(args, {
    root: { type: "string" },
    state: { type: "string" },
    refresh: { type: "boolean" },
    json: { type: "boolean" },
  });
  if (values.help) {
    io.out(FACTS_HELP);
    return 0;
  }
  const root = path.resolve(values.root ?? "/");
  const stateDir = path.resolve(values.state ?? path.join(root, "var/lib/driftless"));
  const machineFs = new HostFs("/");
  const facts = await gatherFacts({
    fs: new HostFs(root),
    machineFs,
    cacheFs: machineFs,
    cacheFile: path.join(stateDir, "facts.json"),
    clock: io.clock,
    refresh: values.refresh ?? false,
  });
  if (values.json) {
    io.out(JSON.stringify(facts, null, 2));
    return 0;
  }
  for (const [key, value] of flatten(facts)) io.out(`${io.style.bold(key)} = ${JSON.stringify(value)}`);
  return 0;
}

/**
 * `{ os: { arch: "amd64" } }` -> [["os.arch", "amd64"]]: the dotted paths fleet.yaml `match`
 * uses. Lists of objects get their index as a key (`disks.0.mount`); lists of plain values
 * (addresses) stay one value.
 */
export function flatten(value: unknown, prefix = ""): Array<[string, unknown]> {
  if (typeof value !== "object" || value === null) return [[prefix, value]];
  if (Array.isArray(value) && (value.length === 0 || value.some((v) => typeof v !== "object" || v === null))) {
    return [[prefix, value]];
  }
  return Object.entries(value).flatMap(([k, v]) => flatten(v, prefix ? `${prefix}.${k}` : k));
}
