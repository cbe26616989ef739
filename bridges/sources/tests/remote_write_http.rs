//! `prometheus_remote_write` end to end over real HTTP into the real SQLite
//! store: snappy protobuf built here, the status codes Prometheus relies on,
//! and idempotent retries.

// Tests and benches may unwrap: a panic is a failing run with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use axum::Router;
use common::*;
use kube_insight_sources::metrics::transform::LabelPolicy;
use kube_insight_sources::metrics::RemoteWriteSource;
use kube_insight_sources::prometheus::remote_write::encode;
use kube_insight_sources::push::{mount, PushLimits};
use kube_insight_sources::TokenMap;
use kube_insight_telemetry::Telemetry;
use std::sync::Arc;

const TOKEN_A: &str = "token-of-cluster-a-0001";

async fn server(
    limits: PushLimits,
) -> (
    String,
    kube_insight_store::DynStore,
    tempfile::TempDir,
    Arc<Telemetry>,
) {
    let (store, dir) = sqlite_store().await;
    let mut tokens = TokenMap::open("default");
    tokens.insert(TOKEN_A, "cluster-a");
    let tel = Arc::new(Telemetry::new());
    let src = Arc::new(RemoteWriteSource::new(
        store.clone(),
        LabelPolicy::default(),
    ));
    let app = mount(Router::new(), src, Arc::new(tokens), limits, tel.clone());
    let addr = serve(app).await;
    (
        format!("http://{addr}/ingest/prometheus/api/v1/write"),
        store,
        dir,
        tel,
    )
}

fn post(client: &reqwest::Client, url: &str, body: Vec<u8>) -> reqwest::RequestBuilder {
    client
        .post(url)
        .header("content-encoding", "snappy")
        .header("content-type", "application/x-protobuf")
        .header("x-prometheus-remote-write-version", "0.1.0")
        .bearer_auth(TOKEN_A)
        .body(body)
}

#[tokio::test]
async fn stores_samples_with_the_tokens_cluster_and_is_idempotent_on_retry() {
    let (url, store, _dir, _) = server(PushLimits::default()).await;
    let client = reqwest::Client::new();
    let body = encode(
        &[
            series(
                "http_requests_total",
                &[("job", "api"), ("cluster", "spoofed")],
                &[(1000, 1.0), (2000, 2.0)],
            ),
            series("up", &[("job", "api")], &[(1000, 1.0)]),
        ],
        &[],
    )
    .unwrap();
    for _ in 0..3 {
        // The first is the write, the others are Prometheus retrying it.
        let r = post(&client, &url, body.clone()).send().await.unwrap();
        assert_eq!(r.status(), 204, "{}", r.text().await.unwrap());
    }
    let got = read(&store, "http_requests_total").await;
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].labels.get("cluster"),
        Some("cluster-a"),
        "the cluster comes from the token"
    );
    assert_eq!(got[0].labels.get("exported_cluster"), Some("spoofed"));
    let ts: Vec<i64> = got[0].samples.iter().map(|s| s.timestamp_ms).collect();
    assert_eq!(ts, vec![1000, 2000], "a retried batch is stored once");
}

#[tokio::test]
async fn corrupt_bodies_are_400_and_store_nothing() {
    let (url, store, _dir, _) = server(PushLimits::default()).await;
    let client = reqwest::Client::new();
    let r = post(&client, &url, b"definitely not snappy".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("snappy"));
    // Valid snappy around garbage protobuf.
    let garbage = snap::raw::Encoder::new().compress_vec(&[0xff; 64]).unwrap();
    let r = post(&client, &url, garbage).send().await.unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("protobuf"));
    assert!(read(&store, "up").await.is_empty());
}

#[tokio::test]
async fn missing_or_wrong_token_is_401() {
    let (url, _store, _dir, _) = server(PushLimits::default()).await;
    let body = encode(&[series("up", &[], &[(1, 1.0)])], &[]).unwrap();
    let client = reqwest::Client::new();
    let r = client
        .post(&url)
        .header("content-encoding", "snappy")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = client
        .post(&url)
        .header("content-encoding", "snappy")
        .bearer_auth("token-of-nobody-000000")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn a_full_queue_answers_503_with_retry_after_and_the_retry_is_stored_once() {
    let limits = PushLimits {
        max_in_flight: 1,
        retry_after_secs: 2,
        ..Default::default()
    };
    let (url, store, _dir, tel) = server(limits).await;
    let client = reqwest::Client::new();

    // A sender whose body trickles in holds the only slot.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    let slow_body = encode(&[series("slow", &[], &[(1000, 1.0)])], &[]).unwrap();
    let stream = tokio_stream_from(rx);
    let slow = tokio::spawn({
        let client = client.clone();
        let url = url.clone();
        async move {
            client
                .post(&url)
                .header("content-encoding", "snappy")
                .bearer_auth(TOKEN_A)
                .body(reqwest::Body::wrap_stream(stream))
                .send()
                .await
                .unwrap()
                .status()
        }
    });
    tx.send(Ok(slow_body[..1].to_vec())).await.unwrap();
    // Wait until the slow request is being processed.
    let body = encode(
        &[series("busy", &[("k", "v")], &[(1000, 1.0), (2000, 2.0)])],
        &[],
    )
    .unwrap();
    let mut pushed_back = None;
    for _ in 0..100 {
        let r = post(&client, &url, body.clone()).send().await.unwrap();
        if r.status() == 503 {
            pushed_back = Some(r);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let r = pushed_back.expect("the queue never filled");
    assert_eq!(r.headers()["retry-after"], "2");
    assert!(
        read(&store, "busy").await.is_empty(),
        "a 503 stored nothing"
    );

    // The slow sender finishes; the slot frees up; the retry lands, twice even.
    tx.send(Ok(slow_body[1..].to_vec())).await.unwrap();
    drop(tx);
    assert_eq!(slow.await.unwrap(), 204);
    for _ in 0..2 {
        let r = post(&client, &url, body.clone()).send().await.unwrap();
        assert_eq!(r.status(), 204);
    }
    let got = read(&store, "busy").await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].samples.len(), 2, "stored exactly once");
    let text = tel.render();
    assert!(text.contains("reason=\"queue_full\""), "{text}");
}

/// A byte stream from a channel (no extra dependency).
fn tokio_stream_from(
    mut rx: tokio::sync::mpsc::Receiver<Result<Vec<u8>, std::io::Error>>,
) -> impl futures::Stream<Item = Result<Vec<u8>, std::io::Error>> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
