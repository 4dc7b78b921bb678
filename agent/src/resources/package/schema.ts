import * as z from "zod";
import { resourceIdList } from "../schema-common.js";

export const packageEntrySchema = z
  .strictObject({
    name: z
      .string()
      .regex(/^[a-z0-9][a-z0-9+.-]*$/, "must be a package name (lower case letters, digits, + - .)")
      .describe("Package name."),
    state: z.enum(["present", "absent", "latest"]).default("present").describe("present (default), absent or latest."),
    version: z
      .string()
      .regex(/^[A-Za-z0-9.+~:-]+$/, "must be a package version")
      .optional()
      .describe("Exact version to install (present only)."),
    after: resourceIdList.describe("Resource ids applied before this one."),
  })
  .superRefine((pkg, ctx) => {
    if (pkg.version !== undefined && pkg.state !== "present") {
      ctx.addIssue({ code: "custom", path: ["version"], message: `only allowed with state: present` });
    }
  });

export type PackageEntry = z.infer<typeof packageEntrySchema>;
