// ModaVerse playground: plain JavaScript over the server's OpenAI-compatible API (no build step).
// POST /v1/chat/completions with stream: true; the server-sent chunks carry the answer text in
// choices[0].delta.content and ModaVerse's own events (progress, media, meta-response) in `modaverse`.
"use strict";

const MAX_ATTACHMENT_BYTES = 32 * 1024 * 1024;
const AUDIO_FORMATS = {
  "audio/wav": "wav", "audio/x-wav": "wav", "audio/wave": "wav", "audio/vnd.wave": "wav",
  "audio/mpeg": "mp3", "audio/mp3": "mp3", "audio/flac": "flac", "audio/x-flac": "flac", "audio/ogg": "ogg",
};
const MODALITIES = ["image", "video", "audio"];

const $ = (id) => document.getElementById(id);
const log = $("log");
const prompt = $("prompt");
const sendButton = $("send");
const stopButton = $("stop");
const attachmentsBox = $("attachments");
const tokenInput = $("token");

let history = [];       // OpenAI messages of the conversation so far
let attachments = [];   // {file, kind, dataUrl}
let running = null;     // {controller, view} while an answer streams
let conversation = 0;   // bumped by "New chat": an answer still arriving then belongs to no history

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) if (child) node.append(child);
  return node;
}

function headers() {
  const h = { "Content-Type": "application/json" };
  const token = tokenInput.value.trim();
  if (token) h["Authorization"] = "Bearer " + token;
  return h;
}

async function errorMessage(response) {
  try {
    const body = await response.json();
    if (body && body.error && body.error.message) {
      const hint = response.status === 401 ? " (set the API token under Options)" : "";
      return `${response.status}: ${body.error.message}${hint}`;
    }
  } catch (_) { /* not JSON */ }
  return `${response.status} ${response.statusText}`;
}

function scrollDown() {
  log.scrollTop = log.scrollHeight;
}

function notice(text) {
  const old = document.querySelector(".notice");
  if (old) old.remove();
  if (text) log.prepend(el("p", { class: "notice", role: "alert", text }));
}

// ---------------------------------------------------------------- models per modality

async function loadModels() {
  try {
    const response = await fetch("/v1/models", { headers: headers() });
    if (!response.ok) {
      notice("Could not load the models: " + (await errorMessage(response)));
      return;
    }
    notice("");
    const body = await response.json();
    for (const modality of MODALITIES) {
      const select = $("model-" + modality);
      const chosen = select.value;
      select.replaceChildren(el("option", { value: "", text: "default" }));
      for (const model of body.data) {
        const info = model.modaverse || {};
        if (info.kind !== "generator" || info.modality !== modality) continue;
        const label = info.route + (info.default ? " (default)" : "") + (info.healthy === false ? " — unhealthy" : "");
        select.append(el("option", { value: info.route, text: label }));
      }
      select.value = chosen;
    }
  } catch (error) {
    notice("Could not load the models: " + error.message);
  }
}

function generatorOptions() {
  const generators = {};
  for (const modality of MODALITIES) {
    const options = {};
    const model = $("model-" + modality).value;
    const steps = parseInt($("steps-" + modality).value, 10);
    if (model) options.model = model;
    if (steps > 0) options.steps = steps;
    if (Object.keys(options).length) generators[modality] = options;
  }
  return generators;
}

// ---------------------------------------------------------------- attachments

function kindOf(file) {
  const major = (file.type || "").split("/")[0];
  return MODALITIES.includes(major) ? major : null;
}

