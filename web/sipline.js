// sipline.js: the browser client of sipline's API v1 (docs/api.md), as one ES module with no
// dependencies. Build your own phone UI on it: docs/client.md. Types: sipline.d.ts.
//
//   import { SiplinePhone } from "/sipline.js";
//   const phone = new SiplinePhone();
//   phone.addEventListener("incomingCall", (e) => console.log("call from", e.detail.from));
//   phone.connect();
//   await phone.call("1000");

/** Call states after which the line is free again. */
export const FINAL_CALL_STATES = Object.freeze(["busy", "rejected", "cancelled", "noAnswer", "completed", "failed"]);

/** Every notification sipline sends (each is also an event of SiplinePhone). */
export const NOTIFICATIONS = Object.freeze([
  "registrationStateChanged", "sipUserNameReceived", "phoneLineStateChanged", "incomingCall",
  "callStateChanged", "callErrorOccurred", "dtmfReceived", "callStats", "transferStateChanged",
  "callHoldChanged", "callReferred",
]);

/** WebSocket close code sipline uses with `connectionLimit` (Try Again Later). */
export const CLOSE_TRY_AGAIN_LATER = 1013;

/** A JSON-RPC error answer, or a request that could not be made. */
export class SiplineError extends Error {
  /**
   * @param {string} message
   * @param {number | null} [code] the JSON-RPC error code (-32000: not possible in this state); null when the request never got an answer
   * @param {string} [method] the request that failed
   */
  constructor(message, code = null, method = undefined) {
    super(message);
    this.name = "SiplineError";
    /** @type {number | null} */
    this.code = code;
    /** @type {string | undefined} */
    this.method = method;
  }
}

/** @type {Required<import("./sipline").ReconnectOptions>} */
const RECONNECT = { minDelay: 1000, maxDelay: 30000, limitDelay: 20000, limitMaxDelay: 120000 };
/** How long an audio leg may stay `disconnected` before ICE is restarted (ms), and how
 * many restarts in a row are tried (each given twice that long to connect). */
const ICE_DISCONNECTED_MS = 3000;
const ICE_RESTARTS = 8;
/** How long the browser's ICE consent checks on the audio path may go unanswered before
 * the path is taken for dead (a network change) and ICE is restarted (ms). Browsers
 * themselves take longer (Chromium ~12 s) to call such a path `disconnected`. */
const PATH_SILENT_MS = 5000;

