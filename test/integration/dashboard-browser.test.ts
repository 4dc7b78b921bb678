/**
 * The dashboard in a real browser (Debian's chromium through playwright-core) against a serve
 * wired as `driftlessctl serve` wires it; hosts publish real reports through the embedded broker
 * with their own credentials. Each test signs in with its own browser context and looks at hosts
 * of its own (named filters keep the others out of its view); each saves a screenshot under
 * test-results/dashboard/.
 */
import type { Browser, BrowserContext, Page } from "playwright-core";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { hostTopic } from "../../protocol/topics.js";
import { browserSupport, launchBrowser, screenshot, signIn } from "../support/browser.js";
import { type FleetServe, startFleetServe } from "../support/fleet-serve.js";

const browserCheck = browserSupport();

const MOTD_DIFF =
  "--- /etc/motd\n+++ /etc/motd (desired)\n@@ -1,2 +1,2 @@\n welcome\n-edited by hand\n+managed by driftless\n";
const XSS = "<img src=x onerror=window.__xss=1>";

describe.skipIf(!browserCheck.can)("the dashboard in chromium", () => {
  let serve: FleetServe;
  let browser: Browser;
  const contexts: BrowserContext[] = [];

  beforeAll(async () => {
    [serve, browser] = await Promise.all([startFleetServe(), launchBrowser()]);
  });
  afterEach(async () => {
    for (const context of contexts.splice(0)) await context.close();
  });
  afterAll(async () => {
    await browser?.close();
    await serve?.close();
  });

  /** A new browser context (its own cookies), signed in with the API token through the login form. */
  async function signedIn(): Promise<Page> {
    const page = await signIn(browser, serve);
    contexts.push(page.context());
    return page;
  }

  async function filterByName(page: Page, name: string) {
    await page.getByLabel("Name").fill(name);
  }

  function rows(page: Page) {
    return page.getByTestId("host-rows").locator("tr");
  }

  it("signs in with the one-time link, shows the fleet summary, and nothing without a session", async () => {
    await serve.enrol("sum-1", { role: "web" });
    await serve.enrol("sum-2", { role: "db" });
    await serve.report("sum-1", 1, { commit: "aaa1111111", sync: "drifted", result: "changes" });
    await serve.report("sum-2", 1, { commit: "aaa1111111", sync: "in-sync" });
    const context = await browser.newContext();
    contexts.push(context);
    const page = await context.newPage();
    // Without a session: the login form, and the API refuses the browser.
    await page.goto(serve.url);
    await page.getByRole("button", { name: "Sign in" }).waitFor();
    expect((await page.request.get(`${serve.url}/api/v1/summary`)).status()).toBe(401);

    await page.goto(serve.loginUrl());
    expect(new URL(page.url()).search).toBe("");
    await page.getByTestId("commits").waitFor();
    expect(await page.getByTestId("count-drifted").textContent()).toMatch(/^\d+ drifted$/);
    const drifted = Number((await page.getByTestId("count-drifted").textContent())?.split(" ")[0]);
    expect(drifted).toBeGreaterThanOrEqual(1);
    await expect.poll(() => page.getByTestId("live").textContent()).toMatch(/live/);
    await expect.poll(() => page.getByTestId("head").textContent()).toMatch(/aaa1111111/);
    await screenshot(page, "summary");
  });

  it("filters the table by name, state and label, and sorts it", async () => {
    await serve.enrol("flt-a", { tier: "edge" });
    await serve.enrol("flt-b", { tier: "core" });
    await serve.enrol("flt-c", { tier: "edge" });
    await serve.report("flt-a", 1, { commit: "bbb2222222", sync: "drifted", result: "changes" });
    await serve.report("flt-b", 1, { commit: "bbb2222222" });
    await serve.report("flt-c", 1, { commit: "ccc3333333", sync: "failed", result: "failed" });
    const page = await signedIn();
    await filterByName(page, "flt-");
    await expect.poll(() => rows(page).count()).toBe(3);
    // Sorted by host already: a click turns the order.
    await page.getByTestId("sort-id").click();
    await expect
      .poll(() => rows(page).locator("td:first-child").allTextContents())
      .toEqual(["flt-c", "flt-b", "flt-a"]);
    await page.getByLabel("State").selectOption("drifted");
    await expect.poll(() => rows(page).locator("td:first-child").allTextContents()).toEqual(["flt-a"]);
    await page.getByLabel("State").selectOption("");
    await page.getByLabel("Label").selectOption("tier=edge");
    await expect.poll(() => rows(page).locator("td:first-child").allTextContents()).toEqual(["flt-c", "flt-a"]);
    await page.getByLabel("Commit").selectOption("ccc3333333");
    await expect.poll(() => rows(page).locator("td:first-child").allTextContents()).toEqual(["flt-c"]);
    expect(await page.getByTestId("range").textContent()).toBe("1–1 of 1");
    await screenshot(page, "filtered-table");
  });

  it("opens a drifted host and shows its drift per resource with the file's diff", async () => {
    await serve.enrol("drift-1", { role: "gateway" });
    await serve.report("drift-1", 1, {
      sync: "drifted",
      result: "changes",
      mode: "report",
      drift: [
        { resource: "file:/etc/motd", field: "content", desired: "sha256:aa", actual: "sha256:bb" },
        { resource: "file:/etc/motd", field: "mode", desired: "0644", actual: "0600" },
        { resource: "service:nginx", field: "state", desired: "running", actual: "stopped" },
      ],
      changes: [
        { resource: "file:/etc/motd", action: "update", diff: MOTD_DIFF },
        { resource: "service:nginx", action: "start" },
      ],
    });
    const page = await signedIn();
    await filterByName(page, "drift-1");
    await page.getByRole("link", { name: "drift-1" }).click();
    await page.getByTestId("drift").waitFor();
    expect(await page.getByTestId("sync").textContent()).toBe("drifted");
    const motd = page.getByRole("region", { name: "file:/etc/motd" });
    expect(await motd.locator(".diff .del").allTextContents()).toEqual(["-edited by hand\n"]);
    expect(await motd.locator(".diff .add").allTextContents()).toEqual(["+managed by driftless\n"]);
    expect(await motd.locator("tbody tr").nth(1).locator("td").allTextContents()).toEqual(["mode", "0644", "0600"]);
    const nginx = page.getByRole("region", { name: "service:nginx" });
    expect(await nginx.locator("tbody td").allTextContents()).toEqual(["state", "running", "stopped"]);
    expect(await page.locator(".chart svg rect").count()).toBe(1);
    await screenshot(page, "drifted-host");
  });

  it("converges a host after a confirmation and shows its run as it arrives", async () => {
    await serve.enrol("conv-1");
    await serve.report("conv-1", 1, { sync: "drifted", result: "changes" });
    const agent = await serve.connect("conv-1", [hostTopic("conv-1", "cmd"), hostTopic("conv-1", "ack")]);
    try {
      const page = await signedIn();
      await page.goto(`${serve.url}/#/hosts/conv-1`);
      await page.getByTestId("runs").waitFor();
      await expect.poll(() => page.getByTestId("live").textContent()).toMatch(/live/);
      expect(await page.getByTestId("runs").locator(":scope > li").count()).toBe(1);
      await page.getByRole("button", { name: "Converge now" }).click();
      await page.getByRole("button", { name: "Confirm" }).click();
      await expect.poll(() => page.getByTestId("converge").getByRole("status").textContent()).toMatch(/Converge sent/);
      // The host receives the command and runs: a new report, failed this time.
      const command = await agent.next();
      expect(command.topic).toBe(hostTopic("conv-1", "cmd"));
      expect(command.json).toMatchObject({ cmd: "converge" });
      await agent.client.publishAsync(
        hostTopic("conv-1", "report"),
        JSON.stringify({
          ...(await import("../support/payloads.js")).runReport("conv-1", 2, {
            sync: "failed",
            result: "failed",
            errors: [{ code: "EAPPLY", message: "nginx did not start" }],
          }),
        }),
        { qos: 1 },
      );
      expect((await agent.next()).json).toMatchObject({ upTo: 2 });
      // No reload: the page learns it from the event stream.
      await expect.poll(() => page.getByTestId("runs").locator(":scope > li").count()).toBe(2);
      await expect.poll(() => page.getByTestId("sync").textContent()).toBe("failed");
      expect(await page.locator(".chart .failed").count()).toBe(1);
      await page.locator('[data-seq="2"] summary').click();
      expect(await page.locator('[data-seq="2"] .error-list').textContent()).toContain("nginx did not start");
      await screenshot(page, "converged-live");
    } finally {
      await agent.close();
    }
  });

  it("shows what a host sends as text, never as HTML", async () => {
    await serve.enrol("xss-1");
    await serve.report(
      "xss-1",
      1,
      {
        sync: "drifted",
        result: "changes",
        drift: [{ resource: "file:/etc/x", field: "content", desired: XSS, actual: XSS }],
        changes: [{ resource: "file:/etc/x", action: "update", diff: `--- a\n+++ b\n@@ -1 +1 @@\n-${XSS}\n+${XSS}\n` }],
        errors: [{ code: "E", message: XSS }],
      },
      { labels: { note: XSS } },
    );
    const page = await signedIn();
    const ran: string[] = [];
    page.on("dialog", (dialog) => {
      ran.push(dialog.message());
      void dialog.dismiss();
    });
    await filterByName(page, "xss-1");
    await expect.poll(() => rows(page).locator("td.labels").textContent()).toBe(`note=${XSS}`);
    await page.getByRole("link", { name: "xss-1" }).click();
    await page.getByTestId("drift").waitFor();
    expect(await page.getByTestId("labels").textContent()).toBe(`note=${XSS}`);
    expect(await page.getByTestId("drift").locator(".diff .add").allTextContents()).toEqual([`+${XSS}\n`]);
    await page.locator('[data-seq="1"] summary').click();
    expect(await page.locator('[data-seq="1"] .error-list').textContent()).toContain(XSS);
    // Not one element made from what the host sent, and nothing ran.
    expect(await page.locator("img").count()).toBe(0);
    expect(await page.evaluate(() => (window as unknown as { __xss?: number }).__xss)).toBeUndefined();
    expect(ran).toEqual([]);
    await screenshot(page, "xss-as-text");
  });

  it("signs out: the page and the API are closed again", async () => {
    const page = await signedIn();
    await page.getByTestId("logout").click();
    await page.getByRole("button", { name: "Sign in" }).waitFor();
    expect((await page.request.get(`${serve.url}/api/v1/summary`)).status()).toBe(401);
    await page.goto(serve.url);
    await page.getByRole("button", { name: "Sign in" }).waitFor();
    await screenshot(page, "signed-out");
  });
});
