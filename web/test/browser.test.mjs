// Two people in headless Chromium on the node's demo page (run by
// tests/browser.rs, which starts the node): they sign up and log in, see each
// other online, chat both ways, and alice calls bob: both peer connections reach
// `connected`, video arrives on both sides, the data channel carries a message
// each way, alice hangs up and both pages show the call ended (and both
// connection objects deleted); then bob calls alice, who declines.
//
// HYPERTY_HTTP: the node. CHROMIUM: the browser (default /usr/bin/chromium).
// HYPERTY_DASHBOARD_TOKEN: an ID token for the node's dashboard, which is then
// checked to show the traffic. HYPERTY_SCREENSHOT_DIR: where to write the pages
// mid-call and the dashboard (unset: nowhere).
import { test } from "node:test";
import assert from "node:assert/strict";
import path from "node:path";
import { chromium } from "playwright-core";

const HTTP = process.env.HYPERTY_HTTP;
const CHROMIUM = process.env.CHROMIUM || "/usr/bin/chromium";
const SHOTS = process.env.HYPERTY_SCREENSHOT_DIR;
const DASHBOARD_TOKEN = process.env.HYPERTY_DASHBOARD_TOKEN;
/** How long any one condition may take to become true, ms. */
const WAIT = 15000;
assert.ok(HTTP, "run this through `cargo test --test browser`");

const suffix = `${process.pid}`;
const ALICE = `alice-${suffix}`;
const BOB = `bob-${suffix}`;
const PASSWORD = "correct horse battery";

/** A page on the demo that records every script error it shows. */
async function open(browser) {
  const context = await browser.newContext({ viewport: { width: 1000, height: 700 }, permissions: ["camera", "microphone"] });
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT);
  page.errors = [];
  page.on("pageerror", (e) => page.errors.push(String(e)));
  page.on("console", (m) => {
    if (m.type() === "error" && !m.location().url.endsWith("/favicon.ico")) page.errors.push(m.text());
  });
  await page.goto(`${HTTP}/`);
  return page;
}

async function signIn(page, user, button) {
  await page.getByLabel("User name").fill(user);
  await page.getByLabel("Password").fill(PASSWORD);
  await page.getByRole("button", { name: button }).click();
  await page.locator("#app").waitFor({ state: "visible" });
  assert.equal(await page.locator("#me-name").textContent(), user);
}

const person = (page, user) => page.locator(`#online li[data-user="${user}"]`);

