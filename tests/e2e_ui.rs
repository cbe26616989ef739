//! The web UI in a real browser: headless Chromium (Debian's `chromium`)
//! driven through the DevTools protocol (`support/cdp.rs`) against
//! `kube-insight run` on loopback.
//!
//! - An empty store: the home page explains how to send data (never blank).
//! - The fixture cluster (`support/fixture_cluster.rs`): the home page's
//!   nodes and edges are the API's at that T; the scrubber set to a time
//!   before the shop's dependency changes redraws the graph as
//!   `/api/v1/topology/diff` says; the compare mode lists the same diff;
//!   the node table walks with the keyboard; a click on a node and on "Open
//!   workload" reaches the workload page, whose charts hold PromQL's answers
//!   point for point; a change expands to its before/after diff; the
//!   object's history shows the YAML of a version as `objects?at=` has it;
//!   back and forward restore the pages; text contrast is at least 4.5:1.
//! - Any JavaScript error in the console fails the test.
//! - Screenshots: `KUBE_INSIGHT_UPDATE_PICTURES=1` writes them to
//!   `grafana/screenshots/` (the README's pictures).
//!
//! Without Chromium the test prints `skipped: chromium not found` (CI
//! installs it and fails without it). The benchmark (first render of a
//! 300-node graph, scrub steps) is `ui_render_benchmark`, ignored by
//! default: `cargo test -p kube-insight --test e2e_ui -- --ignored --nocapture`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is a failure

#[path = "support/cdp.rs"]
mod cdp;
#[path = "support/fixture_cluster.rs"]
mod fixture_cluster;
#[path = "support/kube_mock.rs"]
mod kube_mock;
mod support;
#[path = "support/topology_mock.rs"]
mod topology_mock;

use cdp::{find_chromium, Browser, Page};
use fixture_cluster::*;
use kube_insight_core::time::{format_rfc3339_ms, now_ms};
use kube_insight_core::{parse_time_ms, Labels, Sample, TimeSeries};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;
use support::*;

const WAIT: Duration = Duration::from_secs(30);

/// Failed requests the UI expects and shows as a state, not an error: the
/// suspects endpoint on a build without it, and an object that did not
/// exist before its first version.
const EXPECTED_404: &[&str] = &["/api/v1/suspects", "/api/v1/objects/"];

/// The first API call behind a token, before the user gave it.
const EXPECTED_401: &[&str] = &["status of 401"];

fn chromium() -> Option<PathBuf> {
    let found = find_chromium();
    if found.is_none() {
        if std::env::var_os("CI").is_some() {
            panic!("chromium is not installed; CI must install it: apt-get install chromium");
        }
        eprintln!("skipped: chromium not found (apt-get install chromium)");
    }
    found
}

fn screenshot_dir() -> Option<PathBuf> {
    (std::env::var("KUBE_INSIGHT_UPDATE_PICTURES").as_deref() == Ok("1"))
        .then(|| repo().join("grafana/screenshots"))
}

async fn picture(page: &Page, name: &str) {
    // Let charts and panels settle before the picture.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let png = page.screenshot().await;
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "{name}: not a PNG");
    assert!(
        png.len() > 10_000,
        "{name}: a {}-byte picture is blank",
        png.len()
    );
    if let Some(dir) = screenshot_dir() {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), &png).unwrap();
    }
}

fn no_js_errors(page: &Page) {
    let errs = page.errors(EXPECTED_404);
    assert!(
        errs.is_empty(),
        "JavaScript errors in the console:\n{}",
        errs.join("\n")
    );
}

/// The DOM's graph: node ids and (source, target) edges.
async fn dom_graph(page: &Page) -> (BTreeSet<String>, BTreeSet<(String, String)>) {
    let v = page
        .eval(
            "({nodes: [...document.querySelectorAll('#graph .node')].map(n => n.dataset.id),
               edges: [...document.querySelectorAll('#graph .edge')].map(e => [e.dataset.source, e.dataset.target])})",
        )
        .await;
    let nodes = v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect();
    let edges = v["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e[0].as_str().unwrap().to_string(),
                e[1].as_str().unwrap().to_string(),
            )
        })
        .collect();
    (nodes, edges)
}

