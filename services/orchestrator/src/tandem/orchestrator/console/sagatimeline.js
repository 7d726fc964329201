// A saga's steps on a time line: one bar per step from its start to its end (to now while
// it runs), on the saga's own time scale; the time of each step as its label.
import { html } from "./vendor/htm/preact/standalone.module.js";

const ROW_H = 20;
const LABEL_W = 190;
const BAR_W = 460;
const COLOR = { completed: "#1a7f37", running: "#9a6700", failed: "#cf222e", compensated: "#8c959f" };

export function SagaTimeline({ saga }) {
  const started = saga.steps.filter((s) => s.started_at);
  if (!started.length) return null;
  const t0 = Date.parse(saga.started_at);
  const end = (s) => (s.ended_at ? Date.parse(s.ended_at) : Date.now());
  const t1 = Math.max(t0 + 1, ...started.map(end), saga.ended_at ? Date.parse(saga.ended_at) : 0);
  const scale = BAR_W / (t1 - t0);
  const height = saga.steps.length * ROW_H + 18;
  return html`<svg class="saga-timeline" width=${LABEL_W + BAR_W + 70} height=${height}
      role="img" aria-label=${`the steps over ${((t1 - t0) / 1000).toFixed(1)} s`}>
    ${saga.steps.map((s, i) => {
      const y = i * ROW_H;
      if (!s.started_at) {
        return html`<text x="0" y=${y + 14} class="muted-text">${s.name}</text>`;
      }
      const x = LABEL_W + (Date.parse(s.started_at) - t0) * scale;
      const w = Math.max(2, (end(s) - Date.parse(s.started_at)) * scale);
      const took = ((end(s) - Date.parse(s.started_at)) / 1000).toFixed(2);
      return html`<g>
        <text x="0" y=${y + 14}>${s.name}</text>
        <rect x=${x} y=${y + 3} width=${w} height=${ROW_H - 6} rx="2" fill=${COLOR[s.state] || "#8c959f"}>
          <title>${s.name}: ${s.state}, ${took} s</title></rect>
        <text x=${x + w + 4} y=${y + 14} font-size="11">${took}s</text>
      </g>`;
    })}
    <text x=${LABEL_W} y=${height - 2} font-size="11">0 s</text>
    <text x=${LABEL_W + BAR_W} y=${height - 2} font-size="11" text-anchor="end">${((t1 - t0) / 1000).toFixed(1)} s</text>
  </svg>`;
}
