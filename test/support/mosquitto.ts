/**
 * A real Mosquitto for a test: its own process on a free port, with a password file made by
 * mosquitto_passwd and the ACL file given (docs/mosquitto/driftless.acl). Never the system's.
 */
import { type ChildProcess, execFileSync, spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import * as path from "node:path";
import { acceptsConnections, freePort } from "./ports.js";

export const MOSQUITTO = "/usr/sbin/mosquitto";
export const haveMosquitto = existsSync(MOSQUITTO) && existsSync("/usr/bin/mosquitto_passwd");

export interface Mosquitto {
  port: number;
  url: string;
  stop(): Promise<void>;
}

export async function startMosquitto(options: {
  users: Record<string, string>;
  aclFile: string;
  /** Extra lines of mosquitto.conf. */
  extra?: string[];
}): Promise<Mosquitto> {
  const dir = mkdtempSync(path.join(tmpdir(), "driftless-mosquitto-"));
  const passwd = path.join(dir, "passwd");
  let first = true;
  for (const [user, password] of Object.entries(options.users)) {
    execFileSync("mosquitto_passwd", [...(first ? ["-c"] : []), "-b", passwd, user, password], { stdio: "ignore" });
    first = false;
  }
  const port = await freePort();
  const conf = path.join(dir, "mosquitto.conf");
  writeFileSync(
    conf,
    [
      "per_listener_settings false",
      "allow_anonymous false",
      `password_file ${passwd}`,
      `acl_file ${options.aclFile}`,
      `listener ${port} 127.0.0.1`,
      "persistence false",
      "user root",
      "log_dest stderr",
      "log_type error",
      "log_type warning",
      ...(options.extra ?? []),
      "",
    ].join("\n"),
  );
  const child: ChildProcess = spawn(MOSQUITTO, ["-c", conf], { stdio: ["ignore", "ignore", "pipe"] });
  let stderr = "";
  child.stderr?.on("data", (chunk) => {
    stderr += chunk;
  });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const deadline = Date.now() + 10_000;
  while (!(await acceptsConnections(port))) {
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill("SIGKILL");
      throw new Error(`mosquitto did not start: ${stderr}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  return {
    port,
    url: `mqtt://127.0.0.1:${port}`,
    stop: async () => {
      if (child.exitCode === null) child.kill("SIGTERM");
      await exited;
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
