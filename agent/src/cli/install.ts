/**
 * `driftless install` / `uninstall`: the program, the systemd unit, the configuration, the
 * credentials and the state folder, converged with the agent's own engine (so they are
 * idempotent and print what they change).
 */
import { createHash } from "node:crypto";
import * as path from "node:path";
import { DEFAULT_CONFIG, loadAgentConfig } from "../config/load.js";
import { type ConfigSetting, mergeConfig, readConfigValue } from "../config/merge.js";
import { converge } from "../engine/run.js";
import { DriftlessError, ErrorList } from "../errors.js";
import { HostFs } from "../host/fs.js";
import { isSingleBinary } from "../host/native.js";
import { detectPackageManager } from "../resources/package/apt.js";
import { createSystemdManager } from "../resources/service/systemd.js";
import type { Desired, DesiredFile, DesiredService } from "../resources/types.js";
import { parse, parseLabels } from "./args.js";
import type { Io } from "./io.js";
import { applySummary, formatResult } from "./render.js";

/** Where a single binary is installed, and what the unit runs. */
export const PROGRAM = "/usr/local/bin/driftless";
/** Where the operator's credential files are copied (mode 0600; the CA 0644). */
export const TOKEN_FILE = "/etc/driftless/git-token";
export const BROKER_PASSWORD_FILE = "/etc/driftless/mqtt-password";
export const BROKER_CA_FILE = "/etc/driftless/ca.pem";
const UNIT = "/etc/systemd/system/driftless.service";
const STATE_DIR = "/var/lib/driftless";

export const INSTALL_HELP = `Usage: driftless install --source URL [--ref REF] [--host NAME] [--label K=V]...
                        [--token-file F] [--broker URL --broker-password-file F [--broker-ca F]]
                        [--root DIR] [--no-start] [--exec CMD]

Installs the agent as the systemd service driftless.service, and prints what it changed:
  ${PROGRAM}     this program, when it runs as the single binary (driftless-linux-*):
                               copied when missing or different (running a newer download
                               upgrades the installed one, an older one downgrades it)
  ${DEFAULT_CONFIG}    the configuration, from the flags (0600)
  /etc/driftless/git-token, mqtt-password, ca.pem
                               copies of --token-file, --broker-password-file (0600) and
                               --broker-ca (0644): the originals may be deleted afterwards
  ${STATE_DIR}           the state folder (0700)
  ${UNIT}
                               the unit, hardened (the comments in it say how)
then enables and starts the service. Run from a checkout (node bin/driftless.js), the unit runs
this Node and this script, and nothing is copied.

Run again with the same flags, it changes nothing (exit 0). With other flags it updates the
configuration and restarts the service: the keys given replace those in the file; keys not
given, and any edits made to the file, stay. --label gives the host's labels, all of them (they
replace the configured set). Exit codes: 0 nothing changed, 2 changed, 1 bad flags or
configuration (nothing changed), 4 a step failed.

Options:
  --source URL                the profile repository: an https:// or http:// Git URL, or an
                              absolute directory (required when there is no configuration yet)
  --ref REF                   branch, tag or commit (default main)
  --host NAME                 host id, and its MQTT user name (default: the hostname)
  --label K=V                 a label (repeatable)
  --token-file F              a file holding the Git access token
  --broker URL                report to the control plane's broker (mqtt:// or mqtts://)
  --broker-password-file F    a file holding this host's MQTT password (driftlessctl hosts add
                              prints it); required with --broker unless configured already
  --broker-ca F               CA certificate(s) (PEM) for an mqtts:// broker
  --root DIR                  install into the tree mounted at DIR (an image): enable, do not start
  --no-start                  enable the service but do not start it now
  --exec CMD                  the command in ExecStart (default: ${PROGRAM} for
                              the single binary, else this Node and script); nothing is copied
  -h, --help                  show this help
`;

export const UNINSTALL_HELP = `Usage: driftless uninstall [--purge] [--root DIR]

Stops and disables driftless.service and removes its unit. The configuration and the state
(/etc/driftless, /var/lib/driftless) stay unless --purge is given; ${PROGRAM} stays.
`;

/**
 * The unit. The hardening keeps what the agent needs to manage the host: it runs as root with
 * every capability, writes anywhere, installs packages (whose maintainer scripts run under the
 * same restrictions) and asks systemd over D-Bus to restart services. What it takes away is what
 * no profile, package or service change needs; the comments are for the operator who reads it.
 */
