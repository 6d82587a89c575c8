// Microphone recording (16 kHz mono PCM through an AudioWorklet, packed as WAV, or streamed block by block at
// another rate), progressive MP3 playback
// (MediaSource `audio/mpeg`, a Blob when MediaSource is missing), and camera snapshots.

export const TARGET_RATE = 16000;

/**
 * Hold-to-talk recorder. `start()` opens the microphone on first use (kept open for quick barge-in) and
 * records; `stop()` returns the recording as a 16 kHz mono 16-bit WAV file.
 *
 * Streaming use (the realtime page): with `onBlock`, every recorded block goes to it as it comes (about 2048
 * samples at the context's rate, which is `rate` when the browser can record at it) instead of being kept.
 */
export class Recorder {
  /**
   * @param {{ onLevel?: (level: number) => void, onBlock?: (samples: Float32Array, sampleRate: number) => void, rate?: number }} [opts]
   *   `onLevel`: the RMS level of each recorded block; `onBlock`: stream the blocks; `rate`: the sample rate
   *   asked of the audio context (16 kHz by default)
   */
  constructor(opts = {}) {
    this.onLevel = opts.onLevel;
    this.onBlock = opts.onBlock;
    this.rate = opts.rate ?? TARGET_RATE;
    /** @type {AudioContext | null} */
    this.ctx = null;
    /** @type {AudioWorkletNode | null} */
    this.node = null;
    /** @type {MediaStream | null} */
    this.stream = null;
    /** @type {Float32Array[]} */
    this.blocks = [];
    this.recording = false;
    /** seconds recorded so far in this recording */
    this.seconds = 0;
    /** @type {((rate: number) => void) | null} */
    this.onDone = null;
  }

  /** Open the microphone and the audio graph (once). */
  async open() {
    if (this.ctx && this.node) return;
    if (!navigator.mediaDevices?.getUserMedia) {
      throw new Error("This browser gives no microphone access here (it needs https or localhost).");
    }
    this.stream = await navigator.mediaDevices.getUserMedia({
      audio: { channelCount: 1, echoCancellation: true, noiseSuppression: true, autoGainControl: true },
    });
    // Ask for a context at `rate`; where the browser cannot feed the microphone into one, resample later.
    /** @type {AudioContext} */
    let ctx;
    /** @type {MediaStreamAudioSourceNode} */
    let source;
    try {
      ctx = new AudioContext({ sampleRate: this.rate });
      source = ctx.createMediaStreamSource(this.stream);
    } catch {
      ctx = new AudioContext();
      source = ctx.createMediaStreamSource(this.stream);
    }
    await ctx.audioWorklet.addModule(new URL("./pcm-recorder.worklet.js", import.meta.url));
    const node = new AudioWorkletNode(ctx, "pcm-recorder", {
      numberOfInputs: 1,
      numberOfOutputs: 0,
      channelCount: 1,
      channelCountMode: "explicit",
    });
    node.port.onmessage = (e) => {
      const msg = /** @type {{ samples?: Float32Array, level?: number, done?: boolean, sampleRate?: number }} */ (e.data);
      if (msg.samples) {
        if (this.onBlock) this.onBlock(msg.samples, ctx.sampleRate);
        else this.blocks.push(msg.samples);
        this.seconds += msg.samples.length / ctx.sampleRate;
        if (msg.level !== undefined) this.onLevel?.(msg.level);
      }
      if (msg.done) this.onDone?.(msg.sampleRate ?? ctx.sampleRate);
    };
    source.connect(node);
    this.ctx = ctx;
    this.node = node;
  }

  /** Start recording (opens the microphone the first time). */
  async start() {
    await this.open();
    const ctx = /** @type {AudioContext} */ (this.ctx);
    if (ctx.state !== "running") await ctx.resume();
    this.blocks = [];
    this.seconds = 0;
    this.recording = true;
    this.node?.port.postMessage("start");
  }

  /**
   * Stop recording.
   * @returns {Promise<{ wav: Uint8Array, seconds: number }>} the recording as 16 kHz mono WAV
   */
  async stop() {
    if (!this.recording || !this.node) return { wav: encodeWav(new Int16Array(0), TARGET_RATE), seconds: 0 };
    this.recording = false;
    const node = this.node;
    const rate = await new Promise((/** @type {(rate: number) => void} */ resolve) => {
      this.onDone = resolve;
      node.port.postMessage("flush");
    });
    this.onDone = null;
    this.onLevel?.(0);
    const samples = concat(this.blocks);
    this.blocks = [];
    const pcm = floatToInt16(rate === TARGET_RATE ? samples : resample(samples, rate, TARGET_RATE));
    return { wav: encodeWav(pcm, TARGET_RATE), seconds: pcm.length / TARGET_RATE };
  }

