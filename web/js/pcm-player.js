// Gap-free playback of streamed 16-bit PCM (the realtime page's answers): each chunk becomes an AudioBuffer
// scheduled on one AudioContext right after the previous one, so consecutive chunks join without a gap. The
// player knows, per conversation item, how many milliseconds were actually played (for
// `conversation.item.truncate` on barge-in), and stops everything at once.

/** Lead given to the first chunk (and after an underrun), in seconds: time to schedule without a click. */
const LEAD_S = 0.05;

/** @typedef {{ at: number, dur: number }} Segment a chunk's start on the context clock and its length (s) */
/** @typedef {{ segments: Segment[], samples: number }} ItemAudio */

export class PcmPlayer {
  /** @param {number} rate the PCM's sample rate (the context runs at it where the browser allows) */
  constructor(rate) {
    this.rate = rate;
    /** @type {AudioContext | null} */
    this.ctx = null;
    /** @type {Set<AudioBufferSourceNode>} */
    this.sources = new Set();
    /** where the next chunk starts on the context clock (s) */
    this.endTime = 0;
    /** @type {Map<string, ItemAudio>} audio scheduled per item id */
    this.items = new Map();
    /** @type {Set<string>} items stopped by `stop()`: their late chunks are dropped */
    this.cut = new Set();
    /** @type {string | null} the item whose audio was scheduled last */
    this.current = null;
    /** underruns: a chunk arrived after the previous one had finished playing */
    this.gaps = 0;
  }

  /** Create (or resume) the audio context; call from a user gesture. */
  async open() {
    if (!this.ctx) this.ctx = new AudioContext({ sampleRate: this.rate });
    if (this.ctx.state !== "running") await this.ctx.resume();
  }

  /**
   * Schedule a chunk of an item's audio right after what is already scheduled.
   * @param {string} itemId
   * @param {Int16Array} pcm mono samples at `rate`
   */
  enqueue(itemId, pcm) {
    const ctx = this.ctx;
    if (!ctx || pcm.length === 0 || this.cut.has(itemId)) return;
    const f32 = new Float32Array(pcm.length);
    for (let i = 0; i < pcm.length; i++) f32[i] = pcm[i] / 0x8000;
    const buffer = ctx.createBuffer(1, f32.length, this.rate);
    buffer.copyToChannel(f32, 0);
    const source = ctx.createBufferSource();
    source.buffer = buffer;
    source.connect(ctx.destination);
    const now = ctx.currentTime;
    if (this.endTime < now) {
      if (this.endTime > 0 && this.current === itemId) this.gaps += 1;
      this.endTime = now + LEAD_S;
    }
    let item = this.items.get(itemId);
    if (!item) {
      item = { segments: [], samples: 0 };
      this.items.set(itemId, item);
    }
    item.segments.push({ at: this.endTime, dur: buffer.duration });
    item.samples += pcm.length;
    source.start(this.endTime);
    this.endTime += buffer.duration;
    this.current = itemId;
    this.sources.add(source);
    source.onended = () => this.sources.delete(source);
  }

  /**
   * Milliseconds of an item's audio played so far (what the listener heard, by the context's clock).
   * @param {string} itemId
   */
  playedMs(itemId) {
    const item = this.items.get(itemId);
    if (!item || !this.ctx) return 0;
    const now = this.ctx.currentTime;
    let played = 0;
    for (const s of item.segments) played += Math.min(s.dur, Math.max(0, now - s.at));
    return played * 1000;
  }

  /**
   * Milliseconds of an item's audio received (scheduled).
   * @param {string} itemId
   */
  queuedMs(itemId) {
    const item = this.items.get(itemId);
    return item ? (item.samples / this.rate) * 1000 : 0;
  }

  /** True while scheduled audio has not finished playing. */
  get playing() {
    return this.ctx !== null && this.endTime > this.ctx.currentTime;
  }

  /**
   * Stop all playback at once. The item that was playing is cut (its later chunks are dropped).
   * @returns {{ itemId: string, playedMs: number } | null} that item and how much of it was heard (whole ms)
   */
  stop() {
    const itemId = this.current;
    const heard = itemId === null ? null : { itemId, playedMs: Math.floor(this.playedMs(itemId)) };
    for (const source of this.sources) {
      try {
        source.stop();
      } catch {
        /* not started yet */
      }
      source.disconnect();
    }
    this.sources.clear();
    this.endTime = 0;
    if (itemId !== null) {
      this.cut.add(itemId);
      // What was scheduled but not heard no longer counts as played.
      const item = this.items.get(itemId);
      if (item && heard) item.segments = [{ at: 0, dur: heard.playedMs / 1000 }];
    }
    this.current = null;
    return heard;
  }

  /** Release the audio context. */
  async close() {
    this.stop();
    await this.ctx?.close();
    this.ctx = null;
  }
}
