/**
 * The profile repository's document kinds, written once: validation uses them, and
 * `profiles/schema.json` (for editors) is generated from them (`driftless schema`).
 */
import * as z from "zod";
import { fileEntrySchema } from "../resources/file/schema.js";
import { packageEntrySchema } from "../resources/package/schema.js";
import { serviceEntrySchema } from "../resources/service/schema.js";

export const API_VERSION = "driftless/v1";

const apiVersion = z.literal(API_VERSION, { error: `must be ${API_VERSION}` });
const profileName = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]*$/, "must be a profile name (letters, digits, . _ -)");

export const profileSchema = z.strictObject({
  apiVersion,
  kind: z.literal("Profile"),
  name: profileName.describe("Name used by fleet.yaml and include."),
  description: z.string().optional(),
  include: z.array(profileName).optional().describe("Profiles merged before this one, in order."),
  vars: z.record(z.string(), z.unknown()).optional().describe("Template variables; later profiles win."),
  packages: z.array(packageEntrySchema).optional(),
  files: z.array(fileEntrySchema).optional(),
  services: z.array(serviceEntrySchema).optional(),
});

const factValue = z.union([z.string(), z.number(), z.boolean()]);

export const assignmentSchema = z.strictObject({
  match: z
    .strictObject({
      hostname: z.string().min(1).optional().describe("Glob on the host name, e.g. edge-*."),
      labels: z.record(z.string(), z.string()).optional().describe("Labels the host must have."),
      facts: z
        .record(z.string(), factValue)
        .optional()
        .describe("Dotted fact paths and their values, e.g. os.arch: arm64."),
    })
    .default({})
    .describe("All conditions must hold; an empty match matches every host."),
  profiles: z.array(profileName).min(1),
});

export const fleetSchema = z.strictObject({
  apiVersion,
  kind: z.literal("Fleet"),
  assignments: z.array(assignmentSchema).describe("Every matching assignment adds its profiles, in order."),
});

export const documentSchema = z.discriminatedUnion("kind", [profileSchema, fleetSchema], {
  error: "kind must be Profile or Fleet",
});

export type ProfileDoc = z.infer<typeof profileSchema>;
export type FleetDoc = z.infer<typeof fleetSchema>;
export type Document = z.infer<typeof documentSchema>;

/** The JSON Schema of a profile repository document, for editors (yaml-language-server). */
export function documentJsonSchema(): Record<string, unknown> {
  const schema = z.toJSONSchema(documentSchema, { io: "input", target: "draft-2020-12" }) as Record<string, unknown>;
  return {
    $schema: schema.$schema,
    title: "Driftless profile repository document (driftless/v1)",
    ...Object.fromEntries(Object.entries(schema).filter(([k]) => k !== "$schema")),
  };
}
