// The phone's own sounds, made with WebAudio (no audio files): ring tone, ring-back,
// key clicks with DTMF tones, the end-of-call beeps, and the microphone level meter.

const DTMF = {
  1: [697, 1209], 2: [697, 1336], 3: [697, 1477], A: [697, 1633],
  4: [770, 1209], 5: [770, 1336], 6: [770, 1477], B: [770, 1633],
  7: [852, 1209], 8: [852, 1336], 9: [852, 1477], C: [852, 1633],
  "*": [941, 1209], 0: [941, 1336], "#": [941, 1477], D: [941, 1633],
};

export class Sounds {
  /** @type {AudioContext | null} */ #ctx = null;
  /** @type {GainNode | null} */ #out = null;
  /** @type {{stop: () => void} | null} */ #loop = null;
  #loopName = "";

  /** The shared AudioContext, created on first use. */
  get context() {
    if (!this.#ctx) {
      const Ctx = globalThis.AudioContext ?? /** @type {any} */ (globalThis).webkitAudioContext;
      if (!Ctx) return null;
      this.#ctx = new Ctx({ latencyHint: "interactive" });
      this.#out = this.#ctx.createGain();
      this.#out.gain.value = 0.9;
      this.#out.connect(this.#ctx.destination);
    }
    return this.#ctx;
  }

  /** Browsers start audio only after a user gesture: call this from one. */
  unlock() {
    const ctx = this.context;
    if (ctx && ctx.state === "suspended") ctx.resume().catch(() => {});
  }

  /** Plays the sum of `freqs` from `at` for `dur` seconds at `level`, with soft edges. */
  /** @param {number[]} freqs @param {number} at @param {number} dur @param {number} level */
  #tone(freqs, at, dur, level) {
    const ctx = this.context;
    if (!ctx || !this.#out) return;
    const g = ctx.createGain();
    g.gain.setValueAtTime(0, at);
    g.gain.linearRampToValueAtTime(level, at + 0.012);
    g.gain.setValueAtTime(level, at + Math.max(0.012, dur - 0.025));
    g.gain.linearRampToValueAtTime(0, at + dur);
    g.connect(this.#out);
    for (const f of freqs) {
      const o = ctx.createOscillator();
      o.frequency.value = f;
      o.connect(g);
      o.start(at);
      o.stop(at + dur + 0.02);
    }
    setTimeout(() => g.disconnect(), (at - ctx.currentTime + dur + 0.1) * 1000);
  }

  /** A short DTMF tone for a key press (the key click). @param {string} digit */
  key(digit) {
    const ctx = this.context;
    const f = DTMF[/** @type {keyof typeof DTMF} */ (String(digit).toUpperCase())];
    if (!ctx || !f) return;
    this.unlock();
    this.#tone(f, ctx.currentTime + 0.005, 0.11, 0.09);
  }

  /** Repeats `pattern` ([seconds on, freqs] / seconds off steps) every `period` s until stopped. */
  /** @param {string} name @param {number} period @param {[number, number[] | null, number][]} pattern */
  #repeat(name, period, pattern) {
    if (this.#loopName === name) return;
    this.stop();
    const ctx = this.context;
    if (!ctx) return;
    this.unlock();
    let next = ctx.currentTime + 0.05;
    const schedule = () => {
      while (next < ctx.currentTime + period + 0.5) {
        let t = next;
        for (const [dur, freqs, level] of pattern) {
          if (freqs) this.#tone(freqs, t, dur, level);
          t += dur;
        }
        next += period;
      }
    };
    schedule();
    const timer = setInterval(schedule, 500);
    this.#loopName = name;
    this.#loop = { stop: () => clearInterval(timer) };
  }

  /** Incoming call: a double ring, 0.4 s on, 0.2 off, 0.4 on, every 3 s (a soft 400+450 Hz trill). */
  ring() {
    this.#repeat("ring", 3, [[0.4, [400, 450], 0.16], [0.2, null, 0], [0.4, [400, 450], 0.16]]);
  }

  /** The far end rings: 2 s of 440+480 Hz every 6 s. */
  ringback() {
    this.#repeat("ringback", 6, [[2, [440, 480], 0.07]]);
  }

  /** Stops the ring or ring-back (the scheduled second at most fades out). */
  stop() {
    this.#loop?.stop();
    this.#loop = null;
    this.#loopName = "";
    if (this.#out && this.#ctx) {
      // silence what was already scheduled
      const old = this.#out;
      old.gain.setTargetAtTime(0, this.#ctx.currentTime, 0.01);
      setTimeout(() => old.disconnect(), 200);
      this.#out = this.#ctx.createGain();
      this.#out.gain.value = 0.9;
      this.#out.connect(this.#ctx.destination);
    }
  }

  /** Three short beeps when a call ends. */
  hangup() {
    const ctx = this.context;
    if (!ctx) return;
    this.stop();
    for (let i = 0; i < 3; i++) this.#tone([425], ctx.currentTime + 0.05 + i * 0.22, 0.12, 0.06);
  }
}

/**
 * Measures a stream's level for a meter: calls `onLevel(0..1)` about 20 times a second.
 * @param {Sounds} sounds @param {MediaStream} stream @param {(level: number) => void} onLevel
 * @returns {() => void} stops measuring
 */
export function meter(sounds, stream, onLevel) {
  const ctx = sounds.context;
  if (!ctx) return () => {};
  const src = ctx.createMediaStreamSource(stream);
  const an = ctx.createAnalyser();
  an.fftSize = 1024;
  src.connect(an);
  const buf = new Float32Array(an.fftSize);
  let shown = 0;
  const timer = setInterval(() => {
    an.getFloatTimeDomainData(buf);
    let sum = 0;
    for (const v of buf) sum += v * v;
    const db = 10 * Math.log10(sum / buf.length + 1e-10); // dBFS of the RMS
    const level = Math.max(0, Math.min(1, (db + 60) / 54)); // -60..-6 dBFS → 0..1
    shown = level > shown ? level : shown * 0.8 + level * 0.2; // fast attack, slow fall
    onLevel(shown);
  }, 50);
  return () => {
    clearInterval(timer);
    src.disconnect();
  };
}
