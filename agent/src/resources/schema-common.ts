import * as z from "zod";

export const resourceId = z
  .string()
  .regex(/^(package|file|service):.+$/, "must be a resource id: package:NAME, file:PATH or service:NAME");

export const resourceIdList = z.array(resourceId).optional();
