import { describe, expect, it } from "vitest";
import { planPackage } from "../../agent/src/resources/package/plan.js";
import { planNotify, planService } from "../../agent/src/resources/service/plan.js";
import { pkg, svc } from "../support/desired.js";

describe("planPackage", () => {
  it("installs a missing package and leaves an installed one alone", () => {
    expect(planPackage(pkg("nginx"), { installed: false })?.steps).toEqual([{ op: "package.install", name: "nginx" }]);
    expect(planPackage(pkg("nginx"), { installed: true, version: "1.22" })).toBeNull();
  });

  it("installs the pinned version when another is installed", () => {
    const change = planPackage(pkg("nginx", { version: "1.24" }), { installed: true, version: "1.22" });
    expect(change?.steps).toEqual([{ op: "package.install", name: "nginx", version: "1.24" }]);
    expect(change?.drift).toEqual([{ field: "version", desired: "1.24", actual: "1.22" }]);
  });

  it("upgrades a latest package only when the candidate differs", () => {
    const desired = pkg("tool", { state: "latest" });
    expect(planPackage(desired, { installed: true, version: "1.0", candidate: "2.0" })?.action).toBe("upgrade");
    expect(planPackage(desired, { installed: true, version: "2.0", candidate: "2.0" })).toBeNull();
  });

  it("removes an absent package", () => {
    expect(planPackage(pkg("telnet", { state: "absent" }), { installed: true, version: "1" })?.steps).toEqual([
      { op: "package.remove", name: "telnet" },
    ]);
    expect(planPackage(pkg("telnet", { state: "absent" }), { installed: false })).toBeNull();
  });
});

describe("planService", () => {
  it("enables and starts a stopped, disabled unit", () => {
    const change = planService(
      svc("nginx", { enabled: true, state: "running" }),
      { loaded: true, unitFileState: "disabled", activeState: "inactive" },
      false,
    );
    expect(change?.action).toBe("enable+start");
    expect(change?.drift).toEqual([
      { field: "enabled", desired: true, actual: "disabled" },
      { field: "state", desired: "running", actual: "inactive" },
    ]);
  });

  it("is in sync for a running, enabled unit and treats static units as either", () => {
    const desired = svc("nginx", { enabled: true, state: "running" });
    expect(planService(desired, { loaded: true, unitFileState: "enabled", activeState: "active" }, false)).toBeNull();
    expect(planService(desired, { loaded: true, unitFileState: "static", activeState: "active" }, false)).toBeNull();
  });

  it("plans for a unit that a package of the same run will install", () => {
    const change = planService(svc("mosquitto", { enabled: true, state: "running" }), { loaded: false }, false);
    expect(change?.steps.map((s) => (s.op === "service" ? s.action : s.op))).toEqual(["enable", "start"]);
  });

  it("only enables or disables when offline (a --root tree)", () => {
    const change = planService(
      svc("nginx", { enabled: false, state: "stopped" }),
      { loaded: true, unitFileState: "enabled" },
      true,
    );
    expect(change?.action).toBe("disable");
  });

  it("restarts on notify; a start planned anyway becomes a restart; a stopped service is left alone", () => {
    const desired = svc("nginx", { state: "running" });
    expect(planNotify(desired, null, ["file:/etc/nginx.conf"], false).notify?.steps).toEqual([
      { op: "service", action: "restart", name: "nginx" },
    ]);
    // The package of the same run may have started it with its default configuration.
    const starting = planService(desired, { loaded: false }, false);
    const merged = planNotify(desired, starting, ["file:/etc/nginx.conf"], false);
    expect(merged.notify).toBeNull();
    expect(merged.own?.steps).toEqual([{ op: "service", action: "restart", name: "nginx" }]);
    expect(merged.own?.action).toBe("start");
    expect(starting?.steps).toEqual([{ op: "service", action: "start", name: "nginx" }]); // not mutated
    expect(planNotify(svc("nginx", { state: "stopped" }), null, ["file:/x"], false).notify).toBeNull();
    expect(planNotify(svc("nginx"), null, ["file:/x"], false).notify?.steps).toEqual([
      { op: "service", action: "try-restart", name: "nginx" },
    ]);
  });

  it("reloads on notify, restarting units that cannot reload, and never fails on a stopped unit", () => {
    const running = planNotify(svc("nginx", { onNotify: "reload", state: "running" }), null, ["file:/x"], false).notify;
    expect(running?.action).toBe("reload");
    expect(running?.steps).toEqual([{ op: "service", action: "reload-or-restart", name: "nginx" }]);
    const unmanaged = planNotify(svc("nginx", { onNotify: "reload" }), null, ["file:/x"], false).notify;
    expect(unmanaged?.steps).toEqual([{ op: "service", action: "try-reload-or-restart", name: "nginx" }]);
  });
});
