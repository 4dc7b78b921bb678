/** The `driftlessctl` command: the control plane (`serve`), host credentials, the protocol's schema. */
import { parse } from "../../agent/src/cli/args.js";
import { DriftlessError } from "../../agent/src/errors.js";
import { createLogger, type Logger } from "../../agent/src/log.js";
import type { FleetVerb } from "./cli/fleet.js";
import { DOWNLOAD_PLACEHOLDER, SOURCE_PLACEHOLDER } from "./cli/install-command.js";
import { FleetError } from "./errors.js";
import type { HttpStarter } from "./serve.js";

export const VERSION = "0.1.0";

export interface CtlIo {
  out(line: string): void;
  err(line: string): void;
  /** Logs of a long-running command (serve). */
  logger(): Logger;
  /** Resolves when the process is asked to stop (SIGINT, SIGTERM). */
  stopSignal(): Promise<string>;
}

const HELP = `driftlessctl ${VERSION}: the Driftless control plane.

Usage: driftlessctl <command> [options]

Commands:
  demo                the whole loop on this machine: a control plane, a Git repository made
                      from profiles/, and agents converging sandbox trees (no root needed)
  serve               run the control plane: MQTT ingest, fleet store, HTTP API, dashboard
  hosts               the fleet's hosts: presence, sync, commit (over the HTTP API)
  host ID             one host: state, labels, last run, drift
  drift [ID]          the drift of one host, or of every drifted or failed host
  runs ID             a host's last runs
  converge ID         ask a host to converge now
  refresh             ask every host to fetch its Git source now
  hosts add NAME      create a host's MQTT credentials (prints the password once)
  hosts remove NAME   revoke a host's credentials (a running serve disconnects it)
  schema              print the JSON Schema of the MQTT protocol's payloads
  --version           print the version

Run 'driftlessctl <command> --help' for a command's options.
`;

const SERVE_HELP = `Usage: driftlessctl serve [options]

Runs the control plane: an MQTT broker (or a client of an external one), the ingest of what
hosts report, the fleet store, the HTTP API and the dashboard. Stops on SIGINT or SIGTERM.

Options:
  --data DIR                 data directory: fleet.db, api-token (default ./driftless-data)
  --http HOST:PORT           HTTP API and dashboard (default 127.0.0.1:8080)
  --mqtt HOST:PORT           the embedded MQTT broker (default 0.0.0.0:1883)
  --broker URL               use this external broker instead (mqtt://, mqtts://, ws://, wss://);
                             user:password in the URL are its credentials
  --broker-username USER     the control plane's username on the external broker
  --broker-password-file F   its password, first line of F
  --broker-ca FILE           CA bundle (PEM) for an mqtts:// broker
  --shared                   run as one of several replicas: share the ingest with the others
                             ($share/driftlessctl/...), clean MQTT session; use with a
                             postgres:// --database all replicas share
  --replica-id ID            this replica's name, unique among the replicas (letters, digits,
                             . _ -): its MQTT client id is driftlessctl-ID (default: a random id
                             made once and kept in DATA/broker-client-id)
  --database URL             sqlite:PATH (default DATA/fleet.db), or postgres://USER@HOST/DB
                             (postgresql:// too) for replicas sharing one database
                             (env DRIFTLESS_DATABASE)
  --api-token-file FILE      the API token (default: DATA/api-token, made on first start)
  --webhook-secret-file F    the secret of Git webhooks (POST /hooks/git); none: hooks disabled
  -h, --help                 show this help
`;

const DEMO_HELP = `Usage: driftlessctl demo [--dir DIR] [--hosts N] [--http HOST:PORT] [--mqtt HOST:PORT]
                         [--interval DURATION] [--keep]

Runs the whole loop on this machine, without root: a control plane (as serve: embedded MQTT
broker, SQLite), a Git repository made from the example profiles/ and served over HTTP, a
clone of it to edit and push from, and N agents ('driftless agent --root') converging sandbox
trees (files only) and reporting. Prints the fleet table whenever it changes, how to push a
commit the fleet picks up within seconds, and how to see drift. A push to the served repository
sends the fleet a refresh, as a Git webhook would. Ctrl-C (or SIGTERM) stops everything.

Options:
  --dir DIR          the demo's directory: new or empty, or one a --keep run left (default: a
                     new temp dir, removed at the end)
  --hosts N          how many hosts (default 3, at most 50)
  --http HOST:PORT   the HTTP API and dashboard (default 127.0.0.1:0, a free port)
  --mqtt HOST:PORT   the embedded MQTT broker (default 127.0.0.1:0, a free port)
  --interval D       how often each agent converges on its own (default 30s; 5m, 1h30m...)
  --keep             keep the directory when the demo stops
  -h, --help         show this help
`;

