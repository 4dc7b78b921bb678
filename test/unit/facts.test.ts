import { describe, expect, it } from "vitest";
import { flatten } from "../../agent/src/cli/facts.js";
import { debianArch } from "../../agent/src/facts/collect.js";
import {
  type BlockDevice,
  cpuFrom,
  defaultRouteInterface,
  factsCacheKey,
  fqdnFrom,
  interfacesFrom,
  parseProcMounts,
  pickDisks,
  pickPrimaryIPv4,
  virtualizationFrom,
} from "../../agent/src/facts/derive.js";

const dev = (name: string, mount: string, fsType = "", size = 1000, type = "part"): BlockDevice => ({
  name,
  type,
  fsType,
  mount,
  size,
  device: `/dev/${name}`,
});

describe("disks", () => {
  const mounts = [
    "sysfs /sys sysfs rw,nosuid 0 0",
    "/dev/mapper/vg0-root / ext4 rw,relatime 0 0",
    "/dev/sda1 /boot/efi vfat rw 0 0",
    "tmpfs /run tmpfs rw 0 0",
    "overlay /var/lib/docker/overlay2/x/merged overlay rw 0 0",
    "/dev/loop3 /snap/core/123 squashfs ro 0 0",
    "/dev/sdb1 /mnt/my\\040data xfs rw 0 0",
    "server:/export /srv/nfs nfs4 rw 0 0",
  ].join("\n");

  it("keeps mounted block devices, with /proc/mounts' device name and type, sorted by mount", () => {
    const disks = pickDisks(
      [
        dev("sda", "", "", 5000, "disk"),
        dev("sda1", "/boot/efi", "vfat", 500),
        dev("vg0-root", "/", "", 4000, "lvm"),
        dev("loop3", "/snap/core/123", "squashfs", 60),
        dev("sda2", "[SWAP]", "swap", 100),
        dev("sr0", "/media/cdrom", "iso9660", 700, "rom"),
        dev("sdb1", "/mnt/my data", "xfs", 9000),
        dev("sdc1", "", "ext4", 100),
        dev("zram0", "", "", 0, "disk"),
      ],
      mounts,
    );
    expect(disks).toEqual([
      { device: "/dev/mapper/vg0-root", mount: "/", type: "ext4", sizeBytes: 4000 },
      { device: "/dev/sda1", mount: "/boot/efi", type: "vfat", sizeBytes: 500 },
      { device: "/dev/sdb1", mount: "/mnt/my data", type: "xfs", sizeBytes: 9000 },
    ]);
  });

  it("lists a mount point once, and keeps lsblk's device when /proc/mounts does not know the mount", () => {
    expect(pickDisks([dev("vda", "/", "ext4"), dev("vda", "/", "ext4")], "")).toEqual([
      { device: "/dev/vda", mount: "/", type: "ext4", sizeBytes: 1000 },
    ]);
  });

  it("reads /proc/mounts with its octal escapes; the last mount on a point wins", () => {
    const parsed = parseProcMounts("/dev/a /x ext4 rw 0 0\n/dev/b /x xfs rw 0 0\n/dev/c /a\\011b vfat rw 0 0\n\n");
    expect(parsed.get("/x")).toEqual({ source: "/dev/b", type: "xfs" });
    expect(parsed.get("/a\tb")).toEqual({ source: "/dev/c", type: "vfat" });
  });
});

describe("network", () => {
  const raw = {
    lo: [
      { address: "127.0.0.1", family: "IPv4", mac: "00:00:00:00:00:00", internal: true },
      { address: "::1", family: "IPv6", mac: "00:00:00:00:00:00", internal: true },
    ],
    eth0: [
      { address: "10.0.0.5", family: "IPv4", mac: "02:00:00:00:00:01", internal: false },
      { address: "fe80::1", family: "IPv6", mac: "02:00:00:00:00:01", internal: false },
    ],
    wlan0: [{ address: "192.168.1.9", family: 4, mac: "02:00:00:00:00:02", internal: false }],
    docker0: [],
  };

  it("lists interfaces with their addresses, loopback and address-less ones left out", () => {
    expect(interfacesFrom(raw)).toEqual([
      { name: "eth0", mac: "02:00:00:00:00:01", ipv4: ["10.0.0.5"], ipv6: ["fe80::1"] },
      { name: "wlan0", mac: "02:00:00:00:00:02", ipv4: ["192.168.1.9"], ipv6: [] },
    ]);
    expect(interfacesFrom({ lo: raw.lo })).toEqual([]);
  });

  const route = [
    "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT",
    "eth0\t0000000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0",
    "wlan0\t00000000\t0101A8C0\t0003\t0\t0\t600\t00000000\t0\t0\t0",
    "eth0\t00000000\t0100000A\t0003\t0\t0\t100\t00000000\t0\t0\t0",
    "tun0\t00000000\t00000000\t0000\t0\t0\t1\t00000000\t0\t0\t0",
    "",
  ].join("\n");

  it("finds the default route's interface: up, lowest metric", () => {
    expect(defaultRouteInterface(route)).toBe("eth0");
    expect(defaultRouteInterface(route.split("\n").slice(0, 2).join("\n"))).toBeNull();
    expect(defaultRouteInterface("")).toBeNull();
  });

  it("picks the primary IPv4: the default route's, else the first not link-local, else none", () => {
    const interfaces = interfacesFrom(raw);
    expect(pickPrimaryIPv4(interfaces, "wlan0")).toBe("192.168.1.9");
    expect(pickPrimaryIPv4(interfaces, null)).toBe("10.0.0.5");
    expect(pickPrimaryIPv4(interfaces, "tun0")).toBe("10.0.0.5");
    const linkLocal = [
      { name: "a", mac: "", ipv4: ["169.254.3.4"], ipv6: [] },
      { name: "b", mac: "", ipv4: ["172.16.0.2"], ipv6: [] },
    ];
    expect(pickPrimaryIPv4(linkLocal, null)).toBe("172.16.0.2");
    expect(pickPrimaryIPv4(linkLocal.slice(0, 1), null)).toBe("169.254.3.4");
    expect(pickPrimaryIPv4([], null)).toBeUndefined();
  });

  it("finds the fqdn in /etc/hosts as hostname -f does, without DNS", () => {
    const hosts = "127.0.0.1 localhost\n# 127.0.1.1 edge-1.old.example edge-1\n127.0.1.1\tedge-1.example.com edge-1\n";
    expect(fqdnFrom("edge-1", hosts)).toBe("edge-1.example.com");
    expect(fqdnFrom("edge-1.lan", hosts)).toBe("edge-1.lan");
    expect(fqdnFrom("edge-2", hosts)).toBeUndefined();
    expect(fqdnFrom("edge", hosts)).toBeUndefined();
  });
});

