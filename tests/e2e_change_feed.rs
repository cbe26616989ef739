//! The noise budget of the change feed, end to end: the real binary watches
//! a mock API server (`support/kube_mock.rs`) that replays what
//! kube-apiserver 1.32 and kube-controller-manager emit for `kubectl set
//! image`, one `kubectl patch configmap` and `kubectl scale`: the
//! Deployment's spec, bookkeeping and status writes (`subresource: status`,
//! observedGeneration, conditions), the new ReplicaSet created and scaled
//! up, the old one scaled down, Pods created, bound, started and deleted
//! with their status writes, and the events (ScalingReplicaSet,
//! SuccessfulCreate, SuccessfulDelete, Scheduled, Pulled, Started, Killing).
//! The default `/api/v1/changes` answers at most 5 rows, attributed to the
//! manager that made each change, with whole image references;
//! `include=status` brings the status rows back.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/kube_mock.rs"]
mod kube_mock;
mod support;

use kube_mock::KubeMock;
use serde_json::{json, Value};
use std::time::Duration;
use support::*;

const OLD_RS: &str = "payment-5f6d7c8b9";
const NEW_RS: &str = "payment-7d9f8b6c5";
const OLD_IMAGE: &str = "registry.local/shop/payment:2.1";
const NEW_IMAGE: &str = "registry.local/shop/payment:2.2";

fn t(s: u32) -> String {
    format!("2024-05-31T16:{:02}:{:02}Z", s / 60, s % 60)
}

fn mf(manager: &str, sub: &str, time: &str, fields: Value) -> Value {
    let mut m = json!({"manager": manager, "operation": "Update", "apiVersion": "apps/v1", "time": time, "fieldsType": "FieldsV1", "fieldsV1": fields});
    if !sub.is_empty() {
        m["subresource"] = json!(sub);
    }
    m
}

/// The Deployment's managedFields as the API server keeps them.
struct Dep {
    image: &'static str,
    replicas: u64,
    revision: u32,
    generation: u32,
    set_time: String,
    scale_time: Option<String>,
    kcm_time: String,
    status_time: String,
    status: Value,
}

fn deployment(d: &Dep) -> Value {
    let mut managers = vec![
        mf(
            "kubectl-client-side-apply",
            "",
            "2024-05-31T15:00:00Z",
            json!({"f:metadata": {"f:annotations": {".": {}, "f:kubectl.kubernetes.io/last-applied-configuration": {}}},
            "f:spec": {"f:selector": {}, "f:template": {"f:metadata": {"f:labels": {}}, "f:spec": {"f:containers": {"k:{\"name\":\"payment\"}": {".": {}, "f:name": {}}}}}}}),
        ),
        mf(
            "kubectl-set",
            "",
            &d.set_time,
            json!({"f:spec": {"f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"payment\"}": {"f:image": {}}}}}}}),
        ),
        mf(
            "kube-controller-manager",
            "",
            &d.kcm_time,
            json!({"f:metadata": {"f:annotations": {"f:deployment.kubernetes.io/revision": {}}}}),
        ),
        mf(
            "kube-controller-manager",
            "status",
            &d.status_time,
            json!({"f:status": {"f:availableReplicas": {}, "f:conditions": {}, "f:observedGeneration": {}, "f:readyReplicas": {}, "f:replicas": {}, "f:updatedReplicas": {}}}),
        ),
    ];
    match &d.scale_time {
        Some(st) => managers.push(mf(
            "kubectl",
            "scale",
            st,
            json!({"f:spec": {"f:replicas": {}}}),
        )),
        None => {
            if let Some(f) = managers[0]["fieldsV1"]["f:spec"].as_object_mut() {
                f.insert("f:replicas".into(), json!({}));
            }
        }
    }
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "payment", "namespace": "shop", "uid": "u-dep", "generation": d.generation,
            "creationTimestamp": "2024-05-31T15:00:00Z",
            "annotations": {"deployment.kubernetes.io/revision": d.revision.to_string(),
                            "kubectl.kubernetes.io/last-applied-configuration": "{}"},
            "managedFields": managers},
        "spec": {"replicas": d.replicas, "selector": {"matchLabels": {"app": "payment"}}, "progressDeadlineSeconds": 600,
                 "template": {"metadata": {"labels": {"app": "payment"}}, "spec": {"containers": [{"name": "payment", "image": d.image}]}}},
        "status": d.status
    })
}

