/**
 * The HTTP server on real parts, in this process: the SQLite store in a temp dir, the embedded
 * broker on a free port, the ingest, and hosts that are real MQTT.js clients publishing protocol
 * payloads with their own credentials. Requests are real HTTP (fetch).
 *
 * No sleeps: a host's report is stored when its ack arrives; a command is published when the
 * subscribed host receives it; "nothing published" is checked by the next message received being
 * the one published after.
 */
import { createHmac } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { silentLogger } from "../../agent/src/log.js";
import { hashPassword } from "../../controlplane/src/auth/password.js";
import { EmbeddedBroker } from "../../controlplane/src/broker/embedded.js";
import { createHttpServer, type HttpServer } from "../../controlplane/src/http/server.js";
import { createIngest } from "../../controlplane/src/ingest/ingest.js";
import { createFleetMetrics } from "../../controlplane/src/metrics.js";
import { SqliteFleetStore } from "../../controlplane/src/store/sqlite.js";
import { FLEET_CMD_TOPIC, hostTopic } from "../../protocol/topics.js";
import { connectHost, type HostConnection } from "../support/mqtt-inbox.js";
import { factsPayload, runReport, statusPayload } from "../support/payloads.js";

const TOKEN = "api-token-0123456789";
const SECRET = "webhook secret";
const SHA1 = "1111111111111111111111111111111111111111";
const SHA2 = "2222222222222222222222222222222222222222";
const SHA3 = "3333333333333333333333333333333333333333";

let dir: string;
let store: SqliteFleetStore;
let broker: EmbeddedBroker;
let http: HttpServer;
let base: string;
let brokerUrl: string;
const passwords: Record<string, string> = {};
const connections: HostConnection[] = [];

async function enrol(host: string, labels: Record<string, string> = {}) {
  passwords[host] = `pw-${host}-secret`;
  await store.addCredential(host, await hashPassword(passwords[host] as string), labels);
}

async function connect(host: string, topics: string[]) {
  const connection = await connectHost(brokerUrl, host, passwords[host] as string, topics);
  connections.push(connection);
  return connection;
}

/** Publishes a host's status and a report; resolves once the control plane stored them (the ack). */
async function reportAs(host: string, seq: number, overrides: Parameters<typeof runReport>[2] = {}) {
  const connection = await connect(host, [hostTopic(host, "ack")]);
  await connection.client.publishAsync(hostTopic(host, "status"), JSON.stringify(statusPayload(host)), { qos: 1 });
  await connection.client.publishAsync(hostTopic(host, "facts"), JSON.stringify(factsPayload(host)), { qos: 1 });
  await connection.client.publishAsync(hostTopic(host, "report"), JSON.stringify(runReport(host, seq, overrides)), {
    qos: 1,
  });
  const ack = await connection.next();
  expect(ack).toEqual({ topic: hostTopic(host, "ack"), json: { v: 1, host, upTo: seq } });
  await connection.close();
}

function api(pathname: string, init: RequestInit & { token?: string | null } = {}) {
  const { token = TOKEN, ...rest } = init;
  return fetch(`${base}${pathname}`, {
    ...rest,
    headers: { ...(token === null ? {} : { authorization: `Bearer ${token}` }), ...(rest.headers ?? {}) },
    redirect: "manual",
  });
}

function github(body: string, delivery: string, secret = SECRET, event = "push") {
  return fetch(`${base}/hooks/git`, {
    method: "POST",
    headers: {
      "content-type": "application/json",
      "user-agent": "GitHub-Hookshot/abc123",
      "x-github-event": event,
      "x-github-delivery": delivery,
      "x-github-hook-id": "1",
      "x-hub-signature-256": `sha256=${createHmac("sha256", secret).update(body).digest("hex")}`,
    },
    body,
  });
}

/** A push event body as GitHub sends it: compact JSON, the commit in `after`. */
function githubPush(commit: string, ref = "refs/heads/main") {
  return JSON.stringify({
    ref,
    before: "0000000000000000000000000000000000000000",
    after: commit,
    repository: { id: 1, full_name: "acme/fleet", default_branch: "main" },
    pusher: { name: "octo", email: "octo@example.com" },
    created: false,
    deleted: false,
    forced: false,
    head_commit: { id: commit, message: "Bump nginx", timestamp: "2026-01-01T00:00:00Z" },
    commits: [{ id: commit, message: "Bump nginx", added: [], removed: [], modified: ["profiles/web.yaml"] }],
  });
}

