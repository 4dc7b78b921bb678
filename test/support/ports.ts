/** Real ports for in-process runs: the machine's filesystem rooted at a temp dir, real commands, real clock. */

import * as net from "node:net";
import type { RunOptions, RunPorts } from "../../agent/src/engine/run.js";
import { converge } from "../../agent/src/engine/run.js";
import { systemClock } from "../../agent/src/host/clock.js";
import { HostFs } from "../../agent/src/host/fs.js";
import { systemRunner } from "../../agent/src/host/runner.js";

/** Ports for a host rooted at `root`, without package or service managers (files only). */
export function filePorts(root: string): RunPorts {
  return {
    repoFs: new HostFs("/"),
    hostFs: new HostFs(root),
    runner: systemRunner,
    clock: systemClock,
    packageManager: () => null,
    serviceManager: () => {
      throw new Error("no service manager in file-only tests");
    },
  };
}

export function run(root: string, source: string, options: Partial<RunOptions> = {}, ports: Partial<RunPorts> = {}) {
  return converge(
    { ...filePorts(root), ...ports },
    {
      mode: "plan",
      source,
      host: "edge-1",
      labels: {},
      facts: { os: { arch: "amd64", name: "Debian GNU/Linux 12 (bookworm)" } },
      state: null,
      ...options,
    },
  );
}

/** A TCP port free on 127.0.0.1 now (for servers that cannot listen on port 0 themselves). */
export async function freePort(): Promise<number> {
  const { createServer } = await import("node:net");
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

/** True when something accepts TCP connections on 127.0.0.1:`port`. */
export function acceptsConnections(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, "127.0.0.1");
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}
