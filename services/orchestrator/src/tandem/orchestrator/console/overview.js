// Every cluster and group at a glance: service status, Active, lag per target, pause,
// alerts, sagas; a filter and pages of PAGE_SIZE rows (2,000 clusters stay usable).
import { html, useState } from "./vendor/htm/preact/standalone.module.js";
import { useStore, canAct } from "./store.js";
import { ServiceBadge, RpoLine, lagText } from "./format.js";
import { openGroupSwitchover } from "./actions.js";

const PAGE_SIZE = 100;
const SERVICE_ORDER = { needs_operator: 0, down: 1, degraded: 2, serving: 3 };

function matches(cluster, text, service) {
  if (service && cluster.service !== service) return false;
  if (!text) return true;
  const haystack = [cluster.name, cluster.active || "", cluster.service, cluster.service_reason]
    .join(" ")
    .toLowerCase();
  return haystack.includes(text);
}

function ClusterRow({ cluster }) {
  const targets = cluster.nodes.filter((n) => n.name !== cluster.active);
  const last = cluster.last_saga;
  return html`<tr data-cluster=${cluster.name}>
    <th scope="row"><a href=${`#/cluster/${encodeURIComponent(cluster.name)}`}>${cluster.name}</a></th>
    <td><${ServiceBadge} status=${cluster.service} /><div class="reason">${cluster.service_reason}</div></td>
    <td data-testid="active">${cluster.active || "none"}</td>
    <td class="lag"><${RpoLine} rpo=${cluster.rpo} />${targets.map((n) => html`<div>${lagText(n)}</div>`)}</td>
    <td>${cluster.maintenance ? html`<span title=${cluster.maintenance.reason}>paused</span>` : ""}</td>
    <td class=${cluster.alerts.length ? "alerts-firing" : ""}>${cluster.alerts.length}</td>
    <td>
      ${cluster.saga && html`<div class="running">saga running</div>`}
      ${last && html`<div>${last.kind} ${last.state.replaceAll("_", " ")}</div>`}
    </td>
  </tr>`;
}

function Groups({ groups }) {
  if (!groups.length) return null;
  return html`<section aria-labelledby="groups-h">
    <h2 id="groups-h">Groups</h2>
    <table class="grid">
      <thead><tr><th>group</th><th>service</th><th>members (priority order)</th><th></th></tr></thead>
      <tbody>${groups.map(
        (g) => html`<tr data-group=${g.name}>
          <th scope="row"><a href=${`#/group/${encodeURIComponent(g.name)}`}>${g.name}</a></th>
          <td><${ServiceBadge} status=${g.service} /><div class="reason">${g.service_reason}</div></td>
          <td>${[...g.members]
            .sort((a, b) => a.priority - b.priority)
            .map(
              (m) => html`<span class="member">
                <a href=${`#/cluster/${encodeURIComponent(m.cluster)}`}>${m.cluster}</a>
                ${" "}(${m.priority}${m.depends_on.length ? `, after ${m.depends_on.join(", ")}` : ""})
                ${" "}<${ServiceBadge} status=${m.service} />
              </span>`,
            )}</td>
          <td>${canAct() &&
          html`<button type="button" onClick=${() => openGroupSwitchover(g)}>Switch group over…</button>`}</td>
        </tr>`,
      )}</tbody>
    </table>
  </section>`;
}

export function OverviewPage() {
  const s = useStore();
  const [text, setText] = useState("");
  const [service, setService] = useState("");
  const [page, setPage] = useState(0);
  const all = [...s.clusters.values()];
  // Filtered and sorted at each render (the worst first): a few ms for 2,000 clusters; only
  // one page of rows is rendered.
  const needle = text.trim().toLowerCase();
  const shown = all
    .filter((c) => matches(c, needle, service))
    .sort(
      (a, b) =>
        (SERVICE_ORDER[a.service] ?? 9) - (SERVICE_ORDER[b.service] ?? 9) ||
        (a.name < b.name ? -1 : a.name > b.name ? 1 : 0), // not localeCompare: 10x slower
    );
  const pages = Math.max(1, Math.ceil(shown.length / PAGE_SIZE));
  const current = Math.min(page, pages - 1);
  const rows = shown.slice(current * PAGE_SIZE, (current + 1) * PAGE_SIZE);
  const counts = {};
  for (const c of all) counts[c.service] = (counts[c.service] || 0) + 1;

  return html`<section aria-labelledby="clusters-h">
      <h1 id="clusters-h">Clusters</h1>
      <p class="summary" data-testid="summary">
        ${`${all.length} cluster${all.length === 1 ? "" : "s"}: `}
        ${Object.entries(counts)
          .map(([k, v]) => `${v} ${k.replaceAll("_", " ")}`)
          .join(", ") || "none known yet"}
      </p>
      <div class="filters" role="search">
        <label>Search <input type="search" id="filter" value=${text}
          onInput=${(e) => { setText(e.target.value); setPage(0); }} placeholder="name, node, reason" /></label>
        <label>Service <select id="service-filter" value=${service}
          onChange=${(e) => { setService(e.target.value); setPage(0); }}>
          <option value="">any</option>
          <option value="serving">serving</option>
          <option value="degraded">degraded</option>
          <option value="down">down</option>
          <option value="needs_operator">needs operator</option>
        </select></label>
      </div>
      <div class="table-wrap">
        <table class="grid" id="clusters">
          <thead><tr><th>cluster</th><th>service</th><th>Active</th><th>RPO, lag per target</th>
            <th>paused</th><th>alerts</th><th>sagas</th></tr></thead>
          <tbody>${rows.map((c) => html`<${ClusterRow} key=${c.name} cluster=${c} />`)}</tbody>
        </table>
      </div>
      ${pages > 1 &&
      html`<nav class="pager" aria-label="pages of clusters">
        <button type="button" disabled=${current === 0} onClick=${() => setPage(current - 1)}>Previous</button>
        <span>page ${current + 1} of ${pages} (${shown.length} shown)</span>
        <button type="button" disabled=${current >= pages - 1} onClick=${() => setPage(current + 1)}>Next</button>
      </nav>`}
    </section>
    <${Groups} groups=${s.groups} />`;
}
