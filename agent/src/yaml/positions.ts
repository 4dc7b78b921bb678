/**
 * Positions on demand. A file is parsed with positions (located.ts, which loads the `yaml`
 * library on first use) only when it has a problem or an error needs a line and column, and
 * then once: a run over valid files never loads that library nor builds a document tree.
 */
import type { DriftlessError, Location } from "../errors.js";
import { formatField } from "./fields.js";
import type { LocatedDocument } from "./located.js";

/** Every non-empty document of `text` with its locator; syntax errors go to `errors`. */
export async function parseWithPositions(
  text: string,
  file: string,
  errors: DriftlessError[],
): Promise<LocatedDocument[]> {
  const { parseLocatedYaml } = await import("./located.js");
  return parseLocatedYaml(text, file, errors);
}

/**
 * The positions of a set of files (a repository's), each parsed with positions on its first
 * lookup. Document numbers count the documents parseWithPositions returns.
 */
export class PositionCache {
  readonly #read: (file: string) => string;
  readonly #parsed = new Map<string, Promise<LocatedDocument[] | null>>();

  constructor(read: (file: string) => string) {
    this.#read = read;
  }

  /** File, line, column and field; file and field only when the file cannot be read again. */
  async locate(
    file: string,
    document: number,
    fieldPath: readonly PropertyKey[],
    options?: { key?: boolean },
  ): Promise<Location> {
    let parsed = this.#parsed.get(file);
    if (!parsed) {
      parsed = this.#parse(file);
      this.#parsed.set(file, parsed);
    }
    const located = (await parsed)?.[document];
    if (located) return located.locate(fieldPath, options);
    const field = formatField(fieldPath);
    return { file, ...(field ? { field } : {}) };
  }

  /** Uses documents already parsed with positions for `file`. */
  add(file: string, documents: LocatedDocument[]): void {
    this.#parsed.set(file, Promise.resolve(documents));
  }

  /** Lets go of every document tree held. */
  clear(): void {
    this.#parsed.clear();
  }

  async #parse(file: string): Promise<LocatedDocument[] | null> {
    let text: string;
    try {
      text = this.#read(file);
    } catch {
      return null;
    }
    // Its errors were reported when the file was loaded.
    return parseWithPositions(text, file, []);
  }
}
