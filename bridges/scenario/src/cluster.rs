//! The synthetic cluster: an Online-Boutique-shaped shop (eleven services
//! and a Redis StatefulSet) in `shop`, an unrelated batch system in `batch`,
//! three nodes; and the Kubernetes objects that describe it, as the API
//! server would hold them (managedFields times are the scenario's times).

use serde_json::{json, Value};

/// One workload of the synthetic cluster.
#[derive(Debug, Clone)]
pub struct Service {
    pub namespace: &'static str,
    pub name: &'static str,
    /// `Deployment` or `StatefulSet`.
    pub kind: &'static str,
    pub replicas: u32,
    /// Own latency of one request (ms) at baseline.
    pub base_ms: f64,
    /// Own error ratio at baseline.
    pub base_err: f64,
    /// Requests per second it serves at baseline (callers' traffic).
    pub rps: f64,
    /// Whether Beyla sees it as an HTTP/gRPC server (RED metrics).
    pub http: bool,
    /// The services it calls.
    pub calls: &'static [&'static str],
    pub image: &'static str,
    pub cpu_limit_m: u32,
    pub memory_limit_mi: u32,
}

/// The nodes every pod runs on.
pub const NODES: [&str; 3] = ["node-a", "node-b", "node-c"];

const fn svc(
    namespace: &'static str,
    name: &'static str,
    replicas: u32,
    base_ms: f64,
    rps: f64,
    calls: &'static [&'static str],
    image: &'static str,
) -> Service {
    Service {
        namespace,
        name,
        kind: "Deployment",
        replicas,
        base_ms,
        base_err: 0.002,
        rps,
        http: true,
        calls,
        image,
        cpu_limit_m: 500,
        memory_limit_mi: 512,
    }
}

/// The cluster's workloads; callers before callees is not required.
pub fn services() -> Vec<Service> {
    let mut v = vec![
        svc(
            "shop",
            "frontend",
            3,
            12.0,
            60.0,
            &[
                "cart",
                "productcatalog",
                "currency",
                "recommendation",
                "ad",
                "checkout",
                "shipping",
            ],
            "registry.local/shop/frontend:3.4.0",
        ),
        svc(
            "shop",
            "cart",
            2,
            4.0,
            40.0,
            &["redis-cart"],
            "registry.local/shop/cart:1.4.2",
        ),
        svc(
            "shop",
            "productcatalog",
            2,
            6.0,
            90.0,
            &[],
            "registry.local/shop/productcatalog:2.0.1",
        ),
        svc(
            "shop",
            "currency",
            2,
            2.0,
            120.0,
            &[],
            "registry.local/shop/currency:1.8.0",
        ),
        svc(
            "shop",
            "payment",
            2,
            25.0,
            4.0,
            &[],
            "registry.local/shop/payment:2.1.0",
        ),
        svc(
            "shop",
            "shipping",
            2,
            8.0,
            20.0,
            &[],
            "registry.local/shop/shipping:3.0.4",
        ),
        svc(
            "shop",
            "email",
            1,
            30.0,
            4.0,
            &[],
            "registry.local/shop/email:1.2.0",
        ),
        svc(
            "shop",
            "checkout",
            2,
            15.0,
            4.0,
            &[
                "cart",
                "productcatalog",
                "currency",
                "payment",
                "shipping",
                "email",
            ],
            "registry.local/shop/checkout:4.1.0",
        ),
        svc(
            "shop",
            "recommendation",
            2,
            10.0,
            30.0,
            &["productcatalog"],
            "registry.local/shop/recommendation:1.9.3",
        ),
        svc(
            "shop",
            "ad",
            2,
            3.0,
            30.0,
            &[],
            "registry.local/shop/ad:1.1.0",
        ),
        svc(
            "shop",
            "loadgenerator",
            1,
            0.0,
            0.0,
            &["frontend"],
            "registry.local/shop/loadgenerator:1.0.0",
        ),
        svc(
            "batch",
            "report-api",
            2,
            20.0,
            10.0,
            &["etl-worker"],
            "registry.local/batch/report-api:0.9.0",
        ),
        svc(
            "batch",
            "etl-worker",
            2,
            40.0,
            10.0,
            &[],
            "registry.local/batch/etl-worker:5.2.0",
        ),
    ];
    let mut redis = svc(
        "shop",
        "redis-cart",
        1,
        1.0,
        80.0,
        &[],
        "docker.io/library/redis:7.2.4",
    );
    redis.kind = "StatefulSet";
    redis.http = false;
    redis.cpu_limit_m = 1000;
    redis.memory_limit_mi = 1024;
    v.push(redis);
    if let Some(lg) = v.iter_mut().find(|s| s.name == "loadgenerator") {
        lg.http = false;
    }
    v
}

