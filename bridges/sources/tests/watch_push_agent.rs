//! The push agent's store (`kube_watch::remote::RemoteEventStore`) against
//! the real ingest router (push mount + `kube_watch::ingest`) over loopback
//! HTTP, backed by a SQLite store. A gate in front of the router plays the
//! insight's outage (connection refused, then 503) and records what was
//! delivered, so "exactly once, in order" is checked on the wire.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../../tests/support/kube_mock.rs"]
mod kube_mock;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use kube_insight_core::event::ChangeKind;
use kube_insight_sources::kube_watch::ingest::{
    cluster_key, WatchBatch, WatchIngestSource, WatchStateSource, WATCH_PATH,
};
use kube_insight_sources::kube_watch::remote::{PushConfig, RemoteEventStore};
use kube_insight_sources::push::{gunzip_limited, mount, PushLimits};
use kube_insight_sources::TokenMap;
use kube_insight_store::events::{ObjectWrite, WatchCheckpoint};
use kube_insight_store::{EventStore, StoreOptions};
use kube_insight_store_sqlite::events::SqliteEventStore;
use kube_insight_telemetry::Telemetry;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "token-of-prod-0123456";
const UP: u8 = 0;
const UNAVAILABLE: u8 = 1;

#[derive(Default)]
struct Gate {
    mode: AtomicU8,
    refused_503: AtomicUsize,
    /// (uid, resourceVersion) of every object delivered, in order, and the
    /// checkpoints' resourceVersions.
    delivered: Mutex<Vec<(String, String)>>,
    checkpoints: Mutex<Vec<String>>,
}

