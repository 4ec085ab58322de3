// Shared pieces of the webphone scenarios: a loopback-only Chromium, the page, checks,
// screenshots, and the line protocol with the Rust test that runs these scripts
// (crates/gateway/tests/webphone.rs).
//
// Environment:
//   SIPLINE_URL    the sipline under test, e.g. http://127.0.0.1:18060/ (required)
//   SCREENSHOTS   a directory: take the README screenshots there (1280x800 and 390x844)
//   COLOR_SCHEME  dark (default) or light, for the page and its screenshots
//   CHROMIUM      the browser binary (default /usr/bin/chromium)
//   SLOWMO        ms between Playwright actions, to watch a run
//
// Protocol with the harness: lines "@event data" on stdout; commands as lines on stdin.

import { chromium } from "playwright-core";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import readline from "node:readline";
import { execFileSync } from "node:child_process";

export const SIPLINE_URL = process.env.SIPLINE_URL ?? "";
const T0 = Date.now();
/** When the scenario started (ms since the epoch). */
export const STARTED_AT = T0;
const since = () => ((Date.now() - T0) / 1000).toFixed(2).padStart(6);
export const log = (...a) => console.log(since(), ...a);

/**
 * The network interfaces that are up besides loopback, in this process's network namespace
 * (`ip link show up`; /sys/class/net would show the namespace sysfs was mounted in).
 * Chromium may only run when there are none: then nothing it does can leave the machine.
 */
export function loopbackOnly() {
  const up = new Set();
  try {
    const out = execFileSync("ip", ["-o", "link", "show", "up"], { encoding: "utf8" });
    for (const line of out.split("\n")) {
      const m = /^\d+:\s+([^:@\s]+)/.exec(line);
      if (m && m[1] !== "lo") up.add(m[1]);
    }
  } catch {
    // no iproute2: interfaces that are up and have an address
    for (const name of Object.keys(os.networkInterfaces())) if (name !== "lo") up.add(name);
  }
  return [...up];
}

// ---- checks -------------------------------------------------------------------------------

let passed = 0, failed = 0;
export function check(name, ok, detail = "") {
  if (ok) passed++; else failed++;
  log(`${ok ? "PASS" : "FAIL"} ${name}${detail ? `: ${detail}` : ""}`);
  return ok;
}

/** Runs a scenario: prints the summary and exits 0 only when every check passed. */
export async function scenario(name, body) {
  if (!SIPLINE_URL) {
    console.error("SIPLINE_URL is not set");
    process.exit(2);
  }
  const up = loopbackOnly();
  if (up.length) {
    console.error(`refusing to launch Chromium: network interfaces up besides lo (${up.join(", ")}).\n` +
      "Run inside a loopback-only namespace: unshare -n sh -c 'ip link set lo up && node ...'");
    process.exit(2);
  }
  const ctx = { browsers: [] };
  const stop = async (code) => {
    for (const b of ctx.browsers) await b.close().catch(() => {});
    log(`${name}: ${passed} passed, ${failed} failed`);
    console.log(`${passed} passed, ${failed} failed`);
    process.exit(code);
  };
  process.on("SIGTERM", () => { failed++; log("FAIL terminated"); stop(1); });
  try {
    await body(ctx);
  } catch (e) {
    failed++;
    log("FAIL", e?.stack ?? e);
  }
  await stop(failed || !passed ? 1 : 0);
}

// ---- the harness ------------------------------------------------------------------------------

/** Tells the harness something: a line "@event data". */
export function emit(event, data = "") {
  console.log(`@${event} ${typeof data === "string" ? data : JSON.stringify(data)}`);
}

const stdinLines = [];
const stdinWaiters = [];
readline.createInterface({ input: process.stdin }).on("line", (line) => {
  const w = stdinWaiters.shift();
  if (w) w(line.trim()); else stdinLines.push(line.trim());
});

/** Waits for the harness to write `command` on stdin. */
export async function command(expected, ms = 30000) {
  const line = stdinLines.length ? stdinLines.shift() : await within(ms, `harness command ${expected}`,
    new Promise((resolve) => stdinWaiters.push(resolve)));
  if (line !== expected) throw new Error(`harness said ${JSON.stringify(line)}, expected ${expected}`);
}

