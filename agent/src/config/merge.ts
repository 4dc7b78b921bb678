/**
 * Sets single keys of an agent configuration's text (what `driftless install` does with its
 * flags): the keys given replace those in the file, every other key, comment and layout stays.
 * Pure: text in, text out. A key already at its value is left alone, so a run with the same
 * flags returns the text unchanged, byte for byte.
 */
import { isMap, parseDocument } from "yaml";
import { DriftlessError } from "../errors.js";

/** One key to set, or to remove (`value: undefined`). */
export interface ConfigSetting {
  key: string[];
  value: unknown;
}

export interface MergedConfig {
  text: string;
  /** The keys whose value changed (`source.url`), in the order given; empty: `text` is the input. */
  changed: string[];
}

/** The header of a configuration `driftless install` writes. */
export const CONFIG_HEADER =
  "# Driftless agent configuration (docs/agent.md), written by driftless install; edits are kept.\n" +
  "# Reload with: systemctl reload driftless\n";

/**
 * `existing` is the file's text, or null when there is none: then the file starts from the
 * header and `defaults` (the settings given replace them), its keys in the order of `defaults`
 * and then of the settings.
 */
export function mergeConfig(
  existing: string | null,
  settings: ConfigSetting[],
  defaults: ConfigSetting[],
  file: string,
): MergedConfig {
  const doc = parseConfigDocument(existing ?? `${CONFIG_HEADER}apiVersion: driftless/v1\nkind: AgentConfig\n`, file);
  const changed: string[] = [];
  const apply = (setting: ConfigSetting) => {
    const current = doc.getIn(setting.key);
    const currentValue = current !== null && typeof current === "object" ? toJs(current) : current;
    if (canonical(currentValue) === canonical(setting.value)) return;
    if (setting.value === undefined) doc.deleteIn(setting.key);
    else doc.setIn(setting.key, doc.createNode(setting.value, { flow: isFlatObject(setting.value) }));
    changed.push(setting.key.join("."));
  };
  if (existing === null) {
    const given = new Map(settings.map((s) => [s.key.join("."), s]));
    for (const d of defaults) apply(given.get(d.key.join(".")) ?? d);
    for (const setting of settings) apply(setting);
  } else {
    for (const setting of settings) apply(setting);
  }
  if (changed.length === 0 && existing !== null) return { text: existing, changed };
  return { text: doc.toString({ lineWidth: 0 }), changed };
}

/** The configuration's plain value (to look keys up); its errors located in `file`. */
export function readConfigValue(text: string, file: string): Record<string, unknown> {
  return parseConfigDocument(text, file).toJS() as Record<string, unknown>;
}

function parseConfigDocument(text: string, file: string) {
  const doc = parseDocument(text);
  if (doc.errors.length > 0) {
    const first = doc.errors[0];
    const line = first?.linePos?.[0];
    throw new DriftlessError(`${first?.message.split("\n")[0]}; fix the file or remove it`, {
      code: "ECONFIG",
      phase: "load",
      location: { file, ...(line ? { line: line.line, column: line.col } : {}) },
    });
  }
  if (!isMap(doc.contents)) {
    throw new DriftlessError("must hold one AgentConfig mapping; fix the file or remove it", {
      code: "ECONFIG",
      phase: "load",
      location: { file },
    });
  }
  return doc;
}

function toJs(node: object): unknown {
  return "toJSON" in node && typeof node.toJSON === "function" ? node.toJSON() : node;
}

/** A stable form for comparing values: object keys sorted. */
function canonical(value: unknown): string {
  return JSON.stringify(value, (_key, v: unknown) =>
    v !== null && typeof v === "object" && !Array.isArray(v)
      ? Object.fromEntries(Object.entries(v).sort(([a], [b]) => a.localeCompare(b)))
      : v,
  );
}

/** `{ role: gateway, site: lyon }` reads best on one line. */
function isFlatObject(value: unknown): boolean {
  return (
    value !== null &&
    typeof value === "object" &&
    !Array.isArray(value) &&
    Object.values(value).every((v) => typeof v !== "object")
  );
}
