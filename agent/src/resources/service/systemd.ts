/**
 * The systemd service manager.
 *
 * Online (the agent manages the machine it runs on): one `systemctl show` call reads every unit
 * of the run; actions are `systemctl ACTION UNIT`.
 *
 * Offline (`--root DIR`, an image or a mounted tree): nothing runs there, so only unit files can
 * change. One `systemctl --root=DIR list-unit-files` call reads their states (activeState stays
 * undefined), `enable`/`disable` work through `systemctl --root=DIR`, other actions are refused,
 * and daemon-reload does nothing.
 */
import { DriftlessError } from "../../errors.js";
import { type CommandResult, describeFailure } from "../../host/runner.js";
import type { ActualService } from "../types.js";
import type { ServiceAction, ServiceManager, ServiceManagerContext } from "./manager.js";

export const SHOW_PROPERTIES = ["Id", "LoadState", "ActiveState", "UnitFileState", "MainPID"] as const;

const UNIT_SUFFIXES = new Set([
  "service",
  "socket",
  "device",
  "mount",
  "automount",
  "swap",
  "target",
  "path",
  "timer",
  "slice",
  "scope",
]);

const SYSTEMCTL_ENV = { LC_ALL: "C", SYSTEMD_PAGER: "", SYSTEMD_COLORS: "0", SYSTEMD_LOG_COLOR: "0" };

// ---------------------------------------------------------------------------------------------
// Pure parsing

/** systemctl's words for a unit that does not exist (any more). */
export function isGone(message: string): boolean {
  return /not loaded|does not exist|not found|No such file/i.test(message);
}

/** The unit a profile name stands for: names without a unit suffix are `.service` units. */
export function unitName(name: string): string {
  const dot = name.lastIndexOf(".");
  if (dot > 0 && UNIT_SUFFIXES.has(name.slice(dot + 1))) return name;
  return `${name}.service`;
}

/** Parses `systemctl show` output: one `Key=value` block per unit, blocks separated by blank lines. */
export function parseSystemctlShow(stdout: string): Record<string, string>[] {
  const blocks: Record<string, string>[] = [];
  let current: Record<string, string> | undefined;
  for (const line of stdout.split("\n")) {
    if (line.trim() === "") {
      current = undefined;
      continue;
    }
    const eq = line.indexOf("=");
    if (eq <= 0) continue;
    if (!current) {
      current = {};
      blocks.push(current);
    }
    current[line.slice(0, eq)] = line.slice(eq + 1);
  }
  return blocks;
}

/** One `systemctl show` block as the planner sees it. */
export function serviceFromShow(block: Record<string, string>): ActualService {
  const service: ActualService = { loaded: (block.LoadState ?? "not-found") !== "not-found" };
  if (block.UnitFileState) service.unitFileState = block.UnitFileState;
  if (block.ActiveState) service.activeState = block.ActiveState;
  const pid = Number.parseInt(block.MainPID ?? "", 10);
  if (pid > 0) service.mainPid = pid;
  return service;
}

/** Parses `systemctl list-unit-files --no-legend` lines (`UNIT STATE [PRESET]`): unit -> state. */
export function parseListUnitFiles(stdout: string): Map<string, string> {
  const states = new Map<string, string>();
  for (const line of stdout.split("\n")) {
    const [unit, state] = line.trim().split(/\s+/);
    if (unit && state) states.set(unit, state);
  }
  return states;
}

/** `getty@tty1.service` -> `getty@.service`; null for a unit that is not a template instance. */
export function templateOf(unit: string): string | null {
  const match = /^([^@]+)@([^.]+)(\.[a-z]+)$/.exec(unit);
  return match ? `${match[1]}@${match[3]}` : null;
}

// ---------------------------------------------------------------------------------------------
// The manager

