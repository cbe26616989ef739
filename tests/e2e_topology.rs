//! End to end, topology with time travel: a served sequence of payloads
//! (tests/support/topology_mock.rs) pushed by Prometheus remote write into
//! `kube-insight run --targets metrics,topology,api`, changing over three
//! phases. Checked: `topology?at=` at three moments against the expected
//! graphs, focus, diff and overlay, the dependency-change records, the
//! Node Graph frames, and the CLI (`topology --format dot` rendered by
//! Graphviz to a PNG, `topology diff`).
//!
//! No step relies on how fast the machine is: a background task pushes the
//! current phase every 500 ms whatever the checks are doing, and every
//! moment the checks use is chosen from what the server reports (the time
//! of a save it has committed), then verified, with generous deadlines. A
//! loaded CI machine makes the test slower, not flaky.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test: a panic is a failure

mod support;
#[path = "support/topology_mock.rs"]
mod topology_mock;

use kube_insight_sources::prometheus::remote_write::encode;
use serde_json::Value;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::*;
use topology_mock::{expected_edges, Phase, Shop};

/// The derivation window the server is started with: pushes every 500 ms
/// leave ~20 samples in it, so a stall of the test process of several
/// seconds still leaves counters with rates.
const WINDOW_MS: i64 = 10_000;
/// How long any one condition may take to come true (a loaded machine).
const DEADLINE: Duration = Duration::from_secs(240);
const MINUTE_MS: i64 = 60_000;

fn now_ms() -> i64 {
    kube_insight_core::time::now_ms()
}

async fn get(client: &reqwest::Client, ki: &KubeInsight, path: &str) -> Value {
    let r = client
        .get(format!("{}{path}", ki.api))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    assert!(status.is_success(), "GET {path}: {status}: {body}");
    body
}

fn ids(v: &Value) -> Vec<String> {
    let mut out: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    out.sort();
    out
}

/// Pushes the shop's current phase every 500 ms until dropped (remote
/// write, timestamps "now"), independently of the checks.
struct Pusher {
    phase: Arc<Mutex<Phase>>,
    /// The last push that failed, for the timeout messages (a push that
    /// fails is retried by the next tick; the counters keep their rates).
    last_error: Arc<Mutex<Option<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Pusher {
    fn start(client: reqwest::Client, ingest: String, phase: Phase) -> Pusher {
        let phase = Arc::new(Mutex::new(phase));
        let last_error = Arc::new(Mutex::new(None));
        let (p, err) = (phase.clone(), last_error.clone());
        let task = tokio::spawn(async move {
            let mut shop = Shop::default();
            let mut tick = tokio::time::interval(Duration::from_millis(500));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let current = *p.lock().unwrap();
                let body = encode(&shop.push(current, now_ms()), &[]).unwrap();
                let sent = client
                    .post(format!("{ingest}/ingest/prometheus/api/v1/write"))
                    .header("content-encoding", "snappy")
                    .body(body)
                    .send()
                    .await;
                let failure = match sent {
                    Ok(r) if r.status() == 204 => None,
                    Ok(r) => Some(format!(
                        "{}: {}",
                        r.status(),
                        r.text().await.unwrap_or_default()
                    )),
                    Err(e) => Some(e.to_string()),
                };
                if failure.is_some() {
                    *err.lock().unwrap() = failure;
                }
            }
        });
        Pusher {
            phase,
            last_error,
            task,
        }
    }

    fn set(&self, phase: Phase) {
        *self.phase.lock().unwrap() = phase;
    }

    fn last_error(&self) -> String {
        self.last_error
            .lock()
            .unwrap()
            .clone()
            .unwrap_or_else(|| "none".into())
    }
}

impl Drop for Pusher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The graph at `at`, and the time of the server's last committed save.
async fn graph_at(client: &reqwest::Client, ki: &KubeInsight, at: i64) -> (Value, Option<i64>) {
    let v = get(client, ki, &format!("/api/v1/topology?at={at}&cluster=e2e")).await;
    let last = v["last"]
        .as_str()
        .map(|s| kube_insight_core::parse_time_ms(s).unwrap());
    (v, last)
}

