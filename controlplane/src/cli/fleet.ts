/**
 * The fleet CLI: `driftlessctl hosts|host ID|drift [ID]|runs ID|converge ID|refresh`, a client of
 * the control plane's HTTP API.
 *
 * Output: tables (coloured on a terminal, unless NO_COLOR), JSON with `--json`. A table is also
 * what a pipe gets, without colours: scripts ask for `--json`, so its shape is the one to rely on.
 * Exit codes: 0 ok; 1 bad usage, API unreachable, token refused, server error; 2 (`hosts`,
 * `drift`) a listed host is drifted or failed; 3 the host does not exist.
 */
import { parse } from "../../../agent/src/cli/args.js";
import { makeStyle, type Style } from "../../../agent/src/cli/style.js";
import { DriftlessError } from "../../../agent/src/errors.js";
import type { HostDetail, HostSummary, RunView } from "../store/types.js";
import { ApiClient, CliError, type FetchFn, normaliseUrl } from "./client.js";
import { age, type Cell, shortCommit, table } from "./table.js";

export const FLEET_VERBS = ["hosts", "host", "drift", "runs", "converge", "refresh"] as const;
export type FleetVerb = (typeof FLEET_VERBS)[number];

export const DEFAULT_URL = "http://127.0.0.1:8080";
export const DEFAULT_TOKEN_FILE = "./driftless-data/api-token";

export interface FleetIo {
  out(line: string): void;
  err(line: string): void;
  /** stdout is a terminal: colours (unless NO_COLOR). */
  isTTY: boolean;
  env: Readonly<Record<string, string | undefined>>;
  readFile(path: string): Promise<string>;
  fetch: FetchFn;
  now(): Date;
}

const COMMON = `Connection:
  --url URL          the control plane (env DRIFTLESS_URL, default ${DEFAULT_URL})
  --token-file FILE  the API token (env DRIFTLESS_TOKEN_FILE, default ${DEFAULT_TOKEN_FILE})
  --json             print JSON (the stable form for scripts)
  -h, --help         show this help

Tables are coloured on a terminal (not with NO_COLOR), plain in a pipe.`;

const EXIT_LIST = `Exit codes: 0 every listed host in sync (or not reported yet), 2 a listed host is drifted or
failed, 1 bad usage or the control plane unreachable or refusing the token, 3 no such host.`;

export const FLEET_HELP: Record<FleetVerb, string> = {
  hosts: `Usage: driftlessctl hosts [--label KEY=VALUE]... [--state STATE] [--commit SHA] [options]

Lists the fleet's hosts: presence, sync state, commit, last seen, last run.
(driftlessctl hosts add|remove NAME manage the hosts' MQTT credentials, locally: see --help there.)

Filters:
  --label KEY=VALUE  hosts with this label (repeatable: all must match)
  --state STATE      a presence (online, stale, offline, lost, unknown) or a sync state
                     (in-sync, drifted, failed, never-reported)
  --commit SHA       hosts at this commit

${COMMON}

${EXIT_LIST}
`,
  host: `Usage: driftlessctl host ID [options]

One host: presence, sync state, commit, version, labels, last run, drift, recent changes of state.

${COMMON}

Exit codes: 0 found, 3 no such host, 1 bad usage or the control plane unreachable.
`,
  drift: `Usage: driftlessctl drift [ID] [options]

The drift of the last run: of one host, or of every drifted or failed host.

${COMMON}

${EXIT_LIST}
`,
  runs: `Usage: driftlessctl runs ID [--limit N] [options]

A host's last runs as the control plane stored them, newest first.

  --limit N          how many (default 20, at most 500)

${COMMON}

Exit codes: 0 found, 3 no such host, 1 bad usage or the control plane unreachable.
`,
  converge: `Usage: driftlessctl converge ID [options]

Asks one host to converge now (MQTT command on its cmd topic, QoS 1; an offline host gets it when
it reconnects, if its session persists).

${COMMON}

Exit codes: 0 sent, 3 no such host, 1 bad usage or the control plane unreachable.
`,
  refresh: `Usage: driftlessctl refresh [--commit SHA] [--ref BRANCH] [options]

Asks every host to fetch its Git source now (fleet command, QoS 1), as a Git webhook does after a
push. Each host waits a random part of its splay first.

  --commit SHA       the commit pushed (full id), passed on to the hosts
  --ref BRANCH       the branch pushed, passed on to the hosts

${COMMON}

Exit codes: 0 sent, 1 bad usage or the control plane unreachable.
`,
};

