/**
 * End to end, the fleet's everyday story on real parts: three Debian hosts booted with
 * systemd-nspawn, each running driftless.service (installed with `driftless install`,
 * test/harness/agent.ts), `driftlessctl serve` (embedded MQTT broker, SQLite, HTTP API, Git
 * webhooks) and a Git smart-HTTP server on this machine, packages from a local apt repository.
 *
 * A push reaches the hosts the way it does in production: the forge's webhook (`POST /hooks/git`)
 * makes serve publish a fleet `refresh`, each agent fetches and converges, and the API says where
 * every host is. Hosts run with a 1 h interval, so every run here is one a test asked for.
 *
 * The hosts are booted once for the file; each test sets up what it needs (its own profile commit,
 * its own files, the agent configuration it wants) and depends on no other test.
 */
import { createHash } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { TestHost } from "../harness/host.js";
import { E2EFleet, FLEET_START_TIMEOUT_MS, fleetSupport } from "../support/fleet-hosts.js";
import { makeSshKey, type SshKey } from "../support/git-server.js";
import { fleet as fleetDoc, profile } from "../support/repo.js";

const support = fleetSupport();

/** dpkg-query's format: status and version. */
const DPKG_FORMAT = ["$", "{Status} $", "{Version}"].join("");

const sha256 = (text: string) => `sha256:${createHash("sha256").update(text).digest("hex")}`;

/** A package with a service (a tiny shell daemon), installed but not started by its postinst. */
const WEB_PACKAGE = { name: "dl-web", version: "1.0", service: { autostart: false } };