test("two browsers: sign up, log in, see each other, chat both ways, call with media and a data channel, hang up", async () => {
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--use-fake-device-for-media-stream",
      "--use-fake-ui-for-media-stream",
      "--allow-loopback-in-peer-connection",
      "--disable-features=WebRtcHideLocalIpsWithMdns",
    ],
  });
  try {
    const [alice, bob] = [await open(browser), await open(browser)];

    // the page itself: labelled form, security headers
    const res = await alice.request.get(`${HTTP}/`);
    assert.match(res.headers()["content-security-policy"], /script-src 'self'/);
    assert.equal(await alice.getByRole("button", { name: "Sign up" }).count(), 1);

    // alice signs up; bob signs up, logs out and logs in again
    await signIn(alice, ALICE, "Sign up");
    await signIn(bob, BOB, "Sign up");
    await bob.getByRole("button", { name: "Log out" }).click();
    await bob.locator("#login").waitFor({ state: "visible" });
    await signIn(bob, BOB, "Log in");
    // a wrong password is refused with the identity provider's reason
    const mallory = await open(browser);
    await mallory.getByLabel("User name").fill(BOB);
    await mallory.getByLabel("Password").fill("not the password");
    await mallory.getByRole("button", { name: "Log in" }).click();
    await mallory.locator('#notice[data-kind="error"]').waitFor();
    assert.match(await mallory.locator("#notice").textContent(), /Could not log in: .*\(401\)/);
    await mallory.context().close();

    // every control has a name a screen reader can say
    const unnamed = await alice.evaluate(() => [
      ...[...document.querySelectorAll("input")].filter((i) => !i.labels || !i.labels.length).map((i) => `input#${i.id}`),
      ...[...document.querySelectorAll("button")].filter((b) => !(b.getAttribute("aria-label") || b.textContent.trim())).map((b) => `button#${b.id}`),
    ]);
    assert.deepEqual(unnamed, []);

    // both see each other online (through the domain registry)
    await person(alice, BOB).waitFor();
    await person(bob, ALICE).waitFor();

    // chat both ways; what is displayed is text, never markup
    await alice.getByRole("button", { name: `Chat with ${BOB}` }).click();
    const hello = `hello bob <img src=x onerror="document.title='pwned'"><b>not bold</b>`;
    await alice.getByRole("textbox", { name: "Message", exact: true }).fill(hello);
    await alice.keyboard.press("Enter");
    const got = bob.locator("#messages li.theirs").last();
    await got.waitFor();
    assert.equal(await got.locator(".text").textContent(), hello);
    assert.equal(await got.locator(".who").textContent(), ALICE, "the sender is the identity the node asserts");
    assert.equal(await bob.locator("#messages img, #messages b").count(), 0);
    assert.equal(await bob.locator("#chat-title").textContent(), `Chat with ${ALICE}`);
    await alice.locator('#messages li.mine[data-state="delivered"]').waitFor();
    await bob.getByRole("textbox", { name: "Message", exact: true }).fill("hi alice");
    await bob.locator("#chat-send").click();
    await alice.locator("#messages li.theirs .text", { hasText: "hi alice" }).waitFor();

    // alice calls bob; bob accepts with the keyboard (the dialog focuses Accept)
    await alice.getByRole("button", { name: `Call ${BOB}` }).click();
    await alice.locator('#call[data-state="ringing"]').waitFor();
    const incoming = bob.getByRole("alertdialog");
    await incoming.waitFor();
    assert.equal(await incoming.locator("p").textContent(), `${ALICE} is calling.`);
    await bob.waitForFunction(() => document.activeElement && document.activeElement.id === "accept", null, { timeout: WAIT });
    await bob.keyboard.press("Enter");

    // both peer connections connect, and each side receives the other's video
    for (const page of [alice, bob]) {
      await page.locator('#call[data-peer-connection="connected"][data-state="connected"]').waitFor();
      await page.waitForFunction(() => document.getElementById("remote-video").videoWidth > 0, null, { timeout: WAIT });
    }
    assert.equal(await alice.locator("#call-status").textContent(), `In a call with ${BOB}.`);
    assert.equal(await bob.locator("#call-status").textContent(), `In a call with ${ALICE}.`);

    // the data channel, peer to peer, both ways
    for (const page of [alice, bob]) await page.locator("#dc-text:enabled").waitFor();
    await alice.getByRole("textbox", { name: /^Direct message/ }).fill("over the data channel, from alice");
    await alice.keyboard.press("Enter");
    await bob.locator("#dc-messages li.theirs .text", { hasText: "over the data channel, from alice" }).waitFor();
    await bob.getByRole("textbox", { name: /^Direct message/ }).fill("and back, from bob");
    await bob.keyboard.press("Enter");
    await alice.locator("#dc-messages li.theirs .text", { hasText: "and back, from bob" }).waitFor();

    if (SHOTS) {
      await alice.screenshot({ path: path.join(SHOTS, "demo-alice.png") });
      await bob.screenshot({ path: path.join(SHOTS, "demo-bob.png") });
    }

    // alice hangs up: both see the call ended
    await alice.getByRole("button", { name: "Hang up" }).click();
    await alice.locator('#call[data-state="ended"]').waitFor();
    await bob.locator('#call[data-state="ended"]').waitFor();
    assert.equal(await alice.locator("#call-status").textContent(), "You hung up.");
    assert.equal(await bob.locator("#call-status").textContent(), `${ALICE} hung up.`);
    assert.equal(await bob.locator("#hangup").isDisabled(), true);
    // each side deleted its connection object and saw the other's deleted
    for (const page of [alice, bob]) await page.locator('#call[data-mine="deleted"][data-theirs="deleted"]').waitFor();

    // a second call, bob to alice this time: alice declines it
    await bob.getByRole("button", { name: `Call ${ALICE}` }).click();
    await alice.getByRole("alertdialog").waitFor();
    await alice.getByRole("button", { name: "Decline" }).click();
    await alice.locator('#call[data-state="ended"]').waitFor();
    await bob.locator('#call[data-state="ended"]').waitFor();
    assert.equal(await alice.locator("#call-status").textContent(), "You declined the call.");
    assert.equal(await bob.locator("#call-status").textContent(), `${ALICE} declined.`);

    for (const page of [alice, bob]) assert.deepEqual(page.errors, [], "no script errors on the page");
    assert.notEqual(await bob.title(), "pwned");

    // the node's dashboard shows the two people's traffic
    if (DASHBOARD_TOKEN) {
      const context = await browser.newContext({ viewport: { width: 1000, height: 1400 } });
      const dash = await context.newPage();
      dash.setDefaultTimeout(WAIT);
      const errors = [];
      dash.on("pageerror", (e) => errors.push(String(e)));
      await dash.goto(`${HTTP}/dashboard#token=${encodeURIComponent(DASHBOARD_TOKEN)}`);
      await dash.locator("#dashboard:not([hidden])").waitFor();
      const value = (chart, label) =>
        dash.locator(`details[data-key="${chart}"] tr`, { has: dash.locator("td", { hasText: new RegExp(`^${label}$`) }) }).locator("td").nth(1);
      // alice and bob are still online; frames went through and were delivered
      await dash.waitForFunction(() => {
        const row = (chart, label) => [...document.querySelectorAll(`details[data-key="${chart}"] tr`)]
          .find((tr) => tr.cells[0]?.textContent === label)?.cells[1]?.textContent;
        return Number(row("Sessions and addresses", "live sessions")) >= 2 &&
          !["0", undefined].includes(row("Frames since start", "delivered")) &&
          document.querySelectorAll("#traffic path.line").length > 0;
      }, null, { timeout: WAIT });
      assert.notEqual(await value("Frames since start", "received").textContent(), "0");
      assert.deepEqual(errors, [], "no script errors on the dashboard");
      if (SHOTS) await dash.screenshot({ path: path.join(SHOTS, "dashboard.png"), fullPage: true });
      await context.close();
    }
  } finally {
    await browser.close();
  }
});