fn api_graph(g: &Value) -> (BTreeSet<String>, BTreeSet<(String, String)>) {
    let nodes = g["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["id"].as_str().unwrap().to_string())
        .collect();
    let edges = g["edges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["source"].as_str().unwrap().to_string(),
                e["target"].as_str().unwrap().to_string(),
            )
        })
        .filter(|(s, t)| s != t)
        .collect();
    (nodes, edges)
}

/// Waits for the home page's graph to be drawn at `at` (any T when None).
async fn graph_at(page: &Page, at: Option<&str>) -> String {
    let cond = match at {
        Some(t) => format!("(() => {{ const g = document.getElementById('graph'); return g && g.dataset.at === {} && g.dataset.at; }})()", json!(t)),
        None => "(() => { const g = document.getElementById('graph'); return g && g.dataset.at; })()".to_string(),
    };
    page.wait("the graph", &cond, WAIT)
        .await
        .as_str()
        .unwrap()
        .to_string()
}

/// Relative contrast of every visible text against its background, in the
/// page: returns the texts under 4.5:1.
const CONTRAST_JS: &str = r#"(() => {
  const lum = (c) => { const m = c.match(/[\d.]+/g).map(Number); const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); }; return [0.2126 * f(m[0]) + 0.7152 * f(m[1]) + 0.0722 * f(m[2]), m.length > 3 ? m[3] : 1]; };
  const bg = (el) => { for (let e = el; e; e = e.parentElement) { const c = getComputedStyle(e).backgroundColor; const m = c.match(/[\d.]+/g); if (m && (m.length < 4 || Number(m[3]) > 0.5)) return c; } return 'rgb(255,255,255)'; };
  const bad = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    const el = n.parentElement;
    if (!n.textContent.trim() || !el || el.closest('svg') || !el.getClientRects().length) continue;
    const st = getComputedStyle(el);
    if (st.visibility === 'hidden' || Number(st.opacity) < 0.5) continue;
    const [a] = lum(st.color); const [b] = lum(bg(el));
    const r = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    if (r < 4.5) bad.push(`${r.toFixed(2)} ${st.color} on ${bg(el)}: ${n.textContent.trim().slice(0, 40)}`);
  }
  return [...new Set(bad)].slice(0, 20);
})()"#;

