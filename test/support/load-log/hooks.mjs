// Module hooks (node:module register) of register.mjs: they run on Node's hooks thread.
import { appendFileSync } from "node:fs";

let logFile;

export function initialize(data) {
  logFile = data.file;
}

export async function load(url, context, nextLoad) {
  if (logFile) appendFileSync(logFile, `${url}\n`);
  return nextLoad(url, context);
}
