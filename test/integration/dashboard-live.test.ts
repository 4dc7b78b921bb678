/**
 * The dashboard's live connection in chromium: the header says live; when the HTTP side stops
 * (every connection closed, as a restarted proxy or a network drop does) it says the live updates
 * are lost and it is reconnecting; when the server is back the page reconnects by itself, catches
 * up with what changed meanwhile, and updates live again. A session that ended while the stream
 * was down takes the page back to the sign-in form instead of reconnecting forever.
 *
 * Every wait is for a condition on the page; nothing sleeps.
 */
import type { Browser, Page } from "playwright-core";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { browserSupport, launchBrowser, screenshot, signIn } from "../support/browser.js";
import { type FleetServe, startFleetServe } from "../support/fleet-serve.js";

const browserCheck = browserSupport();
const DEADLINE = { timeout: 30_000, interval: 100 };

describe.skipIf(!browserCheck.can)("the dashboard's live connection in chromium", () => {
  let serve: FleetServe;
  let browser: Browser;
  const pages: Page[] = [];

  beforeAll(async () => {
    [serve, browser] = await Promise.all([startFleetServe(), launchBrowser()]);
  });
  afterEach(async () => {
    for (const page of pages.splice(0)) await page.context().close();
    // A test that failed half-way must not leave the next one without a server.
    await serve.startHttp();
  });
  afterAll(async () => {
    await browser?.close();
    await serve?.close();
  });

  const liveState = (page: Page) => page.getByTestId("live").getAttribute("data-state");
  const syncOf = (page: Page, host: string) =>
    page.getByTestId("host-rows").locator("tr", { hasText: host }).locator("td").nth(2).textContent();

  it("shows the drop, reconnects by itself, catches up, and updates live again", async () => {
    await serve.enrol("live-1");
    await serve.report("live-1", 1, { commit: "eee5555555", sync: "in-sync" });
    const page = await signIn(browser, serve);
    pages.push(page);
    await page.getByRole("searchbox", { name: "Name" }).fill("live-1");
    await expect.poll(() => syncOf(page, "live-1"), DEADLINE).toBe("in-sync");
    await expect.poll(() => liveState(page), DEADLINE).toBe("live");
    await page.evaluate(() => {
      (window as unknown as { sameDocument: boolean }).sameDocument = true;
    });

    await serve.stopHttp();
    await expect.poll(() => liveState(page), DEADLINE).toBe("down");
    expect(await page.getByTestId("live").textContent()).toContain("reconnecting");
    await screenshot(page, "live-lost");
    // While the page cannot hear about it, the host drifts.
    await serve.report("live-1", 2, { commit: "eee5555555", sync: "drifted", result: "changes" });

    await serve.startHttp();
    await expect.poll(() => liveState(page), DEADLINE).toBe("live");
    // Caught up at the reconnection, without another event.
    await expect.poll(() => syncOf(page, "live-1"), DEADLINE).toBe("drifted");
    // And live again.
    await serve.report("live-1", 3, { commit: "eee5555555", sync: "failed", result: "failed" });
    await expect.poll(() => syncOf(page, "live-1"), DEADLINE).toBe("failed");
    expect(await page.evaluate(() => (window as unknown as { sameDocument?: boolean }).sameDocument)).toBe(true);
    await screenshot(page, "live-reconnected");
  });

  it("goes back to the sign-in form when the session ended while the stream was down", async () => {
    const page = await signIn(browser, serve);
    pages.push(page);
    await expect.poll(() => liveState(page), DEADLINE).toBe("live");
    // The session ends (as after a restart of serve, or a sign-out in another tab)...
    const out = await page.request.post(`${serve.url}/logout`, { headers: { "x-driftless-request": "1" } });
    expect(out.status()).toBe(204);
    // ...and the stream drops: its reconnection is refused (401), which the browser does not retry.
    await serve.stopHttp();
    await expect.poll(() => liveState(page), DEADLINE).toBe("down");
    await serve.startHttp();
    await page.getByRole("button", { name: "Sign in" }).waitFor({ timeout: DEADLINE.timeout });
  });
});
