//! The `kube-insight` binary's command line: help, config, and start-up
//! errors that name the variable at fault.

// Tests and benches may unwrap: a panic is a failing run with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::Command;

fn ki(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kube-insight"));
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().expect("run kube-insight");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn help_teaches_targets_listeners_and_examples() {
    let (code, out, _) = ki(&["--help"], &[]);
    assert_eq!(code, 0);
    for needle in [
        "metrics",
        "api",
        "remote_write",
        "KUBE_INSIGHT_PROMETHEUS_URL",
        "schema apply",
        "Examples",
    ] {
        assert!(out.contains(needle), "--help lacks {needle:?}:\n{out}");
    }
    let (code, out, _) = ki(&["run", "--help"], &[]);
    assert_eq!(code, 0);
    assert!(
        out.contains("KUBE_INSIGHT_STORE") && out.contains("KUBE_INSIGHT_TARGETS"),
        "{out}"
    );
}

#[test]
fn every_subcommand_help_ends_with_examples() {
    for cmd in [
        &["run"][..],
        &["config"],
        &["schema"],
        &["schema", "apply"],
        &["schema", "check"],
        &["get"],
        &["diff"],
        &["changes"],
        &["logs"],
        &["topology"],
        &["topology", "diff"],
        &["suspects"],
        &["demo"],
    ] {
        let mut args = cmd.to_vec();
        args.push("--help");
        let (code, out, err) = ki(&args, &[]);
        assert_eq!(code, 0, "{args:?}: {err}");
        let examples = out
            .split("\nExamples:\n")
            .nth(1)
            .unwrap_or_else(|| panic!("{args:?} --help has no Examples section:\n{out}"));
        let first = examples.lines().next().unwrap_or("");
        assert!(
            first.trim_start().starts_with("kube-insight ")
                || first.trim_start().starts_with("KUBE_INSIGHT_"),
            "{args:?}: the first example is not a command line: {first:?}"
        );
    }
}

#[test]
fn config_prints_the_effective_configuration_with_secrets_masked() {
    let (code, out, err) = ki(
        &["config", "--cluster", "prod-eu"],
        &[
            ("KUBE_INSIGHT_API_TOKEN", "0123456789abcdef-secret"),
            ("KUBE_INSIGHT_METRICS_INTERVAL", "30s"),
            ("KUBE_INSIGHT_CLUSTER", "ignored-because-the-flag-wins"),
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("KUBE_INSIGHT_CLUSTER=prod-eu\n"), "{out}");
    assert!(out.contains("KUBE_INSIGHT_METRICS_INTERVAL=30s\n"), "{out}");
    assert!(out.contains("KUBE_INSIGHT_API_TOKEN=******\n"), "{out}");
    assert!(!out.contains("secret"), "{out}");
    assert!(
        out.contains("KUBE_INSIGHT_STORE=sqlite://./data/insight.db\n"),
        "{out}"
    );
}

#[test]
fn bad_values_fail_at_start_up_naming_the_variable() {
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[("KUBE_INSIGHT_STORE", "postgres://x")],
            "KUBE_INSIGHT_STORE",
        ),
        (
            &[("KUBE_INSIGHT_METRICS_INTERVAL", "fast")],
            "KUBE_INSIGHT_METRICS_INTERVAL",
        ),
        (
            &[("KUBE_INSIGHT_TARGETS", "metrics,nope")],
            "KUBE_INSIGHT_TARGETS",
        ),
        (
            &[("KUBE_INSIGHT_EVENTS_KINDS", "v1/Secret")],
            "KUBE_INSIGHT_EVENTS_KINDS",
        ),
        (
            &[("KUBE_INSIGHT_KUBECONFIG", "/nonexistent/kubeconfig")],
            "KUBE_INSIGHT_KUBECONFIG",
        ),
        (
            &[("KUBE_INSIGHT_API_LISTEN", "localhost")],
            "KUBE_INSIGHT_API_LISTEN",
        ),
        (
            &[("KUBE_INSIGHT_INGEST_LISTEN", "0.0.0.0:0")],
            "KUBE_INSIGHT_INSECURE_NO_AUTH",
        ),
        (
            &[("KUBE_INSIGHT_PROMETHEUS_URL", "not a url")],
            "KUBE_INSIGHT_PROMETHEUS_URL",
        ),
        (
            &[
                ("KUBE_INSIGHT_API_TOKENS_FILE", "/nonexistent/api-tokens"),
                ("KUBE_INSIGHT_API_TOKEN", "0123456789abcdef0123"),
            ],
            "KUBE_INSIGHT_API_TOKENS_FILE and KUBE_INSIGHT_API_TOKEN are both set",
        ),
        (
            &[("KUBE_INSIGHT_API_TOKENS_FILE", "/nonexistent/api-tokens")],
            "invalid KUBE_INSIGHT_API_TOKENS_FILE",
        ),
    ];
    for (env, needle) in cases {
        let (code, _, err) = ki(&["run"], env);
        assert_ne!(code, 0, "{env:?} should fail");
        assert!(
            err.contains(needle),
            "{env:?}: error does not name {needle}: {err}"
        );
    }
}

