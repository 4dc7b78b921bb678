// Dashboard benchmark (method and figures in docs/benchmarks.md): a store seeded with BENCH_HOSTS
// (10,000) hosts through the store's interface (a status with labels and one report each, a tenth
// of them drifted, a few commits), `driftlessctl serve` on it (the built bundle), and Debian's
// chromium driven by playwright-core. Per round, in a new browser context (empty cache, new
// session): the time from opening the one-time login link to the first rows of the host table,
// and to a name filter answered (the table showing only the matching host): the table is then
// interactive. BENCH_ROUNDS rounds (5); medians and the worst are printed; BENCH_DETAIL=1 prints
// the page's resource timings per round. Loopback only.
import { spawn } from "node:child_process";
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import * as os from "node:os";
import * as path from "node:path";
import { chromium } from "playwright-core";
import { bundleForBench } from "./bench-bundle.mjs";

const HOSTS = Number(process.env.BENCH_HOSTS ?? 10_000);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 5);
const CTL = path.resolve("bin/driftlessctl.js");

const { SqliteFleetStore, CHROMIUM, CHROMIUM_ARGS } = await bundleForBench("dashboard", {
  "controlplane/src/store/sqlite.ts": ["SqliteFleetStore"],
  "test/support/chromium-args.ts": ["CHROMIUM", "CHROMIUM_ARGS"],
});

const temp = mkdtempSync(path.join(os.tmpdir(), "driftless-bench-dashboard-"));
const data = path.join(temp, "data");
const name = (i) => `host-${String(i).padStart(5, "0")}`;
const COMMITS = ["1".repeat(40), "2".repeat(40), "3".repeat(40)];
const SITES = ["lyon", "porto", "oslo", "riga"];

async function seed() {
  mkdirSync(data, { recursive: true, mode: 0o700 });
  const store = SqliteFleetStore.open(data);
  const started = performance.now();
  const at = new Date();
  for (let from = 0; from < HOSTS; from += 500) {
    const writes = [];
    for (let i = from; i < Math.min(HOSTS, from + 500); i++) {
      const host = name(i);
      const commit = COMMITS[i % COMMITS.length];
      const drifted = i % 10 === 0;
      writes.push(
        store.recordStatus(
          host,
          {
            v: 1,
            host,
            session: 1,
            state: i % 50 === 0 ? "offline" : "online",
            version: "0.1.0",
            commit,
            mode: "enforce",
            labels: { site: SITES[i % SITES.length], role: i % 3 === 0 ? "gateway" : "sensor" },
          },
          at,
        ),
        store.recordReport(
          host,
          {
            v: 1,
            host,
            session: 1,
            kind: "run",
            runId: `run-${i}`,
            seq: 1,
            commit,
            mode: "apply",
            result: drifted ? "changes" : "in-sync",
            sync: drifted ? "drifted" : "in-sync",
            startedAt: at.toISOString(),
            endedAt: at.toISOString(),
            changes: [],
            drift: drifted ? [{ resource: "file:/etc/motd", field: "content", desired: "a", actual: "b" }] : [],
            errors: [],
            timings: { total: 120 },
          },
          at,
        ),
      );
    }
    await Promise.all(writes);
  }
  await store.close();
  return performance.now() - started;
}

function startServe() {
  return new Promise((resolve, reject) => {
    const child = spawn(
      process.execPath,
      [CTL, "serve", "--data", data, "--http", "127.0.0.1:0", "--mqtt", "127.0.0.1:0"],
      {
        stdio: ["ignore", "pipe", "pipe"],
      },
    );
    let out = "";
    const timer = setTimeout(() => reject(new Error(`serve did not start: ${out}`)), 30_000);
    child.stdout.on("data", (chunk) => {
      out += chunk;
      const match = /Open the dashboard \(one-time login\): (\S+)/.exec(out);
      if (match) {
        clearTimeout(timer);
        resolve({ child, loginUrl: match[1], url: new URL(match[1]).origin });
      }
    });
    child.stderr.on("data", (chunk) => {
      out += chunk;
    });
    child.once("exit", (code) => reject(new Error(`serve exited ${code}: ${out}`)));
  });
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const ms = (x) => `${x.toFixed(0)} ms`;

const seedMs = await seed();
console.log(`seeded ${HOSTS} hosts in ${ms(seedMs)} (${temp})`);
const { child, loginUrl, url } = await startServe();
const token = readFileSync(path.join(data, "api-token"), "utf8").trim();
const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: [...CHROMIUM_ARGS] });
try {
  // The API alone: one page of the table, sorted by last seen, as the dashboard asks for it.
  const api = [];
  for (let i = 0; i < 10; i++) {
    const t = performance.now();
    const response = await fetch(`${url}/api/v1/hosts?sort=lastSeen&order=desc&limit=100&offset=0`, {
      headers: { authorization: `Bearer ${token}` },
    });
    const body = await response.json();
    api.push(performance.now() - t);
    if (body.total !== HOSTS) throw new Error(`total ${body.total}, expected ${HOSTS}`);
  }
  const rows = [];
  const interactive = [];
  for (let round = 0; round < ROUNDS; round++) {
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const page = await context.newPage();
    // serve prints one login link; the other rounds sign in with the form and the API token.
    const link = round === 0 ? loginUrl : null;
    const t0 = performance.now();
    if (link) {
      await page.goto(link);
    } else {
      await page.goto(url);
      await page.getByLabel("token").fill(token);
      await page.getByRole("button", { name: "Sign in" }).click();
    }
    const body = page.getByTestId("host-rows");
    await body.locator("tr").first().waitFor();
    const tRows = performance.now() - t0;
    const target = name(HOSTS - 7);
    await page.getByLabel("Name").fill(target);
    await page.waitForFunction((id) => {
      const trs = document.querySelectorAll('[data-testid="host-rows"] tr');
      return trs.length === 1 && trs[0].textContent.startsWith(id);
    }, target);
    const tInteractive = performance.now() - t0;
    if (process.env.BENCH_DETAIL) {
      const detail = await page.evaluate(() =>
        performance
          .getEntriesByType("resource")
          .map((r) => `${r.name.replace(location.origin, "")} ${r.startTime.toFixed(0)}+${r.duration.toFixed(0)}`),
      );
      console.log(detail.join("\n"));
    }
    rows.push(tRows);
    interactive.push(tInteractive);
    console.log(
      `round ${round + 1}${link ? " (one-time link)" : " (login form)"}: first rows ${ms(tRows)}, filter answered ${ms(tInteractive)}`,
    );
    await context.close();
  }
  console.log(
    `API page of 100 of ${HOSTS} (sorted by last seen): median ${ms(median(api))}, worst ${ms(Math.max(...api))}`,
  );
  console.log(`first rows: median ${ms(median(rows))}, worst ${ms(Math.max(...rows))}`);
  console.log(
    `interactive (first rows + a name filter answered): median ${ms(median(interactive))}, worst ${ms(Math.max(...interactive))}`,
  );
} finally {
  await browser.close();
  child.kill("SIGTERM");
  rmSync(temp, { recursive: true, force: true });
}
