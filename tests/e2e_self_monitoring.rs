//! kube-insight's own `/metrics`, as the alert rules of
//! `manifests/servers/files/alerts.yaml` read them: the record counters carry
//! the pushing cluster (from its token) and the target, and the gauges the
//! alerts compare against (build, series cap, queue capacity, schema
//! versions, collector leadership) are exported by a real `kube-insight run`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is a failure

mod support;

use std::time::Duration;
use support::*;

const TOKEN: &str = "0123456789abcdef0123456789abcdef";
const PROD_TOKEN: &str = "fedcba9876543210fedcba9876543210";

/// One Fluent Bit record of the `shop/api` container, now.
fn record() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    serde_json::json!({
        "date": now,
        "log": "GET /checkout 500",
        "stream": "stdout",
        "kubernetes": {
            "pod_name": "api-5f6d7c8b9-qwz7p",
            "namespace_name": "shop",
            "container_name": "api",
            "pod_id": "7d0c2c4e-5b6a-4f3e-9d8c-1a2b3c4d5e6f"
        }
    })
    .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ops_metrics_carry_the_cluster_and_what_the_alerts_compare() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("KUBE_INSIGHT_TARGETS", "logs,events,api".to_string()),
        ("KUBE_INSIGHT_CLUSTER", "prod-eu-1".to_string()),
        ("KUBE_INSIGHT_INGEST_TOKEN", TOKEN.to_string()),
        ("KUBE_INSIGHT_MAX_SERIES", "12345".to_string()),
        ("KUBE_INSIGHT_INGEST_MAX_IN_FLIGHT", "7".to_string()),
    ];
    let ki = KubeInsight::start(dir.path(), &env, None).await;
    let client = reqwest::Client::new();
    let r = client
        .post(format!("{}/ingest/fluent-bit", ki.ingest))
        .bearer_auth(TOKEN)
        .header("content-type", "application/x-ndjson")
        .body(format!("{}\n{}\n", record(), record()))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());

    let ops = ki.ops.clone();
    let text = eventually("the schema gauges", Duration::from_secs(30), move || {
        let ops = ops.clone();
        async move {
            let text = reqwest::get(format!("{ops}/metrics"))
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            text.contains("kube_insight_schema_version_required ")
                .then_some(text)
        }
    })
    .await;
    let version = env!("CARGO_PKG_VERSION");
    for line in [
        "kube_insight_records_in_total{target=\"logs\",component=\"fluent_bit\",cluster=\"prod-eu-1\"} 2".to_string(),
        "kube_insight_series_cap 12345".into(),
        "kube_insight_queue_capacity{component=\"fluent_bit\"} 7".into(),
        "kube_insight_collector_leader{target=\"events\"} 1".into(),
        format!("kube_insight_build_info{{version=\"{version}\",commit=\""),
    ] {
        assert!(text.contains(&line), "/metrics lacks `{line}`:\n{text}");
    }
    // The store's schema and the build's agree (the alert's two sides).
    let gauge = |name: &str| -> String {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name}"))
            .to_string()
    };
    assert_eq!(
        gauge("kube_insight_schema_version"),
        gauge("kube_insight_schema_version_required")
    );
    assert_ne!(gauge("kube_insight_schema_version"), "0");
    // No topology target here: no leader gauge for it.
    assert!(!text.contains("kube_insight_collector_leader{target=\"topology\"}"));
}

/// Scrapes the process's own /metrics, as the servers chart's scrape job
/// would, and stores it in kube-insight itself (remote write, `job` and `pod`
/// labels as the scrape job sets them).
async fn scrape_into_self(client: &reqwest::Client, ki: &KubeInsight, at_ms: i64) {
    use kube_insight_sources::prometheus::{exposition::parse_to_series, remote_write::encode};
    let text = client
        .get(format!("{}/metrics", ki.ops))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let (mut series, report) = parse_to_series(&text, at_ms);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    for s in &mut series {
        s.labels.set("job", "kube-insight");
        s.labels.set("pod", "kube-insight-0");
        for sample in &mut s.samples {
            sample.timestamp_ms = at_ms;
        }
    }
    let r = client
        .post(format!("{}/ingest/prometheus/api/v1/write", ki.ingest))
        .bearer_auth(TOKEN)
        .header("content-encoding", "snappy")
        .body(encode(&series, &[]).unwrap())
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
}

