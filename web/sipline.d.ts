// Types of sipline.js, the browser client of sipline's API v1 (docs/api.md, docs/client.md).
// Editors pick this file up next to sipline.js; with TypeScript, copy both side by side.

export type RegistrationState = "accepted" | "resumed" | "connectionLimit";
export type LineState = "registering" | "registered" | "registrationFailed" | "unregistering" | "unregistered";
export type CallState =
  | "dialing" | "ringing" | "earlyMedia" | "inCall" | "held"
  | "busy" | "rejected" | "cancelled" | "noAnswer" | "completed" | "failed";
export type FinalCallState = "busy" | "rejected" | "cancelled" | "noAnswer" | "completed" | "failed";

/** `idle` before connect(); `reconnecting` while going back to the session the gateway keeps after a
 * dropped connection (within its resume window); `waiting` while a reconnection is scheduled (see `retryAt`). */
export type ConnectionState = "idle" | "connecting" | "open" | "reconnecting" | "waiting" | "closed";
/**
 * The session's WebRTC audio leg: `unavailable` when the gateway has no audio (its `offer`
 * answered -32000), `failed` when negotiation or ICE failed; calls work without it.
 */
export type MediaState = "idle" | "negotiating" | "connecting" | "connected" | "unavailable" | "failed";
/** `denied`: refused by the user or a policy; `absent`: no microphone; `busy`: in use elsewhere. */
export type MicrophoneState = "off" | "pending" | "on" | "denied" | "absent" | "busy" | "unsupported" | "failed";

// ---- notifications (docs/api.md), the `detail` of the events of the same name ----------

export interface RegistrationStateChanged {
  state: RegistrationState;
  /** With `accepted` and `resumed`: the single-use token that gets the session back after a dropped connection. */
  resumeToken?: string;
  /** Seconds the gateway keeps the session for that. */
  resumeWindow?: number;
}
export interface SipUserNameReceived { user: string; displayName: string | null; dialPattern?: string }
export interface PhoneLineStateChanged { state: LineState; code?: number; reason?: string }
export interface IncomingCall {
  callId: string;
  from: string;
  displayName: string | null;
  /** Headers of the INVITE the gateway passes on (`headers.to_browser`). */
  headers?: Record<string, string>;
  /** The call this one takes the place of (an attended transfer to us): answered at once. */
  replaces?: string;
}
export interface CallStateChanged {
  callId: string;
  state: CallState;
  code?: number;
  reason?: string;
  /** Added by sipline.js to final states: the call as it ended. */
  call?: CallInfo;
  /** Added by sipline.js: a final state of a call that was not `state.call` (waiting or held). */
  background?: boolean;
}
export interface CallHoldChanged { callId: string; onHold: boolean }
/** The far end of `callId` transferred us: sipline calls `number` as `newCallId` (it becomes `state.call`). */
export interface CallReferred { callId: string; newCallId: string; number: string }
export interface CallErrorOccurred { callId?: string | null; code?: number | null; reason: string }
export interface DtmfReceived { callId: string; digit: string; method: "rfc4733" | "info" }
export type TransferState = "trying" | "ringing" | "completed" | "failed";
export interface TransferStateChanged { callId: string; state: TransferState; code?: number }
export interface LegStats {
  codec?: string;
  packetsSent?: number;
  packetsReceived?: number;
  packetsLost?: number;
  /** 0..1 */
  loss?: number;
  jitterMs?: number;
  rttMs?: number;
}
export interface CallStats { callId: string; browser: LegStats; sip: LegStats }

// ---- events of sipline.js itself ------------------------------------------------------

export interface ConnectionStateChanged {
  state: ConnectionState;
  /** WebSocket close code of the last close (1013: connection limit). */
  code: number | null;
  reason: string | null;
  /** When the next reconnection attempt happens (ms since the epoch), while `waiting`. */
  retryAt: number | null;
}
export interface MediaStateChanged { state: MediaState; error: string | null }
export interface MicrophoneChanged { state: MicrophoneState; error: string | null; muted: boolean }
export interface JsonRpcNotification { jsonrpc: "2.0"; method: string; params?: any }

