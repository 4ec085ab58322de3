// Call waiting from the page, by accessible names: in a call with 1000, 1001 calls; the
// page shows "Call waiting: 1001" and the first call goes on; "Answer the waiting call
// from 1001" puts 1000 on hold ("On hold: 1000") and talks to 1001; "Switch to the call
// with 1000" swaps back; "Hang up" ends 1000 and leaves 1001, on hold, as the call;
// "Resume the call", then "Hang up".
//
// env: SIPLINE_URL
// stdout: "@registered USER" → the harness has 1000 call the page; "@first" (answered) →
//         the harness has 1001 call; "@done {requests}" at the end
import * as t from "./lib.mjs";

/** Waits until the number field (the current call's number) shows `number`. */
async function current(page, what, number) {
  await t.within(10000, what, page.waitForFunction((n) => document.getElementById("number")?.value === n, number));
  t.check(what, true);
}

t.scenario("call waiting", async (ctx) => {
  const browser = await t.launch(ctx);
  const rec = await t.open(browser);
  const { page } = rec;
  await t.expectText(page, "registered", "#conn-text", /^Registered as \d+$/);
  t.emit("registered", (await page.locator("#conn-text").textContent())?.replace(/\D/g, "") ?? "");

  await t.expectText(page, "the first call rings", "#call-state", /^Incoming call$/, 15000);
  await page.getByRole("button", { name: "Answer", exact: true }).click();
  await t.expectText(page, "in call with the first", "#call-state", /^In call$/);
  t.emit("first");

  // a second call rings in the background of the first
  const answerWaiting = page.getByRole("button", { name: "Answer the waiting call from 1001" });
  await t.within(15000, "the waiting call's Answer", answerWaiting.waitFor());
  await t.expectText(page, "the waiting call is shown", "#others", /^Call waiting: 1001/);
  t.check("Decline is offered too", await page.getByRole("button", { name: "Decline the waiting call from 1001" }).isVisible());
  t.check("the first call goes on meanwhile", (await page.locator("#call-state").textContent()) === "In call");
  await current(page, "the first is still the current call", "1000");

  await answerWaiting.click();
  await t.expectText(page, "answering it holds the first", "#others", /^On hold: 1000/);
  await current(page, "the page talks to the second", "1001");
  await t.expectText(page, "in call with the second", "#call-state", /^In call$/);
  await t.screenshot(page, "call-waiting");

  await page.getByRole("button", { name: "Switch to the call with 1000" }).click();
  await t.expectText(page, "switching holds the second", "#others", /^On hold: 1001/);
  await current(page, "back with the first", "1000");
  await t.expectText(page, "in call with the first again", "#call-state", /^In call$/);

  await page.getByRole("button", { name: "Hang up", exact: true }).click();
  await current(page, "the held call is what is left", "1001");
  await t.expectText(page, "and it is on hold", "#call-state", /^On hold$/);
  t.check("no other call listed", await page.locator("#others").isHidden());
  await page.getByRole("button", { name: "Resume the call" }).click();
  await t.expectText(page, "resumed", "#call-state", /^In call$/);
  await page.getByRole("button", { name: "Hang up", exact: true }).click();
  await t.expectText(page, "both calls over", "#call-state", /^Call ended$/);

  const ids = (method) => t.requests(rec, method).map((r) => r.params?.callId ?? null);
  const accepts = ids("accept"), unholds = ids("unhold"), hangups = ids("hangUp");
  t.check("two answers, each naming its call", accepts.length === 2 && accepts[0] && accepts[1] && accepts[0] !== accepts[1], JSON.stringify(accepts));
  t.check("the switch and the resume named the call", unholds.length === 2 && unholds[0] === accepts[0] && unholds[1] === accepts[1], JSON.stringify(unholds));
  t.check("each hang-up named its call", hangups.length === 2 && hangups[0] === accepts[0] && hangups[1] === accepts[1], JSON.stringify(hangups));
  t.emit("done", { accepts, unholds, hangups });
  t.checkClean(rec);
});
