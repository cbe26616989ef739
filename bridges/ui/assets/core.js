// kube-insight web UI: the shared core (API client, time, DOM helpers,
// URL routing). Plain JavaScript, no dependencies. Everything the UI shows
// comes from the public API (/api/v1/*, /prometheus/api/v1/*).
"use strict";

const KI = (window.KI = {
  pages: {},
  // Render timings (ms) the benchmark and the browser test read.
  perf: { renders: [] },
});

// ---------------------------------------------------------------- DOM

KI.h = function h(tag, attrs, ...children) {
  const svg = tag.startsWith("svg:");
  const el = svg
    ? document.createElementNS("http://www.w3.org/2000/svg", tag.slice(4))
    : document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "text") el.textContent = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.appendChild(typeof c === "object" ? c : document.createTextNode(String(c)));
  }
  return el;
};
const h = KI.h;

KI.clear = (el) => {
  while (el.firstChild) el.removeChild(el.firstChild);
  return el;
};

// Resolves once the browser has laid out and painted what was drawn (the
// render timings include style, layout and paint, not only the DOM work).
KI.painted = () => new Promise((res) => requestAnimationFrame(() => setTimeout(res, 0)));

// ---------------------------------------------------------------- time

KI.now = () => Date.now();
KI.parseTime = function (s) {
  if (s === null || s === undefined || s === "") return null;
  if (/^-?\d+$/.test(String(s))) {
    const n = Number(s);
    return n < 1e11 ? n * 1000 : n;
  }
  const t = Date.parse(s);
  return Number.isNaN(t) ? null : t;
};
KI.iso = (ms) => new Date(ms).toISOString();
KI.fmtTime = function (ms) {
  if (ms === null || ms === undefined) return "–";
  const d = new Date(ms);
  const p = (n) => String(n).padStart(2, "0");
  return `${d.getUTCFullYear()}-${p(d.getUTCMonth() + 1)}-${p(d.getUTCDate())} ${p(d.getUTCHours())}:${p(d.getUTCMinutes())}:${p(d.getUTCSeconds())} UTC`;
};
KI.fmtShort = function (ms) {
  const d = new Date(ms);
  const p = (n) => String(n).padStart(2, "0");
  return `${p(d.getUTCHours())}:${p(d.getUTCMinutes())}:${p(d.getUTCSeconds())}`;
};
KI.ago = function (ms) {
  const s = Math.round((KI.now() - ms) / 1000);
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.round(s / 60)}m ago`;
  if (s < 86400) return `${Math.round(s / 3600)}h ago`;
  return `${Math.round(s / 86400)}d ago`;
};

// ---------------------------------------------------------------- numbers

KI.num = function (v, unit) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  const a = Math.abs(v);
  if (unit === "bytes" || unit === "B/s") {
    const u = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    let x = a;
    while (x >= 1024 && i < u.length - 1) {
      x /= 1024;
      i++;
    }
    return `${(Math.sign(v) * x).toFixed(x < 10 && i ? 1 : 0)} ${u[i]}${unit === "B/s" ? "/s" : ""}`;
  }
  if (unit === "%") return `${(v * 100).toFixed(a < 0.01 ? 2 : 1)}%`;
  const s = a >= 1e6 ? (v / 1e6).toFixed(1) + "M" : a >= 1e3 ? (v / 1e3).toFixed(1) + "k" : a >= 10 ? v.toFixed(0) : a >= 1 ? v.toFixed(2) : v.toPrecision(2);
  return unit ? `${s} ${unit}` : s;
};

// A stable 32-bit hash (FNV-1a) of a string: layouts are seeded by it.
KI.hash = function (s) {
  let x = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    x ^= s.charCodeAt(i);
    x = Math.imul(x, 0x01000193) >>> 0;
  }
  return x >>> 0;
};

// ---------------------------------------------------------------- API

const TOKEN_KEY = "kube-insight-token";
KI.token = () => sessionStorage.getItem(TOKEN_KEY);

// An API error that pages show in place (never a blank page).
class ApiError extends Error {
  constructor(status, message, path) {
    super(message);
    this.status = status;
    this.path = path;
  }
}
KI.ApiError = ApiError;

KI.qs = function (params) {
  const u = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (v === null || v === undefined || v === "") continue;
    u.set(k, typeof v === "number" && k !== "limit" && k !== "depth" && k !== "step" ? KI.iso(v) : String(v));
  }
  const s = u.toString();
  return s ? "?" + s : "";
};

// GET a JSON answer. A 401 asks for the token once and retries.
KI.api = async function (path, params, opts) {
  const url = path + KI.qs(params);
  const headers = { Accept: "application/json" };
  const t = KI.token();
  if (t) headers.Authorization = "Bearer " + t;
  const r = await fetch(url, { headers, signal: opts && opts.signal });
  if (r.status === 401) {
    await KI.askToken(t ? "The token was refused." : null);
    return KI.api(path, params, opts);
  }
  const text = await r.text();
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch (_) {
    body = null;
  }
  if (!r.ok) {
    const msg = (body && (body.error || body.message)) || text.trim() || r.statusText;
    throw new ApiError(r.status, msg, path);
  }
  if (opts && opts.withHeaders) return { body, headers: r.headers };
  return body;
};

// A PromQL range query: [{metric, values: [[t_ms, v]...]}].
KI.promRange = async function (query, start, end, step) {
  const b = await KI.api("/prometheus/api/v1/query_range", {
    query,
    start: String(Math.floor(start / 1000)),
    end: String(Math.floor(end / 1000)),
    step: step + "s",
  });
  return ((b && b.data && b.data.result) || []).map((s) => ({
    metric: s.metric,
    values: s.values.map(([t, v]) => [t * 1000, Number(v)]),
  }));
};

// The token dialog: shown once per session when the API answers 401.
let tokenWaiters = null;
KI.askToken = function (why) {
  if (tokenWaiters) return new Promise((res) => tokenWaiters.push(res));
  tokenWaiters = [];
  return new Promise((resolve) => {
    tokenWaiters.push(resolve);
    const input = h("input", { type: "password", id: "token-input", autocomplete: "off", "aria-label": "API token" });
    const form = h(
      "form",
      {
        class: "token-form",
        onsubmit: (e) => {
          e.preventDefault();
          sessionStorage.setItem(TOKEN_KEY, input.value.trim());
          dlg.remove();
          const w = tokenWaiters;
          tokenWaiters = null;
          w.forEach((f) => f());
        },
      },
      h("h2", {}, "API token"),
      h("p", {}, why || "This kube-insight requires a bearer token (KUBE_INSIGHT_API_TOKEN)."),
      h("p", { class: "muted" }, "It is kept for this browser tab only and sent as an Authorization header, never in a URL."),
      input,
      h("button", { type: "submit", class: "primary" }, "Continue")
    );
    const dlg = h("div", { class: "modal", role: "dialog", "aria-modal": "true" }, form);
    document.body.appendChild(dlg);
    input.focus();
  });
};

// ---------------------------------------------------------------- routing
// #/<page>/<part>/<part>?k=v — every view is a link.

KI.parseHash = function () {
  const raw = location.hash.replace(/^#\/?/, "");
  const [path, query] = raw.split("?");
  const parts = (path || "").split("/").filter(Boolean).map(decodeURIComponent);
  const params = Object.fromEntries(new URLSearchParams(query || ""));
  return { page: parts[0] || "topology", parts: parts.slice(1), params };
};

KI.link = function (page, parts, params) {
  const p = (parts || []).map((x) => encodeURIComponent(x)).join("/");
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params || {})) {
    if (v === null || v === undefined || v === "" || v === false) continue;
    q.set(k, typeof v === "number" ? KI.iso(v) : String(v));
  }
  const qs = q.toString();
  return `#/${page}${p ? "/" + p : ""}${qs ? "?" + qs : ""}`;
};