  /** Release the microphone. */
  async close() {
    this.stream?.getTracks().forEach((t) => t.stop());
    await this.ctx?.close();
    this.ctx = null;
    this.node = null;
    this.stream = null;
  }
}

/** @param {Float32Array[]} blocks */
function concat(blocks) {
  const out = new Float32Array(blocks.reduce((n, b) => n + b.length, 0));
  let at = 0;
  for (const b of blocks) {
    out.set(b, at);
    at += b.length;
  }
  return out;
}

/**
 * Linear-interpolation resampler (used only when the browser records at another rate).
 * @param {Float32Array} input
 * @param {number} from
 * @param {number} to
 */
export function resample(input, from, to) {
  if (from === to) return input;
  const out = new Float32Array(Math.floor((input.length * to) / from));
  const step = from / to;
  for (let i = 0; i < out.length; i++) {
    const x = i * step;
    const j = Math.floor(x);
    const frac = x - j;
    const a = input[j] ?? 0;
    const b = input[j + 1] ?? a;
    out[i] = a + (b - a) * frac;
  }
  return out;
}

/** @param {Float32Array} input */
export function floatToInt16(input) {
  const out = new Int16Array(input.length);
  for (let i = 0; i < input.length; i++) {
    const s = Math.max(-1, Math.min(1, input[i]));
    out[i] = s < 0 ? s * 0x8000 : s * 0x7fff;
  }
  return out;
}

/**
 * A RIFF/WAVE file holding mono 16-bit PCM.
 * @param {Int16Array} pcm
 * @param {number} sampleRate
 */
export function encodeWav(pcm, sampleRate) {
  const dataBytes = pcm.length * 2;
  const buf = new ArrayBuffer(44 + dataBytes);
  const v = new DataView(buf);
  const ascii = (/** @type {number} */ at, /** @type {string} */ s) => {
    for (let i = 0; i < s.length; i++) v.setUint8(at + i, s.charCodeAt(i));
  };
  ascii(0, "RIFF");
  v.setUint32(4, 36 + dataBytes, true);
  ascii(8, "WAVE");
  ascii(12, "fmt ");
  v.setUint32(16, 16, true); // fmt chunk size
  v.setUint16(20, 1, true); // PCM
  v.setUint16(22, 1, true); // mono
  v.setUint32(24, sampleRate, true);
  v.setUint32(28, sampleRate * 2, true); // byte rate
  v.setUint16(32, 2, true); // block align
  v.setUint16(34, 16, true); // bits per sample
  ascii(36, "data");
  v.setUint32(40, dataBytes, true);
  new Int16Array(buf, 44).set(pcm);
  return new Uint8Array(buf);
}

/**
 * Plays MP3 while it streams in: chunks are appended to a MediaSource `audio/mpeg` SourceBuffer (queued while
 * it is updating). Without MediaSource, the chunks are collected and played as one Blob at the end.
 */
export class Mp3Player {
  /** @param {HTMLAudioElement} audio */
  constructor(audio) {
    this.audio = audio;
    this.streaming = typeof MediaSource !== "undefined" && MediaSource.isTypeSupported("audio/mpeg");
    /** @type {MediaSource | null} */
    this.source = null;
    /** @type {SourceBuffer | null} */
    this.buffer = null;
    /** @type {Uint8Array[]} */
    this.queue = [];
    /** @type {Uint8Array[]} */
    this.chunks = [];
    this.ended = false;
    this.bytes = 0;
    /** @type {string | null} */
    this.url = null;
    this.started = false;
    /** @type {string | null} */
    this.error = null;
  }

  /** Stop what is playing and get ready for a new answer. */
  reset() {
    this.audio.pause();
    if (this.source && this.source.readyState === "open") {
      try {
        this.source.endOfStream();
      } catch {
        /* already ended */
      }
    }
    this.source = null;
    this.buffer = null;
    this.queue = [];
    this.chunks = [];
    this.ended = false;
    this.bytes = 0;
    this.started = false;
    this.error = null;
    this.audio.removeAttribute("src");
    this.audio.load();
    if (this.url) URL.revokeObjectURL(this.url);
    this.url = null;
  }