export function unitFile(execStart: string): string {
  return `# Installed by driftless install (docs/install.md).
[Unit]
Description=Driftless agent: keeps this host at the state declared in Git
After=network-online.target
Wants=network-online.target

[Service]
Type=simple
ExecStart=${execStart} agent --config ${DEFAULT_CONFIG}
# The shell's kill: minimal images have no /bin/kill.
ExecReload=/bin/sh -c 'kill -HUP $$MAINPID'
# Always: also after a death by SIGHUP (a reload in the instant before the agent handles it),
# which on-failure counts as clean. A stop with systemctl is never restarted.
Restart=always
RestartSec=15s
# The agent finishes the resource under way and records the run within 10 s.
TimeoutStopSec=15s
KillMode=mixed

# Hardening. The agent and what it runs (apt, dpkg and the packages' maintainer scripts) keep
# root and a writable /, /usr, /etc, /home and /tmp: profiles may name any path and install any
# package. Left out on purpose: ProtectSystem, ProtectHome, PrivateTmp (profiles write there);
# ProtectKernelModules (hides /usr/lib/modules: a kernel package could not install);
# ProtectKernelTunables (makes /proc/sys read-only: sysctl in maintainer scripts fails);
# ProtectClock (adds a device allow-list: grub and initramfs updates need the disks);
# PrivateDevices, DevicePolicy (the same); ProtectHostname (the agent would not see a renamed
# host); RestrictNamespaces, RestrictAddressFamilies (container runtimes and network tools
# probe them when installed); RestrictSUIDSGID (packages install setuid programs: passwd, sudo);
# NoNewPrivileges (the same); MemoryDenyWriteExecute (Node's JIT needs it).
#
# No access to the kernel log (/proc/kmsg, /dev/kmsg, syslog(2)): nothing the agent does reads it.
ProtectKernelLogs=yes
# /sys/fs/cgroup read-only: the agent starts and restarts services through systemd, which owns
# the cgroup tree; nothing it runs should write there.
ProtectControlGroups=yes
# No realtime scheduling: a runaway child cannot starve the host.
RestrictRealtime=yes
# No personality(2) changes (emulating other kernels' behaviour): not needed, and an old escape route.
LockPersonality=yes
# System calls of this machine's own architecture only (no 32-bit entry points on a 64-bit host).
SystemCallArchitectures=native

# Polite on small hosts (a Raspberry Pi running its real workload): the agent and what it runs
# yield CPU and disk to everything else, and are slowed down (never killed) above a quarter of
# the memory.
Nice=10
CPUWeight=20
IOWeight=20
IOSchedulingClass=best-effort
IOSchedulingPriority=7
MemoryHigh=25%

[Install]
WantedBy=multi-user.target
`;
}

/** What this process is: the single binary (its file), or Node running a script. */
export interface ThisProgram {
  /** The file to copy to ${PROGRAM}; absent for Node and a script. */
  binary?: string;
  /** ExecStart without the arguments. */
  execStart: string;
}

/** The Node options of bin/driftless.js's first line, for the unit (docs/benchmarks.md, "Memory notes"). */
export const AGENT_NODE_OPTIONS =
  "--max-semi-space-size=1 --optimize-for-size --no-opt --no-maglev --no-sparkplug --max-lazy";

/** How systemd starts this very program. */
export function thisProgram(machine: HostFs): ThisProgram {
  const binary = machine.realpath(process.execPath) ?? process.execPath;
  if (isSingleBinary()) return { binary, execStart: PROGRAM };
  // argv[1] as typed (a relative path from the shell), made absolute.
  const typed = process.argv[1] ? path.resolve(process.argv[1]) : undefined;
  const script = (typed && machine.realpath(typed)) ?? typed;
  return { execStart: `${process.execPath} ${AGENT_NODE_OPTIONS} ${script}` };
}

function file(p: string, extra: Partial<DesiredFile>): DesiredFile {
  const out: DesiredFile = {
    kind: "file",
    id: `file:${p}`,
    path: p,
    state: "file",
    after: [],
    notify: [],
    declaredAt: { file: "driftless install", document: 0, path: [] },
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
    declaredAt: { file: "driftless install", document: 0, path: [] },
    profile: "driftless",
    ...extra,
  };
}

const usage = (message: string) => new DriftlessError(message, { code: "EARGS", phase: "args" });

/** The flags of `install` that set configuration keys. */
export interface InstallFlags {
  source?: string | undefined;
  ref?: string | undefined;
  host?: string | undefined;
  label?: string[] | undefined;
  "token-file"?: string | undefined;
  broker?: string | undefined;
  "broker-password-file"?: string | undefined;
  "broker-ca"?: string | undefined;
}

