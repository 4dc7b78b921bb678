/**
 * The dashboard for every reader, in chromium: the browser's dark scheme gives other colours than
 * the light one, and in both the text keeps a WCAG AA contrast (4.5:1) against what is behind
 * it; on a phone (390×844) the page never scrolls sideways; and the keyboard alone reaches the
 * name filter, filters, opens a host, and converges it through the confirmation.
 */
import type { Browser, Page } from "playwright-core";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { browserSupport, launchBrowser, screenshot, signIn } from "../support/browser.js";
import { type FleetServe, startFleetServe } from "../support/fleet-serve.js";

const browserCheck = browserSupport();

const LONG_LINE = `${"a-very-long-unbroken-configuration-value-".repeat(8)}end`;
const DIFF = `--- /etc/app.conf\n+++ /etc/app.conf (desired)\n@@ -1 +1 @@\n-${LONG_LINE}\n+${LONG_LINE}x\n`;

interface Contrast {
  what: string;
  text: string;
  ratio: number;
}

/**
 * The contrast ratio of each visible element matching `selector` (its first 5) against the first
 * opaque background behind it, as WCAG 2 defines it (relative luminance of sRGB).
 */
function contrasts(page: Page, selector: string): Promise<Contrast[]> {
  return page.evaluate((sel) => {
    const rgb = (css: string) => {
      const m = /rgba?\(([^)]+)\)/.exec(css);
      const parts = (m?.[1] ?? "0,0,0,0")
        .split(/[ ,/]+/)
        .filter(Boolean)
        .map(Number);
      return { r: parts[0] ?? 0, g: parts[1] ?? 0, b: parts[2] ?? 0, a: parts[3] ?? 1 };
    };
    const luminance = (c: { r: number; g: number; b: number }) => {
      const lin = (v: number) => {
        const s = v / 255;
        return s <= 0.03928 ? s / 12.92 : ((s + 0.055) / 1.055) ** 2.4;
      };
      return 0.2126 * lin(c.r) + 0.7152 * lin(c.g) + 0.0722 * lin(c.b);
    };
    const background = (el: Element | null): { r: number; g: number; b: number } => {
      for (let at = el; at; at = at.parentElement) {
        const c = rgb(getComputedStyle(at).backgroundColor);
        if (c.a >= 1) return c;
      }
      return rgb(getComputedStyle(document.documentElement).backgroundColor);
    };
    return [...document.querySelectorAll(sel)]
      .filter((el) => (el as HTMLElement).offsetParent !== null || el === document.body)
      .slice(0, 5)
      .map((el) => {
        const fg = luminance(rgb(getComputedStyle(el).color));
        const bg = luminance(background(el));
        const ratio = (Math.max(fg, bg) + 0.05) / (Math.min(fg, bg) + 0.05);
        return { what: sel, text: (el.textContent ?? "").slice(0, 30), ratio: Math.round(ratio * 100) / 100 };
      });
  }, selector);
}

/** Page-wide colours: the body's background and text. */
function bodyColours(page: Page): Promise<{ background: string; color: string }> {
  return page.evaluate(() => {
    const style = getComputedStyle(document.body);
    return { background: style.backgroundColor, color: style.color };
  });
}

/** Presses Tab until `isThere` holds for the focused element; fails after `max` presses. */
async function tabTo(page: Page, what: string, isThere: (el: Element) => boolean, max = 60, key = "Tab") {
  for (let i = 0; i < max; i++) {
    await page.keyboard.press(key);
    if (await page.evaluate(`(${isThere.toString()})(document.activeElement)`)) return;
  }
  throw new Error(`${max} × ${key} did not reach ${what}`);
}

/** The text of the focused element (focus moves in effects, after the page painted: wait for it). */
function focused(page: Page): Promise<string | null | undefined> {
  return page.evaluate(() => document.activeElement?.textContent);
}

/** What the page shows on screen that a sideways scroll would be needed for (0: nothing). */
function overflow(page: Page): Promise<number> {
  return page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
}