/** @param {number} ms @returns {Promise<void>} */
const wait = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * One phone line: a WebSocket session with sipline, its leased account, its call, and
 * the WebRTC peer connection that carries the call's audio.
 *
 * Events (all `CustomEvent`s; `detail` is the notification's `params`): every
 * notification of docs/api.md, plus `connectionStateChanged`, `mediaStateChanged`,
 * `microphoneChanged`, `notification` (every raw frame) and `statechange` (after any
 * change of {@link SiplinePhone#state}).
 *
 * @extends {EventTarget}
 */
export class SiplinePhone extends EventTarget {
  /** @type {Required<Omit<import("./sipline").SiplinePhoneOptions, "token" | "audio" | "reconnect">> & {token: string | null, reconnect: false | Required<import("./sipline").ReconnectOptions>}} */
  #opt;
  /** @type {WebSocket | null} */ #ws = null;
  #nextId = 1;
  /** @type {Map<number, {resolve: (v: any) => void, reject: (e: Error) => void, timer: any, method: string}>} */
  #pending = new Map();
  #wanted = false; // connect() was called and close() was not
  #attempt = 0;
  /**
   * The session's resume token, how long sipline keeps the session after a drop (ms), and
   * until when that is (set when the connection drops).
   * @type {{token: string, windowMs: number, until: number | null} | null}
   */
  #resume = null;
  /** @type {any} */ #retryTimer = null;
  /** @type {any} */ #pingTimer = null;
  /** @type {RTCPeerConnection | null} */ #pc = null;
  /** @type {RTCRtpTransceiver | null} */ #transceiver = null;
  #iceRestarts = 0;
  #restarting = false; // an ICE-restart offer is out
  /** @type {any} */ #pathTimer = null;
  /** @type {MediaStream | null} */ #mic = null;
  /** @type {MediaStream | null} */ #remote = null;
  /** @type {HTMLAudioElement | null} */ #audio = null;
  /** @type {string | null} */ #dialing = null;
  /** @type {import("./sipline").PhoneState} */ #s;

  /** @param {import("./sipline").SiplinePhoneOptions} [options] */
  constructor(options = {}) {
    super();
    const ws = new URL("/api/v1/ws", import.meta.url);
    ws.protocol = ws.protocol === "https:" ? "wss:" : "ws:";
    this.#opt = {
      url: options.url ?? ws.href,
      token: options.token ?? null,
      reconnect: options.reconnect === false ? false : { ...RECONNECT, ...(options.reconnect ?? {}) },
      requestTimeout: options.requestTimeout ?? 10000,
      pingInterval: options.pingInterval ?? 20000,
      iceGatheringTimeout: options.iceGatheringTimeout ?? 2000,
      media: options.media ?? true,
      rtcConfiguration: options.rtcConfiguration ?? { iceServers: [] },
    };
    if (options.audio !== null && typeof Audio !== "undefined") {
      this.#audio = options.audio ?? new Audio();
      this.#audio.autoplay = true;
    }
    this.#s = {
      connection: "idle", closeCode: null, closeReason: null, retryAt: null,
      admission: null, user: null, displayName: null, dialPattern: null,
      line: null, lineCode: null, lineReason: null,
      call: null, otherCalls: [], lastCall: null,
      media: "idle", mediaError: null,
      microphone: "off", microphoneError: null, muted: false,
      stats: null,
    };
  }

  // ---- state -------------------------------------------------------------------------

  /** @returns {import("./sipline").PhoneState} a snapshot (a copy: changing it changes nothing) */
  get state() {
    const s = { ...this.#s };
    if (s.call) s.call = { ...s.call };
    s.otherCalls = s.otherCalls.map((c) => ({ ...c }));
    if (s.lastCall) s.lastCall = { ...s.lastCall };
    return s;
  }

  /** The microphone stream opened by {@link openMicrophone}, if any. */
  get microphone() { return this.#mic; }

  /** The far end's audio (from the gateway's WebRTC leg), once it arrived. */
  get remoteStream() { return this.#remote; }

  /** The `<audio>` element that plays the far end (the one passed in, or a detached one). */
  get audioElement() { return this.#audio; }

  /** The peer connection of this session (null before `accepted` or when audio is unavailable). */
  get peerConnection() { return this.#pc; }

  /** @param {Partial<import("./sipline").PhoneState>} patch */
  #set(patch) { Object.assign(this.#s, patch); }

  /** @param {string} type @param {any} [detail] */
  #emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  #changed() { this.#emit("statechange", this.state); }

  // ---- connection --------------------------------------------------------------------

  /** Opens the session (and keeps it open, reconnecting with back-off, until {@link close}). */
  connect() {
    this.#wanted = true;
    clearTimeout(this.#retryTimer);
    this.#retryTimer = null;
    if (this.#ws) return this;
    const url = new URL(this.#opt.url);
    if (this.#opt.token) url.searchParams.set("token", this.#opt.token);
    if (this.#resume?.until && Date.now() < this.#resume.until) url.searchParams.set("resume", this.#resume.token);
    this.#setConnection("connecting", { retryAt: null });
    const ws = new WebSocket(url.href);
    this.#ws = ws;
    ws.onopen = () => {
      if (ws !== this.#ws) return;
      this.#setConnection("open", { closeCode: null, closeReason: null, admission: null });
      this.#schedulePing();
    };
    ws.onmessage = (ev) => { if (ws === this.#ws) this.#onFrame(ev.data); };
    ws.onclose = (ev) => { if (ws === this.#ws) this.#onClosed(ev.code, ev.reason); };
    ws.onerror = () => {}; // a close event follows
    return this;
  }

  /** Reconnects at once (e.g. a "Try again" button after `connectionLimit`). */
  reconnect() {
    if (this.#ws && this.#ws.readyState <= WebSocket.OPEN) return this;
    this.#drop(4000, "reconnect");
    return this.connect();
  }

  /** Ends the session for good: hangs up (sipline does), closes audio and the microphone. */
  close() {
    this.#wanted = false;
    clearTimeout(this.#retryTimer);
    this.#retryTimer = null;
    if (!this.#ws && this.#resume?.until) {
      // gone while going back to the session: what it kept ends here too
      this.#resume = null;
      this.#teardownMedia();
      this.#endEveryCall();
    }
    this.#drop(1000, "closed by the page");
    this.closeMicrophone();
    this.#setConnection("closed", { retryAt: null });
  }

  /** Closes the current socket now and settles everything that depended on it. @param {number} code @param {string} reason */
  #drop(code, reason) {
    const ws = this.#ws;
    if (!ws) return;
    try { ws.close(code, reason); } catch { /* already closing */ }
    this.#onClosed(code, reason, true);
  }

  /** @param {number} code @param {string} reason @param {boolean} [byUs] */
  #onClosed(code, reason, byUs = false) {
    this.#ws = null;
    clearTimeout(this.#pingTimer);
    for (const [, p] of this.#pending) {
      clearTimeout(p.timer);
      p.reject(new SiplineError("the connection to sipline closed", null, p.method));
    }
    this.#pending.clear();
    if (this.#resumable(code, byUs, reason)) {
      // the session (line, call, audio leg) waits for us at sipline: go back to it
      const delay = Math.min(2000, 250 * 2 ** this.#attempt);
      this.#attempt++;
      this.#retryTimer = setTimeout(() => { this.#retryTimer = null; if (this.#wanted) this.connect(); }, delay);
      this.#set({ closeCode: code, closeReason: reason || null });
      this.#setConnection("reconnecting", { retryAt: Date.now() + delay });
      return;
    }
    this.#resume = null;
    this.#teardownMedia();
    // sipline ends the calls of a session that goes away: say so, as a final state
    this.#endEveryCall();
    const limited = code === CLOSE_TRY_AGAIN_LATER || this.#s.admission === "connectionLimit";
    this.#set({ closeCode: code, closeReason: reason || null, line: null, lineCode: null, lineReason: null });
    if (!this.#wanted || byUs && reason === "reconnect") {
      if (!this.#wanted) this.#setConnection("closed");
      return;
    }
    if (!this.#opt.reconnect) {
      this.#setConnection("closed");
      return;
    }
    const r = this.#opt.reconnect;
    const [base, max] = limited ? [r.limitDelay, r.limitMaxDelay] : [r.minDelay, r.maxDelay];
    const delay = Math.min(max, base * 2 ** this.#attempt) * (0.8 + Math.random() * 0.4);
    this.#attempt++;
    this.#retryTimer = setTimeout(() => { this.#retryTimer = null; if (this.#wanted) this.connect(); }, delay);
    this.#setConnection("waiting", { retryAt: Date.now() + Math.round(delay) });
  }

  /**
   * Whether a closed connection left a session to go back to: the gateway keeps it when the
   * connection broke without its close frame (or we gave up on a silent one), within the
   * resume window; a close it sent (limit, drain, replaced, policy) means the session is over.
   * @param {number} code @param {boolean} byUs @param {string} reason
   */
  #resumable(code, byUs, reason) {
    const r = this.#resume;
    if (!this.#wanted || !this.#opt.reconnect || !r) return false;
    if (byUs ? reason !== "no answer to ping" : code !== 1006 && code !== 1005) return false;
    // the window counts from the first drop, not from each failed attempt
    r.until ??= Date.now() + r.windowMs;
    return Date.now() < r.until;
  }

  /** @param {import("./sipline").ConnectionState} connection @param {Partial<import("./sipline").PhoneState>} [extra] */
  #setConnection(connection, extra = {}) {
    this.#set({ connection, ...extra });
    this.#emit("connectionStateChanged", {
      state: connection, code: this.#s.closeCode, reason: this.#s.closeReason, retryAt: this.#s.retryAt,
    });
    this.#changed();
  }

  #schedulePing() {
    clearTimeout(this.#pingTimer);
    if (!this.#opt.pingInterval) return;
    this.#pingTimer = setTimeout(async () => {
      const ws = this.#ws;
      try {
        await this.request("ping", {}, { timeout: 10000 });
        if (ws === this.#ws) this.#schedulePing();
      } catch (e) {
        // no answer: the connection is dead even if the socket does not know it yet
        if (ws === this.#ws && e instanceof SiplineError && e.code === null) this.#drop(4001, "no answer to ping");
      }
    }, this.#opt.pingInterval);
  }

  // ---- requests ----------------------------------------------------------------------

  /**
   * Sends one JSON-RPC request and resolves with its `result` (rejects with a
   * {@link SiplineError} carrying the error `code`).
   * @param {string} method
   * @param {object} [params]
   * @param {{timeout?: number}} [opts]
   * @returns {Promise<any>}
   */
  request(method, params = {}, opts = {}) {
    const ws = this.#ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) {
      return Promise.reject(new SiplineError("not connected to sipline", null, method));
    }
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(new SiplineError(`${method}: no answer from sipline`, null, method));
      }, opts.timeout ?? this.#opt.requestTimeout);
      this.#pending.set(id, { resolve, reject, timer, method });
      ws.send(JSON.stringify({ jsonrpc: "2.0", id, method, params }));
    });
  }

  /**
   * Calls `number` (digits, `*`, `#`, `+`), with extra SIP headers for the INVITE if the
   * gateway allows them (`headers.from_browser`).
   * @param {string} number
   * @param {{headers?: Record<string, string>}} [options]
   * @returns {Promise<{callId: string}>}
   */
  async call(number, options = {}) {
    this.#unlockAudio();
    const n = String(number).trim();
    this.#dialing = n;
    try {
      const r = await this.request("call", options.headers ? { number: n, headers: options.headers } : { number: n });
      if (!this.#find(r.callId)) this.#focus(newCall(r.callId, "dialing", false, n, null));
      return r;
    } finally {
      this.#dialing = null;
    }
  }

  /**
   * Answers a ringing incoming call: `callId`, else the one that rings. Answering a
   * waiting call (one that rings during another) puts the other on hold; the answered
   * one becomes `state.call`, the other moves to `state.otherCalls`.
   * @param {string} [callId] @returns {Promise<{}>}
   */
  async accept(callId) {
    this.#unlockAudio();
    const target = callId ?? this.#ringing()?.callId;
    const r = await this.request("accept", this.#onCall({}, target));
    const call = target ? this.#find(target) : null;
    if (call) this.#focus(call);
    return r;
  }

  /**
   * Ends a call whatever its state: cancels, rejects (with `code`, e.g. 603) or hangs up.
   * @param {number} [code]
   * @param {string} [callId] the call (default `state.call`); e.g. a waiting call to decline
   * @returns {Promise<{}>}
   */
  hangUp(code, callId) {
    return this.request("hangUp", this.#onCall(code === undefined ? {} : { code }, callId));
  }

  /** Sends DTMF (`0-9 * # A-D`, up to 64) into the call. @param {string} digits @returns {Promise<{}>} */
  dtmf(digits) {
    return this.request("dtmf", this.#onCall({ digits: String(digits) }));
  }

  /**
   * Blind transfer: asks the far end to call `number` instead (the dial policy applies).
   * Progress comes as `transferStateChanged` and in `state.call.transfer`; once it
   * worked the call ends (`completed`, reason `transferred`).
   * @param {string} number @returns {Promise<{}>}
   */
  transfer(number) {
    return this.request("transfer", this.#onCall({ number: String(number).trim() }));
  }

  /**
   * Attended transfer: asks the far end of `callId` (usually a held call) to take over
   * `toCallId` (usually the current one), whose far end then talks to it instead of us
   * (REFER with Replaces). Progress as for `transfer`; both calls end when it worked.
   * @param {string} callId @param {string} toCallId @returns {Promise<{}>}
   */
  transferToCall(callId, toCallId) {
    return this.request("transfer", { callId, toCallId });
  }

  /**
   * Switches to another call of the line (`state.otherCalls`): takes it off hold, which
   * puts the current one on hold. @param {string} callId @returns {Promise<{}>}
   */
  swap(callId) { return this.unhold(callId); }

  /**
   * `params` naming the call they are meant for (`callId`), so that a request for a call
   * that has just ended cannot act on the next one.
   * @param {object} [params] @returns {object}
   */
  #onCall(params = {}, callId = this.#s.call?.callId) {
    return callId ? { ...params, callId } : params;
  }

  /** Puts the far end of `callId` (default `state.call`) on hold. @param {string} [callId] @returns {Promise<{}>} */
  async hold(callId = this.#s.call?.callId) {
    const r = await this.request("hold", this.#onCall({}, callId));
    this.#patch(callId, { onHold: true });
    return r;
  }

  /**
   * Takes the far end of `callId` (default `state.call`) off hold. Another call of the
   * line that was live is put on hold, and `callId` becomes `state.call`.
   * @param {string} [callId] @returns {Promise<{}>}
   */
  async unhold(callId = this.#s.call?.callId) {
    const r = await this.request("unhold", this.#onCall({}, callId));
    this.#patch(callId, { onHold: false });
    const call = callId ? this.#find(callId) : null;
    if (call) this.#focus(call);
    return r;
  }

  // ---- the line's calls: `call` is the one the user is on, `otherCalls` wait or are held

  /** @param {string} callId */
  #find(callId) {
    return this.#s.call?.callId === callId ? this.#s.call : this.#s.otherCalls.find((c) => c.callId === callId) ?? null;
  }

  /** The incoming call that rings: the current one, else a waiting one. */
  #ringing() {
    const rings = (/** @type {any} */ c) => c?.incoming && c.state === "ringing";
    return rings(this.#s.call) ? this.#s.call : this.#s.otherCalls.find(rings) ?? null;
  }

  /** Changes fields of a call wherever it is. @param {string | undefined} callId @param {object} fields */
  #patch(callId, fields) {
    if (!callId) return;
    if (this.#s.call?.callId === callId) this.#set({ call: { ...this.#s.call, ...fields } });
    else if (this.#s.otherCalls.some((c) => c.callId === callId)) {
      this.#set({ otherCalls: this.#s.otherCalls.map((c) => (c.callId === callId ? { ...c, ...fields } : c)) });
    } else return;
    this.#changed();
  }

  /** Makes `call` the current call; the one that was current waits among the others. */
  #focus(call) {
    const current = this.#s.call;
    if (current?.callId === call.callId) return;
    const others = this.#s.otherCalls.filter((c) => c.callId !== call.callId);
    if (current) others.push(current);
    this.#set({ call, otherCalls: others });
    this.#changed();
  }

  /** Every call ends (the session is gone). */
  #endEveryCall() {
    for (const c of [...this.#s.otherCalls, this.#s.call]) {
      if (c) this.#endCall({ callId: c.callId, state: "failed", reason: "connection to sipline lost" });
    }
  }

  /** sipline's view of this session (`getState`). @returns {Promise<import("./sipline").StateSnapshot>} */
  getState() { return this.request("getState"); }

  /** Application-level liveness check. @returns {Promise<{}>} */
  ping() { return this.request("ping"); }

  // ---- notifications -----------------------------------------------------------------

  /** @param {any} data */
  #onFrame(data) {
    let msg;
    try { msg = JSON.parse(data); } catch { return; }
    if (msg.id !== undefined && msg.id !== null && !msg.method) {
      const p = this.#pending.get(msg.id);
      if (!p) return;
      this.#pending.delete(msg.id);
      clearTimeout(p.timer);
      if (msg.error) p.reject(new SiplineError(msg.error.message, msg.error.code, p.method));
      else p.resolve(msg.result ?? {});
      return;
    }
    if (!msg.method) {
      if (msg.error) console.warn("sipline:", msg.error.message);
      return;
    }
    const params = msg.params ?? {};
    this.#emit("notification", msg);
    switch (msg.method) {
      case "registrationStateChanged":
        this.#set({ admission: params.state });
        this.#resume = params.resumeToken
          ? { token: params.resumeToken, windowMs: (params.resumeWindow ?? 0) * 1000, until: null }
          : null;
        if (params.state === "accepted") {
          this.#attempt = 0;
          // calls kept for a resume that did not happen: the session is gone
          this.#endEveryCall();
          if (this.#opt.media) this.#negotiate();
        } else if (params.state === "resumed") {
          this.#attempt = 0;
          this.#setConnection("open");
          // the audio leg may have lived through it; if not, a new one
          const lived = this.#pc?.connectionState === "connected" && this.#s.media !== "failed";
          if (this.#opt.media && !lived) this.#negotiate();
        }
        break;
      case "sipUserNameReceived":
        this.#set({ user: params.user, displayName: params.displayName ?? null, dialPattern: params.dialPattern ?? null });
        break;
      case "phoneLineStateChanged":
        this.#set({ line: params.state, lineCode: params.code ?? null, lineReason: params.reason ?? null });
        break;
      case "incomingCall": {
        const call = newCall(params.callId, "ringing", true, params.from, params.displayName ?? null);
        if (params.replaces && this.#find(params.replaces)) {
          // an attended transfer to us: it takes the place of a call (answered at once)
          this.#focus(call);
        } else if (this.#s.call && this.#s.call.callId !== call.callId) {
          // during a call it waits (call waiting) until answered
          this.#set({ otherCalls: [...this.#s.otherCalls, call] });
        } else {
          this.#set({ call });
        }
        break;
      }
      case "callHoldChanged":
        this.#patch(params.callId, { onHold: params.onHold });
        break;
      case "callStateChanged":
        if (FINAL_CALL_STATES.includes(params.state)) {
          this.#endCall(params);
          return;
        }
        this.#updateCall(params);
        break;
      case "callStats":
        this.#set({ stats: params });
        break;
      case "transferStateChanged":
        this.#patch(params.callId, { transfer: { state: params.state, code: params.code ?? null } });
        break;
    }
    if (NOTIFICATIONS.includes(msg.method)) this.#emit(msg.method, params);
    this.#changed();
  }

  /** @param {import("./sipline").CallStateChanged} p */
  #updateCall(p) {
    const known = this.#find(p.callId);
    // a call placed here that sipline reports before answering the request: it is the current one
    let call = known ?? newCall(p.callId, p.state, false, this.#dialing, null);
    call = { ...call, state: p.state, code: p.code ?? null, reason: p.reason ?? null };
    if (p.state === "inCall" && !call.answeredAt) call.answeredAt = Date.now();
    if (p.state === "inCall" || p.state === "held") this.#playRemote();
    call.heldByPeer = p.state === "held";
    if (known && known !== this.#s.call) {
      this.#set({ otherCalls: this.#s.otherCalls.map((c) => (c.callId === p.callId ? call : c)) });
    } else if (known) {
      this.#set({ call });
    } else {
      this.#focus(call);
    }
  }

  /** @param {import("./sipline").CallStateChanged} p */
  #endCall(p) {
    const other = this.#s.otherCalls.find((c) => c.callId === p.callId)
      ?? (this.#s.call && this.#s.call.callId !== p.callId && !this.#dialing ? newCall(p.callId, p.state, false, null, null) : null);
    if (other) {
      // a waiting or held call ended: the current one goes on
      const last = { ...other, state: p.state, code: p.code ?? null, reason: p.reason ?? null, endedAt: Date.now() };
      this.#set({ otherCalls: this.#s.otherCalls.filter((c) => c !== other) });
      this.#emit("callStateChanged", { ...p, call: last, background: true });
      this.#changed();
      return;
    }
    const prev = this.#s.call && this.#s.call.callId === p.callId ? this.#s.call : newCall(p.callId, p.state, false, this.#dialing, null);
    const last = { ...prev, state: p.state, code: p.code ?? null, reason: p.reason ?? null, endedAt: Date.now() };
    // the next call of the line becomes the current one: the latest answered (the one
    // sipline bridges now), else one still ringing
    const others = this.#s.otherCalls;
    const next = [...others].reverse().find((c) => c.state === "inCall" || c.state === "held") ?? others[0] ?? null;
    const rest = others.filter((c) => c !== next);
    this.#set({ call: next, otherCalls: rest, lastCall: last, stats: null });
    this.#emit("callStateChanged", { ...p, call: last });
    this.#changed();
  }

  // ---- audio: the WebRTC leg ---------------------------------------------------------

  /** @param {import("./sipline").MediaState} media @param {string | null} [error] */
  #setMedia(media, error = null) {
    if (this.#s.media === media && this.#s.mediaError === error) return;
    this.#set({ media, mediaError: error });
    this.#emit("mediaStateChanged", { state: media, error });
    this.#changed();
  }

  /** One peer connection per session, negotiated right after `accepted` and kept. */
  async #negotiate() {
    const ws = this.#ws;
    if (typeof RTCPeerConnection === "undefined") {
      this.#setMedia("unavailable", "this browser has no WebRTC");
      return;
    }
    this.#teardownMedia();
    const pc = new RTCPeerConnection(this.#opt.rtcConfiguration);
    this.#pc = pc;
    this.#iceRestarts = 0;
    const track = this.#mic?.getAudioTracks()[0] ?? null;
    this.#transceiver = pc.addTransceiver(track ?? "audio", {
      direction: "sendrecv",
      streams: this.#mic ? [this.#mic] : [],
    });
    pc.ontrack = (e) => {
      this.#remote = e.streams[0] ?? new MediaStream([e.track]);
      if (this.#audio) this.#audio.srcObject = this.#remote;
      this.#playRemote();
    };
    pc.onconnectionstatechange = () => {
      if (pc !== this.#pc) return;
      const st = pc.connectionState;
      if (st === "connected") {
        this.#iceRestarts = 0;
        this.#setMedia("connected");
      } else if (st === "failed") {
        this.#iceFailed(pc);
      } else if (st === "disconnected") {
        // a network change: restart ICE unless the path comes back by itself soon
        setTimeout(() => {
          if (pc === this.#pc && pc.connectionState === "disconnected") this.#iceFailed(pc);
        }, ICE_DISCONNECTED_MS);
      }
    };
    this.#watchPath(pc);
    this.#setMedia("negotiating");
    try {
      await this.#offer(pc, ws, {});
      if (pc === this.#pc && this.#s.media === "negotiating") this.#setMedia("connecting");
      // ICE that never completes (no usable candidate) is a failure too, not "connecting" forever
      setTimeout(() => {
        if (pc === this.#pc && this.#s.media === "connecting") this.#setMedia("failed", "the audio connection to sipline did not come up");
      }, 15000);
    } catch (e) {
      if (pc !== this.#pc) return;
      this.#mediaFailed(e);
    }
  }

  /**
   * Offers (after ICE gathering completes, or after the timeout with trickle), applies the answer.
   * @param {RTCPeerConnection} pc @param {WebSocket | null} ws @param {RTCOfferOptions} options
   */
  async #offer(pc, ws, options) {
    let sent = false;
    pc.onicecandidate = (/** @type {RTCPeerConnectionIceEvent} */ e) => {
      if (!sent || pc !== this.#pc || ws !== this.#ws) return;
      this.request("candidate", { candidate: e.candidate ? e.candidate.candidate : "" }).catch(() => {});
    };
    await pc.setLocalDescription(await pc.createOffer(options));
    await gatheringComplete(pc, this.#opt.iceGatheringTimeout);
    if (pc !== this.#pc || ws !== this.#ws) return;
    sent = true;
    const { sdp } = await this.request("offer", { type: "offer", sdp: pc.localDescription?.sdp ?? "" }, { timeout: 15000 });
    if (pc !== this.#pc) return;
    await pc.setRemoteDescription({ type: "answer", sdp });
  }

  /** @param {unknown} e */
  #mediaFailed(e) {
    const unavailable = e instanceof SiplineError && e.code === -32000;
    const why = e instanceof Error ? e.message : String(e);
    console.info(`sipline: no audio path (${why}); calls go on without audio`);
    this.#teardownMedia();
    this.#setMedia(unavailable ? "unavailable" : "failed", why);
  }

  /** @param {RTCPeerConnection} pc */
  async #iceFailed(pc) {
    if (this.#restarting) return; // one restart at a time: its own retry follows
    if (this.#iceRestarts >= ICE_RESTARTS || !this.#ws) {
      this.#setMedia("failed", "the audio connection to sipline failed");
      return;
    }
    this.#iceRestarts++;
    this.#restarting = true;
    this.#setMedia("negotiating");
    try {
      await wait(500);
      await this.#offer(pc, this.#ws, { iceRestart: true });
    } catch (e) {
      if (pc === this.#pc) this.#mediaFailed(e);
      return;
    } finally {
      this.#restarting = false;
    }
    // the path may still be down: try again while it does not connect
    setTimeout(() => {
      if (pc === this.#pc && pc.connectionState !== "connected" && this.#s.media !== "failed") this.#iceFailed(pc);
    }, ICE_DISCONNECTED_MS * 2);
  }

  /**
   * Watches the audio path the browser selected: when its ICE consent checks go out and no
   * answer comes back for PATH_SILENT_MS, the path died (Wi-Fi to LTE, a NAT that forgot
   * us) though the browser may still say `connected`: restart ICE. Answers coming back
   * after a restart mean the audio leg works again.
   * @param {RTCPeerConnection} pc
   */
  #watchPath(pc) {
    clearInterval(this.#pathTimer);
    let last = { id: "", requests: 0, responses: 0, bytes: 0 };
    let since = Date.now();
    this.#pathTimer = setInterval(async () => {
      if (pc !== this.#pc) return;
      const now = Date.now();
      const p = pc.connectionState === "connected" ? await selectedPair(pc) : null;
      if (!p || pc !== this.#pc) {
        since = now;
        return;
      }
      // answers to its checks, or media arriving, mean the path lives
      if (p.id !== last.id || p.responses !== last.responses || p.bytes !== last.bytes) {
        last = p;
        since = now;
        if (this.#s.media === "negotiating" && this.#iceRestarts > 0) {
          this.#iceRestarts = 0;
          this.#setMedia("connected");
        }
        return;
      }
      // silence: restart only over a live WebSocket (else resuming renegotiates), and not
      // while a restart is being negotiated
      const unanswered = p.requests - last.requests;
      const quiet = now - since >= PATH_SILENT_MS && unanswered >= 3;
      if (quiet && this.#s.connection === "open" && !this.#restarting) {
        console.info(`sipline: no answer to ${unanswered} ICE checks in ${now - since} ms: restarting ICE`);
        last = p;
        since = now;
        this.#iceFailed(pc);
      }
    }, 1000);
  }

  #teardownMedia() {
    clearInterval(this.#pathTimer);
    this.#pathTimer = null;
    if (this.#pc) {
      this.#pc.onconnectionstatechange = this.#pc.onicecandidate = this.#pc.ontrack = null;
      this.#pc.close();
    }
    this.#pc = null;
    this.#transceiver = null;
    this.#remote = null;
    if (this.#audio) this.#audio.srcObject = null;
    if (this.#s.media !== "idle") this.#setMedia("idle");
  }

  #playRemote() {
    if (this.#audio && this.#remote) this.#audio.play().catch(() => {});
  }

  /** Called from user gestures (call, accept) so that the far end's audio may autoplay. */
  #unlockAudio() {
    if (this.#audio && this.#remote && this.#audio.paused) this.#audio.play().catch(() => {});
  }

  // ---- microphone --------------------------------------------------------------------

  /**
   * Asks for the microphone and sends it on the audio leg (also later, if the leg comes
   * up after). Rejects when refused or absent; `state.microphone` says which.
   * @param {MediaTrackConstraints | boolean} [constraints]
   * @returns {Promise<MediaStream>}
   */
  async openMicrophone(constraints = true) {
    if (!globalThis.navigator?.mediaDevices?.getUserMedia) {
      const why = globalThis.isSecureContext === false
        ? "the microphone needs a secure page (https:// or localhost)"
        : "this browser cannot capture audio";
      this.#setMic("unsupported", why);
      throw new SiplineError(why);
    }
    this.#setMic("pending");
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ audio: constraints, video: false });
    } catch (e) {
      const name = /** @type {any} */ (e)?.name;
      const state = name === "NotAllowedError" || name === "SecurityError" ? "denied"
        : name === "NotFoundError" || name === "OverconstrainedError" ? "absent"
        : name === "NotReadableError" ? "busy" : "failed";
      this.#setMic(state, /** @type {any} */ (e)?.message || String(e));
      throw e;
    }
    this.closeMicrophone(false);
    this.#mic = stream;
    const track = stream.getAudioTracks()[0];
    track.enabled = !this.#s.muted;
    track.addEventListener("ended", () => {
      if (this.#mic !== stream) return;
      this.#mic = null;
      this.#setMic("absent", "the microphone was disconnected");
    });
    if (this.#transceiver) await this.#transceiver.sender.replaceTrack(track).catch(() => {});
    this.#setMic("on");
    return stream;
  }

  /** Stops the microphone. @param {boolean} [report] */
  closeMicrophone(report = true) {
    if (!this.#mic) return;
    for (const t of this.#mic.getTracks()) t.stop();
    this.#mic = null;
    this.#transceiver?.sender.replaceTrack(null).catch(() => {});
    if (report) this.#setMic("off");
  }

  /** Mutes or unmutes the microphone (the far end hears silence). @param {boolean} muted */
  setMuted(muted) {
    this.#set({ muted: !!muted });
    for (const t of this.#mic?.getAudioTracks() ?? []) t.enabled = !muted;
    this.#emit("microphoneChanged", { state: this.#s.microphone, error: this.#s.microphoneError, muted: !!muted });
    this.#changed();
  }

  /** @param {import("./sipline").MicrophoneState} state @param {string | null} [error] */
  #setMic(state, error = null) {
    this.#set({ microphone: state, microphoneError: error });
    this.#emit("microphoneChanged", { state, error, muted: this.#s.muted });
    this.#changed();
  }
}

/**
 * @param {string} callId @param {import("./sipline").CallState} state @param {boolean} incoming
 * @param {string | null | undefined} peer @param {string | null} displayName
 * @returns {import("./sipline").CallInfo}
 */
function newCall(callId, state, incoming, peer, displayName) {
  return {
    callId, state, incoming, peer: peer ?? null, displayName, code: null, reason: null,
    startedAt: Date.now(), answeredAt: null, endedAt: null, onHold: false, heldByPeer: false, transfer: null,
  };
}

/**
 * The candidate pair the browser sends on, with its ICE checks sent, answers received and
 * bytes received (browsers without these statistics, Firefox for one, never trigger the
 * path watch: their own `disconnected` still does).
 * @param {RTCPeerConnection} pc
 * @returns {Promise<{id: string, requests: number, responses: number, bytes: number} | null>}
 */
async function selectedPair(pc) {
  const stats = await pc.getStats().catch(() => null);
  if (!stats) return null;
  /** @type {string | null} */
  let id = null;
  stats.forEach((s) => { if (s.type === "transport" && s.selectedCandidatePairId) id = s.selectedCandidatePairId; });
  const p = id ? stats.get(id) : null;
  if (!id || !p) return null;
  return {
    id, requests: (p.requestsSent ?? 0) + (p.consentRequestsSent ?? 0),
    responses: p.responsesReceived ?? 0, bytes: p.bytesReceived ?? 0,
  };
}

/**
 * Resolves when ICE gathering is complete, or after `ms` (the rest is trickled).
 * @param {RTCPeerConnection} pc @param {number} ms @returns {Promise<void>}
 */
function gatheringComplete(pc, ms) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise(/** @param {(v?: void) => void} resolve */ (resolve) => {
    const done = () => {
      if (pc.iceGatheringState !== "complete" && !timedOut) return;
      pc.removeEventListener("icegatheringstatechange", done);
      clearTimeout(timer);
      resolve();
    };
    let timedOut = false;
    const timer = setTimeout(() => { timedOut = true; done(); }, ms);
    pc.addEventListener("icegatheringstatechange", done);
  });
}
