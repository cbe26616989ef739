// kube-insight web UI: time-series charts drawn as SVG, with change markers.
"use strict";
(function () {
  const h = KI.h;
  const W = 560;
  const H = 170;
  const L = 56;
  const R = 12;
  const T = 12;
  const B = 24;
  const PALETTE = ["#2563eb", "#0f766e", "#9333ea", "#c2410c", "#0891b2", "#4d7c0f", "#be185d", "#475569"];

  function ticks(min, max, n) {
    const span = max - min || 1;
    const raw = span / n;
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 5, 10].map((k) => k * mag).find((s) => s >= raw) || raw;
    const out = [];
    for (let v = Math.ceil(min / step) * step; v <= max + 1e-9; v += step) out.push(v);
    return out;
  }

  // series: [{label, values: [[t_ms, v]]}]; opts: {from, to, unit, markers:
  // [{time, label, kind}], query, at}.
  KI.chart = function (title, series, opts) {
    const svg = h("svg:svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "aria-label": title, "data-query": opts.query || "", "data-start": Math.floor(opts.from / 1000), "data-end": Math.floor(opts.to / 1000), "data-step": opts.step || "" });
    const all = series.flatMap((s) => s.values.map((p) => p[1])).filter((v) => Number.isFinite(v));
    const x0 = opts.from;
    const x1 = opts.to;
    let y0 = Math.min(0, ...all);
    let y1 = Math.max(...all, 0);
    if (y1 === y0) y1 = y0 + 1;
    y1 *= 1.08;
    const sx = (t) => L + ((t - x0) / (x1 - x0 || 1)) * (W - L - R);
    const sy = (v) => T + (1 - (v - y0) / (y1 - y0)) * (H - T - B);
    for (const v of ticks(y0, y1, 4)) {
      svg.appendChild(h("svg:line", { x1: L, x2: W - R, y1: sy(v), y2: sy(v), class: "grid" }));
      svg.appendChild(h("svg:text", { x: L - 6, y: sy(v) + 4, class: "axis", "text-anchor": "end" }, KI.num(v, opts.unit === "%" ? "%" : opts.unit === "bytes" || opts.unit === "B/s" ? opts.unit : undefined)));
    }
    const span = x1 - x0;
    const tstep = [60e3, 300e3, 600e3, 900e3, 1800e3, 3600e3, 7200e3, 21600e3, 86400e3].find((s) => span / s <= 6) || 86400e3;
    for (let t = Math.ceil(x0 / tstep) * tstep; t <= x1; t += tstep) {
      svg.appendChild(h("svg:text", { x: sx(t), y: H - 6, class: "axis", "text-anchor": "middle" }, KI.fmtShort(t).slice(0, 5)));
    }
    for (const m of opts.markers || []) {
      if (m.time < x0 || m.time > x1) continue;
      svg.appendChild(
        h(
          "svg:g",
          { class: "marker marker-" + (m.kind || "change") },
          h("svg:title", {}, `${KI.fmtTime(m.time)}\n${m.label}`),
          h("svg:line", { x1: sx(m.time), x2: sx(m.time), y1: T, y2: H - B }),
          h("svg:path", { d: `M${sx(m.time) - 4},${T} h8 l-4,6 z` })
        )
      );
    }
    if (opts.at && opts.at >= x0 && opts.at <= x1) svg.appendChild(h("svg:line", { x1: sx(opts.at), x2: sx(opts.at), y1: T, y2: H - B, class: "now-line" }));
    series.forEach((s, i) => {
      const pts = s.values.filter((p) => Number.isFinite(p[1]));
      if (!pts.length) return;
      // Gaps (a missing step) break the line.
      let d = "";
      let prev = null;
      const gap = opts.step ? opts.step * 1000 * 1.5 : Infinity;
      for (const [t, v] of pts) {
        d += `${prev !== null && t - prev <= gap ? "L" : "M"}${sx(t).toFixed(1)},${sy(v).toFixed(1)}`;
        prev = t;
      }
      svg.appendChild(
        h(
          "svg:path",
          {
            d,
            class: "series",
            stroke: PALETTE[i % PALETTE.length],
            "data-series": s.label,
            "data-values": pts.map(([t, v]) => `${t / 1000}:${v}`).join(","),
          },
          h("svg:title", {}, s.label)
        )
      );
      if (pts.length === 1) svg.appendChild(h("svg:circle", { cx: sx(pts[0][0]), cy: sy(pts[0][1]), r: 3, fill: PALETTE[i % PALETTE.length] }));
    });
    const legend = h(
      "div",
      { class: "legend" },
      series.slice(0, 8).map((s, i) => h("span", {}, h("i", { style: `background:${PALETTE[i % PALETTE.length]}` }), s.label)),
      series.length > 8 ? h("span", { class: "muted" }, `+${series.length - 8} more`) : null
    );
    return h("figure", { class: "chart-box" }, h("figcaption", {}, title), all.length ? svg : h("div", { class: "chart-empty muted" }, opts.emptyText || "No samples in this range."), all.length ? legend : null);
  };

  // A chart panel from a PromQL query; `label` names a series from its labels.
  KI.promChart = function (title, query, range, label, opts) {
    const box = h("div", { class: "chart-slot" }, h("p", { class: "muted loading" }, "Loading " + title + "…"));
    KI.promRange(query, range.from, range.to, range.step)
      .then((res) => {
        const series = res.map((s) => ({ label: label(s.metric), values: s.values }));
        KI.clear(box).appendChild(KI.chart(title, series, Object.assign({ query, step: range.step, from: range.from, to: range.to, at: range.at, markers: range.markers }, opts)));
      })
      .catch((e) => {
        KI.clear(box).appendChild(h("figure", { class: "chart-box" }, h("figcaption", {}, title), h("p", { class: "error-text" }, e.message)));
      });
    return box;
  };
})();
