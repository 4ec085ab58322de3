// Outgoing call, like a person: keyboard and paste into the number field, dial on the
// keypad, Call; see it ring, then in call with the timer running; send DTMF by clicking
// keys; hang up.
//
// env: SIPLINE_URL, CALLEE (a far end that rings until the harness answers it),
//      DTMF (digits to send, default "12#"), REQUIRE_DTMF=1 (the gateway must accept them)
// stdout: "@registered USER"; "@ringing" → the harness makes the far end answer;
//         "@dtmf {digits, accepted, errors}";
//         "@hold {accepted}"; "@hungup {media, heard}" (the audio leg's state, the far end's RMS level)
import * as t from "./lib.mjs";

const CALLEE = process.env.CALLEE ?? "1001";
const DTMF = process.env.DTMF ?? "12#";

async function waitResponse(rec, req, ms = 5000) {
  const t0 = Date.now();
  while (Date.now() - t0 < ms) {
    const r = t.responseTo(rec, req);
    if (r) return r;
    await new Promise((res) => setTimeout(res, 50));
  }
  return null;
}

t.scenario("outgoing", async (ctx) => {
  const browser = await t.launch(ctx);
  const rec = await t.open(browser, t.SIPLINE_URL, {
    permissions: ["clipboard-read", "clipboard-write"],
    init: t.countGetUserMedia,
  });
  const { page } = rec;

  await t.expectText(page, "connecting, then registered", "#conn-text", /^Registered as \d+$/);
  const user = (await page.locator("#conn-text").textContent())?.replace(/\D/g, "") ?? "";
  t.emit("registered", user);
  await t.expectControls(page, "idle with no number: nothing to call", {
    "#call": "disabled", "#hangup": "hidden", "#answer": "hidden", "#hold": "disabled", "#backspace": "disabled",
  });
  await t.expectText(page, "idle: the microphone stays closed", "#mic-text", /^Microphone off until a call$/);
  t.check("idle: the microphone was not even asked for", await page.evaluate(() => window.gumCalls) === 0);

  // keyboard: type, Backspace; paste a formatted number; Escape does nothing when idle
  const number = page.locator("#number");
  await number.click();
  await page.keyboard.type("99");
  t.check("typed digits", (await number.inputValue()) === "99", await number.inputValue());
  await page.keyboard.press("Backspace");
  await page.keyboard.press("Backspace");
  t.check("Backspace deletes", (await number.inputValue()) === "", await number.inputValue());
  await page.evaluate(() => navigator.clipboard.writeText("tel:+1 (555) 010-FLOW"));
  await page.keyboard.press("Control+V");
  t.check("paste keeps what can be dialled", (await number.inputValue()) === "+15550103569", await number.inputValue());
  await page.locator("#backspace").click();
  t.check("the ⌫ button deletes", (await number.inputValue()) === "+1555010356", await number.inputValue());
  await number.fill("");

  // dial on the keypad
  await t.dial(page, CALLEE);
  t.check("numpad dials", (await number.inputValue()) === CALLEE, await number.inputValue());
  await t.expectControls(page, "a number: Call enabled", { "#call": "enabled", "#backspace": "enabled" });

  // keyboard only: the focus order follows the screen
  await number.focus();
  const order = [];
  for (let i = 0; i < 14; i++) {
    await page.keyboard.press("Tab");
    order.push(await page.evaluate(() => {
      const el = /** @type {HTMLElement} */ (document.activeElement);
      return el?.dataset.key ?? el?.id ?? el?.tagName;
    }));
  }
  t.check("focus order: number, delete, keypad, call (Hold and Mute are disabled)",
    order.join(" ") === "backspace 1 2 3 4 5 6 7 8 9 * 0 # call", order.join(" "));

  // a 360 px phone: everything fits, nothing scrolls sideways
  await page.setViewportSize({ width: 360, height: 640 });
  await page.waitForTimeout(200);
  const fit = await page.evaluate(() => {
    const box = (id) => document.getElementById(id).getBoundingClientRect();
    const keys = [...document.querySelectorAll("#keypad button")].map((b) => b.getBoundingClientRect());
    return {
      scrollWidth: document.documentElement.scrollWidth,
      call: box("call").bottom,
      keys: keys.every((k) => k.left >= 0 && k.right <= 360 && k.width >= 48),
    };
  });
  t.check("360x640: no sideways scrolling, keys at least 48 px, Call on screen",
    fit.scrollWidth <= 360 && fit.keys && fit.call <= 640, JSON.stringify(fit));
  await page.setViewportSize({ width: 1280, height: 800 });
  await t.screenshot(page, "idle");

  await page.locator("#call").click();
  await t.expectText(page, "the far end rings", "#call-state", /^Ringing…$/);
  await t.expectText(page, "calling: the microphone opens", "#mic-text", /^Microphone on$/);
  await t.expectControls(page, "ringing: Hang up, no Call, no Hold yet", {
    "#call": "hidden", "#hangup": "enabled", "#hold": "disabled", "#backspace": "disabled",
  });
  t.check("number field shows the callee", (await number.inputValue()) === CALLEE);
  await t.screenshot(page, "calling");
  t.emit("ringing");

  await t.expectText(page, "answered: in call", "#call-state", /^In call$/, 15000);
  const secs = (s) => Number(s.slice(0, 2)) * 60 + Number(s.slice(3));
  const first = await t.text(page, "#sub", /^\d\d:\d\d$/);
  let later = first;
  for (let i = 0; i < 60 && secs(later) < secs(first) + 2; i++) {
    await page.waitForTimeout(100);
    later = await t.text(page, "#sub", /^\d\d:\d\d$/);
  }
  t.check("the timer runs", secs(later) >= secs(first) + 2, `${first} → ${later}`);
  await t.expectControls(page, "in call: Hang up and Hold", { "#hangup": "enabled", "#hold": "enabled", "#call": "hidden" });

  // DTMF by clicking keys
  for (const d of DTMF) {
    await page.locator(`#keypad button[data-key="${d}"]`).click();
    await page.waitForTimeout(250);
  }
  await t.expectText(page, "the page shows the digits sent", "#dtmf-sent", new RegExp(`^${DTMF.replace(/[*#]/g, "\\$&")}$`));
  t.check("number field unchanged by DTMF", (await number.inputValue()) === CALLEE, await number.inputValue());
  // the requests the page made, and what sipline answered
  await page.waitForTimeout(300);
  const sent = t.requests(rec, "dtmf");
  t.check("one dtmf request per key", sent.map((r) => r.params?.digits).join("") === DTMF, JSON.stringify(sent.map((r) => r.params)));
  const answers = sent.map((r) => t.responseTo(rec, r));
  t.check("every dtmf request was answered", answers.every(Boolean), JSON.stringify(answers));
  const accepted = answers.every((a) => a && "result" in a);
  const errors = answers.filter((a) => a?.error).map((a) => a.error);
  t.emit("dtmf", { digits: DTMF, accepted, errors });
  if (process.env.REQUIRE_DTMF === "1") t.check("the gateway accepted the DTMF", accepted, JSON.stringify(errors));
  if (!accepted) {
    const marked = await page.locator("#dtmf-sent .failed").count();
    t.check("digits not delivered are marked so", marked === DTMF.length, `${marked} marked`);
  }
  if (process.env.SCREENSHOTS) {
    // callStats (every 5 s) light up the quality indicator, when the gateway sends them
    await page.locator("#quality").waitFor({ state: "visible", timeout: 7000 }).catch(() => {});
  }
  await page.waitForTimeout(400);
  await t.screenshot(page, "in-call");

  // the far end's audio, as the page plays it (meaningful once the gateway has audio)
  const heard = await t.remoteLevel(page);
  t.log("far end audio in the page: RMS", heard);

  // Hold and Resume: what the page shows follows what sipline answered
  await page.locator("#hold").click();
  await page.waitForTimeout(300);
  const [holdReq] = t.requests(rec, "hold");
  const held = holdReq && (await waitResponse(rec, holdReq));
  if (held && "result" in held) {
    await t.expectText(page, "Hold: on hold", "#call-state", /^On hold$/);
    await t.expectControls(page, "Hold pressed", { "#hold": "enabled" });
    t.check("the Hold button says Resume", (await page.locator("#hold-cap").textContent()) === "Resume");
    await page.locator("#hold").click();
    await t.expectText(page, "Resume: in call again", "#call-state", /^In call$/);
    t.check("one unhold request", t.requests(rec, "unhold").length === 1);
  } else {
    await t.expectText(page, "Hold refused: the page says why", "#notice-title", /^Could not put the call on hold$/);
    await t.expectText(page, "Hold refused: still in call", "#call-state", /^In call$/);
  }
  t.emit("hold", { accepted: !!held && "result" in held });

  await page.locator("#hangup").click();
  await t.expectText(page, "hung up: call ended", "#call-state", /^Call ended$/);
  await t.expectText(page, "hung up: the microphone closes", "#mic-text", /^Microphone off until a call$/);
  t.emit("hungup", { media: await page.locator("#phone").getAttribute("data-media"), heard });
  const hangups = t.requests(rec, "hangUp");
  t.check("one hangUp request", hangups.length === 1, JSON.stringify(hangups));
  await t.expectControls(page, "after the call: Call again", { "#call": "enabled", "#hangup": "hidden" });
  t.check("the number stays for a redial", (await number.inputValue()) === CALLEE);
  await t.expectText(page, "back to idle", "#call-state", /^\s*$/, 6000);
  t.checkClean(rec);
});