export function createSystemdManager(ctx: ServiceManagerContext): ServiceManager {
  const { fs, runner } = ctx;
  const offline = fs.isRooted;
  const rootArg = `--root=${fs.root}`;

  const systemctl = (args: string[], signal?: AbortSignal): Promise<CommandResult> =>
    runner.run("systemctl", offline ? [rootArg, ...args] : args, {
      env: SYSTEMCTL_ENV,
      ...(signal ? { signal } : {}),
    });

  return {
    offline,

    async query(names, signal) {
      const result = new Map<string, ActualService>();
      if (names.length === 0) return result;
      const units = [...new Set(names.map(unitName))];
      const byUnit = offline ? await queryOffline(units, signal) : await queryOnline(units, signal);
      for (const name of names) result.set(name, byUnit.get(unitName(name)) ?? { loaded: false });
      return result;
    },

    async act(action: ServiceAction, name: string, signal?: AbortSignal) {
      const unit = unitName(name);
      if (offline && action !== "enable" && action !== "disable") {
        throw new DriftlessError(
          `cannot ${action} ${unit} under --root ${fs.root}: only enable and disable work on a tree that is not running`,
          { code: "EOFFLINE", phase: "apply", resource: `service:${name}` },
        );
      }
      const run = await systemctl([action, "--", unit], signal);
      if (run.exitCode !== 0) {
        const message = describeFailure(run);
        // A unit removed earlier in the run (its package purged) is as stopped and disabled as it gets.
        if ((action === "stop" || action === "disable") && isGone(message)) return;
        throw new DriftlessError(`systemctl ${action} ${unit} failed: ${message}`, {
          code: "ESERVICE",
          phase: "apply",
          resource: `service:${name}`,
          retryable: isTransient(message),
        });
      }
    },

    async daemonReload(signal?: AbortSignal) {
      if (offline) return;
      const run = await systemctl(["daemon-reload"], signal);
      if (run.exitCode !== 0) {
        const message = describeFailure(run, { stdout: false });
        throw new DriftlessError(`systemctl daemon-reload failed: ${message}`, {
          code: "ESYSTEMD",
          phase: "apply",
          retryable: isTransient(message),
        });
      }
    },
  };

  async function queryOnline(units: string[], signal?: AbortSignal): Promise<Map<string, ActualService>> {
    const run = await systemctl(["show", `--property=${SHOW_PROPERTIES.join(",")}`, "--", ...units], signal);
    if (run.exitCode !== 0) throw readError("systemctl show", run);
    const blocks = parseSystemctlShow(run.stdout);
    if (blocks.length !== units.length) {
      throw new DriftlessError(
        `systemctl show returned ${blocks.length} units for ${units.length} asked (${units.join(", ")})`,
        { code: "ESYSTEMD", phase: "read" },
      );
    }
    // Blocks come in the order asked; Id may differ (an alias shows its target unit).
    return new Map(units.map((unit, i) => [unit, serviceFromShow(blocks[i] ?? {})]));
  }

  async function queryOffline(units: string[], signal?: AbortSignal): Promise<Map<string, ActualService>> {
    const templates = units.map(templateOf).filter((t): t is string => t !== null);
    const patterns = [...new Set([...units, ...templates])];
    const run = await systemctl(["list-unit-files", "--no-legend", "--no-pager", "--", ...patterns], signal);
    // Exit 1 with nothing printed means none of the units exists.
    if (run.exitCode !== 0 && (run.exitCode !== 1 || run.stderr.trim()))
      throw readError("systemctl list-unit-files", run);
    const files = parseListUnitFiles(run.stdout);
    const result = new Map<string, ActualService>();
    const instances: string[] = [];
    for (const unit of units) {
      const state = files.get(unit);
      if (state !== undefined) result.set(unit, { loaded: true, unitFileState: state });
      else if (files.has(templateOf(unit) ?? "")) instances.push(unit);
      else result.set(unit, { loaded: false });
    }
    if (instances.length > 0) {
      // list-unit-files lists templates, not instances: ask for these (they all exist) in one call.
      const enabled = await systemctl(["is-enabled", "--", ...instances], signal);
      const states = enabled.stdout.split("\n").filter((line) => line.trim());
      instances.forEach((unit, i) => {
        const state = states.length === instances.length ? states[i]?.trim() : undefined;
        result.set(unit, state ? { loaded: true, unitFileState: state } : { loaded: true });
      });
    }
    return result;
  }
}

function readError(what: string, run: CommandResult): DriftlessError {
  const message = describeFailure(run);
  return new DriftlessError(`${what} failed: ${message}`, {
    code: "ESYSTEMD",
    phase: "read",
    retryable: isTransient(message),
  });
}

/** systemd being busy or restarting its bus is worth another try; a missing unit is not. */
function isTransient(message: string): boolean {
  return /connection timed out|failed to connect to bus|transport endpoint|activation request failed|resource temporarily unavailable/i.test(
    message,
  );
}
