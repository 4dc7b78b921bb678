/**
 * What the dashboard asks of the HTTP API, on a serve wired as `driftlessctl serve` wires it:
 * paging, sorting and the name filter of `GET /api/v1/hosts`; the event stream; the session
 * cookie on the API with its CSRF header; logout; the built dashboard's files and headers; the
 * fleet's head from a webhook push.
 */
import { createHmac } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type FleetServe, startFleetServe, WEBHOOK_SECRET } from "../support/fleet-serve.js";
import { openSse } from "../support/sse.js";

let serve: FleetServe;
let bearer: Record<string, string>;

beforeAll(async () => {
  serve = await startFleetServe();
  bearer = { authorization: `Bearer ${serve.apiToken}` };
  await serve.enrol("web-03", { role: "web" });
  await serve.enrol("web-01", { role: "web" });
  await serve.enrol("db-02", { role: "db" });
  await serve.report("web-03", 1, { commit: "aaa111", sync: "drifted", result: "changes" });
  await serve.report("web-01", 1, { commit: "bbb222" });
  await serve.report("db-02", 1, { commit: "aaa111", sync: "failed", result: "failed" });
});
afterAll(async () => {
  await serve?.close();
});

async function get(path: string, headers: Record<string, string> = bearer) {
  const response = await fetch(`${serve.url}${path}`, { headers, redirect: "manual" });
  return { status: response.status, headers: response.headers, body: await response.text() };
}

async function json(path: string) {
  const answer = await get(path);
  expect(answer.status, answer.body).toBe(200);
  return JSON.parse(answer.body);
}

let loginUrlUsed = false;

/** Signs in (the one-time login URL serve printed, then the form with the API token); returns the cookie. */
async function signIn(): Promise<string> {
  const response = loginUrlUsed
    ? await fetch(`${serve.url}/login`, {
        method: "POST",
        headers: { "content-type": "application/x-www-form-urlencoded" },
        body: new URLSearchParams({ token: serve.apiToken }).toString(),
        redirect: "manual",
      })
    : await fetch(serve.loginUrl(), { redirect: "manual" });
  loginUrlUsed = true;
  expect(response.status).toBe(303);
  const setCookie = response.headers.get("set-cookie") ?? "";
  expect(setCookie).toMatch(/HttpOnly; SameSite=Strict/);
  return setCookie.split(";")[0] as string;
}

describe("GET /api/v1/hosts for the dashboard", () => {
  it("keeps the CLI's answer (every host, by id) and adds the total", async () => {
    const body = await json("/api/v1/hosts");
    expect(body.hosts.map((h: { id: string }) => h.id)).toEqual(["db-02", "web-01", "web-03"]);
    expect(body.total).toBe(3);
    expect(body).not.toHaveProperty("offset");
    expect(body.hosts[0]).toMatchObject({ id: "db-02", state: "failed", sync: "failed", labels: { role: "db" } });
  });

  it("sorts by a column either way, pages, and filters by name", async () => {
    const ids = (body: { hosts: Array<{ id: string }> }) => body.hosts.map((h) => h.id);
    expect(ids(await json("/api/v1/hosts?sort=id&order=desc"))).toEqual(["web-03", "web-01", "db-02"]);
    // Sync sorts by meaning: in-sync, drifted, failed.
    expect(ids(await json("/api/v1/hosts?sort=sync"))).toEqual(["web-01", "web-03", "db-02"]);
    expect(ids(await json("/api/v1/hosts?sort=commit&order=desc"))).toEqual(["web-01", "db-02", "web-03"]);
    const page = await json("/api/v1/hosts?sort=id&limit=2&offset=2");
    expect(page).toMatchObject({ total: 3, offset: 2, limit: 2 });
    expect(ids(page)).toEqual(["web-03"]);
    const named = await json("/api/v1/hosts?q=WEB&limit=1");
    expect(named.total).toBe(2);
    expect(ids(named)).toEqual(["web-01"]);
    expect(ids(await json("/api/v1/hosts?q=web&state=drifted"))).toEqual(["web-03"]);
    expect(ids(await json("/api/v1/hosts?label=role=db"))).toEqual(["db-02"]);
  });

  it("refuses an unknown sort key, order or page size", async () => {
    for (const query of ["sort=colour", "order=up", "limit=0", "limit=5000", "offset=-1", "page=2"]) {
      const answer = await get(`/api/v1/hosts?${query}`);
      expect(answer.status, query).toBe(400);
      expect(JSON.parse(answer.body).error).toBeTruthy();
    }
  });

  it("sums up labels and marks the newest commit seen, then the one a push announces", async () => {
    const summary = await json("/api/v1/summary");
    expect(summary.labels).toEqual({ role: { web: 2, db: 1 } });
    expect(summary.head).toMatchObject({ commit: "bbb222", from: "seen" });
    const commit = "c".repeat(40);
    const body = JSON.stringify({ ref: "refs/heads/main", after: commit, deleted: false });
    const hook = await fetch(`${serve.url}/hooks/git`, {
      method: "POST",
      headers: {
        "content-type": "application/json",
        "x-github-event": "push",
        "x-github-delivery": "delivery-1",
        "x-hub-signature-256": `sha256=${createHmac("sha256", WEBHOOK_SECRET).update(body).digest("hex")}`,
      },
      body,
    });
    expect(hook.status).toBe(202);
    expect((await json("/api/v1/summary")).head).toMatchObject({ commit, ref: "main", from: "push" });
  });
});