const HOSTS_ADD_HELP = `Usage: driftlessctl hosts add NAME [--data DIR | --database URL] [--label KEY=VALUE]... [--json]
                             [--install-command [--broker-url URL] [--source URL] [--download-url URL]]

Creates the MQTT credentials of host NAME (its agent's \`host\`) in the fleet store (DATA/fleet.db,
or the --database serve uses) and prints the password once: it is stored only as a hash. --json
prints {"host", "username", "password"}. Labels given here are the host's, over the ones its
agent reports. The embedded broker of every serve on that store accepts the host at once; an
external broker checks its own credentials (docs/controlplane.md).

With --install-command it prints instead the line to paste, as root, on the new host (the
password is in it, once): it writes the password to /etc/driftless/mqtt-password (mode 0600),
downloads driftless-linux-x64 or driftless-linux-arm64 (by uname -m, with curl or wget), and
runs driftless install --source ... --host NAME --label ... --broker ... (docs/install.md).
--json adds the line as "installCommand". Placeholders the line still holds (DOWNLOAD-HOST,
GIT-HOST) are named on stderr: replace them, or give the flags.

Options:
  --data DIR            data directory (default ./driftless-data)
  --database URL        the fleet store, as serve's: sqlite:PATH, or postgres://USER@HOST/DB
                        (postgresql:// too); env DRIFTLESS_DATABASE; default DATA/fleet.db
  --label KEY=VALUE     a label (repeatable); also passed to driftless install in the line
  --json                print JSON
  --install-command     print the line to paste on the new host
  --broker-url URL      the broker as the host reaches it (default mqtt://THIS-HOSTNAME:1883,
                        this machine's name and the embedded broker's port)
  --source URL          the profile repository as the host reaches it (default: the placeholder
                        ${SOURCE_PLACEHOLDER})
  --download-url URL    where driftless-linux-x64 and driftless-linux-arm64 are (default: the
                        placeholder ${DOWNLOAD_PLACEHOLDER})
  -h, --help            show this help
`;

const HOSTS_REMOVE_HELP = `Usage: driftlessctl hosts remove NAME [--data DIR | --database URL] [--json]

Revokes host NAME's credentials and forgets its records. Every serve with the embedded broker on
the same store (data directory, or PostgreSQL database shared by replicas) closes the host's
connection within 2 seconds; its reconnects are refused. An external broker checks its own
credentials: remove the host there too.
Exit codes: 0 removed, 3 no such host, 1 bad usage.

Options:
  --data DIR            data directory (default ./driftless-data)
  --database URL        the fleet store, as serve's: sqlite:PATH, or postgres://USER@HOST/DB
                        (postgresql:// too); env DRIFTLESS_DATABASE; default DATA/fleet.db
  --json                print {"host", "removed"}
  -h, --help            show this help
`;

const SCHEMA_HELP = `Usage: driftlessctl schema

Prints the JSON Schema (draft 2020-12) of every MQTT protocol v1 payload, under $defs by topic
kind. The project keeps a copy in docs/protocol.schema.json.
`;

export async function main(argv: string[], io: CtlIo): Promise<number> {
  const [command, ...args] = argv;
  try {
    switch (command) {
      case "serve":
        return await serveCommand(args, io, (await import("./http/start.js")).startHttp);
      case "demo":
        return await demoCommand(args, io);
      case "hosts":
        if (args[0] === "add") return await hostsAdd(args.slice(1), io);
        if (args[0] === "remove") return await hostsRemove(args.slice(1), io);
        return await fleetCommand("hosts", args, io);
      case "host":
      case "drift":
      case "runs":
      case "converge":
      case "refresh":
        return await fleetCommand(command, args, io);
      case "schema": {
        const { values } = parse(args, {});
        if (values.help) {
          io.out(SCHEMA_HELP);
          return 0;
        }
        const { protocolJsonSchema } = await import("../../protocol/schema.js");
        io.out(JSON.stringify(protocolJsonSchema(), null, 2));
        return 0;
      }
      case "--version":
      case "version":
        io.out(VERSION);
        return 0;
      case undefined:
      case "help":
      case "--help":
      case "-h":
        io.out(HELP);
        return command === undefined ? 1 : 0;
      default:
        io.err(`driftlessctl: unknown command "${command}"\n\n${HELP}`);
        return 1;
    }
  } catch (error) {
    if (error instanceof FleetError || error instanceof DriftlessError) {
      io.err(`driftlessctl ${command}: ${error.message}`);
      return error instanceof FleetError && error.code === "ENOTFOUND" ? 3 : 1;
    }
    io.err(`driftlessctl ${command}: internal error: ${(error as Error).message ?? String(error)}`);
    if (process.env.DRIFTLESS_DEBUG) io.err(String((error as Error).stack));
    return 1;
  }
}

