/**
 * How the tests and scripts/bench-dashboard start Debian's chromium: headless, as root (no
 * sandbox), no GPU. The background-networking flags matter on a machine without internet access:
 * without them chromium's own connections are refused and slow it down.
 */
export const CHROMIUM = process.env.DRIFTLESS_CHROMIUM ?? "/usr/bin/chromium";

export const CHROMIUM_ARGS: readonly string[] = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];