/// RFC 3339 of a millisecond time.
pub fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60
    )
}

/// Howard Hinnant's days → civil date.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// A short stable hash (pod-template-hash-like) of `s`.
pub fn short_hash(s: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    const ALPHA: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..9)
        .map(|i| ALPHA[((h >> (i * 6)) % ALPHA.len() as u64) as usize] as char)
        .collect()
}

/// A uid for an object.
pub fn uid(kind: &str, ns: &str, name: &str) -> String {
    let h = short_hash(&format!("{kind}/{ns}/{name}"));
    format!("{h}-0000-4000-8000-{}", short_hash(name))
}

/// managedFields: the spec owner's entry at `time`, and the controller's
/// status entry (subresource status) at `status_time`.
pub fn managed(manager: &str, time: &str, fields: Value, status_time: Option<&str>) -> Value {
    let mut v = vec![
        json!({"manager": manager, "operation": "Update", "apiVersion": "v1",
        "time": time, "fieldsType": "FieldsV1", "fieldsV1": fields}),
    ];
    if let Some(t) = status_time {
        v.push(json!({"manager": "kube-controller-manager", "operation": "Update", "apiVersion": "v1",
            "time": t, "fieldsType": "FieldsV1", "fieldsV1": {"f:status": {}}, "subresource": "status"}));
    }
    Value::Array(v)
}

/// The pod-template state of a workload that a rollout changes.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    pub image: String,
    pub cpu_limit_m: u32,
    pub memory_limit_mi: u32,
    pub readiness_path: String,
    pub env: Vec<(String, String)>,
    pub annotations: Vec<(String, String)>,
}

impl Template {
    pub fn of(s: &Service) -> Template {
        Template {
            image: s.image.to_string(),
            cpu_limit_m: s.cpu_limit_m,
            memory_limit_mi: s.memory_limit_mi,
            readiness_path: "/healthz".into(),
            env: vec![("LOG_LEVEL".into(), "info".into())],
            annotations: Vec::new(),
        }
    }

    /// The pod-template hash of this template.
    pub fn hash(&self, s: &Service) -> String {
        short_hash(&format!("{}/{}/{self:?}", s.namespace, s.name))[..9].to_string()
    }

    pub fn pod_spec(&self, s: &Service, configmap: &str) -> Value {
        let env: Vec<Value> = self
            .env
            .iter()
            .map(|(k, v)| json!({"name": k, "value": v}))
            .collect();
        json!({
            "containers": [{
                "name": s.name, "image": self.image, "env": env,
                "envFrom": [{"configMapRef": {"name": configmap}}],
                "resources": {"limits": {"cpu": format!("{}m", self.cpu_limit_m), "memory": format!("{}Mi", self.memory_limit_mi)},
                              "requests": {"cpu": "100m", "memory": "128Mi"}},
                "readinessProbe": {"httpGet": {"path": self.readiness_path, "port": 8080}, "periodSeconds": 5},
                "ports": [{"containerPort": 8080, "name": "http"}]
            }],
            "serviceAccountName": s.name
        })
    }

    fn annotations_json(&self) -> Value {
        Value::Object(
            self.annotations
                .iter()
                .map(|(k, v)| (k.clone(), json!(v)))
                .collect(),
        )
    }
}

/// The name of a workload's ConfigMap.
pub fn configmap_name(s: &Service) -> String {
    format!("{}-config", s.name)
}

/// A Deployment or StatefulSet.
#[allow(clippy::too_many_arguments)]
pub fn workload(
    s: &Service,
    t: &Template,
    replicas: u32,
    generation: u64,
    manager: &str,
    time: &str,
    created: &str,
) -> Value {
    let api = "apps/v1";
    json!({
        "apiVersion": api, "kind": s.kind,
        "metadata": {
            "name": s.name, "namespace": s.namespace, "uid": uid(s.kind, s.namespace, s.name),
            "creationTimestamp": created, "generation": generation,
            "labels": {"app": s.name, "app.kubernetes.io/part-of": s.namespace},
            "annotations": {"deployment.kubernetes.io/revision": generation.to_string()},
            "managedFields": managed(manager, time,
                json!({"f:spec": {"f:replicas": {}, "f:template": {"f:metadata": {"f:annotations": {}},
                       "f:spec": {"f:containers": {format!("k:{{\"name\":\"{}\"}}", s.name): {"f:image": {}, "f:env": {}, "f:resources": {}, "f:readinessProbe": {}}}}}}}),
                Some(time)),
        },
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": s.name}},
            "template": {"metadata": {"labels": {"app": s.name}, "annotations": t.annotations_json()},
                         "spec": t.pod_spec(s, &configmap_name(s))}
        },
        "status": {"replicas": replicas, "readyReplicas": replicas, "updatedReplicas": replicas,
                   "availableReplicas": replicas, "observedGeneration": generation}
    })
}

