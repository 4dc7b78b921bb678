import { describe, expect, it } from "vitest";
import { factsStillHold, recordFactsUse } from "../../agent/src/facts/usage.js";
import { matches } from "../../agent/src/profile/select.js";

const facts = () => ({
  hostname: "edge-1",
  os: { arch: "arm64", release: "12", codename: "bookworm" },
  memory: { totalBytes: 1024 },
  network: { interfaces: [{ name: "eth0", mac: "aa" }, { name: "wlan0" }] },
  uptime: 100,
});

const paths = (recorder: ReturnType<typeof recordFactsUse>) => recorder.used().map((u) => u.path.join("."));

describe("recording the facts a load reads", () => {
  it("records the paths a fleet match reads, with their values, and nothing else", () => {
    const recorder = recordFactsUse(facts());
    const host = { name: "edge-1", labels: {}, facts: recorder.facts };
    expect(matches({ facts: { "os.arch": "arm64" } }, host)).toBe(true);
    expect(recorder.used()).toEqual([
      { path: ["os"], seen: "object" },
      { path: ["os", "arch"], seen: "string:arm64" },
    ]);
  });

  it("holds while the used facts keep their values, whatever the others do", () => {
    const recorder = recordFactsUse(facts());
    matches({ facts: { "os.arch": "arm64" } }, { name: "edge-1", labels: {}, facts: recorder.facts });
    const used = recorder.used();
    expect(factsStillHold({ ...facts(), uptime: 999, memory: { totalBytes: 2048 } }, used)).toBe(true);
    expect(factsStillHold({ ...facts(), os: { ...facts().os, release: "13" } }, used)).toBe(true);
    expect(factsStillHold({ ...facts(), os: { ...facts().os, arch: "amd64" } }, used)).toBe(false);
    expect(factsStillHold({ ...facts(), os: "linux" }, used)).toBe(false);
    const { os: _, ...withoutOs } = facts();
    expect(factsStillHold(withoutOs, used)).toBe(false);
  });

  it("records a fact read but absent, which then must stay absent", () => {
    const recorder = recordFactsUse(facts());
    expect(matches({ facts: { "virt.kind": "kvm" } }, { name: "x", labels: {}, facts: recorder.facts })).toBe(false);
    expect(recorder.used()).toEqual([{ path: ["virt"], seen: "absent" }]);
    expect(factsStillHold(facts(), recorder.used())).toBe(true);
    expect(factsStillHold({ ...facts(), virt: { kind: "kvm" } }, recorder.used())).toBe(false);
  });

  it("records a whole subtree when its keys are listed or it is printed as JSON", () => {
    const listed = recordFactsUse(facts());
    Object.keys(listed.facts.os as object);
    expect(listed.used()).toEqual([{ path: ["os"], seen: expect.stringMatching(/^json:/) }]);
    expect(factsStillHold({ ...facts(), os: { ...facts().os, codename: "trixie" } }, listed.used())).toBe(false);

    const printed = recordFactsUse(facts());
    expect(JSON.stringify(printed.facts.memory)).toBe(JSON.stringify(facts().memory));
    expect(factsStillHold({ ...facts(), memory: { totalBytes: 1 } }, printed.used())).toBe(false);
    expect(factsStillHold({ ...facts(), uptime: 1 }, printed.used())).toBe(true);
  });

  it("records an iterated array's length and the elements read", () => {
    const iterated = recordFactsUse(facts());
    const { interfaces } = iterated.facts.network as { interfaces: Array<{ name: string }> };
    expect([...interfaces].map((i) => i.name)).toEqual(["eth0", "wlan0"]);
    expect(paths(iterated)).toEqual(
      expect.arrayContaining(["network.interfaces.length", "network.interfaces.0.name", "network.interfaces.1.name"]),
    );
    expect(paths(iterated)).not.toContain("network.interfaces.0.mac");
    const grown = facts();
    grown.network.interfaces.push({ name: "eth1" });
    expect(factsStillHold(grown, iterated.used())).toBe(false);
    const renamed = facts();
    (renamed.network.interfaces[1] as { name: string }).name = "wlan1";
    expect(factsStillHold(renamed, iterated.used())).toBe(false);
    const otherMac = facts();
    (otherMac.network.interfaces[0] as { mac: string }).mac = "bb";
    expect(factsStillHold(otherMac, iterated.used())).toBe(true);
  });

  it("hands out values read through a property descriptor through the view too", () => {
    const recorder = recordFactsUse(facts());
    const os = Object.getOwnPropertyDescriptor(recorder.facts, "os")?.value as { arch: string };
    expect(os.arch).toBe("arm64");
    expect(paths(recorder)).toEqual(["os", "os.arch"]);
  });

  it("tells a number from a string, and an array from an object", () => {
    const recorder = recordFactsUse(facts());
    void (recorder.facts.os as { release: unknown }).release;
    void recorder.facts.network;
    expect(factsStillHold({ ...facts(), os: { ...facts().os, release: 12 } }, recorder.used())).toBe(false);
    expect(factsStillHold({ ...facts(), network: [] }, recorder.used())).toBe(false);
  });

  it("gives a read-only view that leaves the facts as they are", () => {
    const original = facts();
    const recorder = recordFactsUse(original);
    expect(() => {
      (recorder.facts as Record<string, unknown>).hostname = "other";
    }).toThrow(TypeError);
    expect(original.hostname).toBe("edge-1");
  });

  it("returns frozen values as they are and counts them whole", () => {
    const frozen = Object.freeze({ os: Object.freeze({ arch: "arm64" }) });
    const recorder = recordFactsUse(frozen);
    expect((recorder.facts.os as { arch: string }).arch).toBe("arm64");
    expect(recorder.used()).toEqual([{ path: ["os"], seen: 'json:{"arch":"arm64"}' }]);
  });
});
