// The live dashboard: polls the worker's JSON API and redraws. The page is built with
// createElement and textContent only (no innerHTML): model names and alert texts come from
// Kafka input and must show as text. The worker's CSP allows no inline script.
"use strict";

const perSecond = (field) => (s) => (s[field] == null ? null : s[field] / s.window_s);

// Charts: scope of the snapshots, the field charted (or `pick`ed from it); `rollups: false`
// leaves out `_factory` where a sum of all models would dwarf them. Which of the ten metrics
// a chart shows, and its unit, are the field's in the registry (`/api/v1/info`, from
// schemas/outputs.py); only a chart of something that is not the field names its own unit.
const CHARTS = [
  { id: "training", title: "training time, mean of runs finished", field: "training_time_mean_s", rollups: false, empty: "no training run finished in these windows" },
  { id: "records", title: "records / s per pipeline stage", scope: "pipeline", field: "records_per_s", empty: "no pipeline batch in these windows" },
  { id: "bytes", title: "bytes / s per pipeline stage", scope: "pipeline", field: "bytes_per_s", empty: "no pipeline batch reported bytes" },
  { id: "f1", title: "F1 (classifiers)", field: "f1", empty: "no labelled prediction of a classifier yet" },
  { id: "mae", title: "mean absolute error (regressors, in label units)", field: "mae", empty: "no labelled prediction of a regressor (configure regressors = [...])" },
  { id: "gpu", title: "GPU utilisation per model", field: "gpu_util_avg", empty: "no telemetry in these windows" },
  { id: "devices", title: "utilisation per device (GPU and CPU)", scope: "device", field: "gpu_util_avg", empty: "no telemetry in these windows" },
  { id: "deployments", title: "deployments per window", field: "deployments", kind: "bars", rollups: false, empty: "no deployment in these windows" },
  { id: "retrains", title: "retrains (training runs finished) per window", field: "retrains", kind: "bars", rollups: false, empty: "no retrain in these windows" },
  { id: "since", title: "days since the last retrain", field: "days_since_retrain", rollups: false, empty: "no model retrained within the retention" },
  { id: "cost", title: "cost per 1,000 predictions (USD)", field: "cost_per_prediction_usd", empty: "no cost yet (cost_usd or [prices] in the config)" },
  { id: "satisfaction", title: "satisfaction (mean rating, 1 to 5)", field: "satisfaction", empty: "no rated feedback in these windows" },
  { id: "thumbs", title: "thumbs-up rate", field: "thumbs_up_rate", empty: "no thumbs in these windows" },
  { id: "engagement", title: "engagement rate (engaged feedback per prediction)", field: "engagement_rate", empty: "no engagement in these windows" },
  { id: "error", title: "error rate (wrong among labelled)", field: "error_rate", empty: "no labelled prediction yet" },
  { id: "latency", title: "latency p95", field: "latency_p95_ms", empty: "no prediction reported latency" },
  { id: "throughput", title: "predictions / s", field: "predictions", pick: perSecond("predictions"), unit: "count", empty: "no prediction in these windows" },
  { id: "innovation", title: "innovation share (new models or features among deployments)", field: "innovation_share", rollups: false, empty: "no deployment in these windows" },
];

