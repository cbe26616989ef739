//! `prometheus_federate` against a mocked Prometheus over real HTTP, into the
//! real SQLite store: normal pulls, errors, timeouts, truncated bodies and
//! malformed lines.

// Tests and benches may unwrap: a panic is a failing run with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use kube_insight_sources::metrics::transform::LabelPolicy;
use kube_insight_sources::metrics::{FederateConfig, FederateSource};
use kube_insight_sources::pull::{PullError, PullSource};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

fn source(store: kube_insight_store::DynStore, base: &str) -> FederateSource {
    FederateSource::new(
        store,
        FederateConfig {
            base_url: base.to_string(),
            matchers: vec!["{job=\"kubelet\"}".into(), "kube_pod_owner".into()],
            cluster: "prod".into(),
            policy: LabelPolicy::default(),
            max_body_bytes: 16 << 20,
        },
    )
    .unwrap()
}

const FIXTURE: &str = include_str!("../../../../shared/fixtures/federate-sample.txt");

#[tokio::test]
async fn pulls_the_fixture_with_every_match_and_stores_it_once_per_timestamp() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/federate"))
        .and(query_param("match[]", "kube_pod_owner"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_string(FIXTURE)
                .insert_header("content-type", "text/plain; version=0.0.4"),
        )
        .expect(2)
        .mount(&server)
        .await;
    let (store, _dir) = sqlite_store().await;
    let src = source(store.clone(), &server.uri());
    let first = src.pull_once(Duration::from_secs(5)).await.unwrap();
    assert!(first.accepted > 10, "{first:?}");
    assert!(first.rejected.is_empty(), "{first:?}");
    // The same body again: federation re-sends the latest sample.
    let second = src.pull_once(Duration::from_secs(5)).await.unwrap();
    assert_eq!(first.accepted, second.accepted);
    let cpu = read(&store, "container_cpu_usage_seconds_total").await;
    assert!(!cpu.is_empty());
    for s in &cpu {
        assert_eq!(s.samples.len(), 1, "stored once: {:?}", s.labels);
        assert_eq!(s.labels.get("cluster"), Some("prod"));
        assert_eq!(s.labels.get("id"), None, "cAdvisor's id label is dropped");
        assert_eq!(
            s.labels.get("name"),
            None,
            "cAdvisor's name label is dropped"
        );
    }
    // A recording rule name with colons survives.
    let rule_names: Vec<String> = FIXTURE
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains(':'))
        .filter_map(|l| l.split(['{', ' ']).next().map(str::to_string))
        .filter(|n| n.contains(':'))
        .collect();
    assert!(!rule_names.is_empty(), "the fixture has a recording rule");
    for n in rule_names {
        assert!(!read(&store, &n).await.is_empty(), "{n} lost");
    }
}

#[tokio::test]
async fn one_bad_line_among_a_thousand_good_ones_loses_only_itself() {
    let mut body = String::from("# TYPE test_metric untyped\n");
    for i in 0..1000 {
        if i == 500 {
            body.push_str("test_metric{i=\"500\" 1 1700000000000\n"); // unterminated label set
        } else {
            body.push_str(&format!("test_metric{{i=\"{i}\"}} {i} 1700000000000\n"));
        }
    }
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/federate"))
        .respond_with(ResponseTemplate::new(200).set_body_string(body))
        .mount(&server)
        .await;
    let (store, _dir) = sqlite_store().await;
    let summary = source(store.clone(), &server.uri())
        .pull_once(Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(summary.accepted, 999);
    assert_eq!(summary.rejected, vec![("malformed_line", 1)]);
    assert!(
        summary.note.unwrap().contains("line 502"),
        "the note names the line"
    );
    assert_eq!(read(&store, "test_metric").await.len(), 999);
}

#[tokio::test]
async fn a_body_cut_mid_line_keeps_the_complete_lines_only() {
    let body =
        "a_metric{x=\"1\"} 1 1700000000000\na_metric{x=\"2\"} 2 1700000000000\na_metric{x=\"3\"} 3";
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/federate"))
        .respond_with(ResponseTemplate::new(200).set_body_string(body))
        .mount(&server)
        .await;
    let (store, _dir) = sqlite_store().await;
    let summary = source(store.clone(), &server.uri())
        .pull_once(Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(summary.accepted, 2);
    let got = read(&store, "a_metric").await;
    let xs: Vec<&str> = got.iter().filter_map(|s| s.labels.get("x")).collect();
    assert_eq!(
        xs,
        vec!["1", "2"],
        "the cut line is never stored half-parsed"
    );
}

#[tokio::test]
async fn a_connection_closed_before_the_end_of_the_body_stores_nothing() {
    // A raw server: promises 10 000 bytes, sends two complete lines, hangs up.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let mut buf = [0u8; 4096];
            let _ = sock.read(&mut buf).await;
            let part = "cut_metric{x=\"1\"} 1 1700000000000\ncut_metric{x=\"2\"} 2 1700000000000\n";
            let head =
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 10000\r\n\r\n";
            let _ = sock.write_all(head.as_bytes()).await;
            let _ = sock.write_all(part.as_bytes()).await;
            let _ = sock.shutdown().await;
        }
    });
    let (store, _dir) = sqlite_store().await;
    let err = source(store.clone(), &format!("http://{addr}"))
        .pull_once(Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(matches!(err, PullError::Body { .. }), "{err:?}");
    assert!(read(&store, "cut_metric").await.is_empty());
}

#[tokio::test]
async fn http_errors_and_timeouts_are_classified_and_store_nothing() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/federate"))
        .respond_with(ResponseTemplate::new(500).set_body_string("tsdb not ready"))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/federate"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_string("late_metric 1 1700000000000\n")
                .set_delay(Duration::from_secs(3)),
        )
        .mount(&server)
        .await;
    let (store, _dir) = sqlite_store().await;
    let src = source(store.clone(), &server.uri());
    match src.pull_once(Duration::from_secs(1)).await.unwrap_err() {
        PullError::Http { status, body, .. } => {
            assert_eq!(status, 500);
            assert!(body.contains("tsdb not ready"));
        }
        e => panic!("{e:?}"),
    }
    let e = src.pull_once(Duration::from_millis(500)).await.unwrap_err();
    assert_eq!(e.kind(), "timeout", "{e:?}");
    assert!(read(&store, "late_metric").await.is_empty());
    // Unreachable.
    let dead = source(store.clone(), "http://127.0.0.1:9");
    assert_eq!(
        dead.pull_once(Duration::from_secs(2))
            .await
            .unwrap_err()
            .kind(),
        "unreachable"
    );
}