beforeAll(async () => {
  dir = mkdtempSync(path.join(tmpdir(), "driftless-cp-http-"));
  store = SqliteFleetStore.open(dir);
  broker = new EmbeddedBroker({
    host: "127.0.0.1",
    port: 0,
    credentials: store,
    log: silentLogger,
    now: () => Date.now(),
  });
  await broker.start();
  brokerUrl = `mqtt://127.0.0.1:${broker.port}`;
  const ingest = createIngest({ store, broker, log: silentLogger, now: () => new Date() });
  broker.onMessage((message) => ingest.handle(message));
  http = createHttpServer({
    store,
    publish: (topic, payload, options) => broker.publish(topic, payload, options),
    metrics: createFleetMetrics(),
    counters: { ingest: ingest.stats, brokerRefused: broker.refused },
    apiToken: TOKEN,
    webhookSecret: SECRET,
    logger: silentLogger,
    now: () => new Date(),
  });
  base = (await http.listen("127.0.0.1", 0)).url;

  await enrol("web-1", { role: "web", site: "paris" });
  await enrol("web-2", { role: "web", site: "lyon" });
  await enrol("db-1", { role: "db" });
  await enrol("listener");
  await reportAs("web-1", 1, { commit: SHA1 });
  await reportAs("web-2", 1, {
    commit: SHA2,
    result: "changes",
    sync: "drifted",
    drift: [{ resource: "file:/etc/motd", field: "content", desired: "hello", actual: "bye" }],
  });
});

afterAll(async () => {
  for (const connection of connections) await connection.client.endAsync(true);
  await http?.close();
  await broker?.close();
  await store?.close();
  rmSync(dir, { recursive: true, force: true });
});

describe("API authentication", () => {
  it("answers 401 with WWW-Authenticate: Bearer without the token or with a wrong one", async () => {
    for (const token of [null, "wrong", `${TOKEN}x`, TOKEN.slice(0, -1)]) {
      const response = await api("/api/v1/hosts", { token });
      expect(response.status).toBe(401);
      expect(response.headers.get("www-authenticate")).toBe("Bearer");
      expect(await response.json()).toEqual({ error: "missing or wrong API token" });
    }
    // Unknown API paths are not revealed either.
    expect((await api("/api/v1/nothing", { token: null })).status).toBe(401);
    expect((await api("/api/v1/hosts")).status).toBe(200);
  });
});

