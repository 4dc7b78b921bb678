// Builds dist/driftless.mjs once before the integration tests, so tests that run the CLI run
// what users run. DRIFTLESS_SKIP_BUILD=1 reuses the current build.
import { execFileSync } from "node:child_process";

export default function setup(): void {
  if (process.env.DRIFTLESS_SKIP_BUILD === "1") return;
  execFileSync(process.execPath, ["scripts/build.mjs"], { stdio: "inherit" });
}
