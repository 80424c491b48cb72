// A small chart library for the factory-pulse dashboard: canvas, no dependencies, so the page
// works on closed networks and under a CSP that allows scripts from this worker only. Names
// (models, devices, pipelines) come from Kafka input: they are only ever set as textContent.
// Each chart states what it drew as data attributes of its <figure> (data-points, data-ticks,
// data-tick-values, data-x-ticks, data-series), which the browser test reads from the DOM.
"use strict";

const PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04",
  "#db2777", "#4b5563", "#65a30d"];
const colors = {};

// One color per name across all charts, so a model reads the same everywhere.
function colorOf(name) {
  if (!(name in colors)) colors[name] = PALETTE[Object.keys(colors).length % PALETTE.length];
  return colors[name];
}

// Display units. Each picks a scale for the largest value shown, so ticks read "2 MB/s" or
// "1.5 h" rather than "2000000" or "5400 s".
const UNITS = {
  plain: () => ({ scale: 1, suffix: "" }),
  share: () => ({ scale: 100, suffix: " %" }),
  usd1k: () => ({ scale: 1000, prefix: "$" }), // cost per prediction, shown per 1k predictions
  ms: () => ({ scale: 1, suffix: " ms" }),
  days: (max) => (max >= 2 ? { scale: 1, suffix: " d" } : max >= 2 / 24 ? { scale: 24, suffix: " h" }
    : { scale: 1440, suffix: " min" }),
  count: (max) => (max >= 1e9 ? { scale: 1e-9, suffix: "G" } : max >= 1e6 ? { scale: 1e-6, suffix: "M" }
    : max >= 1e4 ? { scale: 1e-3, suffix: "k" } : { scale: 1, suffix: "" }),
  bytes: (max) => (max >= 1e9 ? { scale: 1e-9, suffix: " GB/s" } : max >= 1e6 ? { scale: 1e-6, suffix: " MB/s" }
    : max >= 1e3 ? { scale: 1e-3, suffix: " kB/s" } : { scale: 1, suffix: " B/s" }),
  duration: (max) => (max >= 7200 ? { scale: 1 / 3600, suffix: " h" } : max >= 120 ? { scale: 1 / 60, suffix: " min" }
    : { scale: 1, suffix: " s" }),
};

const exact = new Intl.NumberFormat("en-US", { maximumSignificantDigits: 4 });

// A value as an operator reads it: four significant digits in the unit that fits it, never in
// e-notation.
function formatValue(value, unit) {
  if (typeof value !== "number" || !Number.isFinite(value)) return "–";
  const u = (UNITS[unit] || UNITS.plain)(Math.abs(value));
  return `${u.prefix || ""}${exact.format(value * u.scale)}${u.suffix || ""}`;
}

// Fraction digits that show `step` exactly (0.25 -> 2, 5 -> 0).
function decimals(step) {
  for (let d = 0; d < 10; d++) {
    const scaled = step * 10 ** d;
    if (Math.abs(scaled - Math.round(scaled)) < 1e-6 * Math.max(1, scaled)) return d;
  }
  return 10;
}

// Axis steps read at a glance: 1, 2, 2.5 or 5 times a power of ten.
function niceStep(span, count) {
  const raw = span / count;
  const power = 10 ** Math.floor(Math.log10(raw));
  return [1, 2, 2.5, 5, 10].find((m) => m * power >= raw * (1 - 1e-9)) * power;
}

// Round ticks covering [lo, hi], about `count` intervals, none finer than `minStep`.
function niceTicks(lo, hi, count, minStep = 0) {
  if (hi - lo < 1e-12) hi = lo + (Math.abs(lo) || 1);
  const step = Math.max(niceStep(hi - lo, count), minStep);
  const first = Math.floor(lo / step + 1e-9);
  const last = Math.ceil(hi / step - 1e-9);
  const d = decimals(step);
  const values = [];
  for (let i = first; i <= last; i++) values.push(Number((i * step).toFixed(d)));
  return { values, step, decimals: d };
}

// Time-axis steps (seconds); hour steps and more align to local midnight.
const TIME_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600,
  43200, 86400, 172800, 604800];

