//! Leader election against a mock Lease API server over real HTTP on
//! loopback: `GET`/`POST`/`PUT` of `coordination.k8s.io/v1` Leases with
//! resourceVersion conflicts (409), one listener per candidate so a test can
//! partition one candidate from the API server (its requests hang). Short
//! durations (600 ms lease, 400 ms renew deadline, 100 ms retry); safety is
//! asserted on the order of events and the fences, not on elapsed time.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../../tests/support/kube_mock.rs"]
mod kube_mock;
#[path = "../../../tests/support/lease_mock.rs"]
mod lease_mock;

use kube_insight_sources::kube_watch::{self, parse_kinds, WatchConfig};
use kube_insight_sources::leader::{
    run_while_leading, Fence, Leadership, LeaseElection, LeaseSettings,
};
use kube_insight_store::{ChangeQuery, EventStore, StoreOptions};
use kube_insight_store_sqlite::events::SqliteEventStore;
use kube_insight_telemetry::Telemetry;
use lease_mock::{LeaseMock, LEASE, NS};
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

const DURATION: Duration = Duration::from_millis(600);
const RENEW: Duration = Duration::from_millis(400);
const RETRY: Duration = Duration::from_millis(100);

// ---------------------------------------------------------- the candidates

/// A transition of a candidate's leadership and the instant it was seen.
type Log = Arc<Mutex<Vec<(Instant, Leadership)>>>;

struct Candidate {
    via: String,
    identity: String,
    fence: Fence,
    rx: watch::Receiver<Leadership>,
    stop: CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
    log: Log,
    started: Instant,
}

fn settings(identity: &str) -> LeaseSettings {
    LeaseSettings {
        name: LEASE.into(),
        namespace: NS.into(),
        identity: identity.into(),
        lease_duration: DURATION,
        renew_deadline: RENEW,
        retry_period: RETRY,
    }
}

/// Starts candidate `via`; `on_gain` runs (in the recorder) the moment its
/// channel says `Leading`.
async fn candidate(
    mock: &LeaseMock,
    dir: &std::path::Path,
    via: &str,
    on_gain: impl Fn() + Send + 'static,
) -> Candidate {
    let kc = mock.endpoint(via, dir).await;
    let client = kube_watch::client(Some(&kc)).await.unwrap();
    let identity = format!("{via}_0001");
    let e = LeaseElection::new(client, settings(&identity));
    let (fence, rx) = (e.fence(), e.subscribe());
    let stop = CancellationToken::new();
    let log: Log = Arc::default();
    {
        let (mut rx, log) = (rx.clone(), log.clone());
        tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let l = *rx.borrow_and_update();
                if l.is_leading() {
                    on_gain();
                }
                log.lock().unwrap().push((Instant::now(), l));
            }
        });
    }
    let started = Instant::now();
    let task = tokio::spawn(e.run(stop.clone()));
    Candidate {
        via: via.to_string(),
        identity,
        fence,
        rx,
        stop,
        task: Some(task),
        log,
        started,
    }
}

impl Candidate {
    fn leading(&self) -> bool {
        self.rx.borrow().is_leading()
    }

    fn first(&self, leading: bool) -> Option<Instant> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .find(|(_, l)| l.is_leading() == leading)
            .map(|(at, _)| *at)
    }

    /// Killed: no release (a crash, an OOM kill).
    fn kill(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }

    /// Graceful shutdown: releases the lease.
    async fn shutdown(&mut self) {
        self.stop.cancel();
        if let Some(t) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), t)
                .await
                .unwrap()
                .unwrap();
        }
    }
}

async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

