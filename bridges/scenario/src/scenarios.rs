//! The incident catalogue: each scenario type injects one change with a
//! known cause (kind, namespace, name, category) at a time `t`, and names
//! the workload where its symptom shows. [`distractors`] adds what every
//! incident comes with in a real cluster: a noisy unrelated rollout in
//! another namespace and a change followed by no degradation at all.

use crate::world::{Effect, World};

/// The change that caused an incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cause {
    pub kind: &'static str,
    pub namespace: &'static str,
    pub name: &'static str,
    /// `image`, `config`, `spec`, `scale`, `node`, `network_policy`, …
    pub category: &'static str,
}

/// One scenario type.
#[derive(Clone, Copy)]
pub struct ScenarioType {
    pub id: &'static str,
    pub title: &'static str,
    pub cause: Cause,
    /// `namespace/name` of the workload where the symptom is seen.
    pub symptom: &'static str,
    inject: fn(&mut World, i64),
}

impl ScenarioType {
    /// Injects the incident at `t` (the cause's change time).
    pub fn inject(&self, w: &mut World, t: i64) {
        (self.inject)(w, t);
    }

    /// Ends the incident at `t`: its effects stop and the cause is undone
    /// (a workload rolled back, a node Ready again, an HPA restored).
    pub fn resolve(&self, w: &mut World, t: i64) {
        w.end_effects(t);
        let id = format!("{}/{}", self.cause.namespace, self.cause.name);
        match self.cause.kind {
            "Deployment" | "StatefulSet" => w.restore(t, &id),
            "Node" => w.set_node(t, self.cause.name, true, &[]),
            "HorizontalPodAutoscaler" => {
                let s = w.service(&id).clone();
                w.set_hpa(t, &id, s.replicas, s.replicas * 3, "helm");
                w.restore(t + 1_000, &id);
            }
            _ => {}
        }
    }
}

impl std::fmt::Debug for ScenarioType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScenarioType")
            .field("id", &self.id)
            .finish()
    }
}

const fn cause(
    kind: &'static str,
    namespace: &'static str,
    name: &'static str,
    category: &'static str,
) -> Cause {
    Cause {
        kind,
        namespace,
        name,
        category,
    }
}

fn bad_rollout(
    w: &mut World,
    t: i64,
    workload: &str,
    image: &str,
    errors: f64,
    latency_ms: f64,
    log: &str,
) {
    let image = image.to_string();
    let rev = w.rollout(t, workload, "argocd-controller", move |tpl| {
        tpl.image = image
    });
    let mut e = Effect::on(workload, t);
    e.min_rev = Some(rev);
    e.errors = errors;
    e.latency_ms = latency_ms;
    e.log = Some(log.to_string());
    w.add_effect(e);
}

fn config_change(w: &mut World, t: i64, ns: &str, name: &str, data: &[(&str, &str)]) {
    let obj =
        crate::cluster::configmap(ns, name, data, "kubectl-edit", &crate::cluster::rfc3339(t));
    w.queue(t, crate::world::Op::Apply("configmaps", obj));
}

fn slow(w: &mut World, t: i64, workload: &str, latency_ms: f64, errors: f64, log: Option<&str>) {
    let mut e = Effect::on(workload, t + 15_000);
    e.latency_ms = latency_ms;
    e.errors = errors;
    e.log = log.map(str::to_string);
    w.add_effect(e);
}

fn node_down(w: &mut World, t: i64, node: &str, taint: bool) {
    let taints: &[(&str, &str)] = if taint {
        &[("node.kubernetes.io/unreachable", "NoExecute")]
    } else {
        &[]
    };
    w.set_node(t, node, false, taints);
    w.event(
        t,
        "",
        "Node",
        node,
        "NodeNotReady",
        &format!("Node {node} status is now: NodeNotReady"),
        true,
        60,
    );
    w.add_effect(Effect {
        node: Some(node.to_string()),
        from_ms: t,
        errors: 0.9,
        latency_ms: 2000.0,
        silent: true,
        ..Default::default()
    });
}

