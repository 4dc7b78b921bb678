/**
 * The minimal page at `/`: fleet counts and the host table, rendered on the server (no script),
 * served when the built dashboard (dist/dashboard/) is missing. Every value is escaped.
 */
import type { FleetSummary, HostSummary } from "../store/types.js";

export function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

const STYLE = `body{font:14px/1.4 system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse}td,th{padding:.3em .8em;border-bottom:1px solid #ddd;text-align:left}
.drifted,.stale{color:#a60}.failed,.lost,.offline{color:#b00}.in-sync,.online{color:#070}
code{font-size:90%}.counts span{margin-right:1.5em}`;

function layout(title: string, body: string): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>${escapeHtml(title)}</title><style>${STYLE}</style></head>
<body>
${body}
</body></html>
`;
}

export function renderLoginPage(message?: string): string {
  return layout(
    "Driftless: sign in",
    `<h1>Driftless control plane</h1>
${message ? `<p class="failed">${escapeHtml(message)}</p>\n` : ""}<p>Open the link <code>driftlessctl serve</code> printed when it started (it holds a one-time login token), or paste a login token or the API token (<code>DATA/api-token</code>):</p>
<form method="post" action="/login"><input name="token" type="password" autocomplete="off" size="40" aria-label="token"> <button>Sign in</button></form>`,
  );
}

function counts(record: Record<string, number>): string {
  return Object.entries(record)
    .map(([key, n]) => `<span class="${escapeHtml(key)}">${escapeHtml(key)}: <b>${n}</b></span>`)
    .join("");
}

export function renderFleetPage(summary: FleetSummary, hosts: HostSummary[]): string {
  const rows = hosts
    .map((h) => {
      const labels = Object.entries(h.labels)
        .map(([k, v]) => `${k}=${v}`)
        .join(", ");
      return `<tr><td>${escapeHtml(h.id)}</td><td class="${escapeHtml(h.presence)}">${escapeHtml(h.presence)}</td><td class="${escapeHtml(h.sync)}">${escapeHtml(h.sync)}</td><td><code>${escapeHtml((h.commit ?? "").slice(0, 12))}</code></td><td>${escapeHtml(h.lastSeen ?? "")}</td><td>${escapeHtml(h.lastRun?.result ?? "")}</td><td>${escapeHtml(labels)}</td></tr>`;
    })
    .join("\n");
  return layout(
    "Driftless fleet",
    `<h1>Driftless fleet</h1>
<p>${summary.hosts} host${summary.hosts === 1 ? "" : "s"}. This is the minimal page: the dashboard's files (<code>dist/dashboard/</code>, made by <code>npm run build</code>) were not found when serve started. The HTTP API (<code>/api/v1/</code>) and <code>driftlessctl hosts</code> show everything.</p>
<p class="counts">${counts(summary.presence)}</p>
<p class="counts">${counts(summary.sync)}</p>
<table>
<thead><tr><th>host</th><th>presence</th><th>sync</th><th>commit</th><th>last seen</th><th>last run</th><th>labels</th></tr></thead>
<tbody>
${rows}
</tbody>
</table>`,
  );
}
