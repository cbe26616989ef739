//! The events and object-change cases of the storage conformance suite:
//! written once, run by every [`EventStore`] backend.
//!
//! ```ignore
//! kube_insight_store::event_store_conformance_suite!(|options: StoreOptions| async move {
//!     let dir = tempfile::tempdir().unwrap();
//!     let store: Arc<dyn EventStore> = Arc::new(open_my_backend(dir.path(), options).await.unwrap());
//!     (store, dir) // the second element is kept alive for the test
//! });
//! ```

#![allow(clippy::unwrap_used, clippy::expect_used)] // a panic is a failing case

use crate::events::{ChangeQuery, EventQuery, EventStore, ObjectWrite, WatchCheckpoint};
use crate::StoreOptions;
use kube_insight_core::event::{
    gitops_of, managers_of, sanitize, ChangeKind, EventOrigin, KubeEvent, ObjectRef,
};
use kube_insight_core::TimeRange;
use serde_json::{json, Value};
use std::sync::Arc;

pub type DynEventStore = Arc<dyn EventStore>;

/// Every case, in the order the macro runs them.
pub const CASES: &[&str] = &[
    "events_dedup_by_uid_and_occurrences",
    "events_filters",
    "events_synthetic_twins",
    "versions_idempotent_on_rv",
    "object_at_before_at_between",
    "object_at_bounded_by_keyframes",
    "versions_unchanged_and_stale",
    "changes_timeline",
    "changes_leave_out_status",
    "deleted_in_gap_and_live_objects",
    "checkpoints",
    "events_retention",
    "secret_key_is_made_once",
];

/// The options a case runs with.
pub fn options_for(case: &str) -> StoreOptions {
    let mut o = StoreOptions::default();
    if case == "events_retention" {
        o.retention.events = std::time::Duration::from_secs(86_400);
    }
    o
}

/// Expands to one `#[tokio::test]` per case. The argument is a callable
/// taking [`StoreOptions`] and returning a future of `(DynEventStore,
/// guard)`; with `optional`, it takes `(case_name, options)` and returns
/// `Option<(DynEventStore, guard)>`, `None` (after saying why) skipping the
/// case (a backend that needs a server).
#[macro_export]
macro_rules! event_store_conformance_suite {
    // A backend that needs a server: the factory takes the case's name and
    // returns `None` (after saying why) when there is none; the cases skip.
    (optional $factory:expr) => {
        $crate::event_store_conformance_suite!(@list optional $factory);
    };
    (@list $mode:ident $factory:expr) => {
        $crate::event_store_conformance_suite!(@$mode $factory;
            events_dedup_by_uid_and_occurrences,
            events_filters,
            events_synthetic_twins,
            versions_idempotent_on_rv,
            object_at_before_at_between,
            object_at_bounded_by_keyframes,
            versions_unchanged_and_stale,
            changes_timeline,
            changes_leave_out_status,
            deleted_in_gap_and_live_objects,
            checkpoints,
            events_retention,
            secret_key_is_made_once,
        );
    };
    (@optional $factory:expr; $($case:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let options = $crate::conformance_events::options_for(stringify!($case));
                let Some((store, _guard)) = ($factory)(stringify!($case), options).await else {
                    return;
                };
                $crate::conformance_events::$case(store).await;
            }
        )+
    };
    (@cases $factory:expr; $($case:ident),+ $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let options = $crate::conformance_events::options_for(stringify!($case));
                let (store, _guard) = ($factory)(options).await;
                $crate::conformance_events::$case(store).await;
            }
        )+
    };
    ($factory:expr) => {
        $crate::event_store_conformance_suite!(@list cases $factory);
    };
}

// ---------------------------------------------------------------------------
// Helpers

const T0: i64 = 1_717_171_200_000; // 2024-05-31T16:00:00Z

fn all() -> TimeRange {
    TimeRange::new(0, i64::MAX / 2).unwrap()
}

/// A watched BackOff event of pod `api-…` at T0 (shared with backend unit tests).
pub fn event(uid: &str, count: u64, last_ms: i64) -> KubeEvent {
    KubeEvent {
        cluster: "prod".into(),
        uid: uid.into(),
        namespace: "shop".into(),
        name: format!("api-5f6d7c8b9-qwz7p.{uid}"),
        reason: "BackOff".into(),
        event_type: "Warning".into(),
        message: "Back-off restarting failed container api".into(),
        involved: ObjectRef {
            kind: "Pod".into(),
            namespace: "shop".into(),
            name: "api-5f6d7c8b9-qwz7p".into(),
            uid: "pod-uid".into(),
            api_version: "v1".into(),
            field_path: String::new(),
        },
        source_component: "kubelet".into(),
        source_host: "node-1".into(),
        count,
        first_ms: T0,
        last_ms,
        resource_version: "1".into(),
        origin: EventOrigin::Watch,
    }
}

