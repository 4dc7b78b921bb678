/**
 * YAML without positions, for the files that are valid (nearly all of them): js-yaml with the
 * YAML 1.2 core schema builds plain values straight from the text, about five times faster than
 * the `yaml` library builds its document tree and in much less memory. Its values are the ones
 * `yaml` gives for our documents (test/unit/yaml-fast.test.ts); where they could differ, or
 * anything is wrong, this returns null and the file is read with positions (located.ts), whose
 * result counts and whose errors name line and column.
 */
import { CORE_SCHEMA, loadAll } from "js-yaml";

/** The documents of `text`, or null when only a parse with positions can say what they are. */
export function parseFast(text: string): unknown[] | null {
  if (mayReadDifferently(text)) return null;
  let values: unknown[];
  try {
    // No aliases (`*name`): js-yaml would give every alias of a map or list the same object, which
    // a "billion laughs" document turns into exponential work for whatever walks the value; the
    // parse with positions expands aliases up to a limit instead.
    values = loadAll(text, { schema: CORE_SCHEMA, maxAliases: 0 });
  } catch {
    return null; // a syntax error, a duplicate key, an unknown tag, an alias, ...
  }
  // No document, or a null one, is never a valid profile or configuration, and there the two
  // parsers can disagree (a file holding only `...` has no document for js-yaml, a null one for
  // `yaml`): left to the parse with positions.
  return values.length === 0 || values.includes(null) ? null : values;
}

/**
 * A directive (`%YAML 1.1` makes `yes` true for `yaml`; js-yaml ignores it) or an explicit tag
 * (`!!float 1` is 1 for js-yaml, "1" for `yaml`). Looked for in the whole text: `!!` in a string
 * sends a file the slow way too, which is rare and still correct.
 */
function mayReadDifferently(text: string): boolean {
  return /^\ufeff?%/.test(text) || text.includes("\n%") || text.includes("!!") || text.includes("!<");
}
