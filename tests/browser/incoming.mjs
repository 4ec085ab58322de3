// Incoming calls: the page rings and shows the caller; Answer; the far end hangs up.
// Then a second call is declined from the keyboard alone (Escape).
//
// env: SIPLINE_URL, CALLER_NAME (default "Alice Martin"), CALLER (default "1000")
// stdout: "@registered USER" → the harness places call 1 (the caller hangs up after a few
//         seconds in call); "@second" → the harness places call 2 (expects a rejection)
// stdin:  "ended" once the harness saw the first caller finish
import * as t from "./lib.mjs";

const NAME = process.env.CALLER_NAME ?? "Alice Martin";
const CALLER = process.env.CALLER ?? "1000";

t.scenario("incoming", async (ctx) => {
  const browser = await t.launch(ctx);
  const rec = await t.open(browser);
  const { page } = rec;

  await t.expectText(page, "registered", "#conn-text", /^Registered as \d+$/);
  const user = (await page.locator("#conn-text").textContent())?.replace(/\D/g, "") ?? "";
  t.emit("registered", user);

  // call 1: ring, see the caller, answer
  await t.expectText(page, "it rings", "#call-state", /^Incoming call$/, 15000);
  await t.expectText(page, "the caller's name", "#incoming-name", new RegExp(`^${NAME}$`));
  await t.expectText(page, "the caller's number", "#incoming-number", new RegExp(`^${CALLER}$`));
  await t.expectText(page, "initials in the avatar", "#incoming-initials", /^AM$/);
  await t.expectControls(page, "ringing: Answer and Decline only", {
    "#answer": "enabled", "#reject": "enabled", "#call": "hidden", "#hangup": "hidden", "#hold": "hidden", "#keypad": "hidden",
  });
  t.check("Answer has the focus", await page.evaluate(() => document.activeElement?.id === "answer"));
  await t.expectText(page, "screen readers hear who calls", "#announcer", new RegExp(`^Incoming call from ${NAME}, ${CALLER}$`));
  await page.waitForTimeout(400);
  await t.screenshot(page, "ringing");

  await page.locator("#answer").click();
  await t.expectText(page, "answered: in call", "#call-state", /^In call$/);
  t.check("one accept request", t.requests(rec, "accept").length === 1);
  await t.expectText(page, "caller and timer in the display", "#sub", new RegExp(`^${NAME} · \\d\\d:\\d\\d$`));
  await t.expectControls(page, "in call: Hang up, Hold, keypad", {
    "#hangup": "enabled", "#hold": "enabled", "#answer": "hidden", "#keypad": "enabled",
  });
  t.check("number field shows the caller", (await page.locator("#number").inputValue()) === CALLER);

  await t.expectText(page, "the far end hangs up", "#call-state", /^Call ended$/, 15000);
  t.check("no hangUp from the page", t.requests(rec, "hangUp").length === 0);
  await t.command("ended");

  // call 2: keyboard only
  await t.expectText(page, "back to idle", "#call-state", /^\s*$/, 6000);
  t.emit("second");
  await t.expectText(page, "it rings again", "#call-state", /^Incoming call$/, 15000);
  await t.expectText(page, "a caller without a name shows the number", "#incoming-name", new RegExp(`^${CALLER}$`));
  await page.keyboard.press("Escape");
  await t.expectText(page, "Escape declines", "#call-state", /^Declined$/);
  const hangups = t.requests(rec, "hangUp");
  t.check("declined with 603", hangups.length === 1 && hangups[0].params?.code === 603, JSON.stringify(hangups));
  t.checkClean(rec);
});

