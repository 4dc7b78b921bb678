/**
 * The dashboard: a header (live state, refresh the fleet, sign out), then the fleet (summary and
 * host table) or one host (`#/hosts/ID`). Every view reloads what it shows when the live stream
 * says something changed.
 */
import { useCallback, useEffect, useRef, useState } from "preact/hooks";
import { ConfirmAction } from "./action.js";
import { api, type FleetSummary, type Host, type HostPageData, type HostQuery, type RunView } from "./api.js";
import { HostPage } from "./host-page.js";
import { HostTable, PAGE_SIZE } from "./host-table.js";
import { type FleetMessage, useLive } from "./live.js";
import { Summary } from "./summary.js";

function routeOf(hash: string): { view: "fleet" } | { view: "host"; id: string } {
  const match = /^#\/hosts\/(.+)$/.exec(hash);
  if (!match) return { view: "fleet" };
  try {
    return { view: "host", id: decodeURIComponent(match[1] as string) };
  } catch {
    return { view: "fleet" };
  }
}

const FIRST_QUERY: HostQuery = {
  state: "",
  label: "",
  commit: "",
  q: "",
  sort: "id",
  order: "asc",
  offset: 0,
  limit: PAGE_SIZE,
};

/** Runs `load` and keeps only the answer of the latest call (a slow old answer never overwrites a new one). */
function useLatest() {
  const counter = useRef(0);
  return useCallback(async <T,>(load: () => Promise<T>, apply: (value: T) => void, fail: (e: Error) => void) => {
    const mine = ++counter.current;
    try {
      const value = await load();
      if (mine === counter.current) apply(value);
    } catch (error) {
      if (mine === counter.current) fail(error as Error);
    }
  }, []);
}

export function App() {
  const [route, setRoute] = useState(routeOf(location.hash));
  const [now, setNow] = useState(Date.now());
  const [summary, setSummary] = useState<FleetSummary | null>(null);
  const [query, setQuery] = useState<HostQuery>(FIRST_QUERY);
  const [hosts, setHosts] = useState<{ hosts: Host[]; total: number } | null>(null);
  const [host, setHost] = useState<HostPageData | null>(null);
  const [runs, setRuns] = useState<RunView[]>([]);
  const [error, setError] = useState<string | null>(null);
  const latestHosts = useLatest();
  const latestSummary = useLatest();
  const latestHost = useLatest();

  useEffect(() => {
    const onHash = () => setRoute(routeOf(location.hash));
    addEventListener("hashchange", onHash);
    const tick = setInterval(() => setNow(Date.now()), 10_000);
    return () => {
      removeEventListener("hashchange", onHash);
      clearInterval(tick);
    };
  }, []);

  const loadSummary = useCallback(
    () => latestSummary(api.summary, setSummary, (e) => setError(e.message)),
    [latestSummary],
  );
  const loadHosts = useCallback(
    (q: HostQuery) =>
      latestHosts(
        () => api.hosts(q),
        (list) => {
          setHosts(list);
          setError(null);
          setNow(Date.now());
        },
        (e) => setError(e.message),
      ),
    [latestHosts],
  );
  const hostId = route.view === "host" ? route.id : null;
  const loadHost = useCallback(
    (id: string) =>
      latestHost(
        () => Promise.all([api.host(id), api.runs(id)]),
        ([detail, list]) => {
          setHost(detail);
          setRuns(list.runs);
          setError(null);
          setNow(Date.now());
        },
        (e) => setError(e.message),
      ),
    [latestHost],
  );

  // The table first: the server answers in order, and the rows are what an operator waits for.
  useEffect(() => {
    if (hostId === null) void loadHosts(query);
  }, [hostId, query, loadHosts]);
  useEffect(() => {
    void loadSummary();
  }, [loadSummary]);
  useEffect(() => {
    setHost(null);
    setRuns([]);
    setError(null);
    if (hostId !== null) {
      void loadHost(hostId);
      document.getElementById("main")?.focus();
    }
  }, [hostId, loadHost]);

  const live = useLive((message: FleetMessage) => {
    void loadSummary();
    if (hostId === null) void loadHosts(query);
    else if (message.more || message.hosts.includes(hostId)) void loadHost(hostId);
  });

  const changeQuery = (change: Partial<HostQuery>) => setQuery((q) => ({ ...q, ...change }));

  return (
    <>
      {/* A button, not a link to "#main": the hash is the route, and "#main" would read as the fleet's. */}
      <button type="button" class="skip" onClick={() => document.getElementById("main")?.focus()}>
        Skip to content
      </button>
      <header class="top">
        <a class="brand" href="#/">
          Driftless
        </a>
        <span class={`live ${live}`} role="status" data-testid="live" data-state={live}>
          {live === "live" ? "● live" : live === "connecting" ? "○ connecting…" : "○ live updates lost: reconnecting…"}
        </span>
        <span class="spacer" />
        <ConfirmAction
          testId="refresh"
          label="Refresh fleet"
          question="Tell every host to fetch and converge now?"
          run={async () => {
            const answer = await api.refresh();
            return `Refresh sent (command ${answer.id.slice(0, 8)}).`;
          }}
        />
        <button type="button" onClick={() => void api.logout()} data-testid="logout">
          Sign out
        </button>
      </header>
      <main id="main" tabIndex={-1}>
        {route.view === "host" ? (
          <HostPage host={host} runs={runs} now={now} error={error} />
        ) : (
          <>
            {summary ? (
              <Summary
                summary={summary}
                now={now}
                onState={(state) => changeQuery({ state, offset: 0 })}
                onCommit={(commit) => changeQuery({ commit, offset: 0 })}
              />
            ) : null}
            <HostTable
              query={query}
              onQuery={changeQuery}
              hosts={hosts?.hosts ?? null}
              total={hosts?.total ?? 0}
              summary={summary}
              now={now}
              error={error}
            />
          </>
        )}
      </main>
    </>
  );
}
