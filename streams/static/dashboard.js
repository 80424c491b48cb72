// The live dashboard: polls the worker's JSON API and redraws the charts.
"use strict";

const CHARTS = [
  { id: "error", title: "error rate", pick: (s) => s.error_rate, format: pct },
  { id: "quality", title: "F1 (accuracy for regressors)", pick: (s) => s.f1 ?? s.accuracy ?? null, format: pct },
  { id: "latency", title: "latency p95 (ms)", pick: (s) => s.latency_p95_ms, format: (v) => v.toFixed(1) },
  { id: "cost", title: "cost per prediction (USD)", pick: (s) => s.cost_per_prediction_usd, format: (v) => v.toExponential(1) },
  { id: "gpu", title: "GPU utilisation", pick: (s) => s.gpu_util_avg, format: pct },
  { id: "throughput", title: "predictions / s", pick: (s) => s.predictions == null ? null : s.predictions / s.window_s, format: (v) => v.toFixed(1) },
];

function pct(v) { return (v * 100).toFixed(1) + "%"; }

const charts = {};
let windowSize = null;

function setup() {
  const grid = document.getElementById("charts");
  CHARTS.forEach((spec) => {
    const canvas = document.createElement("canvas");
    canvas.id = "chart-" + spec.id;
    canvas.className = "chart";
    grid.appendChild(canvas);
    charts[spec.id] = new LineChart(canvas, spec);
  });
  document.getElementById("window").addEventListener("change", (e) => {
    windowSize = Number(e.target.value);
    refresh();
  });
}

async function getJSON(path) {
  const response = await fetch(path);
  if (!response.ok) throw new Error(`${path}: ${response.status}`);
  return response.json();
}

function renderSizes(sizes) {
  const select = document.getElementById("window");
  const current = [...select.options].map((o) => Number(o.value));
  if (sizes.join() !== current.join()) {
    select.innerHTML = sizes.map((s) => `<option value="${s}">${s}s windows</option>`).join("");
  }
  if (windowSize === null || !sizes.includes(windowSize)) windowSize = sizes[0];
  select.value = String(windowSize);
}

function renderList(id, rows, empty) {
  const list = document.getElementById(id);
  list.innerHTML = rows.length ? rows.map((r) => `<li>${r}</li>`).join("") : `<li class="muted">${empty}</li>`;
}

async function refresh() {
  try {
    const { metrics } = await getJSON("/api/v1/metrics?scope=model&limit=5000");
    const sizes = [...new Set(metrics.map((s) => s.window_s))].sort((a, b) => a - b);
    if (sizes.length) renderSizes(sizes);
    const rows = metrics.filter((s) => s.window_s === windowSize);
    CHARTS.forEach((spec) => {
      const series = {};
      rows.forEach((s) => {
        (series[s.model] = series[s.model] || []).push([s.window_end, spec.pick(s) ?? null]);
      });
      charts[spec.id].setData(series);
    });
    const lifecycle = metrics.filter((s) => s.window_s === sizes[0] && s.model !== "_factory" && (s.deployments || s.rollbacks || s.training_runs))
      .sort((a, b) => b.window_start - a.window_start).slice(0, 12)
      .map((s) => `${new Date(s.window_start * 1000).toLocaleTimeString()} <b>${s.model}</b>: ` +
        `${s.training_runs} run(s) finished, ${s.deployments} deployed, ${s.rollbacks} rolled back`);
    renderList("deployments", lifecycle, "no training runs or deployments yet");
    document.getElementById("status").textContent = `updated ${new Date().toLocaleTimeString()} · ${metrics.length} snapshots`;
  } catch (err) {
    document.getElementById("status").textContent = "metrics unavailable: " + err.message;
  }
  for (const [id, path, empty, fmt] of [
    ["alerts", "/api/v1/alerts", "no alert is firing", (a) => `<b>${a.severity}</b> ${a.rule} on ${a.model}: ${a.value.toPrecision(3)} (threshold ${a.threshold})`],
    ["retraining", "/api/v1/retraining", "no retraining requested", (r) => `${new Date(r.ts * 1000).toLocaleTimeString()} <b>${r.model}</b>: ${r.reason}`],
  ]) {
    try {
      const body = await getJSON(path);
      renderList(id, (body.alerts || body.requests || []).map(fmt), empty);
    } catch (err) {
      renderList(id, [], "not available: " + err.message);
    }
  }
}

setup();
refresh();
setInterval(refresh, 3000);
