// The AudioWorkletGlobalScope names used by web/js/pcm-recorder.worklet.js (TypeScript's DOM lib lacks them).
// Type-checking only; the gateway serves this file but no page loads it.

declare class AudioWorkletProcessor {
  readonly port: MessagePort;
  constructor(options?: AudioWorkletNodeOptions);
}

declare function registerProcessor(
  name: string,
  processorCtor: new (options?: AudioWorkletNodeOptions) => AudioWorkletProcessor,
): void;

declare const sampleRate: number;
declare const currentTime: number;
declare const currentFrame: number;
