/**
 * One host: presence, sync, commit, labels, facts, the drift of its last run per resource (field,
 * desired, actual; a file's content as the run's unified diff), the run history as a chart, each
 * run's changes and errors, and the presence history. Everything the host sent is text.
 */
import { ConfirmAction } from "./action.js";
import { api, type HostPageData, type RunView } from "./api.js";
import { failed, RunChart } from "./chart.js";
import { UnifiedDiff } from "./diff.js";
import { durationMs, durationText, flatten, relativeTime, shortCommit, valueText } from "./format.js";

interface Change {
  resource: string;
  action: string;
  outcome?: string;
  diff?: string;
}

interface RunError {
  code: string;
  message: string;
  resource?: string;
}

export function HostPage(props: { host: HostPageData | null; runs: RunView[]; now: number; error: string | null }) {
  const { host } = props;
  if (props.error) {
    return (
      <p class="error" role="alert">
        {props.error}
      </p>
    );
  }
  if (!host) return <p class="muted">Loading…</p>;
  const lastRun = props.runs.find((r) => r.kind === "run");
  return (
    <article class="host" aria-labelledby="host-title">
      <p>
        <a href="#/">← Fleet</a>
      </p>
      <header class="host-head">
        <h1 id="host-title">{host.id}</h1>
        <span class={`pill ${host.presence}`} data-testid="presence">
          {host.presence}
        </span>
        <span class={`pill ${host.sync}`} data-testid="sync">
          {host.sync}
        </span>
        <ConfirmAction
          testId="converge"
          label="Converge now"
          question={`Converge ${host.id} now?`}
          run={async () => {
            const answer = await api.converge(host.id);
            return `Converge sent (command ${answer.id.slice(0, 8)}); the run shows up here when the host reports it.`;
          }}
        />
      </header>
      <dl class="facts-brief">
        <dt>Commit</dt>
        <dd>
          <code title={host.commit ?? ""}>{shortCommit(host.commit) || "none"}</code>
        </dd>
        <dt>Last seen</dt>
        <dd title={host.lastSeen ?? ""}>{relativeTime(host.lastSeen, props.now)}</dd>
        <dt>Agent</dt>
        <dd>
          {host.version ?? "?"} {host.mode ? `(${host.mode})` : ""}
        </dd>
        <dt>Labels</dt>
        <dd data-testid="labels">
          {Object.entries(host.labels).length === 0
            ? "none"
            : Object.entries(host.labels).map(([k, v]) => (
                <span class="tag" key={k}>
                  {`${k}=${v}`}
                </span>
              ))}
        </dd>
      </dl>

      <section aria-labelledby="drift-title">
        <h2 id="drift-title">Drift</h2>
        <Drift drift={host.drift} changes={(lastRun?.changes ?? []) as Change[]} />
      </section>

      <section aria-labelledby="runs-title">
        <h2 id="runs-title">Runs</h2>
        <RunChart runs={props.runs} />
        <ol class="runs" data-testid="runs">
          {props.runs.map((run) => (
            <Run key={run.runId} run={run} now={props.now} />
          ))}
        </ol>
      </section>

      <section aria-labelledby="facts-title">
        <h2 id="facts-title">Facts</h2>
        {host.facts ? (
          <table class="kv">
            <tbody>
              {flatten(host.facts).map(([k, v]) => (
                <tr key={k}>
                  <th scope="row">{k}</th>
                  <td>{v}</td>
                </tr>
              ))}
            </tbody>
          </table>
        ) : (
          <p class="muted">No facts reported.</p>
        )}
      </section>

      <section aria-labelledby="history-title">
        <h2 id="history-title">Presence and sync history</h2>
        {host.history.length === 0 ? (
          <p class="muted">Nothing yet.</p>
        ) : (
          <ol class="history">
            {host.history.map((h, i) => (
              <li key={`${h.at}-${i}`}>
                <time dateTime={h.at} title={h.at}>
                  {relativeTime(h.at, props.now)}
                </time>{" "}
                {h.field}: {h.from ?? "—"} → <span class={`pill ${h.to}`}>{h.to}</span>
              </li>
            ))}
          </ol>
        )}
      </section>
    </article>
  );
}

function Drift(props: { drift: HostPageData["drift"]; changes: Change[] }) {
  if (props.drift.length === 0) return <p class="muted">No drift: the host matched its desired state.</p>;
  const byResource = new Map<string, HostPageData["drift"]>();
  for (const entry of props.drift) {
    const list = byResource.get(entry.resource) ?? [];
    list.push(entry);
    byResource.set(entry.resource, list);
  }
  return (
    <div class="drift" data-testid="drift">
      {[...byResource].map(([resource, entries]) => {
        const diff = props.changes.find((c) => c.resource === resource && typeof c.diff === "string")?.diff;
        return (
          <section class="resource" key={resource} aria-label={resource}>
            <h3>
              <code>{resource}</code>
            </h3>
            <table class="fields">
              <thead>
                <tr>
                  <th scope="col">Field</th>
                  <th scope="col">Desired</th>
                  <th scope="col">Actual</th>
                </tr>
              </thead>
              <tbody>
                {entries.map((e) => (
                  <tr key={e.field}>
                    <td>{e.field}</td>
                    <td class="desired">{e.field === "content" && diff ? "(see the diff)" : valueText(e.desired)}</td>
                    <td class="actual">{e.field === "content" && diff ? "" : valueText(e.actual)}</td>
                  </tr>
                ))}
              </tbody>
            </table>
            {diff ? <UnifiedDiff text={diff} /> : null}
          </section>
        );
      })}
    </div>
  );
}

function Run({ run, now }: { run: RunView; now: number }) {
  if (run.kind === "summary") {
    return (
      <li class="run-item">
        <span class="muted">
          {run.fold?.count ?? "?"} older runs folded ({JSON.stringify(run.fold?.results ?? {})})
        </span>
      </li>
    );
  }
  const changes = run.changes as Change[];
  const errors = run.errors as RunError[];
  return (
    <li class={failed(run) ? "run-item failed" : "run-item"} data-seq={run.seq}>
      <details>
        <summary>
          <span class={`pill ${run.sync}`}>{run.result}</span> run {run.seq} · {run.mode} ·{" "}
          <code>{shortCommit(run.commit)}</code> · {durationText(durationMs(run))} · {changes.length} changes
          {errors.length > 0 ? ` · ${errors.length} errors` : ""} ·{" "}
          <time dateTime={run.endedAt} title={run.endedAt}>
            {relativeTime(run.endedAt, now)}
          </time>
        </summary>
        {changes.length > 0 ? (
          <ul class="change-list">
            {changes.map((c, i) => (
              <li key={i}>
                <code>{c.resource}</code> {c.action}
                {c.outcome ? ` (${c.outcome})` : ""}
                {typeof c.diff === "string" ? <UnifiedDiff text={c.diff} /> : null}
              </li>
            ))}
          </ul>
        ) : null}
        {errors.length > 0 ? (
          <ul class="error-list">
            {errors.map((e, i) => (
              <li key={i}>
                <code>{e.code}</code> {e.resource ? `${e.resource}: ` : ""}
                {e.message}
              </li>
            ))}
          </ul>
        ) : null}
      </details>
    </li>
  );
}
