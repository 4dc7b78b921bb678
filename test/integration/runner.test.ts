import { describe, expect, it } from "vitest";
import { describeFailure, MAX_OUTPUT_BYTES, systemRunner } from "../../agent/src/host/runner.js";

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

describe("the command runner, on real processes", () => {
  it("an abort kills the command's whole process group and waits for it", async () => {
    const controller = new AbortController();
    let grandchild: number | undefined;
    const running = systemRunner.run("sh", ["-c", "sleep 100 & echo $!; wait"], {
      signal: controller.signal,
      onLine: (line) => {
        if (/^\d+$/.test(line)) {
          grandchild = Number(line);
          controller.abort();
        }
      },
    });
    await expect(running).rejects.toMatchObject({ code: "ECANCELLED" });
    expect(grandchild).toBeGreaterThan(0);
    expect(alive(grandchild as number)).toBe(false);
  });

  it("kills a process group that ignores SIGTERM with SIGKILL after the grace period", async () => {
    const controller = new AbortController();
    let grandchild: number | undefined;
    // An ignored signal stays ignored across exec: the shell and its sleep both ignore SIGTERM.
    const running = systemRunner.run("sh", ["-c", "trap '' TERM; sleep 100 & echo $!; wait"], {
      signal: controller.signal,
      onLine: (line) => {
        if (/^\d+$/.test(line)) {
          grandchild = Number(line);
          controller.abort();
        }
      },
    });
    await expect(running).rejects.toMatchObject({ code: "ECANCELLED" });
    expect(alive(grandchild as number)).toBe(false);
  });

  it("keeps only the end of a very large output", async () => {
    const result = await systemRunner.run("sh", [
      "-c",
      "head -c 52428800 /dev/zero | tr '\\0' 'x'; echo; echo last line; echo on stderr >&2",
    ]);
    expect(result.exitCode).toBe(0);
    expect(result.stdout.length).toBeLessThanOrEqual(MAX_OUTPUT_BYTES + 100);
    expect(result.stdout).toMatch(/^\[\d+ bytes of earlier output not kept\]\n/);
    expect(result.stdout.endsWith("last line\n")).toBe(true);
    expect(result.stderr).toBe("on stderr\n");
  });

  it("names the signal that killed a command", async () => {
    const result = await systemRunner.run("sh", ["-c", "kill -KILL $$"]);
    expect(result.signal).toBe("SIGKILL");
    expect(result.exitCode).toBe(137);
    expect(describeFailure(result)).toBe("killed by SIGKILL");
  });

  it("passes input, environment and exit codes; a missing program throws", async () => {
    const result = await systemRunner.run("sh", ["-c", 'cat; echo "$GREETING"; exit 3'], {
      input: "from stdin\n",
      env: { GREETING: "hello" },
    });
    expect(result).toMatchObject({ exitCode: 3, stdout: "from stdin\nhello\n" });
    expect(result.signal).toBeUndefined();
    await expect(systemRunner.run("/nonexistent/program", [])).rejects.toMatchObject({
      code: "ECOMMAND",
      message: expect.stringContaining("not found"),
    });
  });
});
