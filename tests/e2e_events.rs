//! End to end: the real binary runs the `events` and `api` targets against a
//! mock Kubernetes API server (`support/kube_mock.rs`) that replays a
//! scripted day of changes (times from each object's managedFields, as a real
//! API server records them). `/api/v1/changes` and `/api/v1/objects/…?at=`
//! are checked against the script, including two rollouts of one Deployment
//! within one second, a Node cordon and a ConfigMap change whose data must
//! never appear in an answer; `kube-insight get … --at` reads the same store.
//!
//! Then every read command of the CLI (`get`, `diff`, `changes`, `logs`,
//! `topology`, `suspects`) over the suspects test's incident store: the
//! answer from `--server` equals the answer from `--store`, errors name the
//! server and the fix, and `logs -f` follows (from either source).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/kube_mock.rs"]
mod kube_mock;
mod support;

use kube_mock::{configmap, deployment, KubeMock};
use serde_json::{json, Value};
use std::time::Duration;
use support::*;

fn node(unschedulable: bool, ready: &str, time: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": "node-1", "uid": "u-node-1", "creationTimestamp": "2024-05-01T00:00:00Z",
            "managedFields": [{"manager": "kubectl-cordon", "operation": "Update", "apiVersion": "v1", "time": time, "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:unschedulable": {}}}}]},
        "spec": {"unschedulable": unschedulable},
        "status": {"conditions": [{"type": "Ready", "status": ready, "lastHeartbeatTime": time, "lastTransitionTime": "2024-05-01T00:00:00Z"}],
                   "nodeInfo": {"kubeletVersion": "v1.30.1", "kernelVersion": "6.1.0"}}
    })
}

