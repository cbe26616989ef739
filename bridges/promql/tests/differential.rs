//! Differential test against a real Prometheus.
//!
//! Runs only when `KUBE_INSIGHT_TEST_PROMETHEUS_BIN` names a prometheus
//! binary (Debian 12: `/usr/bin/prometheus`, 2.42). `promtool` is taken from
//! `KUBE_INSIGHT_TEST_PROMTOOL_BIN`, else from the prometheus binary's
//! directory. Without the binary the test prints "skipped: …", unless `CI` is
//! set, where it fails.
//!
//! It builds TSDB blocks from `tests/corpus/synthetic.om` with `promtool tsdb
//! create-blocks-from openmetrics`, starts Prometheus on 127.0.0.1 (ephemeral
//! port) over them, loads the same file into a `MemoryQuerier`, and runs every
//! query of `tests/corpus/queries.txt` through `/api/v1/query` (several
//! times) and `/api/v1/query_range` (several ranges) and through our engine,
//! comparing: same result type, same series (label sets), same timestamps,
//! values within 1e-9 relative (NaN == NaN), and errors on both sides with
//! the same `errorType`.
//!
//! `KUBE_INSIGHT_TEST_DIFF_VERBOSE=1` prints every mismatch in full.

// Test helpers may unwrap: a panic is a failing test with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod diff_support;

use diff_support::{corpus_dir, prometheus_bin, start_prometheus, Call, Outcome};
use kube_insight_promql::{parse_openmetrics, Compat, Engine, EngineOptions, MemoryQuerier};

fn ours_outcome(
    r: Result<kube_insight_promql::QueryResult, kube_insight_promql::PromqlError>,
) -> (Outcome, Option<String>) {
    match r {
        Ok(v) => (
            Outcome::Data(serde_json::to_value(&v).unwrap()),
            Some(serde_json::to_string(&v).unwrap()),
        ),
        Err(e) => (
            Outcome::Error(e.error_type().as_str().to_string(), e.to_string()),
            None,
        ),
    }
}

#[test]
fn differential_against_prometheus() {
    let Some(bin) = prometheus_bin() else { return };
    let prom = start_prometheus(&bin);
    let text = std::fs::read_to_string(corpus_dir().join("synthetic.om")).unwrap();
    let querier = MemoryQuerier::new(parse_openmetrics(&text).unwrap());
    let compat = match std::env::var("KUBE_INSIGHT_TEST_DIFF_COMPAT").as_deref() {
        Ok("3") => Compat::Prometheus3,
        _ => Compat::Prometheus2,
    };
    let engine = Engine::new(EngineOptions {
        compat,
        ..Default::default()
    });
    let rt = tokio::runtime::Runtime::new().unwrap();
    diff_support::run("engine over memory", prom.port, |call| match call {
        Call::Instant { query, time_ms } => {
            ours_outcome(rt.block_on(engine.query(&querier, query, *time_ms, None)))
        }
        Call::Range {
            query,
            start_ms,
            end_ms,
            step_ms,
        } => ours_outcome(
            rt.block_on(engine.query_range(&querier, query, *start_ms, *end_ms, *step_ms, None)),
        ),
    });
}

/// `/api/v1/format_query` over every corpus query that parses on both sides.
#[test]
fn format_query_matches_prometheus() {
    let Some(bin) = prometheus_bin() else { return };
    let prom = start_prometheus(&bin);
    let (mut same, mut n, mut diffs) = (0, 0, Vec::new());
    for q in diff_support::load_queries() {
        let (code, body) = diff_support::http_get(
            prom.port,
            &format!("/api/v1/format_query?query={}", diff_support::enc(&q)),
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let ours = kube_insight_promql::format_query(&q);
        if code != 200 {
            continue;
        }
        let Ok(ours) = ours else { continue };
        n += 1;
        if v["data"].as_str() == Some(ours.as_str()) {
            same += 1;
        } else {
            diffs.push(format!(
                "{q:?}: prometheus {:?} vs ours {ours:?}",
                v["data"]
            ));
        }
    }
    println!("format_query: {same}/{n} identical to prometheus'");
    for d in &diffs {
        println!("FORMAT {d}");
    }
    assert!(
        diffs.is_empty(),
        "{} format_query answers differ",
        diffs.len()
    );
}
