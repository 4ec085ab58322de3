// Audio through sipline, measured in a real browser: headless Chromium with a fake
// microphone playing a tone, WebRTC to sipline, a call to (or from) a SIP phone, and the
// far end's tone analysed with WebAudio. Driven by crates/gateway/tests/audio.rs.
//
// Environment:
//   SIPLINE_URL   sipline under test (http://127.0.0.1:PORT/)
//   ROLE         caller (dial NUMBER) | callee (wait for a call and answer it)
//   NUMBER       what the caller dials
//   CODEC        restrict the browser to this codec with setCodecPreferences (PCMU, PCMA,
//                G722, opus); empty: the browser's defaults
//   MIC_HZ       frequency of the fake microphone's tone (default 1000)
//   EXPECT_HZ    frequency of the far end's tone (default 440)
//   LISTEN_MS    how long to measure the far end's tone (default 3000)
//   DTMF         digits to send with the `dtmf` request once in call
//   WAIT_DTMF    how many dtmfReceived notifications to wait for (default 0)
//   HOLD         1: hold, check the audio stops, unhold, check it resumes
//   END_WITHIN_MS  how long to wait for the call to end (default 30000); the result's
//                `ended` is its final callStateChanged (with when, after the answer)
//   HANGUP       1 (default): hang up at the end; 0: wait for the far end to
//   EARLY        1: the far end plays early media: measure it while the call is earlyMedia
//   PEAKS        comma-separated frequencies: report how often each one dominates
//   LISTEN_DTMF_MS  after sending DTMF, listen this long for DTMF tones (Goertzel) and
//                report the digits heard
//
// Prints "@result {json}" for the harness, and exits 0 if the scenario ran to the end.

import { chromium } from "playwright-core";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { execFileSync } from "node:child_process";

const env = (k, d = "") => process.env[k] ?? d;
const opts = {
  role: env("ROLE", "caller"),
  number: env("NUMBER"),
  codec: env("CODEC"),
  expectHz: Number(env("EXPECT_HZ", "440")),
  listenMs: Number(env("LISTEN_MS", "3000")),
  dtmf: env("DTMF"),
  waitDtmf: Number(env("WAIT_DTMF", "0")),
  hold: env("HOLD") === "1",
  hangUp: env("HANGUP", "1") === "1",
  early: env("EARLY") === "1",
  peaks: env("PEAKS").split(",").filter(Boolean).map(Number),
  listenDtmfMs: Number(env("LISTEN_DTMF_MS", "0")),
  endWithinMs: Number(env("END_WITHIN_MS", "30000")),
};
const url = env("SIPLINE_URL");
const T0 = Date.now();
const log = (...a) => console.log(((Date.now() - T0) / 1000).toFixed(2).padStart(6), ...a);

function loopbackOnly() {
  const out = execFileSync("ip", ["-o", "link", "show", "up"], { encoding: "utf8" });
  return !out.split("\n").some((l) => /^\d+:\s+([^:@\s]+)/.exec(l)?.[1] && /^\d+:\s+([^:@\s]+)/.exec(l)[1] !== "lo");
}

function toneWav(hz) {
  const file = path.join(os.tmpdir(), `sipline-audio-mic-${process.pid}.wav`);
  const rate = 48000, n = rate * 30;
  const b = Buffer.alloc(44 + n * 2);
  b.write("RIFF", 0); b.writeUInt32LE(36 + n * 2, 4); b.write("WAVE", 8); b.write("fmt ", 12);
  b.writeUInt32LE(16, 16); b.writeUInt16LE(1, 20); b.writeUInt16LE(1, 22); b.writeUInt32LE(rate, 24);
  b.writeUInt32LE(rate * 2, 28); b.writeUInt16LE(2, 32); b.writeUInt16LE(16, 34); b.write("data", 36);
  b.writeUInt32LE(n * 2, 40);
  for (let i = 0; i < n; i++) b.writeInt16LE(Math.round(Math.sin((2 * Math.PI * hz * i) / rate) * 0.5 * 32767), 44 + i * 2);
  fs.writeFileSync(file, b);
  process.on("exit", () => fs.rmSync(file, { force: true }));
  return file;
}

