/**
 * `--json` output of a large object without building its whole text at once: the same text as
 * `JSON.stringify(value, null, 2)`, handed out in pieces of whole lines. A run of 10,000 files
 * prints about 11 MB; as one string (and one buffer to write it) it was the largest allocation
 * of the run.
 */

const INDENT = "  ";

/**
 * Calls `out` with consecutive pieces of `JSON.stringify(value, null, 2)`, each a run of whole
 * lines without its final line break (`out` adds one, as `Io.out` does). The top-level object's
 * array values are written element by element; everything else goes through `JSON.stringify`.
 */
export function writePrettyJson(
  value: Record<string, unknown>,
  out: (text: string) => void,
  pieceChars = 1 << 16,
): void {
  let piece = "";
  const line = (text: string) => {
    piece = piece ? `${piece}\n${text}` : text;
    if (piece.length >= pieceChars) {
      out(piece);
      piece = "";
    }
  };
  // The keys JSON.stringify leaves out.
  const entries = Object.entries(value).filter(
    ([, v]) => v !== undefined && typeof v !== "function" && typeof v !== "symbol",
  );
  if (entries.length === 0) {
    out("{}");
    return;
  }
  line("{");
  entries.forEach(([key, v], i) => {
    const comma = i < entries.length - 1 ? "," : "";
    const name = `${INDENT}${JSON.stringify(key)}: `;
    if (!Array.isArray(v) || v.length === 0) {
      line(`${name}${indented(jsonText(v) as string, INDENT)}${comma}`);
      return;
    }
    line(`${name}[`);
    v.forEach((element, k) => {
      const text = jsonText(element) ?? "null"; // as JSON.stringify writes undefined in an array
      line(`${INDENT}${INDENT}${indented(text, INDENT + INDENT)}${k < v.length - 1 ? "," : ""}`);
    });
    line(`${INDENT}]${comma}`);
  });
  line("}");
  if (piece) out(piece);
}

/** What JSON.stringify writes for `v` with an indent of 2 (undefined: nothing, as for a function). */
function jsonText(v: unknown): string | undefined {
  return JSON.stringify(v, null, 2) as string | undefined;
}

/** `text` with every line after the first indented by `by` (JSON strings hold no raw line break). */
function indented(text: string, by: string): string {
  return text.includes("\n") ? text.replaceAll("\n", `\n${by}`) : text;
}