async function serveCommand(args: string[], io: CtlIo, createHttp?: HttpStarter): Promise<number> {
  const { values } = parse(args, {
    data: { type: "string" },
    http: { type: "string" },
    mqtt: { type: "string" },
    broker: { type: "string" },
    "broker-username": { type: "string" },
    "broker-password-file": { type: "string" },
    "broker-ca": { type: "string" },
    shared: { type: "boolean" },
    "replica-id": { type: "string" },
    database: { type: "string" },
    "api-token-file": { type: "string" },
    "webhook-secret-file": { type: "string" },
  });
  if (values.help) {
    io.out(SERVE_HELP);
    return 0;
  }
  if (
    !values.broker &&
    (values["broker-username"] ||
      values["broker-password-file"] ||
      values["broker-ca"] ||
      values.shared ||
      values["replica-id"])
  ) {
    throw new FleetError(
      "--broker-username, --broker-password-file, --broker-ca, --shared and --replica-id need --broker",
      { code: "EUSAGE" },
    );
  }
  const replicaId = values["replica-id"];
  if (replicaId !== undefined && !/^[A-Za-z0-9][A-Za-z0-9._-]{0,40}$/.test(replicaId)) {
    throw new FleetError(`--replica-id ${replicaId}: expected 1 to 41 letters, digits, '.', '_' or '-'`, {
      code: "EUSAGE",
    });
  }
  if (values.broker && !/^(mqtts?|wss?):\/\//.test(values.broker)) {
    throw new FleetError(`--broker ${values.broker}: expected mqtt://, mqtts://, ws:// or wss://`, { code: "EUSAGE" });
  }
  const { startServe } = await import("./serve.js");
  const { databaseSetting } = await import("./store/open.js");
  const { database, origin } = databaseSetting(values.database, process.env);
  const log = io.logger();
  const running = await startServe(
    {
      dataDir: values.data ?? "./driftless-data",
      http: hostPort(values.http ?? "127.0.0.1:8080", "--http", "127.0.0.1"),
      mqtt: hostPort(values.mqtt ?? "0.0.0.0:1883", "--mqtt", "0.0.0.0"),
      ...(values.broker
        ? {
            broker: {
              url: values.broker,
              shared: values.shared ?? false,
              ...(replicaId !== undefined ? { replicaId } : {}),
              ...(values["broker-username"] ? { username: values["broker-username"] } : {}),
              ...(values["broker-password-file"] ? { passwordFile: values["broker-password-file"] } : {}),
              ...(values["broker-ca"] ? { caFile: values["broker-ca"] } : {}),
            },
          }
        : {}),
      ...(database ? { database, databaseOrigin: origin } : {}),
      ...(values["api-token-file"] ? { apiTokenFile: values["api-token-file"] } : {}),
      ...(values["webhook-secret-file"] ? { webhookSecretFile: values["webhook-secret-file"] } : {}),
    },
    { log, now: () => new Date(), print: io.out, ...(createHttp ? { createHttp } : {}) },
  );
  const signal = await io.stopSignal();
  log.info("stopping", { signal });
  await running.close();
  return 0;
}

