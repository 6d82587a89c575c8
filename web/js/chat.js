// The chat page: streaming answers from POST /v1/chat/completions (OpenAI-compatible SSE), model choice, the
// conversation kept across turns, errors shown.

import {
  $,
  GatewayError,
  Inspector,
  authHeaders,
  describeError,
  initPage,
  probeKey,
  renderAnswer,
  responseError,
} from "./common.js";

/** @typedef {import("../../schemas/ts/chat").ChatCompletionRequest} ChatCompletionRequest */
/** @typedef {import("../../schemas/ts/chat").ChatCompletionChunk} ChatCompletionChunk */
/** @typedef {import("../../schemas/ts/chat").ErrorResponse} ErrorResponse */
/** @typedef {ChatCompletionRequest["messages"][number]} Message */

const MODEL_STORAGE = "qwen-gateway.chat-model";

const messagesEl = $("#messages");
const empty = $("#empty");
const form = /** @type {HTMLFormElement} */ ($("#composer"));
const prompt = /** @type {HTMLTextAreaElement} */ ($("#prompt"));
const sendButton = /** @type {HTMLButtonElement} */ ($("#send"));
const stopButton = /** @type {HTMLButtonElement} */ ($("#stop"));
const modelSelect = /** @type {HTMLSelectElement} */ ($("#model"));
const systemBox = /** @type {HTMLTextAreaElement} */ ($("#system"));
const inspector = new Inspector($("#inspector"), ["first_token", "total"]);

/** The conversation so far (user and assistant turns; the system prompt is added per request). */
/** @type {Message[]} */
let history = [];
/** @type {AbortController | null} */
let inflight = null;

/**
 * @param {"user" | "assistant" | "error"} role
 * @param {string} text
 */
function bubble(role, text) {
  empty.hidden = true;
  const el = document.createElement("div");
  el.className = role === "error" ? "msg error" : `msg ${role}`;
  el.dataset.role = role;
  el.textContent = text;
  messagesEl.append(el);
  el.scrollIntoView({ block: "end" });
  return el;
}

/**
 * The `data:` payloads of a Server-Sent Events body, as they arrive.
 * @param {ReadableStream<Uint8Array>} stream
 * @returns {AsyncGenerator<string>}
 */
async function* sseData(stream) {
  const reader = stream.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.search(/\r?\n\r?\n/)) >= 0) {
        const block = buffer.slice(0, cut);
        buffer = buffer.slice(cut).replace(/^\r?\n\r?\n/, "");
        const data = block
          .split(/\r?\n/)
          .filter((line) => line.startsWith("data:"))
          .map((line) => line.slice(5).replace(/^ /, ""))
          .join("\n");
        if (data) yield data;
      }
    }
  } finally {
    reader.releaseLock();
  }
}

