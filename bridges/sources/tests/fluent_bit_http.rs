//! `fluent_bit` end to end over real HTTP (the shared push mount on a
//! loopback port) into a real SQLite log store: every answer Fluent Bit's
//! retry rules depend on, and that a 2xx means durable and a retry is
//! stored once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use axum::Router;
use common::serve;
use flate2::write::GzEncoder;
use kube_insight_core::TimeRange;
use kube_insight_sources::fluent_bit::FluentBitSource;
use kube_insight_sources::push::{mount, PushLimits};
use kube_insight_sources::TokenMap;
use kube_insight_store::{LogQuery, LogRow, LogSelector, LogStore, StoreOptions};
use kube_insight_store_sqlite::logs::{SqliteLogConfig, SqliteLogStore};
use kube_insight_telemetry::Telemetry;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

const TOKEN_A: &str = "token-of-cluster-a-0001";
const TOKEN_B: &str = "token-of-cluster-b-0002";
const JSON_LINES: &str = include_str!("../../../../shared/fixtures/fluentbit-http-json_lines.txt");
const JSON_ARRAY: &str = include_str!("../../../../shared/fixtures/fluentbit-http-json.json");

struct Server {
    url: String,
    store: Arc<SqliteLogStore>,
    path: PathBuf,
    tel: Arc<Telemetry>,
    _dir: tempfile::TempDir,
}

async fn server_with(limits: PushLimits, config: SqliteLogConfig) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("insight.db");
    let store = Arc::new(
        SqliteLogStore::open_with(&path, StoreOptions::default(), config)
            .await
            .unwrap(),
    );
    let mut tokens = TokenMap::open("default");
    tokens.insert(TOKEN_A, "cluster-a");
    tokens.insert(TOKEN_B, "cluster-b");
    let tel = Arc::new(Telemetry::new());
    let src = Arc::new(FluentBitSource::new(store.clone()));
    let app = mount(Router::new(), src, Arc::new(tokens), limits, tel.clone());
    let addr = serve(app).await;
    Server {
        url: format!("http://{addr}/ingest/fluent-bit"),
        store,
        path,
        tel,
        _dir: dir,
    }
}

async fn server() -> Server {
    server_with(PushLimits::default(), SqliteLogConfig::default()).await
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(b).unwrap();
    e.finish().unwrap()
}

/// A request as Fluent Bit's http output sends it (json_lines, gzip).
fn post(client: &reqwest::Client, url: &str, token: &str, body: &[u8]) -> reqwest::RequestBuilder {
    client
        .post(url)
        .header("content-type", "application/x-ndjson")
        .header("content-encoding", "gzip")
        .header("user-agent", "Fluent-Bit")
        .bearer_auth(token)
        .body(gzip(body))
}

async fn rows_in(store: &dyn LogStore, cluster: Option<&str>) -> Vec<LogRow> {
    let mut q = LogQuery::new(
        LogSelector {
            cluster: cluster.map(Into::into),
            ..Default::default()
        },
        TimeRange::new(0, i64::MAX / 1_000_000 - 1).unwrap(),
    );
    q.limit = 1_000_000;
    store.query_logs(&q).await.unwrap().rows
}

/// Rows as another process sees them: committed to the file.
async fn durable_rows(path: &Path) -> Vec<LogRow> {
    let other = SqliteLogStore::open(path, StoreOptions::default())
        .await
        .unwrap();
    rows_in(&other, None).await
}

