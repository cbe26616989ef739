// kube-insight web UI: the pages (topology at T, diff, workload, pod,
// container, object history, first run).
"use strict";
(function () {
  const h = KI.h;
  const HOUR = 3600e3;

  // ------------------------------------------------------------ YAML and diffs

  function scalar(v) {
    if (v === null) return "null";
    if (typeof v === "number" || typeof v === "boolean") return String(v);
    const s = String(v);
    const special = /^[\s\-?:,\[\]{}#&*!|>'"%@`]|[\s]$|: |\s#|:$|\n/.test(s);
    const reserved = /^(true|false|null|yes|no|on|off|~|[-+]?(\d[\d_]*)?\.?\d+([eE][-+]?\d+)?|0x[0-9a-f]+)$/i.test(s);
    if (s === "" || special || reserved) return JSON.stringify(s);
    return s;
  }
  KI.yaml = function yaml(v, ind) {
    ind = ind || "";
    if (Array.isArray(v)) {
      if (!v.length) return "[]";
      return v
        .map((x) => {
          if (x && typeof x === "object" && Object.keys(x).length) {
            const inner = yaml(x, ind + "  ");
            return ind + "- " + inner.slice(ind.length + 2);
          }
          return ind + "- " + (x && typeof x === "object" ? (Array.isArray(x) ? "[]" : "{}") : scalar(x));
        })
        .join("\n");
    }
    if (v && typeof v === "object") {
      const keys = Object.keys(v);
      if (!keys.length) return "{}";
      return keys
        .map((k) => {
          const x = v[k];
          if (x && typeof x === "object" && (Array.isArray(x) ? x.length : Object.keys(x).length)) return `${ind}${scalar(k)}:\n${yaml(x, Array.isArray(x) ? ind : ind + "  ")}`;
          return `${ind}${scalar(k)}: ${x && typeof x === "object" ? (Array.isArray(x) ? "[]" : "{}") : scalar(x)}`;
        })
        .join("\n");
    }
    return ind + scalar(v);
  };

  // A line diff (longest common subsequence): [{op: "=", "-", "+", a, b}].
  KI.lineDiff = function (a, b) {
    const n = a.length;
    const m = b.length;
    if (n * m > 4e6) return [...a.map((l) => ({ op: "-", a: l })), ...b.map((l) => ({ op: "+", b: l }))];
    const dp = Array.from({ length: n + 1 }, () => new Uint32Array(m + 1));
    for (let i = n - 1; i >= 0; i--) for (let j = m - 1; j >= 0; j--) dp[i][j] = a[i] === b[j] ? dp[i + 1][j + 1] + 1 : Math.max(dp[i + 1][j], dp[i][j + 1]);
    const out = [];
    let i = 0;
    let j = 0;
    while (i < n && j < m) {
      if (a[i] === b[j]) out.push({ op: "=", a: a[i++], b: b[j++] });
      else if (dp[i + 1][j] >= dp[i][j + 1]) out.push({ op: "-", a: a[i++] });
      else out.push({ op: "+", b: b[j++] });
    }
    while (i < n) out.push({ op: "-", a: a[i++] });
    while (j < m) out.push({ op: "+", b: b[j++] });
    return out;
  };

  // Side-by-side before/after, unchanged runs folded to 3 lines of context.
  KI.sideBySide = function (before, after, titles) {
    const d = KI.lineDiff(before ? before.split("\n") : [], after ? after.split("\n") : []);
    const rows = [];
    let run = [];
    const flush = (last) => {
      if (run.length > 7) {
        const head = rows.length ? run.slice(0, 3) : [];
        const tail = last ? [] : run.slice(-3);
        head.forEach((x) => rows.push(x));
        rows.push({ op: "fold", n: run.length - head.length - tail.length });
        tail.forEach((x) => rows.push(x));
      } else run.forEach((x) => rows.push(x));
      run = [];
    };
    for (const x of d) {
      if (x.op === "=") run.push(x);
      else {
        flush(false);
        rows.push(x);
      }
    }
    flush(true);
    // Pair a removed run with the added run after it on the same rows.
    const table = h("table", { class: "sbs" }, h("thead", {}, h("tr", {}, h("th", {}, titles[0]), h("th", {}, titles[1]))));
    const body = h("tbody");
    for (let k = 0; k < rows.length; k++) {
      const x = rows[k];
      if (x.op === "fold") {
        body.appendChild(h("tr", { class: "fold" }, h("td", { colspan: 2 }, `⋯ ${x.n} unchanged lines`)));
      } else if (x.op === "=") {
        body.appendChild(h("tr", {}, h("td", {}, x.a), h("td", {}, x.b)));
      } else {
        const del = [];
        const add = [];
        while (k < rows.length && rows[k].op === "-") del.push(rows[k++].a);
        while (k < rows.length && rows[k].op === "+") add.push(rows[k++].b);
        k--;
        for (let i = 0; i < Math.max(del.length, add.length); i++)
          body.appendChild(h("tr", {}, h("td", { class: i < del.length ? "del" : "" }, i < del.length ? del[i] : ""), h("td", { class: i < add.length ? "add" : "" }, i < add.length ? add[i] : "")));
      }
    }
    table.appendChild(body);
    if (!d.some((x) => x.op !== "=")) return h("p", { class: "muted" }, "No difference.");
    return h("div", { class: "sbs-wrap" }, table);
  };

  const objectPath = (kind, ns, name) => `/api/v1/objects/${encodeURIComponent(kind)}/${ns ? encodeURIComponent(ns) + "/" : ""}${encodeURIComponent(name)}`;
  KI.objectAt = async function (cluster, kind, ns, name, at) {
    try {
      return await KI.api(objectPath(kind, ns, name), { cluster, at: Math.round(at) });
    } catch (e) {
      if (e.status === 404) return null;
      throw e;
    }
  };
  const strip = (o) => {
    if (!o || !o.object) return "";
    const x = JSON.parse(JSON.stringify(o.object));
    if (x.metadata) {
      delete x.metadata.resourceVersion;
      delete x.metadata.generation;
    }
    return KI.yaml(x);
  };

  // ------------------------------------------------------------ shared bits

  function timeHeader(title, sub, at, go) {
    return h(
      "header",
      { class: "page-head" },
      h("div", {}, h("h1", {}, title), sub ? h("p", { class: "muted" }, sub) : null),
      h(
        "div",
        { class: "time-nav" },
        h("button", { onclick: () => go(at - HOUR), title: "One hour earlier" }, "◂ 1h"),
        h("span", { class: "at", "data-at": KI.iso(at) }, KI.fmtTime(at)),
        h("button", { onclick: () => go(at + HOUR), title: "One hour later" }, "1h ▸"),
        h("button", { onclick: () => go(null), title: "Now" }, "Now")
      )
    );
  }

  function kv(pairs) {
    return h(
      "dl",
      { class: "kv" },
      pairs.filter(Boolean).map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)])
    );
  }

  // A change row that expands to its patch and the object before and after.
  function changeRow(c, cluster) {
    const t = KI.parseTime(c.time);
    const detail = h("div", { class: "change-detail", hidden: true });
    let loaded = false;
    const canDiff = c.category === "object" || c.category === "image_digest" || c.category === "node";
    const toggle = async () => {
      detail.hidden = !detail.hidden;
      btn.setAttribute("aria-expanded", String(!detail.hidden));
      if (loaded || detail.hidden) return;
      loaded = true;
      if (!canDiff) {
        detail.appendChild(kv([["Reason", c.reason || "–"], ["Count", c.count ?? "–"], ["Message", c.summary]]));
        return;
      }
      detail.appendChild(h("p", { class: "muted loading" }, "Loading the object before and after…"));
      try {
        const [before, after] = await Promise.all([KI.objectAt(cluster || c.cluster, c.kind, c.namespace, c.name, t - 1), KI.objectAt(cluster || c.cluster, c.kind, c.namespace, c.name, t)]);
        KI.clear(detail);
        if (c.patch) detail.appendChild(h("details", { class: "patch" }, h("summary", {}, "Patch"), h("pre", {}, c.patch)));
        detail.appendChild(KI.sideBySide(strip(before), strip(after), [before ? `before · ${KI.fmtTime(KI.parseTime(before.version_time))}` : "before: did not exist", after ? `after · ${after.who || "unknown"}` : "after: deleted"]));
        detail.appendChild(h("p", {}, h("a", { href: KI.link("object", [c.kind, c.namespace || "_", c.name], { cluster, v: t }) }, "Full history of this object →")));
      } catch (e) {
        KI.clear(detail).appendChild(h("p", { class: "error-text" }, e.message));
      }
    };
    const btn = h(
      "button",
      { class: "change-head", "aria-expanded": "false", onclick: toggle },
      h("span", { class: "when", title: c.time }, KI.fmtShort(t)),
      h("span", { class: "badge cat-" + c.category }, c.category === "image_digest" ? "image" : c.category),
      h("span", { class: "what" }, `${c.kind} ${c.name}`, h("span", { class: "muted" }, " · " + (c.change || ""))),
      h("span", { class: "summary" }, c.summary || c.reason || ""),
      h("span", { class: "who muted" }, c.who ? "by " + c.who : "")
    );
    return h("li", { class: "change", "data-time": c.time, "data-kind": c.kind, "data-name": c.name }, btn, detail);
  }
  KI.changeRow = changeRow;

  function changeList(rows, cluster) {
    if (!rows.length) return KI.empty("No changes in this range.");
    return h("ol", { class: "changes" }, rows.map((c) => changeRow(c, cluster)));
  }

  // ------------------------------------------------------------ first run

  function onboarding() {
    const origin = location.origin;
    const ingest = "http://<kube-insight-ingest>:9090";
    return h(
      "section",
      { class: "panel onboarding" },
      h("h1", {}, "No data yet"),
      h("p", {}, "This kube-insight has stored no topology, metrics, logs or events. Send it data, or start the demo cluster to look around."),
      h("h2", {}, "Try it with the demo"),
      h("pre", {}, "kube-insight demo\n# a synthetic Online Boutique cluster with incidents, served here"),
      h("h2", {}, "Prometheus remote write (metrics and topology)"),
      h("pre", {}, `remote_write:\n  - url: ${ingest}/ingest/prometheus/api/v1/write`),
      h("h2", {}, "Fluent Bit (logs)"),
      h("pre", {}, `[OUTPUT]\n    Name        http\n    Match       kube.*\n    Host        <kube-insight-ingest>\n    Port        9090\n    URI         /ingest/fluent-bit\n    Format      json_lines\n    Compress    gzip\n    Retry_Limit False`),
      h("h2", {}, "Kubernetes API (events and object history)"),
      h("pre", {}, "KUBE_INSIGHT_TARGETS=all \\\nKUBE_INSIGHT_KUBECONFIG=$HOME/.kube/config \\\n  kube-insight run"),
      h("p", { class: "muted" }, `The API and this UI answer on ${origin}. Data appears here within a topology interval (30 s by default) of the first samples.`)
    );
  }

  // ------------------------------------------------------------ topology

  // Per-view state that survives a new T (layout memory, track changes).
  let topo = { key: null, memory: null, track: null, graphs: new Map() };

  // The health baseline: the graph an hour before T, on a 5-minute grid so
  // that scrub steps share it (one graph fetch per step, not two).
  const baselineAt = (t) => Math.floor((t - HOUR) / 300e3) * 300e3;

  async function fetchGraph(p, at, signal) {
    const key = JSON.stringify([p.cluster, p.ns, p.focus, p.depth, at]);
    if (topo.graphs.has(key)) return topo.graphs.get(key);
    const g = await KI.api("/api/v1/topology", { cluster: p.cluster, at: at === null ? null : Math.round(at), namespace: p.ns, focus: p.focus, depth: p.focus ? p.depth || 1 : null, group: "workload", limit: 2000 }, { signal });
    if (topo.graphs.size > 64) topo.graphs.clear();
    topo.graphs.set(key, g);
    return g;
  }

  KI.pages.topology = async function (main, r, signal) {
    const p = r.params;
    const started = performance.now();
    const key = JSON.stringify([p.cluster, p.ns, p.focus, p.depth]);
    if (topo.key !== key) topo = { key, memory: KI.newLayoutMemory(), track: null, graphs: new Map() };
    const diff = p.mode === "diff";
    let at = KI.parseTime(p.at);
    const g = await fetchGraph(p, at, signal);
    if (!g.first) {
      // Nothing at T: an empty store, or a time outside the history.
      const any = at === null ? g : await fetchGraph(p, null, signal);
      if (!any.first) {
        KI.clear(main).appendChild(onboarding());
        return;
      }
    }
    const first = KI.parseTime(g.first) ?? KI.parseTime((await fetchGraph(p, null, signal)).first);
    const latest = await fetchGraph(p, null, signal);
    const last = Math.max(KI.parseTime(latest.last) || first, first);
    if (at === null) at = last;
    if (!topo.track) {
      topo.track = KI.api("/api/v1/changes", { cluster: p.cluster, namespace: p.ns, from: first - 60e3, to: last + 60e3, events: false, limit: 500 }, { signal }).catch(() => []);
    }
    KI.clear(main);
    const view = h("div", { class: "topology" });
    main.appendChild(view);
    const ctx = { p, at, first, last, diff, view, signal, started, cluster: g.cluster };
    if (diff) await drawDiff(ctx);
    else await drawAt(ctx, g);
  };

  function toolbar(ctx, redraw) {
    const p = ctx.p;
    const set = (changes, replace) => KI.go("topology", [], Object.assign({}, p, changes), replace);
    const search = h("input", { type: "search", id: "search", placeholder: "Search workloads", value: p.q || "", "aria-label": "Search workloads" });
    search.addEventListener("input", () => {
      p.q = search.value;
      history.replaceState(null, "", KI.link("topology", [], p));
      redraw();
    });
    const nsSel = h("select", { id: "ns-filter", "aria-label": "Namespace", onchange: (e) => set({ ns: e.target.value, open: null, focus: null }) }, h("option", { value: "" }, "All namespaces"));
    const hide = h("input", { type: "checkbox", id: "hide-healthy", checked: p.hide === "1" });
    hide.addEventListener("change", () => set({ hide: hide.checked ? "1" : null }, true));
    const focus = p.focus
      ? h(
          "span",
          { class: "chip" },
          `focus ${p.focus} · depth `,
          h("select", { "aria-label": "Depth", onchange: (e) => set({ depth: e.target.value }) }, [1, 2, 3, 4].map((d) => h("option", { value: d, selected: String(p.depth || 1) === String(d) }, d))),
          h("button", { class: "link", onclick: () => set({ focus: null, depth: null }), "aria-label": "Clear focus" }, "✕")
        )
      : null;
    const mode = ctx.diff
      ? h("button", { onclick: () => set({ mode: null, from: null, to: null }) }, "Exit compare")
      : h("button", { id: "compare", onclick: () => set({ mode: "diff", from: KI.iso(Math.max(ctx.first, ctx.at - HOUR)), to: KI.iso(ctx.at) }) }, "Compare two times");
    return { el: h("div", { class: "toolbar" }, search, nsSel, h("label", { class: "check" }, hide, " Hide healthy"), focus, h("span", { class: "spacer" }), mode), nsSel };
  }

  // The scrubber: a range over the stored history with change markers.
  function scrubber(ctx, value, onMove, onDone, label) {
    const { first, last } = ctx;
    const span = Math.max(1, last - first);
    const input = h("input", { type: "range", class: "scrub", min: first, max: last, step: "any", value, "aria-label": label || "Time", "aria-valuetext": KI.fmtTime(value) });
    const out = h("output", { class: "scrub-time" }, KI.fmtTime(value));
    const track = h("svg:svg", { class: "track", viewBox: "0 0 1000 14", preserveAspectRatio: "none", "aria-hidden": "true" });
    ctx.trackRows = [];
    topo.track.then((rows) => {
      ctx.trackRows = rows || [];
      for (const c of rows || []) {
        const t = KI.parseTime(c.time);
        if (t < first || t > last) continue;
        const x = ((t - first) / span) * 1000;
        track.appendChild(h("svg:rect", { x: x - 1.5, y: 1, width: 3, height: 12, class: "tick cat-" + c.category, "data-time": c.time }, h("svg:title", {}, `${KI.fmtTime(t)} ${c.summary}`)));
      }
    });
    input.addEventListener("input", () => {
      const v = Number(input.value);
      out.textContent = KI.fmtTime(v);
      input.setAttribute("aria-valuetext", KI.fmtTime(v));
      onMove(v);
    });
    input.addEventListener("change", () => onDone(Number(input.value)));
    return h(
      "div",
      { class: "scrubber" },
      h("div", { class: "scrub-ends muted" }, h("span", {}, KI.fmtTime(first)), out, h("span", {}, KI.fmtTime(last))),
      h("div", { class: "scrub-rail" }, track, input)
    );
  }

  function matchesFn(q) {
    if (!q) return null;
    const s = q.toLowerCase();
    return (u) => u.id.toLowerCase().includes(s) || u.members.some((m) => m.id.toLowerCase().includes(s));
  }

  async function drawAt(ctx, g) {
    const { p, view } = ctx;
    const svg = h("svg:svg", { class: "graph", id: "graph", role: "group", "aria-label": "Service graph", preserveAspectRatio: "xMidYMin meet" });
    KI.panZoom(svg);
    const list = h("div", { class: "node-list" });
    const side = h("aside", { class: "detail", id: "detail" });
    const meta = h("p", { class: "graph-meta muted", id: "graph-meta" });
    let current = { g, base: null, at: ctx.at };
    let pending = null;
    let inflight = false;
    // While the scrubber is dragged only the graph is redrawn; the table
    // and the details follow when it is released.
    let dragging = false;
    const draw = () => {
      const t0 = performance.now();
      render(ctx, current, svg, dragging ? null : list, side, meta, draw, tb.nsSel);
      return performance.now() - t0;
    };
    const tb = toolbar(ctx, () => draw());
    // A scrub step: fetch the graph at the new T (and its baseline), redraw.
    const step = async (t) => {
      dragging = true;
      pending = t;
      if (inflight) return;
      inflight = true;
      while (pending !== null) {
        const want = pending;
        pending = null;
        const t0 = performance.now();
        try {
          const [ng, nb] = await Promise.all([fetchGraph(p, want, ctx.signal), fetchGraph(p, baselineAt(want), ctx.signal).catch(() => null)]);
          const fetchMs = performance.now() - t0;
          current = { g: ng, base: nb, at: want };
          ctx.at = want;
          const drawMs = draw();
          await KI.painted();
          KI.perf.renders.push({ kind: "scrub", ms: performance.now() - t0, fetchMs, drawMs, nodes: (ng.nodes || []).length, at: want });
        } catch (e) {
          if (!ctx.signal.aborted) meta.textContent = e.message;
        }
      }
      inflight = false;
    };
    const release = async (t) => {
      history.pushState(null, "", KI.link("topology", [], Object.assign({}, p, { at: KI.iso(t) })));
      while (inflight) await KI.painted();
      dragging = false;
      if (ctx.at !== t) await step(t);
      dragging = false;
      draw();
    };
    const scrub = scrubber(ctx, ctx.at, step, release);
    view.appendChild(tb.el);
    view.appendChild(scrub);
    view.appendChild(h("div", { class: "graph-wrap" }, h("div", { class: "graph-pane" }, svg, meta), side));
    view.appendChild(h("section", { class: "panel" }, h("h2", {}, "Nodes at this time"), list));
    const drawMs = draw();
    await KI.painted();
    KI.perf.renders.push({ kind: "first", ms: performance.now() - ctx.started, drawMs, sinceNavigation: performance.now(), nodes: (g.nodes || []).length });
    fetchGraph(p, baselineAt(ctx.at), ctx.signal)
      .then((b) => {
        if (current.g === g) {
          current.base = b;
          draw();
        }
      })
      .catch(() => {});
  }

  function render(ctx, cur, svg, list, side, meta, redraw, nsSel) {
    const p = ctx.p;
    const graph = KI.indexGraph(cur.g);
    const base = cur.base ? KI.indexGraph(cur.base) : null;
    const namespaces = [...new Set([...graph.nodes.values()].map((n) => n.detail__namespace).filter(Boolean))].sort();
    if (nsSel.options.length <= 1) for (const ns of namespaces) nsSel.appendChild(h("option", { value: ns, selected: p.ns === ns }, ns));
    const openList = p.open ? p.open.split(",") : null;
    const allOpen = openList ? openList.includes("*") : graph.nodes.size <= 40 || !!p.ns || !!p.focus;
    const isOpen = (ns) => allOpen || (openList && openList.includes(ns)) || (p.q && [...graph.nodes.values()].some((n) => n.detail__namespace === ns && n.id.toLowerCase().includes(p.q.toLowerCase())));
    const healthOf = new Map([...graph.nodes.values()].map((n) => [n.id, KI.health(n, base, graph.p95)]));
    let grouped = KI.groupGraph(graph, isOpen);
    const unitHealth = (u) => {
      if (!u.folded) return healthOf.get(u.id);
      const ls = u.members.map((m) => healthOf.get(m.id).level);
      const bad = ls.filter((l) => l === "bad").length;
      return { level: bad ? "bad" : ls.includes("warn") ? "warn" : ls.includes("ok") ? "ok" : "idle", bad, reasons: u.members.filter((m) => healthOf.get(m.id).level === "bad").map((m) => m.id + ": " + healthOf.get(m.id).reasons.join(", ")) };
    };
    if (p.hide === "1") {
      const keep = new Set([...grouped.units.values()].filter((u) => unitHealth(u).level === "bad" || unitHealth(u).level === "warn").map((u) => u.id));
      for (const e of grouped.edges) if (e.err >= 0.01 && (keep.has(e.source) || keep.has(e.target))) keep.add(e.source), keep.add(e.target);
      grouped = { units: new Map([...grouped.units].filter(([id]) => keep.has(id))), edges: grouped.edges.filter((e) => keep.has(e.source) && keep.has(e.target)) };
    }
    const toggle = (ns) => {
      const cur = new Set(p.open ? p.open.split(",") : allOpen ? namespaces.concat(["*"]) : []);
      if (cur.has("*")) {
        cur.delete("*");
        namespaces.forEach((n) => cur.add(n));
      }
      if (cur.has(ns)) cur.delete(ns);
      else cur.add(ns);
      p.open = [...cur].join(",") || "-";
      history.replaceState(null, "", KI.link("topology", [], p));
      redraw();
    };
    const select = (id) => {
      p.sel = id;
      history.replaceState(null, "", KI.link("topology", [], p));
      redraw();
    };
    const lay = KI.layout(grouped, topo.memory);
    const matches = matchesFn(p.q);
    KI.drawGraph(svg, grouped, lay, { health: unitHealth, selected: p.sel, onSelect: select, onToggle: toggle, matches });
    const units = [...grouped.units.values()].sort((a, b) => (a.id < b.id ? -1 : 1));
    meta.textContent = `${cur.g.cluster || ""} · graph at ${KI.fmtTime(ctx.at)} (snapshot ${cur.g.version ? KI.fmtTime(KI.parseTime(cur.g.version)) : "none"})${cur.g.stale ? " · stale: no snapshot in the 5 minutes before" : ""} · ${graph.nodes.size} workloads, ${graph.edges.length} edges`;
    svg.dataset.at = KI.iso(ctx.at);
    svg.dataset.nodes = String(graph.nodes.size);
    svg.dataset.edges = String(graph.edges.length);
    if (!list) return;
    // The node list mirrors the graph: a table a keyboard can walk.
    const rows = units.filter((u) => !matches || matches(u));
    const tbody = h("tbody");
    for (const u of rows) {
      const hl = unitHealth(u);
      const n = u.node;
      const tr = h(
        "tr",
        {
          tabindex: 0,
          "data-id": u.id,
          class: p.sel === u.id ? "selected" : "",
          onclick: () => (u.folded ? toggle(u.ns) : select(u.id)),
          onkeydown: (ev) => {
            if (ev.key === "ArrowDown" && tr.nextElementSibling) (ev.preventDefault(), tr.nextElementSibling.focus());
            else if (ev.key === "ArrowUp" && tr.previousElementSibling) (ev.preventDefault(), tr.previousElementSibling.focus());
            else if (ev.key === "Enter" || ev.key === " ") {
              ev.preventDefault();
              if (u.folded) toggle(u.ns);
              else if (ev.key === "Enter" && p.sel === u.id && n.detail__namespace) KI.go("workload", [n.detail__namespace, n.title], { cluster: p.cluster, at: KI.iso(ctx.at) });
              else select(u.id);
            }
          },
        },
        h("td", {}, h("span", { class: "dot health-" + hl.level, "aria-label": hl.level }), " ", u.folded ? `${u.ns} (${u.members.length} workloads, folded)` : u.title),
        h("td", {}, u.ns || "outside"),
        h("td", {}, hl.level),
        h("td", { class: "num" }, n ? KI.num(n.detail__requests_per_s) : "–"),
        h("td", { class: "num" }, n && n.detail__error_ratio !== null && n.detail__error_ratio !== undefined ? KI.num(n.detail__error_ratio, "%") : "–"),
        h("td", { class: "num" }, n ? KI.num(n.detail__restarts) : "–"),
        h("td", { class: "muted" }, hl.reasons.join("; "))
      );
      tbody.appendChild(tr);
    }
    const focused = document.activeElement && document.activeElement.closest && document.activeElement.closest(".node-list tr");
    const focusId = focused && focused.dataset.id;
    KI.clear(list).appendChild(
      rows.length
        ? h("table", { class: "grid-table", id: "node-table" }, h("thead", {}, h("tr", {}, ["Workload", "Namespace", "Health", "Req/s", "Errors", "Restarts", "Why"].map((x) => h("th", { scope: "col" }, x)))), tbody)
        : KI.empty(p.hide === "1" ? "Every node is healthy at this time." : "No nodes match.")
    );
    if (focusId) {
      const again = list.querySelector(`tr[data-id="${CSS.escape(focusId)}"]`);
      if (again) again.focus();
    }
    renderDetail(ctx, side, graph, p.sel ? healthOf.get(p.sel) : null);
  }

  function renderDetail(ctx, side, graph, hl) {
    const p = ctx.p;
    KI.clear(side);
    const n = p.sel && graph.nodes.get(p.sel);
    if (!n) {
      side.appendChild(h("h2", {}, "Select a node"));
      side.appendChild(h("p", { class: "muted" }, "Click a node, or walk the table below with the arrow keys and press Enter. Folded namespaces expand in place."));
      side.appendChild(h("div", { class: "legend-health" }, ["ok", "warn", "bad", "idle"].map((l) => h("span", {}, h("span", { class: "dot health-" + l }), { ok: " healthy", warn: " degraded", bad: " failing", idle: " no traffic data" }[l]))));
      return;
    }
    const ins = graph.edges.filter((e) => e.target === n.id);
    const outs = graph.edges.filter((e) => e.source === n.id);
    const edgeItem = (e, other) =>
      h("li", {}, h("a", { href: KI.link("topology", [], Object.assign({}, p, { sel: other })) }, other), h("span", { class: "muted" }, " " + [e.mainstat, e.secondarystat].filter(Boolean).join(" · ")));
    const ws = n.detail__namespace && n.detail__kind !== "outside";
    side.appendChild(h("h2", {}, n.title));
    side.appendChild(h("p", { class: "muted" }, n.subtitle));
    if (hl && hl.reasons.length) side.appendChild(h("p", { class: "health-" + hl.level + "-text" }, hl.reasons.join("; ")));
    side.appendChild(
      kv([
        ["Requests", KI.num(n.detail__requests_per_s, "req/s")],
        ["Errors", n.detail__error_ratio !== null && n.detail__error_ratio !== undefined ? KI.num(n.detail__error_ratio, "%") : "–"],
        ["CPU", KI.num(n.detail__cpu_cores, "cores")],
        ["Memory", KI.num(n.detail__memory_bytes, "bytes")],
        ["Restarts", KI.num(n.detail__restarts)],
        ["Pods", n.detail__pods],
      ])
    );
    side.appendChild(
      h(
        "div",
        { class: "actions" },
        ws ? h("a", { class: "button primary", id: "open-workload", href: KI.link("workload", [n.detail__namespace, n.title], { cluster: p.cluster, at: KI.iso(ctx.at) }) }, "Open workload") : null,
        h("a", { class: "button", href: KI.link("topology", [], Object.assign({}, p, { focus: n.id, depth: p.depth || 1, sel: n.id, open: null })) }, "Focus")
      )
    );
    side.appendChild(h("h3", {}, `Calls in (${ins.length})`));
    side.appendChild(ins.length ? h("ul", { class: "plain" }, ins.map((e) => edgeItem(e, e.source))) : KI.empty("None."));
    side.appendChild(h("h3", {}, `Calls out (${outs.length})`));
    side.appendChild(outs.length ? h("ul", { class: "plain" }, outs.map((e) => edgeItem(e, e.target))) : KI.empty("None."));
  }

  // Diff mode: the union of the graphs at T1 and T2 coloured by change,
  // the diff rows and the changes in between.
  async function drawDiff(ctx) {
    const { p, view } = ctx;
    const t1 = KI.parseTime(p.from) ?? Math.max(ctx.first, ctx.at - HOUR);
    const t2 = KI.parseTime(p.to) ?? ctx.at;
    const tb = toolbar(ctx, () => KI.route());
    view.appendChild(tb.el);
    const setT = (k) => (t) => KI.go("topology", [], Object.assign({}, p, { [k]: KI.iso(t) }), true);
    view.appendChild(h("div", { class: "diff-scrubs" }, h("label", {}, "From (T1)"), scrubber(ctx, t1, () => {}, setT("from"), "From"), h("label", {}, "To (T2)"), scrubber(ctx, t2, () => {}, setT("to"), "To")));
    const q = { cluster: p.cluster, namespace: p.ns, focus: p.focus, depth: p.focus ? p.depth || 1 : null, from: Math.round(t1), to: Math.round(t2), group: "workload", limit: 2000 };
    const [ov, rows] = await Promise.all([KI.api("/api/v1/topology/diff", Object.assign({ overlay: "true" }, q), { signal: ctx.signal }), KI.api("/api/v1/topology/diff", q, { signal: ctx.signal })]);
    const graph = KI.indexGraph(ov);
    const change = new Map([...ov.nodes, ...ov.edges].map((x) => [x.id, x.detail__change]));
    const grouped = KI.groupGraph(graph, () => true);
    const memory = KI.newLayoutMemory();
    const lay = KI.layout(grouped, memory);
    const svg = h("svg:svg", { class: "graph diff", id: "graph", role: "group", "aria-label": "Service graph difference", preserveAspectRatio: "xMidYMin meet" });
    KI.panZoom(svg);
    KI.drawGraph(svg, grouped, lay, {
      health: () => ({ level: "idle", reasons: [] }),
      nodeChange: (u) => change.get(u.id),
      change: (e) => {
        const cs = e.members.map((m) => change.get(m.id));
        return cs.find((c) => c === "added" || c === "removed" || c === "changed") || "unchanged";
      },
      onSelect: () => {},
      onToggle: () => {},
      matches: matchesFn(p.q),
    });
    svg.dataset.from = KI.iso(t1);
    svg.dataset.to = KI.iso(t2);
    const count = (c, t) => rows.filter((r) => r.change === c && r.type === t).length;
    view.appendChild(
      h(
        "div",
        { class: "graph-wrap" },
        h("div", { class: "graph-pane" }, svg, h("p", { class: "graph-meta muted" }, `${KI.fmtTime(t1)} → ${KI.fmtTime(t2)}`)),
        h(
          "aside",
          { class: "detail" },
          h("h2", {}, "What changed"),
          h("div", { class: "legend-health" }, ["added", "removed", "changed"].map((c) => h("span", { class: "legend-" + c }, h("span", { class: "dot change-" + c }), " " + c))),
          kv([
            ["Nodes appeared", count("added", "node")],
            ["Nodes lost", count("removed", "node")],
            ["Edges appeared", count("added", "edge")],
            ["Edges lost", count("removed", "edge")],
            ["Edges changed", count("changed", "edge")],
          ])
        )
      )
    );
    view.appendChild(
      h(
        "section",
        { class: "panel" },
        h("h2", {}, "Graph difference"),
        rows.length
          ? h(
              "table",
              { class: "grid-table", id: "diff-table" },
              h("thead", {}, h("tr", {}, ["Change", "Type", "Id", "Reason"].map((x) => h("th", { scope: "col" }, x)))),
              h("tbody", {}, rows.map((r) => h("tr", { "data-id": r.id, "data-change": r.change }, h("td", {}, h("span", { class: "badge change-" + r.change }, r.change)), h("td", {}, r.type), h("td", {}, r.id), h("td", { class: "muted" }, r.reason || ""))))
            )
          : KI.empty("The graphs at the two times are the same.")
      )
    );
    view.appendChild(KI.panel("Changes in between", async (body) => KI.clear(body).appendChild(changeList(await KI.api("/api/v1/changes", { cluster: p.cluster, namespace: p.ns, from: Math.round(t1), to: Math.round(t2), limit: 300 }), p.cluster))));
  }

  // ------------------------------------------------------------ signals pages

  // The workload, pod and container pages: one layout over a selector.
  async function signalsPage(main, r, sel, signal) {
    const p = r.params;
    const at = KI.parseTime(p.at) ?? KI.now();
    const win = Math.max(5, Math.min(24 * 60, Number(p.window) || 60)) * 60e3;
    const from = at - win;
    const to = at;
    const step = Math.max(15, Math.round(win / 1000 / 120));
    const cluster = p.cluster || null;
    const go = (t) => KI.go(r.page, r.parts, Object.assign({}, p, { at: t === null ? null : KI.iso(t) }));
    KI.clear(main);
    const title = sel.container ? sel.container : sel.pod || sel.workload;
    const crumbs = h(
      "nav",
      { class: "crumbs", "aria-label": "Breadcrumb" },
      h("a", { href: KI.link("topology", [], { cluster, at: KI.iso(at), ns: sel.namespace }) }, "Topology"),
      " / ",
      h("span", {}, sel.namespace),
      sel.workload ? [" / ", h("a", { href: KI.link("workload", [sel.namespace, sel.workload], { cluster, at: KI.iso(at) }) }, sel.workload)] : null,
      sel.pod ? [" / ", h("a", { href: KI.link("pod", [sel.namespace, sel.pod], { cluster, at: KI.iso(at) }) }, sel.pod)] : null,
      sel.container ? [" / ", h("span", {}, sel.container)] : null
    );
    main.appendChild(crumbs);
    main.appendChild(timeHeader(title, `${sel.container ? "Container" : sel.pod ? "Pod" : "Workload"} · ${sel.namespace}${cluster ? " · " + cluster : ""} · the hour before T`, at, go));

    // The pods (and containers) the selector covers, as seen around T.
    const ents = await KI.api("/api/v1/entities", { cluster, namespace: sel.namespace, workload: sel.workload || null, pod: sel.pod || null, from: from, to: to }, { signal });
    const pods = new Map();
    for (const e of ents || []) {
      if (!e.pod) continue;
      if (!pods.has(e.pod)) pods.set(e.pod, { pod: e.pod, workload: e.workload, containers: new Set(), first: e.first_seen, last: e.last_seen });
      const x = pods.get(e.pod);
      if (e.container) x.containers.add(e.container);
      if (e.last_seen > x.last) x.last = e.last_seen;
      if (e.first_seen < x.first) x.first = e.first_seen;
    }
    if (!sel.workload && pods.size) sel.workload = [...pods.values()][0].workload;
    const esc = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&").replace(/"/g, '\\"');
    const podRe = sel.pod ? esc(sel.pod) : [...pods.keys()].map(esc).join("|") || "^$";
    const base = `${cluster ? `cluster="${cluster}", ` : ""}namespace="${sel.namespace}", pod=~"${podRe}"`;
    const cont = sel.container ? `, container="${sel.container}"` : `, container!="", container!="POD"`;
    const rate = `[${Math.max(60, step * 4)}s]`;

    // Changes (for chart markers and the timeline) load first: the week
    // before T, so that the last rollout shows even when it was days ago
    // (newest first, at most 300).
    const changes = await KI.api("/api/v1/changes", { cluster, namespace: sel.namespace, workload: sel.workload, from: at - 7 * 24 * HOUR, to: at, limit: 300 }, { signal }).catch(() => []);
    const markers = (changes || []).filter((c) => c.category !== "event").map((c) => ({ time: KI.parseTime(c.time), label: c.summary, kind: c.category }));
    const range = { from, to, step, at, markers };
    const by = sel.container ? () => sel.container : (m) => (sel.pod ? m.container || sel.pod : m.pod || "all");
    const group = sel.pod || sel.container ? "container" : "pod";
    const charts = h("div", { class: "charts", id: "charts" });
    if (!sel.pod) {
      const sg = `server="${sel.workload}", server_namespace="${sel.namespace}"`;
      charts.appendChild(KI.promChart("Requests (req/s)", `sum(rate(traces_service_graph_request_total{${sg}}${rate}))`, range, () => "requests", { emptyText: "No request metrics (service graph) for this workload." }));
      charts.appendChild(KI.promChart("Errors (failed req/s)", `sum(rate(traces_service_graph_request_failed_total{${sg}}${rate}))`, range, () => "failed", { emptyText: "No failed requests recorded." }));
    }
    charts.appendChild(KI.promChart("CPU (cores)", `sum by (${group}) (rate(container_cpu_usage_seconds_total{${base}${cont}}${rate}))`, range, by, {}));
    charts.appendChild(KI.promChart("Memory (working set)", `sum by (${group}) (container_memory_working_set_bytes{${base}${cont}})`, range, by, { unit: "bytes" }));
    charts.appendChild(KI.promChart("Network received", `sum by (pod) (rate(container_network_receive_bytes_total{${base}}${rate}))`, range, (m) => m.pod || "all", { unit: "B/s" }));
    charts.appendChild(KI.promChart("Network sent", `sum by (pod) (rate(container_network_transmit_bytes_total{${base}}${rate}))`, range, (m) => m.pod || "all", { unit: "B/s" }));
    charts.appendChild(KI.promChart("Restarts", `max by (pod, container) (kube_pod_container_status_restarts_total{${base}${sel.container ? cont : ""}})`, range, (m) => `${m.pod}/${m.container || ""}`, {}));
    charts.appendChild(errorLogChart(cluster, sel, range));
    main.appendChild(h("section", { class: "panel" }, h("h2", {}, "Signals"), charts));

    const grid = h("div", { class: "two-col" });
    main.appendChild(grid);
    if (!sel.pod) grid.appendChild(KI.panel("Suspects", (body) => suspects(body, cluster, sel, at), { missing: "Suspects are not available in this kube-insight (the /api/v1/suspects endpoint is missing)." }));
    grid.appendChild(
      KI.panel(sel.pod ? "Containers" : "Pods at T", (body) => {
        const list = [...pods.values()].sort((a, b) => (a.pod < b.pod ? -1 : 1));
        if (!list.length) return KI.clear(body).appendChild(KI.empty("No pods seen in the hour before T."));
        const alive = (x) => KI.parseTime(x.last) >= at - 5 * 60e3;
        KI.clear(body).appendChild(
          h(
            "table",
            { class: "grid-table", id: "pods-table" },
            h("thead", {}, h("tr", {}, ["Pod", "Containers", "State at T", "First seen", "Last seen"].map((x) => h("th", { scope: "col" }, x)))),
            h(
              "tbody",
              {},
              list.map((x) =>
                h(
                  "tr",
                  {},
                  h("td", {}, h("a", { href: KI.link("pod", [sel.namespace, x.pod], { cluster, at: KI.iso(at) }) }, x.pod)),
                  h("td", {}, [...x.containers].sort().map((c, i) => [i ? ", " : "", h("a", { href: KI.link("container", [sel.namespace, x.pod, c], { cluster, at: KI.iso(at) }) }, c)])),
                  h("td", {}, alive(x) ? "running" : "gone"),
                  h("td", { class: "muted" }, KI.fmtTime(KI.parseTime(x.first))),
                  h("td", { class: "muted" }, KI.fmtTime(KI.parseTime(x.last)))
                )
              )
            )
          )
        );
      })
    );
    if (!sel.pod)
      grid.appendChild(
        KI.panel("Neighbours at T", async (body) => {
          const id = `${sel.namespace}/${sel.workload}`;
          let g;
          try {
            g = await KI.api("/api/v1/topology", { cluster, at: Math.round(at), focus: id, depth: 1, group: "workload" });
          } catch (e) {
            if (e.status === 404) return KI.clear(body).appendChild(KI.empty("Not in the service graph at T."));
            throw e;
          }
          const edges = (g.edges || []).filter((e) => e.source === id || e.target === id);
          if (!edges.length) return KI.clear(body).appendChild(KI.empty("No neighbours at T."));
          KI.clear(body).appendChild(
            h(
              "ul",
              { class: "plain neighbours" },
              edges.map((e) => {
                const other = e.source === id ? e.target : e.source;
                const [ns, name] = other.includes("/") ? other.split("/") : ["", other];
                return h("li", {}, h("span", { class: "muted" }, e.source === id ? "calls → " : "called by ← "), ns ? h("a", { href: KI.link("workload", [ns, name], { cluster, at: KI.iso(at) }) }, other) : other, h("span", { class: "muted" }, " " + [e.mainstat, e.secondarystat].filter(Boolean).join(" · ")));
              })
            )
          );
        })
      );
    grid.appendChild(
      KI.panel("Events", async (body) => {
        const prefix = sel.pod || sel.workload;
        const rows = (await KI.api("/api/v1/events", { cluster, namespace: sel.namespace, from: at - 24 * HOUR, to: at, limit: 500 })).filter((e) => (e.name || "").startsWith(prefix));
        if (!rows.length) return KI.clear(body).appendChild(KI.empty("No events in the day before T."));
        KI.clear(body).appendChild(
          h(
            "table",
            { class: "grid-table", id: "events-table" },
            h("thead", {}, h("tr", {}, ["Last seen", "Type", "Reason", "Object", "Message", "Count"].map((x) => h("th", { scope: "col" }, x)))),
            h("tbody", {}, rows.slice(0, 100).map((e) => h("tr", { class: e.type === "Warning" ? "warning" : "" }, h("td", { class: "muted" }, KI.fmtShort(KI.parseTime(e.last_time || e.time))), h("td", {}, e.type), h("td", {}, e.reason), h("td", {}, `${e.kind}/${e.name}`), h("td", {}, e.message), h("td", { class: "num" }, e.count))))
          )
        );
      })
    );
    main.appendChild(KI.panel("Change timeline (24 h before T)", async (body) => KI.clear(body).appendChild(changeList(changes || [], cluster)), { cls: "timeline" }));
    main.appendChild(logsPanel(cluster, sel, from, to));
  }

  function errorLogChart(cluster, sel, range) {
    const box = h("div", { class: "chart-slot" }, h("p", { class: "muted loading" }, "Loading error-log rate…"));
    KI.api("/api/v1/logs/rate", { cluster, namespace: sel.namespace, workload: sel.workload, pod: sel.pod, container: sel.container, from: range.from, to: range.to, step: range.step + "s", level: "error,fatal" })
      .then((rows) => {
        const byLevel = new Map();
        for (const r of rows || []) {
          if (!byLevel.has(r.level)) byLevel.set(r.level, []);
          byLevel.get(r.level).push([KI.parseTime(r.time), r.count / range.step]);
        }
        const series = [...byLevel].map(([l, v]) => ({ label: l, values: v.sort((a, b) => a[0] - b[0]) }));
        KI.clear(box).appendChild(KI.chart("Error logs (lines/s)", series, { from: range.from, to: range.to, at: range.at, markers: range.markers, emptyText: "No error or fatal log lines." }));
      })
      .catch((e) => KI.clear(box).appendChild(h("p", { class: "error-text" }, e.message)));
    return box;
  }

  async function suspects(body, cluster, sel, at) {
    const rows = await KI.api("/api/v1/suspects", { cluster, namespace: sel.namespace, workload: sel.workload, at: Math.round(at), window: "1h" });
    if (!rows || !rows.length) return KI.clear(body).appendChild(KI.empty("No suspects: nothing changed near this workload before T."));
    KI.clear(body).appendChild(
      h(
        "ol",
        { class: "suspects" },
        rows.slice(0, 10).map((s) => {
          const t = KI.parseTime(s.time);
          const evidence = s.kind && s.name && s.kind !== "Dependency" ? KI.link("object", [s.kind, s.namespace || "_", s.name], { cluster, v: t }) : s.workload ? KI.link("workload", [s.namespace, s.workload], { cluster, at: KI.iso(t) }) : null;
          return h(
            "li",
            {},
            h("div", { class: "suspect-head" }, h("span", { class: "score" }, (s.score ?? 0).toFixed(2)), h("span", { class: "badge cat-" + s.category }, s.category), evidence ? h("a", { href: evidence }, `${s.kind} ${s.name}`) : `${s.kind} ${s.name}`, h("span", { class: "muted" }, ` · ${KI.fmtShort(t)}${s.who ? " · by " + s.who : ""}`)),
            h("p", {}, s.summary),
            s.why && s.why.length ? h("ul", { class: "why muted" }, s.why.map((w) => h("li", {}, w))) : null
          );
        })
      )
    );
  }

  function logsPanel(cluster, sel, from, to) {
    const state = { contains: "", levels: new Set(), cursor: null };
    const search = h("input", { type: "search", placeholder: "Search logs", "aria-label": "Search logs", id: "log-search" });
    const levels = ["error", "warn", "info", "debug"].map((l) => {
      const c = h("input", { type: "checkbox", value: l, "data-level": l });
      c.addEventListener("change", () => {
        if (c.checked) state.levels.add(l);
        else state.levels.delete(l);
        load(true);
      });
      return h("label", { class: "check level-" + l }, c, " " + l);
    });
    const spans = [["window", "the page's window"], [6, "6 h before T"], [24, "24 h before T"], [168, "7 days before T"]];
    const span = h("select", { id: "log-range", "aria-label": "Log range", onchange: () => load(true) }, spans.map(([v, l]) => h("option", { value: v }, l)));
    const list = h("ol", { class: "logs", id: "logs" });
    const more = h("button", { hidden: true, onclick: () => load(false) }, "Older lines");
    const status = h("p", { class: "muted" });
    let timer = null;
    search.addEventListener("input", () => {
      clearTimeout(timer);
      timer = setTimeout(() => load(true), 250);
    });
    const load = async (reset) => {
      if (reset) {
        state.cursor = null;
        KI.clear(list);
      }
      status.textContent = "Loading…";
      try {
        const lfrom = span.value === "window" ? from : to - Number(span.value) * HOUR;
        const b = await KI.api("/api/v1/logs", { cluster, namespace: sel.namespace, workload: sel.workload, pod: sel.pod, container: sel.container, from: lfrom, to, contains: search.value || null, level: [...state.levels].join(",") || null, limit: 100, cursor: state.cursor, envelope: "true" });
        for (const l of b.rows || [])
          list.appendChild(h("li", { class: "log level-" + l.level }, h("span", { class: "when" }, KI.fmtShort(KI.parseTime(l.time))), h("span", { class: "lvl" }, l.level), h("span", { class: "src muted" }, `${l.pod}/${l.container}`), h("span", { class: "line" }, l.line)));
        state.cursor = b.next_cursor || null;
        more.hidden = !state.cursor;
        status.textContent = list.children.length ? `${list.children.length} lines, newest first` : "No log lines match in this range.";
      } catch (e) {
        status.textContent = e.message;
      }
    };
    load(true);
    return h("section", { class: "panel", "aria-label": "Logs" }, h("h2", {}, "Logs"), h("div", { class: "toolbar" }, search, span, levels), status, list, more);
  }

  KI.pages.workload = (main, r, signal) => signalsPage(main, r, { namespace: r.parts[0], workload: r.parts[1] }, signal);
  KI.pages.pod = (main, r, signal) => signalsPage(main, r, { namespace: r.parts[0], pod: r.parts[1] }, signal);
  KI.pages.container = (main, r, signal) => signalsPage(main, r, { namespace: r.parts[0], pod: r.parts[1], container: r.parts[2] }, signal);

  // ------------------------------------------------------------ object history

  KI.pages.object = async function (main, r, signal) {
    const [kind, nsPart, name] = r.parts;
    const ns = nsPart === "_" ? "" : nsPart;
    const p = r.params;
    const cluster = p.cluster || null;
    const now = KI.now();
    const all = await KI.api("/api/v1/changes", { cluster, kind, namespace: ns || null, from: now - 400 * 24 * HOUR, to: now + 60e3, events: false, dependencies: false, limit: 5000 }, { signal });
    const versions = (all || []).filter((c) => c.name === name && c.kind.toLowerCase() === kind.toLowerCase() && c.category !== "event").sort((a, b) => KI.parseTime(a.time) - KI.parseTime(b.time));
    KI.clear(main);
    main.appendChild(h("nav", { class: "crumbs" }, h("a", { href: "#/topology" }, "Topology"), " / object history"));
    main.appendChild(h("header", { class: "page-head" }, h("div", {}, h("h1", {}, `${kind} ${ns ? ns + "/" : ""}${name}`), h("p", { class: "muted" }, `${versions.length} recorded version${versions.length === 1 ? "" : "s"}${cluster ? " · " + cluster : ""}`))));
    if (!versions.length) {
      main.appendChild(h("section", { class: "panel" }, KI.empty("No recorded versions of this object. Is its kind watched (KUBE_INSIGHT_EVENTS_KINDS)?")));
      return;
    }
    const times = versions.map((v) => KI.parseTime(v.time));
    const pick = (s, dflt) => {
      const t = KI.parseTime(s);
      if (t === null) return dflt;
      let best = 0;
      times.forEach((x, i) => (x <= t ? (best = i) : null));
      return best;
    };
    const vi = pick(p.v, versions.length - 1);
    // The version compared with: v2, else the one before (after the first).
    const wi = p.v2 ? pick(p.v2, vi) : vi > 0 ? vi - 1 : Math.min(1, versions.length - 1);
    const set = (k, i) => KI.go("object", r.parts, Object.assign({}, p, { [k]: versions[i].time }), false);
    // The versions on a timeline.
    const t0 = times[0];
    const t1 = Math.max(times[times.length - 1], t0 + 1);
    const tl = h("svg:svg", { class: "versions", viewBox: "0 0 1000 40", preserveAspectRatio: "none", role: "img", "aria-label": "Versions on a timeline" });
    tl.appendChild(h("svg:line", { x1: 10, x2: 990, y1: 20, y2: 20, class: "rail" }));
    versions.forEach((v, i) => {
      const x = 10 + ((times[i] - t0) / (t1 - t0)) * 980;
      tl.appendChild(h("svg:circle", { cx: x, cy: 20, r: i === vi ? 7 : 5, class: "v " + (i === vi ? "sel" : i === wi ? "sel2" : ""), onclick: () => set("v", i) }, h("svg:title", {}, `${KI.fmtTime(times[i])} · ${v.change} · ${v.who || "unknown"}`)));
    });
    const list = h(
      "table",
      { class: "grid-table", id: "versions-table" },
      h("thead", {}, h("tr", {}, ["#", "Time", "Change", "Who", "Summary", "", ""].map((x) => h("th", { scope: "col" }, x)))),
      h(
        "tbody",
        {},
        versions
          .map((v, i) =>
            h(
              "tr",
              { class: i === vi ? "selected" : i === wi ? "selected2" : "", "data-time": v.time },
              h("td", { class: "num" }, i + 1),
              h("td", {}, KI.fmtTime(times[i])),
              h("td", {}, h("span", { class: "badge cat-" + v.category }, v.change)),
              h("td", {}, v.who || "–", v.gitops ? h("span", { class: "muted" }, " · " + (typeof v.gitops === "string" ? v.gitops : JSON.stringify(v.gitops))) : null),
              h("td", {}, v.summary),
              h("td", {}, h("button", { class: "link", "data-view": i, onclick: () => set("v", i) }, "view")),
              h("td", {}, h("button", { class: "link", "data-compare": i, onclick: () => set("v2", i) }, "compare"))
            )
          )
          .reverse()
      )
    );
    main.appendChild(h("section", { class: "panel" }, h("h2", {}, "Versions"), tl, list));
    const [lo, hi] = [Math.min(vi, wi), Math.max(vi, wi)];
    const [a, b] = await Promise.all([KI.objectAt(cluster, kind, ns, name, times[lo]), KI.objectAt(cluster, kind, ns, name, times[hi])]);
    const shown = vi === lo ? a : b;
    const who = (o, i) => `${KI.fmtTime(times[i])} · ${(o && o.who) || versions[i].who || "unknown"}`;
    main.appendChild(
      h(
        "div",
        { class: "two-col" },
        h("section", { class: "panel", id: "yaml-panel" }, h("h2", {}, `YAML at version ${vi + 1}`), h("p", { class: "muted" }, who(shown, vi)), shown ? h("pre", { class: "yaml", id: "yaml" }, strip(shown)) : KI.empty("The object did not exist at this version (deleted).")),
        h("section", { class: "panel", id: "diff-panel" }, h("h2", {}, `Diff: version ${lo + 1} → ${hi + 1}`), lo === hi ? KI.empty("Only one version: nothing to compare.") : KI.sideBySide(strip(a), strip(b), [`v${lo + 1} · ${who(a, lo)}`, `v${hi + 1} · ${who(b, hi)}`]))
      )
    );
  };

  KI.pages.notfound = async function (main, r) {
    KI.clear(main).appendChild(h("section", { class: "panel" }, h("h1", {}, "No such page"), h("p", {}, `“${r.page}” is not a page of this UI.`), h("p", {}, h("a", { href: "#/topology" }, "Go to the topology"))));
  };
})();
