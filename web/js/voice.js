// A voice conversation over one of the gateway's WebSockets (/v1/chat/audio or /v1/chat/vlm): uploads a turn
// as seed-style packets, shows the transcript and the answer as they arrive, plays the answer's MP3 while it
// streams, measures latencies, and handles barge-in (talking again cancels the answer in flight).

import { $, GatewayError, GatewaySocket, Inspector, fromBase64, initPage, renderAnswer, showError } from "./common.js";
import { Mp3Player, Recorder } from "./media.js";

/** @typedef {import("./common.js").WireEvent} WireEvent */
/** @typedef {import("../../schemas/ts/audio").PacketAck | import("../../schemas/ts/vlm").VlmPacketAck} PacketAck */
/** @typedef {import("../../schemas/ts/audio").ChatStarted | import("../../schemas/ts/vlm").VlmChatStarted} ChatStarted */
/** @typedef {import("../../schemas/ts/audio").ChatChunk | import("../../schemas/ts/vlm").VlmChatChunk} ChatChunk */
/** @typedef {import("../../schemas/ts/audio").AudioStreamData | import("../../schemas/ts/audio").AudioStreamFinished} AudioStream */
/** @typedef {import("../../schemas/ts/audio").ChatTtsComplete | import("../../schemas/ts/vlm").VlmChatTtsComplete} ChatTtsComplete */
/** @typedef {import("../../schemas/ts/audio").AudioComplete} AudioComplete */
/** @typedef {import("../../schemas/ts/vlm").VlmComplete} VlmComplete */
/** @typedef {import("../../schemas/ts/audio").ErrorEvent} ErrorEvent */
/** @typedef {{ type?: "audio" | "image", bytes: Uint8Array }} UploadPart */

/**
 * @typedef {object} VoiceElements
 * @property {HTMLElement} status
 * @property {HTMLElement} error
 * @property {HTMLElement} transcript
 * @property {HTMLElement} answer
 * @property {HTMLAudioElement} audio
 * @property {HTMLProgressElement} progress
 * @property {HTMLButtonElement} stop
 */

/** Event names of the two endpoints (the VLM endpoint prefixes its chat events with `vlm_`). */
const NAMES = {
  audio: { started: "chat_started", chunk: "chat_chunk", ttsDone: "chat_tts_complete", done: "audio_complete" },
  vlm: { started: "vlm_chat_started", chunk: "vlm_chat_chunk", ttsDone: "vlm_chat_tts_complete", done: "vlm_complete" },
};

export class VoiceSession {
  /**
   * @param {{ kind: "audio" | "vlm", path: string, packetBytes: number, els: VoiceElements, inspector: Inspector }} opts
   */
  constructor(opts) {
    this.kind = opts.kind;
    this.names = NAMES[opts.kind];
    this.packetBytes = opts.packetBytes;
    this.els = opts.els;
    this.inspector = opts.inspector;
    this.player = new Mp3Player(opts.els.audio);
    this.socket = new GatewaySocket(opts.path, {
      onEvent: (ev) => this.onEvent(ev),
      onClose: (info) => this.onClose(info),
      onSend: (name, detail) => this.inspector.log("out", name, detail),
    });
    /** a turn is in flight (uploaded, answer not complete) */
    this.active = false;
    /** events of a cancelled turn are dropped until the new upload's first packet is acknowledged */
    this.discarding = false;
    /** @type {string | null} */
    this.turnId = null;
    this.packetsSent = 0;
    this.packetsAcked = 0;
    this.answerText = "";
    opts.els.stop.addEventListener("click", () => this.cancel("stopped"));
    document.addEventListener("qg-key-changed", () => this.socket.close());
  }

  /** @param {string} text */
  setStatus(text) {
    this.els.status.textContent = text;
  }

  /**
   * Stop the answer in flight (barge-in or the Stop button): playback stops at once and the gateway is told
   * to cancel the turn.
   * @param {string} why
   */
  cancel(why) {
    this.player.reset();
    if (!this.active) return;
    this.active = false;
    this.discarding = true;
    this.els.stop.disabled = true;
    this.inspector.log("note", why, "answer interrupted");
    if (this.socket.isOpen) {
      this.socket.send({ type: "cancel" });
      this.inspector.log("out", "cancel", '{"type":"cancel"}');
    }
    this.setStatus(why === "barge-in" ? "Interrupted: listening…" : "Stopped.");
  }