fn equery() -> EventQuery {
    EventQuery {
        cluster: None,
        namespace: None,
        kind: None,
        name: None,
        reason: None,
        event_type: None,
        range: all(),
        limit: 1000,
    }
}

fn cquery() -> ChangeQuery {
    ChangeQuery {
        cluster: None,
        namespace: None,
        workload: None,
        kind: None,
        range: all(),
        limit: 1000,
        include_events: true,
        include_status: true,
    }
}

/// A raw Deployment as the API server sends it.
pub fn raw_deployment(image: &str, replicas: u64, manager: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {
            "name": "api", "namespace": "shop", "uid": "dep-uid", "resourceVersion": "1",
            "creationTimestamp": "2024-05-31T15:00:00Z",
            "annotations": {"argocd.argoproj.io/tracking-id": "shop-api:apps/Deployment:shop/api",
                            "kubectl.kubernetes.io/last-applied-configuration": "{\"password\":\"hunter2\"}"},
            "managedFields": [{"manager": manager, "operation": "Apply", "time": "2024-05-31T16:00:00Z", "fieldsType": "FieldsV1",
                "fieldsV1": {"f:spec": {"f:replicas": {}, "f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"api\"}": {"f:image": {}}}}}}}}]
        },
        "spec": {"replicas": replicas, "template": {"metadata": {"labels": {"app": "api"}}, "spec": {"containers": [
            {"name": "api", "image": image, "env": [{"name": "DB_PASSWORD", "value": "hunter2"}]}]}}},
        "status": {"replicas": replicas, "observedGeneration": 7}
    })
}

fn write_of(raw: &Value, rv: &str, at_ms: i64, change: ChangeKind) -> ObjectWrite {
    let kind = raw["kind"].as_str().unwrap_or("").to_string();
    ObjectWrite {
        cluster: "prod".into(),
        group: raw["apiVersion"]
            .as_str()
            .unwrap_or("")
            .split_once('/')
            .map(|x| x.0.to_string())
            .unwrap_or_default(),
        kind: kind.clone(),
        namespace: raw["metadata"]["namespace"].as_str().unwrap_or("").into(),
        name: raw["metadata"]["name"].as_str().unwrap_or("").into(),
        uid: raw["metadata"]["uid"].as_str().unwrap_or("").into(),
        resource_version: rv.into(),
        at_ms,
        change,
        object: sanitize(
            &kind,
            raw,
            &kube_insight_core::event::SecretKey::from_bytes(&[7; 32]).unwrap(),
        )
        .unwrap(),
        managers: managers_of(raw),
        gitops: gitops_of(raw),
        gap: None,
    }
}

fn dep(image: &str, replicas: u64, rv: &str, at_ms: i64, change: ChangeKind) -> ObjectWrite {
    write_of(
        &raw_deployment(image, replicas, "argocd-controller"),
        rv,
        at_ms,
        change,
    )
}

fn pod(name: &str, uid: &str, rv: &str, at_ms: i64, digest: &str) -> ObjectWrite {
    let rs = name.rsplit_once('-').map(|x| x.0).unwrap_or(name);
    let hash = rs.rsplit_once('-').map(|x| x.1).unwrap_or("");
    let raw = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "shop", "uid": uid, "labels": {"pod-template-hash": hash},
                     "ownerReferences": [{"kind": "ReplicaSet", "name": rs, "controller": true}]},
        "spec": {"nodeName": "node-1", "containers": [{"name": "api", "image": "api:1.5"}]},
        "status": {"phase": "Running", "containerStatuses": [{"name": "api", "image": "api:1.5", "imageID": format!("api@sha256:{digest}"), "restartCount": 0, "state": {"running": {}}}]}
    });
    write_of(&raw, rv, at_ms, ChangeKind::Updated)
}

// ---------------------------------------------------------------------------
// Cases

