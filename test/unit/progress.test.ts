import { describe, expect, it } from "vitest";
import { terminalProgress } from "../../agent/src/cli/io.js";
import type { Clock } from "../../agent/src/host/clock.js";

function fakeStream(isTTY: boolean) {
  const writes: string[] = [];
  const stream = { isTTY, columns: 80, write: (s: string) => writes.push(s) > 0 } as unknown as NodeJS.WriteStream;
  return { stream, writes };
}

const clock = (t: { now: number }): Clock => ({
  now: () => new Date(t.now),
  monotonic: () => t.now,
  sleep: async () => {},
});

describe("terminal progress", () => {
  it("shows a long step with its elapsed time and last output line on a terminal, then clears it", async () => {
    const t = { now: 0 };
    const { stream, writes } = fakeStream(true);
    const progress = terminalProgress(stream, clock(t));
    progress.start("install package:nginx");
    progress.line("Unpacking nginx (1.22.1-9) ...");
    t.now = 3000;
    await new Promise((r) => setTimeout(r, 300));
    progress.stop();
    expect(writes.some((w) => w.includes("install package:nginx 3s Unpacking nginx (1.22.1-9) ..."))).toBe(true);
    expect(writes.at(-1)).toBe("\r\x1b[2K");
  });

  it("stays quiet when not on a terminal", async () => {
    const { stream, writes } = fakeStream(false);
    const progress = terminalProgress(stream, clock({ now: 0 }));
    progress.start("install package:nginx");
    await new Promise((r) => setTimeout(r, 300));
    progress.stop();
    expect(writes).toEqual([]);
  });
});