#[test]
fn schema_apply_creates_the_embedded_store_idempotently() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/x.db", dir.path().display());
    for _ in 0..2 {
        let (code, out, err) = ki(&["schema", "apply", "--store", &url], &[]);
        assert_eq!(code, 0, "{err}");
        assert!(out.contains("schema at version"), "{out}");
    }
    let (code, out, err) = ki(&["schema", "check", "--store", &url], &[]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("ok"), "{out}");
}

#[test]
fn version_names_the_release_and_the_git_commit() {
    let (code, out, err) = ki(&["--version"], &[]);
    assert_eq!(code, 0, "{err}");
    let version = env!("CARGO_PKG_VERSION");
    let commit = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let want = match commit {
        Some(c) => c,
        // A source tree without git (an image build): the Containerfile's REVISION.
        None => std::env::var("KUBE_INSIGHT_GIT_COMMIT").unwrap_or_else(|_| "unknown".into()),
    };
    assert_eq!(
        out.trim(),
        format!("kube-insight {version} (commit {want})")
    );
}

/// Push mode (`KUBE_INSIGHT_EVENTS_PUSH_URL`): documented in `run --help`,
/// its token masked by `config`, and refused with any target but `events`.
#[test]
fn push_mode_is_documented_masked_and_checked() {
    let (code, out, _) = ki(&["run", "--help"], &[]);
    assert_eq!(code, 0);
    for needle in [
        "KUBE_INSIGHT_EVENTS_PUSH_URL",
        "KUBE_INSIGHT_PUSH_TOKEN",
        "KUBE_INSIGHT_EVENTS_SPOOL_BYTES",
    ] {
        assert!(out.contains(needle), "run --help lacks {needle}:\n{out}");
    }
    let token = "push-token-0123456789abcdef";
    let push = [
        (
            "KUBE_INSIGHT_EVENTS_PUSH_URL",
            "https://insight.example:8081",
        ),
        ("KUBE_INSIGHT_PUSH_TOKEN", token),
    ];
    let (code, out, err) = ki(&["config"], &push);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("KUBE_INSIGHT_EVENTS_PUSH_URL=https://insight.example:8081"),
        "{out}"
    );
    assert!(out.contains("KUBE_INSIGHT_PUSH_TOKEN=******"), "{out}");
    assert!(!out.contains(token) && !err.contains(token), "{out}{err}");
    let (code, _, err) = ki(&["run"], &push);
    assert_ne!(code, 0);
    assert!(err.contains("KUBE_INSIGHT_TARGETS=events"), "{err}");
    let (code, _, err) = ki(
        &["run"],
        &[(
            "KUBE_INSIGHT_EVENTS_PUSH_URL",
            "https://insight.example:8081",
        )],
    );
    assert_ne!(code, 0);
    assert!(err.contains("KUBE_INSIGHT_PUSH_TOKEN_FILE"), "{err}");
}