pub async fn events_dedup_by_uid_and_occurrences(s: DynEventStore) {
    let o = s
        .write_events(vec![event("e1", 7, T0 + 1000)])
        .await
        .unwrap();
    assert_eq!(
        (o.events_created, o.occurrences_written, o.duplicates),
        (1, 1, 0)
    );
    // The same event again (re-list, second replica, kube-eventer): stored once.
    let o = s
        .write_events(vec![event("e1", 7, T0 + 1000), event("e1", 7, T0 + 1000)])
        .await
        .unwrap();
    assert_eq!(
        (o.events_created, o.occurrences_written, o.duplicates),
        (0, 0, 2)
    );
    // count++ appends an occurrence.
    let o = s
        .write_events(vec![event("e1", 8, T0 + 60_000)])
        .await
        .unwrap();
    assert_eq!((o.events_created, o.occurrences_written), (0, 1));
    let rows = s.query_events(&equery()).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].count, 8);
    assert_eq!(rows[0].first_ms, T0);
    assert_eq!(rows[0].last_ms, T0 + 60_000);
    assert_eq!(rows[0].involved.name, "api-5f6d7c8b9-qwz7p");
}

pub async fn events_filters(s: DynEventStore) {
    let mut a = event("a", 1, T0 + 10_000);
    a.event_type = "Normal".into();
    a.reason = "Pulled".into();
    let mut b = event("b", 1, T0 + 20_000);
    b.involved.kind = "Node".into();
    b.involved.name = "node-1".into();
    b.involved.namespace = String::new();
    b.namespace = "default".into();
    let c = event("c", 3, T0 + 30_000);
    s.write_events(vec![a, b, c]).await.unwrap();
    let uids = |rows: Vec<KubeEvent>| rows.into_iter().map(|e| e.uid).collect::<Vec<_>>();
    assert_eq!(
        uids(s.query_events(&equery()).await.unwrap()),
        ["c", "b", "a"],
        "newest first"
    );
    let q = EventQuery {
        kind: Some("po".into()),
        ..equery()
    };
    assert_eq!(uids(s.query_events(&q).await.unwrap()), ["c", "a"]);
    let q = EventQuery {
        kind: Some("nodes".into()),
        ..equery()
    };
    assert_eq!(uids(s.query_events(&q).await.unwrap()), ["b"]);
    let q = EventQuery {
        event_type: Some("Normal".into()),
        ..equery()
    };
    assert_eq!(uids(s.query_events(&q).await.unwrap()), ["a"]);
    let q = EventQuery {
        reason: Some("BackOff".into()),
        namespace: Some("shop".into()),
        ..equery()
    };
    assert_eq!(uids(s.query_events(&q).await.unwrap()), ["c"]);
    let q = EventQuery {
        name: Some("node-1".into()),
        ..equery()
    };
    assert_eq!(uids(s.query_events(&q).await.unwrap()), ["b"]);
    let q = EventQuery {
        cluster: Some("other".into()),
        ..equery()
    };
    assert!(s.query_events(&q).await.unwrap().is_empty());
    // Overlap: "c" lasted T0..T0+30s, so a window inside it finds it.
    let q = EventQuery {
        range: TimeRange::new(T0 + 5_000, T0 + 9_000).unwrap(),
        ..equery()
    };
    assert_eq!(uids(s.query_events(&q).await.unwrap()), ["c", "b", "a"]);
    let q = EventQuery {
        range: TimeRange::new(T0 + 25_000, T0 + 40_000).unwrap(),
        ..equery()
    };
    assert_eq!(uids(s.query_events(&q).await.unwrap()), ["c"]);
    let q = EventQuery {
        range: TimeRange::new(T0 - 9_000, T0 - 1).unwrap(),
        ..equery()
    };
    assert!(s.query_events(&q).await.unwrap().is_empty());
    let q = EventQuery {
        limit: 2,
        ..equery()
    };
    assert_eq!(s.query_events(&q).await.unwrap().len(), 2);
}

fn synthetic(last_ms: i64) -> KubeEvent {
    let mut e = event("", 1, last_ms);
    e.uid = KubeEvent::synthetic_uid("Pod", "", "", &e.reason, &e.message);
    e.namespace = String::new();
    e.involved.namespace = String::new();
    e.involved.name = String::new();
    e.first_ms = last_ms;
    e.origin = EventOrigin::KubeEventer;
    e
}

