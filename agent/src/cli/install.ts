/**
 * `driftless install` / `uninstall`: the systemd unit, the configuration and the state folder,
 * converged with the agent's own engine (so they are idempotent and print what they change).
 */
import { createHash } from "node:crypto";
import * as path from "node:path";
import { stringify } from "yaml";
import { DEFAULT_CONFIG } from "../config/load.js";
import { converge } from "../engine/run.js";
import { HostFs } from "../host/fs.js";
import { isSingleBinary } from "../host/native.js";
import { detectPackageManager } from "../resources/package/apt.js";
import { createSystemdManager } from "../resources/service/systemd.js";
import type { Desired, DesiredFile, DesiredService } from "../resources/types.js";
import { parse, parseLabels } from "./args.js";
import type { Io } from "./io.js";
import { applySummary, formatResult } from "./render.js";

export const INSTALL_HELP = `Usage: driftless install [--source URL] [--ref REF] [--host NAME] [--label K=V]... [--root DIR] [--no-start] [--exec CMD]

Installs the agent as the systemd service driftless.service: writes the unit, creates
${DEFAULT_CONFIG} (from --source, --ref, --host and --label; an existing one is kept) and
/var/lib/driftless, then enables and starts the service.

Options:
  --source URL     the profile repository (required when there is no configuration yet)
  --ref REF        branch, tag or commit (default main)
  --host NAME      host id (default: the hostname)
  --label K=V      a label (repeatable)
  --root DIR       install into the tree mounted at DIR (an image): enable, do not start
  --no-start       enable the service but do not start it now
  --exec CMD       the command in ExecStart (default: this program); for images whose agent
                   lives elsewhere, e.g. /usr/local/bin/driftless
  -h, --help       show this help
`;

export const UNINSTALL_HELP = `Usage: driftless uninstall [--purge] [--root DIR]

Stops and disables driftless.service and removes its unit. The configuration and the state
(/etc/driftless, /var/lib/driftless) stay unless --purge is given.
`;

const UNIT = "/etc/systemd/system/driftless.service";
const STATE_DIR = "/var/lib/driftless";

export function unitFile(execStart: string): string {
  return `# Installed by driftless install.
[Unit]
Description=Driftless agent: keeps this host at the state declared in Git
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
ExecStart=${execStart} agent --config ${DEFAULT_CONFIG}
# The shell's kill: minimal images have no /bin/kill.
ExecReload=/bin/sh -c 'kill -HUP $$MAINPID'
Restart=on-failure
RestartSec=15s
# The agent finishes the resource under way and records the run within 10 s.
TimeoutStopSec=15s
KillMode=mixed

[Install]
WantedBy=multi-user.target
`;
}

/** How systemd starts this very program. */
function execStart(): string {
  if (isSingleBinary()) return process.execPath;
  const script = new HostFs("/").realpath(process.argv[1] ?? "") ?? process.argv[1] ?? "driftless";
  return `${process.execPath} --max-semi-space-size=1 ${script}`;
}

function file(p: string, extra: Partial<DesiredFile>): DesiredFile {
  const out: DesiredFile = {
    kind: "file",
    id: `file:${p}`,
    path: p,
    state: "file",
    after: [],
    notify: [],
    declaredAt: { file: "driftless install", line: 0, column: 0 },
    profile: "driftless",
    ...extra,
  };
  if (out.content) out.contentHash = createHash("sha256").update(out.content).digest("hex");
  return out;
}

function service(extra: Partial<DesiredService>): DesiredService {
  return {
    kind: "service",
    id: "service:driftless",
    name: "driftless",
    onNotify: "restart",
    after: [],
    declaredAt: { file: "driftless install", line: 0, column: 0 },
    profile: "driftless",
    ...extra,
  };
}

export async function runInstall(args: string[], io: Io): Promise<number> {
  const { values } = parse(args, {
    source: { type: "string" },
    ref: { type: "string" },
    host: { type: "string" },
    label: { type: "string", multiple: true },
    root: { type: "string" },
    "no-start": { type: "boolean" },
    exec: { type: "string" },
  });
  if (values.help) {
    io.out(INSTALL_HELP);
    return 0;
  }
  const hostFs = new HostFs(path.resolve(values.root ?? "/"));
  const resources: Desired[] = [file("/etc/driftless", { state: "directory", mode: 0o755 })];
  if (!hostFs.lstat(DEFAULT_CONFIG)) {
    if (!values.source) {
      io.err(`driftless install: there is no ${DEFAULT_CONFIG} yet; pass --source URL (see driftless install --help)`);
      return 1;
    }
    const config = {
      apiVersion: "driftless/v1",
      kind: "AgentConfig",
      ...(values.host ? { host: values.host } : {}),
      labels: parseLabels(values.label),
      mode: "enforce",
      stateDir: STATE_DIR,
      source: { url: values.source, ref: values.ref ?? "main", interval: "5m", splay: "1m" },
    };
    const text = `# Driftless agent configuration (docs/agent.md). Reload with: systemctl reload driftless\n${stringify(config)}`;
    resources.push(file(DEFAULT_CONFIG, { content: Buffer.from(text), mode: 0o600 }));
  }
  resources.push(
    file(STATE_DIR, { state: "directory", mode: 0o700 }),
    file(UNIT, {
      content: Buffer.from(unitFile(values.exec ?? execStart())),
      mode: 0o644,
      notify: ["service:driftless"],
    }),
    service({ enabled: true, ...(values["no-start"] ? {} : { state: "running" }) }),
  );
  return convergeBuiltin(io, hostFs, resources);
}

export async function runUninstall(args: string[], io: Io): Promise<number> {
  const { values } = parse(args, { purge: { type: "boolean" }, root: { type: "string" } });
  if (values.help) {
    io.out(UNINSTALL_HELP);
    return 0;
  }
  const hostFs = new HostFs(path.resolve(values.root ?? "/"));
  const resources: Desired[] = [
    service({ enabled: false, state: "stopped", after: [] }),
    file(UNIT, { state: "absent", after: ["service:driftless"] }),
  ];
  const code = await convergeBuiltin(io, hostFs, resources);
  if (values.purge && code !== 1 && code !== 4) {
    for (const dir of ["/etc/driftless", STATE_DIR]) {
      if (hostFs.lstat(dir)) {
        hostFs.removeTree(dir);
        io.out(`  - ${dir}  removed`);
      }
    }
  }
  return code;
}

async function convergeBuiltin(io: Io, hostFs: HostFs, resources: Desired[]): Promise<number> {
  const outcome = await converge(
    {
      repoFs: new HostFs("/"),
      hostFs,
      runner: io.runner,
      clock: io.clock,
      packageManager: detectPackageManager,
      serviceManager: createSystemdManager,
    },
    {
      mode: "apply",
      source: "builtin",
      resources,
      host: "localhost",
      labels: {},
      facts: {},
      state: null,
      onResult: (result, change) => {
        for (const line of formatResult(result, change, io.style)) io.out(line);
      },
    },
  );
  io.out(applySummary(outcome, io.style));
  return outcome.exitCode;
}
