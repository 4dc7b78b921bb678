/** Which build this is: what `driftless --version` prints (also the single binary's dispatcher). */

export const VERSION = "0.1.0";

/** Set by the bundles (scripts/build.mjs, scripts/build-binary.mjs) to `git rev-parse HEAD`. */
declare const DRIFTLESS_COMMIT: string | undefined;
/** The Git commit this program was built from; "unknown" outside a Git checkout or unbundled. */
export const COMMIT = typeof DRIFTLESS_COMMIT === "string" ? DRIFTLESS_COMMIT : "unknown";

/** What `driftless --version` prints: version, commit, Node version and architecture. */
export function versionLine(): string {
  return `driftless ${VERSION} (commit ${COMMIT}, node ${process.version}, ${process.platform}-${process.arch})`;
}
