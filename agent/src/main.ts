/** The `driftless` command: wires the real ports and dispatches to a subcommand. */
/*
 * Each command is imported when it runs: the bundle splits them into chunks, so the long-lived
 * `driftless agent` supervisor never loads the validation, template or Git code its runs use.
 */
import { defaultIo } from "./cli/default-io.js";
import type { Io } from "./cli/io.js";
import { DriftlessError, ErrorList } from "./errors.js";
import { VERSION, versionLine } from "./version.js";

const HELP = `Driftless agent ${VERSION}: keeps this host at the state declared in a Git repository.

Usage: driftless <command> [options]

Commands:
  plan      show what would change (writes nothing)
  apply     converge this host and record the run
  agent     the daemon: follow a Git branch and converge on a schedule (--once: one cycle)
  status    the last runs, from the state database
  install   install the agent as driftless.service (uninstall: remove it)
  facts     what templates and fleet.yaml match rules see about this host
  schema    print the JSON Schema of profile repository documents

Options:
  -h, --help     show this help
  -V, --version  print the version

Run 'driftless <command> --help' for a command's options.
`;

const SCHEMA_HELP = `Usage: driftless schema [--agent]

Prints the JSON Schema of profile repository documents (Fleet, Profile), for editors; with
--agent, the schema of /etc/driftless/agent.yaml. The project keeps copies in
profiles/schema.json and docs/agent.schema.json.
`;

export async function main(argv: string[], io: Io = defaultIo()): Promise<number> {
  const [command, ...args] = argv;
  try {
    switch (command) {
      case "plan":
      case "apply":
        return await (await import("./cli/converge.js")).runConverge(command, args, io);
      case "agent":
        return await (await import("./cli/agent.js")).runAgent(args, io);
      case "install":
        return await (await import("./cli/install.js")).runInstall(args, io);
      case "uninstall":
        return await (await import("./cli/install.js")).runUninstall(args, io);
      case "status":
        return await (await import("./cli/status.js")).runStatus(args, io);
      case "facts":
        return await (await import("./cli/facts.js")).runFacts(args, io);
      case "schema":
        if (args.includes("--help") || args.includes("-h")) {
          io.out(SCHEMA_HELP);
          return 0;
        }
        if (args.includes("--agent")) {
          io.out(JSON.stringify((await import("./config/schema.js")).agentConfigJsonSchema(), null, 2));
          return 0;
        }
        if (args.length > 0) {
          io.err(`driftless schema: unknown option '${args[0]}'\n\n${SCHEMA_HELP}`);
          return 1;
        }
        io.out(JSON.stringify((await import("./profile/schema.js")).documentJsonSchema(), null, 2));
        return 0;
      case "--version":
      case "-V":
      case "version":
        io.out(versionLine());
        return 0;
      case undefined:
      case "help":
      case "--help":
      case "-h":
        io.out(HELP);
        return command === undefined ? 1 : 0;
      default:
        if (command.startsWith("-")) {
          io.err(`driftless: unknown option '${command}'\n\n${HELP}`);
          return 1;
        }
        io.err(`driftless: unknown command "${command}"\n\n${HELP}`);
        return 1;
    }
  } catch (error) {
    if (error instanceof DriftlessError) {
      io.err(`driftless ${command}: ${error.toString()}`);
      return 1;
    }
    if (error instanceof ErrorList) {
      for (const e of error.errors) io.err(`driftless ${command}: ${e.toString()}`);
      return 1;
    }
    // Not expected: say so plainly; the stack only when asked for.
    io.err(`driftless ${command}: internal error: ${(error as Error).message ?? String(error)}`);
    if (process.env.DRIFTLESS_DEBUG) io.err(String((error as Error).stack));
    return 1;
  }
}
