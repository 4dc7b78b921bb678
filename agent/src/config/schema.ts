/**
 * The agent configuration (`/etc/driftless/agent.yaml`, kind AgentConfig), written once: the
 * daemon validates with it, and its JSON Schema is generated from it.
 */
import * as z from "zod";
import { parseDuration } from "./duration.js";
import { DEFAULT_STATE_DIR } from "./env.js";

const duration = (fallback: string) =>
  z
    .union([z.string(), z.number()])
    .default(fallback)
    .refine((v) => parseDuration(v) !== undefined, { message: "must be a duration such as 30s, 5m or 1h" })
    .transform((v) => parseDuration(v) as number);

const filePath = z.string().min(1, "must be a file path");

export const agentConfigSchema = z
  .strictObject({
    apiVersion: z.literal("driftless/v1", { error: "must be driftless/v1" }),
    kind: z.literal("AgentConfig", { error: "must be AgentConfig" }),
    host: z
      .string()
      .regex(/^[A-Za-z0-9][A-Za-z0-9._-]*$/, "must be a host id (letters, digits, . _ -)")
      .optional()
      .describe("Host id; default: the hostname."),
    labels: z.record(z.string(), z.string()).default({}).describe("Labels for fleet.yaml matching and templates."),
    mode: z.enum(["enforce", "report"]).default("enforce").describe("enforce converges; report only reports drift."),
    stateDir: z.string().default(DEFAULT_STATE_DIR).describe("State database and cached repository."),
    state: z
      .strictObject({
        keepRuns: z
          .number()
          .int()
          .min(1)
          .default(100)
          .describe("Runs kept in the state database; older ones are deleted as new ones are recorded."),
      })
      .optional()
      .describe("The state database; absent: the defaults."),
    source: z.strictObject({
      url: z.string().min(1).describe("https:// or http:// Git URL, or a directory."),
      ref: z.string().min(1).default("main").describe("Branch, tag or commit."),
      tokenFile: filePath.optional().describe("File holding an access token (sent as the HTTP password)."),
      username: z.string().optional().describe("User name sent with tokenFile; default: git."),
      usernameFile: filePath.optional(),
      passwordFile: filePath.optional(),
      interval: duration("5m").describe("How often to fetch and converge."),
      splay: duration("1m").describe("Random delay added to each interval, so a fleet spreads out."),
      fetchTimeout: duration("2m").describe(
        "Longest a fetch may take, all requests together; then the run converges from the cached commit.",
      ),
    }),
    trust: z
      .strictObject({
        allowedSigners: filePath.optional().describe("SSH allowed signers (git's format)."),
        openpgpKeys: filePath.optional().describe("Armored OpenPGP public keys."),
        allowRollback: z
          .boolean()
          .default(false)
          .describe("Accept a commit that is not a descendant of the current one."),
      })
      .optional()
      .describe("Absent: signatures are not checked."),
    broker: z
      .strictObject({
        url: z.string().regex(/^mqtts?:\/\//, "must be an mqtt:// or mqtts:// URL"),
        username: z.string().optional().describe("MQTT user name; default: the host id."),
        passwordFile: filePath.optional().describe("File holding the MQTT password, read at each connect."),
        ca: filePath.optional().describe("CA certificate(s) (PEM) the broker's TLS certificate must chain to."),
        outboxLimit: z
          .number()
          .int()
          .min(1)
          .default(500)
          .describe(
            "Runs kept whole in the outbox while the control plane does not acknowledge them; older ones are folded into one summary.",
          ),
      })
      .optional()
      .describe("Absent: no reporting."),
  })
  .superRefine((config, ctx) => {
    const s = config.source;
    if (s.tokenFile && (s.usernameFile || s.passwordFile)) {
      ctx.addIssue({
        code: "custom",
        path: ["source", "tokenFile"],
        message: "use tokenFile or usernameFile + passwordFile, not both",
      });
    }
    if (Boolean(s.usernameFile) !== Boolean(s.passwordFile)) {
      ctx.addIssue({
        code: "custom",
        path: ["source", s.usernameFile ? "passwordFile" : "usernameFile"],
        message: "usernameFile and passwordFile go together",
      });
    }
    if (config.trust && !config.trust.allowedSigners && !config.trust.openpgpKeys) {
      ctx.addIssue({
        code: "custom",
        path: ["trust"],
        message: "name allowedSigners or openpgpKeys (or remove trust)",
      });
    }
  });

export type AgentConfig = z.infer<typeof agentConfigSchema>;

/** The JSON Schema of agent.yaml, for editors (`driftless schema --agent`). */
export function agentConfigJsonSchema(): Record<string, unknown> {
  const schema = z.toJSONSchema(agentConfigSchema, { io: "input", unrepresentable: "any" }) as Record<string, unknown>;
  return { $schema: schema.$schema, title: "Driftless agent configuration (driftless/v1 AgentConfig)", ...schema };
}
