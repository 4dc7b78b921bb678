/**
 * A real browser for the dashboard's tests: Debian's chromium driven by playwright-core (never a
 * browser download). When chromium is not installed the tests are skipped, and the reason is
 * printed once with console.warn, so the skip is visible.
 *
 *   const browserCheck = browserSupport();
 *   describe.skipIf(!browserCheck.can)("...", () => { ... launchBrowser() ... });
 */
import { existsSync, mkdirSync } from "node:fs";
import * as path from "node:path";
import { type Browser, type BrowserContextOptions, chromium, type Page } from "playwright-core";
import { CHROMIUM, CHROMIUM_ARGS } from "./chromium-args.js";

export { CHROMIUM };

/** Screenshots land here (git-ignored), one per test. */
export const SCREENSHOT_DIR = path.resolve("test-results", "dashboard");

let warned = false;

export function browserSupport(): { can: boolean; reason: string } {
  const reason = existsSync(CHROMIUM) ? "" : `${CHROMIUM} not found (apt-get install chromium)`;
  if (reason && !warned) {
    warned = true;
    console.warn(`[driftless] skipping the dashboard's browser tests: ${reason}`);
  }
  return { can: !reason, reason };
}

/** Headless chromium with a new, empty profile (playwright makes a temp one per launch). */
export function launchBrowser(): Promise<Browser> {
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: [...CHROMIUM_ARGS] });
}

/** Saves a full-page screenshot as SCREENSHOT_DIR/NAME.png and returns its path. */
export async function screenshot(page: Page, name: string): Promise<string> {
  mkdirSync(SCREENSHOT_DIR, { recursive: true });
  const file = path.join(SCREENSHOT_DIR, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  return file;
}

/**
 * A new browser context (its own cookies) signed in with the API token through the login form;
 * the page shows the host table. The context closes with the browser, or by `page.context().close()`.
 */
export async function signIn(
  browser: Browser,
  serve: { url: string; apiToken: string },
  options: BrowserContextOptions = { viewport: { width: 1200, height: 900 } },
): Promise<Page> {
  const context = await browser.newContext(options);
  const page = await context.newPage();
  await page.goto(serve.url);
  await page.getByLabel("token").fill(serve.apiToken);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByTestId("host-rows").waitFor();
  return page;
}
