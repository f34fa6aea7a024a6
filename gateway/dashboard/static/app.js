// The page's controller: reads the controls (kept in the URL hash, so a view can be bookmarked),
// fetches usage and top spenders for the window, and renders the totals strip, two charts and
// the table. Everything shown goes through textContent; the admin key lives in sessionStorage only.

import { ApiError, fetchTopSpenders, fetchUsage } from "./api.js";
import { OTHER_COLOR, PALETTE, drawChart, drawLegend, html } from "./charts.js";
import {
  bucketLabel, compact, displayName, formatInt, formatUsd, formatUsdShort, isoUtc, parseUsd, pivot,
  plainUsd, usdToNumber, windowFor,
} from "./series.js";

const KEY_ITEM = "llmops.dashboard.adminKey";
const DIMS = { team: "team", model: "model", route: "route" };
const $ = (id) => document.getElementById(id);
const state = { range: "24h", granularity: "hour", dim: "team" };
let generation = 0; // a newer load makes an older one's answers moot

function readHash() {
  const params = new URLSearchParams(location.hash.slice(1));
  if (["24h", "7d", "30d"].includes(params.get("range"))) state.range = params.get("range");
  if (["hour", "day"].includes(params.get("granularity"))) state.granularity = params.get("granularity");
  if (params.get("by") in DIMS) state.dim = params.get("by");
  if (state.range === "24h") state.granularity = "hour"; // one day bucket says nothing
  if (state.range === "30d") state.granularity = "day"; // the cost API serves hourly series a week at a time
}

function writeHash() {
  const hash = new URLSearchParams({ range: state.range, granularity: state.granularity, by: state.dim });
  history.replaceState(null, "", `#${hash}`);
}

function syncControls() {
  $("range").value = state.range;
  $("granularity").value = state.granularity;
  $("granularity").querySelector('option[value="day"]').disabled = state.range === "24h";
  $("granularity").querySelector('option[value="hour"]').disabled = state.range === "30d";
  for (const b of document.querySelectorAll("[data-dim]")) b.setAttribute("aria-pressed", String(b.dataset.dim === state.dim));
}

function setStatus(kind, text) {
  const el = $("status");
  el.dataset.kind = kind;
  el.textContent = text;
}

function clearViews() {
  for (const id of ["totals", "cost-chart", "cost-legend", "tokens-chart", "tokens-legend"]) $(id).replaceChildren();
  $("top").tBodies[0].replaceChildren();
}

function explain(err) {
  if (!(err instanceof ApiError)) return `The page failed: ${err.message}`;
  const said = err.message ? ` The server said: “${err.message}”` : "";
  switch (err.status) {
    case 0: return `Could not reach the gateway; check that it is running. (${err.message})`;
    case 401: return `The admin API rejected this key (401). Paste a valid admin key.${said}`;
    case 403: return `This key may not read usage (403): use a key with role viewer or higher.${said}`;
    case 404: return `The cost API is not available on this gateway (404): is the observability module enabled?${said}`;
    case 429: return `Too many failed key attempts (429); wait a minute, then retry.${said}`;
    case 503: return `The control-plane database is unavailable (503); retry shortly.${said}`;
    default: return `The cost API answered ${err.status}.${said}`;
  }
}

async function load() {
  const mine = ++generation;
  writeHash();
  syncControls();
  const key = sessionStorage.getItem(KEY_ITEM);
  if (!key) {
    clearViews();
    setStatus("info", "Paste an admin API key (role viewer or higher) above to load usage and cost.");
    return;
  }
  const win = windowFor(state.range, state.granularity, Date.now());
  const query = { start: isoUtc(win.start), end: isoUtc(win.end), granularity: state.granularity };
  setStatus("info", "Loading…");
  let usage, top;
  try {
    [usage, top] = await Promise.all([
      fetchUsage(key, { ...query, groupBy: state.dim }),
      fetchTopSpenders(key, { start: query.start, end: query.end, by: state.dim, limit: 10 }),
    ]);
  } catch (err) {
    if (mine !== generation) return;
    clearViews();
    if (err instanceof ApiError && err.status === 401) sessionStorage.removeItem(KEY_ITEM);
    setStatus("error", explain(err));
    return;
  }
  if (mine !== generation) return;
  render(usage, top, win);
}

