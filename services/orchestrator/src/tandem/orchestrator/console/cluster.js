// One cluster: its nodes, the saga in progress with its steps (live), its recent sagas and
// its event timeline; the operator's actions on it.
import { html, useEffect, useState } from "./vendor/htm/preact/standalone.module.js";
import { enc, get } from "./api.js";
import { store, useStore, canAct, changed } from "./store.js";
import { ServiceBadge, RpoLine, StateBadge, bytes, seconds, time } from "./format.js";
import {
  openAppRestart,
  openFailover,
  openPause,
  openReinstate,
  openResume,
  openSwitchover,
} from "./actions.js";
import { SagaPanel, SagaHistory } from "./sagas.js";
import { LagChart } from "./lagchart.js";
import { Timeline } from "./timeline.js";


function NodeActions({ cluster, node }) {
  if (!canAct() || node.name === cluster.active) return null;
  const buttons = [];
  if (node.alive && node.role === "passive" && !node.standby && !cluster.saga) {
    buttons.push(html`<button type="button" data-action="make-active"
      onClick=${() => openSwitchover(cluster.name, node.name)}>Make Active</button>`);
  }
  if (node.awaiting_operator || ["out_of_sync", "stopped"].includes(node.replica_state)) {
    buttons.push(html`<button type="button" data-action="reinstate"
      onClick=${() => openReinstate(cluster.name, node.name)}>Reinstate</button>`);
  }
  return buttons;
}

function Nodes({ cluster }) {
  return html`<section aria-labelledby="nodes-h">
    <h2 id="nodes-h">Nodes</h2>
    <div class="table-wrap"><table class="grid" id="nodes">
      <thead><tr><th>node</th><th>role</th><th>health</th><th>heartbeat</th><th>lease</th>
        <th>fence</th><th>public address</th><th>replication</th><th></th></tr></thead>
      <tbody>${cluster.nodes.map(
        (n) => html`<tr data-node=${n.name} class=${n.name === cluster.active ? "active-node" : ""}>
          <th scope="row">${n.name}<div class="muted">${n.identity || ""}</div></th>
          <td data-testid="role">${n.role || "unknown"}${n.name === cluster.active ? " (the Active)" : ""}
            ${n.standby ? html`<div class="warn">standby: ${n.standby_reason}</div>` : ""}
            ${n.awaiting_operator ? html`<div class="warn">awaits an operator</div>` : ""}</td>
          <td><${StateBadge} state=${n.health} />
            <div class="checks">${Object.entries(n.checks).map(([k, v]) => html`<span>${k}: ${v}</span> `)}</div></td>
          <td>${n.alive ? "alive" : html`<span class="error">not alive</span>`}
            <div class="muted">${n.heartbeat_age_s === null ? "never heard" : `${seconds(n.heartbeat_age_s)} ago`}
            ${n.heartbeat_late_s ? `, late ${seconds(n.heartbeat_late_s)}` : ""}</div></td>
          <td>${n.lease_role || "?"} e${n.lease_epoch ?? "?"}
            <div class="muted">${n.lease_age_s === null ? "" : `${seconds(n.lease_age_s)} ago`} · ${n.failover_mode}</div></td>
          <td>${n.fenced ? html`<span class="error" title=${n.fenced_reason}>fenced</span>` : "no"}
            ${n.isolated ? html`<div class="warn">isolated</div>` : ""}</td>
          <td>${n.public_address || ""}</td>
          <td class="lag">${n.name === cluster.active
            ? "source"
            : html`${(n.replica_state || "?").replaceAll("_", " ")}<div class="muted">
                ${bytes(n.lag_bytes)}, ${n.lag_batches} batches, oldest ${seconds(n.lag_oldest_age_s)}</div>`}</td>
          <td class="actions"><${NodeActions} cluster=${cluster} node=${n} /></td>
        </tr>`,
      )}</tbody>
    </table></div>
  </section>`;
}

function ClusterActions({ cluster }) {
  if (!canAct()) return null;
  return html`<div class="actions" role="group" aria-label="actions">
    ${cluster.pending_failover &&
    html`<button type="button" class="primary" data-action="confirm-failover"
      onClick=${() => openFailover(cluster.name, cluster.pending_failover)}>Confirm failover…</button>`}
    ${cluster.maintenance
      ? html`<button type="button" data-action="resume" onClick=${() => openResume(cluster.name)}>Resume…</button>`
      : html`<button type="button" data-action="pause" onClick=${() => openPause(cluster.name)}>Pause…</button>`}
    ${cluster.active &&
    html`<button type="button" data-action="app-restart"
      onClick=${() => openAppRestart(cluster.name, cluster.active)}>Restart applications…</button>`}
  </div>`;
}

export function ClusterPage({ name }) {
  const s = useStore();
  const cluster = s.clusters.get(name);
  const [missing, setMissing] = useState("");
  useEffect(() => {
    if (cluster) return;
    get(`/clusters/${enc(name)}`)
      .then((view) => {
        store.clusters.set(view.name, view);
        changed();
      })
      .catch((err) => setMissing(err.message));
  }, [name]);
  if (!cluster) return html`<p class=${missing ? "error" : "muted"}>${missing || `Loading ${name}…`}</p>`;
  const notice = s.notice && s.notice.cluster === name ? s.notice.text : "";
  const sagaId = cluster.saga || s.followSaga[name] || (cluster.last_saga && cluster.last_saga.id);
  return html`<article class="cluster" data-cluster=${name}>
    <p><a href="#/">← all clusters</a></p>
    <h1>${name} <${ServiceBadge} status=${cluster.service} /></h1>
    <p class="reason" data-testid="service-reason">${cluster.service_reason}</p>
    <p>Active: <strong data-testid="active">${cluster.active || "none"}</strong>
      ${" · epoch "}<span data-testid="epoch">${cluster.epoch}</span>
      ${cluster.maintenance &&
      html` · <span class="warn">paused by ${cluster.maintenance.by}
        ${cluster.maintenance.until ? `until ${time(cluster.maintenance.until)}` : ""}: ${cluster.maintenance.reason}</span>`}</p>
    <${RpoLine} rpo=${cluster.rpo} />
    ${cluster.pending_failover &&
    html`<p class="warn" data-testid="pending-failover">A failover to ${cluster.pending_failover.to} waits for an
      operator: ${cluster.pending_failover.reason}</p>`}
    ${cluster.alerts.length > 0 &&
    html`<p class="warn"><a href="#/alerts">${cluster.alerts.length} alerts firing</a>:
      ${cluster.alerts.map((a) => a.code).join(", ")}</p>`}
    ${notice && html`<p class="notice" role="status">${notice}</p>`}
    <${ClusterActions} cluster=${cluster} />
    <${Nodes} cluster=${cluster} />
    <${LagChart} name=${name} />
    ${sagaId && html`<${SagaPanel} id=${sagaId} cluster=${cluster} />`}
    <${SagaHistory} name=${name} last=${cluster.last_saga} />
    <${Timeline} cluster=${name} initial=${40} />
  </article>`;
}
