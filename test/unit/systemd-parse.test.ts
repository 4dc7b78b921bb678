/**
 * Parsing of systemctl output. The fixtures were captured on a Debian 12 test host
 * (systemd 252 in systemd-nspawn).
 */
import { describe, expect, it } from "vitest";
import {
  parseListUnitFiles,
  parseSystemctlShow,
  serviceFromShow,
  templateOf,
  unitName,
} from "../../agent/src/resources/service/systemd.js";

// systemctl show --property=Id,LoadState,ActiveState,UnitFileState,MainPID -- \
//   dbus.service nosuch.service systemd-journald.service dbus-org.freedesktop.login1.service
const SHOW = `MainPID=29
Id=dbus.service
LoadState=loaded
ActiveState=active
UnitFileState=static

MainPID=0
Id=nosuch.service
LoadState=not-found
ActiveState=inactive
UnitFileState=

MainPID=18
Id=systemd-journald.service
LoadState=loaded
ActiveState=active
UnitFileState=static

MainPID=30
Id=systemd-logind.service
LoadState=loaded
ActiveState=active
UnitFileState=static
`;

// ... -- systemd-networkd.service, after `systemctl mask systemd-networkd.service`
const SHOW_MASKED = `MainPID=0
Id=systemd-networkd.service
LoadState=masked
ActiveState=inactive
UnitFileState=masked
`;

// systemctl --root=/ list-unit-files --no-legend --no-pager -- \
//   dbus.service getty@tty1.service systemd-networkd.service nosuch.service getty@.service
const LIST_UNIT_FILES = `dbus.service             static   -
getty@.service           enabled  enabled
systemd-networkd.service disabled enabled
`;

describe("unit names", () => {
  it("adds .service to names without a unit suffix", () => {
    expect(unitName("mosquitto")).toBe("mosquitto.service");
    expect(unitName("getty@tty1")).toBe("getty@tty1.service");
    expect(unitName("org.example.agent")).toBe("org.example.agent.service");
    expect(unitName("fstrim.timer")).toBe("fstrim.timer");
    expect(unitName("dbus.socket")).toBe("dbus.socket");
    expect(unitName("dbus.service")).toBe("dbus.service");
  });

  it("finds the template of an instance", () => {
    expect(templateOf("getty@tty1.service")).toBe("getty@.service");
    expect(templateOf("getty@.service")).toBeNull();
    expect(templateOf("dbus.service")).toBeNull();
  });
});

describe("systemctl show output", () => {
  it("reads one block per unit, in the order asked", () => {
    const blocks = parseSystemctlShow(SHOW);
    expect(blocks.map((b) => b.Id)).toEqual([
      "dbus.service",
      "nosuch.service",
      "systemd-journald.service",
      "systemd-logind.service", // asked as its alias dbus-org.freedesktop.login1.service
    ]);
    expect(blocks[1]).toEqual({
      MainPID: "0",
      Id: "nosuch.service",
      LoadState: "not-found",
      ActiveState: "inactive",
      UnitFileState: "",
    });
  });

  it("maps blocks to services; not-found is not loaded", () => {
    const services = parseSystemctlShow(SHOW).map(serviceFromShow);
    expect(services[0]).toEqual({ loaded: true, unitFileState: "static", activeState: "active", mainPid: 29 });
    expect(services[1]).toEqual({ loaded: false, activeState: "inactive" });
  });

  it("keeps masked units loaded, with their state", () => {
    const [masked] = parseSystemctlShow(SHOW_MASKED).map(serviceFromShow);
    expect(masked).toEqual({ loaded: true, unitFileState: "masked", activeState: "inactive" });
  });

  it("reads nothing from empty output", () => {
    expect(parseSystemctlShow("")).toEqual([]);
    expect(parseSystemctlShow("\n\n")).toEqual([]);
  });
});

describe("systemctl list-unit-files output", () => {
  it("reads unit and state, ignoring the preset column", () => {
    expect(Object.fromEntries(parseListUnitFiles(LIST_UNIT_FILES))).toEqual({
      "dbus.service": "static",
      "getty@.service": "enabled",
      "systemd-networkd.service": "disabled",
    });
  });

  it("reads the two-column form of older systemd", () => {
    expect(Object.fromEntries(parseListUnitFiles("ssh.service enabled\n"))).toEqual({ "ssh.service": "enabled" });
    expect(parseListUnitFiles("").size).toBe(0);
  });
});