/** A file the operator named, copied into /etc/driftless. */
export interface CredentialCopy {
  flag: string;
  from: string;
  to: string;
  mode: number;
  sensitive: boolean;
}

/**
 * The flags as configuration keys, checked one by one (every message names its flag), and the
 * files to copy. `current` is the configuration's current value, or null.
 */
export function installSettings(
  flags: InstallFlags,
  current: Record<string, unknown> | null,
): { settings: ConfigSetting[]; copies: CredentialCopy[] } {
  const settings: ConfigSetting[] = [];
  const copies: CredentialCopy[] = [];
  const broker = current?.broker as { passwordFile?: unknown } | null | undefined;
  if (flags.source !== undefined) settings.push({ key: ["source", "url"], value: checkSource(flags.source) });
  if (flags.ref !== undefined) {
    if (!flags.ref.trim()) throw usage("--ref: expected a branch, tag or commit");
    settings.push({ key: ["source", "ref"], value: flags.ref });
  }
  if (flags.host !== undefined) {
    if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(flags.host)) {
      throw usage(`--host ${JSON.stringify(flags.host)}: expected a host id (letters, digits, '.', '_' and '-')`);
    }
    settings.push({ key: ["host"], value: flags.host });
  }
  if (flags.label !== undefined) settings.push({ key: ["labels"], value: parseLabels(flags.label) });
  if (flags["token-file"] !== undefined) {
    copies.push({ flag: "--token-file", from: flags["token-file"], to: TOKEN_FILE, mode: 0o600, sensitive: true });
    settings.push(
      { key: ["source", "tokenFile"], value: TOKEN_FILE },
      // A token replaces a user name and password.
      { key: ["source", "usernameFile"], value: undefined },
      { key: ["source", "passwordFile"], value: undefined },
    );
  }
  if (flags.broker !== undefined) {
    settings.push({ key: ["broker", "url"], value: checkBroker(flags.broker) });
    if (flags["broker-password-file"] === undefined && !broker?.passwordFile) {
      throw usage("--broker needs --broker-password-file F (the password driftlessctl hosts add printed, in a file)");
    }
  } else if (!broker && (flags["broker-password-file"] !== undefined || flags["broker-ca"] !== undefined)) {
    throw usage("--broker-password-file and --broker-ca need --broker URL");
  }
  if (flags["broker-password-file"] !== undefined) {
    copies.push({
      flag: "--broker-password-file",
      from: flags["broker-password-file"],
      to: BROKER_PASSWORD_FILE,
      mode: 0o600,
      sensitive: true,
    });
    settings.push({ key: ["broker", "passwordFile"], value: BROKER_PASSWORD_FILE });
  }
  if (flags["broker-ca"] !== undefined) {
    copies.push({ flag: "--broker-ca", from: flags["broker-ca"], to: BROKER_CA_FILE, mode: 0o644, sensitive: false });
    settings.push({ key: ["broker", "ca"], value: BROKER_CA_FILE });
  }
  return { settings, copies };
}

/** An https:// or http:// Git URL, or an absolute directory. */
function checkSource(value: string): string {
  if (/^[A-Za-z][A-Za-z0-9+.-]*:/.test(value)) {
    const url = URL.canParse(value) ? new URL(value) : null;
    if (!url || !/^https?:$/.test(url.protocol) || !url.hostname) {
      throw usage(`--source ${value}: expected an https:// or http:// Git URL, or an absolute directory`);
    }
    if (url.username || url.password) {
      throw usage("--source: the URL holds credentials; put the token in a file and pass --token-file F");
    }
    return value;
  }
  if (!path.isAbsolute(value)) {
    throw usage(`--source ${value}: expected an https:// or http:// Git URL, or an absolute directory`);
  }
  return value;
}

/** An mqtt:// or mqtts:// URL with a host and no credentials. */
function checkBroker(value: string): string {
  const url = URL.canParse(value) ? new URL(value) : null;
  if (!url || !/^mqtts?:$/.test(url.protocol) || !url.hostname) {
    throw usage(`--broker ${value}: expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT]`);
  }
  if (url.username || url.password) {
    throw usage(
      "--broker: the URL holds credentials; the user name is the host id, the password goes in --broker-password-file",
    );
  }
  return value;
}

/** The keys a new configuration starts with, in the order it lists them (`undefined`: only the place of a flag's key). */
const NEW_CONFIG: ConfigSetting[] = [
  { key: ["host"], value: undefined },
  { key: ["labels"], value: {} },
  { key: ["mode"], value: "enforce" },
  { key: ["stateDir"], value: STATE_DIR },
  { key: ["source", "url"], value: undefined },
  { key: ["source", "ref"], value: "main" },
  { key: ["source", "tokenFile"], value: undefined },
  { key: ["source", "interval"], value: "5m" },
  { key: ["source", "splay"], value: "1m" },
];

