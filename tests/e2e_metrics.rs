//! End to end against a real Prometheus (Debian's `prometheus` and
//! `prometheus-node-exporter`, on loopback ephemeral ports):
//! - remote write from Prometheus into kube-insight, with kube-insight stopped
//!   for a while in the middle: Prometheus' WAL replay must fill the gap;
//! - federation: kube-insight pulls Prometheus' `/federate`.
//!
//! In both, series read back through kube-insight's Prometheus-compatible API
//! are compared with Prometheus' own answer to the same query, timestamp by
//! timestamp and value by value (kube-insight adds a `cluster` label to every
//! series; it is ignored in the comparison).

// Tests and benches may unwrap: a panic is a failing run with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;
use support::*;

const IGNORE: &[&str] = &["cluster"];

fn now_s() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// Raw samples of `selector` in (start, end] from both sides, as a range-vector
/// instant query.
async fn raw(base: &str, prefix: &str, selector: &str, start: f64, end: f64) -> Vec<Series> {
    let window = (end - start).floor() as i64;
    let data = prom_api(
        base,
        &format!("{prefix}/api/v1/query"),
        &[
            ("query", format!("{selector}[{window}s]")),
            ("time", format!("{end:.3}")),
        ],
    )
    .await;
    assert_eq!(data["resultType"], "matrix", "{data}");
    normalise(&data, IGNORE)
}

async fn range(
    base: &str,
    prefix: &str,
    query: &str,
    start: f64,
    end: f64,
    step: &str,
) -> Vec<Series> {
    let data = prom_api(
        base,
        &format!("{prefix}/api/v1/query_range"),
        &[
            ("query", query.to_string()),
            ("start", format!("{start:.3}")),
            ("end", format!("{end:.3}")),
            ("step", step.to_string()),
        ],
    )
    .await;
    assert_eq!(data["resultType"], "matrix", "{data}");
    normalise(&data, IGNORE)
}

fn assert_same(what: &str, ours: &[Series], theirs: &[Series]) {
    assert!(
        !theirs.is_empty(),
        "{what}: Prometheus returned nothing; the test proves nothing"
    );
    let our_labels: Vec<_> = ours.iter().map(|s| &s.0).collect();
    let their_labels: Vec<_> = theirs.iter().map(|s| &s.0).collect();
    assert_eq!(our_labels, their_labels, "{what}: series differ");
    for (o, t) in ours.iter().zip(theirs) {
        assert_eq!(
            o.1.len(),
            t.1.len(),
            "{what} {:?}: {} samples in kube-insight, {} in Prometheus",
            o.0,
            o.1.len(),
            t.1.len()
        );
        for (a, b) in o.1.iter().zip(&t.1) {
            assert!(
                (a.0 - b.0).abs() < 1e-6,
                "{what} {:?}: timestamp {} vs {}",
                o.0,
                a.0,
                b.0
            );
            assert_eq!(
                a.1, b.1,
                "{what} {:?} at {}: value {} vs {}",
                o.0, a.0, a.1, b.1
            );
        }
    }
}