const CONNECTION = {
  url: { type: "string" },
  "token-file": { type: "string" },
  json: { type: "boolean" },
} as const;

const OPTIONS = {
  hosts: {
    ...CONNECTION,
    label: { type: "string", multiple: true },
    state: { type: "string" },
    commit: { type: "string" },
  },
  host: CONNECTION,
  drift: CONNECTION,
  runs: { ...CONNECTION, limit: { type: "string" } },
  converge: CONNECTION,
  refresh: { ...CONNECTION, commit: { type: "string" }, ref: { type: "string" } },
} as const;

/** How many positionals each verb takes: [min, max]. */
const POSITIONALS: Record<FleetVerb, [number, number]> = {
  hosts: [0, 0],
  host: [1, 1],
  drift: [0, 1],
  runs: [1, 1],
  converge: [1, 1],
  refresh: [0, 0],
};

export function isFleetVerb(verb: string | undefined): verb is FleetVerb {
  return (FLEET_VERBS as readonly string[]).includes(verb ?? "");
}

interface Context {
  api: ApiClient;
  io: FleetIo;
  style: Style;
  json: boolean;
}

export async function runFleetCommand(verb: FleetVerb, args: string[], io: FleetIo): Promise<number> {
  try {
    return await run(verb, args, io);
  } catch (error) {
    if (error instanceof CliError) {
      io.err(`driftlessctl ${verb}: ${error.message}`);
      return error.exitCode;
    }
    if (error instanceof DriftlessError && error.code === "EARGS") {
      io.err(`driftlessctl ${verb}: ${error.message}\n\n${FLEET_HELP[verb]}`);
      return 1;
    }
    throw error;
  }
}

async function run(verb: FleetVerb, args: string[], io: FleetIo): Promise<number> {
  const { values, positionals } = parse(args, OPTIONS[verb], true);
  if (values.help) {
    io.out(FLEET_HELP[verb]);
    return 0;
  }
  const [min, max] = POSITIONALS[verb];
  if (positionals.length < min || positionals.length > max) {
    const what = positionals.length > max ? `unexpected argument ${positionals[max]}` : "a host id is needed";
    throw new DriftlessError(what, { code: "EARGS", phase: "args" });
  }
  const v = values as Record<string, string | string[] | boolean | undefined>;
  const url = normaliseUrl(str(v.url) ?? (io.env.DRIFTLESS_URL || DEFAULT_URL));
  const tokenFile = str(v["token-file"]) ?? (io.env.DRIFTLESS_TOKEN_FILE || DEFAULT_TOKEN_FILE);
  let token: string;
  try {
    token = (await io.readFile(tokenFile)).trim();
  } catch (error) {
    const code = (error as { code?: string }).code ?? (error as Error).message;
    throw new CliError(
      `cannot read the API token file ${tokenFile} (${code}); set --token-file or DRIFTLESS_TOKEN_FILE`,
    );
  }
  if (!token) throw new CliError(`the API token file ${tokenFile} is empty`);
  const context: Context = {
    api: new ApiClient({ url, token, tokenSource: tokenFile, fetch: io.fetch }),
    io,
    style: makeStyle(io.isTTY && !io.env.NO_COLOR),
    json: v.json === true,
  };
  const id = positionals[0];
  switch (verb) {
    case "hosts":
      return hosts(context, v);
    case "host":
      return host(context, id as string);
    case "drift":
      return drift(context, id);
    case "runs":
      return runs(context, id as string, str(v.limit));
    case "converge":
      return converge(context, id as string);
    case "refresh":
      return refresh(context, str(v.commit), str(v.ref));
  }
}

function str(value: unknown): string | undefined {
  return typeof value === "string" ? value : undefined;
}

function hostPath(id: string): string {
  return `hosts/${encodeURIComponent(id)}`;
}

function isBad(sync: string): boolean {
  return sync === "drifted" || sync === "failed";
}

function syncCell(sync: string, s: Style): Cell {
  return {
    text: sync,
    colour: sync === "in-sync" ? s.green : sync === "drifted" ? s.yellow : isBad(sync) ? s.red : s.dim,
  };
}

