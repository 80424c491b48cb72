// The live dashboard: polls the worker's JSON API and redraws the charts. The page is built
// with createElement and textContent only (no innerHTML): model names and alert texts come
// from Kafka input and must show as text. The worker's CSP allows no inline script.
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
    select.replaceChildren(...sizes.map((s) => {
      const option = document.createElement("option");
      option.value = String(s);
      option.textContent = `${s}s windows`;
      return option;
    }));
  }
  if (windowSize === null || !sizes.includes(windowSize)) windowSize = sizes[0];
  select.value = String(windowSize);
}

// A list item from parts: a string is text, {b: value} bold text. Names and reasons come from
// event data: they are only ever set as text, never parsed as HTML.
function item(parts, className) {
  const li = document.createElement("li");
  if (className) li.className = className;
  for (const part of parts) {
    if (part !== null && typeof part === "object") {
      const bold = document.createElement("b");
      bold.textContent = String(part.b);
      li.appendChild(bold);
    } else {
      li.appendChild(document.createTextNode(String(part)));
    }
  }
  return li;
}

function renderList(id, rows, empty) {
  const items = rows.length ? rows.map((parts) => item(parts)) : [item([empty], "muted")];
  document.getElementById(id).replaceChildren(...items);
}

function number(v) { return typeof v === "number" ? v.toPrecision(3) : "?"; }

function time(ts) { return new Date(ts * 1000).toLocaleTimeString(); }

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
      .map((s) => [`${time(s.window_start)} `, { b: s.model },
        `: ${s.training_runs} run(s) finished, ${s.deployments} deployed, ${s.rollbacks} rolled back`]);
    renderList("deployments", lifecycle, "no training runs or deployments yet");
    document.getElementById("status").textContent = `updated ${new Date().toLocaleTimeString()} · ${metrics.length} snapshots`;
  } catch (err) {
    document.getElementById("status").textContent = "metrics unavailable: " + err.message;
  }
  for (const [id, path, empty, fmt] of [
    ["alerts", "/api/v1/alerts", "no alert is firing",
      (a) => [{ b: a.severity }, ` ${a.rule} on `, { b: a.model }, `: ${number(a.value)} (threshold ${a.threshold})`]],
    ["retraining", "/api/v1/retraining", "no retraining requested",
      (r) => [`${time(r.ts)} `, { b: r.model }, `: ${r.reason}`]],
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