function render(usage, top, win) {
  const rows = usage.rows || [];
  const series = pivot(rows, state.dim, win.buckets);
  const span = state.granularity === "day"
    ? `${bucketLabel(win.start, "day")} to ${bucketLabel(win.end - 1, "day")} (whole UTC days)`
    : `${bucketLabel(win.start, "hour").replace(" UTC", "")} to ${bucketLabel(win.end, "hour")}`;
  renderTotals(usage.totals || {});
  const name = state.dim[0].toUpperCase() + state.dim.slice(1);
  $("top-name").textContent = name;
  $("cost-title").textContent = `Cost by ${state.dim}, per ${state.granularity}`;
  $("tokens-title").textContent = `Tokens by ${state.dim}, per ${state.granularity}`;
  $("top-title").textContent = `Top spenders by ${state.dim}`;
  if (series.length === 0) {
    for (const id of ["cost-chart", "tokens-chart"]) {
      $(id).replaceChildren(html("p", { class: "empty" }, "No usage in this range."));
    }
    $("cost-legend").replaceChildren();
    $("tokens-legend").replaceChildren();
    renderTop([]);
    setStatus("empty", `No usage recorded from ${span}.`);
    return;
  }
  const shown = series.map((s, n) => ({
    ...s,
    key: s.other ? "" : s.name,
    label: s.other ? `other (${s.members})` : displayName(s.name),
    color: s.other ? OTHER_COLOR : PALETTE[n % PALETTE.length],
  }));
  const tip = (s, i, value) => {
    const unpriced = s.unpriced[i] ? `, ${formatInt(s.unpriced[i])} unpriced` : "";
    return `${s.label}\n${bucketLabel(win.buckets[i], state.granularity)}\n${value}` +
      `\n${formatInt(s.requests[i])} requests${unpriced}`;
  };
  drawChart($("cost-chart"), {
    kind: "bars", title: $("cost-title").textContent, buckets: win.buckets, granularity: state.granularity,
    tick: formatUsdShort,
    series: shown.map((s) => ({ ...s, values: s.cost.map(usdToNumber), raw: s.cost.map(plainUsd),
      tips: s.cost.map((c, i) => tip(s, i, formatUsd(c))) })),
  });
  drawLegend($("cost-legend"), shown, (s) => formatUsd(s.totalCost));
  drawChart($("tokens-chart"), {
    kind: "lines", title: $("tokens-title").textContent, buckets: win.buckets, granularity: state.granularity,
    tick: compact,
    series: shown.map((s) => ({ ...s, values: s.tokens, raw: s.tokens.map(String),
      tips: s.tokens.map((t, i) => tip(s, i, `${formatInt(t)} tokens`)) })),
  });
  drawLegend($("tokens-legend"), shown, (s) => `${formatInt(s.totalTokens)} tokens`);
  renderTop(top.rows || []);
  setStatus("ok", `Showing ${span}: ${formatInt(rows.length)} rows.`);
}

function stat(key, label, value, note, warn = false) {
  return html("div", { class: warn ? "stat warn" : "stat", "data-stat": key },
    html("span", { class: "label" }, label), html("span", { class: "value" }, value),
    ...(note ? [html("span", { class: "note" }, note)] : []));
}

function renderTotals(t) {
  const cost = t.cost_usd === null || t.cost_usd === undefined ? null : parseUsd(t.cost_usd);
  const unpriced = Number(t.unpriced_requests) || 0;
  const items = [
    stat("cost_usd", "Cost", cost === null ? "—" : formatUsd(cost),
      unpriced ? `excludes ${formatInt(unpriced)} unpriced requests` : "", unpriced > 0),
    stat("total_tokens", "Total tokens", formatInt(t.total_tokens)),
    stat("prompt_tokens", "Prompt tokens", formatInt(t.prompt_tokens),
      `${formatInt(t.cached_read_tokens)} cached reads, ${formatInt(t.cache_write_tokens)} cache writes`),
    stat("completion_tokens", "Completion tokens", formatInt(t.completion_tokens),
      `${formatInt(t.reasoning_tokens)} reasoning`),
    stat("requests", "Requests", formatInt(t.requests), `${formatInt(t.errors)} errors`, Number(t.errors) > 0),
    stat("unpriced_requests", "Unpriced requests", formatInt(unpriced),
      `${formatInt(t.estimated_requests)} with estimated tokens`, unpriced > 0),
  ];
  if (Number(t.gpu_hours) > 0) items.push(stat("gpu_hours", "GPU hours", Number(t.gpu_hours).toFixed(2)));
  $("totals").replaceChildren(...items);
}

function renderTop(rows) {
  const cells = (row, n) => {
    const cost = row.cost_usd === null || row.cost_usd === undefined ? null : parseUsd(row.cost_usd);
    const share = row.share === null || row.share === undefined ? "—" : `${(Number(row.share) * 100).toFixed(1)} %`;
    return html("tr", {}, html("td", {}, String(n + 1)), html("td", { class: "name" }, displayName(row[state.dim])),
      html("td", { class: "num" }, formatUsd(cost)), html("td", { class: "num" }, share),
      html("td", { class: "num" }, formatInt(row.total_tokens)), html("td", { class: "num" }, formatInt(row.requests)));
  };
  const body = rows.length ? rows.map(cells)
    : [html("tr", {}, html("td", { colspan: 6, class: "empty" }, "No spend in this range."))];
  $("top").tBodies[0].replaceChildren(...body);
}

function init() {
  readHash();
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("key").value.trim();
    $("key").value = "";
    if (value) sessionStorage.setItem(KEY_ITEM, value);
    load();
  });
  $("forget").addEventListener("click", () => {
    sessionStorage.removeItem(KEY_ITEM);
    load();
  });
  $("range").addEventListener("change", () => {
    state.range = $("range").value;
    state.granularity = state.range === "24h" ? "hour" : "day"; // the usual view; hours stay one click away
    load();
  });
  $("granularity").addEventListener("change", () => {
    state.granularity = $("granularity").value;
    load();
  });
  for (const b of document.querySelectorAll("[data-dim]")) {
    b.addEventListener("click", () => {
      state.dim = b.dataset.dim;
      load();
    });
  }
  $("refresh").addEventListener("click", load);
  window.addEventListener("hashchange", () => { // a pasted or bookmarked view (replaceState fires none)
    readHash();
    load();
  });
  load();
}

init();
