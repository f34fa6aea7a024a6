// The cost API client: same origin, `Authorization: Bearer <admin key>`, {status, message, data}
// envelopes. Errors become ApiError with the HTTP status and the server's message, so the page can
// say what went wrong (401 bad key, 403 role too low, 404 module not installed, 503 database down).

// The admin API sits next to /dashboard/ on the same origin (also behind a path prefix).
const BASE = new URL("../llm-ops/v1/observability/", import.meta.url);

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status; // 0: the gateway could not be reached
  }
}

async function call(path, params, key) {
  const url = new URL(path, BASE);
  for (const [k, v] of Object.entries(params)) url.searchParams.set(k, v);
  let response;
  try {
    response = await fetch(url, { headers: { Authorization: `Bearer ${key}`, Accept: "application/json" },
      credentials: "omit", cache: "no-store" });
  } catch (err) {
    throw new ApiError(0, `could not reach the gateway (${err.message})`);
  }
  let body = null;
  try {
    body = await response.json();
  } catch {
    // not an envelope (a proxy's error page, say): the status alone has to do
  }
  if (!response.ok || !body || body.status !== "success") {
    const message = body && typeof body.message === "string" ? body.message : response.statusText;
    throw new ApiError(response.ok ? 500 : response.status, message || `HTTP ${response.status}`);
  }
  return body.data;
}

/** Usage rows per bucket and `groupBy` value, plus the window's totals. */
export function fetchUsage(key, { start, end, granularity, groupBy }) {
  return call("usage", { start, end, granularity, group_by: groupBy }, key);
}

/** The top `limit` spenders by `by` over the window. */
export function fetchTopSpenders(key, { start, end, by, limit = 10 }) {
  return call("top-spenders", { start, end, by, limit: String(limit) }, key);
}