/// The Deployment's status: `Progressing` names `rs`, done (its reason
/// `NewReplicaSetAvailable`) or still progressing.
fn dep_status(
    gen: u32,
    [replicas, updated, available]: [u64; 3],
    rs: &str,
    done: bool,
    time: &str,
) -> Value {
    let (reason, message) = if done {
        (
            "NewReplicaSetAvailable",
            format!("ReplicaSet \"{rs}\" has successfully progressed."),
        )
    } else {
        (
            "ReplicaSetUpdated",
            format!("ReplicaSet \"{rs}\" is progressing."),
        )
    };
    json!({"observedGeneration": gen, "replicas": replicas, "updatedReplicas": updated, "readyReplicas": available, "availableReplicas": available,
           "conditions": [
               {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable", "message": "Deployment has minimum availability.", "lastUpdateTime": time, "lastTransitionTime": "2024-05-31T15:00:10Z"},
               {"type": "Progressing", "status": "True", "reason": reason, "message": message, "lastUpdateTime": time, "lastTransitionTime": time}]})
}

/// kube-controller-manager's status write of the Deployment at `time`.
fn write_status(mock: &KubeMock, d: &mut Dep, counts: [u64; 3], done: bool, time: &str) {
    d.status_time = time.to_string();
    d.status = dep_status(2, counts, NEW_RS, done, time);
    mock.apply("deployments", deployment(d));
}

fn replicaset(
    name: &str,
    image: &str,
    replicas: u64,
    ready: u64,
    revision: u32,
    spec_time: &str,
    status_time: &str,
) -> Value {
    let hash = name.rsplit_once('-').unwrap().1;
    let uid = format!("u-{name}");
    json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {"name": name, "namespace": "shop", "uid": uid, "generation": 1, "creationTimestamp": "2024-05-31T15:00:00Z",
            "labels": {"app": "payment", "pod-template-hash": hash},
            "annotations": {"deployment.kubernetes.io/desired-replicas": replicas.to_string(), "deployment.kubernetes.io/max-replicas": (replicas + 1).to_string(),
                            "deployment.kubernetes.io/revision": revision.to_string()},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "payment", "uid": "u-dep", "controller": true}],
            "managedFields": [
                mf("kube-controller-manager", "", spec_time, json!({"f:metadata": {"f:annotations": {}, "f:ownerReferences": {}}, "f:spec": {"f:replicas": {}, "f:template": {}}})),
                mf("kube-controller-manager", "status", status_time, json!({"f:status": {"f:availableReplicas": {}, "f:readyReplicas": {}, "f:replicas": {}, "f:observedGeneration": {}}}))]},
        "spec": {"replicas": replicas, "template": {"metadata": {"labels": {"app": "payment", "pod-template-hash": hash}}, "spec": {"containers": [{"name": "payment", "image": image}]}}},
        "status": {"replicas": ready, "readyReplicas": ready, "availableReplicas": ready, "observedGeneration": 1}
    })
}