function readAsDataUrl(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

async function addFiles(files) {
  for (const file of files) {
    const kind = kindOf(file);
    if (!kind) {
      notice(`${file.name}: not an image, audio or video file`);
      continue;
    }
    if (file.size > MAX_ATTACHMENT_BYTES) {
      notice(`${file.name}: larger than ${MAX_ATTACHMENT_BYTES / 2 ** 20} MB`);
      continue;
    }
    attachments.push({ file, kind, dataUrl: await readAsDataUrl(file) });
  }
  renderAttachments();
}

function renderAttachments() {
  attachmentsBox.replaceChildren(...attachments.map((item, index) => {
    const remove = el("button", { type: "button", title: "Remove", "aria-label": "Remove " + item.file.name, text: "×" });
    remove.addEventListener("click", () => { attachments.splice(index, 1); renderAttachments(); });
    const preview = item.kind === "image" ? el("img", { src: item.dataUrl, alt: "" }) : el("span", { text: item.kind === "audio" ? "♪" : "▶" });
    return el("span", { class: "chip", "data-kind": item.kind }, preview, el("span", { class: "name", text: item.file.name }), remove);
  }));
}

function userContent(text, items) {
  const parts = [];
  if (text) parts.push({ type: "text", text });
  for (const item of items) {
    if (item.kind === "image") parts.push({ type: "image_url", image_url: { url: item.dataUrl } });
    else if (item.kind === "video") parts.push({ type: "video_url", video_url: { url: item.dataUrl } });
    else {
      const format = AUDIO_FORMATS[item.file.type] || "wav";
      parts.push({ type: "input_audio", input_audio: { data: item.dataUrl.split(",", 2)[1], format } });
    }
  }
  return parts;
}

// ---------------------------------------------------------------- the conversation

function userBubble(text, items) {
  const thumbs = el("div", { class: "thumbs" });
  for (const item of items) {
    if (item.kind === "image") thumbs.append(el("img", { src: item.dataUrl, alt: item.file.name }));
    else if (item.kind === "video") thumbs.append(el("video", { src: item.dataUrl, muted: "", playsinline: "" }));
    else thumbs.append(el("audio", { src: item.dataUrl, controls: "" }));
  }
  const bubble = el("div", { class: "msg user" }, items.length ? thumbs : null, el("div", { class: "text", text }));
  log.append(bubble);
  return bubble;
}

class AnswerView {
  constructor() {
    this.text = el("div", { class: "text" });
    this.gens = el("div", { class: "gens" });
    this.raw = el("pre");
    this.meta = el("details", { class: "meta" }, el("summary", { text: "meta-response" }), this.raw);
    this.meta.hidden = true;
    this.status = el("div", { class: "status" });
    this.node = el("div", { class: "msg assistant" }, this.text, this.gens, this.meta, this.status);
    this.rows = new Map();
    log.append(this.node);
  }

  row(index, modality, model) {
    let row = this.rows.get(index);
    if (!row) {
      const name = el("span", { text: `${modality} · ${model || "default"}` });
      const count = el("span", { class: "count", text: "waiting…" });
      const bar = el("progress", { max: "1", value: "0" });
      row = { node: el("div", { class: "gen", "data-modality": modality, "data-index": String(index) }, el("div", { class: "label" }, name, count), bar), bar, count, modality };
      this.rows.set(index, row);
      this.gens.append(row.node);
    }
    return row;
  }

  onChunk(chunk) {
    const choice = chunk.choices && chunk.choices[0];
    if (choice && choice.delta && choice.delta.content) this.text.textContent += choice.delta.content;
    const ext = chunk.modaverse;
    if (!ext) return;
    if (ext.type === "raw_delta") {
      this.meta.hidden = false;
      this.raw.textContent += ext.text;
    } else if (ext.type === "meta_response") {
      this.meta.hidden = false;
      this.raw.textContent = ext.raw;
      if (this.text.textContent !== ext.answer) this.text.textContent = ext.answer;
    } else if (ext.type === "invocation_started") {
      this.row(ext.index, ext.modality, ext.model).count.textContent = "starting…";
    } else if (ext.type === "progress") {
      const row = this.row(ext.index, ext.modality, "");
      row.bar.max = ext.total_steps;
      row.bar.value = ext.step;
      row.count.textContent = `${ext.step} / ${ext.total_steps}`;
    } else if (ext.type === "media") {
      this.showMedia(ext.media);
    } else if (ext.type === "invocation_error") {
      const row = this.row(ext.index, ext.modality, "");
      row.bar.remove();
      row.node.append(el("div", { class: "error", role: "alert", text: `${ext.modality} failed (${ext.code}): ${ext.message}` }));
    } else if (ext.type === "done") {
      this.status.textContent = `${ext.usage.completion_tokens} tokens · ${ext.elapsed_seconds.toFixed(1)} s`;
    }
  }

  showMedia(item) {
    const row = this.row(item.index, item.type, item.model);
    const src = item.url || `data:${item.mime_type};base64,${item.b64_json}`;
    let player;
    if (item.type === "image") player = el("img", { class: "result", src, alt: item.prompt });
    else if (item.type === "video") player = el("video", { class: "result", src, controls: "", loop: "", muted: "", autoplay: "", playsinline: "" });
    else player = el("audio", { class: "result", src, controls: "" });
    const caption = el("div", { class: "caption" }, document.createTextNode(item.prompt + " "));
    if (item.url) caption.append(el("a", { href: item.url, target: "_blank", rel: "noopener", text: "open" }));
    row.node.replaceChildren(el("div", { class: "label" }, el("span", { text: `${item.type} · ${item.model || "default"}` }), el("span", { text: "done" })), player, caption);
    row.done = true;
  }

  fail(text) {
    this.node.append(el("div", { class: "error", role: "alert", text }));
  }

  stopped() {
    this.status.textContent = "stopped";
    for (const row of this.rows.values()) {
      if (row.done) continue;
      row.count.textContent = "stopped";
      row.node.classList.add("stopped");
    }
  }
}

async function readEvents(response, onData) {
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      const data = event.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
      if (!data) continue;  // a keep-alive comment
      if (data === "[DONE]") return;
      onData(JSON.parse(data));
    }
  }
}