pub async fn events_synthetic_twins(s: DynEventStore) {
    // Watch first, then kube-eventer's uid-less copy: dropped.
    s.write_events(vec![event("w1", 7, T0 + 1000)])
        .await
        .unwrap();
    let o = s.write_events(vec![synthetic(T0 + 1000)]).await.unwrap();
    assert_eq!(o.matched_watch, 1);
    assert_eq!(s.query_events(&equery()).await.unwrap().len(), 1);
    // kube-eventer first (another, later occurrence), then the watch: the
    // synthetic row gives way.
    let o = s.write_events(vec![synthetic(T0 + 600_000)]).await.unwrap();
    assert_eq!(o.occurrences_written, 1);
    let rows = s.query_events(&equery()).await.unwrap();
    assert_eq!(rows.len(), 2);
    assert!(rows[0].uid.starts_with("synthetic:"));
    s.write_events(vec![event("w1", 8, T0 + 600_000)])
        .await
        .unwrap();
    let rows = s.query_events(&equery()).await.unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!((rows[0].uid.as_str(), rows[0].count), ("w1", 8));
    // Unrelated uid-less events are kept, and repeats of one are occurrences.
    let mut other = synthetic(T0 + 900_000);
    other.reason = "Killing".into();
    other.uid = KubeEvent::synthetic_uid("Pod", "", "", "Killing", &other.message);
    let mut again = other.clone();
    again.last_ms = T0 + 960_000;
    s.write_events(vec![other.clone(), other, again])
        .await
        .unwrap();
    let q = EventQuery {
        reason: Some("Killing".into()),
        ..equery()
    };
    let rows = s.query_events(&q).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].count, 2);
}

pub async fn versions_idempotent_on_rv(s: DynEventStore) {
    let writes = vec![
        dep("api:1.4", 3, "100", T0, ChangeKind::Observed),
        dep("api:1.5", 3, "105", T0 + 10_000, ChangeKind::Updated),
        dep("api:1.6", 3, "110", T0 + 20_000, ChangeKind::Updated),
    ];
    // Two replicas writing the same stream at once.
    let (a, b) = tokio::join!(
        s.write_objects(writes.clone()),
        s.write_objects(writes.clone())
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.versions_written + b.versions_written, 3, "{a:?} {b:?}");
    assert_eq!(a.duplicates + b.duplicates, 3);
    // And one at a time, later.
    for w in writes {
        let o = s.write_objects(vec![w]).await.unwrap();
        assert_eq!(o.versions_written, 0);
    }
    let rows = s.changes(&cquery()).await.unwrap();
    assert_eq!(rows.len(), 2, "observed baseline is not a change: {rows:?}");
    assert_eq!(rows[0].summary, "image api:1.5 → api:1.6 by argocd");
    assert_eq!(rows[1].summary, "image api:1.4 → api:1.5 by argocd");
}

