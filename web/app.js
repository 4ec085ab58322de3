// The phone page: everything you see at /, built on sipline.js (the same API anyone can use).
import { SiplinePhone } from "/sipline.js";
import { Sounds, meter } from "/sounds.js";

const $ = (id) => /** @type {HTMLElement} */ (document.getElementById(id));
const ui = {
  phone: $("phone"), conn: $("conn"), connText: $("conn-text"), callState: $("call-state"),
  number: /** @type {HTMLInputElement} */ ($("number")), backspace: /** @type {HTMLButtonElement} */ ($("backspace")),
  sub: $("sub"), dtmf: $("dtmf"), dtmfSent: $("dtmf-sent"), dtmfRecv: $("dtmf-recv"), dtmfRecvPart: $("dtmf-recv-part"),
  notice: $("notice"), noticeTitle: $("notice-title"), noticeText: $("notice-text"), noticeAction: /** @type {HTMLButtonElement} */ ($("notice-action")),
  keypad: $("keypad"), incoming: $("incoming"), incomingName: $("incoming-name"), incomingNumber: $("incoming-number"),
  incomingInitials: $("incoming-initials"), limit: $("limit"), limitText: $("limit-text"), limitRetry: $("limit-retry"),
  retry: /** @type {HTMLButtonElement} */ ($("retry")),
  call: /** @type {HTMLButtonElement} */ ($("call")), callCap: $("call-cap"), hangup: /** @type {HTMLButtonElement} */ ($("hangup")),
  transfer: /** @type {HTMLButtonElement} */ ($("transfer")), others: $("others"),
  answer: /** @type {HTMLButtonElement} */ ($("answer")), reject: /** @type {HTMLButtonElement} */ ($("reject")),
  hold: /** @type {HTMLButtonElement} */ ($("hold")), holdCap: $("hold-cap"),
  mute: /** @type {HTMLButtonElement} */ ($("mute")), muteCap: $("mute-cap"),
  mic: $("mic"), micText: $("mic-text"), meter: $("meter"), chip: $("media-chip"), quality: $("quality"),
  announcer: $("announcer"),
};

