// Hold that the far end refuses: the page asks, sipline answers only once the far end
// has, and the page never shows "On hold" for a hold that did not happen.
//
// env: SIPLINE_URL, CALLEE (a far end that answers at once and refuses re-INVITEs)
// stdout: "@registered USER"; "@refused {error}" (sipline's answer to hold)
import * as t from "./lib.mjs";

const CALLEE = process.env.CALLEE ?? "1001";

t.scenario("hold", async (ctx) => {
  const rec = await t.callFromPage(ctx, CALLEE);
  const { page } = rec;
  await t.expectControls(page, "in call: Hold enabled", { "#hold": "enabled" });

  // watch the state line from now on: it must never say "On hold"
  await page.evaluate(() => {
    window.statesSeen = [];
    const el = document.getElementById("call-state");
    new MutationObserver(() => window.statesSeen.push(el.textContent)).observe(el, {
      childList: true, characterData: true, subtree: true,
    });
  });
  await page.locator("#hold").click();
  await t.expectText(page, "refused: the page says why", "#notice-title", /^Could not put the call on hold$/);
  const [holdReq] = t.requests(rec, "hold");
  const answer = holdReq && t.responseTo(rec, holdReq);
  t.check("sipline answered hold with the far end's refusal",
    !!answer?.error && /refused the change \(488\)/.test(answer.error.message), JSON.stringify(answer));
  t.check("the page never showed On hold",
    !(await page.evaluate(() => window.statesSeen)).includes("On hold"),
    JSON.stringify(await page.evaluate(() => window.statesSeen)));
  await t.expectText(page, "still in call", "#call-state", /^In call$/);
  t.check("the Hold button is not pressed", (await page.locator("#hold").getAttribute("aria-pressed")) === "false");
  t.check("the Hold button still says Hold", (await page.locator("#hold-cap").textContent()) === "Hold");
  t.emit("refused", answer?.error ?? null);

  await page.locator("#hangup").click();
  await t.expectText(page, "hung up: call ended", "#call-state", /^Call ended$/);
  t.checkClean(rec);
});
