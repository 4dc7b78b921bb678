import * as z from "zod";
import { resourceIdList } from "../schema-common.js";

const NAME_MAX = 255;
const PATH_MAX = 4095;

/** An absolute path on the managed host that names one entry: never `/` itself, never `..`. */
const hostPath = z
  .string()
  .regex(/^\//, "must be an absolute path")
  .superRefine((value, ctx) => {
    const refuse = (message: string) => ctx.addIssue({ code: "custom", message });
    const names = value.split("/").filter((name) => name !== "" && name !== ".");
    if (value.startsWith("/") && names.length === 0) refuse("must name an entry below /, not / itself");
    if (value.includes("\0")) refuse("must not contain a NUL character");
    if (/[\n\r]/.test(value)) refuse("must not contain a line break");
    if (names.includes("..")) refuse('must not contain ".." segments');
    if (names.some((name) => Buffer.byteLength(name) > NAME_MAX))
      refuse(`a name in it is longer than ${NAME_MAX} bytes`);
    if (Buffer.byteLength(value) > PATH_MAX) refuse(`longer than ${PATH_MAX} bytes`);
  });

/** Inline `content:` is for short texts; anything larger goes in a file, as `source:` (streamed). */
export const MAX_INLINE_CONTENT_BYTES = 1024 * 1024;

export const fileEntrySchema = z
  .strictObject({
    path: hostPath.describe("Absolute path on the managed host."),
    state: z
      .enum(["file", "directory", "link", "absent"])
      .default("file")
      .describe("file (default), directory, link or absent."),
    content: z
      .string()
      .refine((text) => Buffer.byteLength(text, "utf8") <= MAX_INLINE_CONTENT_BYTES, {
        message: "inline content is limited to 1 MiB; put it in a file in the repository and use source:",
      })
      .optional()
      .describe("Literal content of the file (at most 1 MiB; larger content goes in a file, as source)."),
    source: z.string().optional().describe("File in the repository copied as is, relative to this profile."),
    template: z
      .string()
      .optional()
      .describe("Liquid template in the repository, relative to this profile; context: vars, labels, facts, host."),
    mode: z
      .string({ error: 'must be a quoted octal string such as "0644"' })
      .regex(/^0?[0-7]{3,4}$/, 'must be an octal mode such as "0644"')
      .optional()
      .describe('Permission bits as a quoted octal string, e.g. "0644".'),
    owner: z.string().min(1).optional().describe("User name or numeric uid."),
    group: z.string().min(1).optional().describe("Group name or numeric gid."),
    target: z.string().min(1).optional().describe("Where a link points (state: link)."),
    sensitive: z
      .boolean()
      .optional()
      .describe("Secret content: only its hashes, never the content, in diffs, logs, reports and the state database."),
    notify: resourceIdList.describe("Services restarted (or reloaded) when this file changes, e.g. service:nginx."),
    after: resourceIdList.describe("Resource ids applied before this one."),
  })
  .superRefine((file, ctx) => {
    const sources = (["content", "source", "template"] as const).filter((k) => file[k] !== undefined);
    if (sources.length > 1) {
      ctx.addIssue({
        code: "custom",
        path: [sources[1] ?? "content"],
        message: `only one of content, source, template`,
      });
    }
    if (file.state !== "file") {
      for (const key of sources) {
        ctx.addIssue({ code: "custom", path: [key], message: `not allowed with state: ${file.state}` });
      }
    }
    if (file.sensitive !== undefined && file.state !== "file") {
      ctx.addIssue({ code: "custom", path: ["sensitive"], message: "only allowed with state: file" });
    }
    if (file.state === "link" && file.target === undefined) {
      ctx.addIssue({ code: "custom", path: ["target"], message: "required with state: link" });
    }
    if (file.state !== "link" && file.target !== undefined) {
      ctx.addIssue({ code: "custom", path: ["target"], message: "only allowed with state: link" });
    }
    if (file.state === "absent") {
      for (const key of ["mode", "owner", "group"] as const) {
        if (file[key] !== undefined)
          ctx.addIssue({ code: "custom", path: [key], message: "not allowed with state: absent" });
      }
    }
  });

export type FileEntry = z.infer<typeof fileEntrySchema>;
