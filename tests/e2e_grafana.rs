//! The Grafana dashboards of `grafana/dashboards/`, checked without Grafana.
//!
//! Static: every dashboard parses, has its stable uid, unique panel ids, a
//! schemaVersion Grafana migrates, only the provisioned datasources, and
//! every variable a query, title or link uses is defined (earlier, for a
//! variable's own query) or a Grafana builtin, rendered in a form the API
//! reads (`${v:text}` for a variable with All, `${v:csv}` for a multi-value
//! one, inside `=~"…"` in PromQL); dashboard links point at dashboards that
//! exist.
//!
//! Live: `kube-insight run` (every target) over a store filled with the
//! shared fixtures (cAdvisor and kube-state-metrics samples, the Fluent Bit
//! bodies, the Kubernetes event stream, moved to yesterday and the last
//! minutes), a scripted Deployment history (mock API server) and the shop of
//! `support/topology_mock.rs` pushed phase by phase. For several variable
//! selections per dashboard the test resolves the variables the way Grafana
//! does (each variable's own query against the entities API, in order), then
//! executes every panel query, annotation and variable query: PromQL through
//! `/prometheus/api/v1/query_range` (`$__rate_interval` and `$__interval` as
//! Grafana computes them for the range), Infinity URLs by GET with the root
//! selector and columns applied, and checks that the answer has what the
//! panel type needs and is not empty. A URL that matches no route fails.
//!
//! Picture: the fixture cluster's topology, `kube-insight topology --format
//! dot` rendered by Graphviz to a PNG (`KUBE_INSIGHT_UPDATE_PICTURES=1`
//! writes it to `grafana/topology.png`, the README's picture).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is a failure

#[path = "support/fixture_cluster.rs"]
mod fixture_cluster;
#[path = "support/kube_mock.rs"]
mod kube_mock;
mod support;
#[path = "support/topology_mock.rs"]
mod topology_mock;

use fixture_cluster::*;
use kube_insight_core::parse_time_ms;
use kube_insight_core::time::{format_rfc3339_ms, now_ms};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use support::*;

// ---------------------------------------------------------------------------
// The dashboards and the provisioning

/// The dashboards and their stable uids.
const DASHBOARDS: [(&str, &str); 5] = [
    ("topology.json", "kube-insight-topology"),
    ("workload.json", "kube-insight-workload"),
    ("pod.json", "kube-insight-pod"),
    ("changes.json", "kube-insight-changes"),
    ("kube-insight.json", "kube-insight-self"),
];

/// schemaVersions Grafana 11.6–12.x migrates and understands.
const SCHEMA_VERSIONS: std::ops::RangeInclusive<u64> = 36..=41;

const INFINITY: &str = "yesoreyeram-infinity-datasource";

fn load_dashboards() -> Vec<(String, Value)> {
    let dir = repo().join("grafana/dashboards");
    let mut found: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    found.sort();
    let mut want: Vec<String> = DASHBOARDS.iter().map(|(f, _)| f.to_string()).collect();
    want.sort();
    assert_eq!(found, want, "the dashboards in {}", dir.display());
    DASHBOARDS
        .iter()
        .map(|(file, _)| {
            let text = std::fs::read_to_string(dir.join(file)).unwrap();
            let v: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{file} does not parse: {e}"));
            assert!(
                text.lines().count() > 100,
                "{file}: keep it pretty-printed, not a one-line export"
            );
            (file.to_string(), v)
        })
        .collect()
}

/// Datasource uid → type, from `grafana/provisioning/datasources/`.
fn provisioned_datasources() -> BTreeMap<String, String> {
    let text =
        std::fs::read_to_string(repo().join("grafana/provisioning/datasources/kube-insight.yaml"))
            .unwrap();
    let mut out = BTreeMap::new();
    let (mut uid, mut kind) = (None, None);
    for line in text.lines() {
        let l = line.trim();
        if l.starts_with("- name:") {
            uid = None;
            kind = None;
        }
        if let Some(v) = l.strip_prefix("uid:") {
            uid = Some(v.trim().to_string());
        }
        if let Some(v) = l.strip_prefix("type:") {
            kind = Some(v.trim().to_string());
        }
        if let (Some(u), Some(k)) = (&uid, &kind) {
            out.insert(u.clone(), k.clone());
            uid = None;
            kind = None;
        }
    }
    out
}

/// Every panel, rows' nested panels included.
fn panels(d: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().into_iter().flatten() {
        out.push(p);
        for q in p["panels"].as_array().into_iter().flatten() {
            out.push(q);
        }
    }
    out
}

fn variables(d: &Value) -> &[Value] {
    d["templating"]["list"]
        .as_array()
        .map_or(&[], Vec::as_slice)
}

/// A panel target's datasource (its own, else the panel's).
fn target_ds<'a>(panel: &'a Value, target: &'a Value) -> &'a Value {
    if target["datasource"].is_object() {
        &target["datasource"]
    } else {
        &panel["datasource"]
    }
}

fn is_infinity(ds: &Value) -> bool {
    ds["type"] == INFINITY
}

// ---------------------------------------------------------------------------
// Grafana's variable syntax

/// One `$name` / `${name}` / `${name:format}` reference in a string.
#[derive(Debug, Clone, PartialEq)]
struct VarRef {
    start: usize,
    end: usize,
    name: String,
    format: Option<String>,
}

fn var_refs(s: &str) -> Vec<VarRef> {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    while i < b.len() {
        if b[i] != b'$' {
            i += 1;
            continue;
        }
        if b.get(i + 1) == Some(&b'{') {
            let Some(close) = s[i..].find('}').map(|c| i + c) else {
                panic!("unterminated ${{ in {s:?}")
            };
            let inner = &s[i + 2..close];
            let (name, format) = match inner.split_once(':') {
                Some((n, f)) => (n.to_string(), Some(f.to_string())),
                None => (inner.to_string(), None),
            };
            out.push(VarRef {
                start: i,
                end: close + 1,
                name,
                format,
            });
            i = close + 1;
        } else {
            let mut j = i + 1;
            while j < b.len() && (word(b[j]) || b[j] == b'.') {
                j += 1;
            }
            if j > i + 1 {
                out.push(VarRef {
                    start: i,
                    end: j,
                    name: s[i + 1..j].to_string(),
                    format: None,
                });
            }
            i = j.max(i + 1);
        }
    }
    out
}