/// A Pod at one of its stages: 0 created, 1 bound, 2 running, 3 terminating.
fn pod(rs: &str, suffix: &str, image: &str, stage: u8, times: [&str; 4]) -> Value {
    let name = format!("{rs}-{suffix}");
    let hash = rs.rsplit_once('-').unwrap().1;
    let mut managers = vec![mf(
        "kube-controller-manager",
        "",
        times[0],
        json!({"f:metadata": {"f:generateName": {}, "f:labels": {}, "f:ownerReferences": {}}, "f:spec": {"f:containers": {}}}),
    )];
    let mut spec = json!({"containers": [{"name": "payment", "image": image}]});
    let mut status = json!({"phase": "Pending", "qosClass": "BestEffort"});
    if stage >= 1 {
        managers.push(mf(
            "kube-scheduler",
            "status",
            times[1],
            json!({"f:status": {"f:conditions": {}}}),
        ));
        spec["nodeName"] = json!("node-1");
        status["conditions"] =
            json!([{"type": "PodScheduled", "status": "True", "lastTransitionTime": times[1]}]);
    }
    if stage >= 2 {
        managers.push(mf("kubelet", "status", times[2], json!({"f:status": {"f:conditions": {}, "f:containerStatuses": {}, "f:phase": {}, "f:podIP": {}, "f:hostIP": {}}})));
        status = json!({"phase": "Running", "qosClass": "BestEffort", "podIP": "10.0.0.7", "hostIP": "192.168.0.1",
            "conditions": [{"type": "PodScheduled", "status": "True", "lastTransitionTime": times[1]}, {"type": "Ready", "status": "True", "lastTransitionTime": times[2]}],
            "containerStatuses": [{"name": "payment", "image": image, "imageID": format!("{image}@sha256:{}", if image == NEW_IMAGE { "2".repeat(64) } else { "1".repeat(64) }),
                                   "ready": true, "restartCount": 0, "state": {"running": {"startedAt": times[2]}}}]});
    }
    let mut meta = json!({"name": name, "namespace": "shop", "uid": format!("u-{name}"), "creationTimestamp": times[0], "generateName": format!("{rs}-"),
        "labels": {"app": "payment", "pod-template-hash": hash},
        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": rs, "uid": format!("u-{rs}"), "controller": true}],
        "managedFields": managers});
    if stage >= 3 {
        meta["deletionTimestamp"] = json!(times[3]);
        meta["deletionGracePeriodSeconds"] = json!(30);
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec, "status": status})
}

fn event(
    n: u32,
    kind: &str,
    name: &str,
    reason: &str,
    message: &str,
    time: &str,
    component: &str,
) -> Value {
    json!({"apiVersion": "v1", "kind": "Event",
        "metadata": {"name": format!("{name}.{n:x}"), "namespace": "shop", "uid": format!("u-ev-{n}"), "creationTimestamp": time},
        "involvedObject": {"kind": kind, "namespace": "shop", "name": name, "uid": format!("u-{name}"), "apiVersion": if kind == "Pod" { "v1" } else { "apps/v1" }},
        "reason": reason, "message": message, "type": "Normal", "count": 1, "firstTimestamp": time, "lastTimestamp": time,
        "source": {"component": component}})
}

/// Writes the replay's events and Pod creations to the mock.
struct Script<'a> {
    mock: &'a KubeMock,
    events: u32,
}

impl Script<'_> {
    fn emit(&mut self, kind: &str, name: &str, reason: &str, msg: &str, time: &str, comp: &str) {
        self.events += 1;
        self.mock.apply(
            "events",
            event(self.events, kind, name, reason, msg, time, comp),
        );
    }

    /// The ReplicaSet controller creates Pod `NEW_RS-suffix` at `time`.
    fn create_pod(&mut self, suffix: &str, time: &str) {
        self.mock.apply(
            "pods",
            pod(NEW_RS, suffix, NEW_IMAGE, 0, [time, time, time, time]),
        );
        self.emit(
            "ReplicaSet",
            NEW_RS,
            "SuccessfulCreate",
            &format!("Created pod: {NEW_RS}-{suffix}"),
            time,
            "replicaset-controller",
        );
    }
}

fn configmap(value: &str, manager: &str, time: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "payment-config", "namespace": "shop", "uid": "u-cm", "creationTimestamp": "2024-05-31T15:00:00Z",
            "managedFields": [{"manager": manager, "operation": "Update", "apiVersion": "v1", "time": time, "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {"f:timeout": {}}}}]},
        "data": {"timeout": value}})
}