describe("API reads", () => {
  it("lists hosts with their state, filtered by label, state and commit", async () => {
    const all = (await (await api("/api/v1/hosts")).json()) as { hosts: Array<Record<string, unknown>> };
    const byId = Object.fromEntries(all.hosts.map((h) => [h.id, h]));
    expect(Object.keys(byId).sort()).toEqual(["db-1", "listener", "web-1", "web-2"]);
    expect(byId["web-1"]).toMatchObject({
      presence: "online",
      online: true,
      sync: "in-sync",
      state: "in-sync",
      commit: SHA1,
    });
    expect(byId["web-2"]).toMatchObject({ sync: "drifted", state: "drifted", commit: SHA2 });
    expect(byId["db-1"]).toMatchObject({ presence: "unknown", sync: "never-reported" });

    const ids = async (query: string) =>
      ((await (await api(`/api/v1/hosts?${query}`)).json()) as { hosts: Array<{ id: string }> }).hosts
        .map((h) => h.id)
        .sort();
    expect(await ids("label=role=web")).toEqual(["web-1", "web-2"]);
    expect(await ids("label=role=web&label=site=lyon")).toEqual(["web-2"]);
    expect(await ids("state=drifted")).toEqual(["web-2"]);
    expect(await ids("state=in-sync")).toEqual(["web-1"]);
    expect(await ids(`commit=${SHA1}`)).toEqual(["web-1"]);
  });

  it("refuses bad filters with 400 and a message", async () => {
    for (const [query, message] of [
      ["state=sideways", /state=sideways: expected one of/],
      ["label=role", /expected label=KEY=VALUE/],
      ["colour=red", /unknown query parameter "colour"/],
      ["commit=xyz", /expected a commit id/],
    ] as const) {
      const response = await api(`/api/v1/hosts?${query}`);
      expect(response.status).toBe(400);
      expect(((await response.json()) as { error: string }).error).toMatch(message);
    }
  });

  it("shows one host with its facts and the drift of its last run; 404 for an unknown one", async () => {
    const response = await api("/api/v1/hosts/web-2");
    expect(response.status).toBe(200);
    const host = (await response.json()) as Record<string, unknown>;
    // The fields the contract names: state, online, commit, lastSeen, facts, drift.
    expect(host).toMatchObject({
      id: "web-2",
      sync: "drifted",
      state: "drifted",
      online: true,
      lastSeen: expect.stringMatching(/^\d{4}-\d\d-\d\dT/),
      commit: SHA2,
      facts: { os: { arch: "amd64" } },
      drift: [{ resource: "file:/etc/motd", field: "content", desired: "hello", actual: "bye" }],
      labels: { role: "web", site: "lyon" },
    });
    const missing = await api("/api/v1/hosts/nope");
    expect(missing.status).toBe(404);
    expect(await missing.json()).toEqual({ error: "no host nope" });
    expect((await api("/api/v1/hosts/bad%20id")).status).toBe(400);
  });

  it("lists a host's runs, newest first, with a limit", async () => {
    const body = (await (await api("/api/v1/hosts/web-1/runs?limit=5")).json()) as { runs: Array<{ seq: number }> };
    expect(body.runs.map((r) => r.seq)).toEqual([1]);
    expect((await api("/api/v1/hosts/web-1/runs?limit=0")).status).toBe(400);
    expect((await api("/api/v1/hosts/nope/runs")).status).toBe(404);
  });

  it("summarises the fleet", async () => {
    const summary = await (await api("/api/v1/summary")).json();
    expect(summary).toMatchObject({
      hosts: 4,
      presence: { online: 2, unknown: 2 },
      sync: { "in-sync": 1, drifted: 1, "never-reported": 2 },
    });
  });

  it("answers 404 and 405 as JSON, and 413 past the body limit", async () => {
    const notFound = await api("/api/v1/fleet");
    expect(notFound.status).toBe(404);
    expect(await notFound.json()).toEqual({ error: "nothing at /api/v1/fleet" });
    const wrongMethod = await api("/api/v1/hosts", { method: "DELETE" });
    expect(wrongMethod.status).toBe(405);
    expect(wrongMethod.headers.get("allow")).toBe("GET");
    const tooBig = await api("/api/v1/fleet/refresh", { method: "POST", body: "x".repeat(65 * 1024) });
    expect(tooBig.status).toBe(413);
    // Without a Content-Length (chunked), the limit holds while reading, and the client gets the 413.
    const chunked = new ReadableStream({
      start(controller) {
        for (let i = 0; i < 80; i++) controller.enqueue(new TextEncoder().encode("x".repeat(1024)));
        controller.close();
      },
    });
    const streamed = await api("/api/v1/fleet/refresh", {
      method: "POST",
      body: chunked,
      duplex: "half",
    } as RequestInit);
    expect(streamed.status).toBe(413);
    expect(await streamed.json()).toEqual({ error: "request body over 65536 bytes" });
    expect((await api("/api/v1/fleet/refresh", { method: "POST", body: "{" })).status).toBe(400);
  });
});