/// Grafana's global and data-link variables.
fn builtin(name: &str) -> bool {
    const GLOBAL: &[&str] = &[
        "__from",
        "__to",
        "__interval",
        "__interval_ms",
        "__rate_interval",
        "__range",
        "__range_s",
        "__range_ms",
        "__url_time_range",
        "__all",
        "__dashboard",
        "__org",
        "__user",
        "__timezone",
    ];
    // `$1`: a regex back-reference (label_replace), not a variable.
    GLOBAL.contains(&name)
        || ["__data.", "__field.", "__series.", "__value."]
            .iter()
            .any(|p| name.starts_with(p))
        || name.bytes().all(|c| c.is_ascii_digit())
}

/// Every string in a JSON value, with its path.
fn strings<'a>(v: &'a Value, path: String, out: &mut Vec<(String, &'a str)>) {
    match v {
        Value::String(s) => out.push((path, s)),
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                strings(x, format!("{path}[{i}]"), out);
            }
        }
        Value::Object(m) => {
            for (k, x) in m {
                strings(x, format!("{path}.{k}"), out);
            }
        }
        _ => {}
    }
}

/// Every Infinity URL of a dashboard (panel targets, variable queries,
/// annotations), with where it is.
fn infinity_urls(d: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in panels(d) {
        for t in p["targets"].as_array().into_iter().flatten() {
            if is_infinity(target_ds(p, t)) {
                out.push((
                    format!("panel {:?}", p["title"]),
                    t["url"].as_str().unwrap_or_default().to_string(),
                ));
            }
        }
    }
    for v in variables(d) {
        if let Some(u) = v["query"]["infinityQuery"]["url"].as_str() {
            out.push((format!("variable {}", v["name"]), u.to_string()));
        }
    }
    for a in d["annotations"]["list"].as_array().into_iter().flatten() {
        if is_infinity(&a["datasource"]) {
            out.push((
                format!("annotation {}", a["name"]),
                a["target"]["url"].as_str().unwrap_or_default().to_string(),
            ));
        }
    }
    out
}