// The model detail: the fields shown, under the metric each belongs to in the registry.
// Counts are summed over the windows shown; the others are the newest value.
const DETAIL = [
  ["training runs", "training_runs"], ["training time, mean", "training_time_mean_s"], ["training time, longest", "training_time_max_s"],
  ["F1", "f1"], ["accuracy", "accuracy"], ["precision", "precision"], ["recall", "recall"], ["MAE", "mae"], ["RMSE", "rmse"], ["labelled share", "label_coverage"],
  ["GPU utilisation", "gpu_util_avg"], ["memory utilisation", "mem_util_avg"], ["idle share", "idle_share"],
  ["deployments", "deployments"], ["rollbacks", "rollbacks"], ["change failure rate", "change_failure_rate"],
  ["retrains", "retrains"], ["days since retrain", "days_since_retrain"], ["retrain lead time", "retrain_lead_time_s"],
  ["cost per 1,000 predictions", "cost_per_prediction_usd"], ["cost (USD, window)", "cost_usd"],
  ["satisfaction (1 to 5)", "satisfaction"], ["thumbs-up rate", "thumbs_up_rate"], ["engagement rate", "engagement_rate"], ["feedback", "feedback"],
  ["error rate", "error_rate"], ["failure rate", "failure_rate"], ["latency p50", "latency_p50_ms"], ["latency p95", "latency_p95_ms"], ["latency p99", "latency_p99_ms"], ["predictions", "predictions"],
  ["innovations", "innovations"], ["innovation share", "innovation_share"],
];
// How the registry's units (`/api/v1/info`, from schemas/outputs.py) are shown; a unit not
// here is shown as a plain number. The one presentation choice on top: cost per prediction
// reads per 1,000 predictions (a dollar figure, not a fraction of a cent).
const DISPLAY = { s: "duration", ms: "ms", share: "share", count: "count", days: "days", "bytes/s": "bytes", "1/s": "count" };
const SHOWN_AS = { cost_per_prediction_usd: "usd1k" };

function unitOf(field) {
  const metric = (state.info.metrics || {})[field];
  return SHOWN_AS[field] || (metric && DISPLAY[metric.unit]) || "plain";
}

// Which of the ten metrics a field belongs to (1-10; 0 before the registry has come), and
// its heading: "3 · accuracy".
function seedOf(field) {
  const metric = (state.info.metrics || {})[field];
  return metric ? metric.seed : 0;
}

function seedTitle(seed) {
  const name = (state.info.seeds || [])[seed - 1];
  return name ? `${seed} · ${name}` : "";
}

function summed(field) {
  const metric = (state.info.metrics || {})[field];
  return Boolean(metric && metric.unit === "count");
}

// Reserved names, said plainly.
const LABELS = { _factory: "all models", _unattributed: "telemetry with no model" };

const state = { info: { window_sizes: [], regressors: [] }, windowSize: null, model: null, rows: [] };
const charts = {};

function label(name) { return LABELS[name] || name; }

function entity(s, scope) {
  if (scope === "device") return `${s.host}/${s.device}`;
  if (scope === "pipeline") return `${s.pipeline}/${s.stage}`;
  return s[scope];
}

function duration(seconds) {
  if (seconds % 3600 === 0) return `${seconds / 3600} h`;
  if (seconds % 60 === 0) return `${seconds / 60} min`;
  return `${seconds} s`;
}

function time(ts) { return clock(ts, true); }

async function getJSON(path) {
  const response = await fetch(path);
  if (!response.ok) throw new Error(`${path}: ${response.status}`);
  return response.json();
}

// The selection lives in the address (#model=churn&window=60), so a view can be bookmarked.
function readHash() {
  const params = new URLSearchParams(location.hash.slice(1));
  state.model = params.get("model");
  const size = Number(params.get("window"));
  if (size) state.windowSize = size;
}

function writeHash() {
  const params = new URLSearchParams();
  if (state.model) params.set("model", state.model);
  if (state.windowSize) params.set("window", String(state.windowSize));
  history.replaceState(null, "", `#${params}`);
}

function pick(name) {
  state.model = state.model === name ? null : name;
  writeHash();
  render();
}

function setup() {
  const grid = document.getElementById("charts");
  CHARTS.forEach((spec) => {
    const figure = document.createElement("figure");
    figure.id = `chart-${spec.id}`;
    figure.className = "chart";
    grid.appendChild(figure);
    const models = (spec.scope || "model") === "model";
    charts[spec.id] = new Chart(figure, { ...spec }, models ? pick : null);
  });
  document.getElementById("window").addEventListener("change", (e) => {
    state.windowSize = Number(e.target.value);
    writeHash();
    refresh();
  });
  document.getElementById("model").addEventListener("change", (e) => {
    state.model = e.target.value || null;
    writeHash();
    render();
  });
  window.addEventListener("resize", () => Object.values(charts).forEach((c) => c.draw()));
}

function option(value, text) {
  const o = document.createElement("option");
  o.value = value;
  o.textContent = text;
  return o;
}