// ---- the browser -------------------------------------------------------------------------------

/** A fake microphone: a voice-like 220 Hz tone with a syllable rhythm, 48 kHz mono s16. */
function fakeMicWav() {
  const file = path.join(os.tmpdir(), `sipline-fake-mic-${process.pid}.wav`);
  const rate = 48000, secs = 4, n = rate * secs;
  const data = Buffer.alloc(44 + n * 2);
  data.write("RIFF", 0); data.writeUInt32LE(36 + n * 2, 4); data.write("WAVE", 8);
  data.write("fmt ", 12); data.writeUInt32LE(16, 16); data.writeUInt16LE(1, 20); data.writeUInt16LE(1, 22);
  data.writeUInt32LE(rate, 24); data.writeUInt32LE(rate * 2, 28); data.writeUInt16LE(2, 32); data.writeUInt16LE(16, 34);
  data.write("data", 36); data.writeUInt32LE(n * 2, 40);
  for (let i = 0; i < n; i++) {
    const t = i / rate;
    const env = 0.25 + 0.2 * Math.sin(2 * Math.PI * 1.5 * t);
    const v = env * (Math.sin(2 * Math.PI * 220 * t) + 0.3 * Math.sin(2 * Math.PI * 660 * t));
    data.writeInt16LE(Math.max(-32767, Math.min(32767, Math.round(v * 32767 * 0.8))), 44 + i * 2);
  }
  fs.writeFileSync(file, data);
  process.on("exit", () => fs.rmSync(file, { force: true }));
  return file;
}

const micAllowedIn = new WeakMap();

/**
 * Launches Debian's Chromium with the flags of shared/notes/browser-webrtc.md.
 * @param {{micAllowed?: boolean, fakeDevices?: boolean}} opts
 *   micAllowed: grant the microphone (--use-fake-ui-for-media-stream); fakeDevices: a fake mic
 */
export async function launch(ctx, { micAllowed = true, fakeDevices = true } = {}) {
  const args = [
    "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--allow-loopback-in-peer-connection",
    "--autoplay-policy=no-user-gesture-required",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
  ];
  if (micAllowed) args.push("--use-fake-ui-for-media-stream");
  if (fakeDevices) args.push("--use-fake-device-for-media-stream", `--use-file-for-fake-audio-capture=${fakeMicWav()}`);
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true, args, timeout: 30000, slowMo: Number(process.env.SLOWMO || 0),
  });
  ctx.browsers.push(browser);
  micAllowedIn.set(browser, micAllowed);
  log("chromium", browser.version());
  return browser;
}

/**
 * Opens a page at `url` (default: the phone) and records what a test wants to know
 * about it: console, page errors, CSP violations, every WebSocket frame.
 * `init`: a script run in the page before its own; `setup(context)`: e.g. routes.
 */
export async function open(browser, url = SIPLINE_URL, { permissions = [], init = null, setup = null } = {}) {
  // Permissions given to a context are the only ones it has (CDP grants them and rejects
  // all others): without "microphone" here Chromium gathers no ICE candidate at all.
  const granted = [...(micAllowedIn.get(browser) ? ["microphone"] : []), ...permissions];
  const context = await browser.newContext({
    viewport: { width: 1280, height: 800 },
    deviceScaleFactor: 2,
    colorScheme: process.env.COLOR_SCHEME === "light" ? "light" : "dark",
    ...(granted.length ? { permissions: granted } : {}),
  });
  if (init) await context.addInitScript(init);
  if (setup) await setup(context);
  const page = await context.newPage();
  page.setDefaultTimeout(10000);
  const rec = { errors: [], csp: [], sent: [], received: [], sockets: 0, page, context };
  page.on("console", (m) => {
    const text = m.text();
    if (/Content Security Policy/i.test(text)) rec.csp.push(text);
    log(`  [page ${m.type()}] ${text}`);
  });
  page.on("pageerror", (e) => { rec.errors.push(e.message); log("  [pageerror]", e.message); });
  page.on("requestfailed", (r) => log("  [requestfailed]", r.url(), r.failure()?.errorText));
  page.on("websocket", (ws) => {
    rec.sockets++;
    log("  [ws] open", ws.url());
    ws.on("framesent", (f) => { rec.sent.push(parse(f.payload)); });
    ws.on("framereceived", (f) => {
      const m = parse(f.payload);
      rec.received.push(m);
      if (m?.method) log(`  [ws <-] ${m.method} ${JSON.stringify(m.params ?? {})}`);
    });
    ws.on("close", () => log("  [ws] closed"));
  });
  await page.goto(url);
  return rec;
}