describe.skipIf(!support.can)("a fleet of three hosts following Git, reporting to driftlessctl serve", () => {
  let fleet: E2EFleet;

  beforeAll(async () => {
    fleet = await E2EFleet.start({ hosts: 3, packages: [WEB_PACKAGE] });
  }, FLEET_START_TIMEOUT_MS);

  afterAll(async () => {
    await fleet?.stop();
  });

  /** Publishes `files` as the whole repository, sends the push's webhook; returns the commit. */
  async function push(files: Record<string, string>, options: Parameters<E2EFleet["publish"]>[1] = {}) {
    const commit = await fleet.publish(files, options);
    const hook = await fleet.webhook(commit);
    expect(hook, "the webhook's answer").toMatchObject({ status: 202, body: { sent: true, commit } });
    return commit;
  }

  /** Resets every host to enforce mode, no trust, and `labels(i)`. */
  async function reinstall(settings: (i: number) => Parameters<E2EFleet["install"]>[1] = () => ({})) {
    await Promise.all(fleet.hosts.map((host, i) => fleet.install(host, settings(i))));
  }

  it("a push (package, templated file with notify, service) reaches all three hosts through the webhook; the API shows them in sync on it", async () => {
    await reinstall();
    const tree = (greeting: string) => ({
      "fleet.yaml": fleetDoc("  - match: {}\n    profiles: [web]\n"),
      "web.yaml": profile(
        "web",
        `vars: { greeting: ${greeting} }
packages:
  - { name: dl-web, state: present }
files:
  - path: /etc/dl-web/site.conf
    template: files/site.conf.liquid
    mode: "0640"
    notify: [service:dl-web]
services:
  - { name: dl-web, enabled: true, state: running }
`,
      ),
      "files/site.conf.liquid": "# {{ host.name }}, managed by driftless\ngreeting={{ vars.greeting }}\n",
    });
    const rendered = (id: string, greeting: string) => `# ${id}, managed by driftless\ngreeting=${greeting}\n`;

    const first = await push(tree("hello"));
    const inSync = (commit: string) =>
      fleet.untilHosts(`all hosts in sync on ${commit}`, fleet.ids, (h) => h.sync === "in-sync" && h.commit === commit);
    await inSync(first);
    const listed = await fleet.listHosts();
    expect(listed.filter((h) => fleet.ids.includes(h.id))).toHaveLength(3);
    for (const h of listed.filter((h) => fleet.ids.includes(h.id))) {
      expect(h).toMatchObject({ online: true, sync: "in-sync", commit: first, mode: "enforce" });
    }
    expect((await fleet.listHosts(`commit=${first}&state=in-sync`)).map((h) => h.id).sort()).toEqual(
      [...fleet.ids].sort(),
    );

    const pids = new Map<string, string>();
    for (const host of fleet.hosts) {
      const status = await host.exec("dpkg-query", ["-W", "-f", DPKG_FORMAT, "dl-web"]);
      expect(status.stdout).toBe("install ok installed 1.0");
      expect(fleet.read(host, "/etc/dl-web/site.conf")).toBe(rendered(host.name, "hello"));
      expect((await host.exec("stat", ["-c", "%a", "/etc/dl-web/site.conf"])).stdout.trim()).toBe("640");
      expect((await host.exec("systemctl", ["is-active", "dl-web"])).stdout.trim()).toBe("active");
      expect((await host.exec("systemctl", ["is-enabled", "dl-web"])).stdout.trim()).toBe("enabled");
      pids.set(host.name, (await host.exec("systemctl", ["show", "-p", "MainPID", "--value", "dl-web"])).stdout.trim());
    }

    // The next push changes the template's variable only: the file changes, its notify restarts the service.
    const second = await push(tree("bonjour"));
    const hosts = await inSync(second);
    for (const host of fleet.hosts) {
      expect(fleet.read(host, "/etc/dl-web/site.conf")).toBe(rendered(host.name, "bonjour"));
      const pid = (await host.exec("systemctl", ["show", "-p", "MainPID", "--value", "dl-web"])).stdout.trim();
      expect(pid).not.toBe("0");
      expect(pid, `${host.name}: dl-web restarted by the file's notify`).not.toBe(pids.get(host.name));
    }
    for (const detail of hosts) {
      const run = (await fleet.apiRuns(detail.id)).at(-1);
      expect(run).toMatchObject({ commit: second, result: "changed", sync: "in-sync" });
      expect(((run?.changes ?? []) as Array<{ resource: string }>).map((c) => c.resource)).toEqual(
        expect.arrayContaining(["file:/etc/dl-web/site.conf", "service:dl-web"]),
      );
    }
  });

  it("labels select different profiles for different hosts", async () => {
    const labels = [{ role: "web" }, { role: "db" }, { role: "web", site: "lyon" }];
    await reinstall((i) => ({ labels: labels[i] ?? {} }));
    const commit = await push({
      "fleet.yaml": fleetDoc(
        [
          "  - match: { labels: { role: web } }",
          "    profiles: [web]",
          "  - match: { labels: { role: db } }",
          "    profiles: [db]",
          "  - match: { labels: { site: lyon } }",
          "    profiles: [lyon]",
          "",
        ].join("\n"),
      ),
      "web.yaml": profile("web", 'files:\n  - { path: /etc/labels/web.conf, content: "web\\n" }\n'),
      "db.yaml": profile("db", 'files:\n  - { path: /etc/labels/db.conf, content: "db\\n" }\n'),
      "lyon.yaml": profile("lyon", "files:\n  - { path: /etc/labels/site.conf, template: site.liquid }\n"),
      "site.liquid": "{{ labels.site }}\n",
    });
    await fleet.untilHosts("all hosts in sync", fleet.ids, (h) => h.sync === "in-sync" && h.commit === commit);

    const [web, db, lyon] = fleet.hosts as [TestHost, TestHost, TestHost];
    const files = (host: TestHost) =>
      ["web", "db", "site"].filter((name) => fleet.read(host, `/etc/labels/${name}.conf`) !== null);
    expect(files(web)).toEqual(["web"]);
    expect(files(db)).toEqual(["db"]);
    expect(files(lyon)).toEqual(["web", "site"]);
    expect(fleet.read(lyon, "/etc/labels/site.conf")).toBe("lyon\n");
    // The API knows each host's labels (from its status, published with its runs) and filters on them.
    const expected = new Map(fleet.ids.map((id, i) => [id, JSON.stringify(labels[i])]));
    await fleet.untilHosts("the labels in the API", fleet.ids, (h) => JSON.stringify(h.labels) === expected.get(h.id));
    expect((await fleet.listHosts("label=role=web")).map((h) => h.id).sort()).toEqual([web.name, lyon.name].sort());
    expect((await fleet.listHosts("label=role=db")).map((h) => h.id)).toEqual([db.name]);
    expect((await fleet.hostDetail(lyon.name)).labels).toEqual({ role: "web", site: "lyon" });
  });

  it("a file edited by hand is reported as drift; enforce mode corrects it, report mode leaves it alone", async () => {
    await reinstall();
    const [host] = fleet.hosts as [TestHost];
    const file = "/etc/drift/app.conf";
    const desired = "listen=8080\n";
    const edited = "listen=9999\n";
    const commit = await push({
      "fleet.yaml": fleetDoc("  - match: {}\n    profiles: [app]\n"),
      "app.yaml": profile("app", `files:\n  - { path: ${file}, content: "listen=8080\\n", mode: "0644" }\n`),
    });
    await fleet.untilHosts("all hosts in sync", fleet.ids, (h) => h.sync === "in-sync" && h.commit === commit);
    const drift = { resource: `file:${file}`, field: "content", desired: sha256(desired), actual: sha256(edited) };

    // Enforce: the next run finds the edit, says so, and puts the file back.
    fleet.write(host, file, edited);
    let before = await fleet.lastSeq(host.name);
    await fleet.converge(host.name);
    const [corrected] = await fleet.untilHosts(
      "the run after the edit",
      [host.name],
      (h) => h.lastRun !== null && h.lastRun.seq > before,
    );
    expect(fleet.read(host, file)).toBe(desired);
    expect(corrected).toMatchObject({ sync: "in-sync", commit, drift: [drift] });
    const correcting = (await fleet.apiRuns(host.name)).at(-1);
    expect(correcting).toMatchObject({ mode: "apply", result: "changed", drift: [drift] });
    expect(correcting?.changes).toMatchObject([{ resource: `file:${file}`, action: "update" }]);

    // Report: the edit is reported, with what the profile wants and what is there, and stays.
    await fleet.install(host, { mode: "report" });
    fleet.write(host, file, edited);
    before = await fleet.lastSeq(host.name);
    await fleet.converge(host.name);
    const [reported] = await fleet.untilHosts(
      "the report-mode run",
      [host.name],
      (h) => h.lastRun !== null && h.lastRun.seq > before,
    );
    expect(reported).toMatchObject({ sync: "drifted", commit, mode: "report", drift: [drift] });
    expect((await fleet.apiRuns(host.name)).at(-1)).toMatchObject({ mode: "report", result: "changes" });
    expect(fleet.read(host, file)).toBe(edited);
    // Other hosts were not touched by this host's runs.
    for (const other of fleet.hosts.slice(1)) expect(fleet.read(other, file)).toBe(desired);
  });

  it("a commit with an invalid profile: hosts stay on the last good commit and report the error", async () => {
    await reinstall();
    const good = await push({
      "fleet.yaml": fleetDoc("  - match: {}\n    profiles: [valid]\n"),
      "valid.yaml": profile("valid", 'files:\n  - { path: /etc/invalid/app.conf, content: "v1\\n" }\n'),
    });
    await fleet.untilHosts("all hosts in sync", fleet.ids, (h) => h.sync === "in-sync" && h.commit === good);
    const seqs = new Map(await Promise.all(fleet.ids.map(async (id) => [id, await fleet.lastSeq(id)] as const)));

    const bad = await push({
      "fleet.yaml": fleetDoc("  - match: {}\n    profiles: [valid]\n"),
      "valid.yaml": profile(
        "valid",
        'files:\n  - { path: /etc/invalid/app.conf, content: "v2\\n" }\n  - { path: /etc/invalid/other.conf, content: "x", mode: "banana" }\n',
      ),
    });
    const failed = await fleet.untilHosts(
      "all hosts failed on the invalid commit",
      fleet.ids,
      (h) => h.lastRun !== null && h.lastRun.seq > (seqs.get(h.id) ?? 0) && h.sync === "failed",
    );
    for (const detail of failed) expect(detail.commit, `${detail.id} stays on the good commit`).toBe(good);
    for (const host of fleet.hosts) {
      expect(fleet.read(host, "/etc/invalid/app.conf")).toBe("v1\n");
      expect(fleet.read(host, "/etc/invalid/other.conf")).toBeNull();
      const run = (await fleet.apiRuns(host.name)).at(-1);
      expect(run).toMatchObject({ commit: good, result: "failed", sync: "failed" });
      const errors = (run?.errors ?? []) as Array<{
        code: string;
        message: string;
        location?: { file: string; field?: string };
      }>;
      expect(errors.find((e) => e.code === "EINVALID_COMMIT")?.message).toContain(bad.slice(0, 12));
      // The error names the file and the field.
      const located = errors.find((e) => e.location?.file.endsWith("valid.yaml"));
      expect(located, JSON.stringify(errors, null, 2)).toBeDefined();
      expect(located?.location?.field ?? located?.message).toMatch(/mode/);
    }
  });

  describe("with trust.allowedSigners", () => {
    let alice: SshKey;
    let mallory: SshKey;

    beforeAll(async () => {
      [alice, mallory] = await Promise.all([makeSshKey("alice"), makeSshKey("mallory")]);
    });

    it("a commit not signed by a trusted key is refused, reported, and not applied", async () => {
      await reinstall(() => ({ trust: { allowedSigners: [alice.allowedSigners] } }));
      const tree = (content: string) => ({
        "fleet.yaml": fleetDoc("  - match: {}\n    profiles: [signed]\n"),
        "signed.yaml": profile("signed", `files:\n  - { path: /etc/signed/app.conf, content: "${content}\\n" }\n`),
      });
      const trusted = await push(tree("from alice"), { sign: alice });
      await fleet.untilHosts(
        "all hosts in sync on alice's commit",
        fleet.ids,
        (h) => h.sync === "in-sync" && h.commit === trusted,
      );
      for (const host of fleet.hosts) expect(fleet.read(host, "/etc/signed/app.conf")).toBe("from alice\n");
      const seqs = new Map(await Promise.all(fleet.ids.map(async (id) => [id, await fleet.lastSeq(id)] as const)));

      const untrusted = await push(tree("from mallory"), { sign: mallory });
      const refused = await fleet.untilHosts(
        "all hosts to refuse mallory's commit",
        fleet.ids,
        (h) => h.lastRun !== null && h.lastRun.seq > (seqs.get(h.id) ?? 0) && h.sync === "failed",
      );
      for (const detail of refused) expect(detail.commit, `${detail.id} stays on alice's commit`).toBe(trusted);
      for (const host of fleet.hosts) {
        expect(fleet.read(host, "/etc/signed/app.conf")).toBe("from alice\n");
        const run = (await fleet.apiRuns(host.name)).at(-1);
        expect(run).toMatchObject({ commit: trusted, result: "failed" });
        const refusal = ((run?.errors ?? []) as Array<{ code: string; message: string }>).find(
          (e) => e.code === "EREFUSED",
        );
        expect(refusal?.message).toContain(untrusted.slice(0, 12));
      }
    });
  });
});