async function demoCommand(args: string[], io: CtlIo): Promise<number> {
  const { values } = parse(args, {
    dir: { type: "string" },
    hosts: { type: "string" },
    http: { type: "string" },
    mqtt: { type: "string" },
    interval: { type: "string" },
    keep: { type: "boolean" },
  });
  if (values.help) {
    io.out(DEMO_HELP);
    return 0;
  }
  const { isSingleBinary } = await import("../../agent/src/host/native.js");
  if (isSingleBinary()) {
    // Its agents are `node bin/driftless.js` processes, its repository the package's profiles/.
    throw new FleetError(
      "the demo runs from the npm package or a checkout (node bin/driftlessctl.js demo), not from the driftlessctl binary",
      { code: "EUSAGE" },
    );
  }
  const hosts = values.hosts === undefined ? 3 : /^\d+$/.test(values.hosts) ? Number(values.hosts) : Number.NaN;
  if (!(hosts >= 1 && hosts <= 50)) {
    throw new FleetError(`--hosts ${values.hosts}: expected a whole number from 1 to 50`, { code: "EUSAGE" });
  }
  const { parseDuration } = await import("../../agent/src/config/duration.js");
  if (values.interval !== undefined && !parseDuration(values.interval)) {
    throw new FleetError(`--interval ${values.interval}: expected a duration such as 30s, 5m or 1h30m`, {
      code: "EUSAGE",
    });
  }
  const { runDemo } = await import("./demo/demo.js");
  const { startHttp } = await import("./http/start.js");
  return runDemo(
    {
      ...(values.dir !== undefined ? { dir: values.dir } : {}),
      hosts,
      http: hostPort(values.http ?? "127.0.0.1:0", "--http", "127.0.0.1"),
      mqtt: hostPort(values.mqtt ?? "127.0.0.1:0", "--mqtt", "127.0.0.1"),
      keep: values.keep ?? false,
      ...(values.interval !== undefined ? { interval: values.interval } : {}),
    },
    {
      out: io.out,
      err: io.err,
      stopSignal: io.stopSignal,
      color: Boolean(process.stdout.isTTY) && !process.env.NO_COLOR,
      createHttp: startHttp,
    },
  );
}

/** The fleet CLI verbs: a client of a running serve's HTTP API. */
async function fleetCommand(verb: FleetVerb, args: string[], io: CtlIo): Promise<number> {
  const { runFleetCommand } = await import("./cli/fleet.js");
  const { systemFleetIo } = await import("./cli/fleet-io.js");
  return runFleetCommand(verb, args, systemFleetIo(io.out, io.err));
}

async function hostsAdd(args: string[], io: CtlIo): Promise<number> {
  const { values, positionals } = parse(
    args,
    {
      data: { type: "string" },
      database: { type: "string" },
      json: { type: "boolean" },
      label: { type: "string", multiple: true },
      "install-command": { type: "boolean" },
      "broker-url": { type: "string" },
      source: { type: "string" },
      "download-url": { type: "string" },
    },
    true,
  );
  if (values.help) {
    io.out(HOSTS_ADD_HELP);
    return 0;
  }
  const host = hostName(positionals, HOSTS_ADD_HELP);
  const { parseLabels } = await import("../../agent/src/cli/args.js");
  const labels = parseLabels(values.label);
  const line = await installLine(values, host, labels);
  const { generatePassword, hashPassword } = await import("./auth/password.js");
  const password = generatePassword();
  const { store } = await openDataStore(values);
  try {
    await store.addCredential(host, await hashPassword(password), labels);
  } finally {
    await store.close();
  }
  const installCommand = line?.(password);
  if (values.json) {
    io.out(JSON.stringify({ host, username: host, password, ...(installCommand ? { installCommand } : {}) }));
  } else if (installCommand) {
    io.out(`Host ${host} added. On the new host, as root, paste this line (it holds the host's MQTT password,
shown this once; stored here only as a hash):

${installCommand}
`);
  } else {
    io.out(`Host ${host} added. Its MQTT credentials, shown this once:
  username: ${host}
  password: ${password}
On the host, put the password in /etc/driftless/mqtt-password (mode 0600), and in agent.yaml:
  broker: { url: mqtt://THIS-MACHINE:1883, username: ${host}, passwordFile: /etc/driftless/mqtt-password }
(or print the line that does it all: driftlessctl hosts add NAME --install-command)`);
  }
  if (installCommand) {
    const { placeholdersIn } = await import("./cli/install-command.js");
    const left = placeholdersIn(installCommand);
    if (left.length > 0) {
      io.err(
        `driftlessctl hosts add: the line holds placeholders: replace ${left.join(", ")} (see --help: --download-url, --source)`,
      );
    }
  }
  return 0;
}