  /** @param {Uint8Array} chunk MP3 bytes */
  append(chunk) {
    if (this.ended || chunk.length === 0) return;
    this.bytes += chunk.length;
    if (!this.streaming) {
      this.chunks.push(chunk);
      return;
    }
    if (!this.source) this.open();
    this.queue.push(chunk);
    this.pump();
  }

  /** No more chunks for this answer. */
  end() {
    if (this.ended) return;
    this.ended = true;
    if (!this.streaming) {
      if (this.chunks.length === 0) return;
      this.url = URL.createObjectURL(new Blob(/** @type {BlobPart[]} */ (this.chunks), { type: "audio/mpeg" }));
      this.audio.src = this.url;
      this.play();
      return;
    }
    this.pump();
  }

  open() {
    const source = new MediaSource();
    this.source = source;
    this.url = URL.createObjectURL(source);
    this.audio.src = this.url;
    source.addEventListener(
      "sourceopen",
      () => {
        if (this.source !== source) return;
        const sb = source.addSourceBuffer("audio/mpeg");
        sb.mode = "sequence";
        sb.addEventListener("updateend", () => this.pump());
        sb.addEventListener("error", () => {
          this.error = "the browser could not decode the MP3 stream";
        });
        this.buffer = sb;
        this.pump();
      },
      { once: true },
    );
  }

  pump() {
    const sb = this.buffer;
    const source = this.source;
    if (!sb || !source || source.readyState !== "open" || sb.updating) return;
    if (this.queue.length > 0) {
      const parts = this.queue.splice(0, this.queue.length);
      const size = parts.reduce((n, p) => n + p.length, 0);
      const joined = new Uint8Array(size);
      let at = 0;
      for (const p of parts) {
        joined.set(p, at);
        at += p.length;
      }
      try {
        sb.appendBuffer(joined);
      } catch (exc) {
        this.error = String(exc);
        return;
      }
      if (!this.started) this.play();
      return;
    }
    if (this.ended) {
      try {
        source.endOfStream();
      } catch {
        /* closed meanwhile */
      }
    }
  }

  play() {
    this.started = true;
    this.audio.play().catch((exc) => {
      // Autoplay can be refused without a user gesture: the controls stay usable.
      this.error = `playback did not start by itself (${exc instanceof Error ? exc.name : String(exc)}): press play`;
    });
  }
}

/**
 * Capture a still from a camera stream as JPEG bytes.
 * @param {HTMLVideoElement} video a playing <video> showing the camera
 * @param {number} [maxSide]
 */
export async function snapshot(video, maxSide = 1280) {
  const scale = Math.min(1, maxSide / Math.max(video.videoWidth, video.videoHeight));
  const canvas = document.createElement("canvas");
  canvas.width = Math.round(video.videoWidth * scale);
  canvas.height = Math.round(video.videoHeight * scale);
  const g = canvas.getContext("2d");
  if (!g) throw new Error("no 2D canvas");
  g.drawImage(video, 0, 0, canvas.width, canvas.height);
  return canvasJpeg(canvas);
}

/**
 * Shrink a large image file to a JPEG of at most `maxSide` pixels a side; small files are kept as they are.
 * @param {Blob} file
 * @param {number} [maxBytes]
 * @param {number} [maxSide]
 * @returns {Promise<Uint8Array>}
 */
export async function prepareImage(file, maxBytes = 1 << 20, maxSide = 1600) {
  if (file.size <= maxBytes) return new Uint8Array(await file.arrayBuffer());
  const bitmap = await createImageBitmap(file);
  const scale = Math.min(1, maxSide / Math.max(bitmap.width, bitmap.height));
  const canvas = document.createElement("canvas");
  canvas.width = Math.round(bitmap.width * scale);
  canvas.height = Math.round(bitmap.height * scale);
  const g = canvas.getContext("2d");
  if (!g) throw new Error("no 2D canvas");
  g.drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  bitmap.close();
  return canvasJpeg(canvas);
}

/**
 * @param {HTMLCanvasElement} canvas
 * @returns {Promise<Uint8Array>}
 */
function canvasJpeg(canvas) {
  return new Promise((resolve, reject) => {
    canvas.toBlob(
      (blob) => {
        if (!blob) reject(new Error("could not encode the image"));
        else blob.arrayBuffer().then((b) => resolve(new Uint8Array(b)), reject);
      },
      "image/jpeg",
      0.85,
    );
  });
}