// The window selector, from the configured sizes: filled before the first snapshot.
function renderSizes() {
  const sizes = state.info.window_sizes;
  const select = document.getElementById("window");
  select.replaceChildren(...sizes.map((s) => option(String(s), `${duration(s)} windows`)));
  if (!sizes.includes(state.windowSize)) state.windowSize = sizes[0] ?? null;
  select.value = String(state.windowSize);
}

function renderModels(names) {
  const select = document.getElementById("model");
  const current = [...select.options].map((o) => o.value).join("|");
  const wanted = ["", ...names];
  if (current !== wanted.join("|")) {
    select.replaceChildren(option("", "all models"), ...names.map((n) => option(n, label(n))));
  }
  select.value = state.model && names.includes(state.model) ? state.model : "";
}

function regressors() {
  const known = new Set(state.info.regressors);
  state.rows.forEach((s) => {
    if (s.scope === "model" && s.mae != null && !s.model.startsWith("_")) known.add(s.model);
  });
  return [...known].sort();
}

function renderCharts() {
  const ends = state.rows.map((s) => s.window_end);
  const domain = ends.length ? [Math.min(...ends), Math.max(...ends)] : null;
  CHARTS.forEach((spec) => {
    const scope = spec.scope || "model";
    const read = spec.pick || ((s) => s[spec.field]);
    const series = {};
    state.rows.filter((s) => s.scope === scope).forEach((s) => {
      const name = entity(s, scope);
      if (spec.rollups === false && name === "_factory") return;
      (series[name] = series[name] || []).push([s.window_end, read(s) ?? null]);
    });
    const list = Object.keys(series).sort().map((name) => ({ name, label: label(name), points: series[name] }));
    charts[spec.id].setData(list, state.windowSize, scope === "model" ? state.model : null, domain);
  });
  const regs = regressors();
  charts.f1.setNote(regs.length ? `Regressors have no F1: ${regs.join(", ")} under mean absolute error.` : "");
  charts.mae.setNote(regs.length ? "" : "No model is configured as a regressor (regressors = [\"name\"] in the config).");
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
  const items = rows.length ? rows.map(([parts, className]) => item(parts, className)) : [item([empty], "muted")];
  document.getElementById(id).replaceChildren(...items);
}

function newest(rows, field) {
  for (let i = rows.length - 1; i >= 0; i--) if (rows[i][field] != null) return rows[i];
  return null;
}

// The selected model's numbers (all models by default): the newest value of each field, or
// for counts the sum over the windows shown. Fields the model never had are left out.
function renderDetail() {
  const name = state.model || "_factory";
  const rows = state.rows.filter((s) => s.scope === "model" && s.model === name);
  document.getElementById("detail-title").textContent = label(name);
  const body = [];
  const bySeed = new Map();
  DETAIL.forEach(([text, field]) => {
    const seed = seedOf(field);
    bySeed.set(seed, [...(bySeed.get(seed) || []), [text, field]]);
  });
  [...bySeed.keys()].sort((a, b) => a - b).forEach((seed) => {
    const lines = bySeed.get(seed).map(([text, field]) => {
      const row = newest(rows, field);
      if (!row) return null;
      const unit = unitOf(field);
      if (summed(field)) {
        const sum = rows.reduce((n, s) => n + (s[field] || 0), 0);
        return [text, formatValue(sum, unit), `since ${clock(rows[0].window_start)}`];
      }
      return [text, formatValue(row[field], unit), `at ${clock(row.window_end)}`];
    }).filter(Boolean);
    if (lines.length) body.push(detailHeading(seedTitle(seed)), ...lines.map(detailRow));
  });
  if (!body.length) body.push(detailHeading("no closed window for this model yet"));
  document.getElementById("detail").replaceChildren(...body);
}

function detailHeading(text) {
  const tr = document.createElement("tr");
  const th = document.createElement("th");
  th.colSpan = 3;
  th.textContent = text;
  tr.appendChild(th);
  return tr;
}

function detailRow(cells) {
  const tr = document.createElement("tr");
  cells.forEach((text) => {
    const td = document.createElement("td");
    td.textContent = text;
    tr.appendChild(td);
  });
  return tr;
}