/** The install line of `hosts add --install-command`, checked before any credential is made; null without it. */
async function installLine(
  values: { "install-command"?: boolean; "broker-url"?: string; source?: string; "download-url"?: string },
  host: string,
  labels: Record<string, string>,
): Promise<((password: string) => string) | null> {
  if (!values["install-command"]) {
    const given = (["broker-url", "source", "download-url"] as const).filter((f) => values[f] !== undefined);
    if (given.length > 0) {
      const flags = given.map((f) => `--${f}`).join(", ");
      throw new FleetError(`${flags} ${given.length > 1 ? "need" : "needs"} --install-command`, { code: "EUSAGE" });
    }
    return null;
  }
  const { checkUrl, installCommand } = await import("./cli/install-command.js");
  const { hostname } = await import("node:os");
  const brokerUrl = checkUrl("--broker-url", values["broker-url"] ?? `mqtt://${hostname()}:1883`, ["mqtt:", "mqtts:"]);
  const source = checkUrl("--source", values.source ?? SOURCE_PLACEHOLDER, ["https:", "http:"]);
  let downloadUrl = checkUrl("--download-url", values["download-url"] ?? DOWNLOAD_PLACEHOLDER, ["https:", "http:"]);
  if (!downloadUrl.endsWith("/")) downloadUrl += "/";
  return (password) => installCommand({ host, password, brokerUrl, source, downloadUrl, labels });
}

async function hostsRemove(args: string[], io: CtlIo): Promise<number> {
  const { values, positionals } = parse(
    args,
    { data: { type: "string" }, database: { type: "string" }, json: { type: "boolean" } },
    true,
  );
  if (values.help) {
    io.out(HOSTS_REMOVE_HELP);
    return 0;
  }
  const host = hostName(positionals, HOSTS_REMOVE_HELP);
  const { store, where } = await openDataStore(values);
  let removed: boolean;
  try {
    removed = await store.removeCredential(host);
  } finally {
    await store.close();
  }
  if (!removed) throw new FleetError(`no host ${host} in ${where}`, { code: "ENOTFOUND" });
  if (values.json) io.out(JSON.stringify({ host, removed: true }));
  else io.out(`Host ${host} removed: its credentials are revoked; a running serve disconnects it.`);
  return 0;
}

function hostName(positionals: string[], help: string): string {
  if (positionals.length !== 1) throw new FleetError(`expected one host NAME\n\n${help}`, { code: "EUSAGE" });
  const host = positionals[0] as string;
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/.test(host)) {
    throw new FleetError(`host name ${JSON.stringify(host)}: letters, digits, '.', '_' and '-', at most 63`, {
      code: "EHOSTID",
    });
  }
  return host;
}

/** The store of `hosts add|remove`: the one serve opens with the same --data and --database; `where` names it. */
async function openDataStore(values: { data?: string; database?: string }) {
  const { databaseSetting, describeDatabase, openFleetStore } = await import("./store/open.js");
  const { database, origin } = databaseSetting(values.database, process.env);
  const dataDir = values.data ?? "./driftless-data";
  const store = await openFleetStore(database, dataDir, origin);
  return { store, where: await describeDatabase(database, dataDir) };
}

/** `HOST:PORT`, `[V6]:PORT`, or `:PORT` (on `defaultHost`). */
function hostPort(value: string, flag: string, defaultHost: string): { host: string; port: number } {
  const match = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]*)):(\d{1,5})$/.exec(value);
  const port = Number(match?.[3]);
  if (!match || port > 65535) throw new FleetError(`${flag} ${value}: expected HOST:PORT`, { code: "EUSAGE" });
  return { host: match[1] ?? (match[2] || defaultHost), port };
}

/** The real io: stdout, stderr, JSON logs off a terminal, process signals. */
export function defaultCtlIo(): CtlIo {
  return {
    out: (line) => process.stdout.write(`${line}\n`),
    err: (line) => process.stderr.write(`${line}\n`),
    logger: () =>
      createLogger({
        write: (line) => process.stderr.write(`${line}\n`),
        json: !process.stderr.isTTY,
        level: process.env.DRIFTLESS_DEBUG ? "debug" : "info",
        now: () => new Date(),
      }),
    stopSignal: () =>
      new Promise((resolve) => {
        const stop = (signal: string) => resolve(signal);
        process.once("SIGINT", () => stop("SIGINT"));
        process.once("SIGTERM", () => stop("SIGTERM"));
      }),
  };
}