/// A ReplicaSet of a Deployment's template.
pub fn replicaset(s: &Service, t: &Template, replicas: u32, revision: u64, time: &str) -> Value {
    let hash = t.hash(s);
    let name = format!("{}-{hash}", s.name);
    json!({
        "apiVersion": "apps/v1", "kind": "ReplicaSet",
        "metadata": {
            "name": name, "namespace": s.namespace, "uid": uid("ReplicaSet", s.namespace, &name),
            "creationTimestamp": time,
            "labels": {"app": s.name, "pod-template-hash": hash},
            "annotations": {"deployment.kubernetes.io/revision": revision.to_string()},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": s.name,
                                 "uid": uid("Deployment", s.namespace, s.name), "controller": true}],
            "managedFields": managed("kube-controller-manager", time, json!({"f:spec": {"f:replicas": {}}}), Some(time)),
        },
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": s.name, "pod-template-hash": hash}},
                 "template": {"metadata": {"labels": {"app": s.name, "pod-template-hash": hash}}, "spec": t.pod_spec(s, &configmap_name(s))}},
        "status": {"replicas": replicas, "readyReplicas": replicas}
    })
}

/// A pod of a workload.
pub fn pod(
    s: &Service,
    t: &Template,
    pod_name: &str,
    node: &str,
    ready: bool,
    time: &str,
) -> Value {
    let (owner_kind, owner_name) = if s.kind == "StatefulSet" {
        ("StatefulSet", s.name.to_string())
    } else {
        ("ReplicaSet", format!("{}-{}", s.name, t.hash(s)))
    };
    let status = if ready { "True" } else { "False" };
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": pod_name, "namespace": s.namespace, "uid": uid("Pod", s.namespace, pod_name),
            "creationTimestamp": time,
            "labels": {"app": s.name, "pod-template-hash": t.hash(s)},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": owner_kind, "name": owner_name,
                                 "uid": uid(owner_kind, s.namespace, &owner_name), "controller": true}],
            "managedFields": managed("kube-controller-manager", time, json!({"f:metadata": {"f:labels": {}}}), Some(time)),
        },
        "spec": {"nodeName": node, "containers": t.pod_spec(s, &configmap_name(s))["containers"].clone()},
        "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": status, "lastTransitionTime": time}],
                   "containerStatuses": [{"name": s.name, "image": t.image, "ready": ready, "restartCount": 0}]}
    })
}

/// A ConfigMap.
pub fn configmap(ns: &str, name: &str, data: &[(&str, &str)], manager: &str, time: &str) -> Value {
    let data: serde_json::Map<String, Value> = data
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": ns, "uid": uid("ConfigMap", ns, name), "creationTimestamp": time,
                     "managedFields": managed(manager, time, json!({"f:data": {}}), None)},
        "data": data
    })
}

/// A Service selecting `selector_app`.
pub fn service(s: &Service, selector_app: &str, manager: &str, time: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": s.name, "namespace": s.namespace, "uid": uid("Service", s.namespace, s.name),
                     "creationTimestamp": time,
                     "managedFields": managed(manager, time, json!({"f:spec": {"f:selector": {}, "f:ports": {}}}), None)},
        "spec": {"selector": {"app": selector_app}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}], "type": "ClusterIP"}
    })
}

