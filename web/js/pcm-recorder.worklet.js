// AudioWorklet processor: while recording, collects the first input channel and posts it to the page in
// blocks of 2048 samples (Float32Array, transferred), each with its RMS level. "flush" posts what is left,
// then {done: true}.

const BLOCK = 2048;

class PcmRecorder extends AudioWorkletProcessor {
  constructor() {
    super();
    this.recording = false;
    this.buffer = new Float32Array(BLOCK);
    this.filled = 0;
    this.port.onmessage = (/** @type {MessageEvent} */ e) => {
      const cmd = /** @type {string} */ (e.data);
      if (cmd === "start") {
        this.filled = 0;
        this.recording = true;
      } else if (cmd === "flush") {
        this.recording = false;
        this.post();
        this.port.postMessage({ done: true, sampleRate });
      }
    };
  }

  post() {
    if (this.filled === 0) return;
    const block = this.buffer.slice(0, this.filled);
    let sum = 0;
    for (let i = 0; i < block.length; i++) sum += block[i] * block[i];
    this.port.postMessage({ samples: block, level: Math.sqrt(sum / block.length) }, [block.buffer]);
    this.filled = 0;
  }

  /** @param {Float32Array[][]} inputs */
  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (this.recording && channel) {
      let offset = 0;
      while (offset < channel.length) {
        const n = Math.min(channel.length - offset, BLOCK - this.filled);
        this.buffer.set(channel.subarray(offset, offset + n), this.filled);
        this.filled += n;
        offset += n;
        if (this.filled === BLOCK) this.post();
      }
    }
    return true;
  }
}

registerProcessor("pcm-recorder", PcmRecorder);
