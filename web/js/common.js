// Shared by every page: the gateway key (kept in localStorage), the page header (upstream badge, key dialog),
// the WebSocket connection with seed-style packet upload, the event inspector and latency measurement.

export const KEY_STORAGE = "qwen-gateway.key";

/** @typedef {import("../../schemas/ts/audio").ClientMessage | import("../../schemas/ts/vlm").ClientMessage} ClientMessage */
/** @typedef {import("../../schemas/ts/chat").ErrorResponse} ErrorResponse */
/** @typedef {import("../../schemas/ts/chat").ModelList} ModelList */
/** @typedef {import("../../schemas/ts/chat").HealthResponse} HealthResponse */
/** @typedef {{ [name: string]: unknown }} EventBody */
/** @typedef {{ name: string, body: EventBody, raw: string }} WireEvent */
/** @typedef {{ message: string, code?: string | null, status?: number }} GatewayErrorInfo */

/** An error reported by the gateway (HTTP error body or WebSocket `error` event). */
export class GatewayError extends Error {
  /**
   * @param {string} message
   * @param {{ code?: string | null, status?: number }} [info]
   */
  constructor(message, info = {}) {
    super(message);
    this.name = "GatewayError";
    /** @type {string | null} */
    this.code = info.code ?? null;
    /** @type {number | undefined} */
    this.status = info.status;
  }

  /** True when the gateway rejected (or wanted) the key. */
  get isAuth() {
    return this.status === 401 || this.code === "invalid_api_key" || this.code === "unauthorized";
  }
}

// ---------------------------------------------------------------- key

/** The stored gateway key ("" when none). */
export function getKey() {
  try {
    return localStorage.getItem(KEY_STORAGE) ?? "";
  } catch {
    return "";
  }
}

/** @param {string} key store the gateway key ("" removes it) */
export function setKey(key) {
  try {
    if (key) localStorage.setItem(KEY_STORAGE, key);
    else localStorage.removeItem(KEY_STORAGE);
  } catch {
    /* storage unavailable (private mode): the key lives for this page only */
  }
  document.dispatchEvent(new CustomEvent("qg-key-changed"));
}

