// One group: its members in priority order with their status, the dependencies drawn as a
// small graph (each member in the column of its depth: after everything it depends on), and
// the group switchover for an operator.
import { html } from "./vendor/htm/preact/standalone.module.js";
import { useStore, canAct } from "./store.js";
import { ServiceBadge } from "./format.js";
import { openGroupSwitchover } from "./actions.js";

const BOX_W = 150;
const BOX_H = 44;
const GAP_X = 60;
const GAP_Y = 16;
const FILL = { serving: "#dafbe1", degraded: "#fff1c2", down: "#ffe2e0", needs_operator: "#ffe2e0" };

// Depth of each member: 0 for one that depends on nothing in the group, else one more than
// its deepest dependency (a cycle, which the config refuses, would stop at the member count).
function depths(members) {
  const byName = new Map(members.map((m) => [m.cluster, m]));
  const depth = new Map();
  const visit = (name, guard) => {
    if (depth.has(name)) return depth.get(name);
    const member = byName.get(name);
    if (!member || guard > members.length) return 0;
    const deps = member.depends_on.filter((d) => byName.has(d));
    const d = deps.length ? 1 + Math.max(...deps.map((x) => visit(x, guard + 1))) : 0;
    depth.set(name, d);
    return d;
  };
  for (const m of members) visit(m.cluster, 0);
  return depth;
}

function DependencyGraph({ members }) {
  const depth = depths(members);
  const columns = [];
  for (const m of [...members].sort((a, b) => a.priority - b.priority)) {
    const d = depth.get(m.cluster) || 0;
    (columns[d] = columns[d] || []).push(m);
  }
  const place = new Map();
  columns.forEach((column, x) =>
    column.forEach((m, y) => place.set(m.cluster, { x: x * (BOX_W + GAP_X), y: y * (BOX_H + GAP_Y) })),
  );
  const width = columns.length * (BOX_W + GAP_X) - GAP_X + 2;
  const height = Math.max(...columns.map((c) => c.length)) * (BOX_H + GAP_Y) - GAP_Y + 2;
  const edges = [];
  for (const m of members) {
    for (const dep of m.depends_on) {
      const from = place.get(dep);
      const to = place.get(m.cluster);
      if (from && to) edges.push({ key: `${dep}->${m.cluster}`, from, to });
    }
  }
  return html`<svg class="graph" width=${width} height=${height} viewBox=${`-1 -1 ${width} ${height}`}
      role="img" aria-label="members and what each depends on (arrows: moved before)">
    <defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7"
      orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#5b6470" /></marker></defs>
    ${edges.map(
      (e) => html`<line key=${e.key} x1=${e.from.x + BOX_W} y1=${e.from.y + BOX_H / 2} x2=${e.to.x}
        y2=${e.to.y + BOX_H / 2} stroke="#5b6470" stroke-width="1.5" marker-end="url(#arrow)" />`,
    )}
    ${members.map((m) => {
      const p = place.get(m.cluster);
      return html`<a key=${m.cluster} href=${`#/cluster/${encodeURIComponent(m.cluster)}`}>
        <rect x=${p.x} y=${p.y} width=${BOX_W} height=${BOX_H} rx="6" fill=${FILL[m.service] || "#eee"}
          stroke="#5b6470" />
        <text x=${p.x + 8} y=${p.y + 18} font-weight="600">${m.cluster}</text>
        <text x=${p.x + 8} y=${p.y + 36} font-size="12">${m.service.replaceAll("_", " ")} · ${m.active || "no Active"}</text>
      </a>`;
    })}
  </svg>`;
}

export function GroupPage({ name }) {
  const s = useStore();
  const group = s.groups.find((g) => g.name === name);
  if (!group) return html`<p class="muted">No group ${name} (yet): the groups come from the orchestrator's config.</p>`;
  const members = [...group.members].sort((a, b) => a.priority - b.priority);
  return html`<article class="group" data-group=${name}>
    <p><a href="#/">← all clusters</a></p>
    <h1>Group ${name} <${ServiceBadge} status=${group.service} /></h1>
    <p class="reason">${group.service_reason}</p>
    ${group.saga && html`<p class="warn">a group switchover runs: ${group.saga}</p>`}
    ${canAct() &&
    html`<div class="actions"><button type="button" data-action="group-switchover"
      onClick=${() => openGroupSwitchover(group)}>Switch group over…</button></div>`}
    <h2>Dependencies</h2>
    <div class="table-wrap"><${DependencyGraph} members=${members} /></div>
    <h2>Members</h2>
    <div class="table-wrap"><table class="grid" id="members">
      <thead><tr><th>priority</th><th>cluster</th><th>service</th><th>Active</th><th>after</th></tr></thead>
      <tbody>${members.map(
        (m) => html`<tr data-cluster=${m.cluster}>
          <td>${m.priority}</td>
          <th scope="row"><a href=${`#/cluster/${encodeURIComponent(m.cluster)}`}>${m.cluster}</a></th>
          <td><${ServiceBadge} status=${m.service} /><div class="reason">${m.service_reason}</div></td>
          <td>${m.active || "none"}</td><td>${m.depends_on.join(", ")}</td>
        </tr>`,
      )}</tbody>
    </table></div>
  </article>`;
}
