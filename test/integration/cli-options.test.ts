/** The `driftless` command's own options: help, version, unknown options. */
import { describe, expect, it } from "vitest";
import { VERSION } from "../../agent/src/version.js";
import { driftless } from "../support/cli.js";

describe("driftless options", () => {
  it("lists -h and -V in its help", () => {
    const help = driftless(["--help"]);
    expect(help.exitCode).toBe(0);
    expect(help.stdout).toMatch(/^ {2}-V, --version +print the version$/m);
    expect(help.stdout).toMatch(/^ {2}-h, --help +show this help$/m);
  });

  it("prints the version, commit, Node version and architecture with -V and --version", () => {
    // The commit is the one dist/ was built from (scripts/build.mjs), not necessarily HEAD.
    const line = new RegExp(
      `^driftless ${VERSION.replaceAll(".", "\\.")} \\(commit ([0-9a-f]{40}|unknown), node ${process.version}, linux-${process.arch}\\)\n$`,
    );
    for (const flag of ["-V", "--version"]) {
      const result = driftless([flag]);
      expect({ flag, exitCode: result.exitCode, stdout: result.stdout }).toEqual({
        flag,
        exitCode: 0,
        stdout: expect.stringMatching(line),
      });
    }
  });

  it("says 'unknown option' for an option it does not know, before or after a command", () => {
    const top = driftless(["--frobnicate"]);
    expect(top.exitCode).toBe(1);
    expect(top.stderr).toMatch(/^driftless: unknown option '--frobnicate'$/m);

    for (const command of ["plan", "apply", "status", "facts", "agent", "install", "schema"]) {
      const result = driftless([command, "--frobnicate"]);
      expect({ command, exitCode: result.exitCode }).toEqual({ command, exitCode: 1 });
      expect(result.stderr).toContain(`driftless ${command}: unknown option '--frobnicate'`);
    }
    expect(driftless(["plan", "--source"]).stderr).toContain(
      "driftless plan: option '--source <value>' argument missing",
    );
  });
});
