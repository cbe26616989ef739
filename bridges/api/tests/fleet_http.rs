//! Many clusters from one install, over real HTTP on loopback: the clusters
//! endpoint lists a fleet of 20, every dashboard variable query is bounded
//! by the selected cluster (or its own limit), and a token of the API tokens
//! file sees only its clusters in every endpoint family.

// Tests may unwrap: a panic is a failing run with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use kube_insight_api::ClusterScope;
use kube_insight_core::event::{
    gitops_of, managers_of, parse_event, sanitize, ChangeKind, EventOrigin, SecretKey,
};
use kube_insight_core::log::{LogRecord, LogStreamKey, LogStreamMeta};
use kube_insight_sources::metrics::ingest_series;
use kube_insight_sources::metrics::transform::LabelPolicy;
use kube_insight_sources::prometheus::exposition::parse_to_series;
use kube_insight_store::conformance_events::raw_deployment;
use kube_insight_store::conformance_topology::sample;
use kube_insight_store::{DynStore, LogBatch, LogStreamBatch, ObjectWrite, StoreOptions};
use kube_insight_telemetry::Telemetry;
use serde_json::Value;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

const FEDERATE: &str = include_str!("../../../../shared/fixtures/federate-sample.txt");
const KSM: &str = include_str!("../../../../shared/fixtures/kube-state-metrics-sample.txt");
const EVENT: &str = include_str!("../../../../shared/fixtures/k8s-core-v1-event.json");
/// KSM's direct-scrape fixture has no timestamps: give them one near the federate fixture's.
const KSM_TS: i64 = 1_717_171_700_000;
/// 2024-05-31T16:00:00Z, inside the fixtures' day.
const T0: i64 = 1_717_171_200_000;
const FROM: i64 = 1_717_113_600_000; // 2024-05-31T00:00:00Z
const TO: i64 = 1_717_200_000_000; // 2024-06-01T00:00:00Z
const RANGE: &str = "from=2024-05-31T00:00:00Z&to=2024-06-01T00:00:00Z";
const CLUSTERS: usize = 20;

const TOKEN_C00: &str = "token-for-c00-only-0001";
const TOKEN_C01_C02: &str = "token-for-c01-and-c02-01";
const TOKEN_ALL: &str = "token-for-every-cluster1";

fn cluster(i: usize) -> String {
    format!("c{i:02}")
}

/// 20 clusters with the fixtures' metrics; c00, c01 and c02 also with a log
/// stream, an event, a Deployment's versions and topology, each naming its
/// cluster.
async fn fleet() -> (DynStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let century = Duration::from_secs(100 * 365 * 86_400);
    let opts = StoreOptions {
        retention: kube_insight_store::Retention {
            metrics: century,
            logs: century,
            events: century,
            topology: century,
        },
        ..Default::default()
    };
    let store =
        kube_insight_store_sqlite::open(&format!("sqlite://{}/a.db", dir.path().display()), opts)
            .await
            .unwrap();
    for i in 0..CLUSTERS {
        for (text, ts) in [(FEDERATE, 0), (KSM, KSM_TS)] {
            let (series, report) = parse_to_series(text, ts);
            assert!(report.is_clean(), "{:?}", report.errors);
            ingest_series(
                &store,
                &cluster(i),
                series,
                &LabelPolicy::default(),
                vec![],
                None,
            )
            .await
            .unwrap();
        }
    }
    let key = SecretKey::from_bytes(&[7; 32]).unwrap();
    for c in (0..3).map(cluster) {
        store
            .logs()
            .write_logs(LogBatch {
                cluster: c.clone(),
                streams: vec![LogStreamBatch {
                    key: LogStreamKey::new(&c, "shop", "api-1", "api"),
                    meta: LogStreamMeta::default(),
                    records: vec![LogRecord {
                        timestamp_ns: (T0 + 1_000) * 1_000_000,
                        line: format!("hello from {c}"),
                        ..Default::default()
                    }],
                }],
            })
            .await
            .unwrap();
        let ev = parse_event(
            &serde_json::from_str(EVENT).unwrap(),
            &c,
            EventOrigin::Watch,
            0,
        )
        .unwrap();
        store.events().write_events(vec![ev]).await.unwrap();
        let raw = raw_deployment(&format!("api:{c}"), 3, "argocd-controller");
        store
            .events()
            .write_objects(vec![ObjectWrite {
                cluster: c.clone(),
                group: "apps".into(),
                kind: "Deployment".into(),
                namespace: "shop".into(),
                name: "api".into(),
                uid: format!("dep-{c}"),
                resource_version: "1".into(),
                at_ms: T0,
                change: ChangeKind::Created,
                object: sanitize("Deployment", &raw, &key).unwrap(),
                managers: managers_of(&raw),
                gitops: gitops_of(&raw),
                gap: None,
            }])
            .await
            .unwrap();
        // Two saves that differ: the graph and a dependency change.
        for (n, at) in [(0, T0), (1, T0 + 60_000)] {
            store
                .topology()
                .save_snapshot(&c, at, sample(n))
                .await
                .unwrap();
        }
    }
    (store, dir)
}