/// Every scenario type.
pub fn catalog() -> Vec<ScenarioType> {
    vec![
        ScenarioType {
            id: "bad-image-two-hops",
            title: "a bad payment image two hops below the frontend",
            cause: cause("Deployment", "shop", "payment", "image"),
            symptom: "shop/frontend",
            inject: |w, t| {
                bad_rollout(
                    w,
                    t,
                    "shop/payment",
                    "registry.local/shop/payment:2.2.0",
                    0.45,
                    0.0,
                    "charge failed: card processor returned 500 (gateway=stripe-v3)",
                )
            },
        },
        ScenarioType {
            id: "bad-image-own",
            title: "a bad frontend image",
            cause: cause("Deployment", "shop", "frontend", "image"),
            symptom: "shop/frontend",
            inject: |w, t| {
                bad_rollout(
                    w,
                    t,
                    "shop/frontend",
                    "registry.local/shop/frontend:3.5.0",
                    0.3,
                    20.0,
                    "template: home.html:42: executing \"home\" at <.Ads>: nil pointer evaluating",
                )
            },
        },
        ScenarioType {
            id: "image-latency-regression",
            title: "a currency image that is 200 ms slower",
            cause: cause("Deployment", "shop", "currency", "image"),
            symptom: "shop/checkout",
            inject: |w, t| {
                bad_rollout(
                    w,
                    t,
                    "shop/currency",
                    "registry.local/shop/currency:1.9.0",
                    0.0,
                    200.0,
                    "slow conversion: rates cache miss, fetching ECB feed",
                )
            },
        },
        ScenarioType {
            id: "crashloop-rollout",
            title: "a cart image that crash-loops",
            cause: cause("Deployment", "shop", "cart", "image"),
            symptom: "shop/frontend",
            inject: |w, t| {
                bad_rollout(
                    w,
                    t,
                    "shop/cart",
                    "registry.local/shop/cart:1.5.0",
                    0.6,
                    50.0,
                    "panic: redis: unknown command 'GETEX'",
                );
                for p in w.pods_of("shop/cart", t + 20_000) {
                    w.event(
                        t + 20_000,
                        "shop",
                        "Pod",
                        &p,
                        "BackOff",
                        &format!("Back-off restarting failed container cart in pod {p}"),
                        true,
                        240,
                    );
                }
            },
        },
        ScenarioType {
            id: "configmap-latency",
            title: "a productcatalog ConfigMap change that disables its cache",
            cause: cause("ConfigMap", "shop", "productcatalog-config", "config"),
            symptom: "shop/recommendation",
            inject: |w, t| {
                config_change(
                    w,
                    t,
                    "shop",
                    "productcatalog-config",
                    &[("LOG_LEVEL", "info"), ("CACHE_TTL", "0s")],
                );
                slow(
                    w,
                    t,
                    "shop/productcatalog",
                    250.0,
                    0.0,
                    Some("catalog cache disabled; reading products.json from disk"),
                );
            },
        },
        ScenarioType {
            id: "configmap-feature-flag",
            title: "a frontend feature flag that breaks checkout pages",
            cause: cause("ConfigMap", "shop", "frontend-config", "config"),
            symptom: "shop/frontend",
            inject: |w, t| {
                config_change(
                    w,
                    t,
                    "shop",
                    "frontend-config",
                    &[
                        ("LOG_LEVEL", "info"),
                        ("CACHE_TTL", "30s"),
                        ("FEATURE_NEW_CHECKOUT", "true"),
                    ],
                );
                slow(
                    w,
                    t,
                    "shop/frontend",
                    0.0,
                    0.25,
                    Some(
                        "feature new-checkout: cart summary: index out of range [3] with length 3",
                    ),
                );
            },
        },
        ScenarioType {
            id: "database-slow",
            title: "the Redis StatefulSet's CPU limit cut (a slow database under cart)",
            cause: cause("StatefulSet", "shop", "redis-cart", "spec"),
            symptom: "shop/frontend",
            inject: |w, t| {
                w.rollout(t, "shop/redis-cart", "kubectl-edit", |tpl| {
                    tpl.cpu_limit_m = 150
                });
            },
        },
        ScenarioType {
            id: "database-config",
            title: "a Redis config change (appendfsync always)",
            cause: cause("ConfigMap", "shop", "redis-cart-config", "config"),
            symptom: "shop/cart",
            inject: |w, t| {
                config_change(
                    w,
                    t,
                    "shop",
                    "redis-cart-config",
                    &[
                        ("LOG_LEVEL", "info"),
                        ("CACHE_TTL", "30s"),
                        ("appendfsync", "always"),
                    ],
                );
                slow(w, t, "shop/redis-cart", 90.0, 0.0, None);
            },
        },
        ScenarioType {
            id: "node-not-ready",
            title: "node-b goes NotReady",
            cause: cause("Node", "", "node-b", "node"),
            symptom: "shop/frontend",
            inject: |w, t| node_down(w, t, "node-b", false),
        },
        ScenarioType {
            id: "node-tainted",
            title: "node-c tainted NoExecute (unreachable)",
            cause: cause("Node", "", "node-c", "node"),
            symptom: "shop/checkout",
            inject: |w, t| node_down(w, t, "node-c", true),
        },
        ScenarioType {
            id: "networkpolicy-egress-cut",
            title: "a NetworkPolicy that cuts checkout from currency",
            cause: cause("NetworkPolicy", "shop", "checkout-egress", "network_policy"),
            symptom: "shop/checkout",
            inject: |w, t| {
                let np = crate::cluster::network_policy(
                    "shop",
                    "checkout-egress",
                    "checkout",
                    Some(&["cart", "productcatalog", "payment", "shipping", "email"]),
                    None,
                    &crate::cluster::rfc3339(t),
                );
                w.queue(t, crate::world::Op::Apply("networkpolicies", np));
                let mut e = Effect::on("shop/checkout", t + 5_000);
                e.cut = Some("currency".into());
                w.add_effect(e);
            },
        },
        ScenarioType {
            id: "networkpolicy-ingress-cut",
            title: "a NetworkPolicy on Redis that admits no cart pods",
            cause: cause(
                "NetworkPolicy",
                "shop",
                "redis-cart-ingress",
                "network_policy",
            ),
            symptom: "shop/frontend",
            inject: |w, t| {
                let np = crate::cluster::network_policy(
                    "shop",
                    "redis-cart-ingress",
                    "redis-cart",
                    None,
                    Some(&["cart-v2"]),
                    &crate::cluster::rfc3339(t),
                );
                w.queue(t, crate::world::Op::Apply("networkpolicies", np));
                let mut e = Effect::on("shop/cart", t + 5_000);
                e.cut = Some("redis-cart".into());
                w.add_effect(e);
            },
        },
        ScenarioType {
            id: "hpa-maxed",
            title:
                "the frontend HPA's maxReplicas lowered to 3, then a traffic surge it cannot absorb",
            cause: cause("HorizontalPodAutoscaler", "shop", "frontend", "scale"),
            symptom: "shop/frontend",
            inject: |w, t| {
                w.set_hpa(t, "shop/frontend", 3, 3, "helm");
                let mut surge = Effect::on("shop/frontend", t + 30_000);
                surge.traffic = 2.2;
                w.add_effect(surge);
            },
        },
        ScenarioType {
            id: "hpa-max-cart",
            title: "the cart HPA pinned to one replica",
            cause: cause("HorizontalPodAutoscaler", "shop", "cart", "scale"),
            symptom: "shop/frontend",
            inject: |w, t| {
                w.set_hpa(t, "shop/cart", 1, 1, "kubectl-patch");
                w.scale(t + 15_000, "shop/cart", 1, "horizontal-pod-autoscaler");
                let mut e = Effect::on("shop/cart", t);
                e.traffic = 1.3;
                w.add_effect(e);
            },
        },
        ScenarioType {
            id: "secret-rotation",
            title: "a rotated SMTP Secret rolls email with bad credentials",
            cause: cause("Deployment", "shop", "email", "config"),
            symptom: "shop/checkout",
            inject: |w, t| {
                let rev = w.rollout(t, "shop/email", "reloader", |tpl| {
                    tpl.annotations
                        .push(("checksum/secret-smtp".into(), "9f2c41d07a".into()));
                });
                let mut e = Effect::on("shop/email", t);
                e.min_rev = Some(rev);
                e.errors = 0.9;
                e.log = Some("smtp: 535 5.7.8 authentication failed: invalid credentials for user orders@shop".into());
                w.add_effect(e);
            },
        },
        ScenarioType {
            id: "memory-limit-oom",
            title: "recommendation's memory limit cut to 128Mi (OOMKills)",
            cause: cause("Deployment", "shop", "recommendation", "spec"),
            symptom: "shop/frontend",
            inject: |w, t| {
                w.rollout(t, "shop/recommendation", "kubectl-set", |tpl| {
                    tpl.memory_limit_mi = 128
                });
            },
        },
        ScenarioType {
            id: "cpu-limit-throttling",
            title: "productcatalog's CPU limit cut to 100m (throttling)",
            cause: cause("Deployment", "shop", "productcatalog", "spec"),
            symptom: "shop/recommendation",
            inject: |w, t| {
                w.rollout(t, "shop/productcatalog", "kubectl-set", |tpl| {
                    tpl.cpu_limit_m = 120
                });
            },
        },
        ScenarioType {
            id: "scale-down-saturation",
            title: "currency scaled from 2 to 1 replica (saturation)",
            cause: cause("Deployment", "shop", "currency", "scale"),
            symptom: "shop/frontend",
            inject: |w, t| w.scale(t, "shop/currency", 1, "kubectl-scale"),
        },
        ScenarioType {
            id: "readiness-probe",
            title: "a shipping readiness probe on a slow endpoint (pods flap)",
            cause: cause("Deployment", "shop", "shipping", "spec"),
            symptom: "shop/checkout",
            inject: |w, t| {
                let rev = w.rollout(t, "shop/shipping", "kubectl-edit", |tpl| {
                    tpl.readiness_path = "/ready?deep=true".into()
                });
                let mut e = Effect::on("shop/shipping", t);
                e.min_rev = Some(rev);
                e.errors = 0.3;
                e.latency_ms = 150.0;
                e.log = Some("upstream connect error or disconnect/reset before headers. reset reason: connection termination".into());
                w.add_effect(e);
                for p in w.pods_of("shop/shipping", t + 20_000) {
                    w.event(t + 20_000, "shop", "Pod", &p, "Unhealthy",
                        "Readiness probe failed: Get \"http://10.244.2.7:8080/ready?deep=true\": context deadline exceeded", true, 240);
                }
            },
        },
        ScenarioType {
            id: "env-timeout",
            title: "checkout's PAYMENT_TIMEOUT env set to 10ms",
            cause: cause("Deployment", "shop", "checkout", "spec"),
            symptom: "shop/frontend",
            inject: |w, t| {
                let rev = w.rollout(t, "shop/checkout", "kubectl-set", |tpl| {
                    tpl.env.push(("PAYMENT_TIMEOUT".into(), "10ms".into()))
                });
                let mut e = Effect::on("shop/checkout", t);
                e.min_rev = Some(rev);
                e.errors = 0.5;
                e.log = Some("charge: context deadline exceeded after 10ms".into());
                w.add_effect(e);
            },
        },
        ScenarioType {
            id: "pdb-eviction",
            title: "cart's PDB relaxed to 100% and a drain evicts every cart pod",
            cause: cause("PodDisruptionBudget", "shop", "cart-pdb", "spec"),
            symptom: "shop/frontend",
            inject: |w, t| {
                w.queue(
                    t,
                    crate::world::Op::Apply(
                        "poddisruptionbudgets",
                        crate::cluster::pdb("shop", "cart", "100%", &crate::cluster::rfc3339(t)),
                    ),
                );
                for p in w.pods_of("shop/cart", t) {
                    w.event(
                        t + 10_000,
                        "shop",
                        "Pod",
                        &p,
                        "Evicted",
                        "Evicted by the eviction API (node drain)",
                        true,
                        30,
                    );
                }
                let mut e = Effect::on("shop/cart", t + 10_000);
                e.errors = 0.7;
                e.until_ms = Some(t + 130_000);
                e.log = Some("shutting down: received SIGTERM".into());
                w.add_effect(e);
                slow(
                    w,
                    t + 120_000,
                    "shop/cart",
                    80.0,
                    0.1,
                    Some("cold start: warming redis connection pool"),
                );
            },
        },
        ScenarioType {
            id: "service-selector",
            title: "the ad Service's selector changed to a label no pod has",
            cause: cause("Service", "shop", "ad", "spec"),
            symptom: "shop/frontend",
            inject: |w, t| {
                let svc = w.service("shop/ad").clone();
                w.queue(
                    t,
                    crate::world::Op::Apply(
                        "services",
                        crate::cluster::service(
                            &svc,
                            "ads",
                            "kubectl-apply",
                            &crate::cluster::rfc3339(t),
                        ),
                    ),
                );
                let mut e = Effect::on("shop/frontend", t + 5_000);
                e.cut = Some("ad".into());
                w.add_effect(e);
            },
        },
        ScenarioType {
            id: "new-external-dependency",
            title: "a shipping image that calls a slow external quote API",
            cause: cause("Deployment", "shop", "shipping", "image"),
            symptom: "shop/checkout",
            inject: |w, t| {
                bad_rollout(
                    w,
                    t,
                    "shop/shipping",
                    "registry.local/shop/shipping:3.1.0",
                    0.05,
                    400.0,
                    "quote: GET https://api.carrier.example/v2/rates took 412ms",
                )
            },
        },
    ]
}

