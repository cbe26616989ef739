//! End to end, push mode: two real processes. The insight runs `events,api`
//! with an ingest tokens file; the agent runs `kube-insight run --targets
//! events` with `KUBE_INSIGHT_EVENTS_PUSH_URL` against a mock Kubernetes
//! API server (`support/kube_mock.rs`), with no store. The insight is
//! stopped for a while (the agent spools), changes happen, the insight comes
//! back on the same ports: `/api/v1/changes` shows each change once, and
//! nothing the agent found at its first list is "created". Then the same
//! over HTTPS, the insight's certificate signed by a private CA that the
//! agent trusts through `KUBE_INSIGHT_EVENTS_PUSH_CA_FILE`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/kube_mock.rs"]
mod kube_mock;
mod support;

use kube_mock::{deployment, KubeMock};
use serde_json::Value;
use std::time::Duration;
use support::*;

fn t(hm: &str) -> String {
    format!("2024-05-31T{hm}:00.000Z")
}

const TOKEN: &str = "push-token-of-prod-0123456789";

async fn changes(api: &str) -> Vec<(String, String)> {
    let r = reqwest::get(format!(
        "{api}/api/v1/changes?from=2024-05-31T00:00:00Z&to=2024-06-01T00:00:00Z&cluster=prod&include_status=true"
    ))
    .await;
    let Ok(r) = r else { return Vec::new() };
    let v: Value = r.json().await.unwrap_or(Value::Null);
    let rows = v.as_array().cloned().unwrap_or_default();
    let mut out: Vec<(String, String)> = rows
        .iter()
        .map(|r| {
            (
                r.get("time")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                r.get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_pushes_through_an_insight_restart() {
    let insight_dir = tempfile::tempdir().unwrap();
    let agent_dir = tempfile::tempdir().unwrap();
    let mock = KubeMock::start().await;
    let dep = |name: &str, image: &str, time: &str| {
        deployment("shop", name, &format!("u-{name}"), image, 2, "helm", time)
    };
    mock.apply("deployments", dep("api", "api:1", "2024-05-31T10:00:00Z"));

    let tokens = insight_dir.path().join("tokens");
    std::fs::write(&tokens, format!("{TOKEN} prod\n")).unwrap();
    let insight_env = vec![
        ("KUBE_INSIGHT_TARGETS", "events,api".to_string()),
        ("KUBE_INSIGHT_RETENTION_EVENTS", "36500d".to_string()),
        (
            "KUBE_INSIGHT_INGEST_TOKENS_FILE",
            tokens.display().to_string(),
        ),
    ];
    let mut insight = KubeInsight::start(insight_dir.path(), &insight_env, None).await;

    let token_file = agent_dir.path().join("push-token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let agent_env = vec![
        ("KUBE_INSIGHT_TARGETS", "events".to_string()),
        ("KUBE_INSIGHT_CLUSTER", "prod".to_string()),
        (
            "KUBE_INSIGHT_KUBECONFIG",
            mock.kubeconfig(agent_dir.path()).display().to_string(),
        ),
        (
            "KUBE_INSIGHT_EVENTS_KINDS",
            "apps/v1/Deployment".to_string(),
        ),
        ("KUBE_INSIGHT_EVENTS_PUSH_URL", insight.ingest.clone()),
        (
            "KUBE_INSIGHT_PUSH_TOKEN_FILE",
            token_file.display().to_string(),
        ),
        (
            "KUBE_INSIGHT_EVENTS_SPOOL_DIR",
            agent_dir.path().join("spool").display().to_string(),
        ),
        // Push mode opens no store: this one must never appear.
        (
            "KUBE_INSIGHT_STORE",
            format!("sqlite://{}/never/insight.db", agent_dir.path().display()),
        ),
    ];
    let mut agent = KubeInsight::start(agent_dir.path(), &agent_env, None).await;
    mock.wait_watched(&["deployments"]).await;
    mock.apply("deployments", dep("api", "api:2", "2024-05-31T11:00:00Z"));
    let api = insight.api.clone();
    eventually("the first rollout", Duration::from_secs(30), || {
        let api = api.clone();
        async move {
            let c = changes(&api).await;
            eprintln!("changes: {c:?}");
            (c == [(t("11:00"), "api".to_string())]).then_some(())
        }
    })
    .await;

    // The insight goes away; the agent keeps watching and spools.
    let ports = insight.ports;
    insight.proc.stop();
    mock.apply("deployments", dep("api", "api:3", "2024-05-31T12:00:00Z"));
    mock.apply("deployments", dep("web", "web:1", "2024-05-31T12:30:00Z"));
    tokio::time::sleep(Duration::from_secs(2)).await;
    let insight = KubeInsight::start(insight_dir.path(), &insight_env, Some(ports)).await;
    let api = insight.api.clone();
    let want = vec![
        (t("11:00"), "api".to_string()),
        (t("12:00"), "api".to_string()),
        (t("12:30"), "web".to_string()),
    ];
    let w = want.clone();
    eventually(
        "the changes made during the outage",
        Duration::from_secs(60),
        || {
            let (api, w) = (api.clone(), w.clone());
            async move {
                let c = changes(&api).await;
                eprintln!("changes: {c:?}");
                (c == w).then_some(())
            }
        },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(changes(&insight.api).await, want);
    assert!(
        !agent_dir.path().join("never").exists(),
        "push mode opened a store"
    );
    let log = agent.proc.log_text();
    assert!(log.contains("push mode"), "{log}");
    agent.proc.stop();
}

/// A CA and a certificate for 127.0.0.1 signed by it, made with `openssl`.
fn private_ca(
    dir: &std::path::Path,
) -> Option<(std::path::PathBuf, std::path::PathBuf, std::path::PathBuf)> {
    let openssl = tool("openssl", "apt-get install openssl")?;
    let run = |args: &[&str]| {
        let out = std::process::Command::new(&openssl)
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    std::fs::write(
        dir.join("leaf.ext"),
        "basicConstraints=CA:FALSE\nsubjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=kube-insight test CA",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "tls.key",
        "-out",
        "tls.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        "tls.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "tls.crt",
        "-days",
        "2",
        "-extfile",
        "leaf.ext",
    ]);
    Some((dir.join("ca.pem"), dir.join("tls.crt"), dir.join("tls.key")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_pushes_over_https_to_a_private_ca() {
    let insight_dir = tempfile::tempdir().unwrap();
    let agent_dir = tempfile::tempdir().unwrap();
    let Some((ca, cert, key)) = private_ca(insight_dir.path()) else {
        return;
    };
    let mock = KubeMock::start().await;
    mock.apply(
        "deployments",
        deployment(
            "shop",
            "api",
            "u-api",
            "api:1",
            2,
            "helm",
            "2024-05-31T10:00:00Z",
        ),
    );
    let tokens = insight_dir.path().join("tokens");
    std::fs::write(&tokens, format!("{TOKEN} prod\n")).unwrap();
    let insight = KubeInsight::start(
        insight_dir.path(),
        &[
            ("KUBE_INSIGHT_TARGETS", "events,api".to_string()),
            ("KUBE_INSIGHT_RETENTION_EVENTS", "36500d".to_string()),
            (
                "KUBE_INSIGHT_INGEST_TOKENS_FILE",
                tokens.display().to_string(),
            ),
            ("KUBE_INSIGHT_TLS_CERT_FILE", cert.display().to_string()),
            ("KUBE_INSIGHT_TLS_KEY_FILE", key.display().to_string()),
        ],
        None,
    )
    .await;
    let https_ingest = insight.ingest.replace("http://", "https://");
    let https_api = insight.api.replace("http://", "https://");
    let mut agent = KubeInsight::start(
        agent_dir.path(),
        &[
            ("KUBE_INSIGHT_TARGETS", "events".to_string()),
            ("KUBE_INSIGHT_CLUSTER", "prod".to_string()),
            (
                "KUBE_INSIGHT_KUBECONFIG",
                mock.kubeconfig(agent_dir.path()).display().to_string(),
            ),
            (
                "KUBE_INSIGHT_EVENTS_KINDS",
                "apps/v1/Deployment".to_string(),
            ),
            ("KUBE_INSIGHT_EVENTS_PUSH_URL", https_ingest),
            ("KUBE_INSIGHT_PUSH_TOKEN", TOKEN.to_string()),
            ("KUBE_INSIGHT_EVENTS_PUSH_CA_FILE", ca.display().to_string()),
            (
                "KUBE_INSIGHT_EVENTS_SPOOL_DIR",
                agent_dir.path().join("spool").display().to_string(),
            ),
        ],
        None,
    )
    .await;
    mock.wait_watched(&["deployments"]).await;
    mock.apply(
        "deployments",
        deployment(
            "shop",
            "api",
            "u-api",
            "api:2",
            2,
            "helm",
            "2024-05-31T11:00:00Z",
        ),
    );
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(&ca).unwrap()).unwrap())
        .build()
        .unwrap();
    let url = format!(
        "{https_api}/api/v1/changes?from=2024-05-31T00:00:00Z&to=2024-06-01T00:00:00Z&cluster=prod"
    );
    eventually("the rollout over https", Duration::from_secs(30), || {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let v: Value = client.get(&url).send().await.ok()?.json().await.ok()?;
            let rows = v.as_array()?;
            (rows.len() == 1 && rows[0]["name"] == "api").then_some(())
        }
    })
    .await;
    agent.proc.stop();
}
