// The dashboard's charts of the last hour, drawn with uPlot (vendored next to this file, MIT).
// Data come from /admin/stats "series": one value per minute, oldest first, computed by the gateway.
"use strict";

const PALETTE = ["#2563eb", "#16a34a", "#d97706", "#9333ea", "#0891b2", "#db2777", "#65a30d", "#dc2626"];
const charts = new Map(); // chart id -> { plot, key }

function chartWidth(node) {
  // the box, not the plot inside it: a plot never shrinks its own container
  const box = node.parentElement;
  const pad = parseFloat(getComputedStyle(box).paddingLeft) + parseFloat(getComputedStyle(box).paddingRight);
  return Math.max(200, Math.floor(box.clientWidth - pad));
}

function chartSpec(series) {
  const names = Object.keys(series.backends || {});
  const lines = [];
  names.forEach((name, i) => {
    lines.push({ label: `${name} requests`, stroke: PALETTE[i % PALETTE.length], width: 2,
                 values: series.backends[name].requests });
    lines.push({ label: `${name} errors`, stroke: PALETTE[i % PALETTE.length], dash: [4, 4], width: 1.5,
                 values: series.backends[name].errors });
  });
  return {
    requests: { title: "Requests and errors per backend (per minute)", lines, unit: "" },
    ttft: { title: "Time to first token", unit: "s", lines: [
      { label: "p50", stroke: PALETTE[0], width: 2, values: series.ttft_p50_s },
      { label: "p95", stroke: PALETTE[2], width: 2, values: series.ttft_p95_s }] },
    tokens: { title: "Tokens per second (completion)", unit: "", lines: [
      { label: "tokens/s", stroke: PALETTE[1], width: 2, fill: "rgba(22,163,74,0.12)", values: series.tokens_per_s }] },
    trouble: { title: "Fallbacks and 429s (per minute)", unit: "", lines: [
      { label: "fallbacks", stroke: PALETTE[3], width: 2, values: series.fallbacks },
      { label: "429s", stroke: "#dc2626", width: 2, values: series.rate_limited }] },
  };
}

// a line with few points (one busy minute) is drawn with its dots, or it would not show at all
function sparse(values) {
  return (values || []).filter((v) => v !== null && v !== undefined).length <= 3;
}

function formatValue(unit) {
  return (u, v) => (v === null || v === undefined ? "–" : unit === "s" ? (v < 1 ? `${Math.round(v * 1000)} ms` : `${v.toFixed(2)} s`) : `${+v.toFixed(2)}`);
}

function makePlot(node, spec, times) {
  const opts = {
    width: chartWidth(node),
    height: 170,
    legend: { live: true },
    cursor: { drag: { x: false, y: false } },
    scales: { x: { time: true }, y: { range: (u, min, max) => [0, Math.max(max || 0, spec.unit === "s" ? 0.01 : 1) * 1.1] } },
    axes: [
      { stroke: "#6b7482", grid: { stroke: "rgba(127,127,127,0.15)" }, size: 30, space: 70,
        values: (u, ticks) => ticks.map((t) => new Date(t * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", hourCycle: "h23" })) },
      { stroke: "#6b7482", grid: { stroke: "rgba(127,127,127,0.15)" }, size: 48,
        values: (u, ticks) => ticks.map((v) => (spec.unit === "s" ? (v < 1 ? `${Math.round(v * 1000)}ms` : `${v}s`) : `${+v.toFixed(2)}`)) },
    ],
    series: [{}, ...spec.lines.map((l) => ({ label: l.label, stroke: l.stroke, width: l.width, dash: l.dash,
                                             fill: l.fill, spanGaps: false, value: formatValue(spec.unit),
                                             points: { show: (u, i) => sparse(u.data[i]), size: 6 } }))],
  };
  return new uPlot(opts, [times, ...spec.lines.map((l) => l.values)], node);
}

// Draw or update every chart; a chart is rebuilt only when its set of lines changes.
function renderCharts(series) {
  if (typeof uPlot === "undefined" || !series) return;
  const specs = chartSpec(series);
  for (const [id, spec] of Object.entries(specs)) {
    const box = document.querySelector(`[data-chart="${id}"]`);
    if (!box) continue;
    box.querySelector(".chart-title").textContent = spec.title;
    const node = box.querySelector(".chart-body");
    const key = spec.lines.map((l) => l.label).join("|");
    const data = [series.times, ...spec.lines.map((l) => l.values)];
    const known = charts.get(id);
    if (known && known.key === key) {
      known.plot.setData(data);
      continue;
    }
    if (known) known.plot.destroy();
    node.replaceChildren();
    charts.set(id, { plot: makePlot(node, spec, series.times), key });
  }
}

window.addEventListener("resize", () => {
  for (const [id, { plot }] of charts) {
    const node = document.querySelector(`[data-chart="${id}"] .chart-body`);
    if (node) plot.setSize({ width: chartWidth(node), height: 170 });
  }
});
