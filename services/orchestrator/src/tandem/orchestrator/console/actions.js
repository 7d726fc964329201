// The operator's actions: each opens a dialog that says what will happen (for a switchover
// or failover the API's preview: the guard's verdict, the target, the saga's steps), asks
// for a reason, then calls the API; a saga it starts is followed live on the cluster page.
import { html, useEffect, useRef, useState } from "./vendor/htm/preact/standalone.module.js";
import { ApiError, call, enc, get } from "./api.js";
import { store, changed } from "./store.js";

function open(spec) {
  store.dialog = spec;
  changed();
}

function close() {
  store.dialog = null;
  changed();
}

function finished(spec, answer) {
  close();
  if (answer && answer.saga_id && spec.cluster) store.followSaga[spec.cluster] = answer.saga_id;
  if (answer && answer.message) store.notice = { cluster: spec.cluster, text: answer.message };
  if (spec.cluster) location.hash = `#/cluster/${enc(spec.cluster)}`;
  changed();
}

export function openSwitchover(cluster, to) {
  open({
    title: `Make ${to} Active on ${cluster}`,
    what: `A managed switchover of ${cluster}: its applications stop on the Active, the last changes are drained and applied on ${to}, then ${to} becomes the Active and starts them.`,
    cluster,
    preview: { path: `/clusters/${enc(cluster)}/switchover/preview`, query: { to } },
    confirm: "Switch over",
    request: (reason) => ["POST", `/clusters/${enc(cluster)}/switchover`, { to, reason }],
  });
}

export function openFailover(cluster, pending) {
  open({
    title: `Confirm the failover of ${cluster}`,
    what: `${pending.failed_node} is lost (${pending.reason}). ${pending.to} becomes the Active: the old Active is fenced first, then ${pending.to} applies what it received and starts the applications.`,
    cluster,
    preview: { path: `/clusters/${enc(cluster)}/failover/preview`, query: { to: pending.to } },
    confirm: "Fail over",
    request: (reason) => [
      "POST",
      `/clusters/${enc(cluster)}/failover`,
      { to: pending.to, confirm: true, reason },
    ],
  });
}

export function openPause(cluster) {
  open({
    title: `Pause ${cluster}`,
    what: `No automatic failover nor automatic switchover of ${cluster} until it is resumed (or the time below ends): a lost Active is only recommended for failover. Operators' switchovers and failovers stay allowed.`,
    cluster,
    duration: true,
    confirm: "Pause",
    request: (reason, forS) => [
      "POST",
      `/clusters/${enc(cluster)}/pause`,
      forS ? { reason, for_s: forS } : { reason },
    ],
  });
}

export function openResume(cluster) {
  open({
    title: `Resume ${cluster}`,
    what: `Automatic failover and switchover of ${cluster} are allowed again.`,
    cluster,
    confirm: "Resume",
    request: (reason) => ["POST", `/clusters/${enc(cluster)}/resume`, { reason }],
  });
}

export function openReinstate(cluster, node) {
  open({
    title: `Reinstate ${node} in ${cluster}`,
    what: `${node} runs the target side of the Active's replication again; the Active then verifies and synchronizes it (only the differing blocks are sent), and ${node} no longer awaits an operator.`,
    cluster,
    confirm: "Reinstate",
    request: (reason) => ["POST", `/clusters/${enc(cluster)}/nodes/${enc(node)}/reinstate`, { reason }],
  });
}

export function openAppRestart(cluster, active) {
  open({
    title: `Restart the applications of ${cluster}`,
    what: `Every application of ${cluster} is stopped, then started again, on its Active ${active}. Clients see them down meanwhile; no switchover.`,
    cluster,
    confirm: "Restart applications",
    request: (reason) => ["POST", `/clusters/${enc(cluster)}/apps/restart`, { reason }],
  });
}

export function openGroupSwitchover(group) {
  const order = [...group.members].sort((a, b) => a.priority - b.priority);
  open({
    title: `Switch group ${group.name} over`,
    what: `Every member moves to its other node (the orchestrator's pick), in priority order, each after its dependencies: ${order.map((m) => m.cluster).join(" → ")}. With no target identity, each member goes to the best candidate.`,
    cluster: null,
    confirm: "Switch the group over",
    request: (reason) => ["POST", `/groups/${enc(group.name)}/switchover`, { reason }],
  });
}

function Preview({ preview }) {
  if (preview === null) return html`<p class="muted">Asking the API what it would do…</p>`;
  if (preview.error) return html`<p class="error" role="alert">preview: ${preview.error}</p>`;
  return html`<div class="preview" data-testid="preview">
    <p class=${preview.allowed ? "ok" : "error"}>
      ${preview.allowed ? "The guard allows it now." : `The API would refuse it: ${preview.refusal}`}
    </p>
    <p>${preview.from_node || "nobody"} → ${preview.to_node || "?"}; epoch after: ${preview.epoch_after ?? "?"}</p>
    <ol class="steps">${preview.steps.map(
      (step) => html`<li>${step.name} <span class="muted">on ${step.node}</span>
        ${step.pivot ? html` <strong>(changes the role: only forward after it)</strong>` : ""}
        ${step.compensation ? html` <span class="muted">undone by: ${step.compensation}</span>` : ""}</li>`,
    )}</ol>
  </div>`;
}

export function ActionDialog({ spec }) {
  const ref = useRef(null);
  const [reason, setReason] = useState("");
  const [forS, setForS] = useState("");
  const [error, setError] = useState("");
  const [busy, setBusy] = useState(false);
  const [preview, setPreview] = useState(null);

  useEffect(() => {
    const dialog = ref.current;
    if (dialog && !dialog.open) dialog.showModal(); // a modal: focus inside, Escape closes
    if (spec.preview) {
      get(spec.preview.path, spec.preview.query)
        .then(setPreview)
        .catch((err) => setPreview({ error: err.message }));
    }
  }, [spec]);

  async function submit(event) {
    event.preventDefault();
    setBusy(true);
    setError("");
    const [method, path, body] = spec.request(reason.trim() || "requested in the web console", Number(forS) || null);
    try {
      finished(spec, await call(method, path, { body }));
    } catch (err) {
      setError(err instanceof ApiError ? `refused (${err.status}): ${err.detail}` : err.message);
      setBusy(false);
    }
  }

  const refused = spec.preview && preview && !preview.error && !preview.allowed;
  return html`<dialog ref=${ref} class="action" aria-labelledby="action-title" onClose=${close}>
    <form method="dialog" onSubmit=${submit}>
      <h2 id="action-title">${spec.title}</h2>
      <p>${spec.what}</p>
      ${spec.preview && html`<${Preview} preview=${preview} />`}
      ${spec.duration &&
      html`<label>For <select id="action-duration" value=${forS} onChange=${(e) => setForS(e.target.value)}>
        <option value="">until resumed</option>
        <option value="1800">30 minutes</option>
        <option value="7200">2 hours</option>
        <option value="86400">1 day</option>
      </select></label>`}
      <label>Reason <input id="action-reason" value=${reason} maxlength="500"
        placeholder="requested in the web console" onInput=${(e) => setReason(e.target.value)} /></label>
      ${error && html`<p class="error" role="alert" data-testid="action-error">${error}</p>`}
      <div class="buttons">
        <button type="button" onClick=${close}>Cancel</button>
        <button type="submit" id="action-confirm" class="primary" disabled=${busy || refused}>
          ${busy ? "Sending…" : spec.confirm}
        </button>
      </div>
    </form>
  </dialog>`;
}
