// Hand-drawn SVG charts: a stacked bar chart and a line chart over the same time buckets, with
// axes, grid lines and <title> tooltips. Every element is built with createElementNS and every
// string goes in through textContent or setAttribute: names are user-controlled, and the page's
// CSP forbids inline code anyway. No style attributes either (CSP style-src 'self').

const NS = "http://www.w3.org/2000/svg";
const W = 800, H = 260;
const M = { left: 64, right: 12, top: 10, bottom: 30 };
const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
export const PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#9c755f"];
export const OTHER_COLOR = "#9aa5b1";

/** An SVG element with attributes (no style, no event handlers) and children (nodes or text). */
export function svg(tag, attrs = {}, ...children) {
  const node = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  for (const child of children) node.append(child);
  return node;
}

/** An HTML element; children are nodes or plain strings (appended as text, never parsed). */
export function html(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  for (const child of children) node.append(child);
  return node;
}

/**
 * Draw into `container` (its content is replaced). `spec`:
 *   kind: "bars" (stacked) | "lines"; title: accessible name;
 *   buckets: [ms]; granularity: "hour" | "day"; tick: number -> axis label;
 *   series: [{key, label, color, values: [number], raw: [string], tips: [string]}]
 *     one value per bucket; `raw` goes to data-value, `tips` to each point's <title>.
 */
export function drawChart(container, spec) {
  const { buckets, series } = spec;
  const plotW = W - M.left - M.right, plotH = H - M.top - M.bottom;
  const step = plotW / Math.max(1, buckets.length);
  const sums = buckets.map((_, i) => series.reduce((acc, s) => acc + (spec.kind === "bars" ? s.values[i] : 0), 0));
  const peak = spec.kind === "bars" ? Math.max(0, ...sums) : Math.max(0, ...series.flatMap((s) => s.values));
  const ticks = niceTicks(peak);
  const top = ticks[ticks.length - 1] || 1;
  const y = (v) => M.top + plotH - (v / top) * plotH;
  const xMid = (i) => M.left + step * (i + 0.5);

  const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": spec.title,
    "data-kind": spec.kind, "data-buckets": buckets.length });
  root.append(svg("title", {}, spec.title));
  const grid = svg("g", { class: "grid" });
  const yAxis = svg("g", { class: "axis y" });
  for (const t of ticks) {
    grid.append(svg("line", { x1: M.left, x2: W - M.right, y1: y(t), y2: y(t) }));
    yAxis.append(svg("text", { x: M.left - 6, y: y(t) + 4, "text-anchor": "end" }, spec.tick(t)));
  }
  yAxis.append(svg("line", { x1: M.left, x2: M.left, y1: M.top, y2: M.top + plotH }));
  root.append(grid, yAxis, xAxis(buckets, spec.granularity, xMid, M.top + plotH));

  const base = buckets.map(() => 0);
  series.forEach((s, n) => {
    const g = svg("g", { class: "series", "data-series": n, "data-name": s.key, fill: s.color, stroke: s.color });
    if (spec.kind === "lines") {
      const d = s.values.map((v, i) => `${i ? "L" : "M"}${xMid(i).toFixed(1)},${y(v).toFixed(1)}`).join("");
      g.append(svg("path", { d }));
    }
    const r = buckets.length > 200 ? 1.2 : buckets.length > 60 ? 2 : 3;
    s.values.forEach((v, i) => {
      const attrs = { "data-bucket": new Date(buckets[i]).toISOString(), "data-value": s.raw[i] };
      let mark;
      if (spec.kind === "bars") {
        const pad = step > 6 ? step * 0.15 : 0;
        mark = svg("rect", { ...attrs, class: "point", x: (M.left + step * i + pad).toFixed(2), y: y(base[i] + v).toFixed(2),
          width: Math.max(0.5, step - 2 * pad).toFixed(2), height: Math.max(0, y(base[i]) - y(base[i] + v)).toFixed(2) });
        base[i] += v;
      } else {
        mark = svg("circle", { ...attrs, class: "point", cx: xMid(i).toFixed(1), cy: y(v).toFixed(1), r });
      }
      mark.append(svg("title", {}, s.tips[i]));
      g.append(mark);
    });
    root.append(g);
  });
  container.replaceChildren(root);
}

/** The legend under a chart: swatch, name (as text), and the series' total. */
export function drawLegend(list, series, totalText) {
  list.replaceChildren(...series.map((s, n) => html("li", { "data-series": n },
    svg("svg", { width: 12, height: 12, viewBox: "0 0 12 12", "aria-hidden": "true" },
      svg("rect", { width: 12, height: 12, rx: 2, fill: s.color })),
    html("span", { class: "name" }, s.label),
    html("span", { class: "total" }, totalText(s)))));
}

function xAxis(buckets, granularity, xMid, baseline) {
  const g = svg("g", { class: "axis x" });
  g.append(svg("line", { x1: M.left, x2: W - M.right, y1: baseline, y2: baseline }));
  const every = Math.max(1, Math.ceil(buckets.length / 8));
  buckets.forEach((t, i) => {
    if ((buckets.length - 1 - i) % every !== 0) return; // label the newest bucket, then every n-th back
    g.append(svg("line", { x1: xMid(i), x2: xMid(i), y1: baseline, y2: baseline + 4 }));
    g.append(svg("text", { x: xMid(i), y: baseline + 17, "text-anchor": "middle" }, tickLabel(t, granularity)));
  });
  return g;
}

function tickLabel(ms, granularity) {
  const d = new Date(ms);
  const day = `${MONTHS[d.getUTCMonth()]} ${String(d.getUTCDate()).padStart(2, "0")}`;
  if (granularity === "day") return day;
  const hh = `${String(d.getUTCHours()).padStart(2, "0")}:00`;
  return d.getUTCHours() === 0 ? day : hh;
}

/** 0 and 3-6 round steps covering `peak` (1, 2 or 5 times a power of ten). */
export function niceTicks(peak) {
  if (!(peak > 0)) return [0, 1];
  const raw = peak / 4;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((f) => f * mag).find((s) => s >= raw);
  const ticks = [];
  for (let v = 0; v < peak + step / 2; v += step) ticks.push(Number(v.toPrecision(12)));
  if (ticks[ticks.length - 1] < peak) ticks.push(Number((ticks[ticks.length - 1] + step).toPrecision(12)));
  return ticks;
}