function pad(n) { return String(n).padStart(2, "0"); }

function clock(ts, seconds) {
  const d = new Date(ts * 1000);
  const hm = `${pad(d.getHours())}:${pad(d.getMinutes())}`;
  return seconds ? `${hm}:${pad(d.getSeconds())}` : hm;
}

// Labels about every 50 px ("12:05"), 75 px where they need seconds ("12:05:30").
function timeTicks(x0, x1, pixels) {
  const fit = (spacing) => TIME_STEPS.find((s) => (x1 - x0) / s <= pixels / spacing) || TIME_STEPS[TIME_STEPS.length - 1];
  const step = fit(50) < 60 ? fit(75) : fit(50);
  const offset = new Date(x0 * 1000).getTimezoneOffset() * 60; // UTC minus local, seconds
  const ticks = [];
  for (let t = Math.ceil((x0 - offset) / step) * step + offset; t <= x1; t += step) {
    ticks.push([t, step >= 86400 ? new Date(t * 1000).toLocaleDateString() : clock(t, step < 60)]);
  }
  return ticks;
}

class Chart {
  // `spec`: title, unit, kind ("line" or "bars"); the kicker (which of the ten metrics)
  // comes with the registry (`setKicker`).
  // `onPick(name)`, if given, is called when a legend entry is clicked.
  constructor(figure, spec, onPick) {
    this.figure = figure;
    this.spec = spec;
    this.onPick = onPick;
    this.series = [];
    this.windowS = 60;
    this.selected = null;
    this.hoverX = null;
    const caption = document.createElement("figcaption");
    this.kicker = document.createElement("span");
    this.kicker.className = "kicker";
    caption.append(this.kicker, document.createElement("br"), spec.title);
    this.canvas = document.createElement("canvas");
    this.legend = document.createElement("ul");
    this.legend.className = "legend";
    this.note = document.createElement("p");
    this.note.className = "note";
    figure.append(caption, this.canvas, this.legend, this.note);
    figure.dataset.points = "0";
    this.canvas.addEventListener("mousemove", (e) => this.hover(e));
    this.canvas.addEventListener("mouseleave", () => this.unhover());
  }

  // Which of the ten metrics the chart shows, once the registry has said.
  setKicker(text) { this.kicker.textContent = text; }

  // `series`: [{name, label, points: [[x, value], ...]}]; series without a value are left out.
  // `domain`: the time range [first, last] all charts share, so they line up.
  setData(series, windowS, selected, domain) {
    this.series = series
      .map((s) => ({ ...s, points: s.points.filter((p) => p[1] !== null && p[1] !== undefined).sort((a, b) => a[0] - b[0]) }))
      .filter((s) => s.points.length);
    this.windowS = windowS;
    this.selected = selected;
    this.domain = domain;
    this.renderLegend();
    this.draw();
  }

  setNote(text) { this.note.textContent = text || ""; }

  renderLegend() {
    this.legend.replaceChildren(...this.series.map((s) => {
      const li = document.createElement("li");
      if (s.name === this.selected) li.className = "selected";
      const entry = document.createElement(this.onPick ? "button" : "span");
      if (this.onPick) {
        entry.type = "button";
        entry.title = "show this model's numbers";
        entry.addEventListener("click", () => this.onPick(s.name));
      }
      const swatch = document.createElement("span");
      swatch.className = "swatch";
      swatch.style.background = colorOf(s.name);
      entry.append(swatch, `${s.label} ${this.summary(s.points)}`);
      li.appendChild(entry);
      return li;
    }));
    this.figure.dataset.series = this.series.map((s) => s.label).join("|");
  }

  // What a legend entry says: the newest value, or for counts (bars) their total.
  summary(points) {
    if (this.spec.kind === "bars") {
      return `${formatValue(points.reduce((n, p) => n + p[1], 0), this.spec.unit)} in all`;
    }
    return formatValue(points[points.length - 1][1], this.spec.unit);
  }

