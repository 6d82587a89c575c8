// The realtime page: an open microphone over WS /v1/realtime (the OpenAI Realtime protocol, GA event names).
// The page streams 24 kHz PCM16 as `input_audio_buffer.append`; the gateway's server VAD finds the turns and
// answers. The user's words and the answer's transcript show as they stream, the answer's PCM plays gap-free on
// an AudioContext, speaking over it stops it at once and truncates the item to what was heard, the page's two
// tools run when the model calls them, and the inspector shows every event with the turn's latencies.

import {
  $,
  GatewayError,
  Inspector,
  authHeaders,
  fromBase64,
  getKey,
  initPage,
  probeKey,
  renderAnswer,
  showError,
  summarize,
  toBase64,
} from "./common.js";
import { Recorder, floatToInt16, resample } from "./media.js";
import { PcmPlayer } from "./pcm-player.js";
import { TOOLS, runTool } from "./realtime-tools.js";

/** The sample rate of the audio both ways (`audio/pcm`, the protocol's default). */
export const RATE = 24000;
export const PATH = "/v1/realtime";
/** Realtime models offered besides the gateway's chat models (the Qwen-Omni pass-through backend). */
export const OMNI_MODELS = ["qwen3-omni-flash-realtime"];

/**
 * @typedef {import("../../schemas/ts/realtime").ServerMessage} ServerMessage
 * @typedef {import("../../schemas/ts/realtime").ClientMessage} ClientMessage
 * @typedef {import("../../schemas/ts/realtime").SessionUpdate} SessionUpdate
 * @typedef {{ call_id: string, output: string }} ToolOutput
 */
/**
 * The server event of type `T`.
 * @template {ServerMessage["type"]} T
 * @typedef {Extract<ServerMessage, { type: T }>} EventOf
 */
/** @typedef {{ [T in ServerMessage["type"]]?: (ev: EventOf<T>) => void }} Handlers what each server event does */

/**
 * The WebSocket URL of the endpoint for `model`. The key does not go in the URL: browsers send it as the
 * `openai-insecure-api-key.<key>` subprotocol (see `subprotocols`).
 * @param {string} model
 */