pub async fn object_at_before_at_between(s: DynEventStore) {
    s.write_objects(vec![
        dep("api:1.4", 3, "100", T0, ChangeKind::Created),
        dep("api:1.5", 3, "105", T0 + 10_000, ChangeKind::Updated),
    ])
    .await
    .unwrap();
    let image = |o: &Value| {
        o.pointer("/spec/template/spec/containers/0/image")
            .unwrap()
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(
        s.object_at(None, "deploy", "shop", "api", T0 - 1)
            .await
            .unwrap()
            .is_none(),
        "before creation"
    );
    let at = s
        .object_at(None, "Deployment", "shop", "api", T0)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(image(&at.object), "api:1.4");
    assert_eq!(
        (at.resource_version.as_str(), at.version_ms, at.change),
        ("100", T0, ChangeKind::Created)
    );
    let at = s
        .object_at(Some("prod"), "deployments", "shop", "api", T0 + 9_999)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(image(&at.object), "api:1.4", "between versions");
    let at = s
        .object_at(None, "deployment", "shop", "api", T0 + 10_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(image(&at.object), "api:1.5");
    assert_eq!(at.manager.as_deref(), Some("argocd-controller"));
    assert!(s
        .object_at(Some("other"), "deployment", "shop", "api", T0 + 10_000)
        .await
        .unwrap()
        .is_none());
    assert!(s
        .object_at(None, "statefulset", "shop", "api", T0 + 10_000)
        .await
        .unwrap()
        .is_none());
    // Deleted: gone after, still there before.
    s.write_objects(vec![dep(
        "api:1.5",
        3,
        "120",
        T0 + 20_000,
        ChangeKind::Deleted,
    )])
    .await
    .unwrap();
    assert!(s
        .object_at(None, "deployment", "shop", "api", T0 + 20_000)
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        image(
            &s.object_at(None, "deployment", "shop", "api", T0 + 19_999)
                .await
                .unwrap()
                .unwrap()
                .object
        ),
        "api:1.5"
    );
    // Re-created under a new uid.
    let mut again = dep("api:2.0", 1, "130", T0 + 30_000, ChangeKind::Created);
    again.uid = "dep-uid-2".into();
    s.write_objects(vec![again]).await.unwrap();
    let at = s
        .object_at(None, "deployment", "shop", "api", T0 + 40_000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (image(&at.object).as_str(), at.uid.as_str()),
        ("api:2.0", "dep-uid-2")
    );
}

pub async fn object_at_bounded_by_keyframes(s: DynEventStore) {
    let n = 45u64;
    let writes: Vec<ObjectWrite> = (0..n)
        .map(|i| {
            dep(
                &format!("api:1.{i}"),
                i + 1,
                &(1000 + i).to_string(),
                T0 + i as i64 * 1000,
                if i == 0 {
                    ChangeKind::Created
                } else {
                    ChangeKind::Updated
                },
            )
        })
        .collect();
    let o = s.write_objects(writes.clone()).await.unwrap();
    assert_eq!(o.versions_written, n);
    for (i, w) in writes.iter().enumerate() {
        let at = s
            .object_at(
                None,
                "deployment",
                "shop",
                "api",
                T0 + i as i64 * 1000 + 500,
            )
            .await
            .unwrap()
            .unwrap();
        assert_eq!(at.object, w.object, "version {i}");
    }
}

pub async fn versions_unchanged_and_stale(s: DynEventStore) {
    s.write_objects(vec![dep("api:1.4", 3, "100", T0, ChangeKind::Created)])
        .await
        .unwrap();
    // A status heartbeat: the sanitized object is the same.
    let mut raw = raw_deployment("api:1.4", 3, "argocd-controller");
    raw["status"]["observedGeneration"] = json!(8);
    let o = s
        .write_objects(vec![write_of(&raw, "101", T0 + 1000, ChangeKind::Updated)])
        .await
        .unwrap();
    assert_eq!((o.versions_written, o.unchanged), (0, 1));
    s.write_objects(vec![dep(
        "api:1.5",
        3,
        "105",
        T0 + 2000,
        ChangeKind::Updated,
    )])
    .await
    .unwrap();
    // An older resourceVersion arriving late.
    let o = s
        .write_objects(vec![dep(
            "api:1.3",
            3,
            "99",
            T0 + 3000,
            ChangeKind::Updated,
        )])
        .await
        .unwrap();
    assert_eq!((o.versions_written, o.stale), (0, 1));
    let at = s
        .object_at(None, "deployment", "shop", "api", T0 + 5000)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        at.object
            .pointer("/spec/template/spec/containers/0/image")
            .unwrap(),
        "api:1.5"
    );
}

pub async fn changes_timeline(s: DynEventStore) {
    s.write_objects(vec![
        dep("api:1.4", 3, "100", T0, ChangeKind::Observed),
        // Two rollouts within one second.
        dep("api:1.5", 3, "105", T0 + 10_000, ChangeKind::Updated),
        dep("api:1.6", 3, "106", T0 + 10_400, ChangeKind::Updated),
        dep("api:1.6", 5, "107", T0 + 20_000, ChangeKind::Updated),
        pod(
            "api-5f6d7c8b9-qwz7p",
            "pod-1",
            "200",
            T0 + 1_000,
            "aaaaaaaaaaaaaaaa",
        ),
        pod(
            "api-5f6d7c8b9-qwz7p",
            "pod-1",
            "201",
            T0 + 15_000,
            "bbbbbbbbbbbbbbbb",
        ),
        pod(
            "web-7d9f8c6b5-abcde",
            "pod-2",
            "300",
            T0 + 1_000,
            "cccccccccccccccc",
        ),
        pod(
            "web-7d9f8c6b5-abcde",
            "pod-2",
            "301",
            T0 + 16_000,
            "dddddddddddddddd",
        ),
    ])
    .await
    .unwrap();
    s.write_events(vec![event("e1", 2, T0 + 12_000)])
        .await
        .unwrap();
    let rows = s.changes(&cquery()).await.unwrap();
    let brief: Vec<(i64, &str, &str)> = rows
        .iter()
        .map(|r| (r.at_ms - T0, r.category.as_str(), r.summary.as_str()))
        .collect();
    // Exact expectations, newest first.
    assert_eq!(brief[0], (20_000, "object", "replicas 3 → 5 by argocd"));
    assert_eq!(brief[1].0, 16_000);
    assert_eq!(brief[1].1, "image_digest");
    assert_eq!(
        brief[2],
        (
            15_000,
            "image_digest",
            "image digest of api:1.5 (container api) sha256:aaaaaaaaaaaaaaaa → sha256:bbbbbbbbbbbbbbbb"
        )
    );
    assert_eq!(
        brief[3],
        (
            12_000,
            "event",
            "BackOff: Back-off restarting failed container api (x2)"
        )
    );
    assert_eq!(
        brief[4],
        (10_400, "object", "image api:1.5 → api:1.6 by argocd")
    );
    assert_eq!(
        brief[5],
        (10_000, "object", "image api:1.4 → api:1.5 by argocd")
    );
    assert_eq!(rows.len(), 6);
    let p = rows[5].patch.as_ref().unwrap();
    assert_eq!(
        p.pointer("/spec/template/spec/containers").unwrap()[0]["image"],
        "api:1.5"
    );
    assert_eq!(rows[5].manager.as_deref(), Some("argocd-controller"));
    assert_eq!(rows[5].gitops.as_deref(), Some("argocd app=shop-api"));
    // Workload: the Deployment, its Pods and events about them; not "web".
    let q = ChangeQuery {
        workload: Some("api".into()),
        ..cquery()
    };
    let rows = s.changes(&q).await.unwrap();
    assert_eq!(rows.len(), 5, "{rows:?}");
    assert!(rows.iter().all(|r| !r.name.starts_with("web")));
    let q = ChangeQuery {
        kind: Some("pods".into()),
        ..cquery()
    };
    assert_eq!(
        s.changes(&q)
            .await
            .unwrap()
            .iter()
            .filter(|r| r.category != "event")
            .count(),
        2
    );
    let q = ChangeQuery {
        include_events: false,
        range: TimeRange::new(T0 + 10_000, T0 + 15_000).unwrap(),
        ..cquery()
    };
    let rows = s.changes(&q).await.unwrap();
    assert_eq!(
        rows.iter().map(|r| r.at_ms - T0).collect::<Vec<_>>(),
        vec![15_000, 10_400, 10_000]
    );
    let q = ChangeQuery {
        limit: 2,
        ..cquery()
    };
    assert_eq!(s.changes(&q).await.unwrap().len(), 2);
    let q = ChangeQuery {
        namespace: Some("other".into()),
        ..cquery()
    };
    assert!(s.changes(&q).await.unwrap().is_empty());
}

/// A Deployment as kube-apiserver 1.32 sends it after `kubectl set image`
/// and the deployment controller's writes: the controller owns the status
/// (subresource `status`) and the revision annotation.
fn controlled_deployment(image: &str, revision: &str, updated: u64, status_time: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {
            "name": "payment", "namespace": "shop", "uid": "pay-uid", "generation": 2,
            "annotations": {"deployment.kubernetes.io/revision": revision},
            "managedFields": [
                {"manager": "kubectl-client-side-apply", "operation": "Update", "time": "2024-05-31T15:00:00Z",
                 "fieldsV1": {"f:spec": {"f:replicas": {}, "f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"payment\"}": {"f:name": {}}}}}}}},
                {"manager": "kubectl-set", "operation": "Update", "time": "2024-05-31T16:00:00Z",
                 "fieldsV1": {"f:spec": {"f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"payment\"}": {"f:image": {}}}}}}}},
                {"manager": "kube-controller-manager", "operation": "Update", "time": "2024-05-31T16:00:00Z",
                 "fieldsV1": {"f:metadata": {"f:annotations": {"f:deployment.kubernetes.io/revision": {}}}}},
                {"manager": "kube-controller-manager", "operation": "Update", "subresource": "status", "time": status_time,
                 "fieldsV1": {"f:status": {"f:replicas": {}, "f:updatedReplicas": {}, "f:observedGeneration": {}}}}
            ]
        },
        "spec": {"replicas": 3, "template": {"spec": {"containers": [{"name": "payment", "image": image}]}}},
        "status": {"replicas": 3, "updatedReplicas": updated, "observedGeneration": 2}
    })
}

