/**
 * YAML with positions: every document of a file parsed with a locator that turns a field path
 * (as zod reports it) into file, line, column and field. Profiles and the agent configuration
 * are read through it when a file has a problem, and its result is then the one that counts.
 * Import it only through positions.ts: a static import would load the `yaml` library (and build
 * its document tree, several times the size of the text) in every run.
 */
import { isMap, isScalar, isSeq, LineCounter, type Node, parseAllDocuments, type Document as YamlDocument } from "yaml";
import { DriftlessError, type Location } from "../errors.js";
import { formatField, type Locator } from "./fields.js";

export interface LocatedDocument {
  value: unknown;
  locate: Locator;
}

/** Every non-empty document of `text`; syntax errors go to `errors` (that document is skipped). */
export function parseLocatedYaml(text: string, file: string, errors: DriftlessError[]): LocatedDocument[] {
  const lineCounter = new LineCounter();
  const docs = parseAllDocuments(text, { lineCounter, prettyErrors: false, uniqueKeys: true });
  const out: LocatedDocument[] = [];
  for (const yamlDoc of Array.isArray(docs) ? docs : []) {
    const position = (offset: number): Location => {
      const { line, col } = lineCounter.linePos(offset);
      return { file, line, column: col };
    };
    if (yamlDoc.errors.length > 0) {
      for (const e of yamlDoc.errors) {
        errors.push(
          new DriftlessError(e.message.split("\n")[0] ?? e.message, {
            code: "EYAML",
            phase: "validate",
            location: position(e.pos[0]),
          }),
        );
      }
      continue;
    }
    if (yamlDoc.contents === null) continue; // an empty document (a lone `---`)
    const locate: Locator = (fieldPath, options) => {
      const node = deepestNode(yamlDoc, fieldPath, options?.key ?? false);
      const field = formatField(fieldPath);
      return { ...position(node?.range?.[0] ?? 0), ...(field ? { field } : {}) };
    };
    let value: unknown;
    try {
      value = yamlDoc.toJS({ maxAliasCount: 100 });
    } catch (error) {
      // Aliases that expand past the limit (a "billion laughs" document).
      errors.push(
        new DriftlessError((error as Error).message, {
          code: "EYAML",
          phase: "validate",
          location: position(yamlDoc.contents.range?.[0] ?? 0),
        }),
      );
      continue;
    }
    out.push({ value, locate });
  }
  return out;
}

/** The YAML node at `fieldPath`, or the deepest one that exists on the way. */
function deepestNode(yamlDoc: YamlDocument.Parsed, fieldPath: readonly PropertyKey[], wantKey: boolean): Node | null {
  let node: Node | null = yamlDoc.contents as Node | null;
  const rest = [...fieldPath];
  while (rest.length > 0 && node) {
    const key = rest[0];
    let next: Node | null = null;
    if (isMap(node)) {
      for (const pair of node.items) {
        if (isScalar(pair.key) && String(pair.key.value) === String(key)) {
          // The key itself for unknown fields and for keys whose value is empty.
          const pointAtKey = (wantKey && rest.length === 1) || !pair.value;
          next = (pointAtKey ? pair.key : pair.value) as Node;
          break;
        }
      }
    } else if (isSeq(node) && typeof key === "number") {
      next = (node.items[key] as Node | undefined) ?? null;
    }
    if (!next) break;
    node = next;
    rest.shift();
  }
  return node;
}