async fn changes(api: &str, query: &str) -> Vec<Value> {
    let url = format!("{api}/api/v1/changes?from=2024-05-31T15:30:00Z&to=2024-05-31T17:00:00Z&namespace=shop{query}");
    let r = reqwest::get(url).await.unwrap();
    assert_eq!(r.status(), 200);
    r.json::<Value>()
        .await
        .unwrap()
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_image_patch_configmap_and_scale_are_three_changes() {
    let dir = tempfile::tempdir().unwrap();
    let mock = KubeMock::start().await;
    let base = "2024-05-31T15:00:00Z";
    let old_pods = ["aaaaa", "bbbbb", "ccccc"];
    // 15:00: what the collector finds (baselines).
    let dep0 = Dep {
        image: OLD_IMAGE,
        replicas: 3,
        revision: 1,
        generation: 1,
        set_time: base.into(),
        scale_time: None,
        kcm_time: base.into(),
        status_time: base.into(),
        status: dep_status(1, [3, 3, 3], OLD_RS, true, base),
    };
    mock.apply("deployments", deployment(&dep0));
    mock.apply(
        "replicasets",
        replicaset(OLD_RS, OLD_IMAGE, 3, 3, 1, base, base),
    );
    for p in old_pods {
        mock.apply(
            "pods",
            pod(OLD_RS, p, OLD_IMAGE, 2, [base, base, base, base]),
        );
    }
    mock.apply(
        "configmaps",
        configmap("5s", "kubectl-client-side-apply", base),
    );
    let ki = KubeInsight::start(
        dir.path(),
        &mock.collector_env(
            dir.path(),
            "v1/Event,apps/v1/Deployment,apps/v1/ReplicaSet,v1/Pod,v1/ConfigMap",
        ),
        None,
    )
    .await;
    mock.wait_watched(&["deployments", "replicasets", "pods", "configmaps", "events"])
        .await;

    // 16:00:00 kubectl set image deploy/payment payment=…:2.2
    let mut d = Dep {
        image: NEW_IMAGE,
        generation: 2,
        set_time: t(0),
        ..dep0
    };
    mock.apply("deployments", deployment(&d));
    d.revision = 2;
    d.kcm_time = t(0);
    mock.apply("deployments", deployment(&d));
    let mut script = Script {
        mock: &mock,
        events: 0,
    };
    mock.apply(
        "replicasets",
        replicaset(NEW_RS, NEW_IMAGE, 1, 0, 2, &t(0), &t(0)),
    );
    script.emit(
        "Deployment",
        "payment",
        "ScalingReplicaSet",
        &format!("Scaled up replica set {NEW_RS} from 0 to 1"),
        &t(0),
        "deployment-controller",
    );
    write_status(&mock, &mut d, [4, 1, 3], false, &t(1));
    let new_pods = ["k2x9q", "m7p4z", "r8t6w"];
    for (i, p) in new_pods.iter().enumerate() {
        let s0 = 2 + i as u32 * 8;
        let (a, b, c, e) = (t(s0), t(s0 + 1), t(s0 + 3), t(s0 + 4));
        if i > 0 {
            mock.apply(
                "replicasets",
                replicaset(NEW_RS, NEW_IMAGE, i as u64 + 1, i as u64, 2, &a, &a),
            );
            script.emit(
                "Deployment",
                "payment",
                "ScalingReplicaSet",
                &format!("Scaled up replica set {NEW_RS} from {i} to {}", i + 1),
                &a,
                "deployment-controller",
            );
        }
        script.create_pod(p, &a);
        mock.apply("pods", pod(NEW_RS, p, NEW_IMAGE, 1, [&a, &b, &b, &b]));
        script.emit(
            "Pod",
            &format!("{NEW_RS}-{p}"),
            "Scheduled",
            "Successfully assigned shop/pod to node-1",
            &b,
            "default-scheduler",
        );
        script.emit(
            "Pod",
            &format!("{NEW_RS}-{p}"),
            "Pulled",
            &format!("Container image \"{NEW_IMAGE}\" already present on machine"),
            &b,
            "kubelet",
        );
        script.emit(
            "Pod",
            &format!("{NEW_RS}-{p}"),
            "Started",
            "Started container payment",
            &c,
            "kubelet",
        );
        mock.apply("pods", pod(NEW_RS, p, NEW_IMAGE, 2, [&a, &b, &c, &c]));
        mock.apply(
            "replicasets",
            replicaset(NEW_RS, NEW_IMAGE, i as u64 + 1, i as u64 + 1, 2, &a, &c),
        );
        // The old ReplicaSet scaled down by one, its Pod terminated and deleted.
        let left = 2 - i as u64;
        mock.apply(
            "replicasets",
            replicaset(OLD_RS, OLD_IMAGE, left, left + 1, 1, &e, base),
        );
        script.emit(
            "Deployment",
            "payment",
            "ScalingReplicaSet",
            &format!(
                "Scaled down replica set {OLD_RS} from {} to {left}",
                left + 1
            ),
            &e,
            "deployment-controller",
        );
        let old = old_pods[i];
        mock.apply(
            "pods",
            pod(OLD_RS, old, OLD_IMAGE, 3, [base, base, base, &e]),
        );
        script.emit(
            "ReplicaSet",
            OLD_RS,
            "SuccessfulDelete",
            &format!("Deleted pod: {OLD_RS}-{old}"),
            &e,
            "replicaset-controller",
        );
        script.emit(
            "Pod",
            &format!("{OLD_RS}-{old}"),
            "Killing",
            "Stopping container payment",
            &e,
            "kubelet",
        );
        mock.apply(
            "replicasets",
            replicaset(OLD_RS, OLD_IMAGE, left, left, 1, &e, &e),
        );
        mock.delete("pods", &format!("u-{OLD_RS}-{old}"));
        write_status(
            &mock,
            &mut d,
            [3 + (i < 2) as u64, i as u64 + 1, 3],
            false,
            &e,
        );
    }
    write_status(&mock, &mut d, [3, 3, 3], true, &t(30));

    // 16:05:00 kubectl patch configmap payment-config
    mock.apply("configmaps", configmap("30s", "kubectl-patch", &t(300)));

    // 16:10:00 kubectl scale deploy/payment --replicas=5
    d.replicas = 5;
    d.scale_time = Some(t(600));
    mock.apply("deployments", deployment(&d));
    mock.apply(
        "replicasets",
        replicaset(NEW_RS, NEW_IMAGE, 5, 3, 2, &t(600), &t(24)),
    );
    script.emit(
        "Deployment",
        "payment",
        "ScalingReplicaSet",
        &format!("Scaled up replica set {NEW_RS} from 3 to 5"),
        &t(600),
        "deployment-controller",
    );
    for p in ["x4c7v", "z9b2n"] {
        let (a, b) = (t(601), t(604));
        script.create_pod(p, &a);
        mock.apply("pods", pod(NEW_RS, p, NEW_IMAGE, 2, [&a, &a, &b, &b]));
        script.emit(
            "Pod",
            &format!("{NEW_RS}-{p}"),
            "Started",
            "Started container payment",
            &b,
            "kubelet",
        );
    }
    mock.apply(
        "replicasets",
        replicaset(NEW_RS, NEW_IMAGE, 5, 5, 2, &t(600), &t(605)),
    );
    write_status(&mock, &mut d, [5, 5, 5], true, &t(605));

    // Everything stored: the last status write is visible with status
    // (a member of the scale, or a row of its own).
    let api = ki.api.clone();
    let all = eventually("every version stored", Duration::from_secs(60), move || {
        let api = api.clone();
        async move {
            let rows = changes(&api, "&include=status&expand=members&limit=1000").await;
            let last = rows
                .iter()
                .flat_map(|r| {
                    std::iter::once(r).chain(r["members"].as_array().into_iter().flatten())
                })
                .any(|r| {
                    r["time"] == "2024-05-31T16:10:05.000Z"
                        && r["kind"] == "Deployment"
                        && r["who"] == "kube-controller-manager"
                });
            last.then_some(rows)
        }
    })
    .await;

    let rows = changes(&ki.api, "").await;
    let brief: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "{} {} {} | {} | {} | {}",
                r["time"].as_str().unwrap(),
                r["kind"].as_str().unwrap(),
                r["group"].as_str().unwrap(),
                r["summary"].as_str().unwrap(),
                r["who"].as_str().unwrap_or(""),
                r["outcome"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert!(
        rows.len() <= 5,
        "the noise budget is 5 rows:\n{}",
        brief.join("\n")
    );
    assert_eq!(
        brief,
        [
            "2024-05-31T16:10:00.000Z Deployment scale | replicas 3 → 5 by kubectl; scale completed | kubectl | completed",
            "2024-05-31T16:05:00.000Z ConfigMap change | data keys changed: timeout by kubectl-patch | kubectl-patch | ",
            "2024-05-31T16:00:00.000Z Deployment rollout | image registry.local/shop/payment:2.1 → registry.local/shop/payment:2.2 by kubectl-set; rollout completed | kubectl-set | completed",
        ],
        "{}",
        brief.join("\n")
    );
    let rollout = &rows[2];
    assert_eq!(rollout["new_replicaset"], NEW_RS);
    let image = &rollout["images"][0];
    assert_eq!(
        (
            image["from"].as_str(),
            image["to"].as_str(),
            image["registry"].as_str(),
            image["repository"].as_str(),
            image["tag"].as_str()
        ),
        (
            Some(OLD_IMAGE),
            Some(NEW_IMAGE),
            Some("registry.local"),
            Some("shop/payment"),
            Some("2.2")
        )
    );
    assert!(rollout["member_count"].as_u64().unwrap() >= 20, "{rollout}");
    // The members are reachable, and none of them is a status write.
    let expanded = changes(&ki.api, "&expand=members").await;
    let members = expanded[2]["members"].as_array().unwrap();
    assert_eq!(
        members.len() as u64,
        rollout["member_count"].as_u64().unwrap()
    );
    for want in [
        "ScalingReplicaSet",
        "SuccessfulCreate",
        "SuccessfulDelete",
        "Started",
        "Killing",
    ] {
        assert!(
            members.iter().any(|m| m["reason"] == want),
            "{want} in {members:?}"
        );
    }
    assert!(members
        .iter()
        .any(|m| m["kind"] == "ReplicaSet" && m["name"] == NEW_RS && m["change"] == "created"));
    assert!(
        members
            .iter()
            .all(|m| !m["summary"].as_str().unwrap().starts_with("changed status")),
        "{members:?}"
    );
    // With status: the controller's and the kubelet's status writes are back,
    // each attributed to its writer.
    let status_rows: Vec<&Value> = all
        .iter()
        .flat_map(|r| std::iter::once(r).chain(r["members"].as_array().into_iter().flatten()))
        .collect();
    let with_status = changes(&ki.api, "&include=status&expand=members").await;
    let flat: Vec<&Value> = with_status
        .iter()
        .flat_map(|r| std::iter::once(r).chain(r["members"].as_array().into_iter().flatten()))
        .collect();
    let dep_status_rows: Vec<&&Value> = flat
        .iter()
        .filter(|r| {
            r["kind"] == "Deployment"
                && r["summary"].as_str().unwrap().starts_with("changed status")
        })
        .collect();
    assert!(dep_status_rows.len() >= 4, "{dep_status_rows:?}");
    assert!(
        dep_status_rows
            .iter()
            .all(|r| r["who"] == "kube-controller-manager"),
        "{dep_status_rows:?}"
    );
    assert!(
        flat.iter()
            .any(|r| r["kind"] == "Pod" && r["who"] == "kubelet"),
        "{flat:?}"
    );
    assert!(flat.len() > rows.len() + 20 && !status_rows.is_empty());
    // The workloads view counts feed rows, not versions.
    let r = reqwest::get(format!("{}/api/v1/changes/workloads?from=2024-05-31T15:30:00Z&to=2024-05-31T17:00:00Z&namespace=shop", ki.api)).await.unwrap();
    let w: Value = r.json().await.unwrap();
    assert_eq!(w[0]["workload"], "payment");
    assert_eq!(w[0]["changes"], 2, "{w}");
    // Bad parameters name themselves.
    let r = reqwest::get(format!(
        "{}/api/v1/changes?from=now-1h&to=now&include=spec",
        ki.api
    ))
    .await
    .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("parameter include"));
    // The CLI's diff lists the same changes.
    let text = cli(
        dir.path(),
        &[
            "diff",
            "deploy/payment",
            "-n",
            "shop",
            "--from",
            "2024-05-31T15:59:00Z",
            "--to",
            "2024-05-31T16:20:00Z",
        ],
    );
    let listed: Vec<&str> = text.lines().filter(|l| l.starts_with("# 2024")).collect();
    assert_eq!(listed.len(), 2, "{text}");
    assert!(listed[0].contains("registry.local/shop/payment:2.1 → registry.local/shop/payment:2.2 by kubectl-set; rollout completed"), "{text}");
    drop(ki);
}
