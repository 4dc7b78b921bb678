/**
 * The single binary (`npm run build:binary`) run as a plain process on this machine: the x64 one
 * directly, the arm64 one under qemu-aarch64-static with Debian 11's arm64 glibc as its sysroot.
 * Each: version line, facts, a plan that writes nothing, apply into a temp --root, the state
 * database read back by `status`, and the glibc its executable and its SQLite addon need. The
 * x64 one also runs as the daemon, which starts each run as a child process of itself.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import * as path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { VERSION } from "../../agent/src/version.js";
import {
  type Arch,
  BINARY_NODE_VERSION,
  type Binary,
  BUILD_TIMEOUT_MS,
  binarySupport,
  compareVersions,
  ensureBinary,
  GLIBC_FLOOR,
  newestGlibc,
  SMALL_PROFILE,
  smallRepo,
} from "../support/binary.js";
import { waitFor } from "../support/mqtt.js";
import { freePort } from "../support/ports.js";
import { cleanupTemp, tempDir } from "../support/repo.js";
import { AedesBroker } from "../support/reporting.js";

/** What the binary says (DRIFTLESS_DEBUG) of a chunk of its full program taken with its code cache. */
const CHUNK_ACCEPTED = /^driftless: c-[A-Z0-9]+\.js: code cache accepted$/;

afterAll(cleanupTemp);

/** Every file under `dir`, relative to it. */
function listTree(dir: string): string[] {
  return readdirSync(dir, { recursive: true, encoding: "utf8" }).sort();
}

