// Each target's replication lag over the last hour (GET /clusters/{c}/lag, sampled by the
// orchestrator every `every_s`, asked again at that pace): seconds behind on the left axis,
// bytes not yet applied on the right, drawn by uPlot.
import { html, useEffect, useRef, useState } from "./vendor/htm/preact/standalone.module.js";
import uPlot from "./vendor/uplot/dist/uPlot.esm.js";
import { enc, get } from "./api.js";
import { bytes } from "./format.js";

const COLORS = ["#0b5cad", "#cf222e", "#1a7f37", "#9a6700"];
const HEIGHT = 220;

// uPlot's columns: one x (epoch seconds) shared by every target, a gap (null) where a target
// has no sample at that time.
function columns(history) {
  const targets = Object.keys(history.targets).sort();
  const times = new Set();
  for (const t of targets) for (const p of history.targets[t]) times.add(Date.parse(p.at) / 1000);
  const xs = [...times].sort((a, b) => a - b);
  const index = new Map(xs.map((x, i) => [x, i]));
  const data = [xs];
  for (const t of targets) {
    const seconds = new Array(xs.length).fill(null);
    const sizes = new Array(xs.length).fill(null);
    for (const p of history.targets[t]) {
      const i = index.get(Date.parse(p.at) / 1000);
      seconds[i] = p.lag_s;
      sizes[i] = p.lag_bytes;
    }
    data.push(seconds, sizes);
  }
  return { targets, data };
}

function options(targets, width) {
  const series = [{}];
  targets.forEach((t, i) => {
    const stroke = COLORS[i % COLORS.length];
    series.push({ label: `${t} s`, scale: "s", stroke, width: 2, value: (_, v) => (v === null ? "?" : `${v.toFixed(1)} s`) });
    series.push({ label: `${t} bytes`, scale: "b", stroke, dash: [6, 4], value: (_, v) => (v === null ? "?" : bytes(v)) });
  });
  return {
    width,
    height: HEIGHT,
    series,
    scales: { s: { range: (_, lo, hi) => [0, Math.max(1, hi)] }, b: { range: (_, lo, hi) => [0, Math.max(1024, hi)] } },
    axes: [
      {},
      { scale: "s", label: "seconds behind", values: (_, ticks) => ticks.map((v) => `${v}s`) },
      { scale: "b", side: 1, label: "bytes to apply", grid: { show: false }, values: (_, ticks) => ticks.map(bytes) },
    ],
  };
}

export function LagChart({ name }) {
  const box = useRef(null);
  const [history, setHistory] = useState(null);
  const [error, setError] = useState("");
  useEffect(() => {
    let timer = null;
    let stopped = false;
    const load = () =>
      get(`/clusters/${enc(name)}/lag`, { minutes: 60 })
        .then((h) => {
          if (stopped) return;
          setHistory(h);
          setError("");
          timer = setTimeout(load, Math.max(2, h.every_s) * 1000);
        })
        .catch((err) => {
          if (stopped) return;
          setError(err.message);
          timer = setTimeout(load, 30000);
        });
    load();
    return () => {
      stopped = true;
      clearTimeout(timer);
    };
  }, [name]);

  const { targets, data } = history ? columns(history) : { targets: [], data: [[]] };
  const shape = targets.join(",");
  const plot = useRef(null);
  useEffect(() => {
    if (!box.current || !targets.length) return undefined;
    const chart = new uPlot(options(targets, box.current.clientWidth || 600), data, box.current);
    plot.current = chart;
    return () => {
      chart.destroy();
      plot.current = null;
    };
  }, [shape]);
  useEffect(() => {
    if (plot.current) plot.current.setData(data);
  }, [history]);

  const samples = data[0].length;
  return html`<section aria-labelledby="lag-h" id="lag">
    <h2 id="lag-h">Replication lag, last hour</h2>
    ${error && html`<p class="error">${error}</p>`}
    ${history && !targets.length && html`<p class="muted">No target sampled yet (a cluster with no Active has none).</p>`}
    ${history && targets.length > 0 &&
    html`<p class="muted" data-testid="lag-samples">${samples} samples, one every ${history.every_s} s
      (kept by this orchestrator in memory: a restarted one starts again).</p>`}
    <div ref=${box} class="lag-chart" role="img" aria-label=${`replication lag of ${targets.join(", ")}`}></div>
  </section>`;
}