export interface SiplinePhoneEventMap {
  registrationStateChanged: CustomEvent<RegistrationStateChanged>;
  sipUserNameReceived: CustomEvent<SipUserNameReceived>;
  phoneLineStateChanged: CustomEvent<PhoneLineStateChanged>;
  incomingCall: CustomEvent<IncomingCall>;
  callStateChanged: CustomEvent<CallStateChanged>;
  callErrorOccurred: CustomEvent<CallErrorOccurred>;
  dtmfReceived: CustomEvent<DtmfReceived>;
  transferStateChanged: CustomEvent<TransferStateChanged>;
  callHoldChanged: CustomEvent<CallHoldChanged>;
  callReferred: CustomEvent<CallReferred>;
  callStats: CustomEvent<CallStats>;
  connectionStateChanged: CustomEvent<ConnectionStateChanged>;
  mediaStateChanged: CustomEvent<MediaStateChanged>;
  microphoneChanged: CustomEvent<MicrophoneChanged>;
  /** Every notification frame as received, including ones this version does not know. */
  notification: CustomEvent<JsonRpcNotification>;
  /** After any change of `phone.state`; `detail` is the new snapshot. */
  statechange: CustomEvent<PhoneState>;
}

// ---- state ---------------------------------------------------------------------------

export interface CallInfo {
  callId: string;
  state: CallState;
  incoming: boolean;
  /** The number called, or the caller's number. */
  peer: string | null;
  /** The caller's display name, when the PBX passed one on. */
  displayName: string | null;
  code: number | null;
  reason: string | null;
  /** ms since the epoch */
  startedAt: number;
  answeredAt: number | null;
  endedAt: number | null;
  /** We put the far end on hold (hold(), or we turned to another call of the line). */
  onHold: boolean;
  /** The far end put us on hold. */
  heldByPeer: boolean;
  /** The last word on a transfer of this call (`transfer()`), if one was asked for. */
  transfer: { state: TransferState; code: number | null } | null;
}

export interface PhoneState {
  connection: ConnectionState;
  closeCode: number | null;
  closeReason: string | null;
  retryAt: number | null;
  /** null until sipline said whether it admitted this connection. */
  admission: RegistrationState | null;
  user: string | null;
  displayName: string | null;
  /** The gateway's dial policy (a regular expression over the whole number), once admitted. */
  dialPattern: string | null;
  line: LineState | null;
  lineCode: number | null;
  lineReason: string | null;
  /** The call the user is on (or that rings). */
  call: CallInfo | null;
  /** The line's other calls (call waiting): ringing in the background, or on hold. */
  otherCalls: CallInfo[];
  /** The previous call, as it ended. */
  lastCall: CallInfo | null;
  media: MediaState;
  mediaError: string | null;
  microphone: MicrophoneState;
  microphoneError: string | null;
  muted: boolean;
  /** The latest callStats of the current call. */
  stats: CallStats | null;
}

/** The result of getState (docs/api.md). */
export interface StateSnapshot {
  user: string;
  displayName: string | null;
  line: LineState;
  code?: number;
  reason?: string;
  /** The call the browser talks in (else the latest). */
  call?: CallSnapshot;
  /** Every call of the line, oldest first (more than one with call waiting). */
  calls?: CallSnapshot[];
}
export interface CallSnapshot { callId: string; state: CallState; peer: string; incoming: boolean; onHold: boolean }

// ---- options ---------------------------------------------------------------------------

export interface ReconnectOptions {
  /** First delay after a lost connection, ms (default 1000); doubles per attempt, ±20 % jitter. */
  minDelay?: number;
  /** Longest delay, ms (default 30000). */
  maxDelay?: number;
  /** First delay after `connectionLimit` (close code 1013), ms (default 20000). */
  limitDelay?: number;
  /** Longest delay while the pool stays full, ms (default 120000). */
  limitMaxDelay?: number;
}

