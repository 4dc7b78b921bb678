/**
 * YAML with positions: every document of a file parsed with a locator that turns a field path
 * (as zod reports it) into file, line, column and field; zod issues turned into located errors.
 * Profiles and the agent configuration are both read through it.
 */
import { isMap, isScalar, isSeq, LineCounter, type Node, parseAllDocuments, type Document as YamlDocument } from "yaml";
import type { z } from "zod";
import { DriftlessError, type Location } from "../errors.js";

export type Locator = (fieldPath: readonly PropertyKey[], options?: { key?: boolean }) => Location;

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
    out.push({ value: yamlDoc.toJS({ maxAliasCount: 100 }) as unknown, locate });
  }
  return out;
}

/** zod issues as located errors; an unknown key is located at the key itself. */
export function issuesToErrors(issues: z.core.$ZodIssue[], locate: Locator): DriftlessError[] {
  const errors: DriftlessError[] = [];
  for (const issue of issues) {
    if (issue.code === "unrecognized_keys") {
      for (const key of issue.keys) {
        errors.push(
          new DriftlessError(`unknown field "${key}"`, {
            code: "EUNKNOWN_FIELD",
            phase: "validate",
            location: locate([...issue.path, key], { key: true }),
          }),
        );
      }
    } else {
      errors.push(
        new DriftlessError(issue.message, { code: "ESCHEMA", phase: "validate", location: locate(issue.path) }),
      );
    }
  }
  return errors;
}

export function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** `files[2].mode` */
export function formatField(fieldPath: readonly PropertyKey[]): string {
  let out = "";
  for (const part of fieldPath) {
    if (typeof part === "number") out += `[${part}]`;
    else out += out ? `.${String(part)}` : String(part);
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
