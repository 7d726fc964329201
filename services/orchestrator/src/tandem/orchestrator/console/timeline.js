// The event timeline, newest first: what GET /events had when it opened (the last events
// among the latest TIMELINE_BACK of the stream), then each event the stream brings. Filtered
// by cluster and by type; the payload's reason first.
import { html, useEffect, useState } from "./vendor/htm/preact/standalone.module.js";
import { get } from "./api.js";
import { useStore } from "./store.js";
import { time, clock, payloadText } from "./format.js";

// Events kept from GET /events; shown at first: `initial` of them.
const SHOWN = 500;
// How far back (in event seqs of every cluster) the timeline starts when it opens.
const TIMELINE_BACK = 5000;
const PAGE = 1000;
const MAX_PAGES = 5;

export function Timeline({ cluster, type = "", title = "Events", initial = SHOWN }) {
  const s = useStore();
  const [shown, setShown] = useState(initial);
  const [loaded, setLoaded] = useState([]);
  const [error, setError] = useState("");
  const known = s.position !== null;
  useEffect(() => {
    if (!known) return; // the stream's hello says where the stream is: start from there
    let stopped = false;
    (async () => {
      // Every cluster's: the last PAGE events. One cluster's: its events among the last
      // TIMELINE_BACK of the stream, page after page (GET /events is oldest first).
      let after = Math.max(0, s.position - (cluster ? TIMELINE_BACK : PAGE));
      let kept = [];
      for (let pages = 0; pages < MAX_PAGES && !stopped; pages += 1) {
        const page = await get("/events", { cluster: cluster || undefined, after, limit: PAGE });
        kept = [...kept, ...page].slice(-SHOWN);
        if (page.length < PAGE) break;
        after = page[page.length - 1].seq;
      }
      if (!stopped) {
        setLoaded(kept);
        setError("");
      }
    })().catch((err) => setError(err.message));
    return () => {
      stopped = true;
    };
  }, [cluster, known]);
  const needle = type.trim().toLowerCase();
  const wanted = (e) =>
    (!cluster || e.cluster === cluster) && (!needle || e.type.toLowerCase().includes(needle));
  const bySeq = new Map();
  for (const e of loaded) if (wanted(e)) bySeq.set(e.seq, e);
  for (const e of s.recentEvents) if (wanted(e)) bySeq.set(e.seq, e);
  const all = [...bySeq.values()].sort((a, b) => b.seq - a.seq);
  const events = all.slice(0, shown);
  return html`<section aria-labelledby="timeline-h">
    <h2 id="timeline-h">${title}</h2>
    ${error && html`<p class="error">${error}</p>`}
    ${!error && events.length === 0 && html`<p class="muted">No event yet.</p>`}
    <ol class="timeline" id="timeline">${events.map(
      (e) => html`<li key=${e.seq} data-seq=${e.seq}>
        <time datetime=${e.occurred_at} title=${time(e.occurred_at)}>${clock(e.occurred_at)}</time>
        <span class="etype">${e.type}</span>
        <span class="muted">${cluster ? "" : html`<a href=${`#/cluster/${encodeURIComponent(e.cluster)}`}>${e.cluster}</a>/`}${e.node} e${e.epoch}</span>
        <div class="payload">${payloadText(e.payload)}</div></li>`,
    )}</ol>
    ${all.length > shown &&
    html`<button type="button" onClick=${() => setShown(shown + 100)}>Show ${Math.min(100, all.length - shown)} more</button>`}
  </section>`;
}

export function EventsPage() {
  const s = useStore();
  const [cluster, setCluster] = useState("");
  const [type, setType] = useState("");
  const names = [...s.clusters.keys()].sort();
  return html`<section>
    <h1>Events</h1>
    <div class="filters" role="search">
      <label>Cluster <select id="events-cluster" value=${cluster} onChange=${(e) => setCluster(e.target.value)}>
        <option value="">every cluster</option>
        ${names.map((n) => html`<option value=${n}>${n}</option>`)}
      </select></label>
      <label>Type <input type="search" id="events-type" value=${type} placeholder="e.g. Saga, Alert, RoleChanged"
        onInput=${(e) => setType(e.target.value)} /></label>
    </div>
    <${Timeline} cluster=${cluster} type=${type} title="Newest first" initial=${200} />
  </section>`;
}