async fn check_contrast(page: &Page, what: &str) {
    let bad = page.eval(CONTRAST_JS).await;
    assert_eq!(bad, json!([]), "{what}: text under 4.5:1 contrast");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ui_in_a_real_browser() {
    let Some(bin) = chromium() else { return };
    let browser = Browser::launch(&bin, 1440, 1000).await;

    // An empty store behind a token: the UI asks for the token once, sends
    // it as a bearer header and never in a URL; then the first-run page,
    // never a blank one.
    {
        let dir = tempfile::tempdir().unwrap();
        let token = "ui-test-token-5d1c";
        let ki = KubeInsight::start(
            dir.path(),
            &[
                ("KUBE_INSIGHT_TARGETS", "api".to_string()),
                ("KUBE_INSIGHT_API_TOKEN", token.to_string()),
            ],
            None,
        )
        .await;
        let page = browser.page().await;
        page.navigate(&format!("{}/", ki.api)).await;
        page.wait(
            "the token dialog",
            "document.getElementById('token-input')",
            WAIT,
        )
        .await;
        page.eval(&format!(
            "document.getElementById('token-input').value = {}",
            json!(token)
        ))
        .await;
        page.click(".token-form button[type=submit]").await;
        let sent = page.events("Network.requestWillBeSent");
        assert!(!sent.is_empty());
        for e in &sent {
            let url = e["params"]["request"]["url"].as_str().unwrap_or_default();
            assert!(!url.contains(token), "the token in a URL: {url}");
        }
        let text = page
            .wait("the first-run page", "document.querySelector('.onboarding') && document.querySelector('.onboarding').innerText", WAIT)
            .await;
        let text = text.as_str().unwrap();
        for want in [
            "No data yet",
            "kube-insight demo",
            "/ingest/prometheus/api/v1/write",
            "/ingest/fluent-bit",
            "KUBE_INSIGHT_KUBECONFIG",
        ] {
            assert!(
                text.contains(want),
                "the first-run page lacks {want:?}: {text}"
            );
        }
        let authed = page.events("Network.requestWillBeSent").iter().any(|e| {
            e["params"]["request"]["url"]
                .as_str()
                .unwrap_or_default()
                .contains("/api/v1/topology")
                && e["params"]["request"]["headers"]["Authorization"] == format!("Bearer {token}")
        });
        assert!(authed, "the API calls carry the bearer token");
        check_contrast(&page, "first run").await;
        picture(&page, "ui-first-run").await;
        let errs = page.errors(EXPECTED_401);
        assert!(
            errs.is_empty(),
            "JavaScript errors in the console:\n{}",
            errs.join("\n")
        );
    }

    let dir = tempfile::tempdir().unwrap();
    let FixtureCluster {
        ki,
        mock: _mock,
        day,
        client,
        filled_ms,
        ..
    } = FixtureCluster::start(dir.path()).await;
    let page = browser.page().await;

    // Home at the end of the fill (the shop's last phase; later the
    // fixture's flows go stale): the graph at T is the API's graph at T.
    let at = format_rfc3339_ms(filled_ms - 1_000);
    page.navigate(&format!("{}/#/topology?at={at}", ki.api))
        .await;
    graph_at(&page, Some(&at)).await;
    let want = api_query(
        &client,
        &ki.api,
        "/api/v1/topology",
        &[
            ("at", at.clone()),
            ("group", "workload".into()),
            ("limit", "2000".into()),
        ],
    )
    .await;
    let (want_nodes, want_edges) = api_graph(&want);
    assert!(
        want_nodes.len() >= 4 && !want_edges.is_empty(),
        "the fixture graph: {want}"
    );
    assert_eq!(
        dom_graph(&page).await,
        (want_nodes.clone(), want_edges.clone()),
        "the drawn graph at {at}"
    );
    let rows = page
        .eval("document.querySelectorAll('#node-table tbody tr').length")
        .await;
    assert_eq!(
        rows,
        json!(want_nodes.len()),
        "the node table mirrors the graph"
    );
    check_contrast(&page, "home").await;
    picture(&page, "ui-topology").await;

    // The scrubber, set to the first snapshot (the shop's phase A, before
    // its dependency changes): the graph is the one at that time, and it
    // differs from the one at T exactly as the topology diff says.
    // Just before the last dependency change (there is an earlier one, so
    // the graph then is not empty), else just after the first snapshot.
    let first = want["first"].as_str().unwrap().to_string();
    let dep = api_query(
        &client,
        &ki.api,
        "/api/v1/topology/changes",
        &[("from", first.clone()), ("to", at.clone())],
    )
    .await;
    let times: BTreeSet<i64> = dep
        .as_array()
        .unwrap()
        .iter()
        .map(|c| parse_time_ms(c["time"].as_str().unwrap()).unwrap())
        .collect();
    let before_ms = match (times.iter().next(), times.iter().next_back()) {
        (Some(a), Some(b)) if a < b => b - 1,
        _ => parse_time_ms(&first).unwrap() + 500,
    };
    let before = format_rfc3339_ms(before_ms);
    page.eval(&format!(
        "(() => {{ const s = document.querySelector('.scrub'); s.value = {before_ms}; s.dispatchEvent(new Event('input')); s.dispatchEvent(new Event('change')); return true; }})()"
    ))
    .await;
    graph_at(&page, Some(&before)).await;
    let then = api_query(
        &client,
        &ki.api,
        "/api/v1/topology",
        &[
            ("at", before.clone()),
            ("group", "workload".into()),
            ("limit", "2000".into()),
        ],
    )
    .await;
    let (then_nodes, then_edges) = api_graph(&then);
    let (dom_nodes, dom_edges) = dom_graph(&page).await;
    assert_eq!(
        (&dom_nodes, &dom_edges),
        (&then_nodes, &then_edges),
        "the drawn graph at {before}"
    );
    let diff = api_query(
        &client,
        &ki.api,
        "/api/v1/topology/diff",
        &[
            ("from", before.clone()),
            ("to", at.clone()),
            ("group", "workload".into()),
        ],
    )
    .await;
    let diff = diff.as_array().unwrap();
    assert!(
        diff.iter()
            .any(|r| r["type"] == "edge" && r["change"] != "changed"),
        "the shop's phases change edges: {diff:?}"
    );
    for r in diff {
        let id = |k: &str| r[k].as_str().unwrap_or_default().to_string();
        match (r["type"].as_str().unwrap(), r["change"].as_str().unwrap()) {
            ("node", "added") => assert!(
                !dom_nodes.contains(&id("id")) && want_nodes.contains(&id("id")),
                "{r}"
            ),
            ("node", "removed") => assert!(
                dom_nodes.contains(&id("id")) && !want_nodes.contains(&id("id")),
                "{r}"
            ),
            ("edge", "added") => assert!(
                !dom_edges.contains(&(id("source"), id("target"))),
                "{r} drawn before it appeared"
            ),
            ("edge", "removed") => assert!(
                dom_edges.contains(&(id("source"), id("target"))),
                "{r} not drawn before it was lost"
            ),
            _ => {}
        }
    }
    let track = page
        .eval("document.querySelectorAll('.track .tick').length")
        .await;
    assert!(
        track.as_u64().unwrap() > 0,
        "change markers on the scrubber's track"
    );
    // Nodes that stay keep their place while T moves.
    let place = "Object.fromEntries([...document.querySelectorAll('#graph .node')].map(n => [n.dataset.id, n.getAttribute('transform')]))";
    let place_before = page.eval(place).await;
    page.eval(&format!(
        "(() => {{ const s = document.querySelector('.scrub'); s.value = {}; s.dispatchEvent(new Event('input')); return true; }})()",
        parse_time_ms(&at).unwrap()
    ))
    .await;
    graph_at(&page, Some(&at)).await;
    let place_after = page.eval(place).await;
    for (id, t) in place_before.as_object().unwrap() {
        if let Some(t2) = place_after.get(id) {
            assert_eq!(t, t2, "node {id} moved while T moved");
        }
    }

    // Compare mode: the same diff, listed and drawn.
    page.navigate(&format!(
        "{}/#/topology?mode=diff&from={before}&to={at}",
        ki.api
    ))
    .await;
    page.wait("the diff table", "document.querySelector('#diff-table, .graph.diff') && document.querySelectorAll('#diff-table tbody tr').length", WAIT).await;
    let listed = page.eval("[...document.querySelectorAll('#diff-table tbody tr')].map(r => r.dataset.change + ' ' + r.dataset.id)").await;
    let mut listed: Vec<String> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect();
    let mut expected: Vec<String> = diff
        .iter()
        .map(|r| {
            format!(
                "{} {}",
                r["change"].as_str().unwrap(),
                r["id"].as_str().unwrap()
            )
        })
        .collect();
    listed.sort();
    expected.sort();
    assert_eq!(listed, expected, "the compare mode's rows");
    let colored = page.eval("document.querySelectorAll('#graph .edge-added, #graph .edge-removed, #graph .change-added, #graph .change-removed').length").await;
    assert!(
        colored.as_u64().unwrap() > 0,
        "the diff graph colours what appeared or was lost"
    );
    picture(&page, "ui-diff").await;

    // Keyboard: the node table walks with the arrows, Enter selects.
    page.navigate(&format!("{}/#/topology?at={at}", ki.api))
        .await;
    graph_at(&page, Some(&at)).await;
    page.eval("document.querySelector('#node-table tbody tr').focus()")
        .await;
    page.key("ArrowDown").await;
    let second = page.eval("document.activeElement.dataset.id").await;
    let listed_second = page
        .eval("document.querySelectorAll('#node-table tbody tr')[1].dataset.id")
        .await;
    assert_eq!(second, listed_second, "ArrowDown moves to the next node");
    page.key("Enter").await;
    page.wait("the selected node's details", &format!("document.querySelector('#detail h2') && document.querySelector('#graph .node.selected') && document.querySelector('#graph .node.selected').dataset.id === {second}"), WAIT).await;
    let outline = page
        .eval("getComputedStyle(document.activeElement).outlineStyle")
        .await;
    assert_ne!(outline, json!("none"), "the focused row shows its focus");

    // A click on the api node, then "Open workload".
    page.click("#graph .node[data-id=\"shop/api\"]").await;
    page.wait("the api node's details", "document.querySelector('#open-workload') && document.querySelector('#detail h2').textContent === 'api'", WAIT).await;
    let home_hash = page.eval("location.hash").await;
    page.click("#open-workload").await;
    page.wait("the workload page", "location.hash.startsWith('#/workload/shop/api') && document.querySelectorAll('#charts svg.chart').length >= 3", WAIT).await;
    // Let every chart load.
    page.wait(
        "every chart",
        "!document.querySelector('#charts .loading')",
        WAIT,
    )
    .await;
    let charts = page
        .eval("[...document.querySelectorAll('#charts svg.chart[data-query]')].filter(c => c.dataset.query).map(c => ({query: c.dataset.query, start: c.dataset.start, end: c.dataset.end, step: c.dataset.step, series: [...c.querySelectorAll('path.series')].map(p => p.dataset.values)}))")
        .await;
    let charts = charts.as_array().unwrap();
    assert!(
        charts.len() >= 3,
        "charts with data on the api workload: {charts:?}"
    );
    for c in charts {
        let q = c["query"].as_str().unwrap();
        let r = api_query(
            &client,
            &ki.api,
            "/prometheus/api/v1/query_range",
            &[
                ("query", q.to_string()),
                ("start", c["start"].as_str().unwrap().to_string()),
                ("end", c["end"].as_str().unwrap().to_string()),
                ("step", format!("{}s", c["step"].as_str().unwrap())),
            ],
        )
        .await;
        let mut want: Vec<String> = r["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                s["values"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| {
                        format!(
                            "{}:{}",
                            p[0],
                            p[1].as_str().unwrap().parse::<f64>().unwrap()
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .filter(|s| !s.is_empty())
            .collect();
        let mut got: Vec<String> = c["series"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                s.as_str()
                    .unwrap()
                    .split(',')
                    .map(|p| {
                        let (t, v) = p.split_once(':').unwrap();
                        format!(
                            "{}:{}",
                            t.parse::<f64>().unwrap(),
                            v.parse::<f64>().unwrap()
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .collect();
        want.sort();
        got.sort();
        assert!(!want.is_empty(), "PromQL has data for {q}");
        assert_eq!(got, want, "the chart's points for {q}");
    }
    page.wait(
        "the pods",
        "document.querySelector('#pods-table') && document.querySelector('#pods-table').innerText",
        WAIT,
    )
    .await;
    let pods = page
        .eval("document.querySelector('#pods-table').innerText")
        .await;
    assert!(
        pods.as_str().unwrap().contains(API_POD),
        "the api pod at T: {pods}"
    );
    page.wait("the suspects panel settles", "[...document.querySelectorAll('section.panel')].some(s => s.getAttribute('aria-label') === 'Suspects' && !s.querySelector('.loading'))", WAIT).await;
    let suspects = page
        .eval("[...document.querySelectorAll('section.panel')].find(s => s.getAttribute('aria-label') === 'Suspects').innerText")
        .await;
    let suspects = suspects.as_str().unwrap();
    assert!(
        suspects.contains("not available")
            || suspects.contains("No suspects")
            || page
                .eval("document.querySelectorAll('ol.suspects li').length")
                .await
                .as_u64()
                .unwrap()
                > 0,
        "the suspects panel: a list, none, or not available, never an error: {suspects}"
    );
    // The fixture's log lines are yesterday's: widen the logs' range.
    page.eval("(() => { const s = document.getElementById('log-range'); s.value = '168'; s.dispatchEvent(new Event('change')); return true; })()").await;
    page.wait("logs", "document.querySelectorAll('#logs li').length", WAIT)
        .await;

    // A change expands to its before/after diff.
    page.wait(
        "the change timeline",
        "document.querySelector('li.change[data-kind=\"Deployment\"] button')",
        WAIT,
    )
    .await;
    page.click("li.change[data-kind=\"Deployment\"] button")
        .await;
    let sbs = page.wait("the change's diff", "document.querySelector('li.change .change-detail table.sbs') && document.querySelector('li.change .change-detail table.sbs').innerText", WAIT).await;
    let sbs = sbs.as_str().unwrap();
    assert!(
        sbs.contains("registry/api:1.2") && sbs.contains("registry/api:1.1"),
        "the newest Deployment change shows 1.1 before, 1.2 after: {sbs}"
    );
    assert!(
        page.eval("document.querySelectorAll('li.change .sbs td.add').length")
            .await
            .as_u64()
            .unwrap()
            > 0
    );
    check_contrast(&page, "workload").await;
    page.eval("window.scrollTo(0, 0)").await;
    picture(&page, "ui-workload").await;
    let workload_hash = page.eval("location.hash").await;

    // The object's history, at a version.
    page.click("li.change .change-detail a[href^=\"#/object/\"]")
        .await;
    page.wait("the versions", "document.querySelectorAll('#versions-table tbody tr').length >= 2 && document.querySelector('#yaml')", WAIT).await;
    let versions = page
        .eval("document.querySelectorAll('#versions-table tbody tr').length")
        .await;
    let now = format_rfc3339_ms(now_ms() + 60_000);
    let all = api_query(
        &client,
        &ki.api,
        "/api/v1/changes",
        &[
            ("kind", "Deployment".into()),
            ("namespace", "shop".into()),
            ("from", format!("{day}T00:00:00Z")),
            ("to", now),
            ("events", "false".into()),
        ],
    )
    .await;
    let recorded: Vec<&Value> = all
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["name"] == "api" && c["category"] != "event")
        .collect();
    assert_eq!(
        versions,
        json!(recorded.len()),
        "one row per recorded version"
    );
    page.click("#versions-table button[data-view=\"0\"]").await;
    page.wait("version 1", "document.querySelector('#yaml-panel h2') && document.querySelector('#yaml-panel h2').textContent === 'YAML at version 1'", WAIT).await;
    let yaml = page.eval("document.querySelector('#yaml').innerText").await;
    let oldest = recorded
        .iter()
        .min_by_key(|c| parse_time_ms(c["time"].as_str().unwrap()).unwrap())
        .unwrap();
    let obj = api_query(
        &client,
        &ki.api,
        "/api/v1/objects/Deployment/shop/api",
        &[("at", oldest["time"].as_str().unwrap().to_string())],
    )
    .await;
    let image = obj["object"]["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap();
    assert!(
        yaml.as_str().unwrap().contains(&format!("image: {image}")),
        "the YAML at version 1 has {image}: {yaml}"
    );
    let diff_text = page
        .eval("document.querySelector('#diff-panel').innerText")
        .await;
    assert!(
        diff_text.as_str().unwrap().contains(image),
        "the diff names both versions: {diff_text}"
    );
    check_contrast(&page, "object history").await;
    picture(&page, "ui-object-history").await;
    let object_hash = page.eval("location.hash").await;

    // Back and forward.
    page.eval("history.back()").await;
    page.wait(
        "back to the object's first view",
        &format!("location.hash !== {object_hash} && location.hash.startsWith('#/object/')"),
        WAIT,
    )
    .await;
    page.eval("history.back()").await;
    page.wait(
        "back to the workload",
        &format!("location.hash === {workload_hash} && document.querySelector('#charts')"),
        WAIT,
    )
    .await;
    page.eval("history.back()").await;
    page.wait(
        "back to the topology",
        &format!("location.hash === {home_hash} && document.querySelector('#graph .node')"),
        WAIT,
    )
    .await;
    page.eval("history.forward()").await;
    page.wait(
        "forward to the workload",
        &format!("location.hash === {workload_hash} && document.querySelector('#charts')"),
        WAIT,
    )
    .await;

    // The pod page, from the workload's pods, and its container page (once
    // the page has settled: a click lands where the link is).
    page.wait(
        "the workload page settles",
        "document.querySelector('#pods-table') && !document.querySelector('#main .loading')",
        WAIT,
    )
    .await;
    page.click(&format!("#pods-table a[href*=\"/pod/shop/{API_POD}\"]"))
        .await;
    page.wait(
        "the pod page",
        &format!("location.hash.startsWith('#/pod/shop/{API_POD}') && document.querySelectorAll('#charts svg.chart').length >= 3 && document.querySelector('#pods-table')"),
        WAIT,
    )
    .await;
    page.wait(
        "the pod page settles",
        "!document.querySelector('#main .loading')",
        WAIT,
    )
    .await;
    page.click("#pods-table td:nth-child(2) a").await;
    page.wait(
        "the container page",
        &format!("location.hash.startsWith('#/container/shop/{API_POD}/') && document.querySelectorAll('#charts svg.chart').length >= 2"),
        WAIT,
    )
    .await;
    let cpu = page
        .eval("document.querySelector('#charts svg.chart').dataset.query")
        .await;
    assert!(
        cpu.as_str().unwrap().contains("container=\""),
        "the container page selects its container: {cpu}"
    );

    no_js_errors(&page);
    let missing = page.errors(&[]);
    eprintln!(
        "expected failed requests (shown as states): {}",
        missing.len()
    );
}

// ---------------------------------------------------------------------------
// The benchmark: a 300-node graph (flows between 300 workloads in 10
// namespaces), its first render and scrub steps, measured in the page.

fn flows(n: usize, t_ms: i64, phase: usize) -> Vec<TimeSeries> {
    let mut out = Vec::new();
    for i in 0..n {
        // Each workload calls the next two, and a phase shifts a few edges.
        for k in [1usize, 7 + phase] {
            let j = (i + k) % n;
            let l = Labels::from_pairs([
                ("__name__", "beyla_network_flow_bytes_total"),
                ("job", "beyla"),
                ("k8s_src_namespace", &format!("ns{:02}", i % 10) as &str),
                ("k8s_src_owner_name", &format!("svc{i:03}")),
                ("k8s_src_owner_type", "Deployment"),
                ("k8s_dst_namespace", &format!("ns{:02}", j % 10)),
                ("k8s_dst_owner_name", &format!("svc{j:03}")),
                ("k8s_dst_owner_type", "Deployment"),
            ]);
            out.push(TimeSeries::new(
                l,
                vec![Sample::new(t_ms, (t_ms / 1000) as f64 * (i + 1) as f64)],
            ));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a benchmark: cargo test -p kube-insight --test e2e_ui -- --ignored --nocapture"]
async fn ui_render_benchmark() {
    let Some(bin) = chromium() else { return };
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("KUBE_INSIGHT_TARGETS", "all".to_string()),
        ("KUBE_INSIGHT_TOPOLOGY_INTERVAL", "1s".to_string()),
        ("KUBE_INSIGHT_TOPOLOGY_WINDOW", "4s".to_string()),
    ];
    let ki = KubeInsight::start(dir.path(), &env, None).await;
    let client = reqwest::Client::new();
    for phase in 0..6 {
        for _ in 0..4 {
            remote_write(&client, &ki, &flows(300, now_ms(), phase)).await;
            tokio::time::sleep(Duration::from_millis(700)).await;
        }
    }
    let g = api_query(
        &client,
        &ki.api,
        "/api/v1/topology",
        &[("group", "workload".into()), ("limit", "2000".into())],
    )
    .await;
    let nodes = g["nodes"].as_array().unwrap().len();
    let browser = Browser::launch(&bin, 1440, 1000).await;
    let page = browser.page().await;
    page.call("Performance.enable", json!({})).await;
    let mut firsts = Vec::new();
    for _ in 0..5 {
        page.navigate(&format!("{}/#/topology?open=*", ki.api))
            .await;
        let r = page
            .wait(
                "the first render",
                "window.KI && KI.perf.renders.find(r => r.kind === 'first')",
                WAIT,
            )
            .await;
        firsts.push(r["ms"].as_f64().unwrap());
        page.navigate("about:blank").await;
    }
    page.navigate(&format!("{}/#/topology?open=*", ki.api))
        .await;
    page.wait(
        "the first render",
        "window.KI && KI.perf.renders.find(r => r.kind === 'first')",
        WAIT,
    )
    .await;
    let (first_ms, last_ms) = (
        parse_time_ms(g["first"].as_str().unwrap()).unwrap(),
        parse_time_ms(g["last"].as_str().unwrap()).unwrap(),
    );
    let steps = 20;
    for k in 0..steps {
        let t = first_ms + (last_ms - first_ms) * k / steps;
        page.eval(&format!("(() => {{ const s = document.querySelector('.scrub'); s.value = {t}; s.dispatchEvent(new Event('input')); return true; }})()")).await;
        page.wait(
            "the scrub step",
            &format!(
                "KI.perf.renders.filter(r => r.kind === 'scrub').length >= {}",
                k + 1
            ),
            WAIT,
        )
        .await;
    }
    // Each series sorted, for its median and maximum.
    let sorted = |v: Value| {
        let mut x: Vec<f64> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        x.sort_by(|a, b| a.partial_cmp(b).unwrap());
        x
    };
    let scrub = |field: &str| {
        format!("KI.perf.renders.filter(r => r.kind === 'scrub').map(r => r.{field})")
    };
    let scrubs = sorted(page.eval(&scrub("ms")).await);
    let draws = sorted(page.eval(&scrub("drawMs")).await);
    let fetches = sorted(page.eval(&scrub("fetchMs")).await);
    let firsts = sorted(json!(firsts));
    let first = page
        .eval("KI.perf.renders.find(r => r.kind === 'first')")
        .await;
    let drawn = page
        .eval("document.querySelectorAll('#graph .node').length")
        .await;
    let metrics = page.call("Performance.getMetrics", json!({})).await;
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mid_max = |x: &[f64]| format!("median {:.0}, max {:.0}", x[x.len() / 2], x[x.len() - 1]);
    let assets = kube_insight_ui_assets_bytes(&client, &ki.api).await;
    println!("ui bench: graph of {nodes} nodes ({drawn} drawn), assets {assets} bytes");
    println!(
        "ui bench: first render ms (5 loads, fetch + draw + paint): {}",
        mid_max(&firsts)
    );
    println!(
        "ui bench: scrub step ms ({} steps, fetch + draw + paint): {}, p90 {:.0}",
        scrubs.len(),
        mid_max(&scrubs),
        scrubs[scrubs.len() * 9 / 10]
    );
    println!(
        "ui bench: scrub step, the API's answers ms: {}",
        mid_max(&fetches)
    );
    println!(
        "ui bench: scrub step, drawing (DOM) ms: {}",
        mid_max(&draws)
    );
    println!(
        "ui bench: last load: first render {:.0} ms after the page started ({:.0} ms after navigation)",
        first["ms"].as_f64().unwrap(),
        first["sinceNavigation"].as_f64().unwrap()
    );
    println!("ui bench: load average {}", load.trim());
    let m = |name: &str| {
        metrics["metrics"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == name)
            .map(|x| x["value"].clone())
            .unwrap_or(Value::Null)
    };
    println!("ui bench: Performance.getMetrics ScriptDuration {} s, LayoutDuration {} s, JSHeapUsedSize {} B", m("ScriptDuration"), m("LayoutDuration"), m("JSHeapUsedSize"));
    no_js_errors(&page);
}

/// The assets' total size, as served.
async fn kube_insight_ui_assets_bytes(client: &reqwest::Client, api: &str) -> usize {
    let mut total = 0;
    for p in [
        "/ui/index.html",
        "/ui/app.css",
        "/ui/core.js",
        "/ui/graph.js",
        "/ui/chart.js",
        "/ui/pages.js",
        "/ui/favicon.svg",
    ] {
        total += client
            .get(format!("{api}{p}"))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .len();
    }
    total
}
