/** `driftless facts`: what templates and fleet.yaml `match` see. */
import * as path from "node:path";
import { collectFacts } from "../facts/collect.js";
import { HostFs } from "../host/fs.js";
import { parse } from "./args.js";
import type { Io } from "./io.js";

export const FACTS_HELP = `Usage: driftless facts [--root DIR] [--json]

Prints the facts of this host, as templates ({{ facts.os.arch }}) and fleet.yaml
match rules (facts: { os.arch: arm64 }) see them.

Options:
  --root DIR    read the facts of the tree mounted at DIR (its /etc/os-release)
  --json        print JSON
  -h, --help    show this help
`;

export async function runFacts(args: string[], io: Io): Promise<number> {
  const { values } = parse(args, { root: { type: "string" }, json: { type: "boolean" } });
  if (values.help) {
    io.out(FACTS_HELP);
    return 0;
  }
  const facts = collectFacts(new HostFs(path.resolve(values.root ?? "/")));
  if (values.json) {
    io.out(JSON.stringify(facts, null, 2));
    return 0;
  }
  for (const [key, value] of flatten(facts)) io.out(`${io.style.bold(key)} = ${JSON.stringify(value)}`);
  return 0;
}

export function flatten(value: unknown, prefix = ""): Array<[string, unknown]> {
  if (typeof value !== "object" || value === null || Array.isArray(value)) return [[prefix, value]];
  return Object.entries(value).flatMap(([k, v]) => flatten(v, prefix ? `${prefix}.${k}` : k));
}
