//! The fixture cluster that the live end-to-end tests (the dashboards', the
//! web UI's) run against: `kube-insight run` with every target over a
//! store filled with the shared fixtures (cAdvisor and kube-state-metrics
//! samples, the Fluent Bit bodies, the Kubernetes event stream, moved to
//! yesterday and the last minutes), a scripted Deployment history (mock API
//! server) and the shop of `topology_mock.rs` pushed phase by phase.
//!
//! A test declares `support`, `kube_mock` and `topology_mock` beside this
//! module (`#[path = "support/…"]`).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use crate::kube_mock::{deployment, KubeMock};
use crate::support::*;
use crate::topology_mock::{expected_edges, Phase, Shop};
use kube_insight_core::time::{format_rfc3339_ms, now_ms};
use kube_insight_core::{parse_time_ms, Labels, Sample, TimeSeries};
use kube_insight_sources::prometheus::exposition::parse_to_series;
use kube_insight_sources::prometheus::remote_write::encode;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The repository's root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// A running, filled fixture cluster (cluster name `e2e`).
pub struct FixtureCluster {
    pub ki: KubeInsight,
    pub mock: KubeMock,
    /// The day the fixtures were moved to (yesterday, `YYYY-MM-DD`).
    pub day: String,
    pub shift_ms: i64,
    /// When the fill ended: the shop's last phase is live just before.
    pub filled_ms: i64,
    pub client: reqwest::Client,
}

impl FixtureCluster {
    /// Starts `kube-insight run` with its store in `dir` and fills it.
    pub async fn start(dir: &Path) -> FixtureCluster {
        FixtureCluster::start_with(dir, &[]).await
    }

    /// The same, with extra environment for `kube-insight run`.
    pub async fn start_with(dir: &Path, extra: &[(&str, String)]) -> FixtureCluster {
        let (day, shift_ms) = yesterday();
        let mock = KubeMock::start().await;
        mock.apply(
            "deployments",
            deployment(
                "shop",
                "api",
                "u-api",
                "registry/api:1.0",
                3,
                "argocd-controller",
                &format!("{day}T00:00:00Z"),
            ),
        );
        let kubeconfig = mock.kubeconfig(dir);
        let env = [
            ("KUBE_INSIGHT_TARGETS", "all".to_string()),
            ("KUBE_INSIGHT_CLUSTER", "e2e".to_string()),
            ("KUBE_INSIGHT_KUBECONFIG", kubeconfig.display().to_string()),
            (
                "KUBE_INSIGHT_EVENTS_KINDS",
                "v1/Event,apps/v1/Deployment".to_string(),
            ),
            ("KUBE_INSIGHT_TOPOLOGY_INTERVAL", "1s".to_string()),
            ("KUBE_INSIGHT_TOPOLOGY_WINDOW", "4s".to_string()),
        ];
        let mut env = env.to_vec();
        env.extend(extra.iter().cloned());
        let ki = KubeInsight::start(dir, &env, None).await;
        let m = mock.clone();
        eventually("the initial lists", Duration::from_secs(30), move || {
            let m = m.clone();
            async move {
                let r = m.requests();
                ["deployments", "events"]
                    .iter()
                    .all(|p| r.iter().any(|x| x.starts_with(&format!("WATCH {p} "))))
                    .then_some(())
            }
        })
        .await;
        let client = reqwest::Client::new();
        fill(&client, &ki, &mock, &day, shift_ms).await;
        let filled_ms = now_ms();
        if std::env::var_os("KUBE_INSIGHT_TEST_HOLD").is_some() {
            // Development: keep the filled cluster up to look at by hand.
            eprintln!(
                "holding: api {} (filled at {})",
                ki.api,
                format_rfc3339_ms(filled_ms)
            );
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        FixtureCluster {
            ki,
            mock,
            filled_ms,
            day,
            shift_ms,
            client,
        }
    }
}

pub fn fixture(name: &str) -> String {
    // Beside the repository (`../shared/fixtures`), or where
    // KUBE_INSIGHT_TEST_FIXTURES points (a worktree elsewhere).
    let dir = std::env::var_os("KUBE_INSIGHT_TEST_FIXTURES")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join("../shared/fixtures"));
    std::fs::read_to_string(dir.join(name))
        .unwrap_or_else(|e| panic!("fixture {name} in {}: {e}", dir.display()))
}

/// The fixtures' day, and the day it is moved to (yesterday, UTC).
pub const FIXTURE_DAY: &str = "2024-05-31";

pub fn yesterday() -> (String, i64) {
    let day_ms = 86_400_000;
    let today = now_ms() / day_ms * day_ms;
    let y = today - day_ms;
    let shift = y - parse_time_ms(&format!("{FIXTURE_DAY}T00:00:00Z")).unwrap();
    (format_rfc3339_ms(y)[..10].to_string(), shift)
}

