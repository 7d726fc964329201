// How values read on the page: sizes, ages, times, statuses.
import { html } from "./vendor/htm/preact/standalone.module.js";

export function bytes(n) {
  if (n === null || n === undefined) return "?";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${unit === 0 ? value : value.toFixed(1)} ${units[unit]}`;
}

export function seconds(s) {
  if (s === null || s === undefined) return "?";
  if (s < 60) return `${s.toFixed(1)}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(Math.floor(s % 60)).padStart(2, "0")}s`;
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, "0")}m`;
}

export function time(iso) {
  if (!iso) return "";
  const d = new Date(iso);
  return d.toLocaleString(undefined, { hour12: false });
}

export function clock(iso) {
  if (!iso) return "";
  return new Date(iso).toLocaleTimeString(undefined, { hour12: false });
}

const SERVICE_LABELS = {
  serving: "serving",
  degraded: "degraded",
  down: "down",
  needs_operator: "needs operator",
};

export function ServiceBadge({ status }) {
  return html`<span class=${`badge service-${status}`}>${SERVICE_LABELS[status] || status}</span>`;
}

export function StateBadge({ state }) {
  return html`<span class=${`badge state-${state}`}>${String(state).replaceAll("_", " ")}</span>`;
}

// One line per target: "secondary 0 B, oldest 0.0s (in sync)".
export function lagText(node) {
  const state = node.replica_state ? ` (${node.replica_state.replaceAll("_", " ")})` : "";
  const age = node.lag_oldest_age_s === null ? "age ?" : `oldest ${seconds(node.lag_oldest_age_s)}`;
  return `${node.name}: ${bytes(node.lag_bytes)}, ${node.lag_batches} batches, ${age}${state}`;
}

// An event's payload in a line: its reason first, then the rest, shortened.
export function payloadText(payload) {
  const parts = [];
  if (payload && typeof payload.reason === "string" && payload.reason) parts.push(payload.reason);
  for (const [key, value] of Object.entries(payload || {})) {
    if (key === "reason") continue;
    let text = typeof value === "string" ? value : JSON.stringify(value);
    if (text.length > 60) text = `${text.slice(0, 57)}...`;
    parts.push(`${key}=${text}`);
  }
  return parts.join(" · ");
}

// The recovery point now against the cluster's target: "RPO 0.4s of 60s: meeting".
export function RpoLine({ rpo }) {
  if (!rpo) return null;
  const verdict = rpo.meeting === true ? "meeting" : rpo.meeting === false ? "not meeting" : "unknown";
  const cls = rpo.meeting === true ? "ok" : rpo.meeting === false ? "error" : "muted";
  return html`<div class="rpo" data-testid="rpo" title=${rpo.why}>
    RPO ${seconds(rpo.now_s)} of ${seconds(rpo.target_s)}: <span class=${cls}>${verdict}</span>
  </div>`;
}