/// `n` json_lines records, recent, `pods` pods round-robin.
fn lines(n: usize, pods: usize, tag: &str) -> String {
    let now = kube_insight_core::time::now_ms() as f64 / 1000.0 - 60.0;
    let mut s = String::new();
    for i in 0..n {
        s.push_str(&format!(
            "{{\"date\":{:.6},\"stream\":\"stdout\",\"_p\":\"F\",\"log\":\"{tag} line {i}\",\"kubernetes\":{{\"pod_name\":\"pod-{}\",\"namespace_name\":\"ns\",\"container_name\":\"c\"}}}}\n",
            now + i as f64 * 0.001,
            i % pods
        ));
    }
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixtures_are_stored_durably_before_2xx_and_a_retry_once() {
    let s = server().await;
    let client = reqwest::Client::new();
    // Old fixture times are outside the default retention: rewrite the year.
    let recent = |b: &str| {
        b.replace("2024-05-31", &today())
            .replace("17171717", &recent_secs_prefix())
    };
    for _ in 0..3 {
        let r = post(&client, &s.url, TOKEN_A, recent(JSON_LINES).as_bytes())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204, "{}", r.text().await.unwrap());
    }
    let r = client
        .post(&s.url)
        .header("content-type", "application/json")
        .bearer_auth(TOKEN_A)
        .body(recent(JSON_ARRAY))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    // Committed: another connection to the file sees it, and the retries
    // of the json_lines chunk were stored once.
    let rows = durable_rows(&s.path).await;
    assert_eq!(
        rows.len(),
        4,
        "2 from json_lines (sent 3 times) + 2 from json"
    );
    assert!(rows.iter().all(|r| r.key.cluster == "cluster-a"));
    let api = rows
        .iter()
        .find(|r| r.key.pod == "api-5f6d7c8b9-qwz7p")
        .unwrap();
    assert_eq!(api.record.level, Some(kube_insight_core::Level::Error));
    assert_eq!(api.workload.as_deref(), Some("api"));
    let text = s.tel.render();
    assert!(text.contains("component=\"fluent_bit\""), "{text}");
}

fn today() -> String {
    let s =
        kube_insight_core::log::format_rfc3339_ns(kube_insight_core::time::now_ms() * 1_000_000);
    s[..10].to_string()
}