describe("commands", () => {
  it("POST hosts/{id}/converge publishes the command on the host's cmd topic", async () => {
    const host = await connect("web-1", [hostTopic("web-1", "cmd")]);
    const response = await api("/api/v1/hosts/web-1/converge", { method: "POST" });
    expect(response.status).toBe(202);
    const answer = (await response.json()) as { sent: boolean; id: string };
    expect(answer.sent).toBe(true);
    expect(answer.id).toMatch(/^[0-9a-f-]{36}$/);
    expect(await host.next()).toEqual({
      topic: hostTopic("web-1", "cmd"),
      json: { v: 1, host: "web-1", cmd: "converge", id: answer.id },
    });
    expect((await api("/api/v1/hosts/nope/converge", { method: "POST" })).status).toBe(404);
    await host.close();
  });

  it("POST fleet/refresh publishes a refresh on fleet/cmd, with the commit when given", async () => {
    const host = await connect("listener", [FLEET_CMD_TOPIC]);
    const response = await api("/api/v1/fleet/refresh", { method: "POST", body: JSON.stringify({ commit: SHA3 }) });
    expect(response.status).toBe(202);
    const { id } = (await response.json()) as { id: string };
    expect(await host.next()).toEqual({ topic: FLEET_CMD_TOPIC, json: { v: 1, cmd: "refresh", commit: SHA3, id } });
    const bad = await api("/api/v1/fleet/refresh", { method: "POST", body: JSON.stringify({ commit: "main" }) });
    expect(bad.status).toBe(400);
    await host.close();
  });
});

describe("Git webhooks", () => {
  it("a signed GitHub push makes every subscribed host receive refresh with the commit; a duplicate publishes nothing", async () => {
    const host = await connect("listener", [FLEET_CMD_TOPIC]);
    const body = githubPush(SHA1);
    const first = await github(body, "delivery-1");
    expect(first.status).toBe(202);
    expect(await first.json()).toMatchObject({ sent: true, commit: SHA1, ref: "main" });
    const received = await host.next();
    expect(received.topic).toBe(FLEET_CMD_TOPIC);
    expect(received.json).toMatchObject({ v: 1, cmd: "refresh", commit: SHA1, ref: "main" });

    // GitHub redelivers with the same delivery id.
    const again = await github(body, "delivery-1");
    expect(again.status).toBe(200);
    expect(await again.json()).toEqual({ duplicate: true });
    // The next message the host gets is the next push, not a second refresh for SHA1.
    expect((await github(githubPush(SHA2), "delivery-2")).status).toBe(202);
    expect((await host.next()).json).toMatchObject({ cmd: "refresh", commit: SHA2 });
    await host.close();
  });

  it("a wrong or missing signature gets 401 and nothing is published", async () => {
    const host = await connect("listener", [FLEET_CMD_TOPIC]);
    const wrong = await github(githubPush(SHA3), "delivery-bad", "not the secret");
    expect(wrong.status).toBe(401);
    expect(((await wrong.json()) as { error: string }).error).toMatch(/github delivery refused/);
    const unsigned = await fetch(`${base}/hooks/git`, {
      method: "POST",
      headers: { "x-github-event": "push", "x-github-delivery": "delivery-unsigned" },
      body: githubPush(SHA3),
    });
    expect(unsigned.status).toBe(401);
    // A ping is answered and publishes nothing either.
    const ping = await github(
      JSON.stringify({ zen: "Design for failure.", hook_id: 1 }),
      "delivery-ping",
      SECRET,
      "ping",
    );
    expect(ping.status).toBe(200);
    expect(await ping.json()).toMatchObject({ ignored: true, reason: "ping" });
    // A refused delivery did not take its id: the valid one with the same id goes through.
    expect((await github(githubPush(SHA2), "delivery-bad")).status).toBe(202);
    expect((await host.next()).json).toMatchObject({ cmd: "refresh", commit: SHA2 });
    expect(host.pending()).toBe(0);
    await host.close();
  });

  it("a GitLab push (X-Gitlab-Token) publishes refresh with checkout_sha", async () => {
    const host = await connect("listener", [FLEET_CMD_TOPIC]);
    const body = JSON.stringify({
      object_kind: "push",
      event_name: "push",
      before: SHA1,
      after: SHA3,
      ref: "refs/heads/prod",
      checkout_sha: SHA3,
      project: { path_with_namespace: "acme/fleet" },
      commits: [],
      total_commits_count: 1,
    });
    const headers = {
      "content-type": "application/json",
      "x-gitlab-event": "Push Hook",
      "x-gitlab-token": SECRET,
      "x-gitlab-event-uuid": "gl-uuid-1",
    };
    const wrong = await fetch(`${base}/hooks/git`, {
      method: "POST",
      headers: { ...headers, "x-gitlab-token": "guess" },
      body,
    });
    expect(wrong.status).toBe(401);
    const response = await fetch(`${base}/hooks/git`, { method: "POST", headers, body });
    expect(response.status).toBe(202);
    expect((await host.next()).json).toMatchObject({ cmd: "refresh", commit: SHA3, ref: "prod" });
    const retry = await fetch(`${base}/hooks/git`, { method: "POST", headers, body });
    expect(await retry.json()).toEqual({ duplicate: true });
    await host.close();
  });
});

