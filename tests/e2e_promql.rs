//! The PromQL differential test through the whole stack: the corpus'
//! synthetic series are pushed into a running `kube-insight` by remote write,
//! stored in SQLite, and every corpus query is answered by kube-insight's
//! `/prometheus/api/v1/{query,query_range}` and compared with a real
//! Prometheus over TSDB blocks built from the same file by promtool.
//!
//! kube-insight adds a `cluster` label to every series; it is removed from
//! kube-insight's answers before the comparison.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../bridges/promql/tests/diff_support/mod.rs"]
mod diff_support;
mod support;

use diff_support::{
    corpus_dir, enc, http_get, prometheus_bin, start_prometheus, ts_param, Call, Outcome,
};
use kube_insight_sources::prometheus::remote_write::encode;
use serde_json::Value;
use support::KubeInsight;

fn strip_cluster(mut data: Value) -> Value {
    if data["resultType"] != "vector" && data["resultType"] != "matrix" {
        return data;
    }
    if let Some(rows) = data["result"].as_array_mut() {
        for r in rows {
            if let Some(m) = r["metric"].as_object_mut() {
                m.remove("cluster");
            }
        }
    }
    data
}

/// Removes the `cluster="…"` label from the label sets an error message
/// quotes (`{cluster="x", pod="p1"}` → `{pod="p1"}`).
fn strip_cluster_text(msg: &str) -> String {
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg;
    while let Some(i) = rest.find("cluster=\"") {
        let (head, tail) = rest.split_at(i);
        let Some(end) = tail["cluster=\"".len()..].find('"') else {
            break;
        };
        let after = &tail["cluster=\"".len() + end + 1..];
        if let Some(a) = after.strip_prefix(", ") {
            out.push_str(head);
            rest = a;
        } else if let Some(h) = head.strip_suffix(", ") {
            out.push_str(h);
            rest = after;
        } else {
            out.push_str(head);
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promql_corpus_through_the_store_matches_prometheus() {
    let Some(bin) = prometheus_bin() else { return };
    let prom = tokio::task::block_in_place(|| start_prometheus(&bin));
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("KUBE_INSIGHT_TARGETS", "metrics,api".to_string()),
        // The corpus is from 2023: keep it.
        ("KUBE_INSIGHT_RETENTION_METRICS", "36500d".to_string()),
    ];
    let mut ki = KubeInsight::start(dir.path(), &env, None).await;

    let text = std::fs::read_to_string(corpus_dir().join("synthetic.om")).unwrap();
    let series = kube_insight_promql::parse_openmetrics(&text).unwrap();
    let samples: usize = series.iter().map(|s| s.samples.len()).sum();
    let client = reqwest::Client::new();
    for chunk in series.chunks(10) {
        let body = encode(chunk, &[]).unwrap();
        let r = client
            .post(format!("{}/ingest/prometheus/api/v1/write", ki.ingest))
            .header("content-encoding", "snappy")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204, "{}", r.text().await.unwrap());
    }
    println!("pushed {} series, {samples} samples", series.len());

    // Twice: first from the head as written, then after a restart, which
    // replays the store's WAL and compacts the 2023 windows into immutable
    // chunks at start-up (the first maintenance pass).
    for round in ["head", "after restart and compaction"] {
        if round != "head" {
            let ports = ki.ports;
            ki.proc.stop();
            ki = KubeInsight::start(dir.path(), &env, Some(ports)).await;
            let log = support::eventually(
                "the start-up compaction",
                std::time::Duration::from_secs(30),
                || {
                    let text = ki.proc.log_text();
                    async move {
                        text.lines()
                            .rev()
                            .find(|l| {
                                l.contains("store maintenance") && l.contains("chunks_written")
                            })
                            .map(str::to_string)
                    }
                },
            )
            .await;
            assert!(
                !log.contains("chunks_written=0"),
                "nothing was compacted: {log}"
            );
        }
        let api_port = ki.ports.0;
        let label = format!("kube-insight over sqlite via http, {round}");
        tokio::task::block_in_place(|| {
            diff_support::run(&label, prom.port, |call| ours(api_port, call));
        });
    }
}

fn ours(api_port: u16, call: &Call) -> (Outcome, Option<String>) {
    let path = match call {
        Call::Instant { query, time_ms } => {
            format!(
                "/prometheus/api/v1/query?query={}&time={}",
                enc(query),
                ts_param(*time_ms)
            )
        }
        Call::Range {
            query,
            start_ms,
            end_ms,
            step_ms,
        } => format!(
            "/prometheus/api/v1/query_range?query={}&start={}&end={}&step={}",
            enc(query),
            ts_param(*start_ms),
            ts_param(*end_ms),
            ts_param(*step_ms)
        ),
    };
    let (_, body) = http_get(api_port, &path).unwrap();
    let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"));
    if v["status"] == "success" {
        (Outcome::Data(strip_cluster(v["data"].clone())), None)
    } else {
        (
            Outcome::Error(
                v["errorType"].as_str().unwrap_or("").to_string(),
                strip_cluster_text(v["error"].as_str().unwrap_or("")),
            ),
            None,
        )
    }
}
