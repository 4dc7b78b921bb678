/**
 * The README's main command in a browser: `driftlessctl demo` (its 3 hosts, converging every hour
 * so that only a push moves them) prints a dashboard link; chromium opens it and sees the three
 * hosts in sync on the repository's first commit. Then the push the demo's instructions print
 * (run as printed, in a shell, as the demo's user) shows up on the same page, with no reload: the
 * new commit marked newest, the hosts moving to it until all three run it.
 *
 * Waits are for conditions on the page, with generous deadlines; no duration is asserted.
 */
import * as path from "node:path";
import type { Browser, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { browserSupport, launchBrowser, screenshot } from "../support/browser.js";
import { type DemoProcess, gitAsUser, runAsUser, startDemo } from "../support/demo.js";

const browserCheck = browserSupport();
/** Agents fetch, converge and report; on a busy 2-core machine that can take a while. */
const DEADLINE = { timeout: 120_000, interval: 250 };

describe.skipIf(!browserCheck.can)("driftlessctl demo in chromium", () => {
  let demo: DemoProcess;
  let browser: Browser;

  beforeAll(async () => {
    demo = startDemo(["--interval", "1h"]);
    browser = await launchBrowser();
  });
  afterAll(async () => {
    await browser?.close();
    await demo?.cleanup();
  });

  /** Host, sync and commit of each row, as the table shows them. */
  function rows(page: Page) {
    return page
      .getByTestId("host-rows")
      .locator("tr")
      .evaluateAll((trs) =>
        trs.map((tr) => {
          const cells = [...tr.querySelectorAll("td")].map((td) => td.textContent ?? "");
          return `${cells[0]} ${cells[2]} ${cells[3]}`;
        }),
      );
  }

  it("opens on the dashboard from the printed link, and a push shows up on the page without a reload", async () => {
    const loginUrl = await demo.printed(/^ {2}dashboard +(http:\/\/\S+)/m);
    const push = await demo.printed(/^ {2}(cd \S+\/work && .* git push)$/m);
    const work = path.join(demo.dir, "work");
    const first = (await gitAsUser(work, ["rev-parse", "HEAD"])).slice(0, 10);

    const page = await (await browser.newContext({ viewport: { width: 1200, height: 900 } })).newPage();
    await page.goto(loginUrl);
    // The link signs in once and leaves the address bar.
    expect(new URL(page.url()).search).toBe("");
    await expect
      .poll(() => rows(page), DEADLINE)
      .toEqual([`demo-1 in-sync ${first}`, `demo-2 in-sync ${first}`, `demo-3 in-sync ${first}`]);
    await expect.poll(() => page.getByTestId("head-count").textContent(), DEADLINE).toBe("3");
    await expect.poll(() => page.getByTestId("live").getAttribute("data-state")).toBe("live");
    await screenshot(page, "demo-opened");

    // Gone if the page reloads: what follows must arrive through the event stream.
    await page.evaluate(() => {
      (window as unknown as { sameDocument: boolean }).sameDocument = true;
    });
    const pushed = await runAsUser("sh", ["-c", push], {
      env: { HOME: work, GIT_CONFIG_NOSYSTEM: "1", GIT_CONFIG_GLOBAL: "/dev/null", GIT_TERMINAL_PROMPT: "0" },
    });
    expect(pushed.code, pushed.stderr).toBe(0);
    const second = (await gitAsUser(work, ["rev-parse", "HEAD"])).slice(0, 10);
    expect(second).not.toBe(first);

    await expect.poll(() => page.getByTestId("head").textContent(), DEADLINE).toContain(second);
    await expect
      .poll(() => rows(page), DEADLINE)
      .toEqual([`demo-1 in-sync ${second}`, `demo-2 in-sync ${second}`, `demo-3 in-sync ${second}`]);
    await expect.poll(() => page.getByTestId("head-count").textContent(), DEADLINE).toBe("3");
    // Hosts per commit: the pushed one marked newest, with the three hosts on it.
    const newest = page.getByTestId("commits").locator("li.head");
    expect(await newest.locator("code").textContent()).toBe(second);
    expect(await newest.locator(".n").textContent()).toBe("3");
    expect(await page.evaluate(() => (window as unknown as { sameDocument?: boolean }).sameDocument)).toBe(true);
    await screenshot(page, "demo-after-push");

    demo.child.kill("SIGINT");
    expect((await demo.exit).code).toBe(0);
  });
});