export interface SiplinePhoneOptions {
  /** WebSocket URL; default: /api/v1/ws on the origin sipline.js was loaded from. */
  url?: string;
  /** Access token (sent as ?token=), needed when sipline listens beyond loopback. */
  token?: string | null;
  /** Reconnection back-off, or false to never reconnect by itself. */
  reconnect?: ReconnectOptions | false;
  /** How long a request waits for its answer, ms (default 10000). */
  requestTimeout?: number;
  /** Application-level ping period, ms (default 20000; 0 = off). An unanswered ping drops the connection. */
  pingInterval?: number;
  /** How long to wait for ICE gathering before sending the offer and trickling the rest, ms (default 2000). */
  iceGatheringTimeout?: number;
  /** Set up the WebRTC audio leg after `accepted` (default true). */
  media?: boolean;
  /** RTCPeerConnection configuration (default: no STUN/TURN servers; sipline is ICE-lite). */
  rtcConfiguration?: RTCConfiguration;
  /** Where the far end plays: your `<audio>` element; default a detached one; null = none. */
  audio?: HTMLAudioElement | null;
}

// ---- the classes -----------------------------------------------------------------------

export declare const FINAL_CALL_STATES: readonly FinalCallState[];
export declare const NOTIFICATIONS: readonly (keyof SiplinePhoneEventMap)[];
export declare const CLOSE_TRY_AGAIN_LATER: 1013;

export declare class SiplineError extends Error {
  constructor(message: string, code?: number | null, method?: string);
  /** JSON-RPC error code (-32000: not possible in the current state; -32602: bad params); null: no answer / not connected. */
  code: number | null;
  /** The request that failed. */
  method: string | undefined;
}

export declare class SiplinePhone extends EventTarget {
  constructor(options?: SiplinePhoneOptions);

  /** A snapshot of everything known about the session (a copy). */
  readonly state: PhoneState;
  readonly microphone: MediaStream | null;
  readonly remoteStream: MediaStream | null;
  readonly audioElement: HTMLAudioElement | null;
  readonly peerConnection: RTCPeerConnection | null;

  /** Opens the session; reconnects with back-off until close(). */
  connect(): this;
  /** Reconnects now (e.g. a "Try again" button after connectionLimit). */
  reconnect(): this;
  /** Ends the session for good (sipline hangs up and frees the account). */
  close(): void;

  request<T = any>(method: string, params?: object, opts?: { timeout?: number }): Promise<T>;
  /** `headers`: extra SIP headers for the INVITE (only those in the gateway's `headers.from_browser`). */
  call(number: string, options?: { headers?: Record<string, string> }): Promise<{ callId: string }>;
  /** Answers `callId`, else the call that rings; a call it interrupts is put on hold. */
  accept(callId?: string): Promise<{}>;
  /** Ends `callId` (default `state.call`). */
  hangUp(code?: number, callId?: string): Promise<{}>;
  dtmf(digits: string): Promise<{}>;
  /** Blind transfer of the call to `number` (REFER); see `transferStateChanged`. */
  transfer(number: string): Promise<{}>;
  hold(callId?: string): Promise<{}>;
  /** Takes `callId` (default `state.call`) off hold; the line's live call is held, `callId` becomes `state.call`. */
  unhold(callId?: string): Promise<{}>;
  /** Attended transfer: the far end of `callId` takes over `toCallId` (REFER with Replaces). */
  transferToCall(callId: string, toCallId: string): Promise<{}>;
  /** Switches to another call of `state.otherCalls` (its `unhold`). */
  swap(callId: string): Promise<{}>;
  getState(): Promise<StateSnapshot>;
  ping(): Promise<{}>;

  openMicrophone(constraints?: MediaTrackConstraints | boolean): Promise<MediaStream>;
  closeMicrophone(report?: boolean): void;
  setMuted(muted: boolean): void;

  addEventListener<K extends keyof SiplinePhoneEventMap>(
    type: K, listener: (this: SiplinePhone, ev: SiplinePhoneEventMap[K]) => any,
    options?: boolean | AddEventListenerOptions): void;
  addEventListener(type: string, listener: EventListenerOrEventListenerObject | null,
    options?: boolean | AddEventListenerOptions): void;
  removeEventListener<K extends keyof SiplinePhoneEventMap>(
    type: K, listener: (this: SiplinePhone, ev: SiplinePhoneEventMap[K]) => any,
    options?: boolean | EventListenerOptions): void;
  removeEventListener(type: string, listener: EventListenerOrEventListenerObject | null,
    options?: boolean | EventListenerOptions): void;
}
