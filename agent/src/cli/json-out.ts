/**
 * `--json` output of a large object without building its whole text at once: the same text as
 * `JSON.stringify(value, null, 2)`, handed out in pieces of whole lines. A run of 10,000 files
 * prints about 11 MB; as one string (and one buffer to write it) it was the largest allocation
 * of the run.
 */

const INDENT = "  ";

/**
 * The text of `JSON.stringify(value, null, 2)` in consecutive pieces of about `pieceChars`
 * characters, each a run of whole lines without its final line break. The top-level object's
 * array values are written element by element; everything else goes through `JSON.stringify`.
 *
 * Pieces are small on purpose: a piece is a rope of many short strings until it is written, and
 * pieces of 64K characters lived long enough to be promoted to V8's old space, which added
 * 12-15 MB to the peak memory of a 10,000-file run. Pieces of 8K die young.
 */
export function* prettyJsonPieces(value: Record<string, unknown>, pieceChars = 1 << 13): Generator<string> {
  // The keys JSON.stringify leaves out.
  const entries = Object.entries(value).filter(
    ([, v]) => v !== undefined && typeof v !== "function" && typeof v !== "symbol",
  );
  if (entries.length === 0) {
    yield "{}";
    return;
  }
  let piece = "{";
  /** Adds a line; returns the piece to hand out when it is long enough. */
  const add = (line: string): string | undefined => {
    piece = piece ? `${piece}\n${line}` : line;
    if (piece.length < pieceChars) return undefined;
    const full = piece;
    piece = "";
    return full;
  };
  for (const [i, [key, v]] of entries.entries()) {
    const comma = i < entries.length - 1 ? "," : "";
    const name = `${INDENT}${JSON.stringify(key)}: `;
    let full: string | undefined;
    if (!Array.isArray(v) || v.length === 0) {
      full = add(`${name}${indented(jsonText(v) as string, INDENT)}${comma}`);
      if (full !== undefined) yield full;
      continue;
    }
    full = add(`${name}[`);
    if (full !== undefined) yield full;
    for (const [k, element] of v.entries()) {
      const text = jsonText(element) ?? "null"; // as JSON.stringify writes undefined in an array
      full = add(`${INDENT}${INDENT}${indented(text, INDENT + INDENT)}${k < v.length - 1 ? "," : ""}`);
      if (full !== undefined) yield full;
    }
    full = add(`${INDENT}]${comma}`);
    if (full !== undefined) yield full;
  }
  const last = add("}");
  if (last !== undefined) yield last;
  else yield piece;
}

/**
 * Writes `pieces` to `stream`, each followed by a line break, waiting whenever the stream holds
 * more than it wants (a pipe whose reader is behind): otherwise every piece would wait in memory
 * at once, which is what writing in pieces is meant to avoid.
 */
export async function writePaced(stream: NodeJS.WritableStream, pieces: Iterable<string>): Promise<void> {
  for (const piece of pieces) {
    if (stream.write(`${piece}\n`)) continue;
    await new Promise<void>((resolve) => {
      const done = () => {
        stream.off("drain", done);
        stream.off("error", done);
        stream.off("close", done);
        resolve();
      };
      stream.on("drain", done);
      stream.on("error", done); // the wait ends; a write after it fails as it would have
      stream.on("close", done);
    });
  }
}

/** What JSON.stringify writes for `v` with an indent of 2 (undefined: nothing, as for a function). */
function jsonText(v: unknown): string | undefined {
  return JSON.stringify(v, null, 2) as string | undefined;
}

/** `text` with every line after the first indented by `by` (JSON strings hold no raw line break). */
function indented(text: string, by: string): string {
  return text.includes("\n") ? text.replaceAll("\n", `\n${by}`) : text;
}
