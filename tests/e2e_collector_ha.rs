//! Two collector replicas, as the servers chart runs them: real
//! `kube-insight run` processes with `KUBE_INSIGHT_LEASE_*` against a mock
//! Lease API (and a mock monitored cluster for the events watch). One leads
//! (`kube_insight_collector_leader` 1, the other 0); killed, the standby
//! takes over; shut down, the leader releases the Lease.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is a failure

#[path = "support/kube_mock.rs"]
mod kube_mock;
#[path = "support/lease_mock.rs"]
mod lease_mock;
mod support;

use lease_mock::{LeaseMock, LEASE, NS};
use std::process::Command;
use std::time::Duration;
use support::*;

/// `kube_insight_collector_leader{target}` on `ops`.
async fn leader_gauge(ops: &str, target: &str) -> Option<i64> {
    let text = reqwest::get(format!("{ops}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let prefix = format!("kube_insight_collector_leader{{target=\"{target}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse().ok())
}

async fn wait_gauge(ki: &KubeInsight, want: i64) {
    let ops = ki.ops.clone();
    eventually(
        &format!("collector_leader {want} on {}", ki.ops),
        Duration::from_secs(30),
        move || {
            let ops = ops.clone();
            async move {
                let e = leader_gauge(&ops, "events").await?;
                let t = leader_gauge(&ops, "topology").await?;
                (e == want && t == want).then_some(())
            }
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_collector_leads_and_the_standby_takes_over() {
    let dir = tempfile::tempdir().unwrap();
    let kube = kube_mock::KubeMock::start().await;
    kube.apply(
        "deployments",
        kube_mock::deployment(
            "shop",
            "api",
            "u-api",
            "api:1",
            2,
            "kubectl",
            "2024-05-31T10:00:00Z",
        ),
    );
    let watch_kc = kube.kubeconfig(dir.path());
    let lease = LeaseMock::default();
    let mut procs = Vec::new();
    for via in ["a", "b"] {
        let store = dir.path().join(via);
        std::fs::create_dir_all(&store).unwrap();
        let lease_kc = lease.endpoint(via, dir.path()).await;
        let env = [
            ("KUBE_INSIGHT_TARGETS", "events,topology".to_string()),
            ("KUBE_INSIGHT_CLUSTER", "prod".to_string()),
            ("KUBE_INSIGHT_KUBECONFIG", watch_kc.display().to_string()),
            (
                "KUBE_INSIGHT_EVENTS_KINDS",
                "apps/v1/Deployment".to_string(),
            ),
            ("KUBE_INSIGHT_LEASE_NAME", LEASE.to_string()),
            ("KUBE_INSIGHT_LEASE_NAMESPACE", NS.to_string()),
            ("KUBE_INSIGHT_LEASE_IDENTITY", format!("collector-{via}")),
            (
                "KUBE_INSIGHT_LEASE_KUBECONFIG",
                lease_kc.display().to_string(),
            ),
            ("KUBE_INSIGHT_LEASE_DURATION", "1500ms".to_string()),
            ("KUBE_INSIGHT_LEASE_RENEW_DEADLINE", "1s".to_string()),
            ("KUBE_INSIGHT_LEASE_RETRY_PERIOD", "200ms".to_string()),
        ];
        let ki = KubeInsight::start(&store, &env, None).await;
        if via == "a" {
            wait_gauge(&ki, 1).await;
        }
        procs.push(ki);
    }
    let (mut a, mut b) = {
        let mut it = procs.into_iter();
        (it.next().unwrap(), it.next().unwrap())
    };
    // b stands by: it is ready, reports 0, and a keeps renewing.
    wait_gauge(&b, 0).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(leader_gauge(&b.ops, "events").await, Some(0));
    assert_eq!(leader_gauge(&a.ops, "events").await, Some(1));
    let holder = lease.holder().unwrap();
    assert!(holder.starts_with("collector-a_"), "{holder}");
    assert!(lease.writes().iter().all(|w| w.via == "a"));
    assert!(a.proc.log_text().contains("acquired the lease"));
    assert!(!b.proc.log_text().contains("acquired the lease"));

    // a dies without releasing: b takes over once the lease has expired.
    Command::new("kill")
        .arg("-KILL")
        .arg(a.proc.pid().to_string())
        .status()
        .unwrap();
    wait_gauge(&b, 1).await;
    let holder = lease.holder().unwrap();
    assert!(holder.starts_with("collector-b_"), "{holder}");
    assert_eq!(lease.transitions(), 1);
    a.proc.stop();

    // b shuts down: its targets stop, then it gives the Lease up.
    b.proc.stop();
    assert_eq!(lease.holder(), None, "released on SIGTERM");
    let log = b.proc.log_text();
    assert!(log.contains("released the lease"), "{log}");
}
