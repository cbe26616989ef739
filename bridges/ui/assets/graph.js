// kube-insight web UI: the service graph — health, grouping, a stable
// deterministic layout, and its SVG drawing.
"use strict";
(function () {
  const h = KI.h;
  const NODE_W = 176;
  const NODE_H = 50;
  const COL_GAP = 70;
  const ROW_GAP = 18;
  const PAD = 18;
  const HEAD = 30;
  const MAX_ROW_W = 1500;

  // ------------------------------------------------------------ health

  // A node's health from its error ratio and latency against the baseline
  // graph (an hour earlier) and its restarts: ok, warn, bad, or idle.
  function health(n, base, p95) {
    const err = n.detail__error_ratio;
    const b = base && base.nodes.get(n.id);
    const reasons = [];
    let level = err === null || err === undefined ? "idle" : "ok";
    const bump = (l, why) => {
      const rank = { idle: 0, ok: 1, warn: 2, bad: 3 };
      if (rank[l] > rank[level]) level = l;
      reasons.push(why);
    };
    if (err !== null && err !== undefined) {
      const be = b ? b.detail__error_ratio || 0 : null;
      if (err >= 0.05) bump("bad", `errors ${KI.num(err, "%")}`);
      else if (be !== null && err > Math.max(0.01, 3 * be)) bump("bad", `errors ${KI.num(err, "%")} vs ${KI.num(be, "%")} an hour before`);
      else if (err >= 0.01) bump("warn", `errors ${KI.num(err, "%")}`);
    }
    const lat = p95.get(n.id);
    const blat = base ? base.p95.get(n.id) : undefined;
    if (lat !== undefined && blat !== undefined && blat > 0 && lat > 2 * blat && lat > 50) bump("bad", `p95 ${lat.toFixed(0)} ms vs ${blat.toFixed(0)} ms`);
    else if (lat !== undefined && blat !== undefined && blat > 0 && lat > 1.5 * blat && lat > 50) bump("warn", `p95 ${lat.toFixed(0)} ms vs ${blat.toFixed(0)} ms`);
    const r = n.detail__restarts || 0;
    const br = b ? b.detail__restarts || 0 : 0;
    if (r > br) bump("warn", `${r - br} restart${r - br > 1 ? "s" : ""} in the last hour`);
    else if (!b && r > 0) bump("warn", `${r} restarts`);
    if (level === "idle" && (n.detail__cpu_cores || 0) > 0) level = "ok";
    return { level, reasons };
  }

  // Server-side p95 of a node: the worst p95 of the edges into it.
  function p95Of(edges) {
    const m = new Map();
    for (const e of edges) {
      const v = e.detail__p95_ms;
      if (v === null || v === undefined) continue;
      if (!m.has(e.target) || m.get(e.target) < v) m.set(e.target, v);
    }
    return m;
  }

  KI.indexGraph = function (g) {
    const nodes = new Map((g.nodes || []).map((n) => [n.id, n]));
    return { raw: g, nodes, edges: g.edges || [], p95: p95Of(g.edges || []) };
  };

  KI.health = health;

  // ------------------------------------------------------------ grouping

  const nsOf = (n) => n.detail__namespace || "";

  // The drawn units: a workload, or a folded namespace (id "ns:<name>"),
  // with edges summed between units.
  function group(graph, open) {
    const units = new Map();
    const unitOf = new Map();
    for (const n of graph.nodes.values()) {
      const ns = nsOf(n);
      if (ns && !open(ns)) {
        const id = "ns:" + ns;
        let u = units.get(id);
        if (!u) {
          u = { id, ns, folded: true, title: ns, subtitle: "namespace", members: [], node: null };
          units.set(id, u);
        }
        u.members.push(n);
        unitOf.set(n.id, id);
      } else {
        units.set(n.id, { id: n.id, ns, folded: false, title: n.title, subtitle: n.subtitle, members: [n], node: n });
        unitOf.set(n.id, n.id);
      }
    }
    const edges = new Map();
    for (const e of graph.edges) {
      const s = unitOf.get(e.source);
      const t = unitOf.get(e.target);
      if (!s || !t || s === t) continue;
      const id = s + "→" + t;
      let x = edges.get(id);
      if (!x) {
        x = { id, source: s, target: t, members: [], rps: 0, bps: 0, errs: 0, hasRps: false, hasBps: false };
        edges.set(id, x);
      }
      x.members.push(e);
      if (e.detail__requests_per_s !== null && e.detail__requests_per_s !== undefined) {
        x.hasRps = true;
        x.rps += e.detail__requests_per_s;
        x.errs += e.detail__requests_per_s * (e.detail__error_ratio || 0);
      }
      if (e.detail__bytes_per_s !== null && e.detail__bytes_per_s !== undefined) {
        x.hasBps = true;
        x.bps += e.detail__bytes_per_s;
      }
    }
    for (const x of edges.values()) x.err = x.rps > 0 ? x.errs / x.rps : x.members.some((m) => (m.detail__error_ratio || 0) >= 0.05) ? 0.05 : 0;
    return { units, edges: [...edges.values()] };
  }

  // ------------------------------------------------------------ layout
  // Namespaces are regions, placed in name order in rows; inside a region
  // the units sit in layers (longest path over the region's edges, callers
  // left of callees) and, within a layer, in the order of a hash of their
  // id. The same graph always gets the same drawing. While T moves, `memory`
  // keeps each unit's slot and each region's size (never shrinking), so a
  // node that stays keeps its place and new nodes take free slots.

  KI.newLayoutMemory = () => ({ slots: new Map(), regions: new Map() });

  function layers(ids, edges) {
    const inRegion = new Set(ids);
    const out = new Map(ids.map((i) => [i, []]));
    for (const e of edges) if (inRegion.has(e.source) && inRegion.has(e.target)) out.get(e.source).push(e.target);
    for (const l of out.values()) l.sort();
    const depth = new Map();
    const state = new Map();
    // Longest path from the sources; a back edge (cycle) is ignored.
    const visit = (id) => {
      if (state.get(id) === 2) return depth.get(id);
      if (state.get(id) === 1) return -1;
      state.set(id, 1);
      let d = 0;
      for (const t of out.get(id)) d = Math.max(d, 1 + visit(t));
      state.set(id, 2);
      depth.set(id, d);
      return d;
    };
    for (const i of [...ids].sort()) visit(i);
    // Depth counted from the end: turn "longest path to a sink" into a
    // column with sources left.
    const maxD = Math.max(0, ...depth.values());
    return new Map(ids.map((i) => [i, maxD - depth.get(i)]));
  }

  KI.layout = function (grouped, memory) {
    const byNs = new Map();
    for (const u of grouped.units.values()) {
      if (!byNs.has(u.ns)) byNs.set(u.ns, []);
      byNs.get(u.ns).push(u);
    }
    const names = [...byNs.keys()].sort((a, b) => (a === "" ? 1 : b === "" ? -1 : a < b ? -1 : a > b ? 1 : 0));
    const regions = [];
    const pos = new Map();
    for (const ns of names) {
      const units = byNs.get(ns);
      const folded = units.length === 1 && units[0].folded;
      const key = ns + (folded ? "#folded" : "");
      const ids = units.map((u) => u.id);
      const layer = layers(ids, grouped.edges);
      // Slots: remembered ones first, then each new unit in hash order into
      // the first free row of its layer.
      const taken = new Set();
      const slot = new Map();
      for (const id of ids) {
        const s = memory.slots.get(id);
        if (s && !taken.has(s.c + ":" + s.r)) {
          slot.set(id, s);
          taken.add(s.c + ":" + s.r);
        }
      }
      const fresh = ids.filter((i) => !slot.has(i)).sort((a, b) => KI.hash(a) - KI.hash(b) || (a < b ? -1 : 1));
      for (const id of fresh) {
        const c = layer.get(id);
        let r = 0;
        while (taken.has(c + ":" + r)) r++;
        const s = { c, r };
        slot.set(id, s);
        taken.add(c + ":" + r);
        memory.slots.set(id, s);
      }
      let cols = 0;
      let rows = 0;
      for (const s of slot.values()) {
        cols = Math.max(cols, s.c + 1);
        rows = Math.max(rows, s.r + 1);
      }
      const prev = memory.regions.get(key) || { cols: 0, rows: 0 };
      cols = Math.max(cols, prev.cols);
      rows = Math.max(rows, prev.rows);
      memory.regions.set(key, { cols, rows });
      const w = folded ? NODE_W + 2 * PAD : cols * NODE_W + (cols - 1) * COL_GAP + 2 * PAD;
      const hgt = folded ? NODE_H + 2 * PAD + HEAD : rows * NODE_H + (rows - 1) * ROW_GAP + 2 * PAD + HEAD;
      regions.push({ ns, folded, w, h: hgt, slot, units });
    }
    // Rows of regions, in name order.
    let x = 0;
    let y = 0;
    let rowH = 0;
    let width = 0;
    for (const r of regions) {
      if (x > 0 && x + r.w > MAX_ROW_W) {
        x = 0;
        y += rowH + 36;
        rowH = 0;
      }
      r.x = x;
      r.y = y;
      for (const u of r.units) {
        const s = r.slot.get(u.id);
        pos.set(u.id, {
          x: r.x + PAD + (r.folded ? 0 : s.c * (NODE_W + COL_GAP)),
          y: r.y + HEAD + PAD + (r.folded ? 0 : s.r * (NODE_H + ROW_GAP)),
        });
      }
      x += r.w + 36;
      width = Math.max(width, x);
      rowH = Math.max(rowH, r.h);
    }
    return { regions, pos, width: Math.max(width - 36, NODE_W), height: y + rowH };
  };

  // ------------------------------------------------------------ drawing

  const EDGE_COLORS = { added: "#2f8f5b", removed: "#c2410c", changed: "#a16207" };

  function edgePath(a, b) {
    const x1 = a.x + NODE_W;
    const y1 = a.y + NODE_H / 2;
    let x2 = b.x;
    const y2 = b.y + NODE_H / 2;
    if (x2 < x1 - 10) {
      // Backwards: leave right, come in from the right.
      x2 = b.x + NODE_W;
      const bend = Math.max(40, (x1 - x2) / 3);
      return `M${x1},${y1} C${x1 + bend},${y1 - 60} ${x2 + bend},${y2 - 60} ${x2},${y2}`;
    }
    const dx = Math.max(30, (x2 - x1) / 2);
    return `M${x1},${y1} C${x1 + dx},${y1} ${x2 - dx},${y2} ${x2},${y2}`;
  }

  function edgeLabel(e) {
    const parts = [];
    if (e.hasRps) parts.push(`${KI.num(e.rps)} req/s`);
    if (e.hasRps && e.err > 0) parts.push(`${KI.num(e.err, "%")} err`);
    if (e.hasBps) parts.push(KI.num(e.bps, "B/s"));
    return parts.join(" · ");
  }

  // Draws the grouped graph into `svg`; `opts`: health(unit) → {level},
  // change(id) → added/removed/changed (diff mode), selected id, onSelect,
  // onToggle(ns), matches(unit) for search highlighting.
  KI.drawGraph = function (svg, grouped, lay, opts) {
    KI.clear(svg);
    const W = lay.width + 40;
    const H = lay.height + 40;
    if (!svg.dataset.userView) svg.setAttribute("viewBox", `-20 -20 ${W} ${H}`);
    svg.dataset.full = `-20 -20 ${W} ${H}`;
    const defs = h(
      "svg:defs",
      {},
      ["n", "e", "added", "removed", "changed"].map((k) =>
        h(
          "svg:marker",
          { id: "arrow-" + k, viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" },
          h("svg:path", { d: "M0,0 L10,5 L0,10 z", class: "arrow arrow-" + k })
        )
      )
    );
    svg.appendChild(defs);
    const gRegions = h("svg:g", { class: "regions" });
    for (const r of lay.regions) {
      if (r.folded) continue;
      const label = r.ns || "outside the cluster";
      gRegions.appendChild(
        h(
          "svg:g",
          { class: "region", "data-ns": r.ns },
          h("svg:rect", { x: r.x, y: r.y, width: r.w, height: r.h, rx: 10 }),
          h("svg:text", { x: r.x + 12, y: r.y + 20, class: "region-title" }, label),
          r.ns
            ? h(
                "svg:text",
                { x: r.x + r.w - 12, y: r.y + 20, class: "region-fold", "text-anchor": "end", role: "button", "data-fold": r.ns, onclick: () => opts.onToggle(r.ns) },
                "fold ▴"
              )
            : null
        )
      );
    }
    svg.appendChild(gRegions);
    const gEdges = h("svg:g", { class: "edges" });
    for (const e of grouped.edges) {
      const a = lay.pos.get(e.source);
      const b = lay.pos.get(e.target);
      if (!a || !b) continue;
      const change = opts.change ? opts.change(e) : null;
      const cls = change && change !== "unchanged" ? change : e.err >= 0.05 ? "e" : "n";
      const width = e.hasRps ? Math.min(6, 1.2 + Math.log10(1 + e.rps)) : e.hasBps ? Math.min(5, 1 + Math.log10(1 + e.bps / 1024) / 1.5) : 1;
      const label = edgeLabel(e);
      const ge = h(
        "svg:g",
        { class: `edge edge-${cls}${e.hasRps || e.hasBps ? "" : " edge-idle"}`, "data-id": e.id, "data-source": e.source, "data-target": e.target },
        h("svg:title", {}, `${e.source} → ${e.target}${label ? "\n" + label : ""}${change ? "\n" + change : ""}`),
        h("svg:path", { d: edgePath(a, b), "stroke-width": width.toFixed(2), "marker-end": `url(#arrow-${cls})` })
      );
      if (label && grouped.edges.length <= 150) {
        const mx = (a.x + NODE_W + b.x) / 2;
        const my = (a.y + b.y) / 2 + NODE_H / 2 - 6;
        if (b.x > a.x) ge.appendChild(h("svg:text", { x: mx, y: my, class: "edge-label", "text-anchor": "middle" }, label));
      }
      gEdges.appendChild(ge);
    }
    svg.appendChild(gEdges);
    const gNodes = h("svg:g", { class: "nodes" });
    for (const u of grouped.units.values()) {
      const p = lay.pos.get(u.id);
      const hl = opts.health(u);
      const change = opts.nodeChange ? opts.nodeChange(u) : null;
      const stat = u.folded
        ? `${u.members.length} workload${u.members.length > 1 ? "s" : ""}${hl.bad ? ` · ${hl.bad} failing` : ""}`
        : nodeStat(u.node);
      const cls = ["node", "health-" + hl.level, u.folded ? "folded" : "", change ? "change-" + change : "", opts.selected === u.id ? "selected" : "", opts.matches && !opts.matches(u) ? "dim" : ""].join(" ");
      const g = h(
        "svg:g",
        {
          class: cls,
          "data-id": u.id,
          transform: `translate(${p.x},${p.y})`,
          onclick: (ev) => {
            ev.stopPropagation();
            if (u.folded) opts.onToggle(u.ns);
            else opts.onSelect(u.id);
          },
        },
        h("svg:title", {}, `${u.folded ? "namespace " + u.ns + " (click to expand)" : u.id}${hl.reasons && hl.reasons.length ? "\n" + hl.reasons.join("\n") : ""}`),
        h("svg:rect", { width: NODE_W, height: NODE_H, rx: 7, class: "node-box" }),
        h("svg:rect", { width: 5, height: NODE_H, rx: 2, class: "node-bar" }),
        h("svg:text", { x: 14, y: 19, class: "node-title" }, clip(u.title, 21)),
        h("svg:text", { x: 14, y: 36, class: "node-sub" }, clip(u.folded ? "namespace · " + stat : stat || u.subtitle, change && change !== "unchanged" ? 17 : 28)),
        change && change !== "unchanged" ? h("svg:text", { x: NODE_W - 8, y: 36, class: "node-change", "text-anchor": "end" }, change) : null
      );
      gNodes.appendChild(g);
    }
    svg.appendChild(gNodes);
  };

  function nodeStat(n) {
    if (!n) return "";
    const parts = [];
    if (n.detail__requests_per_s !== null && n.detail__requests_per_s !== undefined) parts.push(`${KI.num(n.detail__requests_per_s)} req/s`);
    if (n.detail__error_ratio) parts.push(`${KI.num(n.detail__error_ratio, "%")} err`);
    if (!parts.length && n.detail__cpu_cores !== null && n.detail__cpu_cores !== undefined) parts.push(`${KI.num(n.detail__cpu_cores)} cpu`);
    if (n.detail__restarts) parts.push(`${n.detail__restarts} restarts`);
    return parts.join(" · ") || (n.detail__kind || "").toLowerCase();
  }
  KI.nodeStat = nodeStat;

  function clip(s, n) {
    s = String(s || "");
    return s.length > n ? s.slice(0, n - 1) + "…" : s;
  }

  // Wheel zoom and drag pan on an SVG's viewBox.
  KI.panZoom = function (svg) {
    const vb = () => svg.getAttribute("viewBox").split(/[ ,]+/).map(Number);
    svg.addEventListener(
      "wheel",
      (ev) => {
        ev.preventDefault();
        const [x, y, w, hh] = vb();
        const r = svg.getBoundingClientRect();
        const fx = (ev.clientX - r.left) / r.width;
        const fy = (ev.clientY - r.top) / r.height;
        const k = ev.deltaY > 0 ? 1.15 : 1 / 1.15;
        const nw = w * k;
        const nh = hh * k;
        svg.setAttribute("viewBox", `${x + (w - nw) * fx} ${y + (hh - nh) * fy} ${nw} ${nh}`);
        svg.dataset.userView = "1";
      },
      { passive: false }
    );
    let drag = null;
    svg.addEventListener("pointerdown", (ev) => {
      if (ev.target.closest && ev.target.closest(".node, .region-fold")) return;
      drag = { x: ev.clientX, y: ev.clientY, vb: vb() };
    });
    window.addEventListener("pointermove", (ev) => {
      if (!drag) return;
      const r = svg.getBoundingClientRect();
      const [x, y, w, hh] = drag.vb;
      const dx = ((ev.clientX - drag.x) * w) / r.width;
      const dy = ((ev.clientY - drag.y) * hh) / r.height;
      svg.setAttribute("viewBox", `${x - dx} ${y - dy} ${w} ${hh}`);
      svg.dataset.userView = "1";
    });
    window.addEventListener("pointerup", () => (drag = null));
  };

  KI.groupGraph = group;
})();
