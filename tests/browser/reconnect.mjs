// A WebSocket cut mid-call (every packet to the gateway's HTTP port answered with a TCP
// reset, as a dead NAT or a network change does): the page says "Reconnecting…", goes
// back to its session with the resume token once the port answers again, and the call
// goes on: the far end (an RTP echo) never hangs up, the call timer keeps running, and
// the page hears the echo again within 3 s of the reconnect.
//
// env: SIPLINE_URL, HTTP_PORT (the port to cut, with nft), CALLEE (an echoing far end),
//      RESUME_WINDOW (the gateway's http.resume_window: the cut comes later than that)
// stdout: "@registered USER"; "@restored {backMs, level}"
import * as t from "./lib.mjs";

const CALLEE = process.env.CALLEE ?? "1001";
const PORT = process.env.HTTP_PORT ?? "";

t.scenario("reconnect", async (ctx) => {
  if (!PORT) throw new Error("HTTP_PORT is not set");
  const cut = t.nftTable("siplinecut");
  const rec = await t.callFromPage(ctx, CALLEE);
  const { page } = rec;
  const before = await t.remoteLevel(page, 1500);
  t.check("the echo is heard before the cut", (before ?? 0) > 0.01, String(before));
  // a session older than its resume window (the window counts from the drop)
  const windowS = Number(process.env.RESUME_WINDOW ?? "0");
  const old = Date.now() - t.STARTED_AT;
  if (old < (windowS + 3) * 1000) await page.waitForTimeout((windowS + 3) * 1000 - old);

  cut.add("tcp", "dport", PORT, "reject", "with", "tcp", "reset");
  t.log("HTTP port cut");
  await t.expectText(page, "the page says Reconnecting…", "#conn-text", /^Reconnecting…$/, 15000);
  const timer0 = await page.locator("[role=timer]").textContent();
  await page.waitForTimeout(2500);
  await t.expectText(page, "still in call while away", "#call-state", /^In call$/, 1000);
  const timer1 = await page.locator("[role=timer]").textContent();
  t.check("the call timer keeps running", timer0 !== timer1, `${timer0} → ${timer1}`);

  cut.remove();
  const t0 = Date.now();
  await t.expectText(page, "back: registered again", "#conn-text", /^Registered as \d+$/, 10000);
  const backMs = Date.now() - t0;
  // audio again (both ways: the far end echoes the page's microphone) within 3 s
  let level = 0;
  while (Date.now() - t0 < backMs + 3000 && level <= 0.01) level = (await t.remoteLevel(page, 500)) ?? 0;
  t.check("the echo is heard again within 3 s of the reconnect", level > 0.01, String(level));
  await t.expectText(page, "still in call", "#call-state", /^In call$/, 1000);
  t.emit("restored", { backMs, level });

  await t.command("hangup");
  await page.locator("#hangup").click();
  await t.expectText(page, "hung up: call ended", "#call-state", /^Call ended$/);
  t.checkClean(rec);
});