function parse(payload) {
  try { return JSON.parse(String(payload)); } catch { return { raw: String(payload) }; }
}

/** The response sipline gave to the request `req` (a frame the page sent), if any yet. */
export function responseTo(rec, req) {
  return rec.received.find((m) => m && m.id === req.id && !m.method);
}

/** Requests the page sent with this method. */
export function requests(rec, method) {
  return rec.sent.filter((m) => m?.method === method);
}

/**
 * The ICE credentials, UDP ports and DTLS fingerprint of the page's latest offer (and
 * the candidates it trickled after it): {ufrag, ports, fingerprint}.
 */
export function offeredIce(rec) {
  const i = rec.sent.findLastIndex((m) => m?.method === "offer");
  if (i < 0) return { ufrag: null, ports: [], fingerprint: null };
  const sdp = rec.sent[i].params?.sdp ?? "";
  const lines = [...sdp.split(/\r?\n/), ...rec.sent.slice(i + 1).filter((m) => m?.method === "candidate").map((m) => `a=${m.params?.candidate ?? ""}`)];
  const ports = new Set();
  for (const l of lines) {
    const c = /^a=candidate:\S+ \d+ udp \d+ \S+ (\d+) typ/i.exec(l);
    if (c) ports.add(Number(c[1]));
  }
  const ufrag = /^a=ice-ufrag:(\S+)/m.exec(sdp)?.[1] ?? null;
  const fingerprint = /^a=fingerprint:(.+)$/m.exec(sdp)?.[1]?.trim() ?? null;
  return { ufrag, ports: [...ports], fingerprint };
}

/** No page errors, no CSP violations. */
export function checkClean(rec) {
  check("no page errors", rec.errors.length === 0, rec.errors.join("; "));
  check("no CSP violations", rec.csp.length === 0, rec.csp.join("; "));
}

/**
 * The RMS level (0..1) of what the page's `<audio id="remote-audio">` plays (the far
 * end through the gateway), over `ms`; null when it has nothing.
 */
export function remoteLevel(page, ms = 1000) {
  return page.evaluate(async (ms) => {
    const el = /** @type {HTMLAudioElement | null} */ (document.getElementById("remote-audio"));
    const stream = /** @type {MediaStream | null} */ (el?.srcObject ?? null);
    if (!stream || !stream.getAudioTracks().length) return null;
    const ctx = new AudioContext();
    const an = ctx.createAnalyser();
    an.fftSize = 2048;
    ctx.createMediaStreamSource(stream).connect(an);
    const buf = new Float32Array(an.fftSize);
    let peak = 0;
    for (let t = 0; t < ms; t += 100) {
      await new Promise((r) => setTimeout(r, 100));
      an.getFloatTimeDomainData(buf);
      peak = Math.max(peak, Math.sqrt(buf.reduce((s, v) => s + v * v, 0) / buf.length));
    }
    await ctx.close();
    return peak;
  }, ms);
}

// ---- waiting ------------------------------------------------------------------------------------

export function within(ms, what, promise) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`${what}: timed out after ${ms} ms`)), ms); }),
  ]).finally(() => clearTimeout(timer));
}

/** Waits until the text of `selector` matches `re`; returns it. */
export async function text(page, selector, re, ms = 10000) {
  const t0 = Date.now();
  let last = "";
  while (Date.now() - t0 < ms) {
    last = ((await page.locator(selector).first().textContent().catch(() => "")) ?? "").trim();
    if (re.test(last)) return last;
    await page.waitForTimeout(50);
  }
  throw new Error(`${selector}: expected ${re}, still ${JSON.stringify(last)} after ${ms} ms`);
}