// everything in the page: signalling, WebRTC, WebAudio measurements
async function inPage(o) {
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  const notes = [];
  const pending = new Map();
  let nextId = 1;
  const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/api/v1/ws`);
  ws.onmessage = (e) => {
    const m = JSON.parse(e.data);
    if (m.id != null && pending.has(m.id)) {
      pending.get(m.id)(m);
      pending.delete(m.id);
    } else if (m.method) {
      m.t = performance.now();
      notes.push(m);
    }
  };
  const rpc = (method, params = {}) => new Promise((resolve) => {
    const id = nextId++;
    pending.set(id, resolve);
    ws.send(JSON.stringify({ jsonrpc: "2.0", id, method, params }));
  });
  const waitNote = async (what, pred, ms) => {
    const t0 = performance.now();
    for (;;) {
      const n = notes.find(pred);
      if (n) return n;
      if (performance.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`);
      await sleep(5);
    }
  };
  const callState = (s) => (n) => n.method === "callStateChanged" && n.params.state === s;
  await new Promise((r) => (ws.onopen = r));
  await waitNote("registered", (n) => n.method === "phoneLineStateChanged" && n.params.state === "registered", 10000);

  const mic = await navigator.mediaDevices.getUserMedia({
    audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false },
  });
  const pc = new RTCPeerConnection();
  const tr = pc.addTransceiver(mic.getAudioTracks()[0], { direction: "sendrecv", streams: [mic] });
  if (o.codec) {
    const all = RTCRtpReceiver.getCapabilities("audio").codecs;
    const want = all.filter((c) => c.mimeType.toLowerCase() === `audio/${o.codec.toLowerCase()}`);
    const te = all.filter((c) => c.mimeType.toLowerCase() === "audio/telephone-event");
    tr.setCodecPreferences([...want, ...te]);
  }
  const remote = new Promise((r) => (pc.ontrack = (e) => r(e.streams[0] ?? new MediaStream([e.track]))));
  await pc.setLocalDescription();
  await new Promise((r) => {
    if (pc.iceGatheringState === "complete") return r();
    pc.addEventListener("icegatheringstatechange", () => pc.iceGatheringState === "complete" && r());
    setTimeout(r, 3000);
  });
  const answer = await rpc("offer", { sdp: pc.localDescription.sdp });
  if (!answer.result) throw new Error(`offer refused: ${JSON.stringify(answer.error)}`);
  await pc.setRemoteDescription({ type: "answer", sdp: answer.result.sdp });
  const stream = await remote;
  const el = new Audio();
  el.muted = true; // WebAudio needs the stream attached to a media element (Chromium)
  el.srcObject = stream;
  el.play().catch(() => {});
  const ac = new AudioContext();
  const an = ac.createAnalyser();
  an.fftSize = 2048;
  ac.createMediaStreamSource(stream).connect(an);
  const connected = performance.now();
  while (pc.connectionState !== "connected") {
    if (performance.now() - connected > 10000) throw new Error(`WebRTC not connected: ${pc.connectionState}`);
    await sleep(10);
  }

  // power around `hz` (±4 bins of the Blackman-windowed FFT) against everything else
  an.smoothingTimeConstant = 0;
  const spectrum = new Float32Array(an.frequencyBinCount);
  const binHz = ac.sampleRate / an.fftSize;
  const block = (hz) => {
    an.getFloatFrequencyData(spectrum);
    const centre = Math.round(hz / binHz);
    let tone = 0, rest = 0;
    for (let i = 1; i < spectrum.length; i++) {
      const p = Math.pow(10, spectrum[i] / 10);
      if (Math.abs(i - centre) <= 4) tone += p; else rest += p;
    }
    return { tone, rest: Math.max(rest, 1e-15), total: tone + rest };
  };
  const wave = new Float32Array(an.fftSize);
  const measure = async (ms) => {
    let tone = 0, rest = 0, blocks = 0, power = 0;
    const t0 = performance.now();
    while (performance.now() - t0 < ms) {
      const b = block(o.expectHz);
      tone += b.tone;
      rest += b.rest;
      an.getFloatTimeDomainData(wave);
      power += wave.reduce((a, x) => a + x * x, 0) / wave.length;
      blocks++;
      await sleep((an.fftSize / ac.sampleRate) * 1000);
    }
    return { snrDb: 10 * Math.log10(tone / rest), rms: Math.sqrt(power / Math.max(blocks, 1)), blocks };
  };
  const dominantHz = () => {
    an.getFloatFrequencyData(spectrum);
    let best = 1;
    for (let i = 1; i < spectrum.length; i++) if (spectrum[i] > spectrum[best]) best = i;
    return best * binHz;
  };

  // when the far end's first packet reaches this browser (RTCInboundRtpStreamStats)
  // (a far end that sends only events, like sipp's DTMF captures, sends no audio: stop
  // watching 3 s after the answer so the call's own timing is not held up)
  let firstPacketAt = null;
  let watchUntil = performance.now() + 30000;
  const packetWatch = (async () => {
    while (firstPacketAt === null && performance.now() < watchUntil) {
      (await pc.getStats()).forEach((s) => {
        if (s.type === "inbound-rtp" && s.kind === "audio" && s.packetsReceived > 0 && firstPacketAt === null) {
          firstPacketAt = performance.now();
        }
      });
      await sleep(2);
    }
  })();

  // the call
  let callId;
  let early = null;
  if (o.role === "caller") {
    const r = await rpc("call", { number: o.number });
    if (!r.result) throw new Error(`call refused: ${JSON.stringify(r.error)}`);
    callId = r.result.callId;
    if (o.early) {
      await waitNote("earlyMedia", callState("earlyMedia"), 10000);
      await sleep(300);
      const m = await measure(1500);
      early = { rms: m.rms, stillEarly: !notes.some(callState("inCall")) };
    }
  } else {
    const inc = await waitNote("incomingCall", (n) => n.method === "incomingCall", 20000);
    callId = inc.params.callId;
    await rpc("accept");
  }
  const inCall = await waitNote("inCall", callState("inCall"), 20000);
  watchUntil = Math.min(watchUntil, inCall.t + 3000);
  if (o.early) {
    // the announcement may end before the answer: measure only what the test asks
    o.listenMs = Math.min(o.listenMs, 500);
  }
  // latency: the first packet of the far end's audio at this browser, after the 200 OK
  // (inCall); and, for information, when the tone comes out of the playout buffer
  let firstHeardMs = null;
  while (performance.now() - inCall.t < 3000) {
    const b = block(o.expectHz);
    if (b.tone > 1e-7 && b.tone / b.rest > 3) {
      firstHeardMs = performance.now() - inCall.t;
      break;
    }
    await sleep(2);
  }
  await packetWatch;
  const firstAudioMs = firstPacketAt === null ? null : Math.max(0, firstPacketAt - inCall.t);
  await sleep(300);
  const heard = await measure(o.listenMs);
  const hz = dominantHz();

  // how often each of `o.peaks` carries most of the audio, over LISTEN_MS
  let peaks = null;
  if (o.peaks.length) {
    const counts = o.peaks.map(() => 0);
    let blocks = 0;
    const t0 = performance.now();
    while (performance.now() - t0 < o.listenMs) {
      o.peaks.forEach((hz, i) => {
        const b = block(hz);
        if (b.tone / (b.tone + b.rest) > 0.5) counts[i]++;
      });
      blocks++;
      await sleep((an.fftSize / ac.sampleRate) * 1000);
    }
    peaks = Object.fromEntries(o.peaks.map((hz, i) => [hz, counts[i] / blocks]));
  }

  let hold = null;
  if (o.hold) {
    const h = await rpc("hold");
    await sleep(800);
    const held = await measure(800);
    const u = await rpc("unhold");
    await sleep(800);
    const resumed = await measure(800);
    hold = { hold: h, unhold: u, heldRms: held.rms, resumedRms: resumed.rms, resumedSnrDb: resumed.snrDb };
  }
  let dtmf = null;
  let heardDigits = null;
  if (o.dtmf) dtmf = await rpc("dtmf", { digits: o.dtmf });
  if (o.listenDtmfMs) {
    // a Goertzel DTMF detector on what comes back
    const rows = [697, 770, 852, 941], cols = [1209, 1336, 1477, 1633];
    const keys = ["123A", "456B", "789C", "*0#D"];
    const wave = new Float32Array(an.fftSize);
    const power = (hz) => {
      const n = wave.length, w = (2 * Math.PI * hz) / ac.sampleRate, c = 2 * Math.cos(w);
      let s1 = 0, s2 = 0;
      for (let i = 0; i < n; i++) {
        const s0 = wave[i] + c * s1 - s2;
        s2 = s1;
        s1 = s0;
      }
      return s1 * s1 + s2 * s2 - c * s1 * s2;
    };
    heardDigits = "";
    let last = null;
    const t0 = performance.now();
    while (performance.now() - t0 < o.listenDtmfMs) {
      an.getFloatTimeDomainData(wave);
      const total = wave.reduce((a, x) => a + x * x, 0);
      const rp = rows.map(power), cp = cols.map(power);
      const r = rp.indexOf(Math.max(...rp)), c = cp.indexOf(Math.max(...cp));
      const rOk = rp[r] > 4 * Math.max(...rp.filter((_, i) => i !== r));
      const cOk = cp[c] > 4 * Math.max(...cp.filter((_, i) => i !== c));
      const key = total > 1 && rOk && cOk ? keys[r][c] : null;
      if (key && key !== last) heardDigits += key;
      last = key;
      await sleep(15);
    }
  }
  if (o.waitDtmf) {
    const t0 = performance.now();
    while (notes.filter((n) => n.method === "dtmfReceived").length < o.waitDtmf && performance.now() - t0 < 15000) await sleep(20);
  }
  const stats = [];
  (await pc.getStats()).forEach((s) => {
    if (s.type === "codec") stats.push(s.mimeType);
  });
  if (o.hangUp) {
    await sleep(1500); // let the digits and the last audio reach the far end
    await rpc("hangUp");
  }
  const ended = await waitNote("call end", (n) => n.method === "callStateChanged" && ["completed", "failed"].includes(n.params.state), o.endWithinMs);
  return {
    ended: { ...ended.params, afterAnswerMs: ended.t - inCall.t },
    callId,
    firstAudioMs,
    firstHeardMs,
    early,
    snrDb: heard.snrDb,
    rms: heard.rms,
    dominantHz: hz,
    hold,
    dtmf,
    heardDigits,
    peaks,
    dtmfReceived: notes.filter((n) => n.method === "dtmfReceived").map((n) => n.params),
    callStats: notes.filter((n) => n.method === "callStats").map((n) => n.params),
    codecs: stats,
    states: notes.filter((n) => n.method === "callStateChanged").map((n) => n.params.state),
  };
}

if (!url) {
  console.error("SIPLINE_URL is not set");
  process.exit(2);
}
if (!loopbackOnly()) {
  console.error("refusing to launch Chromium outside a loopback-only network namespace");
  process.exit(2);
}
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  args: [
    "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--allow-loopback-in-peer-connection", "--autoplay-policy=no-user-gesture-required",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost",
    "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
    `--use-file-for-fake-audio-capture=${toneWav(Number(env("MIC_HZ", "1000")))}`,
  ],
});
let code = 0;
try {
  const page = await (await browser.newContext()).newPage();
  page.on("console", (m) => log(`[page] ${m.text()}`));
  page.on("pageerror", (e) => log(`[pageerror] ${e.message}`));
  // any page of sipline's origin will do: the test runs its own script in it
  await page.goto(new URL("audio-test", url).href);
  const result = await page.evaluate(inPage, opts);
  console.log(`@result ${JSON.stringify(result)}`);
} catch (e) {
  log("FAIL", e?.stack ?? e);
  code = 1;
} finally {
  await browser.close();
}
process.exit(code);