export function realtimeUrl(model) {
  const url = new URL(PATH, location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  if (model) url.searchParams.set("model", model);
  return url.toString();
}

/**
 * The subprotocols offered: `realtime`, and the key the way OpenAI's browser clients send it.
 * @param {string} key
 */
export function subprotocols(key) {
  return key ? ["realtime", `openai-insecure-api-key.${key}`] : ["realtime"];
}

/**
 * The `session.update` the page sends first: audio/pcm at 24 kHz both ways, server VAD that answers and lets
 * speech interrupt, input transcription, and the page's tools.
 * @param {{ instructions: string, silenceMs: number, threshold: number }} opts
 * @returns {SessionUpdate}
 */
export function sessionUpdate(opts) {
  return {
    type: "session.update",
    session: {
      type: "realtime",
      instructions: opts.instructions,
      output_modalities: ["audio"],
      audio: {
        input: {
          format: { type: "audio/pcm", rate: RATE },
          transcription: {},
          turn_detection: {
            type: "server_vad",
            threshold: opts.threshold,
            prefix_padding_ms: 300,
            silence_duration_ms: opts.silenceMs,
            create_response: true,
            interrupt_response: true,
          },
        },
        output: { format: { type: "audio/pcm", rate: RATE } },
      },
      tools: TOOLS,
      tool_choice: "auto",
    },
  };
}

/** Events that arrive in runs: one inspector row counts them. */
const RUNS = new Set([
  "input_audio_buffer.append",
  "response.output_audio.delta",
  "response.output_audio_transcript.delta",
  "response.output_text.delta",
  "conversation.item.input_audio_transcription.delta",
  "response.function_call_arguments.delta",
]);
/** Fields holding base64 audio, shown as their size. */
const BINARY_FIELDS = ["audio", "delta"];

/**
 * @typedef {object} Elements
 * @property {HTMLButtonElement} button
 * @property {HTMLSelectElement} model
 * @property {HTMLTextAreaElement} instructions
 * @property {HTMLInputElement} silence
 * @property {HTMLInputElement} threshold
 * @property {HTMLElement} status
 * @property {HTMLElement} error
 * @property {HTMLElement} conversation
 * @property {HTMLElement} empty
 * @property {HTMLElement} level
 */

export class RealtimePage {
  /**
   * @param {Elements} els
   * @param {Inspector} inspector
   */
  constructor(els, inspector) {
    this.els = els;
    this.inspector = inspector;
    this.player = new PcmPlayer(RATE);
    /** @type {Recorder | null} */
    this.recorder = null;
    /** @type {WebSocket | null} */
    this.ws = null;
    this.running = false;
    this.sent = 0;
    /** @type {Map<string, HTMLElement>} user messages by item id */
    this.userMsgs = new Map();
    /** @type {Map<string, HTMLElement>} answers by response id */
    this.answers = new Map();
    /** @type {Map<string, string>} the text of each answer (by response id), shown with light formatting */
    this.answerText = new Map();
    /** @type {Map<string, string>} the response each assistant item belongs to */
    this.itemResponse = new Map();
    /** @type {Map<string, HTMLElement>} tool calls by call id */
    this.toolMsgs = new Map();
    /** @type {Set<string>} responses created and not done */
    this.openResponses = new Set();
    /** @type {Set<string>} responses of the current turn (created after its end of speech) */
    this.turnResponses = new Set();
    this.speechEnded = false;
    /** @type {Map<string, ToolOutput[]>} tool outputs waiting for their response to end, by response id */
    this.toolOutputs = new Map();
    /** @type {Set<string>} calls already run */
    this.calls = new Set();
    /** @type {ReturnType<typeof setInterval> | null} */
    this.timer = null;
    /** @type {Handlers} */
    this.handlers = {
      "session.created": () => this.setStatus("Connected: configuring the session…"),
      "session.updated": () => this.setStatus("Listening: just talk."),
      "input_audio_buffer.speech_started": (ev) => this.onSpeechStarted(ev),
      "input_audio_buffer.speech_stopped": () => this.onSpeechStopped(),
      "input_audio_buffer.committed": (ev) => void this.userMsg(ev.item_id),
      "conversation.item.input_audio_transcription.delta": (ev) => this.onUserDelta(ev),
      "conversation.item.input_audio_transcription.completed": (ev) => this.onUserDone(ev),
      "conversation.item.input_audio_transcription.failed": (ev) => this.onUserFailed(ev),
      "response.created": (ev) => this.onResponseCreated(ev),
      "response.output_item.added": (ev) => this.onItemAdded(ev),
      "response.output_item.done": (ev) => this.onItemDone(ev),
      "response.output_audio_transcript.delta": (ev) => this.onAnswerDelta(ev),
      "response.output_text.delta": (ev) => this.onAnswerDelta(ev),
      "response.output_audio_transcript.done": (ev) => this.onAnswerDone(ev.response_id, ev.transcript),
      "response.output_text.done": (ev) => this.onAnswerDone(ev.response_id, ev.text),
      "response.output_audio.delta": (ev) => this.onAudio(ev),
      "response.function_call_arguments.done": (ev) => this.onCall(ev.response_id, ev.call_id, ev.name, ev.arguments),
      "conversation.item.truncated": (ev) => this.onTruncated(ev),
      "response.done": (ev) => this.onResponseDone(ev),
      error: (ev) => this.onError(ev),
    };
    els.button.addEventListener("click", () => (this.running ? this.stop("Stopped.") : void this.start()));
    document.addEventListener("qg-key-changed", () => {
      if (this.running) this.stop("The key changed: press Start again.");
    });
  }

  /** @param {string} text */
  setStatus(text) {
    this.els.status.textContent = text;
  }

  // ------------------------------------------------------------------ session

  async start() {
    if (this.running) return;
    this.running = true;
    showError(this.els.error, null);
    this.els.button.textContent = "Stop";
    this.els.button.setAttribute("aria-pressed", "true");
    this.els.button.classList.replace("primary", "danger");
    this.inspector.startTurn("session");
    try {
      this.setStatus("Opening the microphone…");
      await this.player.open();
      const recorder = new Recorder({
        rate: RATE,
        onBlock: (samples, rate) => this.onMicBlock(samples, rate),
        onLevel: (level) => {
          this.els.level.style.width = `${Math.min(100, Math.round(level * 400))}%`;
        },
      });
      this.recorder = recorder;
      await recorder.start();
      if (!this.running) return;
      this.setStatus("Connecting…");
      await this.connect();
      this.timer = setInterval(() => this.tick(), 100);
    } catch (exc) {
      this.stop(null);
      showError(this.els.error, exc);
      this.setStatus("Not connected.");
    }
  }

  /** Open the WebSocket and send `session.update`; resolves once it is open. */
  connect() {
    const ws = new WebSocket(realtimeUrl(this.els.model.value), subprotocols(getKey()));
    this.ws = ws;
    return new Promise((/** @type {(v: void) => void} */ resolve, reject) => {
      let opened = false;
      ws.addEventListener("open", () => {
        opened = true;
        this.inspector.log("note", "open", `${PATH} · subprotocol ${ws.protocol || "(none)"}`);
        this.send(
          sessionUpdate({
            instructions: this.els.instructions.value.trim(),
            silenceMs: Number(this.els.silence.value) || 500,
            threshold: Number(this.els.threshold.value) || 0.5,
          }),
        );
        resolve();
      });
      ws.addEventListener("message", (msg) => this.onMessage(String(msg.data)));
      ws.addEventListener("close", (e) => {
        if (this.ws !== ws) return;
        this.inspector.log("note", "close", `${e.code} ${e.reason}`.trim());
        if (!opened) {
          // A refused handshake says nothing to the page: ask /v1/models why, so a wrong key reads as one.
          void probeKey().then((probe) =>
            reject(!probe.ok && probe.error.isAuth ? probe.error : new GatewayError(`The connection was refused (close ${e.code}).`)),
          );
          return;
        }
        const why = e.code === 1000 ? "The gateway closed the session." : `The connection closed (${e.code} ${e.reason}).`;
        this.stop(why);
        if (e.code !== 1000) showError(this.els.error, new GatewayError(why));
      });
    });
  }

  /**
   * End the session: microphone, socket and playback.
   * @param {string | null} status
   */
  stop(status) {
    this.running = false;
    const ws = this.ws;
    this.ws = null;
    if (ws && ws.readyState <= WebSocket.OPEN) ws.close(1000, "page stopped");
    void this.recorder?.close();
    this.recorder = null;
    this.player.stop();
    if (this.timer !== null) clearInterval(this.timer);
    this.timer = null;
    this.tick();
    this.openResponses.clear();
    this.els.level.style.width = "0%";
    this.els.button.textContent = "Start";
    this.els.button.setAttribute("aria-pressed", "false");
    this.els.button.classList.replace("danger", "primary");
    if (status) this.setStatus(status);
  }

  /**
   * Send one client event (with an `event_id`, so an `error` can name it) and log it.
   * @param {ClientMessage} event
   */
  send(event) {
    const ws = this.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return;
    this.sent += 1;
    const withId = { event_id: `evt_page_${this.sent}`, ...event };
    ws.send(JSON.stringify(withId));
    const detail = summarize(/** @type {{ [k: string]: unknown }} */ (withId), BINARY_FIELDS);
    if (RUNS.has(event.type)) this.inspector.logRun("out", event.type, detail);
    else this.inspector.log("out", event.type, detail);
  }

  /**
   * A block of microphone samples: to 24 kHz PCM16, sent as `input_audio_buffer.append`.
   * @param {Float32Array} samples
   * @param {number} rate
   */
  onMicBlock(samples, rate) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) return;
    const pcm = floatToInt16(rate === RATE ? samples : resample(samples, rate, RATE));
    this.send({ type: "input_audio_buffer.append", audio: toBase64(new Uint8Array(pcm.buffer)) });
  }

  /** @param {string} text */
  onMessage(text) {
    /** @type {unknown} */
    let parsed;
    try {
      parsed = JSON.parse(text);
    } catch {
      this.inspector.log("in", "(not json)", text.slice(0, 240));
      return;
    }
    const body = /** @type {{ [k: string]: unknown }} */ (parsed && typeof parsed === "object" ? parsed : { value: parsed });
    const type = typeof body.type === "string" ? body.type : "(no type)";
    const detail = summarize(body, type === "response.output_audio.delta" ? BINARY_FIELDS : []);
    if (RUNS.has(type)) this.inspector.logRun("in", type, detail);
    else this.inspector.log("in", type, detail);
    const handler = /** @type {((ev: ServerMessage) => void) | undefined} */ (
      Object.hasOwn(this.handlers, type) ? this.handlers[/** @type {ServerMessage["type"]} */ (type)] : undefined
    );
    handler?.(/** @type {ServerMessage} */ (parsed));
  }

  /** Refresh what the page shows of playback (played milliseconds per answer, the status). */
  tick() {
    for (const el of this.answers.values()) {
      const item = el.dataset.itemId;
      if (!item) continue;
      el.dataset.playedMs = String(Math.round(this.player.playedMs(item)));
      el.dataset.audioMs = String(Math.round(this.player.queuedMs(item)));
    }
    this.els.conversation.dataset.playing = this.player.playing ? "1" : "0";
    if (this.running && this.player.playing) this.setStatus("Speaking… (talk to interrupt)");
  }

  // ------------------------------------------------------------------ the user's turn

  /** @param {EventOf<"input_audio_buffer.speech_started">} ev */
  onSpeechStarted(ev) {
    this.bargeIn();
    this.speechEnded = false;
    this.turnResponses.clear();
    this.inspector.startTurn("speech");
    this.userMsg(ev.item_id);
    this.setStatus("Hearing you…");
  }

  /** Speech while an answer plays or is on its way: stop playback at once and truncate to what was heard. */
  bargeIn() {
    const item = this.player.current;
    const response = item === null ? undefined : this.itemResponse.get(item);
    const live = item !== null && (this.player.playing || (response !== undefined && this.openResponses.has(response)));
    const heard = this.player.stop();
    this.els.conversation.dataset.playing = "0";
    if (!live || !heard) return;
    const ms = heard.playedMs;
    this.inspector.log("note", "barge-in", `playback stopped at ${ms} ms of ${heard.itemId}`);
    this.send({ type: "conversation.item.truncate", item_id: heard.itemId, content_index: 0, audio_end_ms: ms });
    const el = response === undefined ? undefined : this.answers.get(response);
    if (el) {
      el.dataset.truncatedMs = String(ms);
      el.dataset.playedMs = String(ms);
      el.title = `interrupted after ${ms} ms of speech`;
    }
  }

  /** The end of speech: latencies are measured from here. */
  onSpeechStopped() {
    this.speechEnded = true;
    this.inspector.startClock();
    this.setStatus("Thinking…");
  }

  /**
   * The user's message for an input item (created on first sight).
   * @param {string | undefined} itemId
   */
  userMsg(itemId) {
    const key = itemId ?? "(no item)";
    let el = this.userMsgs.get(key);
    if (!el) {
      el = this.message("user");
      el.dataset.itemId = key;
      this.userMsgs.set(key, el);
    }
    return el;
  }

  /** @param {EventOf<"conversation.item.input_audio_transcription.delta">} ev */
  onUserDelta(ev) {
    const el = this.userMsg(ev.item_id);
    el.textContent = (el.textContent ?? "") + (ev.delta ?? "");
    this.inspector.measure("transcript");
  }

  /** @param {EventOf<"conversation.item.input_audio_transcription.completed">} ev */
  onUserDone(ev) {
    const el = this.userMsg(ev.item_id);
    if (typeof ev.transcript === "string") el.textContent = ev.transcript;
    el.dataset.done = "1";
    this.inspector.measure("transcript");
  }

  /** @param {EventOf<"conversation.item.input_audio_transcription.failed">} ev */
  onUserFailed(ev) {
    const el = this.userMsg(ev.item_id);
    el.dataset.done = "failed";
    if (!el.textContent) el.textContent = "(not recognised)";
  }

  // ------------------------------------------------------------------ the answer

  /** @param {EventOf<"response.created">} ev */
  onResponseCreated(ev) {
    const id = ev.response?.id;
    if (!id) return;
    this.openResponses.add(id);
    if (this.speechEnded) this.turnResponses.add(id);
    this.answer(id);
  }

  /**
   * The answer's message for a response (created on first sight).
   * @param {string} responseId
   */
  answer(responseId) {
    let el = this.answers.get(responseId);
    if (!el) {
      el = this.message("assistant");
      el.classList.add("streaming");
      el.dataset.responseId = responseId;
      this.answers.set(responseId, el);
    }
    return el;
  }

  /** @param {EventOf<"response.output_item.added">} ev */
  onItemAdded(ev) {
    const item = ev.item;
    if (!item?.id || !ev.response_id) return;
    this.itemResponse.set(item.id, ev.response_id);
    if (item.type === "function_call") this.toolMsg(item.call_id ?? item.id, item.name);
    else if (item.type === "message" && item.role === "assistant") {
      const el = this.answer(ev.response_id);
      el.dataset.itemId ??= item.id;
    }
  }

  /** @param {EventOf<"response.output_item.done">} ev */
  onItemDone(ev) {
    const item = ev.item;
    // A function call whose `function_call_arguments.done` was not seen is run from the finished item.
    if (item?.type === "function_call") this.onCall(ev.response_id, item.call_id, item.name, item.arguments);
  }

  /** @param {EventOf<"response.output_audio_transcript.delta" | "response.output_text.delta">} ev */
  onAnswerDelta(ev) {
    if (!ev.response_id) return;
    const el = this.answer(ev.response_id);
    if (ev.item_id) el.dataset.itemId ??= ev.item_id;
    const text = (this.answerText.get(ev.response_id) ?? "") + (ev.delta ?? "");
    this.answerText.set(ev.response_id, text);
    renderAnswer(el, text);
    if (this.turnResponses.has(ev.response_id)) this.inspector.measure("first_token");
  }

  /**
   * The answer's final text (its audio transcript, or the text of a text-only answer): the server's word; for
   * an answer cut short by speech, the part that was spoken.
   * @param {string} responseId
   * @param {string} text
   */
  onAnswerDone(responseId, text) {
    if (!responseId || typeof text !== "string" || !text) return;
    this.answerText.set(responseId, text);
    renderAnswer(this.answer(responseId), text);
  }

  /** @param {EventOf<"response.output_audio.delta">} ev */
  onAudio(ev) {
    if (!ev.item_id || !ev.delta) return;
    if (ev.response_id) {
      this.itemResponse.set(ev.item_id, ev.response_id);
      this.answer(ev.response_id).dataset.itemId ??= ev.item_id;
      if (this.turnResponses.has(ev.response_id)) this.inspector.measure("first_audio");
    }
    const bytes = fromBase64(ev.delta);
    const pcm = new Int16Array(bytes.buffer, 0, bytes.length >> 1);
    this.player.enqueue(ev.item_id, pcm);
  }

  /** @param {EventOf<"conversation.item.truncated">} ev */
  onTruncated(ev) {
    if (!ev.item_id) return;
    const response = this.itemResponse.get(ev.item_id);
    const el = response === undefined ? undefined : this.answers.get(response);
    if (el && typeof ev.audio_end_ms === "number") el.dataset.truncatedMs = String(ev.audio_end_ms);
  }

  /** @param {EventOf<"response.done">} ev */
  onResponseDone(ev) {
    const id = ev.response?.id;
    if (!id) return;
    this.openResponses.delete(id);
    const status = ev.response?.status ?? "completed";
    const el = this.answers.get(id);
    if (el) {
      el.classList.remove("streaming");
      el.dataset.status = status;
      // A response that only called tools leaves no answer bubble behind.
      if (!el.textContent && !el.dataset.itemId) {
        el.remove();
        this.answers.delete(id);
      }
    }
    const outputs = this.toolOutputs.get(id) ?? [];
    this.toolOutputs.delete(id);
    // The turn ends with its last response (not one that only asked for tools).
    if (this.turnResponses.has(id) && outputs.length === 0) this.inspector.measure("total");
    if (outputs.length > 0 && status === "completed") {
      for (const out of outputs) {
        this.send({
          type: "conversation.item.create",
          item: { type: "function_call_output", call_id: out.call_id, output: out.output },
        });
      }
      this.send({ type: "response.create" });
      this.setStatus("Tool results sent: the answer continues…");
    } else if (!this.player.playing && this.running) {
      this.setStatus("Listening: just talk.");
    }
  }

  // ------------------------------------------------------------------ tools

  /**
   * The tool call's message (created on first sight).
   * @param {string} callId
   * @param {string} name
   */
  toolMsg(callId, name) {
    let el = this.toolMsgs.get(callId);
    if (!el) {
      el = this.message("tool");
      el.dataset.callId = callId;
      el.dataset.name = name;
      el.textContent = `tool ${name} …`;
      this.toolMsgs.set(callId, el);
    }
    return el;
  }

  /**
   * Run a call the model made (once per call id); its output is sent when its response is done.
   * @param {string | undefined} responseId
   * @param {string | undefined} callId
   * @param {string | undefined} name
   * @param {string | undefined} args
   */
  onCall(responseId, callId, name, args) {
    if (!callId || !name || this.calls.has(callId)) return;
    this.calls.add(callId);
    const output = runTool(name, args ?? "");
    const el = this.toolMsg(callId, name);
    el.textContent = `tool ${name}(${args ?? ""}) → ${output}`;
    el.dataset.output = output;
    this.inspector.log("note", "tool", `${name}(${args ?? ""}) → ${output}`);
    this.setStatus(`Ran the tool ${name}.`);
    if (!responseId) return;
    const list = this.toolOutputs.get(responseId) ?? [];
    list.push({ call_id: callId, output });
    this.toolOutputs.set(responseId, list);
  }

  // ------------------------------------------------------------------ errors and messages

  /** @param {EventOf<"error">} ev */
  onError(ev) {
    const err = ev.error ?? {};
    const about = err.event_id ? ` (about ${err.event_id})` : "";
    showError(this.els.error, new GatewayError(`${err.message ?? "error"}${about}`, { code: err.code ?? null }));
  }

  /**
   * Append a message to the conversation.
   * @param {"user" | "assistant" | "tool"} role
   */
  message(role) {
    this.els.empty.hidden = true;
    const el = document.createElement("div");
    el.className = `msg ${role}`;
    this.els.conversation.append(el);
    this.els.conversation.scrollTop = this.els.conversation.scrollHeight;
    return el;
  }
}