function presenceCell(presence: string, s: Style): Cell {
  const colour =
    presence === "online" ? s.green : presence === "stale" ? s.yellow : presence === "unknown" ? s.dim : s.red;
  return { text: presence, colour };
}

function labelsText(labels: Record<string, string>): string {
  return Object.entries(labels)
    .map(([k, val]) => `${k}=${val}`)
    .join(",");
}

/** Throws a 3 (not found) that names the host rather than the API path. */
async function getHost(c: Context, id: string): Promise<HostDetail> {
  try {
    return await c.api.get<HostDetail>(hostPath(id));
  } catch (error) {
    if (error instanceof CliError && error.exitCode === 3) throw new CliError(`no host ${id} at ${c.api.url}`, 3);
    throw error;
  }
}

async function hosts(c: Context, v: Record<string, unknown>): Promise<number> {
  const query = new URLSearchParams();
  for (const label of (v.label as string[] | undefined) ?? []) {
    if (label.indexOf("=") <= 0)
      throw new DriftlessError(`--label ${label}: expected KEY=VALUE`, { code: "EARGS", phase: "args" });
    query.append("label", label);
  }
  if (typeof v.state === "string") query.set("state", v.state);
  if (typeof v.commit === "string") query.set("commit", v.commit);
  const qs = query.toString();
  const { hosts: list } = await c.api.get<{ hosts: HostSummary[] }>(`hosts${qs ? `?${qs}` : ""}`);
  if (c.json) c.io.out(JSON.stringify({ hosts: list }, null, 2));
  else if (list.length === 0)
    c.io.out(qs ? "No hosts match." : `No hosts yet (driftlessctl hosts add NAME enrols one).`);
  else {
    for (const line of hostsTable(list, c.style, c.io.now())) c.io.out(line);
  }
  return list.some((h) => isBad(h.sync)) ? 2 : 0;
}

/** The lines of the hosts table (also printed by `driftlessctl demo`). */
export function hostsTable(list: HostSummary[], s: Style, now: Date): string[] {
  const rows = list.map((h) => [
    h.id,
    presenceCell(h.presence, s),
    syncCell(h.sync, s),
    shortCommit(h.commit),
    age(h.lastSeen, now),
    h.lastRun ? `${h.lastRun.result} ${age(h.lastRun.endedAt, now)}` : "-",
    labelsText(h.labels),
  ]);
  return table(["HOST", "PRESENCE", "SYNC", "COMMIT", "LAST SEEN", "LAST RUN", "LABELS"], rows, s);
}

async function host(c: Context, id: string): Promise<number> {
  const detail = await getHost(c, id);
  if (c.json) {
    c.io.out(JSON.stringify(detail, null, 2));
    return 0;
  }
  const s = c.style;
  const now = c.io.now();
  const field = (name: string, value: string) => c.io.out(`${s.bold(`${name}:`.padEnd(11))}${value}`);
  field("host", detail.id);
  field("presence", presenceCell(detail.presence, s).colour?.(detail.presence) ?? detail.presence);
  field("sync", syncCell(detail.sync, s).colour?.(detail.sync) ?? detail.sync);
  field("commit", detail.commit ?? "-");
  field("last seen", detail.lastSeen ? `${detail.lastSeen} (${age(detail.lastSeen, now)})` : "never");
  field("version", detail.version ?? "-");
  field("mode", detail.mode ?? "-");
  field("labels", labelsText(detail.labels) || "-");
  field(
    "last run",
    detail.lastRun ? `#${detail.lastRun.seq} ${detail.lastRun.result} at ${detail.lastRun.endedAt}` : "none reported",
  );
  printDrift(c, detail.drift);
  if (detail.history.length > 0) {
    c.io.out("");
    c.io.out(s.bold("Recent changes:"));
    for (const h of detail.history.slice(0, 10)) c.io.out(`  ${h.at}  ${h.field} ${h.from ?? "-"} -> ${h.to}`);
  }
  return 0;
}

function printDrift(c: Context, entries: HostDetail["drift"]): void {
  if (entries.length === 0) return;
  c.io.out("");
  const rows = entries.map((d) => [d.resource, d.field, brief(d.desired), brief(d.actual)]);
  for (const line of table(["RESOURCE", "FIELD", "DESIRED", "ACTUAL"], rows, c.style)) c.io.out(`  ${line}`);
}