/** @param {string} text */
async function ask(text) {
  const model = modelSelect.value;
  const system = systemBox.value.trim();
  history.push({ role: "user", content: text });
  bubble("user", text);
  const answer = bubble("assistant", "");
  answer.classList.add("streaming");
  /** @type {ChatCompletionRequest["messages"]} */
  const messages = system ? [{ role: "system", content: system }, ...history] : [history[0], ...history.slice(1)];
  /** @type {ChatCompletionRequest} */
  const body = { messages, stream: true };
  if (model) body.model = model;

  inflight = new AbortController();
  sendButton.hidden = true;
  stopButton.hidden = false;
  inspector.startTurn(`${model || "default model"} · ${history.length} messages`);
  inspector.log("out", "request", `POST /v1/chat/completions · stream · ${messages.length} messages`);
  inspector.startClock();
  let content = "";
  let finish = "";
  try {
    const resp = await fetch("/v1/chat/completions", {
      method: "POST",
      headers: { "Content-Type": "application/json", ...authHeaders() },
      body: JSON.stringify(body),
      signal: inflight.signal,
    });
    const rid = resp.headers.get("X-Request-Id");
    inspector.log("in", "response", `HTTP ${resp.status}${rid ? ` · ${rid}` : ""} · ${resp.headers.get("Content-Type") ?? ""}`);
    if (!resp.ok) throw await responseError(resp);
    if (!resp.body) throw new GatewayError("The response has no body.");
    for await (const data of sseData(resp.body)) {
      if (data === "[DONE]") {
        inspector.log("in", "[DONE]", "");
        break;
      }
      /** @type {ChatCompletionChunk | ErrorResponse} */
      let parsed;
      try {
        parsed = JSON.parse(data);
      } catch {
        inspector.log("in", "(not json)", data.slice(0, 200));
        continue;
      }
      if ("error" in parsed) {
        const err = parsed.error;
        inspector.log("in", "error", JSON.stringify(err));
        throw new GatewayError(err.message, { code: err.code ?? null });
      }
      const choice = parsed.choices[0];
      const delta = choice?.delta?.content ?? "";
      if (choice?.finish_reason) finish = choice.finish_reason;
      inspector.log("in", "chunk", delta ? JSON.stringify(delta) : JSON.stringify(choice?.delta ?? parsed.usage ?? {}));
      if (delta) {
        inspector.measure("first_token");
        content += delta;
        renderAnswer(answer, content);
        answer.scrollIntoView({ block: "end" });
      }
    }
    inspector.measure("total");
    history.push({ role: "assistant", content });
    answer.dataset.finish = finish || "stop";
    if (!content) answer.textContent = "(empty answer)";
  } catch (exc) {
    history.pop();
    if (content) history.push({ role: "user", content: text }, { role: "assistant", content });
    if (exc instanceof DOMException && exc.name === "AbortError") {
      inspector.log("note", "stopped", "request aborted by the page");
      answer.dataset.finish = "aborted";
      if (!content) answer.remove();
    } else {
      if (!content) answer.remove();
      const el = bubble("error", describeError(exc));
      el.dataset.code = exc instanceof GatewayError && exc.code ? exc.code : "";
      inspector.log("note", "failed", describeError(exc));
      if (exc instanceof GatewayError && exc.isAuth) $("[data-key-button]").click();
    }
  } finally {
    answer.classList.remove("streaming");
    inflight = null;
    sendButton.hidden = false;
    stopButton.hidden = true;
    prompt.focus();
  }
}

form.addEventListener("submit", (e) => {
  e.preventDefault();
  const text = prompt.value.trim();
  if (!text || inflight) return;
  prompt.value = "";
  autosize();
  void ask(text);
});

prompt.addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
    e.preventDefault();
    form.requestSubmit();
  }
});

function autosize() {
  prompt.style.height = "auto";
  prompt.style.height = `${Math.min(prompt.scrollHeight + 2, 240)}px`;
}
prompt.addEventListener("input", autosize);

stopButton.addEventListener("click", () => inflight?.abort());

$("#new-chat").addEventListener("click", () => {
  inflight?.abort();
  history = [];
  messagesEl.replaceChildren(empty);
  empty.hidden = false;
  inspector.log("note", "new chat", "conversation cleared");
  prompt.focus();
});

modelSelect.addEventListener("change", () => localStorage.setItem(MODEL_STORAGE, modelSelect.value));

/** @param {string[]} models */
function fillModels(models) {
  const saved = localStorage.getItem(MODEL_STORAGE) ?? "";
  const list = models.length ? models : [""];
  modelSelect.replaceChildren(
    ...list.map((id) => {
      const opt = document.createElement("option");
      opt.value = id;
      opt.textContent = id || "default model";
      return opt;
    }),
  );
  if (saved && list.includes(saved)) modelSelect.value = saved;
}

const { models } = await initPage({
  onKeyChanged: async () => {
    const probe = await probeKey();
    if (probe.ok) fillModels(probe.models);
  },
});
fillModels(models);
prompt.focus();