describe("Gitea and Forgejo webhooks", () => {
  it("a Gitea push signed in X-Gitea-Signature publishes refresh", async () => {
    const host = await connect("listener", [FLEET_CMD_TOPIC]);
    const body = JSON.stringify({ ref: "refs/heads/main", before: SHA2, after: SHA1, commits: [], total_commits: 0 });
    const headers = {
      "content-type": "application/json",
      "x-gitea-event": "push",
      "x-gitea-event-type": "push",
      "x-github-event": "push",
      "x-gitea-delivery": "gitea-1",
    };
    const sign = (secret: string) => createHmac("sha256", secret).update(body).digest("hex");
    const wrong = await fetch(`${base}/hooks/git`, {
      method: "POST",
      headers: { ...headers, "x-gitea-signature": sign("nope") },
      body,
    });
    expect(wrong.status).toBe(401);
    const response = await fetch(`${base}/hooks/git`, {
      method: "POST",
      headers: { ...headers, "x-gitea-signature": sign(SECRET) },
      body,
    });
    expect(response.status).toBe(202);
    expect((await host.next()).json).toMatchObject({ cmd: "refresh", commit: SHA1, ref: "main" });
    await host.close();
  });
});

describe("metrics", () => {
  it("counts hosts, reports, acks, webhook deliveries and requests", async () => {
    const response = await fetch(`${base}/metrics`);
    expect(response.status).toBe(200);
    expect(response.headers.get("content-type")).toMatch(/^text\/plain; version=0\.0\.4/);
    const text = await response.text();
    const value = (sample: string) => {
      const line = text.split("\n").find((l) => l.startsWith(`${sample} `));
      return line === undefined ? undefined : Number(line.slice(sample.length + 1));
    };
    expect(value("driftless_hosts")).toBe(4);
    expect(value('driftless_hosts_presence{presence="online"}')).toBe(2);
    expect(value('driftless_hosts_sync{sync="drifted"}')).toBe(1);
    expect(value("driftless_reports_ingested_total")).toBe(2);
    expect(value("driftless_acks_sent_total")).toBe(2);
    expect(value('driftless_webhook_deliveries_total{provider="github",result="published"}')).toBeGreaterThanOrEqual(1);
    expect(value('driftless_webhook_deliveries_total{provider="github",result="unauthorized"}')).toBeGreaterThanOrEqual(
      1,
    );
    expect(value('driftless_http_requests_total{code="401",route="/api/v1"}')).toBeGreaterThanOrEqual(1);
    expect(value('driftless_http_requests_total{code="200",route="/api/v1/hosts"}')).toBeGreaterThanOrEqual(1);
  });
});

