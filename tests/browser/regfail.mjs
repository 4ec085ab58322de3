// The PBX refuses the line: the page says "Registration failed (CODE)", explains, and
// offers no call.
//
// env: SIPLINE_URL (a sipline whose account has a wrong password)
import * as t from "./lib.mjs";

t.scenario("regfail", async (ctx) => {
  const browser = await t.launch(ctx);
  const rec = await t.open(browser);
  const { page } = rec;
  await t.expectText(page, "the status says so, with the SIP code", "#conn-text", /^Registration failed \(\d{3}\)$/);
  await t.expectText(page, "the explanation", "#notice-title", /^Registration failed \(\d{3}\)$/);
  await t.expectText(page, "sipline retries", "#notice-text", /sipline keeps retrying\.$/);
  await t.dial(page, "1001");
  await t.expectControls(page, "no call without a line", { "#call": "disabled" });
  t.checkClean(rec);
});