function brief(value: unknown): string {
  const text = typeof value === "string" ? value : (JSON.stringify(value) ?? "-");
  const oneLine = text.replace(/\s+/g, " ");
  return oneLine.length > 60 ? `${oneLine.slice(0, 57)}...` : oneLine;
}

async function drift(c: Context, id: string | undefined): Promise<number> {
  let details: HostDetail[];
  if (id !== undefined) details = [await getHost(c, id)];
  else {
    const [drifted, failed] = await Promise.all([
      c.api.get<{ hosts: HostSummary[] }>("hosts?state=drifted"),
      c.api.get<{ hosts: HostSummary[] }>("hosts?state=failed"),
    ]);
    const ids = [...drifted.hosts, ...failed.hosts].map((h) => h.id).sort();
    details = await Promise.all(ids.map((h) => getHost(c, h)));
  }
  const bad = details.some((d) => isBad(d.sync));
  if (c.json) {
    const hostsOut = details.map((d) => ({
      id: d.id,
      sync: d.sync,
      commit: d.commit,
      lastRun: d.lastRun,
      drift: d.drift,
    }));
    c.io.out(JSON.stringify({ hosts: hostsOut }, null, 2));
    return bad ? 2 : 0;
  }
  if (details.length === 0) c.io.out("No drifted or failed hosts.");
  for (const d of details) {
    const head = `${c.style.bold(d.id)}  ${syncCell(d.sync, c.style).colour?.(d.sync) ?? d.sync}  ${shortCommit(d.commit)}`;
    c.io.out(head);
    if (d.drift.length === 0) {
      c.io.out(d.sync === "failed" ? "  (the last run failed: driftlessctl runs shows its errors)" : "  no drift");
    }
    printDrift(c, d.drift);
  }
  return bad ? 2 : 0;
}

async function runs(c: Context, id: string, limit: string | undefined): Promise<number> {
  if (limit !== undefined && !/^\d+$/.test(limit)) {
    throw new DriftlessError(`--limit ${limit}: expected a whole number`, { code: "EARGS", phase: "args" });
  }
  let list: RunView[];
  try {
    ({ runs: list } = await c.api.get<{ runs: RunView[] }>(`${hostPath(id)}/runs${limit ? `?limit=${limit}` : ""}`));
  } catch (error) {
    if (error instanceof CliError && error.exitCode === 3) throw new CliError(`no host ${id} at ${c.api.url}`, 3);
    throw error;
  }
  if (c.json) {
    c.io.out(JSON.stringify({ runs: list }, null, 2));
    return 0;
  }
  if (list.length === 0) {
    c.io.out(`No runs reported by ${id} yet.`);
    return 0;
  }
  const s = c.style;
  const rows = list.map((r) => [
    String(r.seq),
    r.endedAt,
    {
      text: r.result,
      colour: r.result === "in-sync" ? s.green : r.result === "failed" || r.result === "error" ? s.red : s.yellow,
    },
    r.kind === "summary" ? "-" : r.sync,
    r.mode,
    shortCommit(r.commit),
    String(r.changes.length),
    String(r.drift.length),
    String(r.errors.length),
  ]);
  for (const line of table(
    ["SEQ", "ENDED", "RESULT", "SYNC", "MODE", "COMMIT", "CHANGES", "DRIFT", "ERRORS"],
    rows,
    s,
  )) {
    c.io.out(line);
  }
  return 0;
}

async function converge(c: Context, id: string): Promise<number> {
  let answer: { sent: boolean; id: string };
  try {
    answer = await c.api.post<{ sent: boolean; id: string }>(`${hostPath(id)}/converge`);
  } catch (error) {
    if (error instanceof CliError && error.exitCode === 3) throw new CliError(`no host ${id} at ${c.api.url}`, 3);
    throw error;
  }
  if (c.json) c.io.out(JSON.stringify(answer, null, 2));
  else c.io.out(`converge sent to ${id} (command ${answer.id})`);
  return 0;
}

async function refresh(c: Context, commit: string | undefined, ref: string | undefined): Promise<number> {
  const answer = await c.api.post<{ sent: boolean; id: string }>("fleet/refresh", {
    ...(commit ? { commit } : {}),
    ...(ref ? { ref } : {}),
  });
  if (c.json) c.io.out(JSON.stringify(answer, null, 2));
  else c.io.out(`refresh sent to the fleet (command ${answer.id})`);
  return 0;
}