  // Geometry of the plot for the current data and canvas size.
  layout() {
    const width = this.canvas.clientWidth || 360;
    const height = this.canvas.clientHeight || 170;
    const points = this.series.flatMap((s) => s.points);
    const values = points.map((p) => p[1]);
    const unit = (UNITS[this.spec.unit] || UNITS.plain)(Math.max(...values.map(Math.abs)));
    const scaled = values.map((v) => v * unit.scale);
    const whole = this.spec.kind === "bars" && unit.scale === 1; // counts: no half deployment
    const y = niceTicks(Math.min(0, ...scaled), Math.max(0, ...scaled), Math.max(2, Math.floor(height / 40)), whole ? 1 : 0);
    const xs = [...points.map((p) => p[0]), ...(this.domain || [])];
    const half = this.windowS / 2; // room for a window's bar or point at either end
    const [x0, x1] = [Math.min(...xs) - half, Math.max(...xs) + half];
    const left = 8 + Math.max(...y.values.map((v) => this.tickLabel(v, y.decimals, unit).length)) * 7;
    const box = { left, right: width - 10, top: 8, bottom: height - 20 };
    return {
      width, height, unit, y, x0, x1, box,
      sx: (x) => box.left + (x - x0) / (x1 - x0) * (box.right - box.left),
      sy: (v) => box.bottom - (v * unit.scale - y.values[0]) / (y.values[y.values.length - 1] - y.values[0]) * (box.bottom - box.top),
      xTicks: timeTicks(x0, x1, box.right - box.left),
    };
  }

