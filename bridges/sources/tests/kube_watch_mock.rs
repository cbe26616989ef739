//! The events watch against a mock API server speaking the list/watch
//! protocol: ADDED, MODIFIED, DELETED, BOOKMARK; disconnect and resume;
//! 410 Gone with a re-list that reconciles a change and a deletion made
//! during the gap; a restart; two replicas writing the same stream; secret
//! hygiene down to the bytes of the store file.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../../tests/support/kube_mock.rs"]
mod kube_mock;

use kube_insight_core::time::parse_time_ms;
use kube_insight_core::TimeRange;
use kube_insight_sources::kube_watch::{self, parse_kinds, WatchConfig};
use kube_insight_store::{ChangeQuery, ChangeRow, EventQuery, EventStore, StoreOptions};
use kube_insight_store_sqlite::events::SqliteEventStore;
use kube_insight_telemetry::Telemetry;
use kube_mock::{configmap, deployment, KubeMock};
use serde_json::Value;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const KINDS: &str = "v1/Event,apps/v1/Deployment,v1/ConfigMap";

struct Running {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn stop(self) {
        self.stop.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
    }
}

async fn start(mock: &KubeMock, dir: &std::path::Path, store: Arc<dyn EventStore>) -> Running {
    let client = kube_watch::client(Some(&mock.kubeconfig(dir)))
        .await
        .unwrap();
    let mut cfg = WatchConfig::new("prod", parse_kinds(KINDS).unwrap());
    cfg.checkpoint_every = Duration::from_millis(50);
    cfg.backoff_min = Duration::from_millis(50);
    cfg.backoff_max = Duration::from_millis(200);
    let stop = CancellationToken::new();
    let s = stop.clone();
    let task = tokio::spawn(async move {
        kube_watch::run(client, store, cfg, Arc::new(Telemetry::new()), s).await
    });
    Running { stop, task }
}

async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn all_changes() -> ChangeQuery {
    ChangeQuery {
        cluster: Some("prod".into()),
        namespace: None,
        workload: None,
        kind: None,
        range: TimeRange::new(0, i64::MAX / 2).unwrap(),
        limit: 10_000,
        include_events: false,
        include_status: true,
    }
}

async fn changes(s: &Arc<dyn EventStore>) -> Vec<ChangeRow> {
    s.changes(&all_changes()).await.unwrap()
}

async fn wait_changes(s: &Arc<dyn EventStore>, n: usize) -> Vec<ChangeRow> {
    let s2 = s.clone();
    eventually(&format!("{n} changes"), move || {
        let s = s2.clone();
        async move {
            let c = changes(&s).await;
            if c.len() < n {
                eprintln!(
                    "have {} changes: {:?}",
                    c.len(),
                    c.iter().map(|r| (&r.name, &r.summary)).collect::<Vec<_>>()
                );
            }
            (c.len() >= n).then_some(c)
        }
    })
    .await
}

async fn store_in(dir: &std::path::Path) -> Arc<dyn EventStore> {
    Arc::new(
        SqliteEventStore::open(&dir.join("insight.db"), StoreOptions::default())
            .await
            .unwrap(),
    )
}

