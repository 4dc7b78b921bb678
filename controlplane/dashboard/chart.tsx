/**
 * The run history as an inline SVG: one bar per run (height: duration), a dot for its number of
 * changes, failed runs in red and marked with a cross, oldest on the left.
 */
import type { RunView } from "./api.js";
import { durationMs, durationText } from "./format.js";

const W = 640;
const H = 140;
const PAD = 24;

export function RunChart({ runs }: { runs: RunView[] }) {
  const shown = runs.filter((r) => r.kind === "run").reverse();
  if (shown.length === 0) return <p class="muted">No runs yet.</p>;
  const maxMs = Math.max(1, ...shown.map(durationMs));
  const maxChanges = Math.max(1, ...shown.map((r) => r.changes.length));
  const step = (W - 2 * PAD) / shown.length;
  const bar = Math.max(2, Math.min(24, step * 0.7));
  const failedCount = shown.filter(failed).length;
  return (
    <figure class="chart">
      <svg
        viewBox={`0 0 ${W} ${H}`}
        role="img"
        aria-label={`${shown.length} runs, longest ${durationText(maxMs)}, ${failedCount} failed`}
      >
        <line class="axis" x1={PAD} y1={H - PAD} x2={W - PAD} y2={H - PAD} />
        {shown.map((run, i) => {
          const x = PAD + i * step + (step - bar) / 2;
          const h = ((H - 2 * PAD) * durationMs(run)) / maxMs;
          const cy = H - PAD - ((H - 2 * PAD) * run.changes.length) / maxChanges;
          const bad = failed(run);
          return (
            <g key={run.runId} class={bad ? "run failed" : "run"}>
              <title>{`run ${run.seq}: ${run.result}, ${durationText(durationMs(run))}, ${run.changes.length} changes`}</title>
              <rect x={x} y={H - PAD - h} width={bar} height={Math.max(1, h)} />
              <circle class="changes" cx={x + bar / 2} cy={cy} r={3} />
              {bad ? (
                <text class="mark" x={x + bar / 2} y={PAD - 6} text-anchor="middle">
                  ×
                </text>
              ) : null}
            </g>
          );
        })}
        <text class="legend" x={PAD} y={14}>
          {`bars: duration (max ${durationText(maxMs)}) · dots: changes (max ${maxChanges}) · × failed`}
        </text>
      </svg>
    </figure>
  );
}

export function failed(run: RunView): boolean {
  return run.sync === "failed" || run.result === "failed" || run.result === "error" || run.errors.length > 0;
}
