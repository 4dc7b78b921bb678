/**
 * `driftlessctl serve` as users run it (the built bin/driftlessctl.js, a child process with the
 * embedded broker), and host connections to it; everything started is ended by `stop()`.
 */
import { type ChildProcess, spawn } from "node:child_process";
import * as path from "node:path";
import type { MqttClient } from "mqtt";
import { connectHost, type HostClientOptions, waitFor } from "./mqtt.js";

export const CTL = path.resolve("bin/driftlessctl.js");

export class ServeProcesses {
  readonly #servers: ChildProcess[] = [];
  readonly #clients: MqttClient[] = [];

  /** `driftlessctl serve ARGS`; resolves once its embedded broker listens. */
  async serve(args: string[], env: NodeJS.ProcessEnv = process.env): Promise<ChildProcess> {
    const child = spawn(process.execPath, [CTL, "serve", ...args], { stdio: ["ignore", "pipe", "pipe"], env });
    this.#servers.push(child);
    let output = "";
    child.stdout?.on("data", (chunk) => {
      output += chunk;
    });
    child.stderr?.on("data", (chunk) => {
      output += chunk;
    });
    await waitFor(`serve listening (${output})`, () => {
      if (child.exitCode !== null) throw new Error(`serve exited ${child.exitCode}: ${output}`);
      return output.includes("MQTT broker listening");
    });
    return child;
  }

  /** A host's connection (ended by stop()); rejects when refused. */
  async connect(options: HostClientOptions): Promise<MqttClient> {
    const client = await connectHost(options);
    this.#clients.push(client);
    return client;
  }

  /** Ends the connections, then kills the serves (SIGKILL: nothing to wait for). */
  async stop(): Promise<void> {
    for (const client of this.#clients.splice(0)) await client.endAsync(true).catch(() => {});
    for (const server of this.#servers.splice(0)) {
      if (server.exitCode === null && server.signalCode === null) {
        const exited = new Promise((resolve) => server.once("exit", resolve));
        server.kill("SIGKILL");
        await exited;
      }
    }
  }
}
