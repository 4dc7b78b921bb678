import { describe, expect, it } from "vitest";
import { makeStyle } from "../../agent/src/cli/style.js";
import { normaliseUrl } from "../../controlplane/src/cli/client.js";
import { age, table } from "../../controlplane/src/cli/table.js";
import { hostFilter } from "../../controlplane/src/http/api.js";
import { escapeHtml, renderFleetPage } from "../../controlplane/src/http/page.js";

describe("fleet CLI tables", () => {
  it("pads columns to their widest cell and colours after padding", () => {
    const plain = table(
      ["HOST", "SYNC"],
      [
        ["web-10", "in-sync"],
        ["db", "drifted"],
      ],
      makeStyle(false),
    );
    expect(plain).toEqual(["HOST    SYNC", "web-10  in-sync", "db      drifted"]);
    const style = makeStyle(true);
    const [, first] = table(["HOST", "SYNC", "X"], [["a", { text: "in-sync", colour: style.green }, ""]], style);
    expect(first).toBe("a     \x1b[32min-sync\x1b[39m");
  });

  it("says how long ago", () => {
    const now = new Date("2026-01-02T00:00:00Z");
    expect(age(null, now)).toBe("never");
    expect(age("2026-01-01T23:59:30Z", now)).toBe("30s ago");
    expect(age("2026-01-01T23:50:00Z", now)).toBe("10m ago");
    expect(age("2026-01-01T20:00:00Z", now)).toBe("4h ago");
    expect(age("2025-12-29T00:00:00Z", now)).toBe("4d ago");
  });

  it("takes http(s) URLs without credentials, trailing slash removed", () => {
    expect(normaliseUrl("http://127.0.0.1:8080/")).toBe("http://127.0.0.1:8080");
    expect(normaliseUrl("https://cp.example/driftless/")).toBe("https://cp.example/driftless");
    expect(() => normaliseUrl("127.0.0.1:8080")).toThrow(/not a URL \(expected http:\/\/HOST:PORT\)/);
    expect(() => normaliseUrl("localhost:8080")).toThrow(/expected an http/);
    expect(() => normaliseUrl("nope")).toThrow(/not a URL/);
    expect(() => normaliseUrl("http://u:secret@cp")).toThrow(/not in the URL/);
  });
});

describe("API filters", () => {
  it("reads repeated labels, a state and a commit", () => {
    expect(hostFilter(new URLSearchParams("label=role=web&label=site=a=b&state=stale&commit=ABC123"))).toEqual({
      labels: { role: "web", site: "a=b" },
      state: "stale",
      commit: "abc123",
    });
    expect(hostFilter(new URLSearchParams(""))).toEqual({});
    expect(() => hostFilter(new URLSearchParams("state=green"))).toThrow(/expected one of/);
  });
});

describe("the page", () => {
  it("escapes what hosts report", () => {
    expect(escapeHtml(`<script>"x"&'y'`)).toBe("&#60;script&#62;&#34;x&#34;&#38;&#39;y&#39;");
    const html = renderFleetPage(
      {
        hosts: 1,
        presence: { online: 1, stale: 0, offline: 0, lost: 0, unknown: 0 },
        sync: { "in-sync": 1, drifted: 0, failed: 0, "never-reported": 0 },
        commits: {},
        head: null,
        labels: {},
      },
      [
        {
          id: "web-1",
          presence: "online",
          online: true,
          sync: "in-sync",
          commit: null,
          lastSeen: null,
          labels: { note: "<img src=x onerror=alert(1)>" },
          version: null,
          mode: null,
          lastRun: null,
        },
      ],
    );
    expect(html).not.toContain("<img");
    expect(html).toContain("note=&#60;img src=x onerror=alert(1)&#62;");
  });
});