function setRunning(value) {
  running = value;
  sendButton.disabled = !!value;
  stopButton.disabled = !value;
  document.body.classList.toggle("busy", !!value);
}

async function send() {
  if (running) return;
  const text = prompt.value.trim();
  const items = attachments.slice();
  if (!text && !items.length) return;
  $("empty")?.remove();
  notice("");
  const content = items.length ? userContent(text, items) : text;
  const user = { role: "user", content };
  userBubble(text, items);
  prompt.value = "";
  prompt.style.height = "";
  attachments = [];
  renderAttachments();
  const view = new AnswerView();
  scrollDown();
  const controller = new AbortController();
  const mine = conversation;
  setRunning({ controller, view });
  const body = { model: "modaverse", messages: [...history, user], stream: true };
  const generators = generatorOptions();
  if (Object.keys(generators).length) body.modaverse = { generators };
  let failed = false;
  try {
    const response = await fetch("/v1/chat/completions", {
      method: "POST", headers: headers(), body: JSON.stringify(body), signal: controller.signal,
    });
    if (!response.ok) {
      failed = true;
      view.fail(await errorMessage(response));
      return;
    }
    await readEvents(response, (chunk) => {
      if (chunk.error) {
        failed = true;
        view.fail(chunk.error.message);
      } else {
        view.onChunk(chunk);
      }
      scrollDown();
    });
  } catch (error) {
    if (error.name === "AbortError") view.stopped();
    else { failed = true; view.fail("The request failed: " + error.message); }
  } finally {
    view.node.classList.add("done");
    setRunning(null);
    // The assistant's turn: its answer text, or for a media-only answer what the LLM wrote. A turn that
    // failed, or was stopped before the LLM wrote anything, stays out of the conversation.
    const said = view.text.textContent || view.raw.textContent;
    if (!failed && said.trim() && mine === conversation) history.push(user, { role: "assistant", content: said });
    prompt.focus();
  }
}

function stop() {
  if (running) running.controller.abort();
}

// ---------------------------------------------------------------- wiring

$("composer").addEventListener("submit", (event) => { event.preventDefault(); send(); });
stopButton.addEventListener("click", stop);
prompt.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) { event.preventDefault(); send(); }
});
prompt.addEventListener("input", () => {
  prompt.style.height = "auto";
  prompt.style.height = Math.min(prompt.scrollHeight, 160) + "px";
});
$("file-input").addEventListener("change", async (event) => {
  await addFiles(Array.from(event.target.files));
  event.target.value = "";
});
$("new-chat").addEventListener("click", () => {
  stop();
  conversation += 1;
  history = [];
  log.replaceChildren();
  notice("");
});
tokenInput.value = localStorage.getItem("modaverse.token") || "";
tokenInput.addEventListener("change", () => {
  localStorage.setItem("modaverse.token", tokenInput.value.trim());
  loadModels();
});

const drop = $("drop");
let dragDepth = 0;
document.addEventListener("dragenter", (event) => { event.preventDefault(); dragDepth += 1; drop.hidden = false; });
document.addEventListener("dragover", (event) => event.preventDefault());
document.addEventListener("dragleave", () => { dragDepth = Math.max(0, dragDepth - 1); if (!dragDepth) drop.hidden = true; });
document.addEventListener("drop", async (event) => {
  event.preventDefault();
  dragDepth = 0;
  drop.hidden = true;
  if (event.dataTransfer && event.dataTransfer.files.length) await addFiles(Array.from(event.dataTransfer.files));
});

$("options").open = !window.matchMedia("(max-width: 600px)").matches;
loadModels();
