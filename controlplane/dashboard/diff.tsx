/** A unified diff as coloured lines; every line is a text node. */
export function UnifiedDiff({ text }: { text: string }) {
  const lines = text.replace(/\n$/, "").split("\n");
  return (
    <pre class="diff">
      {lines.map((line, i) => {
        const kind =
          line.startsWith("+++") || line.startsWith("---")
            ? "file"
            : line.startsWith("@@")
              ? "hunk"
              : line.startsWith("+")
                ? "add"
                : line.startsWith("-")
                  ? "del"
                  : "ctx";
        return (
          <span key={i} class={`line ${kind}`}>
            {line}
            {"\n"}
          </span>
        );
      })}
    </pre>
  );
}
