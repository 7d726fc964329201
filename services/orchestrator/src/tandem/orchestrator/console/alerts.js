// Alerts, firing or cleared: acknowledge one, or silence the notifications of its kind.
import { html, useEffect, useState } from "./vendor/htm/preact/standalone.module.js";
import { ApiError, call, enc, get } from "./api.js";
import { canAct, useStreamEvents } from "./store.js";
import { time } from "./format.js";

// Events after which the list is asked for again (an alert raised, acked, cleared, silenced).
const ALERT_EVENT = /Alert|Silence/;

function SilenceForm({ alert, onDone }) {
  const [hours, setHours] = useState("2");
  const [comment, setComment] = useState("");
  const [error, setError] = useState("");
  async function submit(event) {
    event.preventDefault();
    try {
      await call("POST", "/silences", {
        body: {
          matchers: { code: alert.code, cluster: alert.cluster },
          for_s: Number(hours) * 3600,
          comment: comment || "silenced in the web console",
        },
      });
      onDone();
    } catch (err) {
      setError(err instanceof ApiError ? `refused (${err.status}): ${err.detail}` : err.message);
    }
  }
  return html`<form class="inline" onSubmit=${submit}>
    <span>Mute notifications of ${alert.code} on ${alert.cluster} (it still fires) for</span>
    <select aria-label="how long" value=${hours} onChange=${(e) => setHours(e.target.value)}>
      <option value="1">1 hour</option><option value="2">2 hours</option><option value="24">1 day</option>
    </select>
    <input aria-label="comment" placeholder="comment" value=${comment} onInput=${(e) => setComment(e.target.value)} />
    <button type="submit">Silence</button> <button type="button" onClick=${onDone}>Cancel</button>
    ${error && html`<p class="error" role="alert">${error}</p>`}
  </form>`;
}

function AlertRow({ alert, reload }) {
  const [silencing, setSilencing] = useState(false);
  const [error, setError] = useState("");
  async function ack() {
    if (!confirm(`Acknowledge ${alert.code} on ${alert.cluster}? Its notifications stop repeating; it fires until its condition ends.`)) return;
    try {
      await call("POST", `/alerts/${enc(alert.fingerprint)}/ack`, { body: { comment: "seen in the web console" } });
      reload();
    } catch (err) {
      setError(err instanceof ApiError ? `refused (${err.status}): ${err.detail}` : err.message);
    }
  }
  const firing = alert.state === "firing";
  const silenced = (alert.silenced_by || []).length > 0; // the silences that mute it
  return html`<tr data-alert=${alert.fingerprint} data-cluster=${alert.cluster} data-code=${alert.code}>
    <td>${time(alert.raised_at)}${alert.count > 1 ? html`<div class="muted">${alert.count} times</div>` : ""}</td>
    <td><a href=${`#/cluster/${enc(alert.cluster)}`}>${alert.cluster}</a><div class="muted">${alert.node}</div></td>
    <td><span class=${`badge severity-${alert.severity}`}>${alert.severity}</span> ${alert.code}
      ${alert.subject ? html`<div class="muted">${alert.subject}</div>` : ""}</td>
    <td>${alert.message}
      ${alert.cleared_at ? html`<div class="muted">cleared ${time(alert.cleared_at)}: ${alert.cleared_reason}</div>` : ""}
      ${error && html`<div class="error" role="alert">${error}</div>`}
      ${silencing && html`<${SilenceForm} alert=${alert} onDone=${() => { setSilencing(false); reload(); }} />`}</td>
    <td>${alert.state}${alert.acknowledged_by ? html`<div class="muted">by ${alert.acknowledged_by}</div>` : ""}
      ${silenced ? html`<div class="muted" title=${alert.silenced_by.join(", ")}>(silenced)</div>` : ""}</td>
    <td class="actions">${canAct() && firing && html`<button type="button" data-action="ack" onClick=${ack}>Acknowledge</button>`}
      ${canAct() && !alert.cleared_at && !silenced && !silencing && html`<button type="button" data-action="silence" onClick=${() => setSilencing(true)}>Silence…</button>`}</td>
  </tr>`;
}

export function AlertsPage() {
  const [state, setState] = useState("firing");
  const [alerts, setAlerts] = useState(null);
  const [error, setError] = useState("");
  const [tick, setTick] = useState(0);
  const reload = () => setTick((t) => t + 1);
  useStreamEvents((event) => {
    if (ALERT_EVENT.test(event.type)) reload();
  }, []);
  useEffect(() => {
    get("/alerts", { state, limit: 500 })
      .then((list) => {
        setAlerts(list);
        setError("");
      })
      .catch((err) => setError(err.message));
  }, [state, tick]);
  return html`<section aria-labelledby="alerts-h">
    <h1 id="alerts-h">Alerts</h1>
    <div class="tabs" role="group" aria-label="which alerts">
      ${["firing", "acknowledged", "cleared"].map(
        (s) => html`<button type="button" data-state-filter=${s} aria-pressed=${state === s} class=${state === s ? "current" : ""}
          onClick=${() => setState(s)}>${s}</button>`,
      )}
    </div>
    ${error && html`<p class="error" role="alert">${error}</p>`}
    ${alerts && alerts.length === 0 && html`<p class="muted" data-testid="no-alerts">No ${state} alerts.</p>`}
    ${alerts && alerts.length > 0 &&
    html`<div class="table-wrap"><table class="grid" id="alerts">
      <thead><tr><th>raised</th><th>cluster</th><th>alert</th><th>why</th><th>state</th><th></th></tr></thead>
      <tbody>${alerts.map((a) => html`<${AlertRow} key=${a.fingerprint} alert=${a} reload=${reload} />`)}</tbody>
    </table></div>`}
  </section>`;
}