/// A NetworkPolicy on pods labelled `app`, allowing egress to `egress_to`
/// (all egress when `None`) and ingress from `ingress_from` (all when `None`).
pub fn network_policy(
    ns: &str,
    name: &str,
    app: &str,
    egress_to: Option<&[&str]>,
    ingress_from: Option<&[&str]>,
    time: &str,
) -> Value {
    let peers = |apps: &[&str]| -> Vec<Value> {
        apps.iter()
            .map(|a| json!({"podSelector": {"matchLabels": {"app": a}}}))
            .collect()
    };
    let mut types = Vec::new();
    let mut spec = json!({"podSelector": {"matchLabels": {"app": app}}});
    if let Some(to) = egress_to {
        types.push("Egress");
        spec["egress"] = json!([{"to": peers(to)}]);
    }
    if let Some(from) = ingress_from {
        types.push("Ingress");
        spec["ingress"] = json!([{"from": peers(from)}]);
    }
    spec["policyTypes"] = json!(types);
    json!({
        "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
        "metadata": {"name": name, "namespace": ns, "uid": uid("NetworkPolicy", ns, name), "creationTimestamp": time,
                     "managedFields": managed("kubectl-client-side-apply", time, json!({"f:spec": {}}), None)},
        "spec": spec
    })
}

/// An HPA of a Deployment.
pub fn hpa(s: &Service, min: u32, max: u32, current: u32, manager: &str, time: &str) -> Value {
    json!({
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": s.name, "namespace": s.namespace, "uid": uid("HorizontalPodAutoscaler", s.namespace, s.name),
                     "creationTimestamp": time,
                     "managedFields": managed(manager, time, json!({"f:spec": {"f:minReplicas": {}, "f:maxReplicas": {}}}), Some(time))},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": s.name},
                 "minReplicas": min, "maxReplicas": max,
                 "metrics": [{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}}]},
        "status": {"currentReplicas": current, "desiredReplicas": current}
    })
}

/// A PodDisruptionBudget on pods labelled `app`.
pub fn pdb(ns: &str, app: &str, max_unavailable: &str, time: &str) -> Value {
    let name = format!("{app}-pdb");
    json!({
        "apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
        "metadata": {"name": name, "namespace": ns, "uid": uid("PodDisruptionBudget", ns, &name), "creationTimestamp": time,
                     "managedFields": managed("helm", time, json!({"f:spec": {"f:maxUnavailable": {}}}), None)},
        "spec": {"maxUnavailable": max_unavailable, "selector": {"matchLabels": {"app": app}}}
    })
}

/// A Node, Ready or not, with optional taints.
pub fn node(name: &str, ready: bool, taints: &[(&str, &str)], manager: &str, time: &str) -> Value {
    let taints: Vec<Value> = taints
        .iter()
        .map(|(k, e)| json!({"key": k, "effect": e}))
        .collect();
    let (status, reason) = if ready {
        ("True", "KubeletReady")
    } else {
        ("Unknown", "NodeStatusUnknown")
    };
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "uid": uid("Node", "", name), "creationTimestamp": "2026-01-01T00:00:00Z",
                     "labels": {"kubernetes.io/hostname": name, "topology.kubernetes.io/zone": "zone-1"},
                     "managedFields": managed(manager, time, json!({"f:spec": {"f:taints": {}}}), Some(time))},
        "spec": {"taints": taints, "unschedulable": false},
        "status": {"conditions": [{"type": "Ready", "status": status, "reason": reason, "lastTransitionTime": time, "lastHeartbeatTime": time}]}
    })
}

/// A core v1 Event about an object.
#[allow(clippy::too_many_arguments)]
pub fn event(
    ns: &str,
    kind: &str,
    name: &str,
    reason: &str,
    message: &str,
    warning: bool,
    count: u32,
    first: &str,
    last: &str,
) -> Value {
    let ev_name = format!(
        "{name}.{}",
        short_hash(&format!("{reason}{first}{message}"))
    );
    json!({
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": ev_name, "namespace": if ns.is_empty() { "default" } else { ns },
                     "uid": uid("Event", ns, &ev_name), "creationTimestamp": first},
        "involvedObject": {"kind": kind, "namespace": ns, "name": name, "uid": uid(kind, ns, name)},
        "reason": reason, "message": message, "type": if warning { "Warning" } else { "Normal" },
        "count": count, "firstTimestamp": first, "lastTimestamp": last,
        "source": {"component": "kubelet"}, "reportingComponent": "kubelet"
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_717_171_717_000), "2024-05-31T16:08:37Z");
    }

    #[test]
    fn the_shop_is_online_boutique_shaped() {
        let s = services();
        assert_eq!(s.iter().filter(|s| s.namespace == "shop").count(), 12);
        for svc in &s {
            for c in svc.calls {
                assert!(
                    s.iter().any(|x| x.name == *c),
                    "{} calls unknown {c}",
                    svc.name
                );
            }
        }
    }
}