/** sha256 of a file on this machine, read in chunks; a clear error naming the flag when it cannot be read. */
function hashOf(machine: HostFs, file: string, flag: string, nonEmpty: boolean): string {
  const real = machine.realpath(path.resolve(file));
  const stat = real ? machine.lstat(real) : null;
  if (!stat) throw usage(`${flag} ${file}: no such file`);
  if (stat.type !== "file") throw usage(`${flag} ${file}: not a regular file`);
  if (nonEmpty && stat.size === 0) throw usage(`${flag} ${file}: the file is empty`);
  const hash = createHash("sha256");
  try {
    machine.readChunks(real as string, (chunk) => hash.update(chunk));
  } catch (error) {
    throw usage(
      `${flag} ${file}: cannot read it (${(error as NodeJS.ErrnoException).code ?? (error as Error).message})`,
    );
  }
  return hash.digest("hex");
}

export async function runInstall(args: string[], io: Io): Promise<number> {
  const { values } = parse(args, {
    source: { type: "string" },
    ref: { type: "string" },
    host: { type: "string" },
    label: { type: "string", multiple: true },
    "token-file": { type: "string" },
    broker: { type: "string" },
    "broker-password-file": { type: "string" },
    "broker-ca": { type: "string" },
    root: { type: "string" },
    "no-start": { type: "boolean" },
    exec: { type: "string" },
  });
  if (values.help) {
    io.out(INSTALL_HELP);
    return 0;
  }
  const machine = new HostFs("/");
  const hostFs = new HostFs(path.resolve(values.root ?? "/"));
  const existing = hostFs.readTextIfExists(DEFAULT_CONFIG);
  if (existing === null && !values.source) {
    io.err(`driftless install: there is no ${DEFAULT_CONFIG} yet; pass --source URL (see driftless install --help)`);
    return 1;
  }
  const configFile = path.join(hostFs.root, DEFAULT_CONFIG);
  const current = existing === null ? null : readConfigValue(existing, configFile);
  const { settings, copies } = installSettings(values, current);
  const merged = mergeConfig(existing, settings, NEW_CONFIG, configFile);
  // The configuration as the agent will read it: a wrong one is refused before anything changes.
  const { errors } = await loadAgentConfig(hostFs, DEFAULT_CONFIG, {}, merged.text, { treeRoot: hostFs.root });
  if (errors.length > 0) throw new ErrorList(errors);

  const restart = ["service:driftless"];
  const resources: Desired[] = [file("/etc/driftless", { state: "directory", mode: 0o755 })];
  for (const copy of copies) {
    resources.push(
      file(copy.to, {
        contentFrom: path.resolve(copy.from),
        contentHash: hashOf(machine, copy.from, copy.flag, copy.sensitive),
        mode: copy.mode,
        sensitive: copy.sensitive,
        notify: restart,
      }),
    );
  }
  resources.push(
    file(DEFAULT_CONFIG, { content: Buffer.from(merged.text), mode: 0o600, notify: restart }),
    file(STATE_DIR, { state: "directory", mode: 0o700 }),
  );
  const program = values.exec ? { execStart: values.exec } : thisProgram(machine);
  if (program.binary) {
    resources.push(
      file(PROGRAM, {
        contentFrom: program.binary,
        contentHash: hashOf(machine, program.binary, "the running program", true),
        mode: 0o755,
        notify: restart,
      }),
    );
  }
  resources.push(
    file(UNIT, { content: Buffer.from(unitFile(program.execStart)), mode: 0o644, notify: restart }),
    service({ enabled: true, ...(values["no-start"] ? {} : { state: "running" }) }),
  );
  const code = await convergeBuiltin(io, hostFs, resources);
  if (code === 0) io.out("Nothing changed: driftless is installed as asked.");
  else if (code === 2) {
    if (merged.changed.length > 0 && existing !== null) {
      io.out(`Configuration ${DEFAULT_CONFIG} updated: ${merged.changed.join(", ")}.`);
    }
    const started = values.root || values["no-start"] ? "enabled (not started)" : "enabled and running";
    io.out(`driftless.service is ${started}: ${program.execStart} agent --config ${DEFAULT_CONFIG}.`);
    if (!values.root) io.out("Follow it with: journalctl -u driftless -f; its runs: driftless status");
  }
  return code;
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
