/** Command-line parsing shared by the commands: strict, with errors that name the flag. */
import { type ParseArgsConfig, parseArgs } from "node:util";
import { DriftlessError } from "../errors.js";

export type Options = NonNullable<ParseArgsConfig["options"]>;

export function parse<T extends Options>(args: string[], options: T, allowPositionals = false) {
  try {
    return parseArgs({
      args,
      options: { ...options, help: { type: "boolean", short: "h" } },
      allowPositionals,
      strict: true,
    });
  } catch (error) {
    // Node's messages, cut to the point and lower-cased as ours are: "unknown option '--foo'".
    const message = (error as Error).message.replace(/\. To specify a positional.*$/s, "");
    throw new DriftlessError(message.charAt(0).toLowerCase() + message.slice(1), { code: "EARGS", phase: "args" });
  }
}

/** `--label role=gateway` -> { role: "gateway" } */
export function parseLabels(values: string[] | undefined): Record<string, string> {
  const labels: Record<string, string> = {};
  for (const value of values ?? []) {
    const eq = value.indexOf("=");
    if (eq <= 0) {
      throw new DriftlessError(`--label ${value}: expected KEY=VALUE`, { code: "EARGS", phase: "args" });
    }
    labels[value.slice(0, eq)] = value.slice(eq + 1);
  }
  return labels;
}