  tickLabel(value, digits, unit) {
    const text = value.toLocaleString("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
    return `${unit.prefix || ""}${text}${unit.suffix || ""}`;
  }

  draw() {
    const c = this.canvas;
    const ratio = window.devicePixelRatio || 1;
    const width = c.clientWidth || 360;
    const height = c.clientHeight || 170;
    c.width = width * ratio;
    c.height = height * ratio;
    const g = c.getContext("2d");
    g.scale(ratio, ratio);
    g.font = "11px system-ui, sans-serif";
    const count = this.series.reduce((n, s) => n + s.points.length, 0);
    this.figure.dataset.points = String(count);
    if (!count) {
      Object.assign(this.figure.dataset, { ticks: "", tickValues: "", xTicks: "" });
      g.fillStyle = "#6b7280";
      g.fillText(this.spec.empty || "no closed window has this metric yet", 8, height / 2);
      return;
    }
    const L = this.layout();
    this.geometry = L;
    this.drawAxes(g, L);
    const draw = this.spec.kind === "bars" ? this.drawBars : this.drawLines;
    draw.call(this, g, L);
    if (this.hoverX !== null) {
      g.strokeStyle = "#9ca3af";
      g.beginPath(); g.moveTo(L.sx(this.hoverX), L.box.top); g.lineTo(L.sx(this.hoverX), L.box.bottom); g.stroke();
    }
  }

  drawAxes(g, L) {
    const { box, y, unit } = L;
    const labels = y.values.map((v) => this.tickLabel(v, y.decimals, unit));
    Object.assign(this.figure.dataset, { ticks: labels.join("|"), tickValues: y.values.join(","),
      xTicks: L.xTicks.map((t) => t[1]).join("|") });
    g.lineWidth = 1;
    g.strokeStyle = "#e5e7eb";
    g.fillStyle = "#6b7280";
    g.textAlign = "right";
    y.values.forEach((v, i) => {
      const py = L.sy(v / unit.scale);
      g.beginPath(); g.moveTo(box.left, py); g.lineTo(box.right, py); g.stroke();
      g.fillText(labels[i], box.left - 4, py + 4);
    });
    g.textAlign = "center";
    L.xTicks.forEach(([t, label]) => {
      const px = L.sx(t);
      g.beginPath(); g.moveTo(px, box.bottom); g.lineTo(px, box.bottom + 4); g.stroke();
      g.fillText(label, px, L.height - 5);
    });
    g.textAlign = "left";
  }

  // A selected series is drawn on top, the others faded.
  styleFor(g, name) {
    g.globalAlpha = this.selected === null || this.selected === name || !this.has(this.selected) ? 1 : 0.25;
    g.strokeStyle = g.fillStyle = colorOf(name);
    g.lineWidth = name === this.selected ? 3 : 2;
  }

  has(name) { return this.series.some((s) => s.name === name); }

  drawLines(g, L) {
    const order = [...this.series].sort((a, b) => (a.name === this.selected) - (b.name === this.selected));
    order.forEach((s) => {
      this.styleFor(g, s.name);
      g.beginPath();
      // a window without a value breaks the line rather than bridging it
      s.points.forEach(([x, v], i) => (i && x - s.points[i - 1][0] <= this.windowS * 1.5
        ? g.lineTo(L.sx(x), L.sy(v)) : g.moveTo(L.sx(x), L.sy(v))));
      g.stroke();
      // a point without a neighbour to join is drawn larger, so it does not get lost
      const joined = (i) => (i > 0 && s.points[i][0] - s.points[i - 1][0] <= this.windowS * 1.5)
        || (i < s.points.length - 1 && s.points[i + 1][0] - s.points[i][0] <= this.windowS * 1.5);
      s.points.forEach(([x, v], i) => {
        const r = joined(i) ? 2 : 3.5;
        g.fillRect(L.sx(x) - r, L.sy(v) - r, 2 * r, 2 * r);
      });
    });
    g.globalAlpha = 1;
  }

  drawBars(g, L) {
    const slot = (L.sx(this.windowS) - L.sx(0)) * 0.8;
    const width = Math.max(1, slot / this.series.length);
    this.series.forEach((s, i) => {
      this.styleFor(g, s.name);
      s.points.forEach(([x, v]) => {
        const px = L.sx(x) - slot / 2 + i * width;
        g.fillRect(px, Math.min(L.sy(v), L.sy(0)), Math.max(1, width - 1), Math.abs(L.sy(0) - L.sy(v)));
      });
    });
    g.globalAlpha = 1;
  }

  // The tooltip: every series' exact value in the window nearest the pointer.
  hover(event) {
    const L = this.geometry;
    if (!L || !this.series.length) return;
    const rect = this.canvas.getBoundingClientRect();
    const px = event.clientX - rect.left;
    const xs = [...new Set(this.series.flatMap((s) => s.points.map((p) => p[0])))];
    const x = xs.reduce((best, t) => (Math.abs(L.sx(t) - px) < Math.abs(L.sx(best) - px) ? t : best));
    this.hoverX = x;
    this.draw();
    const rows = this.series.map((s) => [s, s.points.find((p) => p[0] === x)]).filter((r) => r[1]);
    showTooltip(event, `window ${clock(x - this.windowS, true)}–${clock(x, true)}`,
      rows.map(([s, p]) => [colorOf(s.name), s.label, formatValue(p[1], this.spec.unit)]));
  }

  unhover() {
    this.hoverX = null;
    this.draw();
    hideTooltip();
  }
}

function tooltipElement() {
  let tip = document.getElementById("tooltip");
  if (!tip) {
    tip = document.createElement("div");
    tip.id = "tooltip";
    tip.hidden = true;
    document.body.appendChild(tip);
  }
  return tip;
}

// `rows`: [color, label, value]; all set as text.
function showTooltip(event, heading, rows) {
  const tip = tooltipElement();
  const title = document.createElement("div");
  title.className = "tip-title";
  title.textContent = heading;
  tip.replaceChildren(title, ...rows.map(([color, label, value]) => {
    const row = document.createElement("div");
    const swatch = document.createElement("span");
    swatch.className = "swatch";
    swatch.style.background = color;
    const number = document.createElement("b");
    number.textContent = value;
    row.append(swatch, `${label}: `, number);
    return row;
  }));
  tip.hidden = false;
  const x = Math.min(event.clientX + 14, window.innerWidth - tip.offsetWidth - 8);
  const y = Math.min(event.clientY + 14, window.innerHeight - tip.offsetHeight - 8);
  tip.style.left = `${Math.max(0, x)}px`;
  tip.style.top = `${Math.max(0, y)}px`;
}

function hideTooltip() { tooltipElement().hidden = true; }