async fn gate(State(g): State<Arc<Gate>>, req: Request, next: Next) -> Response {
    if req.uri().path() != WATCH_PATH {
        if g.mode.load(Ordering::SeqCst) == UNAVAILABLE {
            return (axum::http::StatusCode::SERVICE_UNAVAILABLE, "down").into_response();
        }
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    let raw = axum::body::to_bytes(body, 64 << 20).await.unwrap();
    if g.mode.load(Ordering::SeqCst) == UNAVAILABLE {
        g.refused_503.fetch_add(1, Ordering::SeqCst);
        return (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            [("retry-after", "1")],
            "insight restarting",
        )
            .into_response();
    }
    let json = gunzip_limited(&raw, 64 << 20).unwrap();
    let batch: WatchBatch = serde_json::from_slice(&json).unwrap();
    if batch.objects.iter().any(|o| o.uid == "poison") {
        return (axum::http::StatusCode::BAD_REQUEST, "poison").into_response();
    }
    let resp = next.run(Request::from_parts(parts, Body::from(raw))).await;
    if resp.status().is_success() {
        g.delivered.lock().unwrap().extend(
            batch
                .objects
                .iter()
                .map(|o| (o.uid.clone(), o.resource_version.clone())),
        );
        g.checkpoints.lock().unwrap().extend(
            batch
                .checkpoints
                .iter()
                .map(|c| c.checkpoint.resource_version.clone()),
        );
    }
    resp
}

struct Insight {
    store: Arc<dyn EventStore>,
    gate: Arc<Gate>,
    _dir: tempfile::TempDir,
}

fn router(store: Arc<dyn EventStore>, g: Arc<Gate>) -> Router {
    let mut tokens = TokenMap::open("default");
    tokens.insert(TOKEN, "prod");
    let tokens = Arc::new(tokens);
    let tel = Arc::new(Telemetry::new());
    let app = mount(
        Router::new(),
        Arc::new(WatchIngestSource::new(store.clone())),
        tokens.clone(),
        PushLimits::default(),
        tel.clone(),
    );
    mount(
        app,
        Arc::new(WatchStateSource::new(store)),
        tokens,
        PushLimits::default(),
        tel,
    )
    .layer(middleware::from_fn_with_state(g, gate))
}

/// The insight on `addr` (an address the test picked; nothing listens on
/// it until this runs).
async fn insight_on(addr: SocketAddr) -> Insight {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn EventStore> = Arc::new(
        SqliteEventStore::open(&dir.path().join("insight.db"), StoreOptions::default())
            .await
            .unwrap(),
    );
    let g = Arc::new(Gate::default());
    let app = router(store.clone(), g.clone());
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Insight {
        store,
        gate: g,
        _dir: dir,
    }
}

async fn free_addr() -> SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

fn config(addr: SocketAddr, spool: &std::path::Path) -> PushConfig {
    let mut c = PushConfig::new(format!("http://{addr}"), TOKEN, spool.to_path_buf());
    c.backoff_min = Duration::from_millis(20);
    c.backoff_max = Duration::from_millis(100);
    c.read_wait = Duration::from_secs(20);
    c
}

fn version(uid: &str, rv: u64) -> ObjectWrite {
    ObjectWrite {
        cluster: "prod".into(),
        group: "apps".into(),
        kind: "Deployment".into(),
        namespace: "shop".into(),
        name: format!("web-{uid}"),
        uid: uid.into(),
        resource_version: rv.to_string(),
        at_ms: 1_000_000 + rv as i64,
        change: if rv == 1 {
            ChangeKind::Created
        } else {
            ChangeKind::Updated
        },
        object: json!({"apiVersion":"apps/v1","kind":"Deployment",
            "metadata":{"name":format!("web-{uid}"),"namespace":"shop","uid":uid,"resourceVersion":rv.to_string()},
            "spec":{"replicas": rv}}),
        managers: Vec::new(),
        gitops: None,
        gap: None,
    }
}

fn cp(rv: u64) -> WatchCheckpoint {
    WatchCheckpoint {
        resource_version: rv.to_string(),
        at_ms: 1_000_000 + rv as i64,
    }
}

/// Writes versions `from..to` of uid `a` (one batch each), a checkpoint
/// after every tenth.
async fn write_versions(agent: &RemoteEventStore, from: u64, to: u64) {
    for rv in from..to {
        agent.write_objects(vec![version("a", rv)]).await.unwrap();
        if rv % 10 == 0 {
            agent
                .set_checkpoint("prod", "apps", "Deployment", cp(rv))
                .await
                .unwrap();
        }
    }
}

fn expected(from: u64, to: u64) -> Vec<(String, String)> {
    (from..to)
        .map(|rv| ("a".to_string(), rv.to_string()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_and_reads_go_through_the_ingest_router() {
    let addr = free_addr().await;
    let insight = insight_on(addr).await;
    let spool = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    let agent = RemoteEventStore::start(
        config(addr, spool.path()),
        Arc::new(Telemetry::new()),
        stop.clone(),
    )
    .unwrap();
    let key = agent.secret_key().await.unwrap();
    assert_eq!(
        key,
        cluster_key(&insight.store.secret_key().await.unwrap(), "prod")
    );
    let mut other = version("b", 1);
    other.cluster = "not-prod".into();
    agent
        .write_objects(vec![version("a", 1), other])
        .await
        .unwrap();
    agent
        .set_checkpoint("prod", "apps", "Deployment", cp(7))
        .await
        .unwrap();
    // Reads wait for the spool: they see the writes before them.
    let got = agent
        .checkpoint("prod", "apps", "Deployment")
        .await
        .unwrap();
    assert_eq!(got, Some(cp(7)));
    let live = agent
        .live_objects("prod", "apps", "Deployment")
        .await
        .unwrap();
    let mut uids: Vec<_> = live.iter().map(|l| l.uid.as_str()).collect();
    uids.sort();
    assert_eq!(uids, ["a", "b"]);
    assert_eq!(agent.pending(), 0);
    // Stored as the token's cluster.
    assert_eq!(
        insight
            .store
            .live_objects("prod", "apps", "Deployment")
            .await
            .unwrap()
            .len(),
        2
    );
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_is_spooled_then_delivered_once_in_order() {
    let addr = free_addr().await;
    let spool = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    // The insight is down (connection refused) while the watch writes.
    let agent = RemoteEventStore::start(
        config(addr, spool.path()),
        Arc::new(Telemetry::new()),
        stop.clone(),
    )
    .unwrap();
    write_versions(&agent, 1, 41).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(agent.pending(), 44);
    // It comes back answering 503 (Retry-After: 1) for a while.
    let insight = insight_on(addr).await;
    insight.gate.mode.store(UNAVAILABLE, Ordering::SeqCst);
    write_versions(&agent, 41, 61).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while insight.gate.refused_503.load(Ordering::SeqCst) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no retry reached the insight"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(agent.pending() >= 60);
    assert!(insight.gate.delivered.lock().unwrap().is_empty());
    // Up: everything arrives, once, in order, checkpoints after their objects.
    insight.gate.mode.store(UP, Ordering::SeqCst);
    assert!(agent.flushed(Duration::from_secs(20)).await);
    assert_eq!(*insight.gate.delivered.lock().unwrap(), expected(1, 61));
    assert_eq!(
        *insight.gate.checkpoints.lock().unwrap(),
        ["10", "20", "30", "40", "50", "60"]
    );
    let cp_stored = insight
        .store
        .checkpoint("prod", "apps", "Deployment")
        .await
        .unwrap();
    assert_eq!(cp_stored, Some(cp(60)));
    let live = insight
        .store
        .live_objects("prod", "apps", "Deployment")
        .await
        .unwrap();
    assert_eq!(live[0].resource_version, "60");
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_agent_resumes_from_the_spool() {
    let addr = free_addr().await;
    let insight = insight_on(addr).await;
    insight.gate.mode.store(UNAVAILABLE, Ordering::SeqCst);
    let spool = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    let agent = RemoteEventStore::start(
        config(addr, spool.path()),
        Arc::new(Telemetry::new()),
        stop.clone(),
    )
    .unwrap();
    write_versions(&agent, 1, 21).await;
    stop.cancel();
    drop(agent);
    tokio::time::sleep(Duration::from_millis(100)).await;
    // A new process on the same spool: the 22 records are still there.
    let stop = CancellationToken::new();
    let agent = RemoteEventStore::start(
        config(addr, spool.path()),
        Arc::new(Telemetry::new()),
        stop.clone(),
    )
    .unwrap();
    assert_eq!(agent.pending(), 22);
    write_versions(&agent, 21, 31).await;
    insight.gate.mode.store(UP, Ordering::SeqCst);
    assert!(agent.flushed(Duration::from_secs(20)).await);
    assert_eq!(*insight.gate.delivered.lock().unwrap(), expected(1, 31));
    // And a third start has nothing left to send.
    stop.cancel();
    drop(agent);
    let stop = CancellationToken::new();
    let agent = RemoteEventStore::start(
        config(addr, spool.path()),
        Arc::new(Telemetry::new()),
        stop.clone(),
    )
    .unwrap();
    assert_eq!(agent.pending(), 0);
    stop.cancel();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_record_is_dropped_alone_and_a_full_spool_pushes_back() {
    let addr = free_addr().await;
    let insight = insight_on(addr).await;
    insight.gate.mode.store(UNAVAILABLE, Ordering::SeqCst);
    let spool = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    let mut cfg = config(addr, spool.path());
    cfg.spool_bytes = 256 << 10;
    cfg.full_wait = Duration::from_millis(200);
    let tel = Arc::new(Telemetry::new());
    let agent = RemoteEventStore::start(cfg, tel.clone(), stop.clone()).unwrap();
    agent.write_objects(vec![version("a", 1)]).await.unwrap();
    agent
        .write_objects(vec![version("poison", 1)])
        .await
        .unwrap();
    agent.write_objects(vec![version("a", 2)]).await.unwrap();
    // Fill the spool: the watch is told to back off.
    let mut refused = None;
    for rv in 3..10_000 {
        if let Err(e) = agent.write_objects(vec![version("a", rv)]).await {
            refused = Some((rv, e));
            break;
        }
    }
    let (last, err) = refused.expect("the spool never filled");
    assert!(err.is_retryable(), "{err}");
    assert!(err.to_string().contains("full"), "{err}");
    // The spool's fill is on /metrics, against its bound.
    let metrics = tel.render();
    assert!(
        metrics.contains(r#"kube_insight_queue_capacity{component="events_spool"} 262144"#),
        "{metrics}"
    );
    let depth: i64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix(r#"kube_insight_queue_depth{component="events_spool"} "#))
        .and_then(|v| v.trim().parse().ok())
        .expect("the spool depth gauge");
    assert!(depth > 200_000, "{depth}");
    insight.gate.mode.store(UP, Ordering::SeqCst);
    assert!(agent.flushed(Duration::from_secs(20)).await);
    // Everything but the poison record, in order.
    assert_eq!(*insight.gate.delivered.lock().unwrap(), expected(1, last));
    // Room again.
    agent.write_objects(vec![version("a", last)]).await.unwrap();
    assert!(agent.flushed(Duration::from_secs(20)).await);
    stop.cancel();
}

async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !f().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn all_changes() -> kube_insight_store::ChangeQuery {
    kube_insight_store::ChangeQuery {
        cluster: Some("prod".into()),
        namespace: None,
        workload: None,
        kind: None,
        range: kube_insight_core::TimeRange::new(0, i64::MAX / 2).unwrap(),
        limit: 10_000,
        include_events: false,
        include_status: true,
    }
}

/// `kube_watch::run`, unchanged, over the push agent: a baseline, then an
/// outage during which a rollout, a creation and a compaction (410 Gone, a
/// re-list whose reads wait for the spool) happen; after it, each change is
/// stored once and nothing is "created" twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watch_runs_unchanged_over_push_through_an_outage() {
    use kube_insight_sources::kube_watch::{self, parse_kinds, WatchConfig};
    use kube_mock::{deployment, KubeMock};
    let dir = tempfile::tempdir().unwrap();
    let mock = KubeMock::start().await;
    let dep = |name: &str, image: &str, time: &str| {
        deployment("shop", name, &format!("u-{name}"), image, 2, "helm", time)
    };
    mock.apply("deployments", dep("api", "api:1", "2024-05-31T10:00:00Z"));
    mock.apply("deployments", dep("old", "old:1", "2024-05-31T10:00:00Z"));
    let addr = free_addr().await;
    let insight = insight_on(addr).await;
    let stop = CancellationToken::new();
    let mut cfg = config(addr, &dir.path().join("spool"));
    cfg.read_wait = Duration::from_millis(500);
    let agent = RemoteEventStore::start(cfg, Arc::new(Telemetry::new()), stop.clone()).unwrap();
    let client = kube_watch::client(Some(&mock.kubeconfig(dir.path())))
        .await
        .unwrap();
    let mut wc = WatchConfig::new("prod", parse_kinds("apps/v1/Deployment").unwrap());
    wc.checkpoint_every = Duration::from_millis(50);
    wc.backoff_min = Duration::from_millis(50);
    wc.backoff_max = Duration::from_millis(200);
    let store: Arc<dyn EventStore> = Arc::new(agent.clone());
    let (s, tel) = (stop.clone(), Arc::new(Telemetry::new()));
    let watch = tokio::spawn(async move { kube_watch::run(client, store, wc, tel, s).await });

    let st = insight.store.clone();
    eventually("the baseline", || {
        let st = st.clone();
        async move {
            st.live_objects("prod", "apps", "Deployment")
                .await
                .unwrap()
                .len()
                == 2
        }
    })
    .await;
    assert!(insight
        .store
        .changes(&all_changes())
        .await
        .unwrap()
        .is_empty());

    insight.gate.mode.store(UNAVAILABLE, Ordering::SeqCst);
    mock.apply("deployments", dep("api", "api:2", "2024-05-31T11:00:00Z"));
    mock.apply("deployments", dep("new", "new:1", "2024-05-31T11:30:00Z"));
    let a = agent.clone();
    eventually("the changes spooled", || {
        let a = a.clone();
        async move { a.pending() >= 2 }
    })
    .await;
    mock.compact(true);
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(insight
        .store
        .changes(&all_changes())
        .await
        .unwrap()
        .is_empty());

    insight.gate.mode.store(UP, Ordering::SeqCst);
    let st = insight.store.clone();
    eventually("the changes stored", || {
        let st = st.clone();
        async move { st.changes(&all_changes()).await.unwrap().len() >= 2 }
    })
    .await;
    // Let the re-list and checkpoints settle, then look again.
    assert!(agent.flushed(Duration::from_secs(20)).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rows = insight.store.changes(&all_changes()).await.unwrap();
    let mut got: Vec<(String, String)> = rows
        .iter()
        .map(|r| (r.name.clone(), r.change.clone()))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("api".to_string(), "updated".to_string()),
            ("new".to_string(), "created".to_string())
        ],
        "{rows:?}"
    );
    let cp_stored = insight
        .store
        .checkpoint("prod", "apps", "Deployment")
        .await
        .unwrap();
    assert!(cp_stored.is_some());
    stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), watch).await;
}

/// A token the insight does not know is an operator's mistake to fix, not a
/// record's fault: deliveries are retried (nothing dropped), and a state
/// read fails naming the URL, the status and the variable to check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_token_is_retried_not_dropped() {
    let addr = free_addr().await;
    let insight = insight_on(addr).await;
    let spool = tempfile::tempdir().unwrap();
    let stop = CancellationToken::new();
    let mut cfg = config(addr, spool.path());
    cfg.token = "not-the-token-of-anyone".into();
    let agent = RemoteEventStore::start(cfg, Arc::new(Telemetry::new()), stop.clone()).unwrap();
    let err = agent.secret_key().await.unwrap_err().to_string();
    assert!(
        err.contains(&format!("http://{addr}/ingest/v1/watch/state")),
        "{err}"
    );
    assert!(err.contains("401"), "{err}");
    assert!(err.contains("KUBE_INSIGHT_PUSH_TOKEN"), "{err}");
    agent.write_objects(vec![version("a", 1)]).await.unwrap();
    assert!(!agent.flushed(Duration::from_millis(800)).await);
    assert_eq!(agent.pending(), 1);
    assert!(insight.gate.delivered.lock().unwrap().is_empty());
    stop.cancel();
    // The record is still spooled for the next start (with the right token).
    drop(agent);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stop = CancellationToken::new();
    let agent = RemoteEventStore::start(
        config(addr, spool.path()),
        Arc::new(Telemetry::new()),
        stop.clone(),
    )
    .unwrap();
    assert!(agent.flushed(Duration::from_secs(20)).await);
    assert_eq!(*insight.gate.delivered.lock().unwrap(), expected(1, 2));
    stop.cancel();
}
