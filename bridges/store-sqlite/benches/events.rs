//! Events and object-change storm on the SQLite event store: a 500-node
//! rollout (every pod of 50 Deployments × 100 replicas changes image, then
//! digest, then restarts), plus an event storm. Reports the sustained write
//! rate, store bytes per change, `object_at` latency and peak RSS.
//!
//! `CARGO_TARGET_DIR=… cargo bench -p kube-insight-store --bench events`
//! (`EVENTS_BENCH_PODS` changes the pod count).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use kube_insight_core::event::{
    managers_of, sanitize, ChangeKind, EventOrigin, KubeEvent, ObjectRef,
};
use kube_insight_store::{EventStore, ObjectWrite, StoreOptions};
use kube_insight_store_sqlite::events::SqliteEventStore;
use serde_json::{json, Value};
use std::time::Instant;

const T0: i64 = 1_717_171_200_000;

fn pod(i: usize, image: &str, digest: &str, restarts: u64, t: &str) -> Value {
    let dep = i / 100;
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("app{dep}-5f6d7c8b9-{i:05}"), "namespace": format!("ns{}", dep % 10), "uid": format!("pod-{i}"),
            "labels": {"app": format!("app{dep}"), "pod-template-hash": "5f6d7c8b9"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("app{dep}-5f6d7c8b9"), "controller": true}],
            "managedFields": [{"manager": "kubelet", "operation": "Update", "subresource": "status", "time": t, "fieldsType": "FieldsV1", "fieldsV1": {"f:status": {}}}]},
        "spec": {"nodeName": format!("node-{}", i % 500), "containers": [
            {"name": "app", "image": image, "ports": [{"containerPort": 8080}], "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
             "env": [{"name": "DB_PASSWORD", "value": "x"}, {"name": "MODE", "value": "prod"}]},
            {"name": "sidecar", "image": "envoy:1.30", "args": ["--config", "/etc/envoy.yaml"]}]},
        "status": {"phase": "Running", "podIP": format!("10.0.{}.{}", i / 250, i % 250), "hostIP": "10.1.0.1",
            "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": t}],
            "containerStatuses": [{"name": "app", "image": image, "imageID": format!("app@sha256:{digest}"), "restartCount": restarts, "ready": true, "state": {"running": {"startedAt": t}}}]}
    })
}

fn write(raw: &Value, rv: u64, at: i64) -> ObjectWrite {
    ObjectWrite {
        cluster: "prod".into(),
        group: String::new(),
        kind: "Pod".into(),
        namespace: raw["metadata"]["namespace"].as_str().unwrap().into(),
        name: raw["metadata"]["name"].as_str().unwrap().into(),
        uid: raw["metadata"]["uid"].as_str().unwrap().into(),
        resource_version: rv.to_string(),
        at_ms: at,
        change: ChangeKind::Updated,
        object: sanitize(
            "Pod",
            raw,
            &kube_insight_core::event::SecretKey::from_bytes(&[7; 32]).unwrap(),
        )
        .unwrap(),
        managers: managers_of(raw),
        gitops: None,
        gap: None,
    }
}

fn rss_peak_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let pods: usize = std::env::var("EVENTS_BENCH_PODS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("insight.db");
        let store = SqliteEventStore::open(&path, StoreOptions::default()).await.unwrap();
        let rounds: [(&str, &str, u64); 4] = [("app:1.0", "aaaa0000", 0), ("app:1.1", "bbbb1111", 0), ("app:1.1", "cccc2222", 0), ("app:1.1", "cccc2222", 1)];
        let mut rv = 1u64;
        let mut versions = 0u64;
        let mut write_secs = 0.0;
        for (round, (image, digest, restarts)) in rounds.iter().enumerate() {
            let t = format!("2024-05-31T16:{:02}:00Z", round * 10);
            let at = T0 + round as i64 * 600_000;
            let writes: Vec<ObjectWrite> = (0..pods)
                .map(|i| {
                    rv += 1;
                    write(&pod(i, image, digest, *restarts, &t), rv, at + i as i64)
                })
                .collect();
            let started = Instant::now();
            for chunk in writes.chunks(500) {
                let o = store.write_objects(chunk.to_vec()).await.unwrap();
                versions += o.versions_written;
            }
            let secs = started.elapsed().as_secs_f64();
            write_secs += secs;
            println!("round {round}: {pods} pod changes in {secs:.2}s = {:.0} changes/s", pods as f64 / secs);
        }
        let changes_total = (pods * rounds.len()) as f64;
        println!("object changes: {versions} versions, sustained {:.0} changes/s (batches of 500)", changes_total / write_secs);
        // Event storm: 20k events, each repeated once (count++).
        let n_ev: usize = std::env::var("EVENTS_BENCH_EVENTS").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000);
        let evs: Vec<KubeEvent> = (0..n_ev * 2)
            .map(|k| {
                let i = k % n_ev;
                KubeEvent {
                    cluster: "prod".into(),
                    uid: format!("ev-{i}"),
                    namespace: "ns1".into(),
                    name: format!("e{i}"),
                    reason: "Pulled".into(),
                    event_type: "Normal".into(),
                    message: format!("Successfully pulled image app:1.1 in {i}ms"),
                    involved: ObjectRef { kind: "Pod".into(), namespace: "ns1".into(), name: format!("app1-5f6d7c8b9-{i:05}"), ..Default::default() },
                    source_component: "kubelet".into(),
                    source_host: "node-1".into(),
                    count: 1 + (k / n_ev) as u64,
                    first_ms: T0,
                    last_ms: T0 + k as i64,
                    resource_version: k.to_string(),
                    origin: EventOrigin::Watch,
                }
            })
            .collect();
        let started = Instant::now();
        for chunk in evs.chunks(500) {
            store.write_events(chunk.to_vec()).await.unwrap();
        }
        let secs = started.elapsed().as_secs_f64();
        println!("events: {} event writes in {secs:.2}s = {:.0} events/s", evs.len(), evs.len() as f64 / secs);
        // object_at latency.
        let mut lat = Vec::new();
        for q in 0..2000usize {
            let i = (q * 7919) % pods;
            let dep = i / 100;
            let at = T0 + ((q % 4) as i64) * 600_000 + 300_000;
            let started = Instant::now();
            let o = store.object_at(None, "pod", &format!("ns{}", dep % 10), &format!("app{dep}-5f6d7c8b9-{i:05}"), at).await.unwrap();
            lat.push(started.elapsed().as_secs_f64() * 1000.0);
            assert!(o.is_some());
        }
        lat.sort_by(|a, b| a.total_cmp(b));
        println!("objects?at=T: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms", lat[lat.len() / 2], lat[lat.len() * 99 / 100], lat[lat.len() - 1]);
        drop(store);
        let mut bytes = 0u64;
        for e in std::fs::read_dir(dir.path()).unwrap() {
            bytes += e.unwrap().metadata().unwrap().len();
        }
        println!(
            "store: {bytes} bytes for {versions} versions + {} event occurrences = {:.0} bytes per change (object versions and events together)",
            evs.len(),
            bytes as f64 / (versions as f64 + evs.len() as f64)
        );
        println!("peak RSS: {} MiB", rss_peak_kib() / 1024);
    });
}
