// llmops console: what the server-rendered pages need in the browser. No inline code anywhere (the CSP
// forbids it); every behaviour hangs off data attributes, and text goes in with textContent only.
"use strict";

(function () {
  const csrf = () => document.body.dataset.csrf || "";

  // Forms with data-confirm ask first (window.confirm: keyboard reachable, announced by screen readers).
  document.addEventListener("submit", (event) => {
    const form = event.target;
    if (form instanceof HTMLFormElement && form.dataset.confirm && !window.confirm(form.dataset.confirm)) {
      event.preventDefault();
      event.stopImmediatePropagation();
    }
  }, true);

  // htmx requests carry the session's CSRF token too.
  document.addEventListener("htmx:configRequest", (event) => {
    event.detail.headers["x-csrf-token"] = csrf();
  });

  // ---- charts (uPlot) -------------------------------------------------------------------------
  const palette = ["#2456d6", "#d97706", "#1a7f37", "#b42318", "#7c3aed", "#0e7490", "#be185d", "#4b5563"];
  const drawn = new WeakMap();

  function draw(el) {
    if (typeof uPlot === "undefined") return;
    let spec;
    try { spec = JSON.parse(el.dataset.chart); } catch (e) { return; }
    const old = drawn.get(el);
    if (old) old.destroy();
    el.replaceChildren();
    if (!spec.x || spec.x.length === 0) {
      const p = document.createElement("p");
      p.className = "muted";
      p.textContent = "No data yet.";
      el.append(p);
      return;
    }
    const bar = spec.kind === "bar";
    const xs = bar ? spec.x.map((_, i) => i) : spec.x;
    const data = [xs, ...spec.series.map((s) => s.values.map((v) => (v === null || v === undefined ? null : Number(v))))];
    const width = Math.max(240, el.clientWidth || el.parentElement.clientWidth || 600);
    const opts = {
      width, height: Number(el.dataset.height || 220),
      // bars sit on whole numbers: pad the x range by half a bar so the first and last are whole
      scales: { x: bar ? { time: false, range: (u, min, max) => [min - 0.5, max + 0.5] } : { time: !!spec.time } },
      legend: { show: spec.series.length > 0 },
      axes: [
        bar ? { values: (u, ticks) => ticks.map((t) => (Number.isInteger(t) ? String(spec.x[t] ?? "") : "")) } : {},
        { values: (u, ticks) => ticks.map((t) => (t === 0 ? "0" : String(+t.toPrecision(3)))) },  // small costs stay visible
      ],
      series: [{ label: spec.xLabel || "x" }, ...spec.series.map((s, i) => ({
        label: s.label, stroke: palette[i % palette.length], width: 2,
        fill: bar ? palette[i % palette.length] + "88" : undefined,
        paths: bar ? uPlot.paths.bars({ size: [0.6, 60] }) : undefined,
        points: { show: xs.length < 40 },
      }))],
    };
    drawn.set(el, new uPlot(opts, data, el));
  }

  function drawAll(root) {
    (root || document).querySelectorAll("[data-chart]").forEach(draw);
  }

  // ---- uploads with progress ------------------------------------------------------------------
  // <form data-upload> with a file input, a <progress>, and an output [data-upload-status]: the file goes
  // to the form's action as the raw request body (XMLHttpRequest, for its progress events); on success the
  // page goes to the answer's `location` (or reloads).
  function wireUpload(form) {
    if (form.dataset.wired) return;
    form.dataset.wired = "1";
    const input = form.querySelector("input[type=file]");
    const zone = form.querySelector(".dropzone");
    if (zone && input) {
      zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
      zone.addEventListener("dragleave", () => zone.classList.remove("over"));
      zone.addEventListener("drop", (e) => {
        e.preventDefault();
        zone.classList.remove("over");
        if (e.dataTransfer && e.dataTransfer.files.length) {
          input.files = e.dataTransfer.files;
          input.dispatchEvent(new Event("change"));
        }
      });
    }
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const file = input && input.files && input.files[0];
      const status = form.querySelector("[data-upload-status]");
      const bar = form.querySelector("progress");
      const say = (text, bad) => { if (status) { status.textContent = text; status.classList.toggle("error", !!bad); } };
      if (!file) { say("Choose a file first.", true); return; }
      const params = new URLSearchParams();
      form.querySelectorAll("input:not([type=file]):not([type=hidden]), select").forEach((el) => {
        if (el.name && el.value) params.set(el.name, el.value);
      });
      if (!params.has("filename")) params.set("filename", file.name);
      const xhr = new XMLHttpRequest();
      xhr.open("POST", form.action + (form.action.includes("?") ? "&" : "?") + params.toString());
      xhr.setRequestHeader("x-csrf-token", csrf());
      xhr.setRequestHeader("content-type", file.type || "application/octet-stream");
      xhr.upload.addEventListener("progress", (e) => {
        if (e.lengthComputable && bar) { bar.max = e.total; bar.value = e.loaded; }
        say(e.lengthComputable ? `Uploading… ${Math.round((100 * e.loaded) / e.total)}%` : "Uploading…");
      });
      xhr.addEventListener("load", () => {
        let answer = {};
        try { answer = JSON.parse(xhr.responseText); } catch (e) { /* not JSON */ }
        if (xhr.status >= 200 && xhr.status < 300) {
          if (bar) bar.value = bar.max;
          say("Uploaded.");
          window.location.assign(answer.location || window.location.href);
        } else {
          say(answer.message || `Upload failed (HTTP ${xhr.status}).`, true);
        }
      });
      xhr.addEventListener("error", () => say("Upload failed: the connection was lost.", true));
      say("Uploading…");
      xhr.send(file);
    });
  }

  function wireAll(root) {
    (root || document).querySelectorAll("form[data-upload]").forEach(wireUpload);
    drawAll(root);
  }

  document.addEventListener("DOMContentLoaded", () => wireAll(document));
  document.addEventListener("htmx:afterSettle", (event) => wireAll(event.target));
  let resizeTimer;
  window.addEventListener("resize", () => { clearTimeout(resizeTimer); resizeTimer = setTimeout(() => drawAll(document), 200); });
  window.llmopsConsole = { csrf, drawAll };
})();