describe("the page at /", () => {
  it("asks for a token without a session, and exchanges a one-time token for a session cookie once", async () => {
    const anonymous = await fetch(`${base}/`);
    expect(anonymous.status).toBe(200);
    const prompt = await anonymous.text();
    expect(prompt).toContain('<form method="post" action="/login">');
    expect(prompt).not.toContain("web-1");

    const token = http.issueLoginToken();
    const login = await fetch(`${base}/?token=${token}`, { redirect: "manual" });
    expect(login.status).toBe(303);
    expect(login.headers.get("location")).toBe("/");
    const setCookie = login.headers.get("set-cookie") ?? "";
    expect(setCookie).toMatch(/^driftless_session=[\w-]+; HttpOnly; SameSite=Strict; Path=\//);
    const session = setCookie.split(";")[0] as string;

    const page = await fetch(`${base}/`, { headers: { cookie: session } });
    expect(page.status).toBe(200);
    expect(page.headers.get("content-security-policy")).toContain("default-src 'none'");
    const html = await page.text();
    expect(html).toContain("<td>web-2</td>");
    expect(html).toContain('class="drifted">drifted</td>');
    expect(html).toContain(
      "the dashboard's files (<code>dist/dashboard/</code>, made by <code>npm run build</code>) were not found",
    );

    // The token was for one use.
    const reused = await fetch(`${base}/login?token=${token}`, { redirect: "manual" });
    expect(reused.status).toBe(401);
    expect(reused.headers.get("set-cookie")).toBeNull();
    // A made-up session is no session.
    expect(await (await fetch(`${base}/`, { headers: { cookie: "driftless_session=made-up" } })).text()).toContain(
      "<form",
    );
  });

  it("accepts the API token in the login form, not in the address", async () => {
    const inAddress = await fetch(`${base}/?token=${TOKEN}`, { redirect: "manual" });
    expect(inAddress.status).toBe(401);
    expect(inAddress.headers.get("set-cookie")).toBeNull();
    const login = await fetch(`${base}/login`, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded" },
      body: new URLSearchParams({ token: TOKEN }).toString(),
      redirect: "manual",
    });
    expect(login.status).toBe(303);
    expect(login.headers.get("set-cookie")).toMatch(/^driftless_session=/);
    expect(login.headers.get("set-cookie")).not.toContain("Secure");
    // Behind a TLS proxy the cookie is marked Secure.
    const proxied = await fetch(`${base}/?token=${http.issueLoginToken()}`, {
      headers: { "x-forwarded-proto": "https" },
      redirect: "manual",
    });
    expect(proxied.headers.get("set-cookie")).toMatch(/; Secure$/);
  });
});

describe("when the broker cannot publish", () => {
  it("answers 503 to a command and to a push, saying what to do", async () => {
    const stopped = new EmbeddedBroker({
      host: "127.0.0.1",
      port: 0,
      credentials: store,
      log: silentLogger,
      now: () => Date.now(),
    });
    await stopped.start();
    await stopped.close();
    const server = createHttpServer({
      store,
      publish: (topic, payload, options) => stopped.publish(topic, payload, options),
      metrics: createFleetMetrics(),
      apiToken: TOKEN,
      webhookSecret: SECRET,
      logger: silentLogger,
      now: () => new Date(),
    });
    const { url } = await server.listen("127.0.0.1", 0);
    try {
      const converge = await fetch(`${url}/api/v1/hosts/web-1/converge`, {
        method: "POST",
        headers: { authorization: `Bearer ${TOKEN}` },
      });
      expect(converge.status).toBe(503);
      expect(((await converge.json()) as { error: string }).error).toMatch(/^the command was not published/);
      const body = githubPush(SHA3);
      const push = await fetch(`${url}/hooks/git`, {
        method: "POST",
        headers: {
          "x-github-event": "push",
          "x-github-delivery": "delivery-while-broker-down",
          "x-hub-signature-256": `sha256=${createHmac("sha256", SECRET).update(body).digest("hex")}`,
        },
        body,
      });
      expect(push.status).toBe(503);
      expect(((await push.json()) as { error: string }).error).toContain(`driftlessctl refresh --commit ${SHA3}`);
    } finally {
      await server.close();
    }
  });
});

describe("without a webhook secret", () => {
  it("answers 404 on /hooks/git and publishes nothing", async () => {
    const off = createHttpServer({
      store,
      publish: (topic, payload, options) => broker.publish(topic, payload, options),
      metrics: createFleetMetrics(),
      apiToken: TOKEN,
      webhookSecret: null,
      logger: silentLogger,
      now: () => new Date(),
    });
    const { url } = await off.listen("127.0.0.1", 0);
    try {
      const response = await fetch(`${url}/hooks/git`, {
        method: "POST",
        headers: { "x-github-event": "push" },
        body: githubPush(SHA1),
      });
      expect(response.status).toBe(404);
      expect(((await response.json()) as { error: string }).error).toMatch(/--webhook-secret-file/);
    } finally {
      await off.close();
    }
  });
});
