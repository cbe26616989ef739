//! `kube-insight demo` end to end: the real binary starts its own
//! kube-insight on a temporary store, plays history and a bounded stretch of
//! real time, and the API it serves meanwhile has a topology and changes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::Value;
use std::process::Command;
use std::time::Duration;
use support::{eventually, free_port, Proc};

async fn get_json(c: &reqwest::Client, url: &str) -> Option<Value> {
    c.get(url).send().await.ok()?.json().await.ok()
}

#[tokio::test]
async fn demo_fills_topology_and_changes() {
    let dir = tempfile::tempdir().unwrap();
    let (api, ingest, ops) = (free_port(), free_port(), free_port());
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kube-insight"));
    cmd.args([
        "demo",
        "--history",
        "15m",
        "--duration",
        "40s",
        "--every",
        "20s",
        "--api-listen",
        &format!("127.0.0.1:{api}"),
        "--ingest-listen",
        &format!("127.0.0.1:{ingest}"),
        "--ops-listen",
        &format!("127.0.0.1:{ops}"),
        "--store",
        &format!("sqlite://{}/insight.db", dir.path().display()),
    ])
    .env_remove("KUBE_INSIGHT_KUBECONFIG");
    let mut demo = Proc::spawn("kube-insight-demo", cmd, dir.path());
    let base = format!("http://127.0.0.1:{api}");
    let client = reqwest::Client::new();
    let edges = eventually("the demo's topology", Duration::from_secs(90), || {
        let (c, u) = (client.clone(), format!("{base}/api/v1/topology"));
        async move {
            let v = get_json(&c, &u).await?;
            let n = v["edges"].as_array().map_or(0, Vec::len);
            (n >= 10).then_some(n)
        }
    })
    .await;
    let changes = eventually("the demo's changes", Duration::from_secs(60), || {
        let (c, u) = (client.clone(), format!("{base}/api/v1/changes?from=now-1h"));
        async move {
            let v = get_json(&c, &u).await?;
            let n = v.as_array().or(v["changes"].as_array()).map_or(0, Vec::len);
            (n > 0).then_some(n)
        }
    })
    .await;
    // Metrics and logs of the shop answer too.
    let v: Value = client
        .get(format!("{base}/prometheus/api/v1/query"))
        .query(&[("query", "count(http_server_request_duration_seconds_count)")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["status"], "success", "{v}");
    assert!(!v["data"]["result"].as_array().unwrap().is_empty(), "{v}");
    println!("demo: {edges} edges, {changes} changes");
    // The bound ends it by itself, cleanly.
    let status = eventually(
        "the demo to stop after --duration",
        Duration::from_secs(90),
        || {
            let s = demo.try_status();
            async move { s }
        },
    )
    .await;
    assert!(status.success(), "{status:?}\n{}", demo.log_text());
    assert!(demo.log_text().contains("injected"), "{}", demo.log_text());
}