/// The distractors of scenario number `k` around its change at `t`: a noisy
/// rollout of batch/etl-worker (its own errors rise, in a namespace the
/// symptom never talks to) shortly before, and a harmless shop change.
pub fn distractors(w: &mut World, t: i64, k: usize) {
    let at = t - 100_000;
    let rev = w.rollout(at, "batch/etl-worker", "argocd-controller", move |tpl| {
        tpl.image = format!("registry.local/batch/etl-worker:5.3.{k}");
    });
    let mut e = Effect::on("batch/etl-worker", at);
    e.min_rev = Some(rev);
    e.errors = 0.2;
    e.log = Some("etl: partition 7 skipped: schema mismatch".into());
    w.add_effect(e);
    let harmless = t - [150_000, 240_000, 60_000][k % 3];
    match k % 4 {
        0 => w.scale(harmless, "shop/ad", 3, "kubectl-scale"),
        1 => config_change(
            w,
            harmless,
            "shop",
            "loadgenerator-config",
            &[("LOG_LEVEL", "debug"), ("CACHE_TTL", "30s")],
        ),
        2 => {
            w.rollout(harmless, "shop/email", "argocd-controller", |tpl| {
                tpl.image = "registry.local/shop/email:1.2.1".into()
            });
        }
        _ => config_change(
            w,
            harmless,
            "batch",
            "report-api-config",
            &[("LOG_LEVEL", "debug"), ("CACHE_TTL", "60s")],
        ),
    }
}

/// An older, harmless rollout inside every history (ad, 35 min before `end`).
pub fn history(w: &mut World, end: i64) {
    w.rollout(end - 35 * 60_000, "shop/ad", "argocd-controller", |tpl| {
        tpl.image = "registry.local/shop/ad:1.1.1".into();
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_least_twenty_types_with_distinct_ids() {
        let c = catalog();
        assert!(c.len() >= 20, "{}", c.len());
        let mut ids: Vec<&str> = c.iter().map(|s| s.id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), c.len());
    }
}