/// The first 8 digits of epoch seconds now (the fixtures' `17171717…`).
fn recent_secs_prefix() -> String {
    (kube_insight_core::time::now_ms() / 1000 / 100).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_comes_from_the_token_only() {
    let s = server().await;
    let client = reqwest::Client::new();
    let body = lines(10, 2, "a");
    let r = post(&client, &s.url, TOKEN_A, body.as_bytes())
        .header("x-cluster", "cluster-b")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = post(&client, &s.url, TOKEN_B, lines(3, 1, "b").as_bytes())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(
        rows_in(&*s.store, Some("cluster-a")).await.len(),
        10,
        "the X-Cluster header is ignored"
    );
    let b = rows_in(&*s.store, Some("cluster-b")).await;
    assert_eq!(b.len(), 3);
    assert!(b.iter().all(|r| r.record.line.starts_with("b ")));
    // No token, or an unknown one: 401, nothing stored.
    let r = client
        .post(&s.url)
        .body(lines(1, 1, "x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Bearer");
    let r = post(
        &client,
        &s.url,
        "token-of-nobody-00000",
        lines(1, 1, "x").as_bytes(),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(rows_in(&*s.store, None).await.len(), 13);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreadable_bodies_are_400_and_store_nothing() {
    let s = server().await;
    let client = reqwest::Client::new();
    // Corrupt gzip.
    let mut bad = gzip(lines(5, 1, "x").as_bytes());
    let n = bad.len();
    bad[n / 2] ^= 0xff;
    bad.truncate(n - 4);
    let r = client
        .post(&s.url)
        .header("content-encoding", "gzip")
        .bearer_auth(TOKEN_A)
        .body(bad)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("gzip"));
    // Valid gzip around something that is not JSON.
    let r = post(&client, &s.url, TOKEN_A, b"this is not json\nnor this\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("json_lines"));
    // A json array cut in the middle.
    let r = client
        .post(&s.url)
        .bearer_auth(TOKEN_A)
        .body(JSON_ARRAY[..JSON_ARRAY.len() / 2].to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    // msgpack is a format we do not read: 415.
    let r = client
        .post(&s.url)
        .header("content-type", "application/msgpack")
        .bearer_auth(TOKEN_A)
        .body(vec![0x92, 0x01, 0x02])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    assert!(rows_in(&*s.store, None).await.is_empty());
    // An empty body is a valid, empty chunk.
    let r = post(&client, &s.url, TOKEN_A, b"").send().await.unwrap();
    assert_eq!(r.status(), 204);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_bad_record_among_500_costs_only_itself() {
    let s = server().await;
    let client = reqwest::Client::new();
    let good = lines(500, 50, "g");
    let mut body: Vec<&str> = good.lines().collect();
    body[321] = "{\"date\":1717171717.0,\"log\":\"cut in the midd";
    let body = body.join("\n") + "\n";
    let r = post(&client, &s.url, TOKEN_A, body.as_bytes())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(
        text.contains("stored 499 records, skipped 1") && text.contains("record 322"),
        "{text}"
    );
    let rows = durable_rows(&s.path).await;
    assert_eq!(rows.len(), 499);
    assert!(!rows.iter().any(|r| r.record.line == "g line 321"));
    let m = s.tel.render();
    assert!(m.contains("reason=\"invalid_json\""), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_bodies_are_413() {
    let limits = PushLimits {
        max_body_bytes: 64 * 1024,
        ..Default::default()
    };
    let s = server_with(limits, SqliteLogConfig::default()).await;
    // The server answers 413 before reading the whole body and then closes
    // the connection; a pooled client could reuse it for the next request
    // and see it closed (a race). One connection per request.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let big = lines(2000, 10, "big"); // ~300 KB
    let r = client
        .post(&s.url)
        .bearer_auth(TOKEN_A)
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    // Small gzip that inflates past the limit.
    let r = post(&client, &s.url, TOKEN_A, big.as_bytes())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert!(r.text().await.unwrap().contains("inflates"));
    assert!(rows_in(&*s.store, None).await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_is_429_with_retry_after_and_the_retry_is_stored_once() {
    let limits = PushLimits {
        max_in_flight: 1,
        retry_after_secs: 3,
        ..Default::default()
    };
    let s = server_with(limits, SqliteLogConfig::default()).await;
    let client = reqwest::Client::new();
    // A sender whose body trickles in holds the only slot.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::io::Error>>(1);
    let stream = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let slow_body = lines(5, 1, "slow").into_bytes();
    let slow = tokio::spawn({
        // Its own client: the pushes below never wait for, or share, its
        // connection.
        let url = s.url.clone();
        async move {
            reqwest::Client::new()
                .post(&url)
                .bearer_auth(TOKEN_A)
                .body(reqwest::Body::wrap_stream(stream))
                .send()
                .await
                .unwrap()
                .status()
        }
    });
    tx.send(Ok(slow_body[..10].to_vec())).await.unwrap();
    // Wait until the slow sender holds the slot (no other push meanwhile,
    // so it cannot be the one pushed back on a loaded machine).
    let depth = s
        .tel
        .queue_depth
        .get_or_create(&kube_insight_telemetry::labels([(
            "component",
            "fluent_bit",
        )]))
        .clone();
    for _ in 0..3000 {
        if depth.get() == 1 || slow.is_finished() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!slow.is_finished(), "the slow sender was answered early");
    assert_eq!(depth.get(), 1, "the slow sender never reached the server");
    let body = lines(20, 4, "busy");
    let r = post(&client, &s.url, TOKEN_A, body.as_bytes())
        .send()
        .await
        .unwrap();
    let pushed_back = (r.status() == 429).then_some(r);
    let r = pushed_back.expect("the queue never filled");
    assert_eq!(r.headers()["retry-after"], "3");
    tx.send(Ok(slow_body[10..].to_vec())).await.unwrap();
    drop(tx);
    assert_eq!(slow.await.unwrap(), 204);
    // Fluent Bit retries the chunk (possibly more than once).
    for _ in 0..2 {
        let r = post(&client, &s.url, TOKEN_A, body.as_bytes())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
    }
    let rows = rows_in(&*s.store, None).await;
    assert_eq!(
        rows.iter()
            .filter(|r| r.record.line.starts_with("busy "))
            .count(),
        20,
        "stored exactly once"
    );
    assert_eq!(
        rows.iter()
            .filter(|r| r.record.line.starts_with("slow "))
            .count(),
        5
    );
    assert!(s.tel.render().contains("reason=\"queue_full\""));
}

/// A log store whose writes fail while `failing` is set, with the given
/// error; otherwise it is the real SQLite store. (The real store's
/// all-or-nothing transaction under a failure part-way through a batch is
/// tested in `store-sqlite/tests/logs_sqlite.rs` with an injected SQLite trigger.)
struct Flaky {
    inner: Arc<SqliteLogStore>,
    failing: std::sync::atomic::AtomicBool,
    retryable: bool,
}

#[async_trait::async_trait]
impl LogStore for Flaky {
    async fn write_logs(
        &self,
        batch: kube_insight_store::LogBatch,
    ) -> kube_insight_store::Result<kube_insight_store::LogWriteOutcome> {
        if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(if self.retryable {
                kube_insight_store::Error::Unavailable("sqlite store: database is locked".into())
            } else {
                kube_insight_store::Error::Corrupt("injected failure".into())
            });
        }
        self.inner.write_logs(batch).await
    }
    async fn query_logs(
        &self,
        q: &LogQuery,
    ) -> kube_insight_store::Result<kube_insight_store::LogPage> {
        self.inner.query_logs(q).await
    }
    async fn log_rate(
        &self,
        q: &kube_insight_store::LogRateQuery,
    ) -> kube_insight_store::Result<Vec<kube_insight_store::LogRatePoint>> {
        self.inner.log_rate(q).await
    }
    async fn maintain_logs(
        &self,
        now_ms: i64,
    ) -> kube_insight_store::Result<kube_insight_store::LogMaintenance> {
        self.inner.maintain_logs(now_ms).await
    }
}

async fn flaky_server(retryable: bool) -> (String, Arc<Flaky>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let inner = Arc::new(
        SqliteLogStore::open(&dir.path().join("insight.db"), StoreOptions::default())
            .await
            .unwrap(),
    );
    let store = Arc::new(Flaky {
        inner,
        failing: std::sync::atomic::AtomicBool::new(true),
        retryable,
    });
    let mut tokens = TokenMap::open("default");
    tokens.insert(TOKEN_A, "cluster-a");
    let src = Arc::new(FluentBitSource::new(store.clone()));
    let app = mount(
        Router::new(),
        src,
        Arc::new(tokens),
        PushLimits::default(),
        Arc::new(Telemetry::new()),
    );
    let addr = serve(app).await;
    (format!("http://{addr}/ingest/fluent-bit"), store, dir)
}

/// A failing store: no 2xx (5xx, which Fluent Bit retries) and nothing
/// stored; once it recovers, the retry stores the chunk once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_store_answers_5xx_and_the_retry_lands_once() {
    for (retryable, want) in [(false, 500), (true, 503)] {
        let (url, store, _dir) = flaky_server(retryable).await;
        let client = reqwest::Client::new();
        let body = lines(100, 10, "m");
        let r = post(&client, &url, TOKEN_A, body.as_bytes())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), want);
        if retryable {
            assert_eq!(r.headers()["retry-after"], "5");
        }
        assert!(rows_in(&*store, None).await.is_empty());
        store
            .failing
            .store(false, std::sync::atomic::Ordering::SeqCst);
        for _ in 0..2 {
            let r = post(&client, &url, TOKEN_A, body.as_bytes())
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 204);
        }
        assert_eq!(rows_in(&*store, None).await.len(), 100);
    }
}
