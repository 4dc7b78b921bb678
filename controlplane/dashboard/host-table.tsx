/**
 * The host table: one page at a time from the server (filtered, sorted and paged there, so 10,000
 * hosts cost the browser one page). Filters: name, state, label, commit; every column sorts.
 */
import type { FleetSummary, Host, HostQuery } from "./api.js";
import { labelText, relativeTime, shortCommit } from "./format.js";

export const PAGE_SIZE = 100;

const COLUMNS: Array<{ key: string; title: string }> = [
  { key: "id", title: "Host" },
  { key: "presence", title: "Presence" },
  { key: "sync", title: "Sync" },
  { key: "commit", title: "Commit" },
  { key: "lastSeen", title: "Last seen" },
  { key: "lastRun", title: "Last run" },
  { key: "version", title: "Agent" },
  { key: "labels", title: "Labels" },
];

const STATES = ["online", "stale", "offline", "lost", "unknown", "in-sync", "drifted", "failed", "never-reported"];

export function HostTable(props: {
  query: HostQuery;
  onQuery: (change: Partial<HostQuery>) => void;
  hosts: Host[] | null;
  total: number;
  summary: FleetSummary | null;
  now: number;
  error: string | null;
}) {
  const { query, onQuery, hosts } = props;
  const labels = Object.entries(props.summary?.labels ?? {}).flatMap(([k, values]) =>
    Object.keys(values).map((v) => `${k}=${v}`),
  );
  const commits = Object.keys(props.summary?.commits ?? {});
  const sortBy = (key: string) =>
    onQuery({ sort: key, order: query.sort === key && query.order === "asc" ? "desc" : "asc", offset: 0 });
  const last = Math.min(props.total, query.offset + PAGE_SIZE);
  return (
    <section class="hosts" aria-label="hosts">
      <form class="filters" aria-label="filter hosts" onSubmit={(e) => e.preventDefault()}>
        <label>
          Name
          <input
            type="search"
            name="q"
            value={query.q}
            placeholder="host name"
            onInput={(e) => onQuery({ q: (e.target as HTMLInputElement).value, offset: 0 })}
          />
        </label>
        <Choice title="State" name="state" query={query} onQuery={onQuery} options={STATES.map((s) => [s, s])} />
        <Choice title="Label" name="label" query={query} onQuery={onQuery} options={labels.map((l) => [l, l])} />
        <Choice
          title="Commit"
          name="commit"
          query={query}
          onQuery={onQuery}
          options={commits.map((c) => [c, shortCommit(c)])}
        />
        {query.q || query.state || query.label || query.commit ? (
          <button type="button" onClick={() => onQuery({ q: "", state: "", label: "", commit: "", offset: 0 })}>
            Clear filters
          </button>
        ) : null}
      </form>
      {props.error ? (
        <p class="error" role="alert">
          {props.error}
        </p>
      ) : null}
      <div class="table-wrap">
        <table>
          <thead>
            <tr>
              {COLUMNS.map((c) => (
                <th
                  key={c.key}
                  scope="col"
                  aria-sort={query.sort === c.key ? (query.order === "asc" ? "ascending" : "descending") : "none"}
                >
                  <button type="button" class="sort" onClick={() => sortBy(c.key)} data-testid={`sort-${c.key}`}>
                    {c.title}
                    <span aria-hidden="true">{query.sort === c.key ? (query.order === "asc" ? " ▲" : " ▼") : ""}</span>
                  </button>
                </th>
              ))}
            </tr>
          </thead>
          <tbody data-testid="host-rows">
            {(hosts ?? []).map((h) => (
              <tr key={h.id}>
                <td>
                  <a href={`#/hosts/${encodeURIComponent(h.id)}`}>{h.id}</a>
                </td>
                <td>
                  <span class={`pill ${h.presence}`}>{h.presence}</span>
                </td>
                <td>
                  <span class={`pill ${h.sync}`}>{h.sync}</span>
                </td>
                <td>
                  <code title={h.commit ?? ""}>{shortCommit(h.commit)}</code>
                </td>
                <td title={h.lastSeen ?? ""}>{relativeTime(h.lastSeen, props.now)}</td>
                <td title={h.lastRun?.endedAt ?? ""}>
                  {h.lastRun ? `${h.lastRun.result}, ${relativeTime(h.lastRun.endedAt, props.now)}` : ""}
                </td>
                <td>{h.version ?? ""}</td>
                <td class="labels">{labelText(h.labels)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      <nav class="pager" aria-label="pages">
        <button
          type="button"
          disabled={query.offset === 0}
          onClick={() => onQuery({ offset: Math.max(0, query.offset - PAGE_SIZE) })}
        >
          Previous
        </button>
        <span data-testid="range">
          {hosts === null
            ? "loading…"
            : props.total === 0
              ? "no hosts"
              : `${query.offset + 1}–${last} of ${props.total}`}
        </span>
        <button
          type="button"
          disabled={query.offset + PAGE_SIZE >= props.total}
          onClick={() => onQuery({ offset: query.offset + PAGE_SIZE })}
        >
          Next
        </button>
      </nav>
    </section>
  );
}

/** A filter picked from a list; "any" clears it. */
function Choice(props: {
  title: string;
  name: "state" | "label" | "commit";
  query: HostQuery;
  onQuery: (change: Partial<HostQuery>) => void;
  options: Array<[value: string, text: string]>;
}) {
  return (
    <label>
      {props.title}
      <select
        name={props.name}
        value={props.query[props.name]}
        onChange={(e) => props.onQuery({ [props.name]: (e.target as HTMLSelectElement).value, offset: 0 })}
      >
        <option value="">any</option>
        {props.options.map(([v, text]) => (
          <option key={v} value={v}>
            {text}
          </option>
        ))}
      </select>
    </label>
  );
}
