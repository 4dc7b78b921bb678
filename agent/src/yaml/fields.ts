/**
 * Field paths as zod reports them (`["files", 2, "mode"]`): their text (`files[2].mode`) and zod
 * issues turned into errors located through a Locator. Nothing here parses YAML, so loading a
 * valid file never loads the `yaml` library (see positions.ts).
 */
import type { z } from "zod";
import { DriftlessError, type Location } from "../errors.js";

export type Locator = (fieldPath: readonly PropertyKey[], options?: { key?: boolean }) => Location;

/** zod issues as located errors; an unknown key is located at the key itself. */
export function issuesToErrors(issues: z.core.$ZodIssue[], locate: Locator): DriftlessError[] {
  const errors: DriftlessError[] = [];
  for (const issue of issues) {
    if (issue.code === "unrecognized_keys") {
      for (const key of issue.keys) {
        errors.push(
          new DriftlessError(`unknown field "${key}"`, {
            code: "EUNKNOWN_FIELD",
            phase: "validate",
            location: locate([...issue.path, key], { key: true }),
          }),
        );
      }
    } else {
      errors.push(
        new DriftlessError(issue.message, { code: "ESCHEMA", phase: "validate", location: locate(issue.path) }),
      );
    }
  }
  return errors;
}

export function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** `files[2].mode` */
export function formatField(fieldPath: readonly PropertyKey[]): string {
  let out = "";
  for (const part of fieldPath) {
    if (typeof part === "number") out += `[${part}]`;
    else out += out ? `.${String(part)}` : String(part);
  }
  return out;
}