pub async fn changes_leave_out_status(s: DynEventStore) {
    let w = |raw: Value, rv: &str, at: i64, change| write_of(&raw, rv, at, change);
    s.write_objects(vec![
        w(
            controlled_deployment(
                "registry.local/shop/payment:2.1",
                "1",
                3,
                "2024-05-31T15:00:00Z",
            ),
            "10",
            T0 - 60_000,
            ChangeKind::Observed,
        ),
        w(
            controlled_deployment(
                "registry.local/shop/payment:2.2",
                "1",
                3,
                "2024-05-31T15:00:00Z",
            ),
            "11",
            T0,
            ChangeKind::Updated,
        ),
        w(
            controlled_deployment(
                "registry.local/shop/payment:2.2",
                "2",
                3,
                "2024-05-31T15:00:00Z",
            ),
            "12",
            T0 + 1_000,
            ChangeKind::Updated,
        ),
        w(
            controlled_deployment(
                "registry.local/shop/payment:2.2",
                "2",
                1,
                "2024-05-31T16:00:02Z",
            ),
            "13",
            T0 + 2_000,
            ChangeKind::Updated,
        ),
        w(
            controlled_deployment(
                "registry.local/shop/payment:2.2",
                "2",
                3,
                "2024-05-31T16:00:30Z",
            ),
            "14",
            T0 + 30_000,
            ChangeKind::Updated,
        ),
    ])
    .await
    .unwrap();
    let q = ChangeQuery {
        include_status: false,
        ..cquery()
    };
    let rows = s.changes(&q).await.unwrap();
    let brief: Vec<(i64, &str, Option<&str>)> = rows
        .iter()
        .map(|r| (r.at_ms - T0, r.summary.as_str(), r.manager.as_deref()))
        .collect();
    assert_eq!(
        brief,
        [(
            0,
            "image registry.local/shop/payment:2.1 → registry.local/shop/payment:2.2 by kubectl-set",
            Some("kubectl-set")
        )]
    );
    // The limit counts the rows kept, not the status rows left out.
    let q = ChangeQuery {
        include_status: false,
        limit: 1,
        ..cquery()
    };
    assert_eq!(s.changes(&q).await.unwrap().len(), 1);
    let rows = s.changes(&cquery()).await.unwrap();
    let brief: Vec<(i64, Option<&str>)> = rows
        .iter()
        .map(|r| (r.at_ms - T0, r.manager.as_deref()))
        .collect();
    assert_eq!(
        brief,
        [
            (30_000, Some("kube-controller-manager")),
            (2_000, Some("kube-controller-manager")),
            (1_000, Some("kube-controller-manager")),
            (0, Some("kubectl-set")),
        ]
    );
    assert!(rows[..3].iter().all(crate::change_feed::is_status_only));
    // The history stays exact.
    let at = s
        .object_at(None, "deployment", "shop", "payment", T0 + 2_500)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(at.object.pointer("/status/updatedReplicas").unwrap(), 1);
    // The feed's rollout names the image it replaced, though the previous
    // state is a baseline (never a row of the feed).
    let q = ChangeQuery {
        include_status: false,
        ..cquery()
    };
    let feed = crate::change_feed::load(s.as_ref(), &q).await.unwrap();
    assert_eq!(feed.len(), 1, "{feed:?}");
    let images: Vec<(Option<&str>, &str)> = feed[0]
        .images
        .iter()
        .map(|ic| {
            (
                ic.from.as_ref().map(|f| f.reference.as_str()),
                ic.to.reference.as_str(),
            )
        })
        .collect();
    assert_eq!(
        images,
        [(
            Some("registry.local/shop/payment:2.1"),
            "registry.local/shop/payment:2.2"
        )]
    );
}

