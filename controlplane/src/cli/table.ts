/** Plain text tables for the fleet CLI: columns padded to their widest cell, colour applied after padding. */
import type { Style } from "../../../agent/src/cli/style.js";

export interface Cell {
  text: string;
  colour?: (s: string) => string;
}

export function table(header: string[], rows: Array<Array<string | Cell>>, style: Style): string[] {
  const cells = rows.map((row) => row.map((c) => (typeof c === "string" ? { text: c } : c)));
  const widths = header.map((h, i) => Math.max(h.length, ...cells.map((row) => row[i]?.text.length ?? 0)));
  const last = header.length - 1;
  const line = (row: Cell[]) =>
    row
      .map((cell, i) => {
        const padded = i === last ? cell.text : cell.text.padEnd(widths[i] ?? 0);
        return cell.colour ? cell.colour(padded) : padded;
      })
      .join("  ")
      .trimEnd();
  return [style.bold(line(header.map((text) => ({ text })))), ...cells.map(line)];
}

/** "12s ago", "5m ago", "3h ago", "2d ago"; "never" without a time. */
export function age(iso: string | null, now: Date): string {
  if (!iso) return "never";
  const ms = now.getTime() - Date.parse(iso);
  if (!Number.isFinite(ms)) return iso;
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 90) return `${s}s ago`;
  if (s < 90 * 60) return `${Math.round(s / 60)}m ago`;
  if (s < 36 * 3600) return `${Math.round(s / 3600)}h ago`;
  return `${Math.round(s / 86400)}d ago`;
}

export function shortCommit(commit: string | null | undefined): string {
  return commit ? commit.slice(0, 12) : "-";
}
