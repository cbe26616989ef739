//! The suspects accuracy test: every scenario type of `kube-insight-scenario`
//! is played into its own `kube-insight run` (temp store) through the real
//! ingest paths — remote write, Fluent Bit, the scripted API server — with
//! 30 min of backdated history, distractors and the incident 6 min before
//! the end; then `/api/v1/suspects` is asked for the symptom's workload and
//! the cause's rank is recorded. Asserts top-1 ≥ 80 % and top-3 ≥ 95 %, and
//! prints the per-scenario ranks (BENCHMARKS.md, "suspects accuracy").
//! The query latencies printed are seen in a test on a loaded machine: not
//! a benchmark.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use kube_insight_scenario::{build, catalog, ApiServer, Player, ScenarioType, Timeline};
use serde_json::Value;
use std::time::{Duration, Instant};
use support::{eventually, KubeInsight};

/// How far back the suspects look: inside the 30 min history, so the
/// start of the played data is not taken for an onset.
const WINDOW: &str = "20m";

/// Scenarios played at once (each is a kube-insight process).
const PARALLEL: usize = 3;

#[derive(Debug)]
struct Outcome {
    id: &'static str,
    /// 1-based rank of the cause; `None` when it is not in the answer.
    rank: Option<usize>,
    top: String,
    latency_ms: f64,
    /// The endpoint answered 404 (not built in this version).
    missing: bool,
}

fn matches(s: &Value, sc: &ScenarioType) -> bool {
    let c = sc.cause;
    s["kind"]
        .as_str()
        .is_some_and(|k| k.eq_ignore_ascii_case(c.kind))
        && s["name"].as_str() == Some(c.name)
        && s["namespace"].as_str().unwrap_or("") == c.namespace
}

