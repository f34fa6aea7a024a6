// llmops console: the chat playground. The conversation lives in this page (a "clear" button forgets it);
// each send posts it as JSON to /console/chat/send and reads the SSE answer as it streams (fetch +
// ReadableStream): the upstream's chunks, then `event: receipt` (tokens, cost, latency) or `event: error`.
// Text goes in with textContent only.
"use strict";

(function () {
  const form = document.querySelector("form[data-chat-form]");
  const log = document.getElementById("chat-log");
  if (!form || !log) return;

  const csrf = () => document.body.dataset.csrf || "";
  const $ = (sel) => form.querySelector(sel);
  const fields = {
    route: $("#f-route"), temperature: $("#f-temperature"), maxTokens: $("#f-maxTokens"),
    system: $("#f-system"), messages: $("#f-message"),
  };
  const sendButton = $("[data-chat-send]");
  const formMessage = $("[data-chat-message]");
  const status = $("[data-chat-status]");
  let history = []; // [{role, content}] of the finished turns
  let busy = false;

  function clearErrors() {
    form.querySelectorAll("[data-error-for]").forEach((el) => { el.hidden = true; el.textContent = ""; });
    Object.values(fields).forEach((el) => { if (el) el.removeAttribute("aria-invalid"); });
    formMessage.hidden = true;
    formMessage.textContent = "";
  }

  function fieldError(name, text) {
    const el = form.querySelector(`[data-error-for="${name}"]`);
    if (!el) return false;
    el.textContent = text;
    el.hidden = false;
    if (fields[name]) fields[name].setAttribute("aria-invalid", "true");
    return true;
  }

  function generalError(text) {
    formMessage.textContent = text;
    formMessage.hidden = false;
  }

  function bubble(role, text) {
    const empty = log.querySelector("[data-chat-empty]");
    if (empty) empty.remove();
    const div = document.createElement("div");
    div.className = `msg ${role}`;
    const who = document.createElement("span");
    who.className = "sr";
    who.textContent = role === "user" ? "You: " : "Assistant: ";
    const body = document.createElement("span");
    body.className = "text";
    body.textContent = text;
    div.append(who, body);
    log.append(div);
    return div;
  }

  function number(value) {
    const text = value.trim();
    if (text === "") return null;
    const n = Number(text);
    return Number.isFinite(n) ? n : text; // not a number: the server says so beside the field
  }

  function stat(name, label, value) {
    const span = document.createElement("span");
    span.dataset.stat = name;
    span.textContent = `${label} ${value}`;
    return span;
  }

  function showReceipt(reply, r) {
    const p = document.createElement("p");
    p.className = "stats";
    const tokens = r.tokens || {};
    const parts = [
      stat("tokens", "Tokens", `${tokens.prompt ?? "?"} in, ${tokens.completion ?? "?"} out`),
      stat("cost", "Cost", r.costUsd === null || r.costUsd === undefined ? "unpriced" : `$${r.costUsd}`),
      stat("latency", "Latency", `${r.latencyMs} ms`),
    ];
    if (r.ttftMs !== null && r.ttftMs !== undefined) parts.push(stat("ttft", "First token", `${r.ttftMs} ms`));
    parts.push(stat("route", "Route", r.route || "?"));
    if (r.provider || r.model) parts.push(stat("model", "Model", [r.provider, r.model].filter(Boolean).join("/")));
    if (r.variant) parts.push(stat("variant", "Variant", r.variant));
    parts.forEach((part, i) => { if (i) p.append(" · "); p.append(part); });
    p.title = `request ${r.requestId}`;
    reply.after(p);
  }

  function failReply(reply, text) {
    reply.classList.add("error");
    reply.setAttribute("role", "alert");
    reply.querySelector(".text").textContent = text;
  }

  // One SSE event ("event:" and "data:" lines) from the stream.
  function parseEvent(block) {
    let name = "message";
    const data = [];
    block.split(/\r?\n/).forEach((line) => {
      if (line.startsWith("event:")) name = line.slice(6).trim();
      else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
    });
    return data.length ? { name, data: data.join("\n") } : null;
  }

  async function refused(response) {
    const type = response.headers.get("content-type") || "";
    if (type.includes("application/json")) {
      let doc = {};
      try { doc = await response.json(); } catch (e) { /* not JSON after all */ }
      let placed = false;
      Object.entries(doc.errors || {}).forEach(([name, text]) => { placed = fieldError(name, text) || placed; });
      if (!placed) generalError(doc.message || `The playground refused the message (HTTP ${response.status}).`);
      return;
    }
    if (response.redirected || type.includes("text/html")) {
      generalError(response.status === 403 ? "This page has expired: reload it and try again."
        : "Your session has ended: reload the page and sign in again.");
      return;
    }
    generalError(`The playground failed (HTTP ${response.status}).`);
  }

  async function send() {
    clearErrors();
    const text = fields.messages.value;
    const messages = [];
    if (fields.system.value.trim()) messages.push({ role: "system", content: fields.system.value });
    messages.push(...history, { role: "user", content: text });
    const payload = {
      route: fields.route ? fields.route.value : "", messages,
      temperature: number(fields.temperature.value), maxTokens: number(fields.maxTokens.value),
    };
    let response;
    try {
      response = await fetch("/console/chat/send", {
        method: "POST", credentials: "same-origin",
        headers: { "content-type": "application/json", accept: "text/event-stream", "x-csrf-token": csrf() },
        body: JSON.stringify(payload),
      });
    } catch (e) {
      generalError("The connection to the gateway was lost. Try again.");
      return;
    }
    if (!response.ok || !(response.headers.get("content-type") || "").startsWith("text/event-stream")) {
      await refused(response);
      return;
    }
    fields.messages.value = "";
    const asked = bubble("user", text);
    const reply = bubble("assistant", "");
    reply.setAttribute("aria-busy", "true");
    const out = reply.querySelector(".text");
    let answer = "";
    let failed = false;
    let receipt = null;
    const handle = (event) => {
      if (event.name === "error") {
        let doc = {};
        try { doc = JSON.parse(event.data); } catch (e) { /* keep the raw text */ }
        failed = true;
        failReply(reply, doc.message || event.data);
      } else if (event.name === "receipt") {
        try { receipt = JSON.parse(event.data); } catch (e) { /* no stats then */ }
      } else {
        let doc;
        try { doc = JSON.parse(event.data); } catch (e) { return; }
        const choice = doc.choices && doc.choices[0];
        const piece = choice && choice.delta && choice.delta.content;
        if (piece) { answer += piece; out.textContent = answer; }
      }
    };
    try {
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let pending = "";
      for (;;) {
        const { value, done } = await reader.read();
        pending += decoder.decode(value || new Uint8Array(), { stream: !done });
        const blocks = pending.split(/\r?\n\r?\n/);
        pending = blocks.pop();
        blocks.forEach((block) => { const event = parseEvent(block); if (event) handle(event); });
        if (done) break;
      }
    } catch (e) {
      failed = true;
      failReply(reply, answer ? `${answer}\n\n(The connection was lost before the reply ended.)`
        : "The connection was lost before the reply came.");
    }
    reply.setAttribute("aria-busy", "false");
    if (receipt) showReceipt(reply, receipt);
    if (failed) {
      asked.classList.add("failed");
      return;
    }
    history.push({ role: "user", content: text }, { role: "assistant", content: answer });
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    if (busy) return;
    busy = true;
    sendButton.disabled = true;
    status.textContent = "Waiting for the reply…";
    try {
      await send();
    } finally {
      busy = false;
      sendButton.disabled = false;
      status.textContent = "";
    }
  });

  // Ctrl+Enter (⌘+Enter) in the message box sends it.
  fields.messages.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      form.requestSubmit();
    }
  });

  $("[data-chat-clear]").addEventListener("click", () => {
    if (busy) return;
    history = [];
    log.replaceChildren();
    const empty = document.createElement("p");
    empty.className = "muted";
    empty.dataset.chatEmpty = "";
    empty.textContent = "No messages yet. Pick a route, write a message and send it.";
    log.append(empty);
    clearErrors();
    fields.messages.focus();
  });
})();