/**
 * Fill the model list: the gateway's chat models (cascaded backend), then the Omni realtime models.
 * @param {HTMLSelectElement} select
 */
async function loadModels(select) {
  /** @type {string[]} */
  let chat = [];
  try {
    const resp = await fetch("/v1/models", { headers: authHeaders() });
    if (resp.ok) {
      const body = /** @type {{ data?: { id?: unknown, capability?: unknown }[] }} */ (await resp.json());
      chat = (body.data ?? []).filter((m) => m.capability === "chat").map((m) => String(m.id));
    }
  } catch {
    /* the select keeps the Omni models; the session start reports what is wrong */
  }
  select.replaceChildren();
  for (const [label, models] of /** @type {[string, string[]][]} */ ([
    ["Cascaded (ASR → chat → TTS)", chat],
    ["Qwen-Omni realtime", OMNI_MODELS],
  ])) {
    if (models.length === 0) continue;
    const group = document.createElement("optgroup");
    group.label = label;
    for (const m of models) group.append(new Option(m, m));
    select.append(group);
  }
}

async function main() {
  const inspector = new Inspector($("#inspector"), ["transcript", "first_token", "first_audio", "total"]);
  const els = {
    button: /** @type {HTMLButtonElement} */ ($("#session")),
    model: /** @type {HTMLSelectElement} */ ($("#model")),
    instructions: /** @type {HTMLTextAreaElement} */ ($("#instructions")),
    silence: /** @type {HTMLInputElement} */ ($("#silence")),
    threshold: /** @type {HTMLInputElement} */ ($("#threshold")),
    status: $("#status"),
    error: $("#error"),
    conversation: $("#conversation"),
    empty: $("#empty"),
    level: $("#level"),
  };
  const page = new RealtimePage(els, inspector);
  document.body.dataset.ready = "1";
  await initPage({ onKeyChanged: () => void loadModels(els.model) });
  await loadModels(els.model);
  document.body.dataset.models = "1";
  return page;
}

if (document.querySelector("#session")) void main();