pub const API_POD: &str = "api-5f6d7c8b9-qwz7p";

/// The cAdvisor and kube-state-metrics fixtures (the `shop/api` pod), and
/// what they imply, as live series: counters grow at a steady rate, gauges
/// keep their value; plus the pod's sent bytes, restarts (it is in
/// BackOff in the event fixture) and a Beyla flow frontend → api.
pub struct FixturePods {
    series: Vec<(Labels, f64, f64)>, // labels, value at t0, rate per second
    t0_ms: i64,
}

impl FixturePods {
    pub fn new(t0_ms: i64) -> FixturePods {
        let mut series = Vec::new();
        for file in [
            "kubelet-cadvisor-sample.txt",
            "kube-state-metrics-sample.txt",
        ] {
            let (parsed, report) = parse_to_series(fixture(file), 0);
            assert!(report.errors.is_empty(), "{file}: {:?}", report.errors);
            for s in parsed {
                let name = s.labels.get("__name__").unwrap().to_string();
                let v = s.samples.last().unwrap().value;
                let rate = match name.as_str() {
                    "container_cpu_usage_seconds_total" => 0.2,
                    "container_network_receive_bytes_total" => 5_000.0,
                    _ => 0.0,
                };
                series.push((s.labels, v, rate));
            }
        }
        let l = |pairs: &[(&str, &str)]| Labels::from_pairs(pairs.iter().copied());
        series.push((
            l(&[
                ("__name__", "container_network_transmit_bytes_total"),
                ("namespace", "shop"),
                ("pod", API_POD),
                ("interface", "eth0"),
            ]),
            4.2e8,
            3_000.0,
        ));
        series.push((
            l(&[
                ("__name__", "kube_pod_container_status_restarts_total"),
                ("namespace", "shop"),
                ("pod", API_POD),
                ("container", "api"),
                ("uid", "c3d4e5f6-a7b8-4c9d-8e0f-1a2b3c4d5e6f"),
            ]),
            7.0,
            1.0 / 120.0,
        ));
        // Beyla's application RED metrics of shop/api: 20 requests/s, 1 %
        // of them 5xx; the histogram's buckets as Beyla exports them.
        for (code, rate) in [("200", 19.8), ("500", 0.2)] {
            let labels = |name: &'static str, le: Option<&'static str>| {
                let mut v = vec![
                    ("__name__", name),
                    ("job", "beyla"),
                    ("k8s_namespace_name", "shop"),
                    ("k8s_deployment_name", "api"),
                    ("k8s_owner_name", "api"),
                    ("k8s_pod_name", API_POD),
                    ("http_request_method", "GET"),
                    ("http_response_status_code", code),
                ];
                if let Some(le) = le {
                    v.push(("le", le));
                }
                l(&v)
            };
            for (le, share) in [("0.05", 0.5), ("0.1", 0.9), ("0.5", 0.99), ("+Inf", 1.0)] {
                series.push((
                    labels("http_server_request_duration_seconds_bucket", Some(le)),
                    0.0,
                    rate * share,
                ));
            }
            series.push((
                labels("http_server_request_duration_seconds_count", None),
                0.0,
                rate,
            ));
            series.push((
                labels("http_server_request_duration_seconds_sum", None),
                0.0,
                rate * 0.06,
            ));
        }
        series.push((
            l(&[
                ("__name__", "beyla_network_flow_bytes_total"),
                ("job", "beyla"),
                ("k8s_src_namespace", "shop"),
                ("k8s_src_owner_name", "frontend"),
                ("k8s_src_owner_type", "Deployment"),
                ("k8s_dst_namespace", "shop"),
                ("k8s_dst_owner_name", "api"),
                ("k8s_dst_owner_type", "Deployment"),
            ]),
            1_000.0,
            2_000.0,
        ));
        FixturePods { series, t0_ms }
    }

    pub fn at(&self, t_ms: i64) -> Vec<TimeSeries> {
        let dt = (t_ms - self.t0_ms) as f64 / 1000.0;
        self.series
            .iter()
            .map(|(l, v, rate)| {
                let mut value = v + rate * dt;
                if l.get("__name__") == Some("kube_pod_container_status_restarts_total") {
                    value = value.floor();
                }
                TimeSeries::new(l.clone(), vec![Sample::new(t_ms, value)])
            })
            .collect()
    }
}

pub async fn remote_write(client: &reqwest::Client, ki: &KubeInsight, series: &[TimeSeries]) {
    let r = client
        .post(format!("{}/ingest/prometheus/api/v1/write", ki.ingest))
        .header("content-encoding", "snappy")
        .body(encode(series, &[]).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204, "{}", r.text().await.unwrap());
}

pub async fn api_json(client: &reqwest::Client, ki: &KubeInsight, path: &str) -> Value {
    api_query(client, &ki.api, path, &[]).await
}

