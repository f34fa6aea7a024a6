// Pure data shaping for the page: money, number formats, time buckets, rows -> chart series.
// No DOM here. Money stays exact: the API sends decimal strings, we add them as BigInt
// pico-dollars (the store keeps nano-dollars, so nothing it sends is finer than that).

const SCALE = 12;
const ONE = 10n ** BigInt(SCALE);
export const HOUR_MS = 3600e3;
export const DAY_MS = 24 * HOUR_MS;
export const GRANULARITY_MS = { hour: HOUR_MS, day: DAY_MS };
export const RANGE_MS = { "24h": DAY_MS, "7d": 7 * DAY_MS, "30d": 30 * DAY_MS };
export const MAX_SERIES = 8; // more than this and a legend stops being readable: the rest is "other"

/** "12.0034" -> BigInt pico-dollars; null/undefined/"" -> null. Throws on anything else. */
export function parseUsd(value) {
  if (value === null || value === undefined || value === "") return null;
  const text = String(value).trim();
  const m = /^(-?)(\d+)(?:\.(\d*))?$/.exec(text);
  if (!m) throw new Error(`not a decimal amount: ${text}`);
  const frac = (m[3] || "").padEnd(SCALE, "0");
  let units = BigInt(m[2]) * ONE + BigInt(frac.slice(0, SCALE));
  if (frac.length > SCALE && frac[SCALE] >= "5") units += 1n; // round half up beyond 1e-12 $
  return m[1] ? -units : units;
}

/** BigInt pico-dollars -> "$1,234.5678" (exact: trailing zeros trimmed, at least two decimals). */
export function formatUsd(units) {
  if (units === null || units === undefined) return "—";
  const sign = units < 0n ? "-" : "";
  const abs = units < 0n ? -units : units;
  const whole = abs / ONE;
  let frac = (abs % ONE).toString().padStart(SCALE, "0").replace(/0+$/, "");
  if (frac.length < 2) frac = frac.padEnd(2, "0");
  return `${sign}$${groupDigits(whole.toString())}.${frac}`;
}

/** BigInt pico-dollars -> "0.001234" (no symbol, no separators): data-value attributes. */
export function plainUsd(units) {
  const abs = units < 0n ? -units : units;
  const frac = (abs % ONE).toString().padStart(SCALE, "0").replace(/0+$/, "");
  return `${units < 0n ? "-" : ""}${abs / ONE}${frac ? "." + frac : ""}`;
}

/** Short money for axis ticks: "$0.0012", "$1.5k". */
export function formatUsdShort(dollars) {
  if (dollars === 0) return "$0";
  if (Math.abs(dollars) >= 1000) return "$" + compact(dollars);
  const digits = Math.abs(dollars) >= 1 ? 2 : Math.min(8, 1 - Math.floor(Math.log10(Math.abs(dollars))) + 1);
  return "$" + Number(dollars.toFixed(digits)).toString();
}

/** BigInt pico-dollars -> float dollars, for drawing only (never shown as a figure). */
export function usdToNumber(units) {
  return units === null ? 0 : Number(units) / Number(ONE);
}

export function groupDigits(digits) {
  return digits.replace(/\B(?=(\d{3})+(?!\d))/g, ",");
}

/** Integers with thousands separators, whatever the browser's locale. */
export function formatInt(n) {
  const v = Math.round(Number(n) || 0);
  return (v < 0 ? "-" : "") + groupDigits(String(Math.abs(v)));
}

/** 1234 -> "1.2k", 5600000 -> "5.6M" (axis ticks). */
export function compact(n) {
  const abs = Math.abs(n);
  for (const [div, suffix] of [[1e12, "T"], [1e9, "G"], [1e6, "M"], [1e3, "k"]]) {
    if (abs >= div) return Number((n / div).toFixed(1)).toString() + suffix;
  }
  return Number(n.toFixed(2)).toString();
}

/** The window to ask for: whole UTC buckets, the last one being the current (partial) one. */
export function windowFor(range, granularity, nowMs) {
  const step = GRANULARITY_MS[granularity];
  const count = Math.round(RANGE_MS[range] / step);
  const end = Math.floor(nowMs / step) * step + step;
  const start = end - count * step;
  const buckets = [];
  for (let t = start; t < end; t += step) buckets.push(t);
  return { start, end, buckets };
}

export function isoUtc(ms) {
  return new Date(ms).toISOString().replace(".000Z", "Z");
}

/** "2026-12-01 13:00 UTC" (hour) or "2026-12-01" (day): a bucket in tooltips. */
export function bucketLabel(ms, granularity) {
  const iso = new Date(ms).toISOString();
  return granularity === "day" ? iso.slice(0, 10) : `${iso.slice(0, 10)} ${iso.slice(11, 16)} UTC`;
}

/** What a dimension value is called on screen: the absent dimension is stored as "". */
export function displayName(value) {
  return value === null || value === undefined || value === "" ? "(none)" : String(value);
}

/**
 * Rows of the usage API (one per bucket and dimension value) -> one series per value, with a
 * value for every bucket (0 where the API sent no row), sorted by cost then tokens, largest first.
 * Past `maxSeries`, the smallest are summed into one "other" series (`other: true`).
 */
export function pivot(rows, dim, buckets, maxSeries = MAX_SERIES) {
  const index = new Map(buckets.map((t, i) => [t, i]));
  const byName = new Map();
  for (const row of rows) {
    const i = index.get(Date.parse(row.bucket));
    if (i === undefined) continue; // outside the window asked for
    const name = row[dim] === null || row[dim] === undefined ? "" : String(row[dim]);
    let s = byName.get(name);
    if (!s) {
      s = newSeries(name, buckets.length);
      byName.set(name, s);
    }
    addInto(s, i, row);
  }
  const all = [...byName.values()].sort(
    (a, b) => cmpBig(b.totalCost, a.totalCost) || b.totalTokens - a.totalTokens || (a.name < b.name ? -1 : 1));
  if (all.length <= maxSeries) return all;
  const kept = all.slice(0, maxSeries - 1);
  const other = newSeries("", buckets.length);
  other.other = true;
  other.members = all.length - kept.length;
  for (const s of all.slice(maxSeries - 1)) {
    s.cost.forEach((c, i) => addInto(other, i, {
      cost_usd: c, total_tokens: s.tokens[i], requests: s.requests[i], unpriced_requests: s.unpriced[i] }));
  }
  return [...kept, other];
}

function newSeries(name, n) {
  return { name, other: false, members: 1, cost: Array(n).fill(0n), tokens: Array(n).fill(0),
    requests: Array(n).fill(0), unpriced: Array(n).fill(0), totalCost: 0n, totalTokens: 0 };
}

function addInto(s, i, row) {
  const cost = typeof row.cost_usd === "bigint" ? row.cost_usd : parseUsd(row.cost_usd) ?? 0n;
  const tokens = Number(row.total_tokens) || 0;
  s.cost[i] += cost;
  s.tokens[i] += tokens;
  s.requests[i] += Number(row.requests) || 0;
  s.unpriced[i] += Number(row.unpriced_requests) || 0;
  s.totalCost += cost;
  s.totalTokens += tokens;
}

function cmpBig(a, b) {
  return a === b ? 0 : a < b ? -1 : 1;
}