describe.skipIf(!browserCheck.can)("the dashboard's schemes, phone layout and keyboard in chromium", () => {
  let serve: FleetServe;
  let browser: Browser;
  const pages: Page[] = [];

  beforeAll(async () => {
    [serve, browser] = await Promise.all([startFleetServe(), launchBrowser()]);
    await serve.enrol("acc-drifted-host-with-a-long-name", { role: "gateway", site: "a-site-with-a-long-name" });
    await serve.report("acc-drifted-host-with-a-long-name", 1, {
      commit: "fff6666666",
      sync: "drifted",
      result: "changes",
      mode: "report",
      drift: [{ resource: "file:/etc/app.conf", field: "content", desired: "sha256:aa", actual: "sha256:bb" }],
      changes: [{ resource: "file:/etc/app.conf", action: "update", diff: DIFF }],
      errors: [{ code: "EAPPLY", message: LONG_LINE }],
    });
    await serve.enrol("acc-ok");
    await serve.report("acc-ok", 1, { commit: "fff6666666", sync: "in-sync" });
  });
  afterEach(async () => {
    for (const page of pages.splice(0)) await page.context().close();
  });
  afterAll(async () => {
    await browser?.close();
    await serve?.close();
  });

  async function open(options: Parameters<typeof signIn>[2]): Promise<Page> {
    const page = await signIn(browser, serve, options);
    pages.push(page);
    await page.getByRole("searchbox", { name: "Name" }).fill("acc-");
    await expect.poll(() => page.getByTestId("host-rows").locator("tr").count()).toBe(2);
    return page;
  }

  const TEXT = ["body", "main h2", ".muted", "a", "td", ".pill", "button", "input", "th"];

  it("follows the dark scheme with other colours than the light one, both readable", async () => {
    const light = await open({ viewport: { width: 1200, height: 900 }, colorScheme: "light" });
    const dark = await open({ viewport: { width: 1200, height: 900 }, colorScheme: "dark" });
    const [lightBody, darkBody] = await Promise.all([bodyColours(light), bodyColours(dark)]);
    expect(darkBody.background).not.toBe(lightBody.background);
    expect(darkBody.color).not.toBe(lightBody.color);

    for (const page of [light, dark]) {
      const found = (await Promise.all(TEXT.map((sel) => contrasts(page, sel)))).flat();
      expect(found.find((c) => c.what === "body")?.ratio).toBeGreaterThanOrEqual(4.5);
      expect(found.filter((c) => c.ratio < 4.5)).toEqual([]);
    }
    // The host page: the diff's coloured lines and the drift table too.
    for (const page of [light, dark]) {
      await page.getByRole("link", { name: "acc-drifted-host-with-a-long-name" }).click();
      await page.getByTestId("drift").waitFor();
      const selectors = [".diff .add", ".diff .del", ".diff .hunk", ".diff .file", "td.desired", "td.actual", "h1"];
      const found = (await Promise.all(selectors.map((sel) => contrasts(page, sel)))).flat();
      expect(found.length).toBeGreaterThanOrEqual(selectors.length);
      expect(found.filter((c) => c.ratio < 4.5)).toEqual([]);
    }
    await screenshot(dark, "dark-host");
    await dark.goto(`${serve.url}/#/`);
    await dark.getByRole("searchbox", { name: "Name" }).fill("acc-");
    await expect.poll(() => dark.getByTestId("host-rows").locator("tr").count()).toBe(2);
    await screenshot(dark, "dark-fleet");
  });

  it("fits a phone's width: nothing scrolls the page sideways", async () => {
    const phone = { viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true, deviceScaleFactor: 2 };
    const page = await open(phone);
    expect(await overflow(page)).toBe(0);
    // Each commit's name and badge end before its bar starts.
    const overlaps = await page
      .getByTestId("commits")
      .locator(".bars li")
      .evaluateAll((items) =>
        items.map((li) => {
          // What the button shows (its box is the grid column's, whatever spills out of it).
          const shown = [...li.querySelectorAll("button *")].map((el) => el.getBoundingClientRect().right);
          const bar = li.querySelector(".bar")?.getBoundingClientRect();
          return shown.length > 0 && bar ? Math.max(0, Math.round(Math.max(...shown) - bar.left)) : -1;
        }),
      );
    expect(overlaps.length).toBeGreaterThan(0);
    expect(overlaps.every((px) => px === 0)).toBe(true);
    await screenshot(page, "phone-fleet");
    await page.getByRole("link", { name: "acc-drifted-host-with-a-long-name" }).click();
    await page.getByTestId("drift").waitFor();
    await page.locator('[data-seq="1"] summary').click();
    expect(await overflow(page)).toBe(0);
    await page.getByRole("button", { name: "Converge now" }).click();
    expect(await overflow(page)).toBe(0);
    await screenshot(page, "phone-host");
  });

  it("works from the keyboard: filter, open a host, converge it through the confirmation", async () => {
    const page = await signIn(browser, serve);
    pages.push(page);
    await tabTo(page, "the name filter", (el) => el.getAttribute("name") === "q");
    await page.keyboard.type("acc-o");
    await expect
      .poll(() => page.getByTestId("host-rows").locator("td:first-child").allTextContents())
      .toEqual(["acc-ok"]);
    await tabTo(page, "the host's link", (el) => el.tagName === "A" && el.textContent === "acc-ok");
    await page.keyboard.press("Enter");
    await page.getByRole("heading", { name: "acc-ok" }).waitFor();
    expect(new URL(page.url()).hash).toBe("#/hosts/acc-ok");

    // The skip button (first in the page) moves the focus to the content and keeps the host's page.
    await tabTo(page, "the skip button", (el) => el.textContent === "Skip to content", 10, "Shift+Tab");
    await page.keyboard.press("Enter");
    await expect.poll(() => page.evaluate(() => document.activeElement?.id)).toBe("main");
    expect(new URL(page.url()).hash).toBe("#/hosts/acc-ok");
    await page.getByRole("heading", { name: "acc-ok" }).waitFor();

    // Converge: the confirmation takes the focus; Escape cancels back to the button.
    await tabTo(page, "Converge now", (el) => el.textContent === "Converge now");
    await page.keyboard.press("Enter");
    await expect.poll(() => focused(page)).toBe("Confirm");
    await page.keyboard.press("Escape");
    await expect.poll(() => focused(page)).toBe("Converge now");
    await page.keyboard.press("Enter");
    await expect.poll(() => focused(page)).toBe("Confirm");
    await page.keyboard.press("Enter");
    await expect.poll(() => page.getByTestId("converge").getByRole("status").textContent()).toMatch(/Converge sent/);
    // The focus stays on the action, not lost to the page's top.
    await expect
      .poll(() => page.evaluate(() => document.activeElement?.closest("[data-testid=converge]") !== null))
      .toBe(true);
    await screenshot(page, "keyboard-converge");
  });
});