pub async fn deleted_in_gap_and_live_objects(s: DynEventStore) {
    let mut a = dep("api:1.4", 3, "100", T0, ChangeKind::Observed);
    let mut b = dep("api:1.4", 3, "101", T0, ChangeKind::Observed);
    b.uid = "other-uid".into();
    b.name = "worker".into();
    a.name = "api".into();
    s.write_objects(vec![a, b.clone()]).await.unwrap();
    let live = s.live_objects("prod", "apps", "Deployment").await.unwrap();
    assert_eq!(live.len(), 2);
    assert!(s
        .live_objects("prod", "", "Deployment")
        .await
        .unwrap()
        .is_empty());
    let mut gone = b;
    gone.change = ChangeKind::Deleted;
    gone.resource_version = "150".into();
    gone.at_ms = T0 + 60_000;
    gone.gap = Some((T0 + 5_000, T0 + 60_000));
    s.write_objects(vec![gone.clone()]).await.unwrap();
    let o = s.write_objects(vec![gone]).await.unwrap();
    assert_eq!(
        o.versions_written, 0,
        "a second reconciliation records nothing"
    );
    let live = s.live_objects("prod", "apps", "Deployment").await.unwrap();
    assert_eq!(
        live.iter().map(|l| l.name.as_str()).collect::<Vec<_>>(),
        ["api"]
    );
    let rows = s.changes(&cquery()).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].change, "deleted");
    assert_eq!(
        rows[0].summary,
        "deleted between 2024-05-31T16:00:05.000Z and 2024-05-31T16:01:00.000Z"
    );
    assert_eq!(rows[0].gap_from_ms, Some(T0 + 5_000));
    assert!(s
        .object_at(None, "deployment", "shop", "worker", T0 + 60_000)
        .await
        .unwrap()
        .is_none());
    assert!(s
        .object_at(None, "deployment", "shop", "worker", T0 + 59_000)
        .await
        .unwrap()
        .is_some());
}