/** Checks that the text of `selector` comes to match `re`. */
export async function expectText(page, name, selector, re, ms = 10000) {
  try {
    const t = await text(page, selector, re, ms);
    return check(name, true, JSON.stringify(t));
  } catch (e) {
    return check(name, false, e.message);
  }
}

/** Whether a control is there and usable: "enabled", "disabled" or "hidden". */
export async function control(page, selector) {
  const loc = page.locator(selector);
  if (!(await loc.isVisible())) return "hidden";
  return (await loc.isEnabled()) ? "enabled" : "disabled";
}

export async function expectControls(page, name, want) {
  const got = {};
  for (const sel of Object.keys(want)) got[sel] = await control(page, sel);
  const ok = Object.keys(want).every((k) => got[k] === want[k]);
  return check(name, ok, JSON.stringify(got));
}

/** Clicks keypad keys one by one, like a person. */
export async function dial(page, digits) {
  for (const d of digits) {
    await page.locator(`#keypad button[data-key="${d}"]`).click();
    await page.waitForTimeout(120);
  }
}

/**
 * The page registers, dials `callee` on the keypad and is answered ("@registered USER"
 * is told to the harness on the way). Returns the recorded page.
 */
export async function callFromPage(ctx, callee) {
  const browser = await launch(ctx);
  const rec = await open(browser, SIPLINE_URL);
  const { page } = rec;
  await expectText(page, "registered", "#conn-text", /^Registered as \d+$/);
  emit("registered", (await page.locator("#conn-text").textContent())?.replace(/\D/g, "") ?? "");
  await dial(page, callee);
  await page.locator("#call").click();
  await expectText(page, "answered: in call", "#call-state", /^In call$/, 15000);
  return rec;
}

/**
 * An nft table of this network namespace with an input chain: `add(...rule)` adds a
 * rule, `remove()` deletes the table (also when the scenario exits).
 */
export function nftTable(name) {
  const nft = (...args) => execFileSync("nft", args, { encoding: "utf8", stdio: "pipe" });
  let made = false;
  const remove = () => {
    if (!made) return;
    made = false;
    try { nft("delete", "table", "inet", name); } catch { /* not there */ }
  };
  process.on("exit", remove);
  return {
    add(...rule) {
      if (!made) {
        nft("add", "table", "inet", name);
        nft("add", "chain", "inet", name, "in", "{ type filter hook input priority 0 ; }");
        made = true;
      }
      nft("add", "rule", "inet", name, "in", ...rule);
    },
    remove,
  };
}

/** A page init script: counts the page's getUserMedia calls (window.gumCalls). */
export function countGetUserMedia() {
  const md = navigator.mediaDevices;
  const real = md.getUserMedia.bind(md);
  window.gumCalls = 0;
  md.getUserMedia = (c) => { window.gumCalls++; return real(c); };
}

// ---- screenshots ---------------------------------------------------------------------------------

export const SIZES = [
  { suffix: "desktop", width: 1280, height: 800, scale: "css" },
  { suffix: "mobile", width: 390, height: 844, scale: "device" },
];

/** With SCREENSHOTS=dir: `name`-desktop.png (1280x800) and `name`-mobile.png (390x844 at 2x). */
export async function screenshot(page, name) {
  const dir = process.env.SCREENSHOTS;
  if (!dir) return;
  fs.mkdirSync(dir, { recursive: true });
  await page.mouse.move(1, 1); // no hover highlight
  await page.evaluate(() => /** @type {HTMLElement} */ (document.activeElement)?.blur?.()); // no focus ring
  for (const s of SIZES) {
    await page.setViewportSize({ width: s.width, height: s.height });
    await page.waitForTimeout(250);
    const file = path.join(dir, `${name}-${s.suffix}.png`);
    await page.screenshot({ path: file, scale: s.scale, animations: "disabled", caret: "hide" });
    log("screenshot", file);
  }
  await page.setViewportSize({ width: 1280, height: 800 });
}