fn image_at(o: &Value) -> String {
    o.pointer("/spec/template/spec/containers/0/image")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn fixture_lines() -> Vec<Value> {
    let text = std::fs::read_to_string(format!(
        "{}/../../../shared/fixtures/k8s-watch-events-stream.jsonl",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn added_modified_deleted_bookmark_and_fixture_events() {
    let dir = tempfile::tempdir().unwrap();
    let mock = KubeMock::start().await;
    mock.apply(
        "deployments",
        deployment(
            "shop",
            "api",
            "u-api",
            "api:1.4",
            3,
            "argocd-controller",
            "2024-05-31T10:00:00Z",
        ),
    );
    mock.apply(
        "deployments",
        deployment(
            "shop",
            "old",
            "u-old",
            "old:1",
            1,
            "kubectl",
            "2024-05-31T10:00:00Z",
        ),
    );
    let store = store_in(dir.path()).await;
    let w = start(&mock, dir.path(), store.clone()).await;
    // The initial list is a baseline: no "created" rows.
    let s2 = store.clone();
    eventually("baseline", move || {
        let s = s2.clone();
        async move {
            s.live_objects("prod", "apps", "Deployment")
                .await
                .unwrap()
                .len()
                .eq(&2)
                .then_some(())
        }
    })
    .await;
    assert!(changes(&store).await.is_empty());
    // MODIFIED (a rollout), ADDED, DELETED.
    mock.apply(
        "deployments",
        deployment(
            "shop",
            "api",
            "u-api",
            "api:1.5",
            3,
            "argocd-controller",
            "2024-05-31T11:00:00Z",
        ),
    );
    mock.apply(
        "deployments",
        deployment(
            "shop",
            "new",
            "u-new",
            "new:1",
            1,
            "helm",
            "2024-05-31T11:30:00Z",
        ),
    );
    mock.delete("deployments", "u-old");
    let rows = wait_changes(&store, 3).await;
    let summaries: Vec<&str> = rows.iter().map(|r| r.summary.as_str()).collect();
    assert!(
        summaries.contains(&"image api:1.4 → api:1.5 by argocd"),
        "{summaries:?}"
    );
    assert!(
        rows.iter()
            .any(|r| r.name == "new" && r.change == "created"),
        "{rows:?}"
    );
    assert!(
        rows.iter()
            .any(|r| r.name == "old" && r.change == "deleted"),
        "{rows:?}"
    );
    let t = parse_time_ms("2024-05-31T10:30:00Z").unwrap();
    assert_eq!(
        image_at(
            &store
                .object_at(None, "deploy", "shop", "api", t)
                .await
                .unwrap()
                .unwrap()
                .object
        ),
        "api:1.4"
    );
    let t = parse_time_ms("2024-05-31T11:00:00Z").unwrap();
    assert_eq!(
        image_at(
            &store
                .object_at(None, "deploy", "shop", "api", t)
                .await
                .unwrap()
                .unwrap()
                .object
        ),
        "api:1.5"
    );
    // Events from the fixture stream: two events, the first repeated (count 7 → 8).
    for line in fixture_lines() {
        mock.raw_event("events", &line);
    }
    let s2 = store.clone();
    let evs = eventually("fixture events", move || {
        let s = s2.clone();
        async move {
            let q = EventQuery {
                cluster: None,
                namespace: None,
                kind: None,
                name: None,
                reason: None,
                event_type: None,
                range: TimeRange::new(0, i64::MAX / 2).unwrap(),
                limit: 100,
            };
            let e = s.query_events(&q).await.unwrap();
            (e.len() == 2 && e.iter().any(|e| e.count == 8)).then_some(e)
        }
    })
    .await;
    let backoff = evs.iter().find(|e| e.reason == "BackOff").unwrap();
    assert_eq!(
        (backoff.count, backoff.last_ms),
        (8, parse_time_ms("2024-05-31T16:13:42Z").unwrap())
    );
    let sched = evs.iter().find(|e| e.reason == "FailedScheduling").unwrap();
    assert_eq!(sched.count, 4);
    // A bookmark advances the resume point: after a disconnect, the watch
    // resumes from the bookmark's resourceVersion, without a re-list.
    let bm = mock.bookmark("deployments");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let lists_before = mock
        .requests()
        .iter()
        .filter(|r| r.starts_with("LIST deployments"))
        .count();
    mock.disconnect();
    let m2 = mock.clone();
    eventually("resume from the bookmark", move || {
        let m = m2.clone();
        async move {
            m.requests()
                .contains(&format!("WATCH deployments {bm}"))
                .then_some(())
        }
    })
    .await;
    assert_eq!(
        mock.requests()
            .iter()
            .filter(|r| r.starts_with("LIST deployments"))
            .count(),
        lists_before,
        "no re-list after a plain disconnect"
    );
    // A change after the resume is stored once.
    mock.apply(
        "deployments",
        deployment(
            "shop",
            "api",
            "u-api",
            "api:1.6",
            3,
            "argocd-controller",
            "2024-05-31T12:00:00Z",
        ),
    );
    let rows = wait_changes(&store, 4).await;
    assert_eq!(
        rows.iter()
            .filter(|r| r.summary.starts_with("image api:1.5 → api:1.6"))
            .count(),
        1
    );
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_relists_and_reconciles_the_gap() {
    for gone_as_http in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let mock = KubeMock::start().await;
        mock.apply(
            "deployments",
            deployment(
                "shop",
                "api",
                "u-api",
                "api:1.4",
                3,
                "argocd-controller",
                "2024-05-31T10:00:00Z",
            ),
        );
        mock.apply(
            "deployments",
            deployment(
                "shop",
                "doomed",
                "u-doomed",
                "d:1",
                1,
                "kubectl",
                "2024-05-31T10:00:00Z",
            ),
        );
        mock.apply(
            "deployments",
            deployment(
                "shop",
                "steady",
                "u-steady",
                "s:1",
                1,
                "kubectl",
                "2024-05-31T10:00:00Z",
            ),
        );
        let store = store_in(dir.path()).await;
        let w = start(&mock, dir.path(), store.clone()).await;
        let s2 = store.clone();
        eventually("baseline", move || {
            let s = s2.clone();
            async move {
                s.live_objects("prod", "apps", "Deployment")
                    .await
                    .unwrap()
                    .len()
                    .eq(&3)
                    .then_some(())
            }
        })
        .await;
        tokio::time::sleep(Duration::from_millis(200)).await; // a checkpoint while in sync
        let t1_floor = kube_insight_core::time::now_ms() - 1000;
        // The gap: the watch sees nothing; a change, a deletion and a
        // creation happen; then history is compacted (410 Gone).
        mock.hide(true);
        mock.apply(
            "deployments",
            deployment(
                "shop",
                "api",
                "u-api",
                "api:1.5",
                3,
                "argocd-controller",
                "2024-05-31T11:00:00Z",
            ),
        );
        mock.apply(
            "deployments",
            deployment(
                "shop",
                "api",
                "u-api",
                "api:1.6",
                3,
                "argocd-controller",
                "2024-05-31T11:05:00Z",
            ),
        );
        mock.delete("deployments", "u-doomed");
        let mut born = deployment(
            "shop",
            "born",
            "u-born",
            "b:1",
            1,
            "kubectl",
            "2024-05-31T11:10:00Z",
        );
        born["metadata"]["creationTimestamp"] = Value::String(
            kube_insight_core::time::format_rfc3339_ms(kube_insight_core::time::now_ms() + 1000)
                .replace(".000Z", "Z"),
        );
        tokio::time::sleep(Duration::from_millis(1100)).await;
        mock.apply("deployments", born);
        mock.hide(false);
        mock.compact(gone_as_http);
        let rows = wait_changes(&store, 3).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let rows2 = changes(&store).await;
        assert_eq!(
            rows.len(),
            rows2.len(),
            "reconciliation is stable: {rows2:?}"
        );
        let api: Vec<&ChangeRow> = rows.iter().filter(|r| r.name == "api").collect();
        assert_eq!(
            api.len(),
            1,
            "one version for the changes during the gap: {api:?}"
        );
        assert!(
            api[0].summary.starts_with("changed between "),
            "{}",
            api[0].summary
        );
        assert!(
            api[0].summary.contains("image api:1.4 → api:1.6"),
            "{}",
            api[0].summary
        );
        let doomed: Vec<&ChangeRow> = rows.iter().filter(|r| r.name == "doomed").collect();
        assert_eq!(doomed.len(), 1);
        assert_eq!(doomed[0].change, "deleted");
        assert!(
            doomed[0].summary.starts_with("deleted between "),
            "{}",
            doomed[0].summary
        );
        assert!(
            doomed[0].gap_from_ms.unwrap() >= t1_floor,
            "t1 is the last checkpoint"
        );
        let born: Vec<&ChangeRow> = rows.iter().filter(|r| r.name == "born").collect();
        assert_eq!(born.len(), 1);
        assert_eq!(born[0].change, "created");
        assert!(
            rows.iter().all(|r| r.name != "steady"),
            "a re-list never produces spurious records: {rows:?}"
        );
        assert!(
            mock.requests()
                .iter()
                .filter(|r| r.starts_with("LIST deployments"))
                .count()
                >= 2
        );
        w.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_reconciles_and_two_replicas_store_each_change_once() {
    let dir = tempfile::tempdir().unwrap();
    let mock = KubeMock::start().await;
    mock.apply(
        "deployments",
        deployment(
            "shop",
            "api",
            "u-api",
            "api:1.4",
            3,
            "argocd-controller",
            "2024-05-31T10:00:00Z",
        ),
    );
    mock.apply(
        "deployments",
        deployment(
            "shop",
            "steady",
            "u-steady",
            "s:1",
            1,
            "kubectl",
            "2024-05-31T10:00:00Z",
        ),
    );
    let store = store_in(dir.path()).await;
    let w = start(&mock, dir.path(), store.clone()).await;
    let s2 = store.clone();
    eventually("baseline", move || {
        let s = s2.clone();
        async move {
            s.live_objects("prod", "apps", "Deployment")
                .await
                .unwrap()
                .len()
                .eq(&2)
                .then_some(())
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    w.stop().await;
    // While down: a change.
    mock.apply(
        "deployments",
        deployment(
            "shop",
            "api",
            "u-api",
            "api:1.5",
            3,
            "argocd-controller",
            "2024-05-31T11:00:00Z",
        ),
    );
    // Two replicas (separate store handles on the same file) come up.
    let store_b = store_in(dir.path()).await;
    let a = start(&mock, dir.path(), store.clone()).await;
    let b = start(&mock, dir.path(), store_b.clone()).await;
    let rows = wait_changes(&store, 1).await;
    assert!(
        rows[0].summary.contains("image api:1.4 → api:1.5"),
        "{rows:?}"
    );
    // Both replicas listed and watch (one watch before the restart).
    let m2 = mock.clone();
    eventually("both replicas watching", move || {
        let m = m2.clone();
        async move {
            (m.requests()
                .iter()
                .filter(|r| r.starts_with("WATCH deployments"))
                .count()
                >= 3)
                .then_some(())
        }
    })
    .await;
    assert_eq!(
        changes(&store).await.len(),
        1,
        "the second replica's list adds nothing"
    );
    for i in 6..12 {
        mock.apply(
            "deployments",
            deployment(
                "shop",
                "api",
                "u-api",
                &format!("api:1.{i}"),
                3,
                "argocd-controller",
                &format!("2024-05-31T12:{i:02}:00Z"),
            ),
        );
    }
    let rows = wait_changes(&store, 7).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rows_later = changes(&store_b).await;
    assert_eq!(
        rows_later.len(),
        7,
        "each change once with two replicas: {rows_later:?}"
    );
    assert!(rows.iter().all(|r| r.name == "api"), "{rows:?}");
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_appear_nowhere_in_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let mock = KubeMock::start().await;
    mock.apply(
        "deployments",
        deployment(
            "shop",
            "api",
            "u-api",
            "api:1.4",
            3,
            "argocd-controller",
            "2024-05-31T10:00:00Z",
        ),
    );
    mock.apply(
        "configmaps",
        configmap(
            "shop",
            "cfg",
            "u-cfg",
            "db_password: cm-hunter2-value",
            "2024-05-31T10:00:00Z",
        ),
    );
    let store = store_in(dir.path()).await;
    let w = start(&mock, dir.path(), store.clone()).await;
    let s2 = store.clone();
    eventually("baseline", move || {
        let s = s2.clone();
        async move {
            let d = s
                .live_objects("prod", "apps", "Deployment")
                .await
                .unwrap()
                .len();
            let c = s.live_objects("prod", "", "ConfigMap").await.unwrap().len();
            (d == 1 && c == 1).then_some(())
        }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    mock.apply(
        "deployments",
        deployment(
            "shop",
            "api",
            "u-api",
            "api:1.5",
            3,
            "argocd-controller",
            "2024-05-31T11:00:00Z",
        ),
    );
    mock.apply(
        "configmaps",
        configmap(
            "shop",
            "cfg",
            "u-cfg",
            "db_password: cm-hunter2-changed",
            "2024-05-31T11:00:00Z",
        ),
    );
    let rows = wait_changes(&store, 2).await;
    let cm = rows.iter().find(|r| r.kind == "ConfigMap").unwrap();
    assert_eq!(cm.summary, "data keys changed: config.yaml by kubectl");
    // Nor in any answer: objects at any time and the patches.
    let mut answers = serde_json::to_string(
        &rows
            .iter()
            .map(|r| (&r.summary, &r.patch))
            .collect::<Vec<_>>(),
    )
    .unwrap();
    for t in ["2024-05-31T10:30:00Z", "2024-05-31T11:00:00Z"] {
        let t = parse_time_ms(t).unwrap();
        for (k, n) in [("deployment", "api"), ("configmap", "cfg")] {
            answers.push_str(
                &store
                    .object_at(None, k, "shop", n, t)
                    .await
                    .unwrap()
                    .unwrap()
                    .object
                    .to_string(),
            );
        }
    }
    assert!(answers.contains("sha256:"), "{answers}");
    w.stop().await;
    drop(store);
    for secret in ["s3cr3t-hunter2", "cm-hunter2"] {
        assert!(!answers.contains(secret), "{secret} in an answer");
    }
    for secret in ["s3cr3t-hunter2", "cm-hunter2"] {
        for e in std::fs::read_dir(dir.path()).unwrap() {
            let p = e.unwrap().path();
            let bytes = std::fs::read(&p).unwrap();
            assert!(
                !String::from_utf8_lossy(&bytes).contains(secret),
                "{secret} found in {}",
                p.display()
            );
        }
    }
}