/// GET `base` + `path` with query parameters; the JSON answer (a failure
/// status fails the test).
pub async fn api_query(
    client: &reqwest::Client,
    base: &str,
    path: &str,
    q: &[(&str, String)],
) -> Value {
    let r = client
        .get(format!("{base}{path}"))
        .query(q)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    assert!(status.is_success(), "GET {path}: {status}: {body}");
    body
}

/// Fills the store: the fixture pods' last ten minutes, the Fluent Bit
/// bodies and the event stream moved to yesterday, the Deployment's
/// history, then the shop's three phases until the live topology shows
/// each.
pub async fn fill(
    client: &reqwest::Client,
    ki: &KubeInsight,
    mock: &KubeMock,
    day: &str,
    shift_ms: i64,
) {
    let start = now_ms();
    let pods = FixturePods::new(start - 600_000);
    for k in 0..=40 {
        remote_write(client, ki, &pods.at(start - 600_000 + k * 15_000)).await;
    }

    // Logs: both Fluent Bit bodies, as the manifests' Fluent Bit sends them.
    let lines: Vec<String> = fixture("fluentbit-http-json_lines.txt")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut v: Value = serde_json::from_str(&l.replace(FIXTURE_DAY, day)).unwrap();
            if let Some(d) = v["date"].as_f64() {
                v["date"] = Value::from(d + (shift_ms / 1000) as f64);
            }
            v.to_string()
        })
        .collect();
    for (body, kind) in [
        (lines.join("\n") + "\n", "application/x-ndjson"),
        (
            fixture("fluentbit-http-json.json").replace(FIXTURE_DAY, day),
            "application/json",
        ),
    ] {
        let r = client
            .post(format!("{}/ingest/fluent-bit", ki.ingest))
            .header("content-type", kind)
            .body(body)
            .send()
            .await
            .unwrap();
        assert!(
            r.status().is_success(),
            "{}: {}",
            r.status(),
            r.text().await.unwrap()
        );
    }

    // Events and the Deployment's history (the baseline was listed at start).
    for (image, time) in [
        ("registry/api:1.1", "08:00:00"),
        ("registry/api:1.2", "12:00:00"),
    ] {
        mock.apply(
            "deployments",
            deployment(
                "shop",
                "api",
                "u-api",
                image,
                3,
                "argocd-controller",
                &format!("{day}T{time}Z"),
            ),
        );
    }
    for line in fixture("k8s-watch-events-stream.jsonl")
        .lines()
        .filter(|l| !l.trim().is_empty())
    {
        mock.raw_event(
            "events",
            &serde_json::from_str(&line.replace(FIXTURE_DAY, day)).unwrap(),
        );
    }

    // The shop, phase by phase, with the fixture pods alive.
    let mut shop = Shop::default();
    for phase in [Phase::A, Phase::B, Phase::C] {
        let mut want: Vec<String> = expected_edges(phase)
            .iter()
            .map(|s| s.to_string())
            .collect();
        want.push("shop/api--shop/frontend".into());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let t = now_ms();
            let mut batch = shop.push(phase, t);
            batch.extend(pods.at(t));
            remote_write(client, ki, &batch).await;
            let edges = api_json(
                client,
                ki,
                &format!("/api/v1/topology/edges?at={}", now_ms()),
            )
            .await;
            let ids: BTreeSet<String> = edges
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["id"].as_str().unwrap().to_string())
                .collect();
            if want.iter().all(|w| ids.contains(w)) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "phase {phase:?}: edges {ids:?}, want {want:?}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        for _ in 0..4 {
            let t = now_ms();
            let mut batch = shop.push(phase, t);
            batch.extend(pods.at(t));
            remote_write(client, ki, &batch).await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    // Node and edge stats are kept per minute (the first save of a
    // minute): keep the last phase up until a minute has started inside it.
    let minute_start = ((now_ms() + 5_000) / 60_000 + 1) * 60_000;
    while now_ms() < minute_start + 2_500 {
        let t = now_ms();
        let mut batch = shop.push(Phase::C, t);
        batch.extend(pods.at(t));
        remote_write(client, ki, &batch).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Everything is readable before the dashboards are.
    let from = format!("{day}T00:00:00Z");
    eventually(
        "the fixture's events and history",
        Duration::from_secs(30),
        || {
            let path = format!("/api/v1/changes?from={from}&to={}&workload=api", now_ms());
            async move {
                let v = api_json(client, ki, &path).await;
                let rows = v.as_array().cloned().unwrap_or_default();
                let has = |cat: &str| rows.iter().any(|r| r["category"] == cat);
                (has("event") && has("object")).then_some(())
            }
        },
    )
    .await;
    let logs = api_json(
        client,
        ki,
        &format!("/api/v1/logs?from={from}&to={}&workload=api", now_ms()),
    )
    .await;
    assert!(
        !logs.as_array().unwrap().is_empty(),
        "the api pod's logs: {logs}"
    );
}
