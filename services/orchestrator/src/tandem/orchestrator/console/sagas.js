// A saga with its steps, fetched again whenever the stream carries one of its events (its
// correlation id), and the cluster's recent sagas.
import { html, useEffect, useState } from "./vendor/htm/preact/standalone.module.js";
import { enc, get } from "./api.js";
import { useStreamEvents } from "./store.js";
import { StateBadge, seconds, time, clock } from "./format.js";
import { SagaTimeline } from "./sagatimeline.js";

export function SagaPanel({ id, cluster }) {
  const [saga, setSaga] = useState(null);
  const [error, setError] = useState("");
  const [tick, setTick] = useState(0);
  useStreamEvents((event) => {
    if (event.correlation_id === id) setTick((t) => t + 1);
  }, [id]);
  useEffect(() => {
    get(`/sagas/${enc(id)}`)
      .then((view) => {
        setSaga(view);
        setError("");
      })
      .catch((err) => setError(err.message));
  }, [id, tick, cluster.saga]);
  if (error) return html`<section><h2>Saga</h2><p class="error">${error}</p></section>`;
  if (!saga) return null;
  const title = saga.state === "running" ? "Saga in progress" : "Last saga";
  return html`<section aria-labelledby="saga-h" id="saga" data-saga=${saga.id} data-state=${saga.state}>
    <h2 id="saga-h">${title}: ${saga.kind} ${saga.from_node || "?"} → ${saga.to_node}
      ${" "}<${StateBadge} state=${saga.state} /></h2>
    <p class="muted">${saga.reason} · started ${time(saga.started_at)}
      ${saga.ended_at ? ` · ended ${time(saga.ended_at)}` : ""} · ${saga.id}</p>
    <ol class="steps">${saga.steps.map(
      (step) => html`<li data-step=${step.index} data-state=${step.state}>
        <${StateBadge} state=${step.state} /> ${step.name}
        <span class="muted"> on ${step.node}${step.started_at ? ` · ${clock(step.started_at)}` : ""}</span>
        ${step.reason && html`<div class="payload">${step.reason}</div>`}
      </li>`,
    )}</ol>
    <div class="table-wrap"><${SagaTimeline} saga=${saga} /></div>
  </section>`;
}

export function SagaHistory({ name, last }) {
  const [sagas, setSagas] = useState([]);
  const [error, setError] = useState("");
  const key = last ? `${last.id}:${last.state}` : "";
  useEffect(() => {
    get("/sagas", { cluster: name, limit: 20 })
      .then(setSagas)
      .catch((err) => setError(err.message));
  }, [name, key]);
  return html`<section aria-labelledby="history-h">
    <h2 id="history-h">Recent switchovers and failovers</h2>
    ${error && html`<p class="error">${error}</p>`}
    ${!error && sagas.length === 0 && html`<p class="muted">none yet</p>`}
    ${sagas.length > 0 &&
    html`<div class="table-wrap"><table class="grid" id="history">
      <thead><tr><th>started</th><th>kind</th><th>from → to</th><th>who</th><th>why</th>
        <th>took</th><th>outcome</th></tr></thead>
      <tbody>${sagas.map(
        (g) => html`<tr data-saga=${g.id}>
          <td>${time(g.started_at)}</td><td>${g.kind}${g.automatic ? " (auto)" : ""}</td>
          <td>${g.from_node || "?"} → ${g.to_node}</td><td>${g.who}</td><td>${g.reason}</td>
          <td>${g.duration_s === null ? "" : seconds(g.duration_s)}</td>
          <td><${StateBadge} state=${g.outcome} /><div class="muted">${g.outcome_reason}</div></td>
        </tr>`,
      )}</tbody>
    </table></div>`}
  </section>`;
}
