// What the ESM bundles (scripts/build.mjs) and the single binary (scripts/build-binary.mjs) share.
import { execFileSync } from "node:child_process";

/** The commit of this checkout (`git rev-parse HEAD`), or "unknown" outside Git. */
export function gitCommit() {
  try {
    return execFileSync("git", ["rev-parse", "HEAD"], { encoding: "utf8", stdio: ["ignore", "pipe", "ignore"] }).trim();
  } catch {
    return "unknown";
  }
}

/** esbuild options of every agent bundle: `driftless --version` prints the commit. */
export function agentBundleOptions() {
  return {
    bundle: true,
    platform: "node",
    legalComments: "none",
    logLevel: "warning",
    define: { DRIFTLESS_COMMIT: JSON.stringify(gitCommit()) },
  };
}