fn promql_exprs(d: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in panels(d) {
        for t in p["targets"].as_array().into_iter().flatten() {
            if target_ds(p, t)["type"] == "prometheus" {
                out.push((
                    format!("panel {:?}", p["title"]),
                    t["expr"].as_str().unwrap_or_default().to_string(),
                ));
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Static checks

#[test]
fn dashboards_are_well_formed() {
    let ds = provisioned_datasources();
    assert_eq!(
        ds.get("kube-insight-api").map(String::as_str),
        Some(INFINITY),
        "{ds:?}"
    );
    assert_eq!(
        ds.get("kube-insight-prometheus").map(String::as_str),
        Some("prometheus"),
        "{ds:?}"
    );
    let all = load_dashboards();
    let uids: BTreeSet<&str> = all
        .iter()
        .map(|(_, d)| d["uid"].as_str().unwrap())
        .collect();
    for ((file, d), (want_file, want_uid)) in all.iter().zip(DASHBOARDS) {
        assert_eq!(file, want_file);
        let what = |s: &str| format!("{file}: {s}");
        assert_eq!(d["uid"], want_uid, "{}", what("a stable uid"));
        assert!(d["title"].as_str().is_some_and(|t| !t.is_empty()));
        let sv = d["schemaVersion"].as_u64().expect("schemaVersion");
        assert!(
            SCHEMA_VERSIONS.contains(&sv),
            "{}",
            what(&format!("schemaVersion {sv} outside {SCHEMA_VERSIONS:?}"))
        );

        // Panels: unique ids, inside the grid, known datasources, a query each.
        let mut ids = BTreeSet::new();
        for p in panels(d) {
            let id = p["id"].as_u64().expect("panel id");
            assert!(ids.insert(id), "{}", what(&format!("panel id {id} twice")));
            let title = p["title"].as_str().unwrap_or_default();
            assert!(
                !title.is_empty(),
                "{}",
                what(&format!("panel {id} has no title"))
            );
            let g = &p["gridPos"];
            assert!(
                g["x"].as_u64().unwrap() + g["w"].as_u64().unwrap() <= 24,
                "{}",
                what(&format!("{title}: wider than the grid"))
            );
            if p["type"] == "row" {
                continue;
            }
            let targets = p["targets"].as_array().expect("targets");
            assert!(
                !targets.is_empty(),
                "{}",
                what(&format!("{title}: no query"))
            );
            let mut refs = BTreeSet::new();
            for t in targets {
                assert!(refs.insert(t["refId"].as_str().unwrap()), "{title}: refIds");
                let ds_ref = target_ds(p, t);
                let uid = ds_ref["uid"].as_str().unwrap_or_default();
                assert_eq!(
                    ds.get(uid),
                    ds_ref["type"].as_str().map(str::to_string).as_ref(),
                    "{}",
                    what(&format!("{title}: datasource {ds_ref} is not provisioned"))
                );
                if is_infinity(ds_ref) {
                    assert_eq!(t["type"], "json", "{title}");
                    assert_eq!(t["source"], "url", "{title}");
                    assert_eq!(t["parser"], "backend", "{title}");
                    let url = t["url"].as_str().unwrap();
                    assert!(
                        url.starts_with("/api/v1/"),
                        "{}",
                        what(&format!("{title}: {url} is not a kube-insight API path"))
                    );
                } else {
                    assert!(t["expr"].as_str().is_some_and(|e| !e.is_empty()), "{title}");
                }
            }
            if p["type"] == "nodeGraph" {
                let formats: BTreeSet<&str> = targets
                    .iter()
                    .map(|t| t["format"].as_str().unwrap())
                    .collect();
                assert_eq!(
                    formats,
                    BTreeSet::from(["node-graph-nodes", "node-graph-edges"]),
                    "{}",
                    what(title)
                );
            }
            if p["type"] == "logs" {
                assert!(
                    targets.iter().all(|t| t["format"] == "logs"),
                    "{}",
                    what(title)
                );
            }
        }

        // Variables: unique, defined before use, rendered as the API reads them.
        let vars = variables(d);
        let mut defined: Vec<&str> = Vec::new();
        for v in vars {
            let name = v["name"].as_str().unwrap();
            assert!(
                !defined.contains(&name),
                "{}",
                what(&format!("variable {name} twice"))
            );
            if let Some(q) = v["query"]["infinityQuery"].as_object() {
                assert_eq!(v["datasource"]["uid"], "kube-insight-api", "{name}");
                assert_eq!(q["parser"], "backend", "{name}");
                for r in var_refs(q["url"].as_str().unwrap()) {
                    assert!(
                        builtin(&r.name) || defined.contains(&r.name.as_str()),
                        "{}",
                        what(&format!(
                            "variable {name} uses ${} before it is defined",
                            r.name
                        ))
                    );
                }
            }
            defined.push(name);
        }
        let var = |n: &str| vars.iter().find(|v| v["name"] == n);
        let mut texts = Vec::new();
        strings(d, String::new(), &mut texts);
        for (path, s) in &texts {
            if path.contains(".current") || path.contains(".options[") {
                continue;
            }
            for r in var_refs(s) {
                assert!(
                    builtin(&r.name) || var(&r.name).is_some(),
                    "{}",
                    what(&format!("{path}: ${} is not defined", r.name))
                );
            }
        }
        for (where_, url) in infinity_urls(d) {
            for r in var_refs(&url) {
                let Some(v) = var(&r.name) else { continue };
                let want: &[&str] = if v["multi"] == true {
                    &["csv"]
                } else if v["includeAll"] == true {
                    &["text"]
                } else if v["type"] == "textbox" {
                    &["percentencode"]
                } else {
                    &["", "text", "raw"]
                };
                let got = r.format.as_deref().unwrap_or("");
                assert!(
                    want.contains(&got),
                    "{}",
                    what(&format!(
                        "{where_}: ${{{}}} must be written with one of the formats {want:?} in a URL",
                        r.name
                    ))
                );
            }
        }
        for (where_, expr) in promql_exprs(d) {
            for r in var_refs(&expr) {
                let Some(v) = var(&r.name) else { continue };
                if v["multi"] == true || v["includeAll"] == true {
                    assert!(
                        expr[..r.start].ends_with("=~\""),
                        "{}",
                        what(&format!(
                            "{where_}: ${} can be several values: use it in =~\"…\"",
                            r.name
                        ))
                    );
                }
            }
        }

        // Links go to dashboards that exist.
        let mut link_urls: Vec<String> = d["links"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|l| l["url"].as_str().unwrap().to_string())
            .collect();
        for (path, s) in &texts {
            if path.ends_with(".url") && path.contains("links") {
                link_urls.push(s.to_string());
            }
        }
        assert!(
            !link_urls.is_empty(),
            "{}",
            what("no links: the drill-down needs them")
        );
        for u in link_urls {
            let uid = u
                .strip_prefix("/d/")
                .and_then(|r| r.split('/').next())
                .unwrap_or_else(|| panic!("{}", what(&format!("link {u} is not /d/<uid>/…"))));
            assert!(
                uids.contains(uid),
                "{}",
                what(&format!("link {u}: no dashboard {uid}"))
            );
        }
    }
    // The drill-down: topology → workload → pod, and back up.
    let links_of = |uid: &str| -> String {
        all.iter()
            .find(|(_, d)| d["uid"] == uid)
            .map(|(_, d)| d.to_string())
            .unwrap()
    };
    assert!(links_of("kube-insight-topology").contains("/d/kube-insight-workload/"));
    assert!(links_of("kube-insight-workload").contains("/d/kube-insight-pod/"));
    assert!(links_of("kube-insight-workload").contains("/d/kube-insight-topology/"));
    assert!(links_of("kube-insight-pod").contains("/d/kube-insight-workload/"));
    // The topology dashboard carries the changes annotation layer.
    let topo = &all[0].1;
    assert!(
        topo["annotations"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["name"] == "changes"
                && a["target"]["url"]
                    .as_str()
                    .is_some_and(|u| u.starts_with("/api/v1/changes?"))),
        "the changes annotation layer"
    );
}

/// The datasource blocks of the provisioning, by uid (their YAML lines).
fn datasource_blocks() -> BTreeMap<String, String> {
    let text =
        std::fs::read_to_string(repo().join("grafana/provisioning/datasources/kube-insight.yaml"))
            .unwrap();
    let mut out = BTreeMap::new();
    for block in text.split("\n  - name:").skip(1) {
        let uid = block
            .lines()
            .find_map(|l| l.trim().strip_prefix("uid:"))
            .unwrap()
            .trim()
            .to_string();
        out.insert(uid, block.to_string());
    }
    out
}

#[test]
fn the_provisioning_points_grafana_at_kube_insight() {
    let blocks = datasource_blocks();
    let api = &blocks["kube-insight-api"];
    let has = |b: &str, line: &str| b.lines().any(|l| l.trim() == line);
    // Relative panel URLs need the base URL; Infinity sends only to allowed hosts.
    assert!(has(api, "url: ${KUBE_INSIGHT_API_URL}"), "{api}");
    assert!(
        has(api, "allowedHosts:") && has(api, "- ${KUBE_INSIGHT_API_URL}"),
        "{api}"
    );
    assert!(
        has(api, "httpHeaderName1: Authorization")
            && has(api, "httpHeaderValue1: Bearer ${KUBE_INSIGHT_API_TOKEN}"),
        "the token header: {api}"
    );
    assert!(
        !api.lines().any(|l| {
            let l = l.trim();
            l.starts_with("auth_method:") || l.starts_with("bearerToken:")
        }),
        "Infinity's bearerToken method refuses an empty token (single node): {api}"
    );
    let prom = &blocks["kube-insight-prometheus"];
    assert!(
        has(prom, "url: ${KUBE_INSIGHT_API_URL}/prometheus"),
        "{prom}"
    );
    assert!(has(prom, "httpHeaderName1: Authorization"), "{prom}");
    let provider =
        std::fs::read_to_string(repo().join("grafana/provisioning/dashboards/kube-insight.yaml"))
            .unwrap();
    assert!(
        provider
            .lines()
            .any(|l| l.trim() == "path: /var/lib/grafana/dashboards/kube-insight"),
        "{provider}"
    );
}

#[test]
fn the_variable_syntax_is_read_like_grafana() {
    let r = var_refs("a=$x&b=${y:csv}&c=${__data.fields.title}&$1 ${__to:date:iso}");
    let names: Vec<(&str, Option<&str>)> = r
        .iter()
        .map(|r| (r.name.as_str(), r.format.as_deref()))
        .collect();
    assert_eq!(
        names,
        [
            ("x", None),
            ("y", Some("csv")),
            ("__data.fields.title", None),
            ("1", None),
            ("__to", Some("date:iso")),
        ]
    );
    assert!(builtin("1") && builtin("__rate_interval") && !builtin("namespace"));
    assert_eq!(prom_regex_escape("a.b|c"), "a\\\\.b\\\\|c");
    let vars = BTreeMap::from([
        (
            "ns".to_string(),
            Resolved {
                include_all: true,
                multi: false,
                selected: Selected::All,
                options: vec!["a".into(), "b".into()],
            },
        ),
        (
            "w".to_string(),
            Resolved {
                include_all: true,
                multi: true,
                selected: Selected::Some(vec!["x".into()]),
                options: vec!["x".into(), "y".into()],
            },
        ),
    ]);
    let t = Times {
        from_ms: 1_000,
        to_ms: 2_000,
        interval: "2m".into(),
        rate_interval: "2m15s".into(),
    };
    assert_eq!(
        interpolate(
            "ns=${ns:text}&w=${w:csv}&f=${__from}",
            &vars,
            &t,
            Context::Url
        ),
        "ns=All&w=x&f=1000"
    );
    assert_eq!(
        interpolate(
            "{ns=~\"$ns\"}[$__rate_interval]",
            &vars,
            &t,
            Context::PromQl
        ),
        "{ns=~\"(a|b)\"}[2m15s]"
    );
}

// ---------------------------------------------------------------------------
// Interpolation, as Grafana does it for these dashboards

#[derive(Debug, Clone)]
enum Selected {
    All,
    Some(Vec<String>),
}

#[derive(Debug, Clone)]
struct Resolved {
    include_all: bool,
    multi: bool,
    selected: Selected,
    options: Vec<String>,
}

impl Resolved {
    fn values(&self) -> Vec<String> {
        match &self.selected {
            Selected::All => self.options.clone(),
            Selected::Some(v) => v.clone(),
        }
    }
}

struct Times {
    from_ms: i64,
    to_ms: i64,
    interval: String,
    rate_interval: String,
}

#[derive(Clone, Copy, PartialEq)]
enum Context {
    Url,
    PromQl,
}

/// The Prometheus datasource's escaping of a multi-value variable's values.
fn prom_regex_escape(v: &str) -> String {
    let mut o = String::new();
    for c in v.chars() {
        match c {
            '\\' => o.push_str("\\\\\\\\"),
            '$' | '^' | '*' | '{' | '}' | '[' | ']' | '\'' | '+' | '?' | '.' | '(' | ')' | '|' => {
                o.push_str("\\\\");
                o.push(c);
            }
            c => o.push(c),
        }
    }
    o
}

fn percent_encode(v: &str) -> String {
    v.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.!~*'()".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn interpolate(s: &str, vars: &BTreeMap<String, Resolved>, t: &Times, ctx: Context) -> String {
    let mut out = String::new();
    let mut last = 0;
    for r in var_refs(s) {
        out.push_str(&s[last..r.start]);
        last = r.end;
        let fmt = r.format.as_deref();
        let text = match r.name.as_str() {
            "__from" | "__to" => {
                let ms = if r.name == "__from" {
                    t.from_ms
                } else {
                    t.to_ms
                };
                match fmt {
                    None => ms.to_string(),
                    Some("date:iso") => format_rfc3339_ms(ms),
                    Some(f) => panic!("format {f} of {} is not supported here", r.name),
                }
            }
            "__interval" => t.interval.clone(),
            "__rate_interval" => t.rate_interval.clone(),
            n if n.bytes().all(|c| c.is_ascii_digit()) => s[r.start..r.end].to_string(),
            n => {
                let v = vars
                    .get(n)
                    .unwrap_or_else(|| panic!("${n} is not resolved (in {s:?})"));
                let values = v.values();
                match (ctx, fmt) {
                    (_, Some("text")) => match &v.selected {
                        Selected::All => "All".to_string(),
                        Selected::Some(x) => x.join(" + "),
                    },
                    (_, Some("csv")) => values.join(","),
                    (_, Some("percentencode")) => percent_encode(&values.join(",")),
                    (_, Some("raw")) => values.join(","),
                    (Context::PromQl, None) if v.multi || v.include_all => {
                        let esc: Vec<String> =
                            values.iter().map(|x| prom_regex_escape(x)).collect();
                        match (&v.selected, esc.as_slice()) {
                            (Selected::Some(_), [one]) => one.clone(),
                            _ => format!("({})", esc.join("|")),
                        }
                    }
                    (_, None) => {
                        assert!(
                            values.len() == 1,
                            "${n} has {values:?}: a URL needs a format for it"
                        );
                        values[0].clone()
                    }
                    (_, Some(f)) => panic!("format {f} is not supported by this test"),
                }
            }
        };
        out.push_str(&text);
    }
    out.push_str(&s[last..]);
    out
}

// ---------------------------------------------------------------------------
// Running queries

/// A gjson-like path: `a.b.c` (the only root selectors and column selectors
/// these dashboards use; anything else fails the test).
fn select<'a>(v: &'a Value, path: &str) -> Option<&'a Value> {
    if path.is_empty() {
        return Some(v);
    }
    assert!(
        path.bytes()
            .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'.'),
        "selector {path:?}: only plain paths are checked by this test"
    );
    path.split('.').try_fold(v, |v, k| v.get(k))
}

/// One Infinity answer as Infinity's backend parser frames it: rows keyed
/// by column name (the column's text, or every key without columns).
struct Frame {
    rows: Vec<BTreeMap<String, Value>>,
    /// Column name → type (`string`, `number`, `timestamp`), when given.
    types: BTreeMap<String, String>,
}

async fn infinity_get(
    client: &reqwest::Client,
    api: &str,
    target: &Value,
    url: &str,
    what: &str,
) -> Frame {
    let r = client
        .get(format!("{api}{url}"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{what}: GET {url}: {e}"));
    let status = r.status();
    let body = r.text().await.unwrap();
    assert!(
        status.is_success(),
        "{what}: GET {url}: {status} (a query the API does not answer): {body}"
    );
    let json: Value = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("{what}: GET {url}: not JSON: {e}: {body}"));
    let root = select(&json, target["root_selector"].as_str().unwrap_or(""))
        .unwrap_or_else(|| panic!("{what}: root selector finds nothing in {body}"));
    let items: Vec<&Value> = match root {
        Value::Array(a) => a.iter().collect(),
        o @ Value::Object(_) => vec![o],
        other => panic!("{what}: GET {url}: not rows: {other}"),
    };
    let columns = target["columns"].as_array().cloned().unwrap_or_default();
    let mut types = BTreeMap::new();
    for c in &columns {
        let name = c["text"].as_str().filter(|t| !t.is_empty());
        let sel = c["selector"].as_str().unwrap();
        types.insert(
            name.unwrap_or(sel).to_string(),
            c["type"].as_str().unwrap_or("string").to_string(),
        );
    }
    let rows = items
        .into_iter()
        .map(|item| {
            let obj = item
                .as_object()
                .unwrap_or_else(|| panic!("{what}: a row is not an object: {item}"));
            if columns.is_empty() {
                return obj.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            }
            columns
                .iter()
                .map(|c| {
                    let sel = c["selector"].as_str().unwrap();
                    let name = c["text"].as_str().filter(|t| !t.is_empty()).unwrap_or(sel);
                    let v = select(item, sel).unwrap_or_else(|| {
                        panic!("{what}: GET {url}: column {sel:?} is missing from {item}")
                    });
                    let ok = match c["type"].as_str().unwrap_or("string") {
                        _ if v.is_null() => true,
                        "timestamp" => {
                            v.as_str().is_some_and(|s| parse_time_ms(s).is_ok()) || v.is_number()
                        }
                        "number" => v.is_number(),
                        _ => true,
                    };
                    assert!(ok, "{what}: column {sel:?} is not a {}: {v}", c["type"]);
                    (name.to_string(), v.clone())
                })
                .collect()
        })
        .collect();
    Frame { rows, types }
}

/// `query_range` as Grafana's Prometheus datasource sends it (start and end
/// aligned to the step); the `data` of a successful answer.
async fn prom_range(
    client: &reqwest::Client,
    api: &str,
    expr: &str,
    t: &Times,
    step_s: i64,
    what: &str,
) -> Value {
    let step_ms = step_s * 1000;
    let start = t.from_ms / step_ms * step_ms;
    let end = t.to_ms / step_ms * step_ms;
    let r = client
        .post(format!("{api}/prometheus/api/v1/query_range"))
        .form(&[
            ("query", expr.to_string()),
            ("start", (start / 1000).to_string()),
            ("end", (end / 1000).to_string()),
            ("step", step_s.to_string()),
        ])
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    assert!(
        status.is_success() && body["status"] == "success",
        "{what}: {expr}: {status}: {body}"
    );
    body["data"].clone()
}

/// What one scenario's panels answered: (panel title, refId) → rows, or
/// series for PromQL.
#[derive(Default)]
struct Answers {
    frames: BTreeMap<(String, String), Vec<BTreeMap<String, Value>>>,
    series: BTreeMap<(String, String), Vec<Value>>,
}

struct Live {
    client: reqwest::Client,
    api: String,
    times: Times,
    step_s: i64,
}

impl Live {
    /// Resolves the variables in order, like Grafana: a query variable runs
    /// its own query with the variables before it; `want` picks a value
    /// (`All` for All), which must be among the options.
    async fn resolve(
        &self,
        d: &Value,
        want: &BTreeMap<&str, Vec<&str>>,
    ) -> BTreeMap<String, Resolved> {
        let mut out: BTreeMap<String, Resolved> = BTreeMap::new();
        for v in variables(d) {
            let name = v["name"].as_str().unwrap();
            let include_all = v["includeAll"] == true;
            let multi = v["multi"] == true;
            let options: Vec<String> = match v["type"].as_str().unwrap() {
                "query" => {
                    let q = &v["query"]["infinityQuery"];
                    let url =
                        interpolate(q["url"].as_str().unwrap(), &out, &self.times, Context::Url);
                    let frame = infinity_get(
                        &self.client,
                        &self.api,
                        q,
                        &url,
                        &format!("variable {name}"),
                    )
                    .await;
                    let col = q["columns"][0]["text"].as_str().unwrap();
                    let mut o: Vec<String> = frame
                        .rows
                        .iter()
                        .filter_map(|r| r[col].as_str().map(str::to_string))
                        .collect();
                    o.sort();
                    o.dedup();
                    assert!(!o.is_empty(), "variable {name}: no values from {url}");
                    o
                }
                "custom" => v["options"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|o| o["value"].as_str().unwrap().to_string())
                    .collect(),
                "textbox" => vec![],
                other => panic!("variable {name}: type {other} is not checked by this test"),
            };
            let selected = match want.get(name).map(Vec::as_slice) {
                Some(["All"]) => {
                    assert!(include_all, "variable {name} has no All");
                    Selected::All
                }
                Some(values) => {
                    if v["type"] != "textbox" {
                        for x in values {
                            assert!(
                                options.iter().any(|o| o == x),
                                "variable {name}: {x} is not among {options:?}"
                            );
                        }
                    }
                    assert!(
                        multi || values.len() == 1,
                        "variable {name} is single-valued"
                    );
                    Selected::Some(values.iter().map(|s| s.to_string()).collect())
                }
                None if v["current"]["value"] == "$__all"
                    || v["current"]["value"][0] == "$__all" =>
                {
                    Selected::All
                }
                None if v["type"] == "textbox" => Selected::Some(vec![String::new()]),
                None => Selected::Some(vec![options[0].clone()]),
            };
            out.insert(
                name.to_string(),
                Resolved {
                    include_all,
                    multi,
                    selected,
                    options,
                },
            );
        }
        out
    }

    /// Runs every panel query and annotation of `d` with `vars`; checks each
    /// answer has what its panel type needs and is not empty.
    async fn run(&self, d: &Value, vars: &BTreeMap<String, Resolved>, scenario: &str) -> Answers {
        let mut answers = Answers::default();
        let uid = d["uid"].as_str().unwrap();
        for p in panels(d) {
            if p["type"] == "row" {
                continue;
            }
            let title = p["title"].as_str().unwrap().to_string();
            let kind = p["type"].as_str().unwrap();
            let what = format!("{uid} [{scenario}] panel {title:?}");
            let mut node_ids: Option<BTreeSet<String>> = None;
            let mut edge_ends: Vec<(String, String)> = Vec::new();
            for t in p["targets"].as_array().unwrap() {
                let ref_id = t["refId"].as_str().unwrap().to_string();
                let what = format!("{what} query {ref_id}");
                if !is_infinity(target_ds(p, t)) {
                    let expr = interpolate(
                        t["expr"].as_str().unwrap(),
                        vars,
                        &self.times,
                        Context::PromQl,
                    );
                    let data = prom_range(
                        &self.client,
                        &self.api,
                        &expr,
                        &self.times,
                        self.step_s,
                        &what,
                    )
                    .await;
                    assert_eq!(data["resultType"], "matrix", "{what}");
                    let series = data["result"].as_array().unwrap().clone();
                    assert!(!series.is_empty(), "{what}: no series for {expr}");
                    for s in &series {
                        let points = s["values"].as_array().unwrap();
                        assert!(!points.is_empty(), "{what}: {s}");
                        for pt in points {
                            assert!(pt[0].is_number(), "{what}: time {pt}");
                            assert!(
                                pt[1].as_str().is_some_and(|v| v.parse::<f64>().is_ok()),
                                "{what}: value {pt}"
                            );
                        }
                    }
                    answers.series.insert((title.clone(), ref_id), series);
                    continue;
                }
                let url = interpolate(t["url"].as_str().unwrap(), vars, &self.times, Context::Url);
                let frame = infinity_get(&self.client, &self.api, t, &url, &what).await;
                assert!(!frame.rows.is_empty(), "{what}: GET {url} answered no rows");
                let format = t["format"].as_str().unwrap_or("table");
                match (kind, format) {
                    ("nodeGraph", "node-graph-nodes") => {
                        let ids: BTreeSet<String> = frame
                            .rows
                            .iter()
                            .map(|r| {
                                r.get("id")
                                    .and_then(Value::as_str)
                                    .unwrap_or_else(|| panic!("{what}: a node without id: {r:?}"))
                                    .to_string()
                            })
                            .collect();
                        assert_eq!(ids.len(), frame.rows.len(), "{what}: node ids repeat");
                        assert!(frame.rows.iter().all(|r| r.contains_key("title")), "{what}");
                        for arc in p["options"]["nodes"]["arcs"]
                            .as_array()
                            .into_iter()
                            .flatten()
                        {
                            let f = arc["field"].as_str().unwrap();
                            assert!(
                                frame.rows.iter().all(|r| r[f].is_number()),
                                "{what}: arc field {f}"
                            );
                        }
                        node_ids = Some(ids);
                    }
                    ("nodeGraph", "node-graph-edges") => {
                        for r in &frame.rows {
                            let end = |k: &str| {
                                r.get(k)
                                    .and_then(Value::as_str)
                                    .unwrap_or_else(|| panic!("{what}: an edge without {k}: {r:?}"))
                                    .to_string()
                            };
                            assert!(r.get("id").is_some_and(Value::is_string), "{what}: {r:?}");
                            assert!(r.contains_key("mainstat"), "{what}: {r:?}");
                            edge_ends.push((end("source"), end("target")));
                        }
                    }
                    ("timeseries", "timeseries") => {
                        let time_col = frame
                            .types
                            .iter()
                            .find(|(_, t)| *t == "timestamp")
                            .map(|(n, _)| n.clone());
                        let num_col = frame
                            .types
                            .iter()
                            .find(|(_, t)| *t == "number")
                            .map(|(n, _)| n.clone());
                        let (Some(tc), Some(nc)) = (time_col, num_col) else {
                            panic!("{what}: a time series needs a timestamp column and a number column")
                        };
                        assert!(
                            frame
                                .rows
                                .iter()
                                .all(|r| r[&tc].is_string() && r[&nc].is_number()),
                            "{what}"
                        );
                    }
                    ("logs", "logs") => {
                        for r in &frame.rows {
                            assert!(
                                r.get("timestamp")
                                    .and_then(Value::as_str)
                                    .is_some_and(|s| parse_time_ms(s).is_ok()),
                                "{what}: {r:?}"
                            );
                            assert!(r.get("body").is_some_and(Value::is_string), "{what}: {r:?}");
                        }
                        assert_eq!(
                            frame.types.get("timestamp").map(String::as_str),
                            Some("timestamp"),
                            "{what}"
                        );
                    }
                    ("table", "table") | ("barchart", "table") => {
                        assert!(
                            !frame.types.is_empty(),
                            "{what}: a table names the columns it shows"
                        );
                    }
                    (k, f) => {
                        panic!("{what}: a {k} panel with format {f} is not checked by this test")
                    }
                }
                // Data links read fields of the answer.
                for (_, s) in {
                    let mut v = Vec::new();
                    strings(&p["fieldConfig"], String::new(), &mut v);
                    v
                } {
                    for r in var_refs(s) {
                        if let Some(field) = r.name.strip_prefix("__data.fields.") {
                            let in_frame = frame.rows[0].contains_key(field);
                            let other_frame = kind == "nodeGraph" && format == "node-graph-edges";
                            assert!(
                                in_frame || other_frame,
                                "{what}: a data link reads {field}, not in {:?}",
                                frame.rows[0].keys()
                            );
                        }
                    }
                }
                if kind == "barchart" {
                    let x = p["options"]["xField"].as_str().unwrap();
                    assert!(
                        frame.rows.iter().all(|r| r[x].is_string()),
                        "{what}: x field {x}"
                    );
                }
                answers.frames.insert((title.clone(), ref_id), frame.rows);
            }
            if kind == "nodeGraph" {
                let ids = node_ids.unwrap_or_else(|| panic!("{what}: no nodes frame"));
                assert!(!edge_ends.is_empty(), "{what}: no edges frame");
                for (s, t) in edge_ends {
                    assert!(
                        ids.contains(&s) && ids.contains(&t),
                        "{what}: edge {s}→{t} ends outside the nodes {ids:?}"
                    );
                }
            }
        }
        for a in d["annotations"]["list"].as_array().into_iter().flatten() {
            if !is_infinity(&a["datasource"]) {
                continue;
            }
            let t = &a["target"];
            let url = interpolate(t["url"].as_str().unwrap(), vars, &self.times, Context::Url);
            let what = format!("{uid} [{scenario}] annotation {}", a["name"]);
            let frame = infinity_get(&self.client, &self.api, t, &url, &what).await;
            assert!(!frame.rows.is_empty(), "{what}: no annotations from {url}");
            assert!(
                frame
                    .rows
                    .iter()
                    .all(|r| r["time"].is_string() && r["text"].is_string()),
                "{what}: annotations need time and text"
            );
        }
        answers
    }
}

/// Grafana's `$__interval` for a range (about 1000 points, rounded to a
/// nice interval) and `$__rate_interval` (interval + scrape interval, at
/// least 4 scrape intervals, with Grafana's 15 s default).
fn intervals(range_ms: i64) -> (i64, String, String) {
    const NICE: [i64; 14] = [1, 2, 5, 10, 15, 20, 30, 60, 120, 300, 600, 900, 1800, 3600];
    let raw = range_ms / 1000 / 1000;
    let step = NICE
        .iter()
        .copied()
        .find(|n| *n >= raw)
        .unwrap_or(3600)
        .max(15);
    let fmt = |s: i64| {
        if s % 60 == 0 {
            format!("{}m", s / 60)
        } else {
            format!("{s}s")
        }
    };
    (step, fmt(step), fmt((step + 15).max(60)))
}

type Scenario<'a> = (&'a str, &'a str, Vec<(&'a str, Vec<&'a str>)>);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_panel_query_answers_over_the_fixture_cluster() {
    let dashboards = load_dashboards();
    let dir = tempfile::tempdir().unwrap();
    let FixtureCluster {
        ki,
        mock: _mock,
        day,
        client,
        ..
    } = FixtureCluster::start(dir.path()).await;

    // The range: yesterday 00:00 (the moved fixtures) to a minute from now.
    let from_ms = parse_time_ms(&format!("{day}T00:00:00Z")).unwrap();
    let to_ms = now_ms() + 60_000;
    let (step_s, interval, rate_interval) = intervals(to_ms - from_ms);
    let live = Live {
        client: client.clone(),
        api: ki.api.clone(),
        times: Times {
            from_ms,
            to_ms,
            interval,
            rate_interval,
        },
        step_s,
    };
    let e2e = |rest: Vec<(&'static str, Vec<&'static str>)>| {
        let mut v = vec![("cluster", vec!["e2e"])];
        v.extend(rest);
        v
    };
    let scenarios: Vec<Scenario> = vec![
        (
            "kube-insight-topology",
            "all namespaces",
            e2e(vec![("namespace", vec!["All"])]),
        ),
        (
            "kube-insight-topology",
            "namespace shop",
            e2e(vec![("namespace", vec!["shop"])]),
        ),
        (
            "kube-insight-workload",
            "every pod",
            e2e(vec![
                ("namespace", vec!["shop"]),
                ("workload", vec!["api"]),
                ("pod", vec!["All"]),
                ("container", vec!["All"]),
                ("depth", vec!["1"]),
            ]),
        ),
        (
            "kube-insight-workload",
            "one container, a search",
            e2e(vec![
                ("namespace", vec!["shop"]),
                ("workload", vec!["api"]),
                ("pod", vec![API_POD]),
                ("container", vec!["api"]),
                ("depth", vec!["2"]),
                ("search", vec!["timeout"]),
            ]),
        ),
        (
            "kube-insight-pod",
            "the api pod",
            e2e(vec![
                ("namespace", vec!["shop"]),
                ("workload", vec!["api"]),
                ("pod", vec![API_POD]),
                ("container", vec!["All"]),
            ]),
        ),
        (
            "kube-insight-changes",
            "everything",
            e2e(vec![("namespace", vec!["All"]), ("affected", vec!["All"])]),
        ),
        (
            "kube-insight-changes",
            "shop, api",
            e2e(vec![("namespace", vec!["shop"]), ("affected", vec!["api"])]),
        ),
    ];
    let mut all: BTreeMap<(String, String), Answers> = BTreeMap::new();
    for (uid, name, want) in scenarios {
        let d = &dashboards.iter().find(|(_, d)| d["uid"] == uid).unwrap().1;
        let want: BTreeMap<&str, Vec<&str>> = want.into_iter().collect();
        let vars = live.resolve(d, &want).await;
        let answers = live.run(d, &vars, name).await;
        let rows: usize = answers.frames.values().map(Vec::len).sum();
        let series: usize = answers.series.values().map(Vec::len).sum();
        println!(
            "{uid} [{name}]: {} API queries ({rows} rows), {} PromQL queries ({series} series)",
            answers.frames.len(),
            answers.series.len()
        );
        all.insert((uid.to_string(), name.to_string()), answers);
    }

    // What the fixture puts where.
    let frame = |uid: &str, sc: &str, title: &str, r: &str| {
        all[&(uid.to_string(), sc.to_string())].frames[&(title.to_string(), r.to_string())].clone()
    };
    let series = |uid: &str, sc: &str, title: &str, r: &str| {
        all[&(uid.to_string(), sc.to_string())].series[&(title.to_string(), r.to_string())].clone()
    };
    let col = |rows: &[BTreeMap<String, Value>], c: &str| -> BTreeSet<String> {
        rows.iter()
            .filter_map(|r| r[c].as_str().map(str::to_string))
            .collect()
    };
    let topo_title = "Service graph at ${__to:date:iso}";
    // Grouped by namespace until a namespace is chosen.
    let ns_nodes = col(
        &frame(
            "kube-insight-topology",
            "all namespaces",
            topo_title,
            "nodes",
        ),
        "id",
    );
    assert!(
        ns_nodes.contains("shop") && ns_nodes.contains("kube-system"),
        "{ns_nodes:?}"
    );
    let shop_nodes = col(
        &frame(
            "kube-insight-topology",
            "namespace shop",
            topo_title,
            "nodes",
        ),
        "id",
    );
    for w in [
        "shop/api",
        "shop/frontend",
        "shop/cartservice",
        "shop/redis-cart",
    ] {
        assert!(shop_nodes.contains(w), "{w} in {shop_nodes:?}");
    }
    // Node stats (CPU, memory, the error arc) and edge stats at the end of
    // the range: phase C, 30 % of frontend → cartservice requests failing.
    let nodes = frame(
        "kube-insight-topology",
        "namespace shop",
        topo_title,
        "nodes",
    );
    let cart = nodes
        .iter()
        .find(|n| n["id"] == "shop/cartservice")
        .unwrap();
    assert!(
        cart["mainstat"].as_f64().is_some_and(|c| c > 0.3),
        "CPU cores: {cart:?}"
    );
    assert!(
        cart["secondarystat"].as_f64().is_some_and(|m| m > 1e8),
        "memory: {cart:?}"
    );
    assert!(
        cart["arc__err"].as_f64().is_some_and(|e| e > 0.2),
        "error share: {cart:?}"
    );
    let edges = frame(
        "kube-insight-topology",
        "namespace shop",
        topo_title,
        "edges",
    );
    let fc = edges
        .iter()
        .find(|e| e["id"] == "shop/frontend->shop/cartservice")
        .unwrap();
    let (main, second) = (
        fc["mainstat"].as_str().unwrap(),
        fc["secondarystat"].as_str().unwrap(),
    );
    assert!(main.ends_with("/s"), "bytes/s: {fc:?}");
    assert!(
        second.contains("req/s") && second.contains("% err"),
        "requests and errors: {fc:?}"
    );
    let table = frame("kube-insight-topology", "namespace shop", "Edges", "edges");
    let row = table
        .iter()
        .find(|e| e["source"] == "shop/frontend" && e["target"] == "shop/cartservice")
        .unwrap();
    assert!(
        row["bytes/s"].as_f64().is_some_and(|b| b > 0.0)
            && row["error ratio"].as_f64().is_some_and(|e| e > 0.2),
        "{row:?}"
    );
    let changes = frame(
        "kube-insight-topology",
        "namespace shop",
        "Changes in the range",
        "changes",
    );
    let sources = col(&changes, "source");
    assert_eq!(
        sources,
        BTreeSet::from(["kubernetes".to_string(), "topology".to_string()]),
        "events, versions and dependency changes in one table"
    );
    // The workload's signals are the api pod's.
    let cpu = series("kube-insight-workload", "every pod", "CPU by pod", "cpu");
    assert_eq!(cpu.len(), 1, "{cpu:?}");
    assert_eq!(cpu[0]["metric"]["pod"], API_POD);
    let logs = frame(
        "kube-insight-workload",
        "one container, a search",
        "Logs",
        "logs",
    );
    assert!(
        !logs.is_empty()
            && logs
                .iter()
                .all(|r| r["body"].as_str().unwrap().contains("upstream timeout")),
        "{logs:?}"
    );
    let events = frame("kube-insight-workload", "every pod", "Events", "events");
    assert!(col(&events, "reason").contains("BackOff"), "{events:?}");
    let spec = frame(
        "kube-insight-workload",
        "every pod",
        "Spec changes",
        "changes",
    );
    assert!(
        spec.iter().any(|r| r["summary"]
            .as_str()
            .unwrap()
            .contains("registry/api:1.0 → registry/api:1.1")),
        "{spec:?}"
    );
    let neighbours = col(
        &frame(
            "kube-insight-workload",
            "every pod",
            "Neighbours at ${__to:date:iso}",
            "nodes",
        ),
        "id",
    );
    assert_eq!(
        neighbours,
        BTreeSet::from(["shop/api".to_string(), "shop/frontend".to_string()])
    );
    let restarts = series("kube-insight-pod", "the api pod", "Restarts", "restarts");
    assert_eq!(restarts[0]["metric"]["container"], "api");
    // What changed: the affected workloads' CPU and error logs line up.
    let cpu = series(
        "kube-insight-changes",
        "everything",
        "CPU of the affected workloads",
        "cpu",
    );
    let workloads: BTreeSet<String> = cpu
        .iter()
        .map(|s| s["metric"]["workload"].as_str().unwrap().to_string())
        .collect();
    assert!(workloads.contains("api"), "{workloads:?}");
    let errors = frame(
        "kube-insight-changes",
        "shop, api",
        "Error log lines of the affected workloads",
        "errors",
    );
    assert_eq!(
        col(&errors, "workload"),
        BTreeSet::from(["api".to_string()])
    );
    let diff = frame(
        "kube-insight-changes",
        "everything",
        "Service graph: ${__from:date:iso} → ${__to:date:iso}",
        "nodes",
    );
    assert!(
        diff.iter()
            .any(|n| n["detail__change"] == "added" && n["id"] == "shop/api"),
        "before the first snapshot nothing was there: {diff:?}"
    );

    // The picture: the fixture cluster's topology through Graphviz.
    let out = Command::new(env!("CARGO_BIN_EXE_kube-insight"))
        .args(["topology", "--at", &now_ms().to_string(), "--format", "dot"])
        .env_clear()
        .env(
            "KUBE_INSIGHT_STORE",
            format!("sqlite://{}/insight.db", dir.path().display()),
        )
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dot = String::from_utf8(out.stdout).unwrap();
    assert!(dot.contains("\"shop/api\""), "{dot}");
    if let Some(dot_bin) = tool("dot", "apt-get install graphviz") {
        let dot_file = dir.path().join("topology.dot");
        let png = dir.path().join("topology.png");
        std::fs::write(&dot_file, &dot).unwrap();
        let st = Command::new(dot_bin)
            .arg("-Tpng")
            .arg(&dot_file)
            .arg("-o")
            .arg(&png)
            .status()
            .unwrap();
        assert!(st.success(), "dot -Tpng failed");
        let bytes = std::fs::read(&png).unwrap();
        assert!(is_png(&bytes), "not a PNG");
        if std::env::var_os("KUBE_INSIGHT_UPDATE_PICTURES").is_some() {
            std::fs::write(repo().join("grafana/topology.png"), &bytes).unwrap();
        }
    }
    drop(ki);
}

fn is_png(bytes: &[u8]) -> bool {
    bytes.len() > 1000 && bytes.starts_with(b"\x89PNG\r\n\x1a\n")
}

#[test]
fn the_readme_picture_is_a_png() {
    let bytes = std::fs::read(repo().join("grafana/topology.png"))
        .expect("grafana/topology.png (KUBE_INSIGHT_UPDATE_PICTURES=1 cargo test -p kube-insight --test e2e_grafana)");
    assert!(is_png(&bytes));
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    assert!(
        readme.contains("](grafana/topology.png)"),
        "the README shows it"
    );
}
