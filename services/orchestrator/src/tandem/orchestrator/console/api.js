// The REST API as the console calls it: every call carries the tab's token; a refusal
// becomes an ApiError with the API's own `detail`, a network failure a different error.

const TOKEN_KEY = "tandem.console.token";

export function savedToken() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function saveToken(token) {
  if (token) sessionStorage.setItem(TOKEN_KEY, token);
  else sessionStorage.removeItem(TOKEN_KEY);
}

export class ApiError extends Error {
  constructor(status, detail) {
    super(`the API answered ${status}: ${detail}`);
    this.status = status;
    this.detail = detail;
  }
}

export class NetworkError extends Error {
  constructor(cause) {
    super(`cannot reach the orchestrator API: ${cause}`);
  }
}

function detailOf(body) {
  if (body && typeof body.detail === "string") return body.detail;
  if (body && Array.isArray(body.detail)) {
    // FastAPI's validation errors: one line per field.
    return body.detail.map((d) => `${(d.loc || []).join(".")}: ${d.msg}`).join("; ");
  }
  return JSON.stringify(body);
}

export async function call(method, path, options = {}) {
  return (await exchange(method, `/api/v1${path}`, options)).parsed;
}

// One request: the decoded answer and the response (its headers).
async function exchange(method, url, { token = savedToken(), body, query } = {}) {
  if (query) {
    const params = new URLSearchParams();
    for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== null) params.set(k, v);
    const text = params.toString();
    if (text) url += `?${text}`;
  }
  const headers = { Authorization: `Bearer ${token}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let answer;
  try {
    answer = await fetch(url, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    });
  } catch (err) {
    throw new NetworkError(err.message || String(err));
  }
  let parsed = null;
  const text = await answer.text();
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    parsed = { detail: text };
  }
  if (!answer.ok) throw new ApiError(answer.status, detailOf(parsed));
  return { parsed, answer };
}

// The target of a `Link: <...>; rel="next"` header, or null.
export function nextLink(header) {
  for (const part of (header || "").split(",")) {
    const m = part.match(/<([^>]*)>\s*;(?:[^;]*;)*\s*rel="?next"?/);
    if (m) return m[1];
  }
  return null;
}

// Every item of a paged list (GET /clusters): its first page, then each page the previous
// one's Link header names (on this origin only), until one names none.
export async function getAll(path, query) {
  const items = [];
  const seen = new Set();
  let url = `/api/v1${path}`;
  let q = query;
  while (url && !seen.has(url)) {
    seen.add(url);
    const { parsed, answer } = await exchange("GET", url, { query: q });
    items.push(...parsed);
    const next = nextLink(answer.headers.get("Link"));
    const target = next ? new URL(next, window.location.href) : null;
    url = target && target.origin === window.location.origin ? target.pathname + target.search : null;
    q = undefined; // the link carries the query
  }
  return items;
}

export const get = (path, query) => call("GET", path, { query });
export const post = (path, body) => call("POST", path, { body });

export function enc(name) {
  return encodeURIComponent(name);
}
