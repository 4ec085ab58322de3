// The page's audio path dies mid-call while the WebSocket lives (a network change: nft
// drops every packet to or from the page's ICE port, and keeps dropping them): the page
// sees its ICE checks go unanswered, restarts ICE over the WebSocket (new credentials,
// new ports), and the far end is heard again within BACK_WITHIN_MS of the cut, over the
// new path; the call and its far end never notice beyond the silence.
//
// env: SIPLINE_URL, CALLEE (a far end playing a tone), BACK_WITHIN_MS (default 10000)
// stdout: "@registered USER"; "@back {ms}" when the far end is heard again;
//         "@restored {backMs, level, offers, oldPort, newPorts}" 3 s later
import * as t from "./lib.mjs";

const CALLEE = process.env.CALLEE ?? "1001";
const BACK_WITHIN_MS = Number(process.env.BACK_WITHIN_MS ?? "10000");

t.scenario("netchange", async (ctx) => {
  const cut = t.nftTable("siplinenet");
  const rec = await t.callFromPage(ctx, CALLEE);
  const { page } = rec;
  const before = await t.remoteLevel(page, 1500);
  t.check("the far end is heard before the cut", (before ?? 0) > 0.01, String(before));
  const offersBefore = t.requests(rec, "offer").length;
  const old = t.offeredIce(rec);
  t.check("the page offered one ICE port", old.ports.length === 1, JSON.stringify(old));
  const oldPort = old.ports[0];

  // the old path is gone for good: only a new one (an ICE restart) can bring the audio back
  cut.add("udp", "sport", String(oldPort), "drop");
  cut.add("udp", "dport", String(oldPort), "drop");
  const t0 = Date.now();
  t.log(`audio path cut (page port ${oldPort})`);
  await page.waitForTimeout(1500);
  const during = (await t.remoteLevel(page, 1000)) ?? 0;
  t.check("silence once the path is cut", during < 0.01, String(during));

  let level = 0;
  while (Date.now() - t0 < BACK_WITHIN_MS && level <= 0.01) level = (await t.remoteLevel(page, 300)) ?? 0;
  const backMs = Date.now() - t0;
  t.check(`the far end is heard again within ${BACK_WITHIN_MS} ms of the cut`, level > 0.01, `${level} after ${backMs} ms`);
  t.emit("back", String(backMs));
  const offers = t.requests(rec, "offer").length - offersBefore;
  const now = t.offeredIce(rec);
  t.check("the page restarted ICE over the WebSocket", offers >= 1 && now.ufrag !== old.ufrag, `${offers} offers, ufrag ${old.ufrag} → ${now.ufrag}`);
  t.check("on another port", !now.ports.includes(oldPort), JSON.stringify(now.ports));
  t.check("the WebSocket lived through it", /^Registered as \d+$/.test((await page.locator("#conn-text").textContent()) ?? ""));
  await page.waitForTimeout(3000);
  const still = (await t.remoteLevel(page, 500)) ?? 0;
  t.check("and stays heard", still > 0.01, String(still));
  await t.expectText(page, "still in call", "#call-state", /^In call$/, 1000);
  t.emit("restored", { backMs, level, offers, oldPort, newPorts: now.ports });

  await t.command("hangup");
  await page.locator("#hangup").click();
  await t.expectText(page, "hung up: call ended", "#call-state", /^Call ended$/);
  t.checkClean(rec);
});