/** Until the gateway says its dial policy (and for policies JavaScript cannot read): digits. */
const DEFAULT_DIALABLE = /^[0-9*#+]{1,32}$/;
/** @type {{source: string | null, re: RegExp}} */
const dialPolicy = { source: null, re: DEFAULT_DIALABLE };

/** Whether the gateway's dial policy (sipUserNameReceived.dialPattern) lets `number` through. */
function dialable(/** @type {string} */ number) {
  const source = phone.state.dialPattern;
  if (source !== dialPolicy.source) {
    dialPolicy.source = source;
    try {
      dialPolicy.re = source ? new RegExp(source, "u") : DEFAULT_DIALABLE;
    } catch {
      dialPolicy.re = /^.+$/; // a pattern only the gateway understands: let it decide
    }
  }
  return dialPolicy.re.test(number);
}
const KEYS = "0123456789*#";
const LETTERS = { 2: "abc", 3: "def", 4: "ghi", 5: "jkl", 6: "mno", 7: "pqrs", 8: "tuv", 9: "wxyz" };
const ENDED = {
  completed: "Call ended", busy: "Busy", rejected: "Declined", cancelled: "Cancelled",
  noAnswer: "No answer", failed: "Call failed",
};
const ENDED_VIEW_MS = 3500;

const query = new URLSearchParams(location.search);
const phone = new SiplinePhone({ token: query.get("token"), audio: /** @type {HTMLAudioElement} */ ($("remote-audio")) });
const sounds = new Sounds();

/** What the page itself remembers beyond phone.state. */
const page = {
  limited: false,            // the pool was full at the last attempt
  micWanted: false,          // a call is placed, rings or runs: the microphone should be open
  dtmfSent: /** @type {{digit: string, status: "pending"|"ok"|"failed", error?: string}[]} */ ([]),
  dtmfRecv: "",
  dtmfCallId: /** @type {string | null} */ (null),
  endedUntil: 0,
  endedText: "",
  endedDetail: "",
  flash: { title: "", text: "", until: 0 }, // a failed request, shown for a few seconds
  lastAnnounced: "",
  prevCallState: /** @type {string | null} */ (null),
  stopMeter: () => {},
  busy: false,               // a call/answer/hangUp request is on its way
  transferring: false,       // the number field and keypad choose where to transfer the call
  transferTo: "",            // where the call was last transferred to
  transferAsked: /** @type {string | null} */ (null), // the call whose transfer request succeeded
};

// ---- rendering: everything on screen follows phone.state -------------------------------------

function lineText(s) {
  if (page.limited) return ["No free line — try again later", "error"];
  if (s.connection === "waiting") {
    const secs = Math.max(1, Math.ceil(((s.retryAt ?? Date.now()) - Date.now()) / 1000));
    return [`Disconnected — retrying in ${secs} s`, "error"];
  }
  if (s.connection === "closed") return ["Disconnected", "error"];
  if (s.connection === "reconnecting") return ["Reconnecting…", "pending"];
  if (s.connection !== "open" || !s.admission) return [s.closeCode ? "Reconnecting…" : "Connecting…", "pending"];
  switch (s.line) {
    case "registered": return [`Registered as ${s.user}`, "ok"];
    case "registrationFailed": return [s.lineCode ? `Registration failed (${s.lineCode})` : "Registration failed", "error"];
    case "unregistering": return ["Unregistering…", "pending"];
    case "unregistered": return ["Unregistered", "error"];
    default: return ["Registering…", "pending"];
  }
}

function duration(ms) {
  const t = Math.max(0, Math.floor(ms / 1000));
  const h = Math.floor(t / 3600), m = Math.floor((t % 3600) / 60), sec = t % 60;
  const mm = String(m).padStart(2, "0"), ss = String(sec).padStart(2, "0");
  return h ? `${h}:${mm}:${ss}` : `${mm}:${ss}`;
}

function initials(name) {
  const words = String(name).trim().split(/\s+/).filter((w) => /\p{L}/u.test(w));
  if (!words.length) return "";
  return (words[0][0] + (words.length > 1 ? words[words.length - 1][0] : "")).toUpperCase();
}

/** How a call ended: [headline, detail]. */
function endedText(c) {
  const text = c.state === "completed" && c.reason === "transferred" ? "Call transferred" : ENDED[c.state] ?? "Call ended";
  const detail = c.state === "failed" || c.state === "noAnswer" ? [c.code, c.reason].filter(Boolean).join(" ") : "";
  return [text, detail];
}

const capitalize = (text) => text.charAt(0).toUpperCase() + text.slice(1);

function announce(text) {
  if (!text || text === page.lastAnnounced) return;
  page.lastAnnounced = text;
  ui.announcer.textContent = text;
}

function setNotice(title, text, tone = "warn", action = null) {
  if (!title) { ui.notice.hidden = true; return; }
  ui.notice.hidden = false;
  ui.notice.dataset.tone = tone;
  ui.noticeTitle.textContent = title;
  ui.noticeText.textContent = text;
  ui.noticeAction.hidden = !action;
  if (action) { ui.noticeAction.textContent = action.label; ui.noticeAction.onclick = action.run; }
}

const MIC = {
  pending: ["Asking for the microphone…", null],
  denied: ["Microphone blocked", "Allow the microphone for this page (address bar) and try again. Until then the other side cannot hear you."],
  absent: ["No microphone found", "Connect one and try again. You can call, but the other side will not hear you."],
  busy: ["Microphone in use", "Another application is using the microphone. Close it and try again."],
  unsupported: ["No microphone on this page", "Browsers only allow the microphone on https:// pages (or localhost)."],
  failed: ["Microphone error", ""],
};

function render() {
  const s = phone.state;
  const now = Date.now();
  const call = s.call;

  // connection and line
  const [text, tone] = lineText(s);
  ui.connText.textContent = text;
  ui.conn.dataset.tone = tone;

  // which screen
  const incoming = call && call.incoming && call.state === "ringing";
  const ended = !call && s.lastCall && now < page.endedUntil;
  const mode = incoming ? "incoming" : call ? (call.state === "inCall" || call.state === "held" ? "incall" : "outgoing") : ended ? "ended" : "idle";
  ui.phone.dataset.mode = mode;
  const view = incoming ? "incoming" : page.limited && !call ? "limit" : "keypad";
  if (ui.phone.dataset.view !== view) {
    const was = ui.phone.dataset.view;
    ui.phone.dataset.view = view;
    ui.incoming.hidden = view !== "incoming";
    ui.limit.hidden = view !== "limit";
    if (was === "limit" && matchMedia("(pointer: fine)").matches) ui.number.focus({ preventScroll: true });
  }

  // the display
  let state = "\u00a0", stateTone = "idle", sub = "\u00a0", timer = false;
  if (call) {
    const who = call.displayName && call.displayName !== call.peer ? call.displayName : "";
    if (incoming) { state = "Incoming call"; stateTone = "live"; }
    else if (call.state === "dialing") { state = "Calling…"; stateTone = "progress"; }
    else if (call.state === "ringing" || call.state === "earlyMedia") { state = "Ringing…"; stateTone = "progress"; }
    else if (page.transferring) { state = "Transfer to…"; stateTone = "progress"; }
    else if (call.transfer?.state === "ringing") { state = `${page.transferTo} is ringing…`; stateTone = "progress"; }
    else if (call.transfer?.state === "completed") { state = "Transferred"; stateTone = "progress"; }
    else if (call.transfer?.state === "trying" || (page.transferAsked === call.callId && !call.transfer)) {
      state = `Transferring to ${page.transferTo}…`; stateTone = "progress";
    }
    else if (call.onHold) { state = "On hold"; stateTone = "warn"; }
    else if (call.state === "held") { state = "Held by the other side"; stateTone = "warn"; }
    else { state = "In call"; stateTone = "live"; }
    if (call.answeredAt) { sub = duration(now - call.answeredAt); timer = true; }
    else sub = who || (call.incoming ? "" : "\u00a0");
    if (timer && who) sub = `${who} · ${sub}`;
    if (!page.transferring && (document.activeElement !== ui.number || ui.number.value !== (call.peer ?? ""))) ui.number.value = call.peer ?? "";
  } else if (ended && s.lastCall) {
    state = page.endedText; stateTone = s.lastCall.state === "completed" ? "idle" : "error";
    if (s.lastCall.answeredAt) { sub = duration((s.lastCall.endedAt ?? now) - s.lastCall.answeredAt); timer = true; }
    else if (page.endedDetail) sub = page.endedDetail;
  }
  ui.callState.textContent = state;
  ui.callState.dataset.tone = stateTone;
  ui.sub.textContent = sub;
  ui.sub.classList.toggle("timer", timer);
  ui.sub.setAttribute("role", timer ? "timer" : "none");
  ui.number.readOnly = !!call && !page.transferring;
  const len = ui.number.value.length;
  ui.number.classList.toggle("long", len > 11 && len <= 15);
  ui.number.classList.toggle("xlong", len > 15);

  // DTMF
  const showDtmf = (call || ended) && (page.dtmfSent.length || page.dtmfRecv);
  ui.dtmf.hidden = !showDtmf;
  if (showDtmf) {
    ui.dtmfSent.replaceChildren(...page.dtmfSent.slice(-16).map((d) => {
      const span = document.createElement("span");
      span.textContent = d.digit;
      if (d.status !== "ok") span.className = d.status;
      if (d.status === "failed") span.title = `not delivered: ${d.error}`;
      return span;
    }));
    if (!page.dtmfSent.length) ui.dtmfSent.textContent = "—";
    ui.dtmfRecvPart.hidden = !page.dtmfRecv;
    ui.dtmfRecv.textContent = page.dtmfRecv.slice(-16);
  }

  renderOtherCalls(s.otherCalls, call && (call.state === "inCall" || call.state === "held") ? call : null);

  // incoming call panel
  if (incoming) {
    const name = call.displayName || call.peer || "Unknown caller";
    ui.incomingName.textContent = name;
    ui.incomingNumber.textContent = call.displayName && call.peer ? call.peer : "";
    ui.incomingInitials.textContent = initials(call.displayName || "") || "#";
  }
  if (view === "limit") {
    const left = s.retryAt ? Math.max(0, Math.ceil((s.retryAt - now) / 1000)) : 0;
    ui.limitRetry.textContent = s.connection === "waiting" && left ? `Trying again in ${left} s` : "Trying again…";
  }

  // buttons: shown and enabled only when they make sense
  const registered = s.connection === "open" && s.line === "registered";
  const established = !!call && (call.state === "inCall" || call.state === "held");
  if (!established) page.transferring = false;
  ui.call.hidden = !!call && !page.transferring;
  ui.call.disabled = !registered || !dialable(ui.number.value) || page.busy;
  ui.callCap.textContent = page.transferring ? "Transfer" : "Call";
  ui.call.setAttribute("aria-label", page.transferring
    ? (ui.number.value ? `Transfer the call to ${ui.number.value}` : "Transfer the call")
    : ui.number.value ? `Call ${ui.number.value}` : "Call");
  ui.hangup.hidden = !call || !!incoming || page.transferring;
  const transferBusy = ["trying", "ringing", "completed"].includes(call?.transfer?.state ?? "")
    || (!!call && page.transferAsked === call.callId && !call.transfer);
  ui.transfer.hidden = !established;
  ui.transfer.disabled = transferBusy || page.busy;
  ui.transfer.textContent = page.transferring ? "Cancel transfer" : "Transfer…";
  ui.transfer.setAttribute("aria-pressed", String(page.transferring));
  ui.hangup.setAttribute("aria-label", call && !call.answeredAt ? "Cancel call" : "Hang up");
  ui.answer.hidden = ui.reject.hidden = !incoming;
  ui.answer.disabled = ui.reject.disabled = page.busy;
  ui.mute.hidden = ui.hold.hidden = !!incoming;
  ui.backspace.disabled = (!!call && !page.transferring) || !ui.number.value;
  const holdable = !!call && (call.state === "inCall" || call.state === "held") && !call.heldByPeer;
  ui.hold.disabled = !holdable;
  ui.hold.setAttribute("aria-pressed", String(!!call?.onHold));
  ui.holdCap.textContent = call?.onHold ? "Resume" : "Hold";
  ui.hold.setAttribute("aria-label", call?.onHold ? "Resume the call" : "Put the call on hold");
  ui.mute.disabled = s.microphone !== "on";
  ui.mute.setAttribute("aria-pressed", String(s.muted));
  ui.muteCap.textContent = s.muted ? "Unmute" : "Mute";
  ui.mute.setAttribute("aria-label", s.muted ? "Unmute microphone" : "Mute microphone");

  // microphone
  const [micTitle, micHelp] = MIC[s.microphone] ?? [null, null];
  const micProblem = ["denied", "absent", "busy", "unsupported", "failed"].includes(s.microphone);
  ui.mic.dataset.state = micProblem ? "problem" : s.microphone === "on" ? (s.muted ? "muted" : "on") : "pending";
  ui.micText.textContent = s.microphone === "on" ? (s.muted ? "Microphone muted" : "Microphone on")
    : micProblem ? `${micTitle}` : micTitle ?? "Microphone off until a call";
  if (now < page.flash.until) {
    setNotice(page.flash.title, page.flash.text, "error");
  } else if (micProblem) {
    setNotice(micTitle, micHelp || s.microphoneError || "", "error",
      s.microphone === "unsupported" ? null : { label: "Try again", run: openMic });
  } else if (s.line === "registrationFailed") {
    setNotice(`Registration failed${s.lineCode ? ` (${s.lineCode})` : ""}`,
      `${capitalize(s.lineReason ?? "the PBX refused this line")}. sipline keeps retrying.`, "warn");
  } else {
    setNotice(null, "");
  }

  // audio path and quality
  ui.phone.dataset.media = s.media;
  const chip = s.media === "unavailable" ? "No audio" : s.media === "failed" ? "Audio failed" : "";
  ui.chip.hidden = !chip;
  ui.chip.textContent = chip;
  ui.chip.title = chip ? `The audio connection is not available: ${s.mediaError ?? "unknown reason"}. Calls still connect.` : "";
  renderQuality(s);

  // sounds and announcements follow call state changes
  const key = call ? `${call.callId}:${incoming ? "incoming" : call.state}` : null;
  if (key !== page.prevCallState) {
    page.prevCallState = key;
    if (incoming) sounds.ring();
    else if (call && call.state === "ringing" && !call.incoming) sounds.ringback();
    else sounds.stop();
  }
  announce(incoming ? `Incoming call from ${[call.displayName, call.peer].filter(Boolean).join(", ")}`
    : call ? `${state} ${call.peer ?? ""}`.trim()
      : ended ? page.endedText : text);

  document.title = incoming ? `Incoming call — ${call.displayName || call.peer}`
    : call?.answeredAt ? `${duration(now - call.answeredAt)} · ${call.peer ?? ""} — sipline`
      : call ? `${state} ${call.peer ?? ""} — sipline` : "sipline phone";
}

/** The line's other calls (call waiting): one row each, with what can be done with it. */
function renderOtherCalls(/** @type {import("./sipline").CallInfo[]} */ others, /** @type {import("./sipline").CallInfo | null} */ live) {
  ui.others.hidden = !others.length;
  const key = others.map((c) => `${c.callId}:${c.state}:${c.onHold}`).join(",") + `|${page.busy}|${live?.callId}`;
  if (ui.others.dataset.key === key) return;
  ui.others.dataset.key = key;
  ui.others.replaceChildren(...others.map((c) => {
    const name = c.displayName || c.peer || "Unknown caller";
    const waiting = c.incoming && c.state === "ringing";
    const li = document.createElement("li");
    li.dataset.kind = waiting ? "waiting" : "held";
    const text = document.createElement("span");
    text.className = "other-text";
    text.textContent = waiting ? `Call waiting: ${name}` : c.onHold ? `On hold: ${name}` : name;
    li.append(text);
    const button = (/** @type {string} */ caption, /** @type {string} */ label, /** @type {() => void} */ act) => {
      const b = document.createElement("button");
      b.type = "button";
      b.className = "text-btn";
      b.textContent = caption;
      b.setAttribute("aria-label", label);
      b.disabled = page.busy;
      b.addEventListener("click", act);
      li.append(b);
    };
    if (waiting) {
      button("Answer", `Answer the waiting call from ${name}`, () => answer(c.callId));
      button("Decline", `Decline the waiting call from ${name}`, () => hangUp(603, c.callId));
    } else if (c.state === "inCall" || c.state === "held") {
      button("Switch", `Switch to the call with ${name}`, () => swap(c.callId));
      if (live) {
        // attended transfer: the held party and the current one talk to each other
        const other = live.displayName || live.peer || "the current call";
        button("Transfer", `Transfer ${name} to ${other}`, () => transferToCall(c.callId, live.callId));
      }
      button("Hang up", `Hang up the call with ${name}`, () => hangUp(undefined, c.callId));
    }
    return li;
  }));
}

function renderQuality(s) {
  const st = s.call && s.stats;
  ui.quality.hidden = !st;
  if (!st) return;
  const legs = [st.browser, st.sip].filter(Boolean);
  const loss = Math.max(0, ...legs.map((l) => l.loss ?? 0));
  const jitter = Math.max(0, ...legs.map((l) => l.jitterMs ?? 0));
  const level = loss < 0.01 && jitter < 20 ? 4 : loss < 0.03 && jitter < 40 ? 3 : loss < 0.08 && jitter < 80 ? 2 : 1;
  const word = ["", "poor", "fair", "good", "excellent"][level];
  ui.quality.dataset.level = String(level);
  const label = `Call quality ${word}: ${(loss * 100).toFixed(1)} % loss, ${jitter.toFixed(0)} ms jitter`;
  ui.quality.setAttribute("aria-label", label);
  ui.quality.title = label;
}

// ---- actions ----------------------------------------------------------------------------------

/** Runs a request from a button; says so when it fails. */
async function run(failure, action) {
  page.busy = true;
  render();
  try {
    await action();
  } catch (e) {
    showError(failure, e);
  } finally {
    page.busy = false;
    render();
  }
}

function showError(title, e) {
  const msg = e?.message ?? String(e);
  page.flash = { title, text: capitalize(msg), until: Date.now() + 5000 };
  setTimeout(render, 5050);
  render();
}

function placeCall() {
  if (page.transferring) { transfer(); return; }
  const number = sanitize(ui.number.value);
  ui.number.value = number;
  if (!dialable(number) || phone.state.call) return;
  sounds.unlock();
  page.dtmfSent = [];
  page.dtmfRecv = "";
  page.micWanted = true;
  openMic(); // attached when granted: the call does not wait for it
  run("Could not call", async () => {
    try {
      return await phone.call(number);
    } catch (e) {
      page.micWanted = false; // no call: no microphone
      closeMic();
      throw e;
    }
  });
}

/** Answers the call that rings, or `callId` (a waiting call: the current one is then held). */
function answer(/** @type {string | undefined} */ callId) {
  const s = phone.state;
  if (!callId && !(s.call?.incoming && s.call.state === "ringing")) return;
  sounds.stop();
  page.micWanted = true;
  openMic();
  run("Could not answer", () => phone.accept(callId ?? s.call?.callId));
}

/** Ends the current call, or `callId`; a ringing one is declined (603 unless `code`). */
function hangUp(/** @type {number | undefined} */ code, /** @type {string | undefined} */ callId) {
  const s = phone.state;
  const call = callId ? [s.call, ...s.otherCalls].find((c) => c?.callId === callId) : s.call;
  if (!call) return;
  if (!callId) sounds.stop();
  run("Could not hang up", () => phone.hangUp(call.incoming && call.state === "ringing" ? (code ?? 603) : undefined, call.callId));
}

/** Attended transfer: the far end of `callId` takes over `toCallId`; both calls then end. */
function transferToCall(/** @type {string} */ callId, /** @type {string} */ toCallId) {
  run("Could not transfer the call", () => phone.transferToCall(callId, toCallId));
}

/** Switches to another call of the line: it is taken off hold, the current one held. */
function swap(/** @type {string} */ callId) {
  run("Could not switch calls", () => phone.swap(callId));
}

/** Enters or leaves transfer mode: the number field and keypad then choose the target. */
function toggleTransfer() {
  page.transferring = !page.transferring && !!phone.state.call;
  ui.number.value = "";
  render();
  if (page.transferring) ui.number.focus({ preventScroll: true });
}

/** Blind transfer of the call to the number entered. */
function transfer() {
  const number = sanitize(ui.number.value);
  if (page.busy || !dialable(number) || !phone.state.call) return;
  page.transferTo = number;
  const callId = phone.state.call.callId;
  run("Could not transfer the call", async () => {
    await phone.transfer(number);
    page.transferring = false;
    page.transferAsked = callId;
  });
}

async function toggleHold() {
  const call = phone.state.call;
  if (!call) return;
  run(call.onHold ? "Could not resume the call" : "Could not put the call on hold",
    () => (call.onHold ? phone.unhold() : phone.hold()));
}

async function sendDtmf(digit) {
  sounds.key(digit);
  const call = phone.state.call;
  if (!call) return;
  if (page.dtmfCallId !== call.callId) { page.dtmfCallId = call.callId; page.dtmfSent = []; page.dtmfRecv = ""; }
  const entry = { digit, status: /** @type {"pending"|"ok"|"failed"} */ ("pending"), error: "" };
  page.dtmfSent.push(entry);
  render();
  try {
    await phone.dtmf(digit);
    entry.status = "ok";
  } catch (e) {
    entry.status = "failed";
    entry.error = e?.message ?? String(e);
    console.info(`sipline: DTMF ${digit} not delivered: ${entry.error}`);
  }
  render();
}

/** A key of the keypad (click, touch or keyboard). */
function press(key) {
  const call = phone.state.call;
  flash(key);
  if (call && !page.transferring) {
    if (call.state === "inCall" || call.state === "held" || call.state === "earlyMedia") sendDtmf(key);
    return;
  }
  sounds.key(key);
  insert(key);
}

function flash(key) {
  const btn = ui.keypad.querySelector(`[data-key="${CSS.escape(key)}"]`);
  if (!btn) return;
  btn.classList.add("pressed");
  setTimeout(() => btn.classList.remove("pressed"), 130);
}

/** Inserts text at the caret of the number field (or at its end). */
function insert(text) {
  const el = ui.number;
  const focused = document.activeElement === el;
  const start = focused ? el.selectionStart ?? el.value.length : el.value.length;
  const end = focused ? el.selectionEnd ?? el.value.length : el.value.length;
  const value = sanitize(el.value.slice(0, start) + text + el.value.slice(end)).slice(0, 32);
  el.value = value;
  const caret = Math.min(value.length, start + text.length);
  if (focused) el.setSelectionRange(caret, caret);
  render();
}

function backspace() {
  const el = ui.number;
  if ((phone.state.call && !page.transferring) || !el.value) return;
  const focused = document.activeElement === el;
  let start = focused ? el.selectionStart ?? el.value.length : el.value.length;
  const end = focused ? el.selectionEnd ?? el.value.length : el.value.length;
  if (start === end) start = Math.max(0, start - 1);
  el.value = el.value.slice(0, start) + el.value.slice(end);
  if (focused) el.setSelectionRange(start, start);
  render();
}

/** Keeps what can be dialled: digits * # and a leading +; letters become their keys (1-800-FLOWERS). */
function sanitize(text) {
  let out = "";
  for (const ch of String(text).replace(/^\s*(tel|sip):/i, "")) {
    if (/[0-9*#]/.test(ch)) out += ch;
    else if (ch === "+" && out === "") out += ch;
    else {
      const key = Object.keys(LETTERS).find((k) => LETTERS[k].includes(ch.toLowerCase()));
      if (key) out += key;
    }
  }
  return out;
}

/**
 * The microphone is open only while a call is placed, rings or runs: the browser shows no
 * recording indicator and no sound leaves the room while nobody is in a call.
 */
async function openMic() {
  page.stopMeter();
  page.stopMeter = () => {};
  try {
    const stream = await phone.openMicrophone({ echoCancellation: true, noiseSuppression: true, autoGainControl: true });
    page.stopMeter = meter(sounds, stream, (level) => {
      ui.meter.style.setProperty("--level", phone.state.muted ? "0" : level.toFixed(3));
      ui.meter.setAttribute("aria-valuenow", String(Math.round(level * 100)));
    });
  } catch {
    // phone.state.microphone says why; render() explains it
  }
  if (!page.micWanted) closeMic(); // no call (any more) to send it to
}

function closeMic() {
  page.stopMeter();
  page.stopMeter = () => {};
  phone.closeMicrophone();
}

// ---- wiring -------------------------------------------------------------------------------------

for (const btn of ui.keypad.querySelectorAll("button[data-key]")) {
  const key = /** @type {HTMLElement} */ (btn).dataset.key ?? "";
  let longPress = 0, plus = false;
  btn.addEventListener("pointerdown", () => {
    plus = false;
    if (key === "0" && !phone.state.call) longPress = window.setTimeout(() => { plus = true; sounds.key("0"); insert("+"); }, 600);
  });
  const cancel = () => clearTimeout(longPress);
  btn.addEventListener("pointerup", cancel);
  btn.addEventListener("pointerleave", cancel);
  btn.addEventListener("click", () => {
    if (plus) { plus = false; return; }
    press(key);
  });
}

ui.number.addEventListener("input", () => {
  const clean = sanitize(ui.number.value);
  if (clean !== ui.number.value) {
    const caret = Math.min(clean.length, ui.number.selectionStart ?? clean.length);
    ui.number.value = clean;
    ui.number.setSelectionRange(caret, caret);
  }
  render();
});
document.addEventListener("paste", (e) => {
  const target = /** @type {HTMLElement} */ (e.target);
  if (target !== ui.number && target.closest?.("input, textarea, [contenteditable]")) return;
  const text = e.clipboardData?.getData("text") ?? "";
  e.preventDefault();
  if (phone.state.call && !page.transferring) return;
  if (target !== ui.number) ui.number.focus();
  insert(sanitize(text));
});

document.addEventListener("keydown", (e) => {
  if (e.ctrlKey || e.metaKey || e.altKey || e.isComposing) return;
  const target = /** @type {HTMLElement} */ (e.target);
  const inNumber = target === ui.number;
  if (!inNumber && target.closest?.("input, textarea, select, [contenteditable]")) return;
  const onButton = !inNumber && target.closest?.("button");
  const call = phone.state.call;
  if (e.key === "Enter") {
    if (onButton) return; // the focused button does its own thing
    e.preventDefault();
    if (call?.incoming && call.state === "ringing") answer();
    else if (!call || page.transferring) placeCall();
  } else if (e.key === "Escape") {
    if (!call) return;
    e.preventDefault();
    if (page.transferring) toggleTransfer();
    else hangUp();
  } else if (KEYS.includes(e.key) || (e.key === "+" && (!call || page.transferring))) {
    if ((call && !page.transferring) || !inNumber) { e.preventDefault(); press(e.key); }
    else { sounds.key(e.key); flash(e.key); }
  } else if (e.key === "Backspace" && !inNumber) {
    e.preventDefault();
    backspace();
  }
});

ui.backspace.addEventListener("click", backspace);
ui.call.addEventListener("click", placeCall);
ui.hangup.addEventListener("click", () => hangUp());
ui.answer.addEventListener("click", () => answer());
ui.reject.addEventListener("click", () => hangUp(603));
ui.hold.addEventListener("click", toggleHold);
ui.transfer.addEventListener("click", toggleTransfer);
ui.mute.addEventListener("click", () => phone.setMuted(!phone.state.muted));
ui.retry.addEventListener("click", () => phone.reconnect());
document.addEventListener("pointerdown", () => sounds.unlock(), { capture: true });

phone.addEventListener("statechange", render);
phone.addEventListener("registrationStateChanged", (e) => {
  page.limited = e.detail.state === "connectionLimit";
});
phone.addEventListener("incomingCall", (e) => {
  if (phone.state.call?.callId !== e.detail.callId) {
    // call waiting: it rings in the background of the current call
    sounds.key("#");
    return;
  }
  page.dtmfSent = [];
  page.dtmfRecv = "";
  page.micWanted = true;
  openMic(); // ready before the answer, so the far end hears us at once
  queueMicrotask(() => { if (!ui.answer.hidden) ui.answer.focus(); });
});
phone.addEventListener("callStateChanged", (e) => {
  const { state, call } = e.detail;
  if (!call) return; // not final
  if (e.detail.background || phone.state.call) {
    // another call of the line goes on
    if (!e.detail.background) sounds.hangup();
    render();
    return;
  }
  page.micWanted = false;
  closeMic();
  [page.endedText, page.endedDetail] = endedText({ ...call, state, code: e.detail.code, reason: e.detail.reason });
  page.endedUntil = Date.now() + ENDED_VIEW_MS;
  if (!(call.incoming && !call.answeredAt)) sounds.hangup();
  else sounds.stop();
  if (document.activeElement === document.body || document.activeElement?.closest?.(".actions")) ui.number.focus();
  setTimeout(render, ENDED_VIEW_MS + 50);
});
phone.addEventListener("transferStateChanged", (e) => {
  const { state, code } = e.detail;
  if (state === "failed") {
    showError("The transfer failed", new Error(code ? `${page.transferTo} could not be reached (${code}); the call goes on` : "No answer about it; the call goes on"));
  }
  render();
});
phone.addEventListener("dtmfReceived", (e) => {
  page.dtmfRecv += e.detail.digit;
  render();
});
phone.addEventListener("callErrorOccurred", (e) => console.info("sipline: call error:", e.detail.reason));
phone.addEventListener("mediaStateChanged", (e) => console.info(`sipline: audio ${e.detail.state}${e.detail.error ? `: ${e.detail.error}` : ""}`));

// the clock: call timer, retry countdowns
setInterval(() => {
  const s = phone.state;
  if (s.call?.answeredAt || s.connection === "waiting") render();
}, 250);

// free the line at once when the page goes away (sipline would notice within 25 s anyway)
window.addEventListener("pagehide", () => phone.close());

// on touch screens the keypad is the keyboard: keep the system one closed
if (matchMedia("(pointer: coarse)").matches) ui.number.inputMode = "none";

render();
phone.connect();
if (matchMedia("(pointer: fine)").matches) ui.number.focus({ preventScroll: true });