pub async fn checkpoints(s: DynEventStore) {
    assert!(s
        .checkpoint("prod", "apps", "Deployment")
        .await
        .unwrap()
        .is_none());
    let cp = WatchCheckpoint {
        resource_version: "42".into(),
        at_ms: T0,
    };
    s.set_checkpoint("prod", "apps", "Deployment", cp.clone())
        .await
        .unwrap();
    assert_eq!(
        s.checkpoint("prod", "apps", "Deployment").await.unwrap(),
        Some(cp)
    );
    s.set_checkpoint(
        "prod",
        "apps",
        "Deployment",
        WatchCheckpoint {
            resource_version: "50".into(),
            at_ms: T0 + 5,
        },
    )
    .await
    .unwrap();
    assert_eq!(
        s.checkpoint("prod", "apps", "Deployment")
            .await
            .unwrap()
            .unwrap()
            .resource_version,
        "50"
    );
    assert!(s.checkpoint("prod", "", "Pod").await.unwrap().is_none());
}

pub async fn events_retention(s: DynEventStore) {
    const DAY: i64 = 86_400_000;
    let old = T0;
    let now = T0 + 3 * DAY;
    s.write_events(vec![event("old", 1, old), event("new", 1, now - 1000)])
        .await
        .unwrap();
    let mut ws = Vec::new();
    for i in 0..20u64 {
        ws.push(dep(
            &format!("api:1.{i}"),
            3,
            &(100 + i).to_string(),
            old + i as i64 * 1000,
            if i == 0 {
                ChangeKind::Created
            } else {
                ChangeKind::Updated
            },
        ));
    }
    ws.push(dep("api:2.0", 3, "500", now - 1000, ChangeKind::Updated));
    s.write_objects(ws).await.unwrap();
    let expired = s.maintain_events(now).await.unwrap();
    assert!(expired >= 19, "{expired}");
    let rows = s.query_events(&equery()).await.unwrap();
    assert_eq!(
        rows.iter().map(|e| e.uid.as_str()).collect::<Vec<_>>(),
        ["new"]
    );
    // The state at the cutoff is still there, and the newer version.
    let at = s
        .object_at(None, "deployment", "shop", "api", now - 2 * DAY)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        at.object
            .pointer("/spec/template/spec/containers/0/image")
            .unwrap(),
        "api:1.19"
    );
    let at = s
        .object_at(None, "deployment", "shop", "api", now)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        at.object
            .pointer("/spec/template/spec/containers/0/image")
            .unwrap(),
        "api:2.0"
    );
    assert!(
        s.object_at(None, "deployment", "shop", "api", old + 5_000)
            .await
            .unwrap()
            .is_none(),
        "history before the cutoff is gone"
    );
    // Maintenance again changes nothing.
    assert_eq!(s.maintain_events(now).await.unwrap(), 0);
}

/// The secret-hash key is made once and then always the same: equal values
/// keep hashing equal across restarts and processes.
pub async fn secret_key_is_made_once(store: DynEventStore) {
    let a = store.secret_key().await.unwrap();
    let b = store.secret_key().await.unwrap();
    assert_eq!(a, b);
    assert_ne!(a.as_bytes(), &[0u8; 32]);
}