function render() {
  const models = [...new Set(state.rows.filter((s) => s.scope === "model").map((s) => s.model))].sort();
  renderModels(models);
  renderCharts();
  renderDetail();
}

function signedPercent(v) {
  return `${v < 0 ? "−" : "+"}${formatValue(Math.abs(v), "share")}`;
}

// An alert's value against its threshold; a relative rule compares the change over its
// baseline (1.58 is +158 %).
function judged(metric, value, threshold, relative) {
  if (relative) {
    return `${signedPercent(value)} ${value < 0 ? "under" : "over"} baseline (threshold ${signedPercent(threshold)})`;
  }
  const unit = unitOf(metric);
  return `${formatValue(value, unit)} (threshold ${formatValue(threshold, unit)})`;
}

function where(a) {
  return a.scope && a.scope !== "model" ? [` on ${a.scope} `, { b: a.model }] : [" on ", { b: label(a.model) }];
}

function alertParts(a) {
  return [{ b: a.severity }, ` ${a.rule}`, ...where(a), `: ${a.metric} ${judged(a.metric, a.value, a.threshold, a.relative)}`];
}

function retrainingParts(r) {
  const e = r.evidence || {};
  const last = (e.windows || [])[e.windows ? e.windows.length - 1 : 0];
  const why = last && typeof e.threshold === "number"
    ? `${e.metric} ${judged(e.metric, last.value, e.threshold, e.relative)} for ${e.windows.length} window(s)`
    : r.reason;
  const version = r.version && r.version !== "unknown" ? `version ${r.version}` : "version not known yet";
  const reference = e.reference_version && e.reference_version !== r.version ? `, reference ${e.reference_version}` : "";
  return [`${time(r.ts)} `, { b: r.model }, `: ${why}; ${version}${reference}`];
}

function renderLifecycle() {
  const rows = state.rows.filter((s) => s.scope === "model" && s.model !== "_factory" && (s.deployments || s.rollbacks || s.training_runs))
    .sort((a, b) => b.window_start - a.window_start).slice(0, 12)
    .map((s) => [[`${time(s.window_start)} `, { b: s.model },
      `: ${s.training_runs || 0} run(s) finished, ${s.deployments || 0} deployed, ${s.rollbacks || 0} rolled back`]]);
  renderList("deployments", rows, "no training runs or deployments in these windows");
}

async function refreshLists() {
  const lists = [
    ["alerts", "/api/v1/alerts", "no alert is firing", (a) => [[...alertParts(a), ` · since ${time(a.window_end)}`]]],
    ["history", "/api/v1/alerts/history", "no alert has fired yet",
      (a) => [[`${time(a.window_end)} `, { b: a.state }, " ", ...alertParts(a)], a.state]],
    ["retraining", "/api/v1/retraining", "no retraining requested", (r) => [retrainingParts(r)]],
  ];
  await Promise.all(lists.map(async ([id, path, empty, fmt]) => {
    try {
      const body = await getJSON(path);
      renderList(id, (body.alerts || body.requests || []).map(fmt), empty);
    } catch (err) {
      renderList(id, [], "not available: " + err.message);
    }
  }));
}

async function refresh() {
  const status = document.getElementById("status");
  try {
    if (!state.info.window_sizes.length) {
      state.info = await getJSON("/api/v1/info");
      CHARTS.forEach((spec) => {
        const seed = seedOf(spec.field);
        charts[spec.id].spec.unit = spec.unit || unitOf(spec.field);
        charts[spec.id].setKicker(seedTitle(seed));
        charts[spec.id].figure.dataset.metric = String(seed);
      });
      renderSizes();
    }
    const query = `window=${state.windowSize}s&limit=5000`;
    const scopes = await Promise.all(["model", "device", "pipeline"].map((scope) =>
      getJSON(`/api/v1/metrics?scope=${scope}&${query}`)));
    state.rows = scopes.flatMap((body) => body.metrics);
    render();
    renderLifecycle();
    status.textContent = `updated ${time(Date.now() / 1000)} · ${state.rows.length} snapshots`;
  } catch (err) {
    status.textContent = "metrics unavailable: " + err.message;
  }
  await refreshLists();
}

readHash();
setup();
refresh();
setInterval(refresh, 5000);
