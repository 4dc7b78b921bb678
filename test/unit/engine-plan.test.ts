import { describe, expect, it } from "vitest";
import { orderResources } from "../../agent/src/engine/graph.js";
import { plan } from "../../agent/src/engine/plan.js";
import type { ActualFile, ActualPackage, ActualService, Desired } from "../../agent/src/resources/types.js";
import { accounts, file, pkg, sha256, svc } from "../support/desired.js";

function planFor(
  resources: Desired[],
  actual: {
    files?: Record<string, ActualFile>;
    packages?: Record<string, ActualPackage>;
    services?: Record<string, ActualService>;
  },
  servicesOffline = false,
) {
  return plan({
    ordering: orderResources(resources),
    actual: {
      files: new Map(Object.entries(actual.files ?? {})),
      packages: new Map(Object.entries(actual.packages ?? {})),
      services: new Map(Object.entries(actual.services ?? {})),
      accounts,
    },
    readProblems: new Map(),
    servicesOffline,
  });
}

const conf = Buffer.from("listener 1883\n");
const running = { loaded: true, unitFileState: "enabled", activeState: "active", mainPid: 42 };

describe("plan", () => {
  it("restarts a notified service once, after its changed files", () => {
    const resources = [
      file("/etc/m/a.conf", { content: conf, notify: ["service:mosquitto"] }),
      file("/etc/m/b.conf", { content: conf, notify: ["service:mosquitto"] }),
      svc("mosquitto", { enabled: true, state: "running" }),
    ];
    const p = planFor(resources, {
      files: { "file:/etc/m/a.conf": { type: "absent" }, "file:/etc/m/b.conf": { type: "absent" } },
      services: { mosquitto: running },
    });
    expect(p.changes.map((c) => `${c.resource} ${c.action}`)).toEqual([
      "file:/etc/m/a.conf create",
      "file:/etc/m/b.conf create",
      "service:mosquitto restart",
    ]);
    expect(p.changes[2]?.triggeredBy).toEqual(["file:/etc/m/a.conf", "file:/etc/m/b.conf"]);
  });

  it("does not restart when the notifying file is in sync", () => {
    const resources = [
      file("/etc/m/a.conf", { content: conf, notify: ["service:mosquitto"] }),
      svc("mosquitto", { state: "running" }),
    ];
    const p = planFor(resources, {
      files: { "file:/etc/m/a.conf": { type: "file", mode: 0o644, uid: 0, gid: 0, contentHash: sha256(conf) } },
      services: { mosquitto: running },
    });
    expect(p.changes).toEqual([]);
  });

  it("reloads systemd after a changed unit file, before the services", () => {
    const resources = [
      file("/etc/systemd/system/app.service", { content: Buffer.from("[Service]\nExecStart=/bin/true\n") }),
      file("/etc/app.conf", { content: conf }),
      svc("app", { enabled: true }),
    ];
    const p = planFor(resources, {
      files: { "file:/etc/systemd/system/app.service": { type: "absent" }, "file:/etc/app.conf": { type: "absent" } },
      services: { app: { loaded: false } },
    });
    expect(p.changes.map((c) => c.resource)).toEqual([
      "file:/etc/systemd/system/app.service",
      "systemd:daemon-reload",
      "file:/etc/app.conf",
      "service:app",
    ]);
  });

  it("turns a missing actual state into a problem, not a change", () => {
    const p = planFor([pkg("nginx"), file("/a", { content: conf })], { files: { "file:/a": { type: "absent" } } });
    expect(p.problems.get("package:nginx")).toMatch(/not read/);
    expect(p.changes.map((c) => c.resource)).toEqual(["file:/a"]);
  });

  it("is a drift report: the plan of a host in sync is empty", () => {
    const resources = [
      pkg("nginx"),
      file("/a", { content: conf, mode: 0o600 }),
      svc("nginx", { enabled: true, state: "running" }),
    ];
    const p = planFor(resources, {
      files: { "file:/a": { type: "file", mode: 0o600, uid: 0, gid: 0, contentHash: sha256(conf) } },
      packages: { nginx: { installed: true, version: "1.22" } },
      services: { nginx: running },
    });
    expect(p.changes).toEqual([]);
    expect(p.order).toEqual(["package:nginx", "file:/a", "service:nginx"]);
  });
});
