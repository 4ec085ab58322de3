// The pool is empty: the page says so, keeps calm (no reconnect storm), and gets a line
// with "Try again now" once one is free.
//
// env: SIPLINE_URL (a sipline whose every account is leased by someone else)
// stdout: "@limit" once the page shows the message → the harness frees an account
// stdin:  "free" when it did
import * as t from "./lib.mjs";

t.scenario("limit", async (ctx) => {
  const browser = await t.launch(ctx);
  const rec = await t.open(browser);
  const { page } = rec;

  await t.expectText(page, "the connection-limit message", "#conn-text", /^No free line — try again later$/);
  t.check("sipline said connectionLimit",
    rec.received.some((m) => m?.method === "registrationStateChanged" && m.params?.state === "connectionLimit"));
  await t.expectControls(page, "the limit panel, nothing to call", {
    "#limit": "enabled", "#retry": "enabled", "#call": "hidden", "#number": "hidden", "#keypad": "hidden",
  });
  await t.expectText(page, "a retry countdown", "#limit-retry", /^Trying again in \d+ s$/);
  await page.waitForTimeout(3000);
  t.check("no reconnect storm: one connection in 3 s", rec.sockets === 1, `${rec.sockets} WebSockets`);
  await t.screenshot(page, "connection-limit");
  t.emit("limit");

  await t.command("free");
  await page.locator("#retry").click();
  await t.expectText(page, "Try again gets a line", "#conn-text", /^Registered as \d+$/);
  await t.expectControls(page, "the keypad is back", { "#limit": "hidden", "#keypad": "enabled", "#number": "enabled", "#call": "disabled" });
  t.check("a second connection", rec.sockets === 2, `${rec.sockets} WebSockets`);
  t.checkClean(rec);
});
