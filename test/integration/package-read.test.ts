/**
 * The stored package read (engine/run.ts, storedPackages): a run whose package database is
 * unchanged since the last read takes the installed packages from the state database and starts
 * no dpkg-query; any change to dpkg's database (its status file, its updates journal) reads again.
 * Real dpkg-query with --admindir on a dpkg database written into a temp root, real SQLite files.
 * The runs' clock is 10 s ahead, so that a database written by the test is past the racy window
 * (a stamp taken within two seconds of the database's last change is never trusted) without
 * waiting; one test uses the real clock to check that window.
 */
import { renameSync, writeFileSync } from "node:fs";
import * as path from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import type { RunOptions, RunPorts } from "../../agent/src/engine/run.js";
import { type Clock, systemClock } from "../../agent/src/host/clock.js";
import { HostFs } from "../../agent/src/host/fs.js";
import { type Runner, systemRunner } from "../../agent/src/host/runner.js";
import { detectPackageManager } from "../../agent/src/resources/package/apt.js";
import { StateStore } from "../../agent/src/state/db.js";
import { pkg } from "../support/desired.js";
import { run } from "../support/ports.js";
import { cleanupTemp, tempDir, writeTree } from "../support/repo.js";

afterAll(cleanupTemp);

const dpkgQueryHere = detectPackageManager({ fs: new HostFs("/"), runner: systemRunner }) !== null;

function status(version: string): string {
  return [
    "Package: hello",
    "Status: install ok installed",
    "Architecture: amd64",
    `Version: ${version}`,
    "Description: a test package",
    "",
    "Package: gone",
    "Status: deinstall ok config-files",
    "Architecture: amd64",
    "Version: 1.0",
    "Description: removed, its configuration kept",
    "",
  ].join("\n");
}

interface Host {
  root: string;
  state: StateStore;
  /** The dpkg-query calls made so far. */
  queries: string[][];
}

function host(): Host {
  const root = tempDir("driftless-pkgread-root-");
  writeTree(root, { "var/lib/dpkg/status": status("2.10-3"), "var/lib/dpkg/updates/.keep": "" });
  const state = StateStore.open(tempDir("driftless-pkgread-state-"));
  return { root, state, queries: [] };
}

const ahead: Clock = { ...systemClock, now: () => new Date(Date.now() + 10_000) };

function converge(h: Host, resources = [pkg("hello")], clock: Clock = ahead, options: Partial<RunOptions> = {}) {
  const runner: Runner = {
    run(file, args, runOptions) {
      if (path.basename(file) === "dpkg-query") h.queries.push([...args]);
      return systemRunner.run(file, args, runOptions);
    },
  };
  const ports: Partial<RunPorts> = { runner, clock, packageManager: detectPackageManager };
  return run(h.root, "unused", { mode: "apply", resources, state: h.state, ...options }, ports);
}

/** Runs twice: the second run must take the stored read (no dpkg-query), so what follows tests a change. */
async function convergeStored(h: Host) {
  await converge(h);
  await converge(h);
  expect(h.queries).toHaveLength(1);
}

/** Replaces dpkg's status file as dpkg does: a new file renamed over the old one. */
function replaceStatus(h: Host, version: string): void {
  const file = path.join(h.root, "var/lib/dpkg/status");
  writeFileSync(`${file}-new`, status(version));
  renameSync(`${file}-new`, file);
}

describe.skipIf(!dpkgQueryHere)("the stored package read (needs dpkg-query on this machine)", () => {
  it("reads dpkg once, then takes the stored read while the database is unchanged", async () => {
    const h = host();
    const first = await converge(h);
    expect(first.status).toBe("in-sync");
    expect(h.queries).toHaveLength(1);
    const second = await converge(h);
    expect(second.status).toBe("in-sync");
    expect(h.queries).toHaveLength(1);
  });

  it("reads again when dpkg replaces its status file, and sees the change", async () => {
    const h = host();
    await convergeStored(h);
    replaceStatus(h, "2.10-4");
    const pinned = [pkg("hello", { version: "2.10-3" })];
    const after = await converge(h, pinned, ahead, { mode: "plan" });
    expect(h.queries).toHaveLength(2);
    // The pinned version is no longer the installed one: the plan installs it.
    expect(after.plan?.changes.map((c) => c.resource)).toEqual(["package:hello"]);
  });

  it("reads again when dpkg's updates journal changes", async () => {
    const h = host();
    await convergeStored(h);
    writeFileSync(path.join(h.root, "var/lib/dpkg/updates/0001"), "");
    await converge(h);
    expect(h.queries).toHaveLength(2);
  });

  it("reads again for another set of packages", async () => {
    const h = host();
    await convergeStored(h);
    const other = await converge(h, [pkg("hello"), pkg("gone", { state: "absent" })]);
    expect(other.status).toBe("in-sync");
    expect(h.queries).toHaveLength(2);
  });

  it("reads again, and replaces the stored read, when the stored read cannot be parsed", async () => {
    const h = host();
    await convergeStored(h);
    h.state.database.exec('UPDATE package_read SET packages = \'[["hello", {"installed": tru\'');
    const again = await converge(h);
    expect(again.status).toBe("in-sync");
    expect(again.errors).toEqual([]);
    expect(h.queries).toHaveLength(2);
    await converge(h);
    expect(h.queries).toHaveLength(2);
  });

  it("never stores a read for `latest` (its candidate comes from the index, not dpkg's database)", async () => {
    const h = host();
    const latest = [pkg("hello", { state: "latest" })];
    await converge(h, latest, ahead, { mode: "plan" });
    await converge(h, latest, ahead, { mode: "plan" });
    expect(h.queries).toHaveLength(2);
  });

  it("does not trust a read taken within two seconds of the database's last change", async () => {
    const h = host();
    // The real clock: the status file was written just now, so the stamp is racy.
    await converge(h, [pkg("hello")], systemClock);
    await converge(h, [pkg("hello")], systemClock);
    expect(h.queries).toHaveLength(2);
  });
});
