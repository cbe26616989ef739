//! kube-insight's own alert rules (`manifests/servers/files/alerts.yaml`):
//! `promtool check rules` accepts the file and the rendered PrometheusRule,
//! `promtool test rules` runs the cases of `tests/alerts/alerts.test.yaml`,
//! and every alert links to its runbook paragraph in the README.
//!
//! promtool comes with Debian's `prometheus` package (`.ci/run` installs it);
//! without it the promtool checks print "skipped: promtool not found", except
//! under CI (env `CI` set), where they fail.

// Tests and benches may unwrap: a panic is a failing run with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_norway::Value;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("manifestr sits in the repository")
        .to_path_buf()
}

const ALERTS: &str = "manifests/servers/files/alerts.yaml";

fn promtool() -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("promtool"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "promtool is not installed: `apt-get install prometheus`"
        );
        eprintln!("skipped: promtool not found");
    }
    found
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("run promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed:\n{text}");
    text
}

fn alerts() -> Value {
    serde_norway::from_str(&std::fs::read_to_string(repo().join(ALERTS)).unwrap()).unwrap()
}

fn alert_names() -> Vec<String> {
    alerts()["groups"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_sequence().unwrap().iter())
        .filter_map(|r| r["alert"].as_str().map(str::to_string))
        .collect()
}

/// The servers chart rendered with the PrometheusRule and the ConfigMap.
fn rendered() -> Vec<Value> {
    let out = Command::new(env!("CARGO_BIN_EXE_manifestr"))
        .args(["render"])
        .arg(repo().join("manifests/servers"))
        .args([
            "--set",
            "monitoring.prometheusRule=true",
            "--set",
            "monitoring.serviceMonitor=true",
        ])
        .output()
        .expect("run manifestr");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    serde_norway::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap())
        .filter(|v: &Value| !v.is_null())
        .collect()
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"].as_str() == Some(kind) && d["metadata"]["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("no {kind} {name} rendered"))
}

#[test]
fn the_rules_file_passes_promtool_check() {
    let Some(promtool) = promtool() else { return };
    let out = run(Command::new(promtool)
        .args(["check", "rules"])
        .arg(repo().join(ALERTS)));
    assert!(
        out.contains(&format!("SUCCESS: {} rules found", alert_names().len())),
        "{out}"
    );
}

#[test]
fn the_alerts_fire_on_what_they_name_in_promtool_unit_tests() {
    let Some(promtool) = promtool() else { return };
    let tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/alerts");
    let out =
        run(Command::new(promtool)
            .current_dir(&tests)
            .args(["test", "rules", "alerts.test.yaml"]));
    assert!(out.contains("SUCCESS"), "{out}");
    // Every alert has a case.
    let cases = std::fs::read_to_string(tests.join("alerts.test.yaml")).unwrap();
    for name in alert_names() {
        assert!(
            cases.contains(&format!("alertname: {name}")),
            "{name} has no promtool test case"
        );
    }
}

/// The PrometheusRule and the ConfigMap carry the file unchanged; the
/// PrometheusRule's spec is itself a valid rules file.
#[test]
fn the_chart_ships_the_rules_as_a_file_and_as_a_prometheus_rule() {
    let docs = rendered();
    let text = std::fs::read_to_string(repo().join(ALERTS)).unwrap();
    let cm = find(&docs, "ConfigMap", "kube-insight-monitoring");
    assert_eq!(cm["data"]["alerts.yaml"].as_str(), Some(text.as_str()));
    let scrape: Value =
        serde_norway::from_str(cm["data"]["scrape-config.yaml"].as_str().unwrap()).unwrap();
    assert_eq!(scrape[0]["job_name"].as_str(), Some("kube-insight"));
    let rule = find(&docs, "PrometheusRule", "kube-insight");
    assert_eq!(
        rule["spec"],
        alerts(),
        "the PrometheusRule's spec is the file"
    );
    let monitor = find(&docs, "ServiceMonitor", "kube-insight");
    assert_eq!(
        monitor["spec"]["endpoints"][0]["port"].as_str(),
        Some("ops")
    );
    let svc = find(&docs, "Service", "kube-insight-ops");
    for (k, v) in monitor["spec"]["selector"]["matchLabels"]
        .as_mapping()
        .unwrap()
    {
        assert_eq!(
            &svc["metadata"]["labels"][k.as_str().unwrap()],
            v,
            "the ServiceMonitor selects the ops Service"
        );
    }
    let Some(promtool) = promtool() else { return };
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("prometheusrule-spec.yaml");
    std::fs::write(&path, serde_norway::to_string(&rule["spec"]).unwrap()).unwrap();
    run(Command::new(promtool).args(["check", "rules"]).arg(&path));
}

/// Each alert's runbook_url points at its README paragraph, which exists.
#[test]
fn every_alert_has_a_runbook_in_the_readme() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let names = alert_names();
    assert!(names.len() >= 7, "{names:?}");
    for rule in alerts()["groups"][0]["rules"].as_sequence().unwrap() {
        let name = rule["alert"].as_str().unwrap();
        let url = rule["annotations"]["runbook_url"].as_str().unwrap();
        assert!(
            url.ends_with(&format!("README.md#{}", name.to_lowercase())),
            "{name}: runbook_url {url}"
        );
        let heading = format!("#### {name}\n");
        let at = readme
            .find(&heading)
            .unwrap_or_else(|| panic!("README has no `{}` runbook", heading.trim()));
        let paragraph = readme[at + heading.len()..]
            .split("\n#")
            .next()
            .unwrap_or_default();
        assert!(
            paragraph.trim().len() > 200,
            "{name}: the runbook says what it means and what to do"
        );
    }
}