  /**
   * Send one turn: every part as packets (`type` added for the VLM endpoint), then `{"type":"end"}` on VLM.
   * @param {UploadPart[]} parts
   * @param {string} label shown in the inspector
   */
  async send(parts, label) {
    if (this.active) this.cancel("barge-in");
    showError(this.els.error, null);
    this.player.reset();
    this.answerText = "";
    this.els.transcript.textContent = "";
    this.els.answer.textContent = "";
    this.turnId = null;
    this.inspector.startTurn(label);
    try {
      this.setStatus("Connecting…");
      await this.socket.connect();
      this.active = true;
      this.els.stop.disabled = false;
      const total = parts.reduce((n, p) => n + Math.max(1, Math.ceil(p.bytes.length / this.packetBytes)), 0);
      this.packetsSent = total;
      this.packetsAcked = 0;
      this.els.progress.hidden = false;
      this.els.progress.max = total;
      this.els.progress.value = 0;
      this.setStatus("Uploading…");
      for (const part of parts) {
        await this.socket.upload(part.bytes, this.packetBytes, part.type);
      }
      if (this.kind === "vlm") {
        this.socket.send({ type: "end" });
        this.inspector.log("out", "end", '{"type":"end"}');
      }
      this.inspector.startClock();
      this.setStatus("Sent: waiting for the gateway…");
    } catch (exc) {
      this.fail(exc);
    }
  }

  /** @param {unknown} exc */
  fail(exc) {
    this.active = false;
    this.els.stop.disabled = true;
    this.els.progress.hidden = true;
    showError(this.els.error, exc);
    this.setStatus("Failed.");
    this.inspector.log("note", "failed", exc instanceof Error ? exc.message : String(exc));
  }

  /** @param {{ code: number, reason: string, wasConnected: boolean }} info */
  onClose(info) {
    this.inspector.log("note", "closed", `code ${info.code}${info.reason ? ` · ${info.reason}` : ""}`);
    if (this.active && info.wasConnected) {
      this.fail(new GatewayError(`The connection closed during the turn (code ${info.code}${info.reason ? `: ${info.reason}` : ""}).`));
    }
  }

  /** @param {WireEvent} ev */
  onEvent(ev) {
    const body = ev.body;
    const turnId = typeof body.turn_id === "number" || typeof body.turn_id === "string" ? String(body.turn_id) : null;
    if (this.discarding) {
      if (ev.name === "packet_ack" && body.seq === 1) {
        this.discarding = false;
      } else if (ev.name !== "connected") {
        this.inspector.log("note", `${ev.name} (stale)`, "from the interrupted turn: ignored");
        return;
      }
    }
    if (turnId && this.turnId && turnId !== this.turnId && ev.name !== "packet_ack") {
      this.inspector.log("note", `${ev.name} (stale)`, `turn ${turnId}: ignored`);
      return;
    }
    if (turnId && !this.turnId) this.turnId = turnId;
    this.inspector.received(ev);
    const n = this.names;
    switch (ev.name) {
      case "connected":
        break;
      case "packet_ack": {
        const ack = /** @type {PacketAck} */ (/** @type {unknown} */ (body));
        this.packetsAcked += 1;
        this.els.progress.value = Math.min(this.packetsAcked, this.packetsSent);
        if (ack.duplicate) this.inspector.log("note", "duplicate", `packet ${ack.seq} acknowledged again`);
        break;
      }
      case "transcription_started":
        this.setStatus("Recognising speech…");
        break;
      case n.started: {
        const started = /** @type {ChatStarted} */ (/** @type {unknown} */ (body));
        if (started.user_message) {
          this.els.transcript.textContent = started.user_message;
          this.inspector.measure("recognition");
          this.setStatus("Thinking…");
        } else {
          this.els.transcript.textContent = "";
          this.setStatus(started.message || "Nothing was recognised.");
        }
        break;
      }
      case n.chunk: {
        const chunk = /** @type {ChatChunk} */ (/** @type {unknown} */ (body));
        this.inspector.measure("first_token");
        this.answerText = chunk.full_response ?? this.answerText + chunk.chunk;
        renderAnswer(this.els.answer, this.answerText);
        break;
      }
      case "tts_started":
        this.setStatus("Speaking…");
        break;
      case "audio_stream": {
        const stream = /** @type {AudioStream} */ (/** @type {unknown} */ (body));
        if (stream.event === "data") {
          this.inspector.measure("first_audio");
          this.player.append(fromBase64(stream.data));
        } else if (stream.event === "finished") {
          this.player.end();
        }
        break;
      }
      case n.ttsDone: {
        const done = /** @type {ChatTtsComplete} */ (/** @type {unknown} */ (body));
        this.inspector.serverTimings(done.timings);
        if (done.assistant_response) {
          this.answerText = done.assistant_response;
          renderAnswer(this.els.answer, this.answerText);
        }
        break;
      }
      case n.done: {
        const done = /** @type {AudioComplete | VlmComplete} */ (/** @type {unknown} */ (body));
        this.inspector.measure("total");
        this.inspector.serverTimings(done.timings);
        const said = "transcription_text" in done ? done.transcription_text : done.transcription;
        if (said && !this.els.transcript.textContent) this.els.transcript.textContent = said;
        this.finish("Done.");
        break;
      }
      case "error": {
        // Before `connected`, the refusal is reported by connect() (as the turn's failure).
        if (!this.socket.connected) break;
        const error = /** @type {ErrorEvent} */ (/** @type {unknown} */ (body));
        this.player.end();
        this.fail(new GatewayError(error.message, { code: error.code ?? null }));
        break;
      }
      default:
        this.onOtherEvent(ev);
    }
  }

