// The audio path is cut mid-call while the WebSocket lives (a network change: every UDP
// packet between the page and the gateway's WebRTC port dropped by nft for 12 s): the
// page restarts ICE over the WebSocket, and once the path is back the echo is heard again;
// the call and its far end never notice beyond the silence.
//
// env: SIPLINE_URL, CALLEE (an echoing far end), RTP_RANGE (the gateway's media ports,
//      "A-B"), FAR_MEDIA (the far end's media ports, "p1,p2,...": never cut), CUT_MS
//      (how long, default 12000)
// stdout: "@registered USER"; "@restored {backMs, level, offers}"
import * as t from "./lib.mjs";

const CALLEE = process.env.CALLEE ?? "1001";
const RANGE = process.env.RTP_RANGE ?? "";
const FAR = process.env.FAR_MEDIA ?? "";

t.scenario("netchange", async (ctx) => {
  if (!RANGE || !FAR) throw new Error("RTP_RANGE and FAR_MEDIA must be set");
  const cut = t.nftTable("siplinenet");
  const rec = await t.callFromPage(ctx, CALLEE);
  const { page } = rec;
  const before = await t.remoteLevel(page, 1500);
  t.check("the echo is heard before the cut", (before ?? 0) > 0.01, String(before));
  const offersBefore = t.requests(rec, "offer").length;

  // both directions between the page and the gateway's media ports; the far end's RTP stays
  const far = `{ ${FAR} }`;
  cut.add("udp", "dport", RANGE, "udp", "sport", "!=", far, "drop");
  cut.add("udp", "sport", RANGE, "udp", "dport", "!=", far, "drop");
  t.log("audio path cut");
  await page.waitForTimeout(3000);
  const during = (await t.remoteLevel(page, 1000)) ?? 0;
  t.check("silence while the path is cut", during < 0.01, String(during));
  // long enough for the browser to call the path disconnected and restart ICE
  await page.waitForTimeout(Number(process.env.CUT_MS ?? "12000") - 4000);
  t.check("the WebSocket lived through it", /^Registered as \d+$/.test((await page.locator("#conn-text").textContent()) ?? ""));

  cut.remove();
  const t0 = Date.now();
  let level = 0;
  while (Date.now() - t0 < 10000 && level <= 0.01) level = (await t.remoteLevel(page, 500)) ?? 0;
  const backMs = Date.now() - t0;
  t.check("the echo is heard again after the path returns", level > 0.01, `${level} after ${backMs} ms`);
  const offers = t.requests(rec, "offer").length - offersBefore;
  t.check("the page restarted ICE over the WebSocket", offers >= 1, `${offers} offers`);
  await t.expectText(page, "still in call", "#call-state", /^In call$/, 1000);
  t.emit("restored", { backMs, level, offers });

  await t.command("hangup");
  await page.locator("#hangup").click();
  await t.expectText(page, "hung up: call ended", "#call-state", /^Call ended$/);
  t.checkClean(rec);
});