/// Every query of the "kube-insight itself" dashboard runs on kube-insight's
/// PromQL engine over kube-insight's own metrics, stored in itself; the
/// panels of what this process does (ingest, queue, schema, leaders,
/// versions) have data. (Active series are counted by the maintenance pass
/// a minute after the first series arrive: that query only has to run.)
/// The records come from `prod-eu-1`, the self-metrics are pushed with the
/// insight cluster's token, so their `cluster` label is stored as
/// `exported_cluster`, which the dashboard reads back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_self_dashboard_answers_over_its_own_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let tokens = dir.path().join("tokens");
    std::fs::write(
        &tokens,
        format!("{PROD_TOKEN} prod-eu-1\n{TOKEN} insight\n"),
    )
    .unwrap();
    let env = [
        (
            "KUBE_INSIGHT_TARGETS",
            "metrics,logs,events,api".to_string(),
        ),
        ("KUBE_INSIGHT_CLUSTER", "insight".to_string()),
        (
            "KUBE_INSIGHT_INGEST_TOKENS_FILE",
            tokens.display().to_string(),
        ),
    ];
    let ki = KubeInsight::start(dir.path(), &env, None).await;
    let client = reqwest::Client::new();
    let now = kube_insight_core::time::now_ms() / 1000 * 1000;
    for (i, at) in [now - 120_000, now - 60_000, now].into_iter().enumerate() {
        let r = client
            .post(format!("{}/ingest/fluent-bit", ki.ingest))
            .bearer_auth(PROD_TOKEN)
            .body(format!("{}\n", record()))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success());
        let _ = client
            .get(format!("{}/api/v1/entities?from=now-1h&to=now", ki.api))
            .send()
            .await
            .unwrap();
        if i == 0 {
            // the schema gauges are set by the first maintenance pass
            let ops = ki.ops.clone();
            eventually("the schema gauges", Duration::from_secs(30), move || {
                let ops = ops.clone();
                async move {
                    let text = reqwest::get(format!("{ops}/metrics")).await.ok()?;
                    let text = text.text().await.ok()?;
                    text.contains("kube_insight_schema_version ").then_some(())
                }
            })
            .await;
        }
        scrape_into_self(&client, &ki, at).await;
    }
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../grafana/dashboards/kube-insight.json");
    let d: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let with_data = [
        "Records in by cluster and signal",
        "Push answers",
        "Push queue fill",
        "Read API requests",
        "Read API latency (p99)",
        "Schema version",
        "Collector leaders",
        "Running versions",
    ];
    let mut answered = 0;
    for p in d["panels"].as_array().unwrap() {
        if p["type"] == "row" {
            continue;
        }
        let title = p["title"].as_str().unwrap();
        for t in p["targets"].as_array().unwrap() {
            let expr = t["expr"]
                .as_str()
                .unwrap()
                .replace("$__rate_interval", "2m");
            let r = client
                .post(format!("{}/prometheus/api/v1/query_range", ki.api))
                .form(&[
                    ("query", expr.clone()),
                    ("start", ((now - 120_000) / 1000).to_string()),
                    ("end", (now / 1000).to_string()),
                    ("step", "15".to_string()),
                ])
                .send()
                .await
                .unwrap();
            let status = r.status();
            let body: serde_json::Value = r.json().await.unwrap();
            assert!(
                status.is_success() && body["status"] == "success",
                "{title}: {expr}: {body}"
            );
            let series = body["data"]["result"].as_array().unwrap();
            if with_data.contains(&title) {
                assert!(!series.is_empty(), "{title}: no data for {expr}");
                answered += 1;
            }
            if title == "Records in by cluster and signal" {
                // The monitored cluster, read back from exported_cluster.
                assert!(
                    series.iter().any(|s| s["metric"]["cluster"] == "prod-eu-1"
                        && s["metric"]["target"] == "logs"),
                    "{series:?}"
                );
            }
        }
    }
    assert!(answered >= with_data.len(), "{answered} queries with data");
}