/// The newest timestamp of `up{job=...}` that kube-insight has (from the
/// raw samples of the last 10 minutes).
async fn newest(ki: &KubeInsight, job: &str) -> Option<f64> {
    let client = reqwest::Client::new();
    let r = client
        .get(format!("{}/prometheus/api/v1/query", ki.api))
        .query(&[
            ("query", format!("up{{job=\"{job}\"}}[10m]")),
            ("time", format!("{:.3}", now_s())),
        ])
        .send()
        .await
        .ok()?;
    let v: serde_json::Value = r.json().await.ok()?;
    v["data"]["result"][0]["values"].as_array()?.last()?[0].as_f64()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_write_from_real_prometheus_matches_and_wal_replay_fills_an_outage() {
    let Some(prom_bin) = tool("prometheus", "apt-get install -y prometheus") else {
        return;
    };
    let Some(ne_bin) = tool(
        "prometheus-node-exporter",
        "apt-get install -y prometheus-node-exporter",
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let ki_dir = dir.path().join("ki");
    let prom_dir = dir.path().join("prom");
    std::fs::create_dir_all(&ki_dir).unwrap();
    std::fs::create_dir_all(&prom_dir).unwrap();

    let env = [("KUBE_INSIGHT_TARGETS", "metrics,api".to_string())];
    let mut ki = KubeInsight::start(&ki_dir, &env, None).await;
    let ne = NodeExporter::start(&ne_bin, &ki_dir).await;
    let config = format!(
        r#"
global:
  scrape_interval: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: prometheus
    static_configs: [{{targets: ["127.0.0.1:{{PORT}}"]}}]
  - job_name: node
    static_configs: [{{targets: ["{ne}"]}}]
remote_write:
  - url: {ingest}/ingest/prometheus/api/v1/write
    queue_config: {{batch_send_deadline: 1s, min_backoff: 100ms, max_backoff: 2s}}
"#,
        ne = ne.addr,
        ingest = ki.ingest
    );
    let prom = Prometheus::start(&prom_bin, &prom_dir, &config).await;
    let started = now_s();

    // Data flows.
    eventually(
        "first samples in kube-insight",
        Duration::from_secs(60),
        || async { newest(&ki, "node").await.filter(|t| *t > started) },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(5)).await;

    // An outage: kube-insight stops; Prometheus keeps scraping into its WAL.
    let ports = ki.ports;
    ki.proc.stop();
    let outage_start = now_s();
    tokio::time::sleep(Duration::from_secs(8)).await;
    let outage_end = now_s();
    let ki = KubeInsight::start(&ki_dir, &env, Some(ports)).await;

    // Prometheus replays the outage and catches up.
    let end = outage_end + 6.0;
    eventually(
        "Prometheus to catch up after the outage",
        Duration::from_secs(90),
        || async { newest(&ki, "node").await.filter(|t| *t >= end + 1.0) },
    )
    .await;
    let start = started + 1.0;

    // The outage is filled: no hole longer than a few scrape intervals.
    let up = raw(&ki.api, "/prometheus", "up{job=\"node\"}", start, end).await;
    assert_eq!(up.len(), 1, "{up:?}");
    let ts: Vec<f64> = up[0].1.iter().map(|p| p.0).collect();
    let in_outage = ts
        .iter()
        .filter(|t| **t > outage_start && **t < outage_end)
        .count();
    assert!(
        in_outage >= 5,
        "only {in_outage} samples inside the {:.0}s outage: {ts:?}",
        outage_end - outage_start
    );
    let max_gap = ts.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max);
    assert!(max_gap < 3.5, "a {max_gap}s hole in the replayed samples");

    // Raw samples, identical.
    for sel in [
        "up",
        "node_cpu_seconds_total",
        "node_memory_MemAvailable_bytes",
        "prometheus_http_requests_total",
        "scrape_duration_seconds",
        "node_network_receive_bytes_total",
    ] {
        let ours = raw(&ki.api, "/prometheus", sel, start, end).await;
        let theirs = raw(&prom.url, "", sel, start, end).await;
        assert_same(&format!("raw {sel}"), &ours, &theirs);
    }
    // query_range answers, identical.
    for q in [
        "up",
        "node_memory_MemAvailable_bytes",
        "node_load1",
        "prometheus_tsdb_head_series",
    ] {
        for step in ["1s", "7s"] {
            let ours = range(&ki.api, "/prometheus", q, start, end, step).await;
            let theirs = range(&prom.url, "", q, start, end, step).await;
            assert_same(&format!("query_range {q} step {step}"), &ours, &theirs);
        }
    }
    drop(prom);
    drop(ne);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn federation_from_real_prometheus_matches_its_answers() {
    let Some(prom_bin) = tool("prometheus", "apt-get install -y prometheus") else {
        return;
    };
    let Some(ne_bin) = tool(
        "prometheus-node-exporter",
        "apt-get install -y prometheus-node-exporter",
    ) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let prom_dir = dir.path().join("prom");
    let ki_dir = dir.path().join("ki");
    std::fs::create_dir_all(&ki_dir).unwrap();
    std::fs::create_dir_all(&prom_dir).unwrap();
    let ne = NodeExporter::start(&ne_bin, &ki_dir).await;
    // Scrapes every 3 s, pulled every 1 s: every scraped sample is federated.
    let config = format!(
        r#"
global:
  scrape_interval: 3s
scrape_configs:
  - job_name: node
    static_configs: [{{targets: ["{ne}"]}}]
"#,
        ne = ne.addr
    );
    let prom = Prometheus::start(&prom_bin, &prom_dir, &config).await;
    let env = [
        ("KUBE_INSIGHT_TARGETS", "metrics,api".to_string()),
        ("KUBE_INSIGHT_PROMETHEUS_URL", prom.url.clone()),
        ("KUBE_INSIGHT_METRICS_INTERVAL", "1s".to_string()),
        ("KUBE_INSIGHT_METRICS_MATCH", "{job=\"node\"}".to_string()),
    ];
    let ki = KubeInsight::start(&ki_dir, &env, None).await;
    let first = eventually(
        "first federated samples",
        Duration::from_secs(60),
        || async { newest(&ki, "node").await },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(20)).await;
    // From the first federated sample on, both sides hold the same samples.
    let start = first;
    let end = now_s() - 2.0;
    for sel in [
        "up{job=\"node\"}",
        "node_cpu_seconds_total",
        "node_memory_MemAvailable_bytes",
        "node_scrape_collector_success",
    ] {
        let ours = raw(&ki.api, "/prometheus", sel, start, end).await;
        let theirs = raw(&prom.url, "", sel, start, end).await;
        assert_same(&format!("raw {sel}"), &ours, &theirs);
    }
    for q in ["node_memory_MemAvailable_bytes", "node_load1", "up"] {
        let ours = range(&ki.api, "/prometheus", q, start + 0.5, end, "1s").await;
        let theirs = range(
            &prom.url,
            "",
            &format!("{q}{{job=\"node\"}}"),
            start + 0.5,
            end,
            "1s",
        )
        .await;
        assert_same(&format!("query_range {q}"), &ours, &theirs);
    }
    // Re-sent samples (federation repeats the latest sample on every pull) are stored once.
    let metrics = reqwest::get(format!("{}/metrics", ki.ops))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .contains("kube_insight_pulls_total{component=\"prometheus_federate\",outcome=\"ok\"}"),
        "{metrics}"
    );
}

/// The series cap on the ops listener: `/metrics` shows the cap and, per
/// cluster, the series counting toward it (written within the head grace),
/// and the log says which cluster is near it. No Prometheus needed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_series_cap_shows_on_ops_metrics_and_in_the_log() {
    use kube_insight_core::{Labels, Sample, TimeSeries};
    use kube_insight_sources::prometheus::remote_write::encode;
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("KUBE_INSIGHT_TARGETS", "metrics".to_string()),
        ("KUBE_INSIGHT_CLUSTER", "edge-1".to_string()),
        ("KUBE_INSIGHT_MAX_SERIES", "4".to_string()),
    ];
    let mut ki = KubeInsight::start(dir.path(), &env, None).await;
    let t = (now_s() * 1000.0) as i64;
    let series: Vec<TimeSeries> = (0..5)
        .map(|i| {
            let pod = format!("p{i}");
            TimeSeries::new(
                Labels::from_pairs([("__name__", "up"), ("pod", pod.as_str())]),
                vec![Sample::new(t, 1.0)],
            )
        })
        .collect();
    let r = reqwest::Client::new()
        .post(format!("{}/ingest/prometheus/api/v1/write", ki.ingest))
        .header("content-encoding", "snappy")
        .body(encode(&series, &[]).unwrap())
        .send()
        .await
        .unwrap();
    // One of the five is over the cap: 400 (not retried), the others stored.
    assert_eq!(r.status(), 400);
    let body = r.text().await.unwrap();
    assert!(body.contains("1 new series refused"), "{body}");
    // The gauges are refreshed once a minute, at once after a start: restart
    // (the head is rebuilt from the WAL, its series written just now).
    let ports = ki.ports;
    ki.proc.stop();
    ki = KubeInsight::start(dir.path(), &env, Some(ports)).await;
    let metrics = eventually("the series cap gauges", Duration::from_secs(30), || {
        let url = format!("{}/metrics", ki.ops);
        async move {
            let text = reqwest::get(url).await.ok()?.text().await.ok()?;
            text.contains("kube_insight_series_counted{cluster=\"edge-1\"} 4")
                .then_some(text)
        }
    })
    .await;
    assert!(metrics.contains("kube_insight_series_cap 4"), "{metrics}");
    eventually("the near-cap log line", Duration::from_secs(10), || {
        let log = ki.proc.log_text();
        async move { log.contains("near its series cap").then_some(()) }
    })
    .await;
}