for (const arch of ["x64", "arm64"] as const satisfies readonly Arch[]) {
  const support = binarySupport(arch);

  describe.skipIf(!support.can)(`the ${arch} single binary`, () => {
    let bin: Binary;
    let repo: string;
    beforeAll(async () => {
      bin = await ensureBinary(arch);
      repo = smallRepo();
    }, BUILD_TIMEOUT_MS);

    it("prints its version, commit, Node version and architecture", async () => {
      for (const flag of ["--version", "-V"]) {
        const result = await bin.run([flag]);
        expect({ flag, exitCode: result.exitCode, stderr: result.stderr }).toEqual({ flag, exitCode: 0, stderr: "" });
        expect(result.stdout).toMatch(
          new RegExp(
            `^driftless ${VERSION.replaceAll(".", "\\.")} \\(commit ([0-9a-f]{40}|unknown), node ${BINARY_NODE_VERSION}, linux-${arch}\\)\n$`,
          ),
        );
      }
    });

    it("runs its two programs with the code caches V8 made at build time", async () => {
      // The full program (every command, every run) and the supervisor (`agent` alone): a cache
      // V8 rejects (another Node, other flags) would cost each run its compile time, silently.
      const full = await bin.run(["plan", "--help"], { env: { DRIFTLESS_DEBUG: "1" } });
      expect(full.exitCode, full.stderr).toBe(0);
      // The entry first, then each chunk the command loads, every one from its code cache.
      const lines = full.stderr.trim().split("\n");
      expect(lines[0]).toBe("driftless: driftless.js: code cache accepted");
      expect(lines.length).toBeGreaterThan(1);
      for (const line of lines.slice(1)) expect(line).toMatch(CHUNK_ACCEPTED);
      const supervisor = await bin.run(["agent", "--help"], { env: { DRIFTLESS_DEBUG: "1" } });
      expect(supervisor.exitCode, supervisor.stderr).toBe(0);
      expect(supervisor.stderr).toBe("driftless: supervisor.js: code cache accepted\n");
      expect(supervisor.stdout).toContain("Usage: driftless agent");
    });

    it("prints the facts as JSON", async () => {
      const result = await bin.run(["facts", "--json"]);
      expect(result.exitCode, result.stderr).toBe(0);
      const facts = JSON.parse(result.stdout) as { hostname: string; os: { family: string; machine: string } };
      expect(facts.os.family).toBe("linux");
      expect(facts.hostname.length).toBeGreaterThan(0);
      // Under qemu the program sees an arm64 machine.
      expect(facts.os.machine).toBe(arch === "x64" ? "x86_64" : "aarch64");
    });

    it("plans into a temp root and writes nothing, there or in its temp folder", async () => {
      const root = tempDir("driftless-bin-root-");
      const scratch = tempDir("driftless-bin-tmp-");
      const result = await bin.run(["plan", "--source", repo, "--root", root, "--host", "edge-1", "--json"], {
        env: { TMPDIR: scratch },
      });
      expect(result.exitCode, result.stderr).toBe(2);
      const plan = JSON.parse(result.stdout) as { changes: { resource: string; action: string }[] };
      expect(plan.changes.map((c) => c.resource).sort()).toEqual(
        [`file:${SMALL_PROFILE.motd}`, "file:/etc/small.conf", `file:${SMALL_PROFILE.dir}`].sort(),
      );
      expect(listTree(root)).toEqual([]);
      // The addon went to a private temp folder, removed once loaded.
      expect(listTree(scratch)).toEqual([]);
    });

    it("applies into a temp root, keeps its addon in the state directory and reads its runs back", async () => {
      const root = tempDir("driftless-bin-root-");
      const first = await bin.run(["apply", "--source", repo, "--root", root, "--host", "edge-1"]);
      expect(first.exitCode, first.stderr).toBe(2);
      expect(readFileSync(path.join(root, SMALL_PROFILE.motd), "utf8")).toBe(
        `${SMALL_PROFILE.motdText} edge-1 (lab)\n`,
      );
      expect(statSync(path.join(root, SMALL_PROFILE.dir)).mode & 0o7777).toBe(0o750);

      const again = await bin.run(["apply", "--source", repo, "--root", root, "--host", "edge-1"]);
      expect(again.exitCode, again.stderr).toBe(0);

      const stateDir = path.join(root, "var/lib/driftless");
      const native = readdirSync(path.join(stateDir, "native"));
      expect(native).toEqual([expect.stringMatching(/^better_sqlite3-[0-9a-f]{16}\.node$/)]);
      // Named by the hash the build carries in the binary: that of the file's bytes.
      const addonBytes = readFileSync(path.join(stateDir, "native", native[0] as string));
      const addonHash = createHash("sha256").update(addonBytes).digest("hex").slice(0, 16);
      expect(native[0]).toBe(`better_sqlite3-${addonHash}.node`);

      const status = await bin.run(["status", "--root", root, "--json"]);
      expect(status.exitCode, status.stderr).toBe(0);
      const runs = (JSON.parse(status.stdout) as { runs: { result: string }[] }).runs;
      expect(runs.map((r) => r.result)).toEqual(["in-sync", "changed"]);

      // The oldest glibc: what the executable and its SQLite addon need (docs/install.md).
      const glibc = await newestGlibc([bin.path, path.join(stateDir, "native", native[0] as string)]);
      console.info(`[driftless] the ${arch} binary needs glibc ${glibc}`);
      expect(compareVersions(glibc, GLIBC_FLOOR)).toBeLessThanOrEqual(0);
    });

    // Under qemu the daemon adds nothing the x64 run does not show.
    if (arch === "x64")
      it("runs as the daemon, which starts each run as a child of the binary and reports to a broker", async () => {
        const broker = new AedesBroker(await freePort());
        await broker.start();
        const dir = tempDir("driftless-bin-agent-");
        const root = path.join(dir, "root");
        const stateDir = path.join(dir, "state");
        const config = path.join(dir, "agent.yaml");
        writeFileSync(
          config,
          `apiVersion: driftless/v1\nkind: AgentConfig\nhost: edge-2\nstateDir: ${stateDir}\nsource:\n  url: ${JSON.stringify(repo)}\n  interval: 1h\n  splay: 0s\nbroker:\n  url: ${broker.url}\n`,
        );
        const [file, ...args] = bin.command(["agent", "--config", config, "--root", root, "--log-format", "json"]);
        let log = "";
        // DRIFTLESS_DEBUG: each process says which program it runs (the daemon first, then its run).
        const agent: ChildProcess = spawn(file, args, {
          stdio: ["ignore", "ignore", "pipe"],
          env: { ...process.env, DRIFTLESS_DEBUG: "1" },
        });
        agent.stderr?.on("data", (chunk: Buffer) => {
          log += chunk.toString("utf8");
        });
        const exited = new Promise<number | null>((resolve) => agent.on("close", (code) => resolve(code)));
        try {
          await waitFor(
            () => `a run of the daemon, and its connection to the broker:\n${log}`,
            () => log.includes('"run finished"') && log.includes('"connected to the broker"'),
            60_000,
          );
          expect(readFileSync(path.join(root, SMALL_PROFILE.motd), "utf8")).toContain("edge-2");
          // The daemon holds only the supervisor program; the run, a child, the full one.
          const programs = log.split("\n").filter((line) => line.startsWith("driftless: "));
          expect(programs.slice(0, 2)).toEqual([
            "driftless: supervisor.js: code cache accepted",
            "driftless: driftless.js: code cache accepted",
          ]);
          for (const line of programs.slice(2)) expect(line).toMatch(CHUNK_ACCEPTED);
        } finally {
          agent.kill("SIGTERM");
          await exited;
          await broker.stop();
        }
        expect(await exited, log).toBe(0);
        // Node 24 warns of deprecated APIs on stderr, into the journal (MQTT.js given a URL: DEP0169).
        expect(log).not.toContain("Warning");
        const status = await bin.run(["status", "--state", stateDir, "--json"]);
        expect((JSON.parse(status.stdout) as { runs: { result: string }[] }).runs.map((r) => r.result)).toEqual([
          "changed",
        ]);
      });
  });
}