describe("cpu", () => {
  const info = { manufacturer: "ARM", brand: "Cortex-A72", vendor: "ARM", physicalCores: 4, speed: 1.5, speedMax: 1.8 };

  it("keeps the kernel's model name, falls back to systeminformation's, prefers the maximum clock", () => {
    expect(cpuFrom(info, "Intel(R) Xeon(R) CPU @ 2.20GHz", "")).toEqual({
      model: "Intel(R) Xeon(R) CPU @ 2.20GHz",
      vendor: "ARM",
      physicalCores: 4,
      speedGHz: 1.8,
    });
    expect(cpuFrom(info, "unknown", "").model).toBe("ARM Cortex-A72");
    expect(cpuFrom(info, undefined, "").model).toBe("ARM Cortex-A72");
    expect(cpuFrom({ ...info, speedMax: 0 }, undefined, "").speedGHz).toBe(1.5);
  });

  it("takes the clock from /proc/cpuinfo when systeminformation has none, and leaves it out when nothing has", () => {
    const none = { ...info, speed: 0, speedMax: 0 };
    expect(cpuFrom(none, "x", "processor\t: 0\ncpu MHz\t\t: 2596.098\n").speedGHz).toBe(2.6);
    expect(cpuFrom(none, "x", "processor\t: 0\n")).not.toHaveProperty("speedGHz");
    expect(cpuFrom({ ...none, manufacturer: "", vendor: "" }, "x", "").vendor).toBe("unknown");
  });
});

describe("virtualization", () => {
  const bare = { manufacturer: "Dell Inc.", model: "PowerEdge R640", virtual: false };

  it("names a container first, then the hypervisor, else none", () => {
    expect(virtualizationFrom(bare, null)).toEqual({ virtual: false, type: "none" });
    expect(virtualizationFrom(bare, "systemd-nspawn")).toEqual({ virtual: true, type: "container" });
    expect(virtualizationFrom({ ...bare, model: "Docker Container" }, null)).toEqual({
      virtual: true,
      type: "container",
    });
    const kvm = { manufacturer: "QEMU", model: "KVM", virtual: true, virtualHost: "KVM" };
    expect(virtualizationFrom(kvm, null)).toEqual({ virtual: true, type: "kvm" });
    expect(virtualizationFrom(kvm, "docker")).toEqual({ virtual: true, type: "container" });
    expect(virtualizationFrom({ manufacturer: "Microsoft", model: "WSL", virtual: true }, null).type).toBe("wsl");
    expect(virtualizationFrom({ ...bare, virtual: true }, null).type).toBe("vm");
  });
});

describe("facts cache key", () => {
  it("changes with the boot id and with the os-release text, and only with them", () => {
    const key = factsCacheKey("b1", "ID=debian\n");
    expect(key).toBe(factsCacheKey("b1", "ID=debian\n"));
    expect(key.startsWith("b1/")).toBe(true);
    expect(factsCacheKey("b2", "ID=debian\n")).not.toBe(key);
    expect(factsCacheKey("b1", "ID=debian\nVERSION_ID=13\n")).not.toBe(key);
  });
});

describe("facts output", () => {
  it("maps node's architectures to Debian's names", () => {
    expect(debianArch("x64")).toBe("amd64");
    expect(debianArch("arm")).toBe("armhf");
    expect(debianArch("loong64")).toBe("loong64");
  });

  it("flattens facts to the dotted paths match rules use; lists of objects by index", () => {
    expect(
      flatten({
        os: { arch: "amd64" },
        disks: [{ mount: "/" }],
        network: { interfaces: [{ ipv4: ["10.0.0.5"] }] },
        none: [],
        incomplete: ["disks"],
      }),
    ).toEqual([
      ["os.arch", "amd64"],
      ["disks.0.mount", "/"],
      ["network.interfaces.0.ipv4", ["10.0.0.5"]],
      ["none", []],
      ["incomplete", ["disks"]],
    ]);
  });
});
