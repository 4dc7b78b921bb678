import * as z from "zod";
import { resourceIdList } from "../schema-common.js";

export const serviceEntrySchema = z.strictObject({
  name: z
    .string()
    .regex(/^[A-Za-z0-9:_.@-]+$/, "must be a systemd unit name")
    .describe("systemd unit; without a suffix it is NAME.service."),
  enabled: z.boolean().optional().describe("Start at boot."),
  state: z.enum(["running", "stopped"]).optional().describe("running or stopped; absent: not managed."),
  onNotify: z
    .enum(["restart", "reload"])
    .default("restart")
    .describe("What a notify from a changed file does: restart (default) or reload."),
  after: resourceIdList.describe("Resource ids applied before this one."),
});

export type ServiceEntry = z.infer<typeof serviceEntrySchema>;