/** @returns {Record<string, string>} headers carrying the key, when one is stored */
export function authHeaders() {
  const key = getKey();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

/**
 * The ws:// or wss:// URL of a gateway path, with the key as `?token=` (browsers cannot set headers on a
 * WebSocket handshake).
 * @param {string} path
 */
export function wsUrl(path) {
  const url = new URL(path, location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  const key = getKey();
  if (key) url.searchParams.set("token", key);
  return url.toString();
}

/**
 * Turn a failed HTTP response into a GatewayError with the gateway's own message (OpenAI-style body).
 * @param {Response} resp
 */
export async function responseError(resp) {
  let message = `${resp.status} ${resp.statusText}`.trim();
  /** @type {string | null} */
  let code = null;
  try {
    const body = /** @type {Partial<ErrorResponse> | null} */ (await resp.json());
    const err = body?.error;
    if (err && typeof err === "object") {
      if (typeof err.message === "string") message = err.message;
      if (typeof err.code === "string") code = err.code;
    }
  } catch {
    /* not JSON */
  }
  return new GatewayError(message, { code, status: resp.status });
}

/**
 * Ask the gateway whether the stored key is accepted (GET /v1/models).
 * @returns {Promise<{ ok: true, models: string[] } | { ok: false, error: GatewayError }>}
 */
export async function probeKey() {
  try {
    const resp = await fetch("/v1/models", { headers: authHeaders() });
    if (!resp.ok) return { ok: false, error: await responseError(resp) };
    const body = /** @type {ModelList} */ (await resp.json());
    const models = Array.isArray(body?.data) ? body.data.map((m) => String(m.id)) : [];
    return { ok: true, models };
  } catch (exc) {
    return { ok: false, error: new GatewayError(`The gateway did not answer: ${String(exc)}`) };
  }
}

/**
 * Describe an error for a person, naming the key when the gateway rejected it.
 * @param {unknown} exc
 */
export function describeError(exc) {
  if (exc instanceof GatewayError) {
    const code = exc.code ? ` (${exc.code})` : "";
    if (exc.isAuth) {
      return `Wrong or missing gateway key${code}: ${sentence(exc.message)} Set the key with the “Key” button.`;
    }
    return `${exc.message}${code}`;
  }
  return exc instanceof Error ? exc.message : String(exc);
}

/** @param {string} text the text ending with a full stop */
function sentence(text) {
  const t = text.trim();
  return /[.!?。！？]$/.test(t) ? t : `${t}.`;
}

/**
 * Show (or clear, with null) an error in an element.
 * @param {HTMLElement} el
 * @param {unknown} exc
 */
export function showError(el, exc) {
  if (exc === null || exc === undefined) {
    el.hidden = true;
    el.textContent = "";
    return;
  }
  el.hidden = false;
  el.textContent = describeError(exc);
}

// ---------------------------------------------------------------- page header

/**
 * Wire the header shared by every page: the upstream badge (from /health), and the key button and dialog.
 * When the stored key is refused, the dialog opens once with the gateway's message.
 * @param {{ onKeyChanged?: () => void, probe?: boolean }} [opts]
 * @returns {Promise<{ health: HealthResponse | null, models: string[] }>}
 */
export async function initPage(opts = {}) {
  const badge = /** @type {HTMLElement | null} */ (document.querySelector("[data-upstream-badge]"));
  const keyButton = /** @type {HTMLButtonElement | null} */ (document.querySelector("[data-key-button]"));
  const dialog = ensureKeyDialog();
  const refreshKeyButton = () => {
    if (keyButton) keyButton.textContent = getKey() ? "Key ✓" : "Key";
  };
  refreshKeyButton();
  keyButton?.addEventListener("click", () => openKeyDialog(dialog));
  document.addEventListener("qg-key-changed", () => {
    refreshKeyButton();
    opts.onKeyChanged?.();
  });

  /** @type {HealthResponse | null} */
  let health = null;
  try {
    const resp = await fetch("/health", { cache: "no-store" });
    health = /** @type {HealthResponse} */ (await resp.json());
  } catch {
    health = null;
  }
  if (badge) {
    badge.hidden = false;
    if (!health) {
      badge.textContent = "GATEWAY DOWN";
      badge.className = "badge badge-down";
      badge.title = "GET /health did not answer";
    } else if (health.upstream === "simulated") {
      badge.textContent = "SIMULATED";
      badge.className = "badge badge-simulated";
      badge.title =
        "No QWEN_API_KEY: answers, recognition and speech come from the built-in DashScope simulator, not from Qwen.";
    } else {
      badge.textContent = health.upstream ? String(health.upstream).toUpperCase() : "LIVE";
      badge.className = "badge badge-live";
      badge.title = `Upstream: ${health.upstream ?? "configured"}; status ${health.status}`;
    }
    badge.dataset.upstream = health?.upstream ?? "down";
  }
  /** @type {string[]} */
  let models = [];
  if (opts.probe !== false) {
    const probe = await probeKey();
    if (probe.ok) models = probe.models;
    else if (probe.error.isAuth) openKeyDialog(dialog, describeError(probe.error));
  }
  return { health, models };
}

/** @returns {HTMLDialogElement} the key dialog (created once per page) */
function ensureKeyDialog() {
  let dialog = /** @type {HTMLDialogElement | null} */ (document.getElementById("key-dialog"));
  if (dialog) return dialog;
  dialog = document.createElement("dialog");
  dialog.id = "key-dialog";
  dialog.innerHTML = `
    <form method="dialog">
      <h2>Gateway key</h2>
      <p class="muted small">The key is kept in this browser's local storage and sent as
        <code>Authorization: Bearer</code> (and <code>?token=</code> on WebSockets).
        Leave it empty for a gateway that runs without keys.</p>
      <p class="error" data-key-message hidden></p>
      <input type="password" name="key" autocomplete="off" placeholder="sk-…" aria-label="Gateway key">
      <menu>
        <button type="button" class="ghost" data-key-cancel>Cancel</button>
        <button type="submit" class="primary" value="save">Save</button>
      </menu>
    </form>`;
  document.body.append(dialog);
  const form = /** @type {HTMLFormElement} */ (dialog.querySelector("form"));
  const input = /** @type {HTMLInputElement} */ (form.elements.namedItem("key"));
  dialog.querySelector("[data-key-cancel]")?.addEventListener("click", () => dialog?.close());
  form.addEventListener("submit", () => setKey(input.value.trim()));
  return dialog;
}

/**
 * @param {HTMLDialogElement} dialog
 * @param {string} [message]
 */
function openKeyDialog(dialog, message) {
  const input = /** @type {HTMLInputElement} */ (dialog.querySelector("input[name=key]"));
  const msg = /** @type {HTMLElement} */ (dialog.querySelector("[data-key-message]"));
  input.value = getKey();
  msg.hidden = !message;
  msg.textContent = message ?? "";
  if (!dialog.open) dialog.showModal();
  input.focus();
}

// ---------------------------------------------------------------- base64 and packets

/** @param {Uint8Array} bytes */
export function toBase64(bytes) {
  let bin = "";
  const step = 0x8000;
  for (let i = 0; i < bytes.length; i += step) {
    bin += String.fromCharCode.apply(null, Array.from(bytes.subarray(i, i + step)));
  }
  return btoa(bin);
}

/** @param {string} text */
export function fromBase64(text) {
  const bin = atob(text);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

/**
 * Split bytes into seed-style packets of at most `maxBytes` decoded bytes each.
 * @param {Uint8Array} bytes
 * @param {number} maxBytes
 * @returns {{ seq: number, total: number, data: string }[]}
 */
export function packetize(bytes, maxBytes) {
  const total = Math.max(1, Math.ceil(bytes.length / maxBytes));
  const packets = [];
  for (let i = 0; i < total; i++) {
    const part = bytes.subarray(i * maxBytes, (i + 1) * maxBytes);
    packets.push({ seq: i + 1, total, data: toBase64(part) });
  }
  return packets;
}

// ---------------------------------------------------------------- WebSocket

/**
 * One WebSocket to the gateway. Every server message is a JSON object whose single key is the event name
 * (`{"chat_chunk": {...}}`); it is handed to `onEvent` as `{name, body}`.
 */
export class GatewaySocket {
  /**
   * @param {string} path e.g. "/v1/chat/audio"
   * @param {{ onEvent: (ev: WireEvent) => void, onClose?: (info: { code: number, reason: string, wasConnected: boolean }) => void, onSend?: (name: string, detail: string) => void }} handlers
   */
  constructor(path, handlers) {
    this.path = path;
    this.handlers = handlers;
    /** @type {WebSocket | null} */
    this.ws = null;
    /** @type {Promise<EventBody> | null} */
    this.ready = null;
    this.connected = false;
  }

  /** True while the socket is open. */
  get isOpen() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  /**
   * Open the socket (once) and wait for the `connected` event.
   * @returns {Promise<EventBody>} the `connected` event's body
   */
  connect() {
    if (this.ready && this.ws && this.ws.readyState <= WebSocket.OPEN) return this.ready;
    this.connected = false;
    const ws = new WebSocket(wsUrl(this.path));
    this.ws = ws;
    this.ready = new Promise((resolve, reject) => {
      /** @type {GatewayError | null} */
      let failure = null;
      ws.addEventListener("message", (msg) => {
        const ev = parseEvent(String(msg.data));
        if (!ev) return;
        if (ev.name === "connected") {
          this.connected = true;
          resolve(ev.body);
        } else if (ev.name === "error" && !this.connected) {
          const body = ev.body;
          failure = new GatewayError(String(body.message ?? "error"), {
            code: typeof body.code === "string" ? body.code : null,
          });
        }
        this.handlers.onEvent(ev);
      });
      ws.addEventListener("close", (e) => {
        const wasConnected = this.connected;
        this.connected = false;
        if (this.ws === ws) this.ws = null;
        if (!wasConnected) reject(failure ?? closeError(e));
        this.handlers.onClose?.({ code: e.code, reason: e.reason, wasConnected });
      });
    });
    // A refused handshake says nothing to the page: ask /v1/models why, so a wrong key reads as one.
    this.ready = this.ready.catch(async (/** @type {unknown} */ exc) => {
      if (exc instanceof GatewayError && exc.code) throw exc;
      const probe = await probeKey();
      if (!probe.ok && probe.error.isAuth) throw probe.error;
      throw exc;
    });
    return this.ready;
  }

  /**
   * Send one client message.
   * @param {ClientMessage} message
   */
  send(message) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) throw new GatewayError("Not connected");
    this.ws.send(JSON.stringify(message));
  }

  /**
   * Upload bytes as seed-style packets (`{seq, total, data}` plus `extra` fields), pausing while the socket's
   * send buffer is full. Reports each packet through `onSend`.
   * @param {Uint8Array} bytes
   * @param {number} maxBytes decoded bytes per packet
   * @param {"audio" | "image"} [type] the VLM packet type; none on /v1/chat/audio
   */
  async upload(bytes, maxBytes, type) {
    const packets = packetize(bytes, maxBytes);
    for (const p of packets) {
      while (this.ws && this.ws.bufferedAmount > 1 << 20) await sleep(10);
      this.send(type ? { type, ...p } : p);
      const kind = type ? `${type} ` : "";
      const size = Math.min(maxBytes, bytes.length - (p.seq - 1) * maxBytes);
      this.handlers.onSend?.("packet", `${kind}seq ${p.seq}/${p.total} · ${size} B`);
    }
    return packets.length;
  }

  close() {
    const ws = this.ws;
    this.ws = null;
    this.ready = null;
    this.connected = false;
    ws?.close(1000, "page closed");
  }
}

/**
 * @param {CloseEvent} e
 * @returns {GatewayError}
 */
function closeError(e) {
  const reasons = /** @type {Record<number, string>} */ ({
    1006: "The connection was refused or dropped before the gateway said hello",
    1008: "The gateway refused the connection (policy)",
    1009: "A message was too big for the gateway",
    1011: "The gateway hit an internal error",
    4401: "The gateway refused the key",
    4403: "The gateway refused the key",
  });
  const why = e.reason || reasons[e.code] || "The connection closed";
  const auth = e.code === 4401 || e.code === 4403;
  return new GatewayError(`${why} (close ${e.code}).`, auth ? { status: 401 } : {});
}

/**
 * Parse one server message: `{"event_name": {...}}`.
 * @param {string} text
 * @returns {WireEvent | null}
 */
export function parseEvent(text) {
  let obj;
  try {
    obj = JSON.parse(text);
  } catch {
    return { name: "(not json)", body: { text }, raw: text };
  }
  if (!obj || typeof obj !== "object" || Array.isArray(obj)) return { name: "(unknown)", body: { value: obj }, raw: text };
  const keys = Object.keys(obj);
  // Seed style: the event name is the single key. Tolerate the seed's other shape {"event_type", "data"}.
  if (keys.length === 1) {
    const body = obj[keys[0]];
    return { name: keys[0], body: body && typeof body === "object" ? body : { value: body }, raw: text };
  }
  if (typeof obj.event_type === "string") return { name: obj.event_type, body: obj.data ?? {}, raw: text };
  return { name: "(unknown)", body: obj, raw: text };
}

/** @param {number} ms */
export function sleep(ms) {
  return new Promise((r) => setTimeout(r, ms));
}

// ---------------------------------------------------------------- inspector and latencies

/**
 * Latencies measured by the page, in milliseconds from the end of the upload (or the request; on the realtime
 * page, from the end of speech).
 */
export const LATENCY_LABELS = /** @type {const} */ ({
  upload: "Upload",
  transcript: "First transcript",
  recognition: "Recognition",
  first_token: "First token",
  first_audio: "First audio",
  total: "Total",
});

/** @typedef {keyof typeof LATENCY_LABELS} LatencyName */

/** How far back (in rows) `Inspector.logRun` looks for the row of the same run. */
const RUN_LOOKBACK = 4;

/**
 * The event inspector: every event sent or received, with its arrival time (ms since the turn started),
 * and the measured latencies of the current turn.
 */
export class Inspector {
  /**
   * @param {HTMLElement} root an element holding `[data-latencies]` and `[data-events] tbody`
   * @param {LatencyName[]} latencies which latencies this page measures
   */
  constructor(root, latencies) {
    this.root = root;
    this.tbody = /** @type {HTMLTableSectionElement} */ (root.querySelector("[data-events] tbody"));
    this.scroller = /** @type {HTMLElement} */ (root.querySelector("[data-events]"));
    const list = /** @type {HTMLElement} */ (root.querySelector("[data-latencies]"));
    /** @type {Map<string, HTMLElement>} */
    this.cells = new Map();
    for (const name of latencies) {
      const box = document.createElement("div");
      box.className = "latency";
      box.innerHTML = `<dt>${LATENCY_LABELS[name]}</dt><dd data-latency="${name}">–</dd>`;
      list.append(box);
      this.cells.set(name, /** @type {HTMLElement} */ (box.querySelector("dd")));
    }
    /** when the current turn started (performance.now()) */
    this.turnStart = performance.now();
    /** the reference point latencies are measured from (end of upload / request sent) */
    this.mark = this.turnStart;
    /** @type {Map<string, number>} */
    this.measured = new Map();
    this.turns = 0;
    this.rows = 0;
    root.querySelector("[data-clear]")?.addEventListener("click", () => {
      this.tbody.replaceChildren();
      this.rows = 0;
    });
  }

  /**
   * Start a new turn: a divider row, latencies cleared.
   * @param {string} label
   */
  startTurn(label) {
    this.turns += 1;
    this.turnStart = performance.now();
    this.mark = this.turnStart;
    this.measured.clear();
    for (const cell of this.cells.values()) {
      cell.textContent = "–";
      cell.parentElement?.querySelector("[data-server]")?.remove();
    }
    const tr = document.createElement("tr");
    tr.className = "turn";
    tr.dataset.turn = String(this.turns);
    const td = document.createElement("td");
    td.colSpan = 2;
    td.textContent = `Turn ${this.turns} · ${label} · ${clock()}`;
    tr.append(td);
    this.append(tr);
  }

  /** Measure latencies from now on (the upload or request has just been sent). */
  startClock() {
    this.mark = performance.now();
    const upload = this.cells.get("upload");
    if (upload) {
      this.measured.set("upload", this.mark - this.turnStart);
      upload.textContent = fmtMs(this.mark - this.turnStart);
    }
  }

  /**
   * Record a latency once per turn (later calls for the same name are ignored).
   * @param {LatencyName} name
   * @returns {number | undefined} the value recorded now, if any
   */
  measure(name, at = performance.now()) {
    if (this.measured.has(name)) return undefined;
    const value = at - this.mark;
    this.measured.set(name, value);
    const cell = this.cells.get(name);
    if (cell) cell.textContent = fmtMs(value);
    return value;
  }

  /**
   * Show the gateway's own measurements (`timings` of a completion event) under the page's.
   * @param {unknown} timings e.g. `{recognition_ms, first_token_ms, first_audio_ms, total_ms}`
   */
  serverTimings(timings) {
    if (!timings || typeof timings !== "object") return;
    const t = /** @type {Record<string, unknown>} */ (timings);
    for (const [name, cell] of this.cells) {
      const value = t[`${name}_ms`];
      if (typeof value !== "number") continue;
      let sub = /** @type {HTMLElement | null} */ (cell.parentElement?.querySelector("[data-server]") ?? null);
      if (!sub) {
        sub = document.createElement("dd");
        sub.className = "server";
        sub.dataset.server = name;
        cell.after(sub);
      }
      sub.textContent = `gateway ${fmtMs(value)}`;
      sub.title = "Measured by the gateway from the start of the turn";
    }
  }

  /**
   * Log one event.
   * @param {"in" | "out" | "note"} dir
   * @param {string} name
   * @param {string} detail
   */
  log(dir, name, detail) {
    const now = performance.now();
    const tr = document.createElement("tr");
    tr.className = `${dir} ev-${name}`;
    tr.dataset.event = name;
    tr.dataset.dir = dir;
    tr.dataset.t = String(Math.round(now - this.turnStart));
    const t = document.createElement("td");
    t.className = "t";
    t.textContent = `+${Math.round(now - this.turnStart)} ms`;
    t.title = clock();
    const cell = document.createElement("td");
    const n = document.createElement("span");
    n.className = "n";
    n.textContent = `${dir === "out" ? "→" : dir === "in" ? "←" : "·"} ${name}`;
    cell.append(n);
    if (detail) {
      const d = document.createElement("div");
      d.className = "d";
      d.textContent = detail;
      cell.append(d);
    }
    tr.append(t, cell);
    this.append(tr);
  }

  /**
   * Log an event that comes in runs (microphone appends, audio and transcript deltas): the events of a run share
   * one row, which counts them (`data-count`), shows the latest one's detail and the time span. Runs of a few
   * kinds may interleave (audio and transcript deltas of one answer): a row takes its run's next event while it
   * is among the last `RUN_LOOKBACK` rows and only other runs came after it.
   * @param {"in" | "out"} dir
   * @param {string} name
   * @param {string} detail
   */
  logRun(dir, name, detail) {
    let row = this.tbody.lastElementChild;
    for (let i = 0; i < RUN_LOOKBACK && row instanceof HTMLTableRowElement && row.dataset.run; i++) {
      if (row.dataset.event === name && row.dataset.dir === dir) {
        const count = Number(row.dataset.count ?? "1") + 1;
        row.dataset.count = String(count);
        const d = row.querySelector(".d");
        if (d) d.textContent = `×${count} · ${detail}`;
        const t = row.querySelector("td.t");
        if (t) t.textContent = `+${row.dataset.t}–${Math.round(performance.now() - this.turnStart)} ms`;
        return;
      }
      row = row.previousElementSibling;
    }
    this.log(dir, name, detail);
    const added = /** @type {HTMLTableRowElement} */ (this.tbody.lastElementChild);
    added.dataset.run = "1";
    added.dataset.count = "1";
  }

  /**
   * Log a received event, summarised (audio payloads shown as their size).
   * @param {WireEvent} ev
   */
  received(ev) {
    this.log("in", ev.name, summarize(ev.body));
  }

  /** @param {HTMLTableRowElement} tr */
  append(tr) {
    const stick = this.scroller.scrollHeight - this.scroller.scrollTop - this.scroller.clientHeight < 40;
    this.tbody.append(tr);
    this.rows += 1;
    if (this.rows > 2000) {
      this.tbody.firstElementChild?.remove();
      this.rows -= 1;
    }
    if (stick) this.scroller.scrollTop = this.scroller.scrollHeight;
  }
}

/**
 * A short one-line view of an event body: base64 payloads become their decoded size.
 * @param {EventBody} body
 * @param {readonly string[]} [binaryKeys] the fields that hold base64 payloads
 */
export function summarize(body, binaryKeys = ["data"]) {
  const view = /** @type {Record<string, unknown>} */ ({});
  for (const [k, v] of Object.entries(body)) {
    if (binaryKeys.includes(k) && typeof v === "string" && v.length > 64) view[k] = `<${Math.floor((v.length * 3) / 4)} B base64>`;
    else view[k] = v;
  }
  const text = JSON.stringify(view);
  return text.length > 240 ? `${text.slice(0, 239)}…` : text;
}

/** @param {number} ms */
export function fmtMs(ms) {
  return ms >= 10000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms)} ms`;
}

function clock() {
  const d = new Date();
  return `${d.toLocaleTimeString([], { hour12: false })}.${String(d.getMilliseconds()).padStart(3, "0")}`;
}

/**
 * @template {HTMLElement} T
 * @param {string} selector
 * @returns {T}
 */
export function $(selector) {
  const el = document.querySelector(selector);
  if (!el) throw new Error(`missing element ${selector}`);
  return /** @type {T} */ (el);
}

// ---------------------------------------------------------------- answers

/**
 * Show model output with light formatting (headings, **bold**, `code`, fenced code blocks, links), built as DOM
 * nodes: the text is never parsed as HTML.
 * @param {HTMLElement} el
 * @param {string} text
 */
export function renderAnswer(el, text) {
  const out = document.createDocumentFragment();
  const parts = text.split(/^```[^\n]*\n?/m);
  parts.forEach((part, i) => {
    if (i % 2 === 1) {
      const pre = document.createElement("pre");
      const code = document.createElement("code");
      code.textContent = part.replace(/\n$/, "");
      pre.append(code);
      out.append(pre);
      return;
    }
    const lines = (i > 0 ? part.replace(/^\n/, "") : part).split("\n");
    lines.forEach((line, j) => {
      const heading = /^(#{1,6})\s+(.*)$/.exec(line);
      if (heading) {
        const h = document.createElement("strong");
        h.className = `md-h md-h${heading[1].length}`;
        inline(h, heading[2]);
        out.append(h);
      } else {
        inline(out, line);
      }
      if (j < lines.length - 1) out.append("\n");
    });
  });
  el.replaceChildren(out);
}

/**
 * @param {Node} parent
 * @param {string} text
 */
function inline(parent, text) {
  const re = /(\*\*[^*\n]+\*\*|`[^`\n]+`|https?:\/\/[^\s<>()（）]+[^\s<>()（）.,;:!?。，；：！？])/g;
  let at = 0;
  for (const m of text.matchAll(re)) {
    const index = m.index ?? 0;
    if (index > at) parent.appendChild(document.createTextNode(text.slice(at, index)));
    const token = m[0];
    /** @type {HTMLElement} */
    let node;
    if (token.startsWith("**")) {
      node = document.createElement("strong");
      node.textContent = token.slice(2, -2);
    } else if (token.startsWith("`")) {
      node = document.createElement("code");
      node.textContent = token.slice(1, -1);
    } else {
      const a = document.createElement("a");
      a.href = token;
      a.target = "_blank";
      a.rel = "noopener noreferrer";
      a.textContent = token;
      node = a;
    }
    parent.appendChild(node);
    at = index + token.length;
  }
  if (at < text.length) parent.appendChild(document.createTextNode(text.slice(at)));
}
