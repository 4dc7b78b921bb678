// From a push to a converged fleet, on real parts: a Git repository served by `git http-backend`,
// `driftlessctl serve` (embedded broker) with a webhook secret, and real agent daemons following
// the repository over HTTP. A signed GitHub push delivery to /hooks/git makes every agent fetch
// and report the new commit; the fleet CLI shows the fleet and its drift, and `driftlessctl
// converge HOST` makes that host run. Every wait polls the HTTP API with a deadline.
import { createHmac, randomUUID } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import * as path from "node:path";
import { afterAll, afterEach, describe, expect, it } from "vitest";
import { addHost, eventually, fleetAgent, ServeProcess } from "../support/fleet.js";
import { cleanup as cleanupGit, createRepo, startGitServer } from "../support/git-server.js";
import { cleanupTemp, fleet, profile, tempDir } from "../support/repo.js";
import { AgentDaemon } from "../support/reporting.js";

const cleanups: Array<() => Promise<void>> = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c().catch(() => {});
});
afterAll(async () => {
  await cleanupGit();
  cleanupTemp();
});

interface Summary {
  id: string;
  presence: string;
  sync: string;
  commit: string | null;
  labels: Record<string, string>;
  lastRun: { seq: number } | null;
}

const files = (version: string) => ({
  "fleet.yaml": fleet("  - match: {}\n    profiles: [base]\n"),
  "base.yaml": profile("base", `files:\n  - { path: /etc/app/version, content: "${version}\\n" }\n`),
});

/** A GitHub push delivery, signed with `secret`. */
async function pushDelivery(url: string, secret: string, body: object, deliveryId = randomUUID()) {
  const raw = Buffer.from(JSON.stringify(body));
  const signature = `sha256=${createHmac("sha256", secret).update(raw).digest("hex")}`;
  const response = await fetch(`${url}/hooks/git`, {
    method: "POST",
    headers: {
      "content-type": "application/json",
      "x-github-event": "push",
      "x-github-delivery": deliveryId,
      "x-hub-signature-256": signature,
    },
    body: raw,
  });
  return { status: response.status, body: (await response.json()) as Record<string, unknown> };
}

describe("a push reaches the fleet", () => {
  it("git push, a signed webhook: the agents fetch and report the new commit; the fleet CLI shows it; converge HOST runs", async () => {
    const git = await startGitServer();
    const repo = await createRepo(git, "fleet");
    await repo.writeFiles(files("v1"));
    const first = await repo.commit("v1");
    await repo.push();

    const secretFile = path.join(tempDir("driftless-hook-"), "secret");
    const secret = "webhook-secret-for-the-test";
    writeFileSync(secretFile, `${secret}\n`);
    const serve = await ServeProcess.create({ webhookSecretFile: secretFile });
    const hosts = ["web-1", "web-2"];
    const setups = hosts.map((host) =>
      fleetAgent({
        host,
        password: addHost(serve.settings.data, host),
        brokerUrl: serve.mqttUrl,
        source: git.url("fleet"),
        splay: "2s",
        labels: { role: "web" },
        // web-2 only reports: it shows drift rather than fixing it.
        mode: host === "web-2" ? "report" : "enforce",
      }),
    );
    await serve.start();
    cleanups.push(() => serve.kill());
    for (const setup of setups) {
      const agent = new AgentDaemon(setup.config, setup.root);
      cleanups.push(() => agent.kill());
    }

    const onCommit = async (commit: string) =>
      (await serve.api<{ hosts: Summary[] }>(`hosts?commit=${commit}`)).hosts.filter((h) => h.lastRun !== null);
    await eventually("both hosts on the first commit", async () => (await onCommit(first)).length === 2, 60_000);

    await repo.writeFiles(files("v2"));
    const second = await repo.commit("v2");
    await repo.push();
    const hook = await pushDelivery(serve.url, secret, {
      ref: "refs/heads/main",
      before: first,
      after: second,
      repository: { full_name: "example/fleet" },
    });
    expect(hook).toMatchObject({ status: 202, body: { sent: true, commit: second, ref: "main" } });
    // No timer would have run before an hour: the refresh did it.
    await eventually("both hosts on the pushed commit", async () => (await onCommit(second)).length === 2, 60_000);
    expect(readFileSync(path.join(setups[0]?.root as string, "etc/app/version"), "utf8")).toBe("v2\n");

    // The fleet, as the CLI shows it (JSON for scripts; exit 2: a host is drifted).
    const listed = serve.cli(["hosts", "--json"]);
    expect(listed.exitCode, listed.stderr).toBe(2);
    const fleetView = (JSON.parse(listed.stdout) as { hosts: Summary[] }).hosts;
    expect(fleetView.map((h) => [h.id, h.presence, h.sync, h.commit, h.labels.role])).toEqual([
      ["web-1", "online", "in-sync", second, "web"],
      ["web-2", "online", "drifted", second, "web"],
    ]);
    const drift = serve.cli(["drift", "--json"]);
    expect(drift.exitCode, drift.stderr).toBe(2);
    const drifted = (JSON.parse(drift.stdout) as { hosts: Array<{ id: string; commit: string; drift: unknown[] }> })
      .hosts;
    expect(drifted.map((h) => h.id)).toEqual(["web-2"]);
    expect(drifted[0]?.drift).toEqual(
      expect.arrayContaining([expect.objectContaining({ resource: "file:/etc/app/version" })]),
    );
    const table = serve.cli(["drift"]);
    expect(table.stdout).toContain("file:/etc/app/version");

    // converge HOST: one more run of that host, and of no other.
    const seqOf = async (host: string) => (await serve.api<Summary>(`hosts/${host}`)).lastRun?.seq ?? 0;
    const before = { web1: await seqOf("web-1"), web2: await seqOf("web-2") };
    const converge = serve.cli(["converge", "web-1"]);
    expect(converge.exitCode, converge.stderr).toBe(0);
    await eventually("a run of web-1 after converge", async () => (await seqOf("web-1")) === before.web1 + 1, 60_000);
    expect(await seqOf("web-2")).toBe(before.web2);
    expect(serve.cli(["converge", "nobody"]).exitCode).toBe(3);
  });
});