async fn play_one(k: usize, sc: ScenarioType) -> Outcome {
    let dir = tempfile::tempdir().unwrap();
    let api = ApiServer::start().await.unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(&kubeconfig, api.kubeconfig()).unwrap();
    let ki = KubeInsight::start(
        dir.path(),
        &[
            ("KUBE_INSIGHT_LOG", "warn".to_string()),
            ("KUBE_INSIGHT_CLUSTER", "prod".to_string()),
            ("KUBE_INSIGHT_KUBECONFIG", kubeconfig.display().to_string()),
            (
                "KUBE_INSIGHT_EVENTS_KINDS",
                kube_insight_scenario::WATCH_KINDS.to_string(),
            ),
            ("KUBE_INSIGHT_TOPOLOGY_INTERVAL", "1s".to_string()),
        ],
        None,
    )
    .await;
    let a = api.clone();
    eventually(
        "the watch of every kind",
        Duration::from_secs(60),
        move || {
            let a = a.clone();
            async move {
                a.watching(&kube_insight_scenario::WATCH_PLURALS)
                    .then_some(())
            }
        },
    )
    .await;
    let tl = Timeline::ending_at(
        kube_insight_core::time::now_ms(),
        Duration::from_secs(30 * 60),
        Duration::from_secs(6 * 60),
    );
    let mut world = build(k, &sc, tl);
    let mut player = Player::new(&ki.ingest, None, api.clone());
    player.play(&mut world, tl.start, tl.end, 40).await.unwrap();
    api.bookmark_all();
    let client = reqwest::Client::new();
    // The topology snapshot after the play, and the changes stored.
    let api_url = ki.api.clone();
    let c = client.clone();
    let at = eventually("a topology snapshot", Duration::from_secs(60), move || {
        let (c, u) = (c.clone(), api_url.clone());
        async move {
            let now = kube_insight_core::time::now_ms();
            let r = c.get(format!("{u}/api/v1/topology")).send().await.ok()?;
            let v: Value = r.json().await.ok()?;
            let n = v["edges"].as_array().map_or(0, Vec::len)
                + v["edges"].as_object().map_or(0, |m| m.len());
            (n > 0).then_some(now)
        }
    })
    .await;
    let mut last = 0;
    for _ in 0..40 {
        let r = client
            .get(format!("{}/api/v1/changes", ki.api))
            .query(&[("from", "now-3h"), ("include", "status")])
            .send()
            .await
            .unwrap();
        let n = r.text().await.unwrap().len();
        if n == last && n > 0 {
            break;
        }
        last = n;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let (ns, name) = sc.symptom.split_once('/').unwrap();
    let at_ms = at.max(tl.end) + 1000;
    let at_s = kube_insight_scenario::cluster::rfc3339(at_ms);
    let started = Instant::now();
    let params = [
        ("cluster", "prod"),
        ("namespace", ns),
        ("workload", name),
        ("at", at_s.as_str()),
        ("window", WINDOW),
    ];
    let r = client
        .get(format!("{}/api/v1/suspects", ki.api))
        .query(&params)
        .send()
        .await
        .unwrap();
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    let status = r.status();
    let body = r.text().await.unwrap();
    if status == 404 {
        return Outcome {
            id: sc.id,
            rank: None,
            top: String::new(),
            latency_ms,
            missing: true,
        };
    }
    assert!(
        status.is_success(),
        "{}: GET /api/v1/suspects: {status}: {body}",
        sc.id
    );
    let v: Value = serde_json::from_str(&body).unwrap();
    let list = v.as_array().cloned().unwrap_or_default();
    let rank = list.iter().position(|s| matches(s, &sc)).map(|i| i + 1);
    let top = list
        .first()
        .map(|s| {
            format!(
                "{} {}/{} ({})",
                s["kind"].as_str().unwrap_or(""),
                s["namespace"].as_str().unwrap_or(""),
                s["name"].as_str().unwrap_or(""),
                s["category"].as_str().unwrap_or("")
            )
        })
        .unwrap_or_default();
    if rank != Some(1) {
        let shown: Vec<String> = list
            .iter()
            .take(4)
            .map(|s| {
                format!(
                    "  #{} {} {}/{} {} score {:.3}: {}",
                    s["rank"],
                    s["kind"].as_str().unwrap_or(""),
                    s["namespace"].as_str().unwrap_or(""),
                    s["name"].as_str().unwrap_or(""),
                    s["category"].as_str().unwrap_or(""),
                    s["score"].as_f64().unwrap_or(0.0),
                    s["why"]
                )
            })
            .collect();
        // Why: the onset the model found and the scope it walked.
        let onset = client
            .get(format!("{}/api/v1/suspects/onset", ki.api))
            .query(&params)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let onset: String = onset.chars().take(1200).collect();
        // And the symptom itself, through PromQL, before and at the symptom time.
        let q = format!(
            "sum(rate(http_server_request_duration_seconds_count{{k8s_namespace_name=\"{ns}\",k8s_owner_name=\"{name}\",http_response_status_code=\"500\"}}[2m])) / sum(rate(http_server_request_duration_seconds_count{{k8s_namespace_name=\"{ns}\",k8s_owner_name=\"{name}\"}}[2m]))"
        );
        let mut ratios = Vec::new();
        for t in [tl.incident - 120_000, at_ms] {
            let v: Value = client
                .get(format!("{}/prometheus/api/v1/query", ki.api))
                .query(&[
                    ("query", q.as_str()),
                    ("time", &format!("{}", t as f64 / 1000.0)),
                ])
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            ratios.push(
                v["data"]["result"][0]["value"][1]
                    .as_str()
                    .unwrap_or("none")
                    .to_string(),
            );
        }
        eprintln!(
            "  error ratio of {}: {} before the incident, {} at the symptom time",
            sc.symptom, ratios[0], ratios[1]
        );
        eprintln!(
            "{} (cause {:?}, rank {rank:?}):\n{}\n  onset: {onset}",
            sc.id,
            sc.cause,
            shown.join("\n")
        );
    }
    drop(ki);
    Outcome {
        id: sc.id,
        rank,
        top,
        latency_ms,
        missing: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn suspects_rank_the_known_cause_of_every_scenario() {
    // SCENARIOS=id,id plays only those (to look at a miss); the accuracy
    // is asserted over the whole catalogue only.
    let only = std::env::var("SCENARIOS").ok();
    let all = catalog();
    assert!(all.len() >= 20);
    let types: Vec<ScenarioType> = all
        .iter()
        .filter(|s| {
            only.as_deref()
                .is_none_or(|o| o.split(',').any(|id| id == s.id))
        })
        .copied()
        .collect();
    let started = Instant::now();
    let mut outcomes = Vec::new();
    for chunk in types
        .iter()
        .enumerate()
        .collect::<Vec<_>>()
        .chunks(PARALLEL)
    {
        let runs = chunk.iter().map(|(k, s)| tokio::spawn(play_one(*k, **s)));
        for r in futures::future::join_all(runs).await {
            outcomes.push(r.unwrap());
        }
        if outcomes.iter().any(|o| o.missing) {
            eprintln!("skipped: /api/v1/suspects not available");
            return;
        }
    }
    println!("\n| scenario | cause | rank | top suspect | query ms |\n|---|---|---|---|---|");
    for (o, s) in outcomes.iter().zip(&types) {
        println!(
            "| {} | {} {}/{} ({}) | {} | {} | {:.0} |",
            o.id,
            s.cause.kind,
            s.cause.namespace,
            s.cause.name,
            s.cause.category,
            o.rank.map_or("-".to_string(), |r| r.to_string()),
            o.top,
            o.latency_ms
        );
    }
    let n = outcomes.len() as f64;
    let top1 = outcomes.iter().filter(|o| o.rank == Some(1)).count() as f64 / n;
    let top3 = outcomes
        .iter()
        .filter(|o| o.rank.is_some_and(|r| r <= 3))
        .count() as f64
        / n;
    let mut lat: Vec<f64> = outcomes.iter().map(|o| o.latency_ms).collect();
    lat.sort_by(f64::total_cmp);
    println!(
        "\n{} scenarios in {:.0} s: top-1 {:.0} %, top-3 {:.0} %; suspects query latency (seen in a test, not a benchmark) median {:.0} ms, max {:.0} ms",
        outcomes.len(),
        started.elapsed().as_secs_f64(),
        top1 * 100.0,
        top3 * 100.0,
        lat[lat.len() / 2],
        lat[lat.len() - 1]
    );
    if only.is_some() {
        return;
    }
    assert!(top1 >= 0.8, "top-1 accuracy {:.0} % < 80 %", top1 * 100.0);
    assert!(top3 >= 0.95, "top-3 accuracy {:.0} % < 95 %", top3 * 100.0);
}
