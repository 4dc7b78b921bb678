/** The fleet at a glance: hosts by presence and by sync state, and hosts per commit with the head marked. */
import type { FleetSummary } from "./api.js";
import { relativeTime, shortCommit } from "./format.js";

const PRESENCE = ["online", "stale", "offline", "lost", "unknown"] as const;
const SYNC = ["in-sync", "drifted", "failed", "never-reported"] as const;
const NAMES: Record<string, string> = { "in-sync": "in sync", "never-reported": "never reported" };

export function Summary(props: {
  summary: FleetSummary;
  now: number;
  onState: (state: string) => void;
  onCommit: (commit: string) => void;
}) {
  const { summary } = props;
  const commits = Object.entries(summary.commits).sort((a, b) => b[1] - a[1]);
  const head = summary.head;
  const onHead = head ? (summary.commits[head.commit] ?? 0) : 0;
  return (
    <section class="summary" aria-label="fleet summary">
      <div class="cards">
        <Counts title="Presence" keys={PRESENCE} counts={summary.presence} onPick={props.onState} />
        <Counts title="Sync" keys={SYNC} counts={summary.sync} onPick={props.onState} />
      </div>
      <div class="commits" data-testid="commits">
        <h2>
          Commits <span class="muted">({summary.hosts} hosts)</span>
        </h2>
        {head ? (
          <p class="head" data-testid="head">
            Newest{head.ref ? ` on ${head.ref}` : ""}: <code>{shortCommit(head.commit)}</code>{" "}
            <span class="muted">
              ({head.from === "push" ? "pushed" : "first reported"} {relativeTime(head.at, props.now)})
            </span>{" "}
            — <strong data-testid="head-count">{onHead}</strong> of {summary.hosts} hosts on it
          </p>
        ) : (
          <p class="muted">No commit reported yet.</p>
        )}
        <ul class="bars">
          {commits.map(([commit, n]) => {
            const isHead = head?.commit === commit;
            return (
              <li key={commit} class={isHead ? "head" : ""}>
                <button type="button" class="link" onClick={() => props.onCommit(commit)} title={commit}>
                  <code>{shortCommit(commit)}</code>
                  {isHead ? <span class="badge">newest</span> : null}
                </button>
                <span class="bar" aria-hidden="true">
                  <span style={{ width: `${Math.max(1, (100 * n) / Math.max(1, summary.hosts))}%` }} />
                </span>
                <span class="n">{n}</span>
              </li>
            );
          })}
        </ul>
      </div>
    </section>
  );
}

function Counts(props: {
  title: string;
  keys: readonly string[];
  counts: Record<string, number>;
  onPick: (key: string) => void;
}) {
  return (
    <div class="card">
      <h2>{props.title}</h2>
      <ul class="counts">
        {props.keys.map((key) => (
          <li key={key}>
            <button
              type="button"
              class={`count ${key}`}
              data-testid={`count-${key}`}
              onClick={() => props.onPick(key)}
              aria-label={`${props.counts[key] ?? 0} ${NAMES[key] ?? key}: show them`}
            >
              <strong>{props.counts[key] ?? 0}</strong> {NAMES[key] ?? key}
            </button>
          </li>
        ))}
      </ul>
    </div>
  );
}
