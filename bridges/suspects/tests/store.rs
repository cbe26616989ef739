//! A small incident written into a real SQLite store through the store
//! traits; the suspects query over it must name the bad image rollout two
//! hops downstream first, with evidence read from the stored data.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use kube_insight_suspects::testkit::{incident_store, AT_MS, CHANGE_MS};
use kube_insight_suspects::{suspects, Category, Limits, SuspectsQuery, DEFAULT_WINDOW_MS};

fn query(workload: &str) -> SuspectsQuery {
    SuspectsQuery {
        cluster: None,
        namespace: "shop".into(),
        workload: workload.into(),
        at_ms: AT_MS,
        window_ms: DEFAULT_WINDOW_MS,
        limit: 20,
    }
}

#[tokio::test]
async fn the_bad_rollout_two_hops_down_is_the_top_suspect() {
    let dir = tempfile::tempdir().unwrap();
    let store = incident_store(dir.path()).await;
    let a = suspects(store.as_ref(), &query("frontend"), &Limits::default())
        .await
        .unwrap();
    for s in &a.suspects {
        eprintln!(
            "{} {:.3} {} {}/{} {:?} {:?}",
            s.rank,
            s.score,
            s.category.name(),
            s.kind,
            s.name,
            s.summary,
            s.why
        );
    }
    assert!(a.onset.detected, "{:?}", a.onset);
    assert_eq!(a.onset.signal, "error ratio");
    // The onset is dated within a bin or two of the callers' rise.
    assert!(
        (a.onset.time_ms - (CHANGE_MS + 60_000)).abs() <= 90_000,
        "{:?}",
        a.onset
    );
    assert_eq!(a.scope.get("shop/payment"), Some(&2));
    assert!(!a.scope.contains_key("other/ads"));

    let top = &a.suspects[0];
    assert_eq!(
        (top.kind.as_str(), top.name.as_str()),
        ("Deployment", "payment")
    );
    assert_eq!(top.category, Category::Image);
    assert_eq!(top.distance, 2);
    assert_eq!(top.time_ms, CHANGE_MS);
    let why = top.why.join("\n");
    assert!(
        why.contains("error ratio of shop/payment rose from"),
        "{why}"
    );
    assert!(
        why.contains("the new ReplicaSet's pods (1) fail 30.0 %"),
        "{why}"
    );
    assert!(why.contains("2 hops downstream of shop/frontend"), "{why}");
    assert!(
        why.contains("registry.local/shop/payment:2.1 → registry.local/shop/payment:2.2"),
        "{why}"
    );

    // The distractors are there, below it.
    let cm = a
        .suspects
        .iter()
        .find(|s| s.name == "frontend-flags")
        .unwrap();
    assert_eq!(cm.category, Category::Config);
    assert!(cm
        .why
        .iter()
        .any(|w| w.contains("referenced by the pod template of shop/frontend")));
    let node = a.suspects.iter().find(|s| s.kind == "Node").unwrap();
    assert_eq!(node.category, Category::Node);
    assert!(
        node.summary.contains("MemoryPressure=True"),
        "{}",
        node.summary
    );
    assert!(cm.score < top.score && node.score < top.score);
    // Unconnected namespaces are not suspects.
    assert!(a.suspects.iter().all(|s| s.namespace != "other"));
    // Ranks are 1-based and ordered.
    for (i, s) in a.suspects.iter().enumerate() {
        assert_eq!(s.rank, i + 1);
        assert!((0.0..=1.0).contains(&s.score));
    }
}

#[tokio::test]
async fn the_changed_workload_itself_and_a_quiet_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = incident_store(dir.path()).await;
    let a = suspects(store.as_ref(), &query("payment"), &Limits::default())
        .await
        .unwrap();
    assert_eq!(a.suspects[0].name, "payment");
    assert_eq!(a.suspects[0].distance, 0);
    // Nothing degraded in `other/ads`: no onset, and its own rollout is
    // still listed as the only change of the window.
    let q = SuspectsQuery {
        namespace: "other".into(),
        ..query("ads")
    };
    let a = suspects(store.as_ref(), &q, &Limits::default())
        .await
        .unwrap();
    assert!(!a.onset.detected, "{:?}", a.onset);
    assert_eq!(a.suspects.len(), 1);
    assert!(
        a.suspects[0].why.iter().any(|w| w.contains("did not move")),
        "{:?}",
        a.suspects[0].why
    );
    // A workload nobody knows: no suspects, no error.
    let q = query("nothing-here");
    let a = suspects(store.as_ref(), &q, &Limits::default())
        .await
        .unwrap();
    assert!(a.suspects.is_empty());
}