async fn serve(store: DynStore, tokens: Vec<(String, ClusterScope)>) -> String {
    let app = kube_insight_api::router(
        store,
        Arc::new(Telemetry::new()),
        kube_insight_api::ApiConfig {
            tokens,
            ..Default::default()
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

async fn get(url: &str, token: Option<&str>) -> (u16, Value) {
    let mut r = reqwest::Client::new().get(url);
    if let Some(t) = token {
        r = r.bearer_auth(t);
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// The `cluster` field of every row (or of the object itself).
fn clusters_of(v: &Value) -> BTreeSet<String> {
    let rows = match v {
        Value::Array(a) => a.clone(),
        other => vec![other.clone()],
    };
    rows.iter()
        .filter_map(|r| r["cluster"].as_str().map(str::to_string))
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn the_clusters_endpoint_lists_a_fleet_of_twenty() {
    let (store, _d) = fleet().await;
    let base = serve(store, Vec::new()).await;
    let (status, rows) = get(&format!("{base}/api/v1/clusters?{RANGE}"), None).await;
    assert_eq!(status, 200, "{rows}");
    let rows = rows.as_array().unwrap();
    let names: Vec<&str> = rows
        .iter()
        .map(|r| r["cluster"].as_str().unwrap())
        .collect();
    let want: Vec<String> = (0..CLUSTERS).map(cluster).collect();
    assert_eq!(names, want);
    for r in rows {
        assert!(
            r["last_seen"].as_str().unwrap().starts_with("2024-05-31T"),
            "{r}"
        );
        assert!(r["series"].as_u64().unwrap() > 10, "{r}");
    }
    assert!(rows[1]["topology_last_save"]
        .as_str()
        .unwrap()
        .starts_with("2024-05-31T16:01:00"));
    assert_eq!(rows[5]["topology_last_save"], Value::Null);
    // Its own bound is explicit.
    let (status, err) = get(&format!("{base}/api/v1/clusters?{RANGE}&limit=5"), None).await;
    assert_eq!(status, 422, "{err}");
    assert!(err["error"]
        .as_str()
        .unwrap()
        .contains("more than 5 clusters"));
    // A range without data lists none.
    let (_, none) = get(
        &format!("{base}/api/v1/clusters?from=2020-01-01T00:00:00Z&to=2020-01-02T00:00:00Z"),
        None,
    )
    .await;
    assert_eq!(none, Value::Array(vec![]));

    // The unfiltered entity tree over its limit names the filter to add.
    let (status, err) = get(&format!("{base}/api/v1/entities?{RANGE}&limit=50"), None).await;
    assert_eq!(status, 422, "{err}");
    let msg = err["error"].as_str().unwrap();
    assert!(
        msg.contains("give parameter cluster") && msg.contains("/api/v1/clusters"),
        "{msg}"
    );
    // level= keeps one row per entity of that depth.
    let (status, all) = get(&format!("{base}/api/v1/entities?{RANGE}&cluster=c03"), None).await;
    assert_eq!(status, 200, "{all}");
    let (status, ns) = get(
        &format!("{base}/api/v1/entities?{RANGE}&cluster=c03&level=namespace"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{ns}");
    let ns = ns.as_array().unwrap();
    let distinct: BTreeSet<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["namespace"].as_str().filter(|n| !n.is_empty()))
        .collect();
    assert_eq!(ns.len(), distinct.len(), "{ns:?}");
    assert!(ns.len() < all.as_array().unwrap().len());
    assert!(ns.iter().all(|r| r["cluster"] == "c03" && r["pod"] == ""));
    let (status, err) = get(&format!("{base}/api/v1/entities?{RANGE}&level=node"), None).await;
    assert_eq!(status, 400);
    assert!(err["error"].as_str().unwrap().contains("parameter level"));
}

/// Every Grafana dashboard's query variables: the cluster list comes from
/// `/api/v1/clusters` with a limit, every other list is scoped by the one
/// selected cluster (a single-valued variable without All); resolved in
/// order against the fleet, each answers 200 with rows of that cluster only.
#[tokio::test]
async fn every_dashboard_variable_query_is_bounded() {
    let (store, _d) = fleet().await;
    let base = serve(store, Vec::new()).await;
    let dir = format!("{}/../../grafana/dashboards", env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    let mut checked = 0;
    for path in files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let d: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let vars = d["templating"]["list"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        // Selected values, resolved in order as Grafana does.
        let mut chosen: Vec<(String, String)> = vec![
            ("__from".into(), FROM.to_string()),
            ("__to".into(), TO.to_string()),
        ];
        for v in &vars {
            if v["type"] != "query" {
                continue;
            }
            let var = v["name"].as_str().unwrap();
            let url = v["query"]["infinityQuery"]["url"].as_str().unwrap();
            let what = format!("{name}: variable {var} ({url})");
            if var == "cluster" {
                assert!(
                    url.starts_with("/api/v1/clusters?") && url.contains("limit="),
                    "{what}: the cluster list comes from /api/v1/clusters with a limit"
                );
                assert!(
                    v["includeAll"] != true && v["multi"] != true,
                    "{what}: one cluster at a time"
                );
            } else {
                assert!(
                    url.contains("cluster=${cluster}"),
                    "{what}: not scoped by the selected cluster"
                );
                if url.starts_with("/api/v1/entities") {
                    assert!(url.contains("&level="), "{what}: one row per value");
                }
            }
            let mut resolved = url.to_string();
            for (k, val) in &chosen {
                for form in [format!("${{{k}}}"), format!("${{{k}:text}}")] {
                    resolved = resolved.replace(&form, val);
                }
            }
            assert!(!resolved.contains('$'), "{what}: unresolved {resolved}");
            let (status, rows) = get(&format!("{base}{resolved}"), None).await;
            assert_eq!(status, 200, "{what}: {rows}");
            let rows = rows.as_array().unwrap();
            let selector = v["query"]["infinityQuery"]["columns"][0]["selector"]
                .as_str()
                .unwrap();
            let values: BTreeSet<&str> = rows
                .iter()
                .filter_map(|r| r[selector].as_str().filter(|s| !s.is_empty()))
                .collect();
            if var == "cluster" {
                assert_eq!(values.len(), CLUSTERS, "{what}: {values:?}");
                // Pick one in the middle: the others must stay out.
                chosen.push((var.into(), "c07".into()));
            } else {
                assert!(
                    rows.iter()
                        .all(|r| r["cluster"].is_null() || r["cluster"] == "c07"),
                    "{what}: rows of other clusters"
                );
                if url.contains("&level=namespace") {
                    assert_eq!(values.len(), rows.len(), "{what}: one row per value");
                }
                // The fixture's shop namespace and its api workload have
                // pods and containers below them.
                let pick = if v["includeAll"] == true {
                    "All".to_string()
                } else if let Some(p) = ["shop", "api"].iter().find(|p| values.contains(*p)) {
                    p.to_string()
                } else {
                    values
                        .iter()
                        .next()
                        .unwrap_or_else(|| panic!("{what}: no values"))
                        .to_string()
                };
                chosen.push((var.into(), pick));
            }
            checked += 1;
        }
    }
    assert!(checked >= 12, "variable queries checked: {checked}");
}

#[tokio::test]
async fn a_scoped_token_sees_only_its_clusters_in_every_endpoint() {
    let (store, _d) = fleet().await;
    let tokens = vec![
        (TOKEN_C00.to_string(), ClusterScope::only(["c00"])),
        (
            TOKEN_C01_C02.to_string(),
            ClusterScope::only(["c01", "c02"]),
        ),
        (TOKEN_ALL.to_string(), ClusterScope::All),
    ];
    let base = serve(store, tokens).await;
    let a = Some(TOKEN_C00);
    let b = Some(TOKEN_C01_C02);
    let all = Some(TOKEN_ALL);
    let at = "at=2024-05-31T16:30:00Z";

    // No token, or an unknown one: 401.
    for t in [None, Some("not-a-token-of-this-install")] {
        let (status, _) = get(&format!("{base}/api/v1/clusters?{RANGE}"), t).await;
        assert_eq!(status, 401);
        let (status, _) = get(&format!("{base}/prometheus/api/v1/query?query=up"), t).await;
        assert_eq!(status, 401);
    }

    // The clusters endpoint lists the token's clusters.
    let (_, rows) = get(&format!("{base}/api/v1/clusters?{RANGE}"), a).await;
    assert_eq!(clusters_of(&rows), set(&["c00"]));
    let (_, rows) = get(&format!("{base}/api/v1/clusters?{RANGE}"), b).await;
    assert_eq!(clusters_of(&rows), set(&["c01", "c02"]));
    let (_, rows) = get(&format!("{base}/api/v1/clusters?{RANGE}"), all).await;
    assert_eq!(clusters_of(&rows).len(), CLUSTERS);

    // Each JSON endpoint family: without a cluster, a one-cluster token
    // reads its cluster; naming another cluster is 403 naming it.
    let families = [
        format!("/api/v1/entities?{RANGE}"),
        format!("/api/v1/logs?{RANGE}"),
        format!("/api/v1/events?{RANGE}"),
        format!("/api/v1/changes?{RANGE}"),
        format!("/api/v1/objects/Deployment/shop/api?{at}"),
        format!("/api/v1/topology?{at}"),
        format!("/api/v1/topology/changes?{RANGE}"),
    ];
    for path in &families {
        let (status, v) = get(&format!("{base}{path}"), a).await;
        assert_eq!(status, 200, "{path}: {v}");
        let seen = clusters_of(&v);
        assert_eq!(seen, set(&["c00"]), "{path}: {v}");
        let (status, v) = get(&format!("{base}{path}&cluster=c01"), a).await;
        assert_eq!(status, 403, "{path}: {v}");
        let msg = v["error"].as_str().unwrap();
        assert!(
            msg.contains("\"c01\"") && msg.contains("c00"),
            "{path}: {msg}"
        );
        // A repeated parameter cannot smuggle another cluster in, nor a
        // last empty or `All` value widen the read.
        let (status, _) = get(&format!("{base}{path}&cluster=c01&cluster=c00"), a).await;
        assert_eq!(status, 403, "{path}");
        for widen in ["&cluster=c00&cluster=", "&cluster=c00&cluster=All"] {
            let (status, v) = get(&format!("{base}{path}{widen}"), a).await;
            assert_eq!(status, 200, "{path}{widen}: {v}");
            assert_eq!(clusters_of(&v), set(&["c00"]), "{path}{widen}: {v}");
        }
        // A two-cluster token names one of its clusters; the other's data stays out.
        let (status, v) = get(&format!("{base}{path}&cluster=c02"), b).await;
        assert_eq!(status, 200, "{path}: {v}");
        assert_eq!(clusters_of(&v), set(&["c02"]), "{path}: {v}");
        let (status, v) = get(&format!("{base}{path}"), b).await;
        assert_eq!(status, 400, "{path}: {v}");
        assert!(
            v["error"]
                .as_str()
                .unwrap()
                .contains("parameter cluster is required"),
            "{path}: {v}"
        );
        // `*` reads any cluster.
        let (status, v) = get(&format!("{base}{path}&cluster=c01"), all).await;
        assert_eq!(status, 200, "{path}: {v}");
        assert_eq!(clusters_of(&v), set(&["c01"]), "{path}: {v}");
    }
    // The log line itself is c00's.
    let (_, logs) = get(&format!("{base}/api/v1/logs?{RANGE}"), a).await;
    assert!(logs.to_string().contains("hello from c00"), "{logs}");
    assert!(!logs.to_string().contains("hello from c01"), "{logs}");
    // Suspects of another cluster: 403 before any work.
    let (status, v) = get(
        &format!("{base}/api/v1/suspects?cluster=c05&namespace=shop&workload=api&{at}"),
        a,
    )
    .await;
    assert_eq!(status, 403, "{v}");

    // PromQL: every selection is held to the token's clusters.
    let prom =
        |q: &str| format!("{base}/prometheus/api/v1/query?time=2024-05-31T16:08:40Z&query={q}");
    let result_clusters = |v: &Value| -> BTreeSet<String> {
        v["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| s["metric"]["cluster"].as_str().map(str::to_string))
            .collect()
    };
    let q = "count%20by%20(cluster)%20(%7B__name__%3D~%22.%2B%22%7D)";
    let (status, v) = get(&prom(q), a).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(result_clusters(&v), set(&["c00"]));
    let (_, v) = get(&prom(q), b).await;
    assert_eq!(result_clusters(&v), set(&["c01", "c02"]));
    let (_, v) = get(&prom(q), all).await;
    assert_eq!(result_clusters(&v).len(), CLUSTERS);
    // Naming another cluster is 403 naming it, wherever the selector is.
    for q in [
        "kube_pod_owner%7Bcluster%3D%22c05%22%7D",
        "sum(rate(container_cpu_usage_seconds_total%5B5m%5D))%20or%20kube_pod_owner%7Bcluster%3D%22c05%22%7D",
    ] {
        let (status, v) = get(&prom(q), a).await;
        assert_eq!(status, 403, "{q}: {v}");
        assert_eq!(v["status"], "error");
        assert!(v["error"].as_str().unwrap().contains("\"c05\""), "{v}");
    }
    let (status, v) = get(
        &format!("{base}/prometheus/api/v1/series?match[]=%7Bcluster%3D%22c05%22%7D"),
        a,
    )
    .await;
    assert_eq!(status, 403, "{v}");
    // A regex over other clusters selects nothing.
    for q in [
        "count(kube_pod_owner%7Bcluster%3D~%22c0%5B3-9%5D%22%7D)",
        "kube_pod_owner%7Bcluster!%3D%22c00%22%7D",
    ] {
        let (status, v) = get(&prom(q), a).await;
        assert_eq!(status, 200, "{v}");
        assert_eq!(v["data"]["result"], Value::Array(vec![]), "{q}: {v}");
    }
    // Range queries and POST forms alike.
    let (_, v) = get(
        &format!("{base}/prometheus/api/v1/query_range?start=2024-05-31T16:00:00Z&end=2024-05-31T16:10:00Z&step=60&query={q}"),
        a,
    )
    .await;
    assert_eq!(result_clusters(&v), set(&["c00"]), "{v}");
    let r = reqwest::Client::new()
        .post(format!("{base}/prometheus/api/v1/query"))
        .bearer_auth(TOKEN_C01_C02)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("time=2024-05-31T16:08:40Z&query={q}"))
        .send()
        .await
        .unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(result_clusters(&v), set(&["c01", "c02"]), "{v}");
    // Series, labels and label values.
    let (_, v) = get(
        &format!(
            "{base}/prometheus/api/v1/series?match[]=kube_pod_owner&start=2024-05-31T00:00:00Z"
        ),
        a,
    )
    .await;
    let series = v["data"].as_array().unwrap();
    assert!(!series.is_empty());
    assert!(series.iter().all(|s| s["cluster"] == "c00"), "{v}");
    let (_, v) = get(&format!("{base}/prometheus/api/v1/label/cluster/values"), b).await;
    assert_eq!(v["data"], serde_json::json!(["c01", "c02"]));
    let (_, v) = get(
        &format!("{base}/prometheus/api/v1/label/cluster/values"),
        all,
    )
    .await;
    assert_eq!(v["data"].as_array().unwrap().len(), CLUSTERS);
    let (status, v) = get(&format!("{base}/prometheus/api/v1/labels"), a).await;
    assert_eq!(status, 200, "{v}");
    assert!(v["data"].as_array().unwrap().iter().any(|l| l == "cluster"));
}