KI.go = function (page, parts, params, replace) {
  const url = KI.link(page, parts, params);
  if (replace) history.replaceState(null, "", url);
  else history.pushState(null, "", url);
  KI.route();
};

// The current page's state: a re-render of the same page may keep it.
KI.current = { key: null, abort: null };

KI.route = async function () {
  const r = KI.parseHash();
  const page = KI.pages[r.page] || KI.pages.notfound;
  const main = document.getElementById("main");
  document.querySelectorAll("nav.top a[data-page]").forEach((a) => {
    a.classList.toggle("active", a.dataset.page === r.page);
    if (a.dataset.page === r.page) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  });
  if (KI.current.abort) KI.current.abort.abort();
  const abort = new AbortController();
  KI.current = { key: r.page + "/" + r.parts.join("/"), abort, route: r };
  try {
    await page(main, r, abort.signal);
  } catch (e) {
    if (abort.signal.aborted) return;
    KI.showError(main, e);
  }
};

KI.showError = function (el, e) {
  KI.clear(el).appendChild(
    h(
      "section",
      { class: "panel error-state", role: "alert" },
      h("h2", {}, e && e.status ? `The API answered ${e.status}` : "Something went wrong"),
      h("p", {}, (e && e.message) || String(e)),
      e && e.path ? h("p", { class: "muted" }, "Request: " + e.path) : null,
      h("p", {}, h("a", { href: "#/topology" }, "Back to the topology"))
    )
  );
};

// A panel with a title that fills itself from a promise; a failed load
// shows its reason inside the panel, not over the page.
KI.panel = function (title, fill, opts) {
  const body = h("div", { class: "panel-body" }, h("p", { class: "muted loading" }, "Loading…"));
  const sec = h("section", { class: "panel " + ((opts && opts.cls) || ""), "aria-label": title }, h("h2", {}, title), body);
  Promise.resolve()
    .then(() => fill(body))
    .catch((e) => {
      KI.clear(body).appendChild(
        e && e.status === 404 && opts && opts.missing
          ? h("p", { class: "muted not-available" }, opts.missing)
          : h("p", { class: "error-text" }, (e && e.message) || String(e))
      );
    });
  return sec;
};

KI.empty = (text) => h("p", { class: "muted empty" }, text);

// The clusters the store knows, for the cluster picker.
KI.clusters = async function () {
  const now = KI.now();
  try {
    const rows = await KI.api("/api/v1/clusters", { from: now - 30 * 86400e3, to: now });
    return [...new Set((rows || []).map((r) => r.cluster).filter(Boolean))].sort();
  } catch (_) {
    return [];
  }
};

// Pages are rebuilt on each route: the browser's scroll restoration would
// apply to the old layout.
history.scrollRestoration = "manual";
window.addEventListener("popstate", () => KI.route());
window.addEventListener("DOMContentLoaded", () => {
  const t = document.getElementById("token-button");
  if (t)
    t.addEventListener("click", () => {
      sessionStorage.removeItem(TOKEN_KEY);
      KI.askToken("Enter a new API token.").then(() => KI.route());
    });
  KI.route();
});