describe("the event stream", () => {
  it("tells a dashboard which host changed once its report is stored", async () => {
    const stream = await openSse(`${serve.url}/api/v1/events`, bearer);
    try {
      expect(stream.status).toBe(200);
      expect(stream.headers.get("content-type")).toMatch(/^text\/event-stream/);
      expect((await stream.next()).event).toBe("hello");
      await serve.report("web-01", 2, { commit: "ddd444", sync: "drifted" });
      const message = await stream.next();
      expect(message.event).toBe("fleet");
      const data = JSON.parse(message.data);
      expect(data.hosts).toEqual(["web-01"]);
      expect(data.kinds).toEqual(expect.arrayContaining(["status", "report"]));
    } finally {
      stream.close();
    }
  });

  it("is closed to a request without token or session", async () => {
    expect((await get("/api/v1/events", {})).status).toBe(401);
  });
});

describe("a dashboard session", () => {
  it("reads the API with its cookie; a POST needs the CSRF header too; logout ends it", async () => {
    const session = await signIn();
    expect((await get("/api/v1/summary", { cookie: session })).status).toBe(200);
    const post = (headers: Record<string, string>) =>
      fetch(`${serve.url}/api/v1/hosts/web-01/converge`, { method: "POST", headers: { cookie: session, ...headers } });
    const noHeader = await post({});
    expect(noHeader.status).toBe(403);
    expect((await noHeader.json()).error).toMatch(/x-driftless-request/);
    const withHeader = await post({ "x-driftless-request": "1" });
    expect(withHeader.status).toBe(202);
    expect(await withHeader.json()).toMatchObject({ sent: true });

    const out = await fetch(`${serve.url}/logout`, {
      method: "POST",
      headers: { cookie: session, "x-driftless-request": "1" },
    });
    expect(out.status).toBe(204);
    expect(out.headers.get("set-cookie")).toMatch(/Max-Age=0/);
    expect((await get("/api/v1/summary", { cookie: session })).status).toBe(401);
    const page = await get("/", { cookie: session });
    expect(page.body).toMatch(/<form method="post" action="\/login">/);
  });

  it("ends a session's event stream at logout: what the fleet does next is not sent to it", async () => {
    const session = await signIn();
    const stream = await openSse(`${serve.url}/api/v1/events`, { cookie: session });
    try {
      expect(stream.status).toBe(200);
      expect((await stream.next()).event).toBe("hello");
      await serve.report("web-01", 3, { commit: "eee555", sync: "in-sync" });
      expect((await stream.next()).event).toBe("fleet"); // signed in: it is told

      const out = await fetch(`${serve.url}/logout`, {
        method: "POST",
        headers: { cookie: session, "x-driftless-request": "1" },
      });
      expect(out.status).toBe(204);
      await serve.report("web-01", 4, { commit: "eee555", sync: "drifted" });
      await expect(stream.next()).rejects.toThrow(/the stream ended/);
    } finally {
      stream.close();
    }
  });

  it("gets the built dashboard with a strict policy; its files only with a session", async () => {
    const session = await signIn();
    const page = await get("/", { cookie: session });
    expect(page.status).toBe(200);
    expect(page.headers.get("content-type")).toBe("text/html; charset=utf-8");
    expect(page.headers.get("cache-control")).toBe("no-store");
    const csp = page.headers.get("content-security-policy") ?? "";
    expect(csp).toMatch(/script-src 'self'/);
    expect(csp).not.toMatch(/unsafe-inline|unsafe-eval|https?:/);
    // No inline script: every <script> loads a file of ours.
    expect(page.body).not.toMatch(/<script(?![^>]*\bsrc="\/assets\/)/);
    const script = /src="(\/assets\/app-[^"]+\.js)"/.exec(page.body)?.[1];
    const style = /href="(\/assets\/style-[^"]+\.css)"/.exec(page.body)?.[1];
    expect(script && style).toBeTruthy();
    const js = await get(script as string, { cookie: session });
    expect(js.status).toBe(200);
    expect(js.headers.get("content-type")).toBe("text/javascript; charset=utf-8");
    expect(js.headers.get("cache-control")).toBe("private, max-age=31536000, immutable");
    expect(js.body).not.toMatch(/https?:\/\/(?!www\.w3\.org)[a-z]/i);
    const css = await get(style as string, { cookie: session });
    expect(css.headers.get("content-type")).toBe("text/css; charset=utf-8");
    expect((await get(script as string, {})).status).toBe(401);
    expect((await get("/assets/nothing-here.js", { cookie: session })).status).toBe(404);
  });
});
