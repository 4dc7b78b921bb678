/**
 * `driftlessctl demo` as users run it: the built CLI as a child process (as an unprivileged
 * user when the tests run as root), with 2 hosts in a new directory, converging every hour. The test reads the printed
 * API URL, waits for both hosts to be online and in sync on the repository's first commit,
 * pushes a commit from the work clone, waits for both hosts to report it, makes drift and asks
 * for a converge, then stops the demo with SIGINT: exit 0, no process left, directory removed.
 *
 * Waits poll the API until a deadline; nothing asserts on how long a step took.
 */
import { appendFileSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { HostDetail, HostSummary, RunView } from "../../controlplane/src/store/types.js";
import { handOver } from "../support/cli.js";
import {
  CTL,
  type DemoProcess,
  descendants,
  gitAsUser as git,
  processesNaming,
  runAsUser as run,
  startDemo,
  startTime,
  until,
} from "../support/demo.js";

let demo: DemoProcess;
let dir: string;
let url: string;
let token: string;

async function api<T>(route: string, method = "GET"): Promise<T> {
  const response = await fetch(`${url}/api/v1/${route}`, { method, headers: { Authorization: `Bearer ${token}` } });
  if (!response.ok) throw new Error(`${method} ${route}: ${response.status} ${await response.text()}`);
  return (await response.json()) as T;
}

async function hostsAt(commit: string): Promise<HostSummary[] | undefined> {
  const { hosts } = await api<{ hosts: HostSummary[] }>("hosts");
  const ready = hosts.filter((h) => h.presence === "online" && h.sync === "in-sync" && h.commit === commit);
  return hosts.length === 2 && ready.length === 2 ? hosts : undefined;
}

beforeAll(async () => {
  demo = startDemo(["--hosts", "2", "--interval", "1h"]);
  dir = demo.dir;
  url = await demo.printed(/^ {2}API +(http:\/\/\S+)/m);
  token = readFileSync(path.join(dir, "data", "api-token"), "utf8").trim();
});

afterAll(async () => {
  await demo.cleanup();
});

describe("driftlessctl demo", () => {
  it("converges the hosts, follows a push, corrects drift, and stops cleanly on SIGINT", async () => {
    const work = path.join(dir, "work");
    const first = await git(work, ["rev-parse", "HEAD"]);
    await until("2 hosts online and in sync on the first commit", () => hostsAt(first));
    const motd = path.join(dir, "hosts", "demo-1", "etc", "motd");
    expect(readFileSync(motd, "utf8")).toContain("at site lab");
    // The agents converge files only, inside their trees, as the demo's user.
    expect(existsSync(path.join(dir, "hosts", "demo-2", "etc", "driftless-example", "timesyncd.conf"))).toBe(true);

    // A push reaches the fleet and both hosts report the new commit: with a 1 h interval, only
    // the refresh the push sent can make them fetch it.
    const base = path.join(work, "base.yaml");
    writeFileSync(base, readFileSync(base, "utf8").replace("site: lab", "site: test-push"));
    await git(work, ["commit", "-qam", "Move to the test site"]);
    const second = await git(work, ["rev-parse", "HEAD"]);
    const pushed = Date.now();
    await git(work, ["push", "--quiet"]);
    await until("both hosts on the pushed commit", () => hostsAt(second));
    console.log(`demo: both hosts reported the pushed commit ${Date.now() - pushed} ms after the push`);
    expect(demo.stdout()).toContain(`push: main is now ${second.slice(0, 12)}; refresh sent to the fleet`);
    expect(readFileSync(motd, "utf8")).toContain("at site test-push");

    // Drift: a local edit, a converge asked through the fleet CLI; the agent puts the file back
    // and its run report lists the change and the drift it corrected.
    const before = (await api<HostDetail>("hosts/demo-1")).lastRun?.seq ?? 0;
    appendFileSync(motd, "edited by hand\n");
    const converge = await run(process.execPath, [
      CTL,
      "converge",
      "demo-1",
      "--url",
      url,
      "--token-file",
      path.join(dir, "data", "api-token"),
    ]);
    expect(converge.code, converge.stderr).toBe(0);
    const corrected = await until("a run of demo-1 that corrected /etc/motd", async () => {
      const { runs } = await api<{ runs: RunView[] }>("hosts/demo-1/runs?limit=5");
      return runs.find(
        (r) =>
          r.seq > before && (r.changes as Array<{ resource?: string }>).some((c) => c.resource === "file:/etc/motd"),
      );
    });
    expect(corrected.result).toBe("changed");
    expect(corrected.drift).toContainEqual(expect.objectContaining({ resource: "file:/etc/motd", field: "content" }));
    expect(readFileSync(motd, "utf8")).not.toContain("edited by hand");

    // Ctrl-C: everything stops, nothing is left running, the directory is removed.
    const children = descendants(demo.child.pid as number);
    expect(children.size).toBeGreaterThanOrEqual(2); // the agents at least
    demo.child.kill("SIGINT");
    const { code, signal } = await demo.exit;
    expect({ code, signal, stderr: demo.stderr() }).toEqual({ code: 0, signal: null, stderr: expect.any(String) });
    expect(demo.stdout()).toContain("Stopped; removed");
    expect(processesNaming(dir)).toEqual([]);
    const alive = [...children].filter(([pid, start]) => startTime(pid) === start);
    expect(alive).toEqual([]);
    expect(existsSync(dir)).toBe(false);
  });

  it("refuses a directory that holds something else, and a bad host count, touching nothing", async () => {
    const other = mkdtempSync(path.join(tmpdir(), "driftless-demo-other-"));
    try {
      writeFileSync(path.join(other, "notes.txt"), "mine\n");
      handOver(other);
      const refused = await run(process.execPath, [CTL, "demo", "--dir", other]);
      expect(refused.code).toBe(1);
      expect(refused.stderr).toContain(`--dir ${other}: not empty, and not a demo's directory`);
      expect(readdirSync(other)).toEqual(["notes.txt"]);
      const zero = await run(process.execPath, [CTL, "demo", "--hosts", "0", "--dir", path.join(other, "new")]);
      expect(zero.code).toBe(1);
      expect(zero.stderr).toContain("--hosts 0: expected a whole number from 1 to 50");
      expect(existsSync(path.join(other, "new"))).toBe(false);
      const help = await run(process.execPath, [CTL, "demo", "--help"]);
      expect(help.stdout).toContain("Usage: driftlessctl demo [--dir DIR] [--hosts N]");
    } finally {
      rmSync(other, { recursive: true, force: true });
    }
  });
});
