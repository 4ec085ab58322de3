// A blind transfer from the page: in a call, "Transfer…", the number on the keypad,
// "Transfer the call to N"; the page follows the far end's reports (transferring, the
// target ringing) and ends with "Call transferred".
//
// env: SIPLINE_URL, CALLEE (a far end that takes transfers: lab/sipp/uas_transfer.xml),
//      TARGET (where to transfer the call, default 1002)
// stdout: "@registered USER"; "@transferred {states}"
import * as t from "./lib.mjs";

const CALLEE = process.env.CALLEE ?? "1001";
const TARGET = process.env.TARGET ?? "1002";

t.scenario("transfer", async (ctx) => {
  const rec = await t.callFromPage(ctx, CALLEE);
  const { page } = rec;
  // every text the call state shows from here on
  await page.evaluate(() => {
    const el = document.getElementById("call-state");
    window.callStates = [el.textContent];
    new MutationObserver(() => window.callStates.push(el.textContent)).observe(el, { childList: true, characterData: true, subtree: true });
  });
  await page.getByRole("button", { name: "Transfer…" }).click();
  await t.expectText(page, "transfer mode", "#call-state", /^Transfer to…$/);
  await t.expectControls(page, "hang up makes way for the transfer button", { "#hangup": "hidden", "#call": "disabled" });
  await t.dial(page, TARGET);
  await page.getByRole("button", { name: `Transfer the call to ${TARGET}` }).click();
  await t.expectText(page, "the call was transferred", "#call-state", /^Call transferred$/, 15000);
  const states = await page.evaluate(() => window.callStates);
  t.check("the page followed the transfer", states.includes(`Transferring to ${TARGET}…`) && states.includes(`${TARGET} is ringing…`), JSON.stringify(states));
  const after = states.slice(states.indexOf("Transfer to…"));
  t.check("and never fell back to In call on the way", !after.includes("In call"), JSON.stringify(after));
  const asked = t.requests(rec, "transfer");
  t.check("one transfer request, to the number dialled", asked.length === 1 && asked[0].params?.number === TARGET, JSON.stringify(asked));
  t.emit("transferred", { states });
  t.checkClean(rec);
});