// ------------------------------------------------------------------- tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_candidates_exactly_one_leads() {
    let dir = tempfile::tempdir().unwrap();
    let mock = LeaseMock::default();
    let a = candidate(&mock, dir.path(), "a", || {}).await;
    let b = candidate(&mock, dir.path(), "b", || {}).await;
    eventually("a leader", || a.leading() || b.leading()).await;
    // For several lease durations: never both, always the same one.
    let leader = if a.leading() { &a } else { &b };
    let end = Instant::now() + DURATION * 4;
    while Instant::now() < end {
        assert!(
            !(a.fence.check().is_some() && b.fence.check().is_some()),
            "both fences allow writes"
        );
        assert!(!(a.leading() && b.leading()), "both lead");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(leader.leading(), "the leader kept the lease");
    assert_eq!(mock.holder().as_deref(), Some(leader.identity.as_str()));
    assert_eq!(mock.transitions(), 0, "created once, never taken over");
    let writes = mock.writes();
    assert!(writes.len() >= 5, "renewed every retry period: {writes:?}");
    assert!(
        writes.iter().all(|w| w.via == leader.via),
        "only the leader wrote: {writes:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_takes_over_when_the_leader_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let mock = LeaseMock::default();
    let mut a = candidate(&mock, dir.path(), "a", || {}).await;
    eventually("a leads", || a.leading()).await;
    let b = candidate(&mock, dir.path(), "b", || {}).await;
    tokio::time::sleep(RETRY * 3).await;
    assert!(!b.leading());
    a.kill();
    let killed = Instant::now();
    eventually("b takes over", || b.leading()).await;
    let taken = b.first(true).unwrap();
    // a's fence ran out on its own (nobody revoked it: the task is gone).
    assert_eq!(a.fence.check(), None);
    let writes = mock.writes();
    let last_a = writes.iter().rev().find(|w| w.via == "a").unwrap().at;
    let first_b = writes.iter().find(|w| w.via == "b").unwrap();
    // The standby respected the lease: it waited a lease duration after it
    // last saw the record change (a's last renew) before writing.
    assert!(
        first_b.at.duration_since(last_a) >= DURATION,
        "b wrote {} ms after a's last renew",
        ms(first_b.at.duration_since(last_a))
    );
    assert_eq!(first_b.holder.as_deref(), Some(b.identity.as_str()));
    assert_eq!(
        first_b.transitions, 1,
        "a takeover increments the transitions"
    );
    assert_eq!(*b.rx.borrow(), Leadership::Leading { generation: 1 });
    eprintln!(
        "takeover {} ms after the kill (lease duration {} ms)",
        ms(taken.duration_since(killed)),
        ms(DURATION)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_releases_the_lease_for_the_standby() {
    let dir = tempfile::tempdir().unwrap();
    let mock = LeaseMock::default();
    let mut a = candidate(&mock, dir.path(), "a", || {}).await;
    eventually("a leads", || a.leading()).await;
    let b = candidate(&mock, dir.path(), "b", || {}).await;
    tokio::time::sleep(RETRY * 3).await;
    a.shutdown().await;
    assert!(!a.leading());
    assert_eq!(a.fence.check(), None);
    let released = Instant::now();
    eventually("b takes over", || b.leading()).await;
    let writes = mock.writes();
    let rel = writes.iter().rposition(|w| w.via == "a").expect("a wrote");
    assert_eq!(
        writes[rel].holder, None,
        "a's last write cleared the holder"
    );
    let next = &writes[rel + 1];
    assert_eq!(next.via, "b");
    assert_eq!(next.holder.as_deref(), Some(b.identity.as_str()));
    assert_eq!(next.transitions, writes[rel].transitions + 1);
    eprintln!(
        "takeover {} ms after the release (no wait for expiry: lease duration {} ms)",
        ms(b.first(true).unwrap().duration_since(released)),
        ms(DURATION)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_is_taken_over_after_a_full_duration() {
    let dir = tempfile::tempdir().unwrap();
    let mock = LeaseMock::default();
    mock.seed("ghost_dead", 4);
    let a = candidate(&mock, dir.path(), "a", || {}).await;
    eventually("a takes the expired lease", || a.leading()).await;
    // The renew time in the record is ancient, but expiry is judged on a's
    // own clock: a full duration after a first saw the record.
    let gained = a.first(true).unwrap();
    assert!(
        gained.duration_since(a.started) >= DURATION,
        "took over after {} ms",
        ms(gained.duration_since(a.started))
    );
    assert_eq!(*a.rx.borrow(), Leadership::Leading { generation: 5 });
    assert_eq!(mock.transitions(), 5);
    assert_eq!(mock.holder().as_deref(), Some(a.identity.as_str()));
    assert_eq!(a.fence.check(), Some(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_leader_stops_before_the_standby_starts() {
    let dir = tempfile::tempdir().unwrap();
    let mock = LeaseMock::default();
    let a = candidate(&mock, dir.path(), "a", || {}).await;
    eventually("a leads", || a.leading()).await;
    // At the moment b's channel says Leading, a's fence must already be shut.
    let a_fence = a.fence.clone();
    let a_open_at_b_gain = Arc::new(Mutex::new(None));
    let seen = a_open_at_b_gain.clone();
    let b = candidate(&mock, dir.path(), "b", move || {
        seen.lock().unwrap().get_or_insert(a_fence.check());
    })
    .await;
    // The collector targets of both: a writer that checks its fence before
    // each write, run only while leading.
    let writes: Arc<Mutex<Vec<(&'static str, Instant)>>> = Arc::default();
    let stop = CancellationToken::new();
    let mut sup = JoinSet::new();
    for (c, name) in [(&a, "a"), (&b, "b")] {
        let (fence, writes) = (c.fence.clone(), writes.clone());
        let start = move |term: CancellationToken| {
            let (fence, writes) = (fence.clone(), writes.clone());
            let mut set = JoinSet::new();
            set.spawn(async move {
                while !term.is_cancelled() {
                    if fence.check().is_some() {
                        writes.lock().unwrap().push((name, Instant::now()));
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            });
            set
        };
        sup.spawn(run_while_leading(
            c.rx.clone(),
            start,
            |_| {},
            Duration::from_secs(5),
            stop.clone(),
        ));
    }
    tokio::time::sleep(RETRY * 3).await;
    assert!(!writes.lock().unwrap().is_empty(), "a writes while leading");
    mock.partition("a", true);
    let cut = Instant::now();
    eventually("b takes over", || b.leading()).await;
    let a_lost = a.first(false).expect("a stopped leading");
    let b_gained = b.first(true).unwrap();
    assert!(a_lost < b_gained, "a stopped before b started");
    assert_eq!(
        *a_open_at_b_gain.lock().unwrap(),
        Some(None),
        "a's fence was shut when b gained the lease"
    );
    // a stopped within its renew deadline of its last successful renew,
    // while every request of its hung: the deadline is enforced locally.
    let last_a_renew = mock
        .writes()
        .iter()
        .rev()
        .find(|w| w.via == "a")
        .unwrap()
        .at;
    assert!(last_a_renew < cut);
    eventually("b writes", || {
        writes.lock().unwrap().iter().any(|(n, _)| *n == "b")
    })
    .await;
    {
        let w = writes.lock().unwrap();
        let last_a = w.iter().rev().find(|(n, _)| *n == "a").unwrap().1;
        let first_b = w.iter().find(|(n, _)| *n == "b").unwrap().1;
        assert!(last_a < first_b, "the writers never overlapped");
    }
    // The partition heals: a sees b's lease and stays a follower.
    mock.partition("a", false);
    tokio::time::sleep(DURATION * 2).await;
    assert!(!a.leading() && b.leading());
    assert_eq!(mock.holder().as_deref(), Some(b.identity.as_str()));
    assert_eq!(mock.transitions(), 1);
    stop.cancel();
    while let Some(r) = sup.join_next().await {
        r.unwrap().unwrap();
    }
    eprintln!(
        "a stopped {} ms after its last renew (renew deadline {} ms), b started {} ms after that",
        ms(a_lost.duration_since(last_a_renew)),
        ms(RENEW),
        ms(b_gained.duration_since(a_lost))
    );
}

// -------------------------------------- the events watch across a takeover

async fn store_in(dir: &std::path::Path) -> Arc<dyn EventStore> {
    Arc::new(
        SqliteEventStore::open(&dir.join("insight.db"), StoreOptions::default())
            .await
            .unwrap(),
    )
}

/// Two collector replicas with their own store handles: the watch runs on
/// the leader only; the leader is partitioned from the Lease, the standby
/// takes over and resumes from the stored checkpoint. Objects that existed
/// before are not recorded as created again; the changes made during the
/// handover are recorded once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_resumes_the_watch_without_spurious_created() {
    use kube_mock::{deployment, KubeMock};
    let dir = tempfile::tempdir().unwrap();
    let kube = KubeMock::start().await;
    for (name, uid) in [("api", "u-api"), ("web", "u-web")] {
        kube.apply(
            "deployments",
            deployment(
                "shop",
                name,
                uid,
                &format!("{name}:1"),
                2,
                "kubectl",
                "2024-05-31T10:00:00Z",
            ),
        );
    }
    let mock = LeaseMock::default();
    let a = candidate(&mock, dir.path(), "a", || {}).await;
    eventually("a leads", || a.leading()).await;
    let b = candidate(&mock, dir.path(), "b", || {}).await;
    let watch_kc = kube.kubeconfig(dir.path());
    let stop = CancellationToken::new();
    let mut sup = JoinSet::new();
    let mut stores = Vec::new();
    let a_stopped = Arc::new(std::sync::atomic::AtomicBool::new(false));
    for c in [&a, &b] {
        let stopped = (c.via == "a").then(|| a_stopped.clone());
        let on_change = move |leading: bool| {
            if let (Some(s), false) = (&stopped, leading) {
                s.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        };
        let store = store_in(dir.path()).await;
        stores.push(store.clone());
        let client = kube_watch::client(Some(&watch_kc)).await.unwrap();
        let mut cfg = WatchConfig::new("prod", parse_kinds("apps/v1/Deployment").unwrap());
        cfg.checkpoint_every = Duration::from_millis(50);
        cfg.backoff_min = Duration::from_millis(50);
        cfg.backoff_max = Duration::from_millis(200);
        let start = move |term: CancellationToken| {
            let mut set = JoinSet::new();
            set.spawn(kube_watch::run(
                client.clone(),
                store.clone(),
                cfg.clone(),
                Arc::new(Telemetry::new()),
                term,
            ));
            set
        };
        sup.spawn(run_while_leading(
            c.rx.clone(),
            start,
            on_change,
            Duration::from_secs(5),
            stop.clone(),
        ));
    }
    let s = stores[0].clone();
    let deadline = Instant::now() + Duration::from_secs(20);
    while s
        .live_objects("prod", "apps", "Deployment")
        .await
        .unwrap()
        .len()
        < 2
    {
        assert!(Instant::now() < deadline, "no baseline");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Let a checkpoint land, then cut a off the Lease: its watch stops.
    tokio::time::sleep(Duration::from_millis(200)).await;
    mock.partition("a", true);
    eventually("a's watch stopped", || {
        a_stopped.load(std::sync::atomic::Ordering::SeqCst)
    })
    .await;
    assert!(!a.leading());
    // During the handover: a change and a new object, its creation time in
    // whole seconds as the API server writes it (possibly before a's last
    // checkpoint, in the same second).
    kube.apply(
        "deployments",
        deployment(
            "shop",
            "api",
            "u-api",
            "api:2",
            2,
            "argocd-controller",
            "2024-05-31T11:00:00Z",
        ),
    );
    let fresh =
        kube_insight_core::time::format_rfc3339_ms(kube_insight_core::time::now_ms() / 1000 * 1000);
    let mut new = deployment("shop", "new", "u-new", "new:1", 1, "kubectl", &fresh);
    new["metadata"]["creationTimestamp"] = json!(fresh);
    kube.apply("deployments", new);
    eventually("b leads", || b.leading()).await;
    let q = ChangeQuery {
        cluster: Some("prod".into()),
        namespace: None,
        workload: None,
        kind: None,
        range: kube_insight_core::TimeRange::new(0, i64::MAX / 2).unwrap(),
        limit: 10_000,
        include_events: false,
        include_status: true,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let rows = loop {
        let rows = stores[1].changes(&q).await.unwrap();
        if rows.len() >= 2 {
            break rows;
        }
        assert!(
            Instant::now() < deadline,
            "changes after the takeover: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rows_later = stores[1].changes(&q).await.unwrap();
    assert_eq!(rows.len(), rows_later.len(), "{rows_later:?}");
    let of = |name: &str| {
        rows_later
            .iter()
            .filter(|r| r.name == name)
            .map(|r| (r.change.clone(), r.summary.clone()))
            .collect::<Vec<_>>()
    };
    assert!(of("web").is_empty(), "web did not change: {rows_later:?}");
    let api = of("api");
    assert_eq!(api.len(), 1, "{rows_later:?}");
    assert_eq!(api[0].0, "updated", "{api:?}");
    assert!(api[0].1.contains("api:1 → api:2"), "{api:?}");
    let new = of("new");
    assert_eq!(new.len(), 1, "{rows_later:?}");
    assert_eq!(new[0].0, "created", "{new:?}");
    stop.cancel();
    while let Some(r) = sup.join_next().await {
        r.unwrap().unwrap();
    }
}