/// Two clusters pushed with their ingest tokens into one `kube-insight run`,
/// read with the tokens of `KUBE_INSIGHT_API_TOKENS_FILE`: a scoped reader
/// sees its cluster only (clusters list, PromQL, 403 for the other), `*`
/// sees both, no token is 401.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_tokens_file_scopes_readers_to_their_clusters() {
    use kube_insight_core::{Labels, Sample, TimeSeries};
    use kube_insight_sources::prometheus::remote_write::encode;
    let dir = tempfile::tempdir().unwrap();
    let ingest = dir.path().join("ingest-tokens");
    std::fs::write(
        &ingest,
        "ingest-token-eu-000001 eu\ningest-token-us-000001 us\n",
    )
    .unwrap();
    let api = dir.path().join("api-tokens");
    std::fs::write(
        &api,
        "# readers\nreader-eu-0000000001 eu\n\nreader-all-000000001 *\n",
    )
    .unwrap();
    let env = [
        ("KUBE_INSIGHT_TARGETS", "metrics,api".to_string()),
        (
            "KUBE_INSIGHT_INGEST_TOKENS_FILE",
            ingest.display().to_string(),
        ),
        ("KUBE_INSIGHT_API_TOKENS_FILE", api.display().to_string()),
    ];
    let ki = KubeInsight::start(dir.path(), &env, None).await;
    let client = reqwest::Client::new();
    let t = (now_s() * 1000.0) as i64;
    for token in ["ingest-token-eu-000001", "ingest-token-us-000001"] {
        let series = vec![TimeSeries::new(
            Labels::from_pairs([("__name__", "up"), ("job", "x")]),
            vec![Sample::new(t, 1.0)],
        )];
        let r = client
            .post(format!("{}/ingest/prometheus/api/v1/write", ki.ingest))
            .bearer_auth(token)
            .header("content-encoding", "snappy")
            .body(encode(&series, &[]).unwrap())
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.status());
    }
    let get = |path: String, token: Option<&'static str>| {
        let mut r = client.get(format!("{}{path}", ki.api));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        async move {
            let r = r.send().await.unwrap();
            let status = r.status().as_u16();
            (
                status,
                r.json::<serde_json::Value>().await.unwrap_or_default(),
            )
        }
    };
    let names = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|r| r["cluster"].as_str().unwrap().to_string())
            .collect()
    };
    let (s, v) = get("/api/v1/clusters".into(), Some("reader-all-000000001")).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(names(&v), vec!["eu", "us"]);
    let (_, v) = get("/api/v1/clusters".into(), Some("reader-eu-0000000001")).await;
    assert_eq!(names(&v), vec!["eu"]);
    let (s, _) = get("/api/v1/clusters".into(), None).await;
    assert_eq!(s, 401);
    let at = t as f64 / 1000.0;
    let (s, v) = get(
        format!("/prometheus/api/v1/query?query=up&time={at}"),
        Some("reader-eu-0000000001"),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let result = v["data"]["result"].as_array().unwrap();
    assert_eq!(result.len(), 1, "{v}");
    assert_eq!(result[0]["metric"]["cluster"], "eu");
    let (s, v) = get(
        format!("/prometheus/api/v1/query?query=up%7Bcluster%3D%22us%22%7D&time={at}"),
        Some("reader-eu-0000000001"),
    )
    .await;
    assert_eq!(s, 403, "{v}");
    assert!(v["error"].as_str().unwrap().contains("\"us\""), "{v}");
    let (_, v) = get(
        format!("/prometheus/api/v1/query?query=up&time={at}"),
        Some("reader-all-000000001"),
    )
    .await;
    assert_eq!(v["data"]["result"].as_array().unwrap().len(), 2, "{v}");
}
