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

/**
 * `code` (JavaScript esbuild wrote) with every non-ASCII UTF-16 code unit written as `\uXXXX`.
 * esbuild escapes strings and identifiers but leaves regular expression literals (`/[àáâ]/`) as
 * they are, and one such character makes V8 hold the whole script source as a two-byte string:
 * twice the bundle's size in the heap of every process. `\uXXXX` means the same code unit in
 * strings, templates, identifiers and regular expressions with or without the u flag (a pair of
 * escaped surrogates is one code point there); an identity escape (`\à`) loses its backslash.
 * The one difference: a template's raw text (String.raw) sees the escape.
 */
export function asciiOnly(code, name) {
  const ascii = code.replace(/(\\*)([\u0080-\uffff])/g, (_, slashes, char) => {
    const kept = slashes.length % 2 === 1 ? slashes.slice(1) : slashes;
    return `${kept}\\u${char.charCodeAt(0).toString(16).padStart(4, "0")}`;
  });
  assertAscii(ascii, name);
  return ascii;
}

/** Fails the build when `code` holds a character outside ASCII. */
export function assertAscii(code, name) {
  const at = code.search(/[\u0080-\uffff]/);
  if (at >= 0)
    throw new Error(`${name}: non-ASCII character at offset ${at}: ${JSON.stringify(code.slice(at - 20, at + 20))}`);
}