async fn api_get(base: &str, path: &str) -> (u16, Value) {
    let r = reqwest::get(format!("{base}{path}")).await.unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripted_day_through_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let mock = KubeMock::start().await;
    // 00:00: the state the collector finds (a baseline, not "created").
    mock.apply(
        "deployments",
        deployment(
            "shop",
            "api",
            "u-api",
            "registry/api:1.0",
            3,
            "argocd-controller",
            "2024-05-31T00:00:00Z",
        ),
    );
    mock.apply(
        "configmaps",
        configmap(
            "shop",
            "api-config",
            "u-cm",
            "password: e2e-hunter2-a",
            "2024-05-31T00:00:00Z",
        ),
    );
    mock.apply("nodes", node(false, "True", "2024-05-31T00:00:00Z"));
    let ki = KubeInsight::start(
        dir.path(),
        &mock.collector_env(
            dir.path(),
            "v1/Event,apps/v1/Deployment,v1/ConfigMap,v1/Node",
        ),
        None,
    )
    .await;
    // The baseline is listed before the script plays.
    mock.wait_watched(&["deployments", "configmaps", "nodes", "events"])
        .await;
    // The day.
    mock.apply(
        "deployments",
        deployment(
            "shop",
            "api",
            "u-api",
            "registry/api:1.1",
            3,
            "argocd-controller",
            "2024-05-31T08:00:00Z",
        ),
    );
    mock.apply(
        "deployments",
        deployment(
            "shop",
            "api",
            "u-api",
            "registry/api:1.2",
            3,
            "argocd-controller",
            "2024-05-31T12:00:00Z",
        ),
    );
    mock.apply(
        "deployments",
        deployment(
            "shop",
            "api",
            "u-api",
            "registry/api:1.3",
            3,
            "argocd-controller",
            "2024-05-31T12:00:00Z",
        ),
    );
    mock.apply(
        "configmaps",
        configmap(
            "shop",
            "api-config",
            "u-cm",
            "password: e2e-hunter2-b",
            "2024-05-31T15:00:00Z",
        ),
    );
    mock.apply("nodes", node(true, "True", "2024-05-31T18:00:00Z"));
    let fixture = std::fs::read_to_string(format!(
        "{}/../../../shared/fixtures/k8s-watch-events-stream.jsonl",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    for line in fixture.lines().filter(|l| !l.trim().is_empty()) {
        mock.raw_event("events", &serde_json::from_str(line).unwrap());
    }
    let api = ki.api.clone();
    let rows = eventually("the day's changes", Duration::from_secs(30), move || {
        let api = api.clone();
        async move {
            let (s, v) = api_get(
                &api,
                "/api/v1/changes?from=2024-05-31T00:00:00Z&to=2024-06-01T00:00:00Z&cluster=prod",
            )
            .await;
            let rows = v.as_array().cloned().unwrap_or_default();
            (s == 200 && rows.len() >= 7).then_some(rows)
        }
    })
    .await;
    let brief: Vec<(String, String, String)> = rows
        .iter()
        .map(|r| {
            (
                r["time"].as_str().unwrap().to_string(),
                r["kind"].as_str().unwrap().to_string(),
                r["summary"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let want = [
        ("2024-05-31T18:00:00.000Z", "Node", "unschedulable false → true by kubectl-cordon"),
        ("2024-05-31T16:13:42.000Z", "Pod", "BackOff: Back-off restarting failed container api in pod api-5f6d7c8b9-qwz7p_shop(c3d4e5f6-a7b8-4c9d-8e0f-1a2b3c4d5e6f) (x8)"),
        ("2024-05-31T16:12:41.002Z", "Pod", "FailedScheduling: 0/3 nodes are available: 3 Insufficient memory. preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod. (x4)"),
        ("2024-05-31T15:00:00.000Z", "ConfigMap", "data keys changed: config.yaml by kubectl"),
        ("2024-05-31T12:00:00.000Z", "Deployment", "image registry/api:1.2 → registry/api:1.3 by argocd"),
        ("2024-05-31T12:00:00.000Z", "Deployment", "image registry/api:1.1 → registry/api:1.2 by argocd"),
        ("2024-05-31T08:00:00.000Z", "Deployment", "image registry/api:1.0 → registry/api:1.1 by argocd"),
    ];
    let got: Vec<(&str, &str, &str)> = brief
        .iter()
        .map(|(a, b, c)| (a.as_str(), b.as_str(), c.as_str()))
        .collect();
    assert_eq!(got, want);
    // The object as it was.
    let image = |v: &Value| {
        v["object"]
            .pointer("/spec/template/spec/containers/0/image")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    for (at, want) in [
        ("2024-05-31T07:59:59Z", "registry/api:1.0"),
        ("2024-05-31T08:00:00Z", "registry/api:1.1"),
        ("2024-05-31T11:59:59Z", "registry/api:1.1"),
        ("2024-05-31T12:00:00Z", "registry/api:1.3"),
        ("2024-05-31T23:00:00Z", "registry/api:1.3"),
    ] {
        let (s, v) = api_get(&ki.api, &format!("/api/v1/objects/deploy/shop/api?at={at}")).await;
        assert_eq!(s, 200, "{at}: {v}");
        assert_eq!(image(&v), want, "{at}");
    }
    let (s, _) = api_get(
        &ki.api,
        "/api/v1/objects/deploy/shop/nope?at=2024-05-31T12:00:00Z",
    )
    .await;
    assert_eq!(s, 404);
    let (_, v) = api_get(
        &ki.api,
        "/api/v1/objects/node/node-1?at=2024-05-31T19:00:00Z",
    )
    .await;
    assert_eq!(v["object"]["spec"]["unschedulable"], true);
    let (_, ev) = api_get(
        &ki.api,
        "/api/v1/events?from=2024-05-31T00:00:00Z&to=2024-06-01T00:00:00Z&reason=BackOff",
    )
    .await;
    assert_eq!(ev[0]["count"], 8);
    // No secret in any answer.
    let mut all = String::new();
    for p in [
        "/api/v1/changes?from=2024-05-31T00:00:00Z&to=2024-06-01T00:00:00Z",
        "/api/v1/objects/deploy/shop/api?at=2024-05-31T12:00:00Z",
        "/api/v1/objects/configmap/shop/api-config?at=2024-05-31T16:00:00Z",
    ] {
        all.push_str(&api_get(&ki.api, p).await.1.to_string());
    }
    for secret in [
        "s3cr3t-hunter2",
        "e2e-hunter2",
        "last-applied-configuration",
    ] {
        assert!(!all.contains(secret), "{secret} in an answer");
    }
    // The CLI reads the same store, and the server's API (`--server`)
    // gives the same answer, in both outputs.
    for output in ["yaml", "json"] {
        let args = [
            "get",
            "deploy/api",
            "-n",
            "shop",
            "--at",
            "2024-05-31T10:00:00Z",
            "-o",
            output,
        ];
        let local = cli(dir.path(), &args);
        assert!(local.contains("registry/api:1.1"), "{local}");
        let mut remote_args = args.to_vec();
        remote_args.extend(["--server", ki.api.as_str()]);
        let remote = cli(dir.path(), &remote_args);
        assert_eq!(
            remote, local,
            "get -o {output}: --server differs from --store"
        );
    }
    // A server that is not there: a non-zero exit naming the URL.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kube-insight"))
        .args([
            "get",
            "deploy/api",
            "-n",
            "shop",
            "--server",
            "http://127.0.0.1:9",
        ])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("127.0.0.1:9"),
        "{err}"
    );
    let text = cli(
        dir.path(),
        &[
            "diff",
            "deploy/api",
            "-n",
            "shop",
            "--from",
            "2024-05-31T07:00:00Z",
            "--to",
            "2024-05-31T13:00:00Z",
        ],
    );
    assert!(
        text.contains("image registry/api:1.1 → registry/api:1.2")
            && text.contains("image registry/api:1.2 → registry/api:1.3"),
        "{text}"
    );
    assert!(text.contains("- ") && text.contains("+ "), "{text}");
    drop(ki);
}

const API_TOKEN: &str = "cli-e2e-api-token-0123456789";
const INGEST_TOKEN: &str = "cli-e2e-ingest-token-0123456789";

/// Runs the CLI with the store of `dir` in the environment (as an operator's
/// shell may have it) and retention long enough for the 2024 fixture.
fn run_cli(dir: &std::path::Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kube-insight"))
        .args(args)
        .env_clear()
        .envs(store_env(dir))
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn store_env(dir: &std::path::Path) -> Vec<(&'static str, String)> {
    vec![
        (
            "KUBE_INSIGHT_STORE",
            format!("sqlite://{}/insight.db", dir.display()),
        ),
        ("KUBE_INSIGHT_RETENTION_METRICS", "36500d".into()),
        ("KUBE_INSIGHT_RETENTION_LOGS", "36500d".into()),
        ("KUBE_INSIGHT_RETENTION_EVENTS", "36500d".into()),
        ("KUBE_INSIGHT_RETENTION_TOPOLOGY", "36500d".into()),
    ]
}

/// Fluent Bit `json_lines` records of the frontend pod, at `times_ns`.
fn fluent_bit_lines(lines: &[(i64, &str)]) -> String {
    lines
        .iter()
        .map(|(ns, text)| {
            json!({
                "time": kube_insight_core::log::format_rfc3339_ns(*ns),
                "stream": "stdout", "_p": "F", "log": text,
                "kubernetes": {"pod_name": "frontend-5d8f9c7b6-fe001", "namespace_name": "shop",
                    "container_name": "app",
                    "labels": {"app": "frontend", "pod-template-hash": "5d8f9c7b6"}}
            })
            .to_string()
                + "\n"
        })
        .collect()
}

async fn push_logs(ki: &KubeInsight, lines: &[(i64, &str)]) {
    let r = reqwest::Client::new()
        .post(format!("{}/ingest/fluent-bit", ki.ingest))
        .bearer_auth(INGEST_TOKEN)
        .header("content-type", "application/x-ndjson")
        .body(fluent_bit_lines(lines))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.status());
}

/// Every read command answers the same from `--server` as from `--store`;
/// a server that is not there is named, a bad token is a 401 that says
/// which variable to set, `--server` with `--store` is a usage error, and
/// `logs -f` prints lines written after it started, once each, until it
/// is stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_answers_the_same_from_server_and_store() {
    use kube_insight_suspects::testkit::{incident_store, AT_MS, T0};
    let dir = tempfile::tempdir().unwrap();
    drop(incident_store(dir.path()).await);
    let mut env = store_env(dir.path());
    env.extend([
        ("KUBE_INSIGHT_TARGETS", "api,logs".to_string()),
        ("KUBE_INSIGHT_CLUSTER", "prod".to_string()),
        ("KUBE_INSIGHT_API_TOKEN", API_TOKEN.to_string()),
        ("KUBE_INSIGHT_INGEST_TOKEN", INGEST_TOKEN.to_string()),
    ]);
    let ki = KubeInsight::start(dir.path(), &env, None).await;
    let now_ns = kube_insight_core::time::now_ms() * 1_000_000;
    push_logs(
        &ki,
        &[
            (now_ns - 300_000_000_000, "GET /cart 200"),
            (now_ns - 200_000_000_000, "GET /checkout 500 payment failed"),
            (now_ns - 100_000_000_000, "GET /cart 200"),
        ],
    )
    .await;

    let (t0, at) = (T0.to_string(), AT_MS.to_string());
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["get", "deploy/payment", "-n", "shop", "--at", &at],
            "registry.local/shop/payment",
        ),
        (
            vec![
                "get",
                "deploy/payment",
                "-n",
                "shop",
                "--at",
                &at,
                "-o",
                "json",
            ],
            "\"replicas\"",
        ),
        (vec!["get", "node/node-a", "--at", &at], "MemoryPressure"),
        (
            vec!["diff", "node/node-a", "--from", &t0, "--to", &at],
            "MemoryPressure",
        ),
        (
            vec![
                "diff",
                "deploy/payment",
                "-n",
                "shop",
                "--from",
                &t0,
                "--to",
                &at,
            ],
            "+ ",
        ),
        (
            vec!["changes", "-n", "shop", "--from", &t0, "--to", &at],
            "Deployment/payment",
        ),
        (
            vec![
                "changes", "-n", "shop", "--from", &t0, "--to", &at, "-o", "json",
            ],
            "\"summary\"",
        ),
        (
            vec![
                "changes",
                "deploy/payment",
                "-n",
                "shop",
                "--from",
                &t0,
                "--to",
                &at,
                "--no-events",
            ],
            "payment",
        ),
        (
            vec![
                "logs",
                "deploy/frontend",
                "-n",
                "shop",
                "--since",
                "1h",
                "--timestamps",
                "--prefix",
            ],
            "[pod/frontend-5d8f9c7b6-fe001/app] ",
        ),
        (
            vec![
                "logs",
                "pod/frontend-5d8f9c7b6-fe001",
                "-n",
                "shop",
                "-c",
                "app",
                "--level",
                "unknown",
                "-o",
                "json",
            ],
            "payment failed",
        ),
        (vec!["topology", "--at", &at], "shop/frontend"),
        (
            vec!["topology", "--at", &at, "--format", "json"],
            "\"edges\"",
        ),
        (
            vec!["topology", "--at", &at, "--format", "dot"],
            "digraph topology",
        ),
        (
            vec!["topology", "diff", "--from", &t0, "--to", &at],
            "CHANGE",
        ),
        (
            vec!["suspects", "deploy/frontend", "-n", "shop", "--at", &at],
            "Deployment/shop/payment",
        ),
        (
            vec![
                "suspects",
                "deploy/frontend",
                "-n",
                "shop",
                "--at",
                &at,
                "-o",
                "json",
            ],
            "\"score_parts\"",
        ),
    ];
    for (args, want) in &cases {
        let (code, local, err) = run_cli(dir.path(), args);
        assert_eq!(code, Some(0), "kube-insight {args:?} --store: {err}");
        assert!(local.contains(want), "{args:?}: {want:?} not in\n{local}");
        let mut remote_args = args.clone();
        remote_args.extend(["--server", ki.api.as_str(), "--token", API_TOKEN]);
        let (code, remote, err) = run_cli(dir.path(), &remote_args);
        assert_eq!(code, Some(0), "kube-insight {remote_args:?}: {err}");
        assert_eq!(remote, local, "{args:?}: --server differs from --store");
    }
    // The timeline's columns line up.
    let (_, table, _) = run_cli(
        dir.path(),
        &["changes", "-n", "shop", "--from", &t0, "--to", &at],
    );
    let header = table.lines().next().unwrap();
    let col = header.find("OBJECT").unwrap();
    for l in table.lines().skip(1) {
        let before: String = l.chars().take(header[..col].chars().count()).collect();
        assert!(before.ends_with("  "), "misaligned: {l:?}\n{table}");
    }

    // A server that is not there, a wrong token, both sources at once.
    let (code, _, err) = run_cli(
        dir.path(),
        &[
            "suspects",
            "deploy/frontend",
            "-n",
            "shop",
            "--server",
            "http://127.0.0.1:9",
        ],
    );
    assert!(
        code != Some(0) && err.contains("http://127.0.0.1:9/api/v1/suspects"),
        "{err}"
    );
    let (code, _, err) = run_cli(
        dir.path(),
        &[
            "changes",
            "-n",
            "shop",
            "--server",
            &ki.api,
            "--token",
            "not-the-token-0123456789",
        ],
    );
    assert!(
        code == Some(1)
            && err.contains("401")
            && err.contains("KUBE_INSIGHT_API_TOKEN")
            && err.contains(&ki.api),
        "{err}"
    );
    // A wrong path on the server is an error, not "did not exist".
    let wrong = format!("{}/nope", ki.api);
    let (code, _, err) = run_cli(
        dir.path(),
        &[
            "get",
            "deploy/payment",
            "-n",
            "shop",
            "--server",
            &wrong,
            "--token",
            API_TOKEN,
        ],
    );
    assert!(
        code == Some(1)
            && err.contains("/nope/api/v1/objects/deploy/shop/payment")
            && !err.contains("did not exist"),
        "{err}"
    );
    let (code, _, err) = run_cli(
        dir.path(),
        &[
            "logs",
            "deploy/frontend",
            "--server",
            &ki.api,
            "--store",
            "sqlite:///nowhere/x.db",
        ],
    );
    assert!(
        code == Some(2) && err.contains("--server and --store"),
        "{err}"
    );

    // logs -f, from the server and from the store: the lines so far, then
    // the lines written after it started, each once, until Ctrl-C (SIGINT)
    // stops it with success.
    let server = ["--server", ki.api.as_str(), "--token", API_TOKEN];
    let store = format!("sqlite://{}/insight.db", dir.path().display());
    follow(&ki, dir.path(), &server, "server").await;
    follow(&ki, dir.path(), &["--store", &store], "store").await;
    // A --store flag wins over KUBE_INSIGHT_SERVER from the environment.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kube-insight"))
        .args([
            "changes", "-n", "shop", "--from", &t0, "--to", &at, "--store", &store,
        ])
        .env_clear()
        .envs(store_env(dir.path()))
        .env("KUBE_INSIGHT_SERVER", "http://127.0.0.1:9")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(ki);
}

/// Runs `logs -f` with `source` flags; pushes lines while it runs, checks
/// they are printed once each, oldest first, and that SIGINT stops it.
async fn follow(ki: &KubeInsight, dir: &std::path::Path, source: &[&str], tag: &str) {
    let mut args = vec![
        "logs",
        "deploy/frontend",
        "-n",
        "shop",
        "--since",
        "1h",
        "-f",
        "--interval",
        "200ms",
    ];
    args.extend_from_slice(source);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_kube-insight"))
        .args(&args)
        .env_clear()
        .envs(store_env(dir).into_iter().skip(1))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut printed: Vec<String> = Vec::new();
    let wait_for = |printed: &mut Vec<String>, want: &str| {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while !printed.iter().any(|l| l == want) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(l) => printed.push(l),
                Err(_) => panic!("logs -f ({tag}) did not print {want:?}; printed {printed:?}"),
            }
        }
    };
    wait_for(&mut printed, "GET /checkout 500 payment failed");
    let (l1, l2, l3) = (
        format!("{tag} followed line 1"),
        format!("{tag} followed line 2"),
        format!("{tag} followed line 3"),
    );
    let now_ns = kube_insight_core::time::now_ms() * 1_000_000;
    push_logs(ki, &[(now_ns, &l1), (now_ns + 1, &l2)]).await;
    wait_for(&mut printed, &l2);
    tokio::time::sleep(Duration::from_millis(500)).await;
    push_logs(ki, &[(kube_insight_core::time::now_ms() * 1_000_000, &l3)]).await;
    wait_for(&mut printed, &l3);
    // A few more polls over the same lines print nothing again.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let st = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "logs -f ({tag}) did not stop on SIGINT"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    reader.join().unwrap();
    printed.extend(rx.try_iter());
    assert!(status.success(), "logs -f ({tag}) exit: {status:?}");
    assert_eq!(
        &printed[printed.len() - 3..],
        [l1.as_str(), l2.as_str(), l3.as_str()],
        "logs -f ({tag}): the new lines last, oldest first: {printed:?}"
    );
    let mut counts = std::collections::HashMap::<&str, usize>::new();
    for l in &printed {
        *counts.entry(l.as_str()).or_default() += 1;
    }
    for (line, n) in counts {
        let want = if line == "GET /cart 200" { 2 } else { 1 };
        assert_eq!(
            n, want,
            "logs -f ({tag}): {line:?} printed {n} times: {printed:?}"
        );
    }
    assert!(printed.len() >= 6, "{printed:?}");
}