  /**
   * Events beyond the seed's (additive ones): a partial or final transcript is shown as it arrives.
   * @param {WireEvent} ev
   */
  onOtherEvent(ev) {
    const body = ev.body;
    if (ev.name.startsWith("transcription") && typeof body.text === "string") {
      this.els.transcript.textContent = body.text;
    }
  }

  /** @param {string} status */
  finish(status) {
    this.active = false;
    this.els.stop.disabled = true;
    this.els.progress.hidden = true;
    this.setStatus(this.player.error ? `${status} (${this.player.error})` : status);
  }
}

/**
 * Wire a hold-to-talk button (pointer and space bar): `onStart` when pressed, `onStop` when released.
 * @param {HTMLButtonElement} button
 * @param {{ onStart: () => Promise<void> | void, onStop: () => Promise<void> | void }} handlers
 */
export function holdToTalk(button, handlers) {
  let held = false;
  const start = () => {
    if (held) return;
    held = true;
    button.classList.add("recording");
    button.setAttribute("aria-pressed", "true");
    void handlers.onStart();
  };
  const stop = () => {
    if (!held) return;
    held = false;
    button.classList.remove("recording");
    button.setAttribute("aria-pressed", "false");
    void handlers.onStop();
  };
  button.addEventListener("pointerdown", (e) => {
    if (e.button !== 0) return;
    e.preventDefault();
    button.setPointerCapture(e.pointerId);
    start();
  });
  button.addEventListener("pointerup", stop);
  button.addEventListener("pointercancel", stop);
  button.addEventListener("contextmenu", (e) => e.preventDefault());
  button.addEventListener("keydown", (e) => {
    if ((e.key === " " || e.key === "Enter") && !e.repeat) {
      e.preventDefault();
      start();
    }
  });
  button.addEventListener("keyup", (e) => {
    if (e.key === " " || e.key === "Enter") {
      e.preventDefault();
      stop();
    }
  });
  button.addEventListener("blur", stop);
}

/**
 * Wire a voice page: header, inspector, hold-to-talk recording, audio-file upload, and the session.
 * `parts(audio)` turns the recorded or chosen audio into the turn's upload (it may throw to refuse).
 * @param {{ kind: "audio" | "vlm", path: string, packetBytes: number, parts: (audio: Uint8Array) => UploadPart[] }} opts
 * @returns {Promise<VoiceSession>}
 */
export async function voicePage(opts) {
  const inspector = new Inspector($("#inspector"), ["upload", "recognition", "first_token", "first_audio", "total"]);
  const els = {
    status: $("#status"),
    error: $("#error"),
    transcript: $("#transcript"),
    answer: $("#answer"),
    audio: /** @type {HTMLAudioElement} */ ($("#player")),
    progress: /** @type {HTMLProgressElement} */ ($("#upload")),
    stop: /** @type {HTMLButtonElement} */ ($("#stop")),
  };
  const session = new VoiceSession({ kind: opts.kind, path: opts.path, packetBytes: opts.packetBytes, els, inspector });
  const talk = /** @type {HTMLButtonElement} */ ($("#talk"));
  const hint = $("#talk-hint");
  const level = $("#level");
  const hintText = hint.textContent ?? "";
  const recorder = new Recorder({
    onLevel: (rms) => {
      level.style.width = `${Math.min(100, Math.round(Math.sqrt(rms) * 140))}%`;
      if (recorder.recording) {
        const seconds = recorder.seconds;
        talk.dataset.seconds = seconds.toFixed(2);
        hint.textContent = `Recording… ${seconds.toFixed(1)} s (release to send)`;
      }
    },
  });
  /** @type {Promise<void> | null} */
  let starting = null;

  /**
   * @param {Uint8Array} audio
   * @param {string} label
   */
  const sendAudio = async (audio, label) => {
    /** @type {UploadPart[]} */
    let parts;
    try {
      parts = opts.parts(audio);
    } catch (exc) {
      showError(els.error, exc);
      return;
    }
    await session.send(parts, label);
  };

  holdToTalk(talk, {
    onStart: () => {
      session.cancel("barge-in");
      showError(els.error, null);
      talk.dataset.seconds = "0";
      session.setStatus("Listening…");
      starting = recorder.start().catch((exc) => {
        showError(els.error, new Error(`Microphone: ${exc instanceof Error ? exc.message : String(exc)}`));
        session.setStatus("No microphone.");
      });
      return starting;
    },
    onStop: async () => {
      await starting;
      starting = null;
      hint.textContent = hintText;
      if (!recorder.recording) return;
      const { wav, seconds } = await recorder.stop();
      if (seconds < 0.3) {
        session.setStatus("Too short: hold the button while you speak.");
        return;
      }
      await sendAudio(wav, `recorded ${seconds.toFixed(1)} s, 16 kHz WAV`);
    },
  });

  const file = /** @type {HTMLInputElement} */ ($("#file"));
  file.addEventListener("change", async () => {
    const f = file.files?.[0];
    if (!f) return;
    await sendAudio(new Uint8Array(await f.arrayBuffer()), `file ${f.name} (${f.size} B)`);
    file.value = "";
  });

  await initPage();
  return session;
}
