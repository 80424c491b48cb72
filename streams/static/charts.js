// A small line-chart library for the factory-pulse dashboard: canvas, no dependencies, so the
// page works on closed networks. Each chart records how many points it drew in
// canvas.dataset.points, which the browser test reads.
"use strict";

const PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4b5563"];

class LineChart {
  constructor(canvas, options) {
    this.canvas = canvas;
    this.title = options.title;
    this.format = options.format || ((v) => v.toPrecision(3));
    this.series = {};
    this.colors = {};
    canvas.dataset.points = "0";
  }

  setData(series) {
    this.series = series;
    Object.keys(series).sort().forEach((name) => {
      if (!(name in this.colors)) {
        this.colors[name] = PALETTE[Object.keys(this.colors).length % PALETTE.length];
      }
    });
    this.draw();
  }

  draw() {
    const c = this.canvas;
    const ratio = window.devicePixelRatio || 1;
    const width = c.clientWidth || 420;
    const height = c.clientHeight || 220;
    c.width = width * ratio;
    c.height = height * ratio;
    const g = c.getContext("2d");
    g.scale(ratio, ratio);
    g.clearRect(0, 0, width, height);
    g.font = "12px system-ui, sans-serif";
    g.fillStyle = "#111827";
    g.fillText(this.title, 8, 16);
    const points = Object.values(this.series).flat().filter((p) => p[1] !== null);
    c.dataset.points = String(points.length);
    if (!points.length) {
      g.fillStyle = "#6b7280";
      g.fillText("waiting for closed windows…", 8, height / 2);
      return;
    }
    const xs = points.map((p) => p[0]);
    const ys = points.map((p) => p[1]);
    let [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(0, ...ys), Math.max(...ys)];
    if (x0 === x1) { x0 -= 1; x1 += 1; }
    if (y0 === y1) { y1 = y0 + 1; }
    const left = 56, right = 8, top = 26, bottom = 22;
    const sx = (x) => left + (x - x0) / (x1 - x0) * (width - left - right);
    const sy = (y) => height - bottom - (y - y0) / (y1 - y0) * (height - top - bottom);
    g.strokeStyle = "#e5e7eb";
    g.fillStyle = "#6b7280";
    for (let i = 0; i <= 4; i++) {
      const y = y0 + (y1 - y0) * i / 4;
      g.beginPath(); g.moveTo(left, sy(y)); g.lineTo(width - right, sy(y)); g.stroke();
      g.fillText(this.format(y), 4, sy(y) + 4);
    }
    g.fillText(new Date(x0 * 1000).toLocaleTimeString(), left, height - 6);
    const end = new Date(x1 * 1000).toLocaleTimeString();
    g.fillText(end, width - right - g.measureText(end).width, height - 6);
    let legend = 16 + g.measureText(this.title).width;
    Object.keys(this.series).sort().forEach((name) => {
      const data = this.series[name].filter((p) => p[1] !== null).sort((a, b) => a[0] - b[0]);
      g.strokeStyle = g.fillStyle = this.colors[name];
      g.lineWidth = 2;
      g.beginPath();
      data.forEach((p, i) => (i ? g.lineTo(sx(p[0]), sy(p[1])) : g.moveTo(sx(p[0]), sy(p[1]))));
      g.stroke();
      data.forEach((p) => g.fillRect(sx(p[0]) - 1.5, sy(p[1]) - 1.5, 3, 3));
      const label = data.length ? `${name} ${this.format(data[data.length - 1][1])}` : name;
      g.fillText(label, legend, 16);
      legend += g.measureText(label).width + 16;
    });
  }
}