/// Whether the stats at `t` came from a full window of `phase`: every
/// edge of the phase has its traffic, the service-graph edge its requests.
fn stats_complete(edges: &Value) -> bool {
    edges.as_array().unwrap().iter().all(|e| {
        e["detail__bytes_per_s"].is_number()
            && (e["id"] != "shop/frontend->shop/cartservice"
                || e["detail__requests_per_s"].is_number())
    })
}

/// Waits until the live topology shows `phase`, then returns a moment of
/// the phase whose graph *and* stats are the phase's: the time of a save
/// the server has committed, in a minute whose first save (stats are kept
/// at one-minute resolution, from the first save of each minute) derived
/// its window entirely from this phase's pushes. Verified before it is
/// returned; a moment that fails (the machine stalled long enough to
/// starve a window) is replaced by one of the next minute.
async fn settle(client: &reqwest::Client, ki: &KubeInsight, pusher: &Pusher, phase: Phase) -> i64 {
    let want = expected_edges(phase);
    let started = Instant::now();
    let timeout = |what: &str, last: &Value| -> ! {
        panic!(
            "phase {phase:?}: {what} within {DEADLINE:?}; last push error: {}; last answer {last}",
            pusher.last_error()
        )
    };
    // 1. The structure of the phase is live.
    let shown_at = loop {
        let (v, _) = graph_at(client, ki, now_ms()).await;
        if ids(&v["edges"]) == want {
            break now_ms();
        }
        if started.elapsed() > DEADLINE {
            timeout("the topology never showed its edges", &v);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    // 2. A minute whose first save looks only at this phase's samples.
    let mut minute = (shown_at + WINDOW_MS + 1_000).div_euclid(MINUTE_MS) * MINUTE_MS + MINUTE_MS;
    loop {
        // 3. The server has committed a save in that minute (or later):
        //    `last` is such a save, so the minute's first save is done too.
        let (v, last) = graph_at(client, ki, now_ms()).await;
        let Some(t) = last.filter(|l| *l >= minute) else {
            if started.elapsed() > DEADLINE {
                timeout(
                    "no save was committed in the minute after the phase settled",
                    &v,
                );
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        };
        // 4. Verified: the graph and the stats at that moment.
        let (g, _) = graph_at(client, ki, t).await;
        let edges = get(
            client,
            ki,
            &format!("/api/v1/topology/edges?at={t}&cluster=e2e"),
        )
        .await;
        if ids(&g["edges"]) == want && stats_complete(&edges) {
            return t;
        }
        if started.elapsed() > DEADLINE {
            timeout(
                &format!("no moment with the phase's graph and stats (tried {t})"),
                &edges,
            );
        }
        minute = t.div_euclid(MINUTE_MS) * MINUTE_MS + MINUTE_MS;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topology_time_travel_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("KUBE_INSIGHT_TARGETS", "metrics,topology,api".to_string()),
        ("KUBE_INSIGHT_CLUSTER", "e2e".to_string()),
        ("KUBE_INSIGHT_TOPOLOGY_INTERVAL", "1s".to_string()),
        (
            "KUBE_INSIGHT_TOPOLOGY_WINDOW",
            format!("{}s", WINDOW_MS / 1000),
        ),
    ];
    // Before the server starts: no snapshot can be older.
    let start = now_ms();
    let ki = KubeInsight::start(dir.path(), &env, None).await;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let pusher = Pusher::start(client.clone(), ki.ingest.clone(), Phase::A);
    let t1 = settle(&client, &ki, &pusher, Phase::A).await;
    pusher.set(Phase::B);
    let t2 = settle(&client, &ki, &pusher, Phase::B).await;
    pusher.set(Phase::C);
    let t3 = settle(&client, &ki, &pusher, Phase::C).await;

    // Time travel: each moment's graph, as it was.
    for (t, phase) in [(t1, Phase::A), (t2, Phase::B), (t3, Phase::C)] {
        let v = get(
            &client,
            &ki,
            &format!("/api/v1/topology?at={t}&cluster=e2e"),
        )
        .await;
        assert_eq!(ids(&v["edges"]), expected_edges(phase), "at {phase:?}: {v}");
        assert_eq!(v["group"], "workload");
        let edges = get(&client, &ki, &format!("/api/v1/topology/edges?at={t}")).await;
        assert_eq!(ids(&edges), expected_edges(phase));
        assert!(edges
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["source"].is_string()
                && e["target"].is_string()
                && e["mainstat"].is_string()));
    }
    assert!(
        get(
            &client,
            &ki,
            &format!("/api/v1/topology?at={}", start - 60_000)
        )
        .await["nodes"]
            .as_array()
            .unwrap()
            .is_empty(),
        "before the first snapshot"
    );

    // Stats of the moment (t3's minute began well inside phase C):
    // frontend→cartservice 20 req/s, 30 % failing, bytes of both directions.
    let edges = get(&client, &ki, &format!("/api/v1/topology/edges?at={t3}")).await;
    let fc = edges
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == "shop/frontend->shop/cartservice")
        .unwrap()
        .clone();
    let rps = fc["detail__requests_per_s"].as_f64().unwrap();
    assert!((rps - 20.0).abs() < 3.0, "{fc}");
    assert!(
        (fc["detail__error_ratio"].as_f64().unwrap() - 0.3).abs() < 0.03,
        "{fc}"
    );
    let bytes = fc["detail__bytes_per_s"].as_f64().unwrap();
    assert!(
        (bytes - 15_000.0).abs() < 2_500.0,
        "both directions summed: {fc}"
    );
    let nodes = get(&client, &ki, &format!("/api/v1/topology/nodes?at={t3}")).await;
    let cart = nodes
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == "shop/cartservice")
        .unwrap()
        .clone();
    assert!(
        (cart["arc__err"].as_f64().unwrap() - 0.3).abs() < 0.05,
        "{cart}"
    );
    assert!(
        (cart["mainstat"].as_f64().unwrap() - 0.5).abs() < 0.1,
        "CPU cores: {cart}"
    );
    assert_eq!(cart["subtitle"], "Deployment · shop");
    assert!(nodes
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n["id"] == "outside" && n["title"] == "Outside the cluster"));

    // Focus.
    let f = get(
        &client,
        &ki,
        &format!("/api/v1/topology/nodes?at={t3}&focus=cartservice&depth=1"),
    )
    .await;
    assert_eq!(
        ids(&f),
        ["shop/cartservice", "shop/frontend", "shop/redis-cart"]
    );
    let f = get(
        &client,
        &ki,
        &format!("/api/v1/topology/nodes?at={t3}&focus=shop/cartservice&depth=2"),
    )
    .await;
    assert_eq!(
        ids(&f),
        [
            "kube-system/coredns",
            "shop/cartservice",
            "shop/frontend",
            "shop/redis-cart"
        ]
    );

    // Diff and overlay.
    let d = get(
        &client,
        &ki,
        &format!("/api/v1/topology/diff?from={t1}&to={t2}"),
    )
    .await;
    let mut rows: Vec<(String, String, String)> = d
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["change"].as_str().unwrap().into(),
                r["type"].as_str().unwrap().into(),
                r["id"].as_str().unwrap().into(),
            )
        })
        .collect();
    rows.sort();
    let want: Vec<(String, String, String)> = [
        ("added", "edge", "outside--shop/checkout"),
        ("added", "node", "outside"),
        ("added", "node", "shop/checkout"),
        ("removed", "edge", "shop/cartservice--shop/redis-cart"),
        ("removed", "node", "shop/redis-cart"),
    ]
    .iter()
    .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
    .collect();
    assert_eq!(rows, want, "{d}");
    let o = get(
        &client,
        &ki,
        &format!("/api/v1/topology/diff?from={t2}&to={t3}&overlay=true"),
    )
    .await;
    let color = |frame: &str, id: &str| {
        o[frame]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["id"] == id)
            .unwrap()["color"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(color("nodes", "shop/redis-cart"), "#2ca02c", "added");
    assert_eq!(
        color("edges", "shop/cartservice--shop/redis-cart"),
        "#2ca02c"
    );
    assert_eq!(
        color("edges", "shop/frontend->shop/cartservice"),
        "#ff7f0e",
        "error ratio 1 % → 30 %: changed"
    );
    assert_eq!(color("nodes", "shop/frontend"), "#999999", "unchanged");
    let o = get(
        &client,
        &ki,
        &format!("/api/v1/topology/diff?from={t1}&to={t2}&overlay=true&frame=edges"),
    )
    .await;
    let removed = o
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == "shop/cartservice--shop/redis-cart")
        .unwrap();
    assert_eq!(
        removed["color"], "#d62728",
        "the union keeps what disappeared"
    );

    // Dependency changes for the /changes timeline.
    let c = get(
        &client,
        &ki,
        &format!("/api/v1/topology/changes?from={start}&to={}", now_ms()),
    )
    .await;
    let recs: Vec<(String, String)> = c
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["kind"].as_str().unwrap().into(),
                r["object"].as_str().unwrap().into(),
            )
        })
        .collect();
    let pos = |k: &str, o: &str| recs.iter().position(|r| r.0 == k && r.1 == o);
    let lost = pos("dependency lost", "shop/cartservice--shop/redis-cart")
        .unwrap_or_else(|| panic!("{recs:?}"));
    let back = recs
        .iter()
        .rposition(|r| r.0 == "dependency appeared" && r.1 == "shop/cartservice--shop/redis-cart")
        .unwrap_or_else(|| panic!("{recs:?}"));
    assert!(lost < back, "{recs:?}");
    assert!(
        pos("dependency appeared", "outside--shop/checkout").is_some(),
        "{recs:?}"
    );

    // The CLI reads the same store: DOT rendered by Graphviz, and a diff.
    let store = format!("sqlite://{}/insight.db", dir.path().display());
    let cli = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_kube-insight"))
            .args(args)
            .env_clear()
            .env("KUBE_INSIGHT_STORE", &store)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "kube-insight {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let dot = cli(&["topology", "--at", &t3.to_string(), "--format", "dot"]);
    assert!(
        dot.contains("\"shop/frontend\" -> \"shop/cartservice\""),
        "{dot}"
    );
    let table = cli(&[
        "topology",
        "--at",
        &t2.to_string(),
        "--focus",
        "frontend",
        "--depth",
        "1",
    ]);
    assert!(
        table.contains("shop/cartservice") && !table.contains("redis-cart"),
        "{table}"
    );
    let diff = cli(&[
        "topology",
        "diff",
        "--from",
        &t1.to_string(),
        "--to",
        &t2.to_string(),
    ]);
    assert!(
        diff.contains("outside--shop/checkout") && diff.contains("removed"),
        "{diff}"
    );
    if let Some(dot_bin) = tool("dot", "apt-get install graphviz") {
        let dot_file = dir.path().join("topology.dot");
        let png = dir.path().join("topology.png");
        std::fs::write(&dot_file, &dot).unwrap();
        let st = Command::new(dot_bin)
            .arg("-Tpng")
            .arg(&dot_file)
            .arg("-o")
            .arg(&png)
            .status()
            .unwrap();
        assert!(st.success(), "dot -Tpng failed");
        let bytes = std::fs::read(&png).unwrap();
        assert!(
            bytes.len() > 1000 && bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
            "not a PNG"
        );
    }
    drop(pusher);
    drop(ki);
}
