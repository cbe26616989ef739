//! The kube-insight manifests, checked end to end with the real binary:
//! every chart is rendered with its defaults and with every example values
//! file, compared with the golden files in `manifests/rendered/`, validated
//! with `kubernetes-validate --strict` and `yamllint`, the custom resources
//! against the vendored CRD schemas, and the workloads and RBAC against the
//! project's rules.
//!
//! Regenerate the golden files after a template change:
//!   UPDATE_GOLDEN=1 cargo test -p manifestr --test manifests
//! kubernetes-validate and yamllint come from PyPI; without them the checks
//! print "skipped", except under CI (env `CI` set), where they fail.

// Tests and benches may unwrap: a panic is a failing run with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_norway::Value;

/// The Kubernetes version the manifests are validated against.
const KUBERNETES_VERSION: &str = "1.35.0";

const CHARTS: [&str; 2] = ["agents", "servers"];

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("manifestr sits in the repository")
        .to_path_buf()
}

/// One rendering: a chart with its defaults or with one example values file.
struct Case {
    chart: &'static str,
    /// `default`, or the example's file stem.
    name: String,
    values: Option<PathBuf>,
}

fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    for chart in CHARTS {
        cases.push(Case {
            chart,
            name: "default".into(),
            values: None,
        });
        let examples = repo().join("manifests").join(chart).join("examples");
        let mut files: Vec<PathBuf> = std::fs::read_dir(&examples)
            .expect("examples folder")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            .collect();
        files.sort();
        for path in files {
            let name = path
                .file_stem()
                .expect("stem")
                .to_string_lossy()
                .into_owned();
            cases.push(Case {
                chart,
                name,
                values: Some(path),
            });
        }
    }
    cases
}

fn render(case: &Case) -> String {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_manifestr"));
    cmd.current_dir(repo())
        .args(["render", &format!("manifests/{}", case.chart)]);
    if let Some(values) = &case.values {
        cmd.arg("-f").arg(values);
    }
    let out = cmd.output().expect("run manifestr");
    assert!(
        out.status.success(),
        "rendering {} with {} failed:\n{}",
        case.chart,
        case.name,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

fn golden_path(case: &Case) -> PathBuf {
    repo()
        .join("manifests/rendered")
        .join(case.chart)
        .join(format!("{}.yaml", case.name))
}

fn documents(text: &str) -> Vec<Value> {
    serde_norway::Deserializer::from_str(text)
        .map(|d| serde::Deserialize::deserialize(d).expect("rendered YAML parses"))
        .filter(|v: &Value| !v.is_null())
        .collect()
}

/// A tool from PyPI on PATH; `None` (with a note) when it is missing
/// outside CI, a failure under CI.
fn tool(name: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{name} is not installed: `pip install kubernetes-validate yamllint` and put it on PATH"
        );
        eprintln!("skipped: {name} not installed");
    }
    found
}

/// Every case rendered into a temporary folder, one file per case.
fn rendered_files() -> (tempfile::TempDir, Vec<PathBuf>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let files = cases()
        .iter()
        .map(|case| {
            let path = dir
                .path()
                .join(format!("{}-{}.yaml", case.chart, case.name));
            std::fs::write(&path, render(case)).expect("write rendering");
            path
        })
        .collect();
    (dir, files)
}

#[test]
fn golden_files_match() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let mut stale = Vec::new();
    let mut expected = Vec::new();
    for case in cases() {
        let text = render(&case);
        let path = golden_path(&case);
        expected.push(path.clone());
        if update {
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(&path, &text).expect("write golden file");
        } else if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
            stale.push(path.display().to_string());
        }
    }
    // A golden file without a case is left over from a removed example.
    for chart in CHARTS {
        let dir = repo().join("manifests/rendered").join(chart);
        for entry in std::fs::read_dir(&dir).into_iter().flatten() {
            let path = entry.expect("entry").path();
            if !expected.contains(&path) {
                if update {
                    std::fs::remove_file(&path).expect("remove stale golden file");
                } else {
                    stale.push(format!("{} (no such example)", path.display()));
                }
            }
        }
    }
    assert!(
        stale.is_empty(),
        "rendered manifests differ from the golden files:\n  {}\nreview the change, then run \
         `UPDATE_GOLDEN=1 cargo test -p manifestr --test manifests`",
        stale.join("\n  ")
    );
}

#[test]
fn kubernetes_validate_strict_accepts_every_rendering() {
    let Some(kv) = tool("kubernetes-validate") else {
        return;
    };
    let (_dir, files) = rendered_files();
    let out = Command::new(kv)
        .args([
            "--strict",
            "--quiet",
            "--kubernetes-version",
            KUBERNETES_VERSION,
        ])
        .args(&files)
        .output()
        .expect("run kubernetes-validate");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "kubernetes-validate --strict failed:\n{report}"
    );
    // Only the custom resources may lack a schema: the Cassandra operators'
    // are checked below, the Prometheus Operator's PrometheusRule by
    // manifestr/tests/alerts.rs (promtool).
    for line in report
        .lines()
        .filter(|l| l.contains("Couldn't find schema"))
    {
        assert!(
            [
                "K8ssandraCluster",
                "CassandraDatacenter",
                "ServiceMonitor",
                "PrometheusRule"
            ]
            .iter()
            .any(|kind| line.contains(kind)),
            "unexpected kind without a schema: {line}"
        );
    }
}

#[test]
fn yamllint_accepts_every_rendering() {
    let Some(yamllint) = tool("yamllint") else {
        return;
    };
    let (_dir, files) = rendered_files();
    let out = Command::new(yamllint)
        .arg("--strict")
        .arg("-c")
        .arg(repo().join("manifests/.yamllint.yaml"))
        .args(&files)
        .output()
        .expect("run yamllint");
    assert!(
        out.status.success(),
        "yamllint failed:\n{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn custom_resources_match_the_vendored_crd_schemas() {
    let schema = |file: &str| {
        let path = repo().join("manifests/servers/crds").join(file);
        let json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("schema file"))
                .expect("schema is JSON");
        jsonschema::validator_for(&json).expect("schema compiles")
    };
    let k8ssandra = schema("k8ssandracluster.schema.json");
    let datacenter = schema("cassandradatacenter.schema.json");
    let mut seen = std::collections::BTreeSet::new();
    for case in cases() {
        for doc in documents(&render(&case)) {
            let kind = doc["kind"].as_str().unwrap_or_default().to_string();
            let validator = match kind.as_str() {
                "K8ssandraCluster" => &k8ssandra,
                "CassandraDatacenter" => &datacenter,
                _ => continue,
            };
            let json = serde_json::to_value(&doc).expect("YAML to JSON");
            let errors: Vec<String> = validator
                .iter_errors(&json)
                .map(|e| format!("{} at {}", e, e.instance_path()))
                .collect();
            assert!(
                errors.is_empty(),
                "{kind} of {} / {} does not match its CRD schema:\n  {}",
                case.chart,
                case.name,
                errors.join("\n  ")
            );
            seen.insert(kind);
        }
    }
    assert_eq!(
        seen.into_iter().collect::<Vec<_>>(),
        ["CassandraDatacenter", "K8ssandraCluster"],
        "every custom resource kind is rendered by some example"
    );
}

#[test]
fn vendored_schemas_reject_a_broken_resource() {
    let path = repo().join("manifests/servers/crds/k8ssandracluster.schema.json");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("schema")).expect("json");
    let validator = jsonschema::validator_for(&json).expect("schema compiles");
    let broken = serde_json::json!({
        "apiVersion": "k8ssandra.io/v1alpha1",
        "kind": "K8ssandraCluster",
        "metadata": {"name": "x"},
        "spec": {"cassandra": {"serverVersion": "4.1.8", "datacenter": []}}
    });
    assert!(
        !validator.is_valid(&broken),
        "a misspelled field must be rejected"
    );
}

/// Collectors that truly need host privileges; each says why in a comment.
const PRIVILEGED: [&str; 2] = ["beyla", "fluent-bit"];

#[test]
fn every_workload_is_pinned_limited_probed_and_locked_down() {
    let mut problems = Vec::new();
    for case in cases() {
        for doc in documents(&render(&case)) {
            let kind = doc["kind"].as_str().unwrap_or_default();
            if !["Deployment", "StatefulSet", "DaemonSet", "Job"].contains(&kind) {
                continue;
            }
            let name = doc["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let at = format!("{} / {}: {kind} {name}", case.chart, case.name);
            let pod = &doc["spec"]["template"]["spec"];
            let privileged_ok = PRIVILEGED.contains(&name.as_str());
            let main = pod["containers"].as_sequence().cloned().unwrap_or_default();
            let init = pod["initContainers"]
                .as_sequence()
                .cloned()
                .unwrap_or_default();
            for (container, is_init) in main
                .iter()
                .map(|c| (c, false))
                .chain(init.iter().map(|c| (c, true)))
            {
                let cname = container["name"].as_str().unwrap_or_default();
                let image = container["image"].as_str().unwrap_or_default();
                let tag = image.rsplit_once(':').map(|(_, t)| t).unwrap_or_default();
                if tag.is_empty() || tag == "latest" || tag.contains('/') {
                    problems.push(format!("{at}/{cname}: image `{image}` is not pinned"));
                }
                for section in ["requests", "limits"] {
                    for res in ["cpu", "memory"] {
                        if container["resources"][section][res].is_null() {
                            problems.push(format!("{at}/{cname}: no {section}.{res}"));
                        }
                    }
                }
                let sc = &container["securityContext"];
                if sc["readOnlyRootFilesystem"] != Value::Bool(true) {
                    problems.push(format!("{at}/{cname}: root filesystem is writable"));
                }
                if !privileged_ok {
                    if sc["allowPrivilegeEscalation"] != Value::Bool(false) {
                        problems.push(format!("{at}/{cname}: privilege escalation allowed"));
                    }
                    let non_root = sc["runAsNonRoot"] == Value::Bool(true)
                        || pod["securityContext"]["runAsNonRoot"] == Value::Bool(true);
                    if !non_root || sc["privileged"] == Value::Bool(true) {
                        problems.push(format!("{at}/{cname}: may run as root or privileged"));
                    }
                }
                if !is_init && kind != "Job" {
                    for probe in ["livenessProbe", "readinessProbe"] {
                        if container[probe].is_null() {
                            problems.push(format!("{at}/{cname}: no {probe}"));
                        }
                    }
                }
            }
            if !privileged_ok
                && (pod["hostNetwork"] == Value::Bool(true) || pod["hostPID"] == Value::Bool(true))
            {
                problems.push(format!("{at}: uses host namespaces"));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "workload rules broken:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn rbac_is_least_privilege_and_never_touches_secrets() {
    let mut problems = Vec::new();
    for case in cases() {
        for doc in documents(&render(&case)) {
            let kind = doc["kind"].as_str().unwrap_or_default();
            if kind != "ClusterRole" && kind != "Role" {
                continue;
            }
            let name = doc["metadata"]["name"].as_str().unwrap_or_default();
            for rule in doc["rules"].as_sequence().into_iter().flatten() {
                let list = |key: &str| -> Vec<String> {
                    rule[key]
                        .as_sequence()
                        .into_iter()
                        .flatten()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect()
                };
                let resources = list("resources");
                let verbs = list("verbs");
                if resources.iter().any(|r| r == "secrets" || r == "*") {
                    problems.push(format!(
                        "{}/{}: {kind} {name} grants {resources:?}",
                        case.chart, case.name
                    ));
                }
                let writes = [
                    "create",
                    "update",
                    "patch",
                    "delete",
                    "deletecollection",
                    "*",
                ];
                let lease_update = resources == ["leases"] && !list("resourceNames").is_empty();
                if verbs.iter().any(|v| writes.contains(&v.as_str())) && !lease_update {
                    problems.push(format!(
                        "{}/{}: {kind} {name} may write {resources:?}",
                        case.chart, case.name
                    ));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "RBAC rules broken:\n  {}",
        problems.join("\n  ")
    );
}

#[test]
fn every_object_carries_the_prune_labels() {
    for case in cases() {
        let instance = if case.chart == "agents" {
            "kube-insight-agents"
        } else {
            "kube-insight"
        };
        for doc in documents(&render(&case)) {
            let labels = &doc["metadata"]["labels"];
            assert_eq!(
                labels["app.kubernetes.io/instance"].as_str(),
                Some(instance),
                "{} / {}: {} {} lacks the instance label `kubectl apply --prune -l` selects on",
                case.chart,
                case.name,
                doc["kind"].as_str().unwrap_or_default(),
                doc["metadata"]["name"].as_str().unwrap_or_default()
            );
        }
    }
}

/// Grafana (servers chart) gets `grafana/provisioning/` and every dashboard
/// of `grafana/dashboards/` unchanged, and the dashboards are mounted where
/// the dashboard provider reads them.
#[test]
fn grafana_gets_every_dashboard_and_its_provisioning_unchanged() {
    let read = |p: &str| std::fs::read_to_string(repo().join(p)).expect("read grafana file");
    let mut dashboards: Vec<(String, String)> =
        std::fs::read_dir(repo().join("grafana/dashboards"))
            .expect("grafana/dashboards")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".json"))
            .map(|n| {
                let text = read(&format!("grafana/dashboards/{n}"));
                (n, text)
            })
            .collect();
    dashboards.sort();
    assert!(
        dashboards.len() >= 4,
        "the topology, workload, pod and changes dashboards: {:?}",
        dashboards.iter().map(|d| &d.0).collect::<Vec<_>>()
    );
    let provider = read("grafana/provisioning/dashboards/kube-insight.yaml");
    let provider_path = provider
        .lines()
        .find_map(|l| l.trim().strip_prefix("path:"))
        .map(str::trim)
        .expect("the provider's path");
    let mut checked = 0;
    for case in cases().into_iter().filter(|c| c.chart == "servers") {
        let docs = documents(&render(&case));
        let find = |kind: &str, name: &str| {
            docs.iter().find(|d| {
                d["kind"].as_str() == Some(kind) && d["metadata"]["name"].as_str() == Some(name)
            })
        };
        let Some(grafana) = find("Deployment", "grafana") else {
            assert!(
                find("ConfigMap", "grafana-dashboards").is_none(),
                "{}",
                case.name
            );
            continue;
        };
        let what = |s: &str| format!("servers / {}: {s}", case.name);
        let cm = find("ConfigMap", "grafana-dashboards").expect("ConfigMap grafana-dashboards");
        let data = cm["data"].as_mapping().expect("dashboards data");
        let keys: Vec<&str> = data.keys().filter_map(Value::as_str).collect();
        let want: Vec<&str> = dashboards.iter().map(|d| d.0.as_str()).collect();
        assert_eq!(keys, want, "{}", what("every dashboard, nothing else"));
        for (name, text) in &dashboards {
            assert_eq!(
                data.get(name.as_str()).and_then(Value::as_str),
                Some(text.as_str()),
                "{}",
                what(&format!("{name} is embedded unchanged"))
            );
        }
        let prov =
            find("ConfigMap", "grafana-provisioning").expect("ConfigMap grafana-provisioning");
        assert_eq!(
            prov["data"]["datasources.yaml"].as_str(),
            Some(read("grafana/provisioning/datasources/kube-insight.yaml").as_str()),
            "{}",
            what("the datasources")
        );
        assert_eq!(
            prov["data"]["dashboards.yaml"].as_str(),
            Some(provider.as_str()),
            "{}",
            what("the dashboard provider")
        );
        // The dashboards volume is the ConfigMap, mounted at the provider's path.
        let pod = &grafana["spec"]["template"]["spec"];
        let volume = pod["volumes"]
            .as_sequence()
            .expect("volumes")
            .iter()
            .find(|v| v["configMap"]["name"].as_str() == Some("grafana-dashboards"))
            .and_then(|v| v["name"].as_str())
            .expect("a volume of the dashboards ConfigMap");
        let mounted = pod["containers"][0]["volumeMounts"]
            .as_sequence()
            .expect("volumeMounts")
            .iter()
            .any(|m| {
                m["name"].as_str() == Some(volume) && m["mountPath"].as_str() == Some(provider_path)
            });
        assert!(
            mounted,
            "{}",
            what(&format!("the dashboards are mounted at {provider_path}"))
        );
        checked += 1;
    }
    assert!(checked > 0, "no servers rendering runs Grafana");
}

/// The servers chart is complete on its own: it embeds its copy of
/// `grafana/provisioning/` and `grafana/dashboards/` from
/// `manifests/servers/files/grafana/`, which must equal the repository's
/// (`UPDATE_GOLDEN=1` copies them over).
#[test]
fn the_servers_chart_carries_identical_copies_of_the_grafana_files() {
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let chart_copy = repo().join("manifests/servers/files/grafana");
    let mut differ = Vec::new();
    for sub in [
        "provisioning/datasources",
        "provisioning/dashboards",
        "dashboards",
    ] {
        let list = |dir: &Path| -> Vec<String> {
            let mut names: Vec<String> = std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
                .filter(|n| n.ends_with(".json") || n.ends_with(".yaml"))
                .collect();
            names.sort();
            names
        };
        let source = repo().join("grafana").join(sub);
        let copy = chart_copy.join(sub);
        if update {
            std::fs::create_dir_all(&copy).expect("mkdir");
            for stale in list(&copy) {
                if !source.join(&stale).exists() {
                    std::fs::remove_file(copy.join(stale)).expect("remove stale copy");
                }
            }
            for name in list(&source) {
                std::fs::copy(source.join(&name), copy.join(&name)).expect("copy");
            }
        }
        if list(&source) != list(&copy) {
            differ.push(format!("{sub}: {:?} vs {:?}", list(&source), list(&copy)));
            continue;
        }
        for name in list(&source) {
            if std::fs::read(source.join(&name)).ok() != std::fs::read(copy.join(&name)).ok() {
                differ.push(format!("{sub}/{name}"));
            }
        }
    }
    assert!(
        differ.is_empty(),
        "manifests/servers/files/grafana differs from grafana/:\n  {}\nrun \
         `UPDATE_GOLDEN=1 cargo test -p manifestr --test manifests` to copy them",
        differ.join("\n  ")
    );
}

/// `manifestr lint` (the same checks as render, plus unique names) accepts
/// every case; from a folder outside the repository, every case renders as
/// its golden file.
#[test]
fn every_case_lints_and_renders_the_same_from_outside_the_repository() {
    let elsewhere = tempfile::tempdir().expect("tempdir");
    for case in cases() {
        let chart = repo().join("manifests").join(case.chart);
        for command in ["lint", "render"] {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_manifestr"));
            cmd.current_dir(elsewhere.path()).arg(command).arg(&chart);
            if let Some(values) = &case.values {
                cmd.arg("-f").arg(values);
            }
            let out = cmd.output().expect("run manifestr");
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "{command} {} / {}: {}",
                case.chart,
                case.name,
                String::from_utf8_lossy(&out.stderr)
            );
            if command == "lint" {
                assert!(stdout.starts_with("ok: "), "{stdout}");
            } else if std::env::var_os("UPDATE_GOLDEN").is_none() {
                assert_eq!(
                    Some(stdout.as_ref()),
                    std::fs::read_to_string(golden_path(&case)).ok().as_deref(),
                    "{} / {} rendered outside the repository",
                    case.chart,
                    case.name
                );
            }
        }
    }
}
/// The env values named `name` of every container of `docs`.
fn env_values(docs: &[Value], name: &str) -> Vec<String> {
    let mut out = Vec::new();
    for doc in docs {
        let pod = &doc["spec"]["template"]["spec"];
        for key in ["containers", "initContainers"] {
            for c in pod[key].as_sequence().into_iter().flatten() {
                for e in c["env"].as_sequence().into_iter().flatten() {
                    if e["name"].as_str() == Some(name) {
                        if let Some(v) = e["value"].as_str() {
                            out.push(v.to_string());
                        }
                    }
                }
            }
        }
    }
    out
}

/// Data centre name → node count of the Cassandra the chart deploys.
fn cassandra_datacenters(docs: &[Value]) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for doc in docs {
        let name = doc["metadata"]["name"].as_str().unwrap_or_default();
        match doc["kind"].as_str().unwrap_or_default() {
            "K8ssandraCluster" => {
                for dc in doc["spec"]["cassandra"]["datacenters"]
                    .as_sequence()
                    .into_iter()
                    .flatten()
                {
                    let dc_name = dc["metadata"]["name"].as_str().unwrap_or_default();
                    out.push((dc_name.to_string(), dc["size"].as_u64().unwrap_or(0)));
                }
            }
            "CassandraDatacenter" => {
                out.push((name.to_string(), doc["spec"]["size"].as_u64().unwrap_or(0)));
            }
            "StatefulSet" if name == "cassandra" => {
                // The StatefulSet's data centre is the one its pods announce.
                let dc = env_values(std::slice::from_ref(doc), "CASSANDRA_DC")
                    .into_iter()
                    .next()
                    .unwrap_or_else(|| "dc1".into());
                out.push((dc, doc["spec"]["replicas"].as_u64().unwrap_or(0)));
            }
            _ => {}
        }
    }
    out
}

/// Every Cassandra store URL names its replication, NetworkTopologyStrategy
/// in the deployed data centre at its size capped at 3 (a keyspace made
/// with the driver default `simple:1` loses data with one node).
#[test]
fn cassandra_keyspaces_are_replicated_across_the_datacenter() {
    let mut problems = Vec::new();
    let mut checked = 0;
    for case in cases().into_iter().filter(|c| c.chart == "servers") {
        let docs = documents(&render(&case));
        let dcs = cassandra_datacenters(&docs);
        for url in env_values(&docs, "KUBE_INSIGHT_STORE") {
            if !url.starts_with("cassandra://") {
                continue;
            }
            let at = format!("servers / {}", case.name);
            let query = url.split_once('?').map(|(_, q)| q).unwrap_or_default();
            let param = |k: &str| {
                query
                    .split('&')
                    .find_map(|kv| kv.strip_prefix(&format!("{k}=")))
                    .map(str::to_string)
            };
            let Some(replication) = param("replication") else {
                problems.push(format!("{at}: {url} has no replication="));
                continue;
            };
            let dc = param("dc").unwrap_or_default();
            let want = dcs
                .iter()
                .find(|(name, _)| *name == dc)
                .map(|(_, size)| format!("{dc}:{}", size.min(&3)));
            if dcs.is_empty() {
                // Mode external: the operator's own value, at least named.
                if !replication.contains(':') {
                    problems.push(format!("{at}: replication={replication}"));
                }
            } else if want.as_deref() != Some(replication.as_str()) {
                problems.push(format!(
                    "{at}: replication={replication}, the data centres are {dcs:?} (want {want:?})"
                ));
            }
            checked += 1;
        }
    }
    assert!(checked > 0, "no cassandra store URL rendered");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The store URL of the servers chart rendered with `--set` values.
fn servers_store_url(set: &[&str]) -> String {
    let out = render_with("servers", &[], set);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let docs = documents(&String::from_utf8(out.stdout).expect("utf-8"));
    env_values(&docs, "KUBE_INSIGHT_STORE")
        .into_iter()
        .next()
        .expect("a store URL")
}

#[test]
fn cassandra_replication_is_capped_at_three_and_configurable() {
    let rf = |set: &[&str]| {
        let url = servers_store_url(set);
        url.split("replication=")
            .nth(1)
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(rf(&["cassandra.replicas=5"]), "dc1:3");
    assert_eq!(rf(&["cassandra.replicas=1"]), "dc1:1");
    assert_eq!(
        rf(&["cassandra.datacenter=eu", "cassandra.replicas=2"]),
        "eu:2"
    );
    assert_eq!(
        rf(&["cassandra.replication=eu:3,us:3", "cassandra.datacenter=eu"]),
        "eu:3,us:3"
    );
}

/// A rendering of a chart with values files and `--set` values.
fn render_with(chart: &str, values: &[&Path], set: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_manifestr"));
    cmd.current_dir(repo())
        .args(["render", &format!("manifests/{chart}")]);
    for v in values {
        cmd.arg("-f").arg(v);
    }
    for s in set {
        cmd.args(["--set", s]);
    }
    cmd.output().expect("run manifestr")
}

/// Where a sender's connection to the ingest listener comes from.
#[derive(Debug)]
enum Source {
    /// A pod on the pod network: its namespace's labels and its own.
    Pod {
        namespace: Vec<(String, String)>,
        labels: Vec<(String, String)>,
    },
    /// A hostNetwork pod: the node's address.
    Node([u8; 4]),
    /// The Ingress controller, in a namespace the chart does not know.
    Anywhere,
}

/// An agent that sends to the ingest listener.
struct Sender {
    name: String,
    host_network: bool,
    namespace: String,
    labels: Vec<(String, String)>,
}

fn string_pairs(v: &Value) -> Vec<(String, String)> {
    v.as_mapping()
        .into_iter()
        .flatten()
        .map(|(k, v)| {
            (
                k.as_str().unwrap_or_default().to_string(),
                v.as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// `matchLabels` semantics; `matchExpressions` is not used by the charts.
fn selects(selector: &Value, labels: &[(String, String)]) -> bool {
    assert!(
        selector["matchExpressions"].is_null(),
        "the admission check does not model matchExpressions: {selector:?}"
    );
    string_pairs(&selector["matchLabels"])
        .iter()
        .all(|kv| labels.contains(kv))
}

fn in_cidr(ip: [u8; 4], cidr: &str) -> bool {
    let Some((net, bits)) = cidr.split_once('/') else {
        return false;
    };
    let (Ok(net), Ok(bits)) = (net.parse::<std::net::Ipv4Addr>(), bits.parse::<u32>()) else {
        return false;
    };
    let mask = if bits == 0 {
        0
    } else {
        u32::MAX << (32 - bits.min(32))
    };
    u32::from(std::net::Ipv4Addr::from(ip)) & mask == u32::from(net) & mask
}

/// Whether a NetworkPolicy `from` peer admits `source` (the policy lives
/// in `policy_ns`).
fn peer_admits(peer: &Value, policy_ns: &str, source: &Source) -> bool {
    if !peer["ipBlock"].is_null() {
        let Source::Node(ip) = source else {
            // Pod CIDRs are not known to the chart: no ipBlock is assumed
            // to cover a pod or the Ingress controller.
            return false;
        };
        let cidr = peer["ipBlock"]["cidr"].as_str().unwrap_or_default();
        let excepted = peer["ipBlock"]["except"]
            .as_sequence()
            .into_iter()
            .flatten()
            .any(|e| in_cidr(*ip, e.as_str().unwrap_or_default()));
        return in_cidr(*ip, cidr) && !excepted;
    }
    match source {
        Source::Pod { namespace, labels } => {
            let ns_ok = if peer["namespaceSelector"].is_null() {
                namespace.contains(&(
                    "kubernetes.io/metadata.name".to_string(),
                    policy_ns.to_string(),
                ))
            } else {
                selects(&peer["namespaceSelector"], namespace)
            };
            let pod_ok = peer["podSelector"].is_null() || selects(&peer["podSelector"], labels);
            ns_ok && pod_ok
        }
        // Selectors match pods only, never node addresses.
        Source::Node(_) => false,
        Source::Anywhere => {
            !peer["namespaceSelector"].is_null()
                && selects(&peer["namespaceSelector"], &[])
                && (peer["podSelector"].is_null() || selects(&peer["podSelector"], &[]))
        }
    }
}

/// Whether the rendered policies admit `source` to the ingest port of
/// every pod of `docs` that serves ingest.
fn ingest_admits(docs: &[Value], source: &Source) -> Result<(), String> {
    let policies: Vec<&Value> = docs
        .iter()
        .filter(|d| d["kind"].as_str() == Some("NetworkPolicy"))
        .collect();
    let mut ingest_pods = 0;
    for doc in docs {
        let template = &doc["spec"]["template"];
        let labels = string_pairs(&template["metadata"]["labels"]);
        if !labels.contains(&("kube-insight.io/ingest".into(), "true".into())) {
            continue;
        }
        ingest_pods += 1;
        let ns = doc["metadata"]["namespace"].as_str().unwrap_or_default();
        let port = template["spec"]["containers"]
            .as_sequence()
            .into_iter()
            .flatten()
            .flat_map(|c| c["ports"].as_sequence().cloned().unwrap_or_default())
            .find(|p| p["name"].as_str() == Some("ingest"))
            .and_then(|p| p["containerPort"].as_u64())
            .ok_or("an ingest pod without an `ingest` port")?;
        let selecting: Vec<&&Value> = policies
            .iter()
            .filter(|p| p["metadata"]["namespace"].as_str() == Some(ns))
            .filter(|p| selects(&p["spec"]["podSelector"], &labels))
            .filter(|p| {
                p["spec"]["policyTypes"]
                    .as_sequence()
                    .is_none_or(|t| t.iter().any(|t| t.as_str() == Some("Ingress")))
            })
            .collect();
        if selecting.is_empty() {
            continue;
        }
        let admitted = selecting.iter().any(|p| {
            p["spec"]["ingress"]
                .as_sequence()
                .into_iter()
                .flatten()
                .any(|rule| {
                    let port_ok = rule["ports"].as_sequence().is_none_or(|ports| {
                        ports.iter().any(|p| {
                            p["port"].is_null()
                                || p["port"].as_str() == Some("ingest")
                                || p["port"].as_u64() == Some(port)
                        })
                    });
                    let from = rule["from"].as_sequence();
                    let from_ok = from.is_none_or(|peers| {
                        peers.is_empty() || peers.iter().any(|peer| peer_admits(peer, ns, source))
                    });
                    port_ok && from_ok
                })
        });
        if !admitted {
            let name = doc["metadata"]["name"].as_str().unwrap_or_default();
            return Err(format!("{name}:{port} does not admit {source:?}"));
        }
    }
    if ingest_pods == 0 {
        return Err("no pod serves ingest".into());
    }
    Ok(())
}

/// The workloads of an agents rendering that send to ingest: their pod
/// spec or a ConfigMap they mount names an `/ingest/` path.
fn ingest_senders(docs: &[Value]) -> Vec<Sender> {
    let config_maps: Vec<(String, String)> = docs
        .iter()
        .filter(|d| d["kind"].as_str() == Some("ConfigMap"))
        .map(|d| {
            let name = d["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            (
                name,
                serde_norway::to_string(&d["data"]).unwrap_or_default(),
            )
        })
        .collect();
    let mut out = Vec::new();
    for doc in docs {
        let kind = doc["kind"].as_str().unwrap_or_default();
        if !["Deployment", "StatefulSet", "DaemonSet"].contains(&kind) {
            continue;
        }
        let pod = &doc["spec"]["template"]["spec"];
        let own = serde_norway::to_string(&pod["containers"]).unwrap_or_default();
        let mounted = pod["volumes"].as_sequence().into_iter().flatten().any(|v| {
            let cm = v["configMap"]["name"].as_str().unwrap_or_default();
            config_maps
                .iter()
                .any(|(name, data)| name == cm && data.contains("/ingest/"))
        });
        if own.contains("/ingest/") || mounted {
            out.push(Sender {
                name: format!(
                    "{kind} {}",
                    doc["metadata"]["name"].as_str().unwrap_or_default()
                ),
                host_network: pod["hostNetwork"] == Value::Bool(true),
                namespace: doc["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                labels: string_pairs(&doc["spec"]["template"]["metadata"]["labels"]),
            });
        }
    }
    out
}

/// A Namespace's labels as a NetworkPolicy sees them.
fn namespace_labels(docs: &[Value], name: &str) -> Vec<(String, String)> {
    let mut labels = vec![("kubernetes.io/metadata.name".to_string(), name.to_string())];
    for d in docs {
        if d["kind"].as_str() == Some("Namespace") && d["metadata"]["name"].as_str() == Some(name) {
            labels.extend(string_pairs(&d["metadata"]["labels"]));
        }
    }
    labels
}

/// A node address of the checks (the test's node CIDR is 10.20.0.0/16).
const NODE_IP: [u8; 4] = [10, 20, 3, 4];

/// Every agent that sends to ingest is admitted by the servers' policies,
/// for each pair of examples where the agents reach those servers: in
/// cluster through the Service (a hostNetwork agent from its node), or
/// through the Ingress (the controller, from anywhere).
fn check_agents_reach_ingest(
    agents: &[Value],
    servers: &[Value],
    at: &str,
    problems: &mut Vec<String>,
) -> bool {
    let url = agents
        .iter()
        .filter(|d| d["kind"].as_str() == Some("ConfigMap"))
        .find_map(|d| {
            let text = serde_norway::to_string(&d["data"]).unwrap_or_default();
            text.split_whitespace()
                .find(|w| w.contains("://") && w.contains("/ingest/"))
                .map(str::to_string)
        })
        .unwrap_or_default();
    let service_host = servers
        .iter()
        .find(|d| {
            d["kind"].as_str() == Some("Service")
                && d["metadata"]["name"].as_str() == Some("kube-insight-ingest")
        })
        .map(|d| {
            format!(
                "kube-insight-ingest.{}.svc",
                d["metadata"]["namespace"].as_str().unwrap_or_default()
            )
        });
    let ingress_host = servers
        .iter()
        .filter(|d| d["kind"].as_str() == Some("Ingress"))
        .flat_map(|d| {
            d["spec"]["rules"]
                .as_sequence()
                .cloned()
                .unwrap_or_default()
        })
        .find_map(|r| r["host"].as_str().map(str::to_string));
    let direct = service_host.is_some_and(|h| url.contains(&format!("//{h}")));
    let via_ingress = ingress_host.is_some_and(|h| url.contains(&format!("//{h}")));
    if !direct && !via_ingress {
        return false;
    }
    for sender in ingest_senders(agents) {
        let source = if via_ingress {
            Source::Anywhere
        } else if sender.host_network {
            Source::Node(NODE_IP)
        } else {
            Source::Pod {
                namespace: namespace_labels(agents, &sender.namespace),
                labels: sender.labels.clone(),
            }
        };
        if let Err(e) = ingest_admits(servers, &source) {
            problems.push(format!("{at}: {} is dropped: {e}", sender.name));
        }
    }
    true
}

#[test]
fn every_agent_that_sends_to_ingest_is_admitted_by_the_network_policies() {
    let all = cases();
    let servers: Vec<(String, Vec<Value>)> = all
        .iter()
        .filter(|c| c.chart == "servers")
        .map(|c| (c.name.clone(), documents(&render(c))))
        .collect();
    let mut problems = Vec::new();
    for agents_case in all.iter().filter(|c| c.chart == "agents") {
        let agents = documents(&render(agents_case));
        let senders = ingest_senders(&agents);
        assert!(
            senders
                .iter()
                .any(|s| s.name == "DaemonSet fluent-bit" && s.host_network),
            "agents / {}: Fluent Bit not found among the senders",
            agents_case.name
        );
        let mut paired = 0;
        for (name, docs) in &servers {
            let at = format!("agents / {} → servers / {name}", agents_case.name);
            if check_agents_reach_ingest(&agents, docs, &at, &mut problems) {
                paired += 1;
            }
        }
        assert!(
            paired > 0,
            "agents / {} reaches no servers example",
            agents_case.name
        );
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// A restricted ingestFrom admits hostNetwork agents only from the node
/// CIDRs listed; without them, mode single refuses to render.
#[test]
fn a_restricted_ingest_policy_needs_the_node_cidrs() {
    let agents = documents(&render(&Case {
        chart: "agents",
        name: "default".into(),
        values: None,
    }));
    let dir = tempfile::tempdir().unwrap();
    let values = |name: &str, cidrs: &str| {
        let path = dir.path().join(name);
        std::fs::write(
            &path,
            format!(
                "networkPolicies:\n  ingestFrom:\n    - namespaceSelector:\n        matchLabels:\n          \
                 kubernetes.io/metadata.name: kube-insight-agents\n  ingestNodeCidrs: {cidrs}\n"
            ),
        )
        .unwrap();
        path
    };
    let restricted = values("restricted.yaml", "[]");
    let with_nodes = values("with-nodes.yaml", "[10.20.0.0/16]");
    let single = repo().join("manifests/servers/examples/single-node.yaml");
    let out = render_with("servers", &[&single, &restricted], &[]);
    assert!(!out.status.success(), "rendered without node CIDRs");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ingestNodeCidrs"), "{err}");

    let out = render_with("servers", &[&single, &with_nodes], &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let servers = documents(&String::from_utf8(out.stdout).unwrap());
    let mut problems = Vec::new();
    assert!(check_agents_reach_ingest(
        &agents,
        &servers,
        "restricted",
        &mut problems
    ));
    assert!(problems.is_empty(), "{problems:?}");
    // The checker is not vacuous: another node range, another namespace.
    assert!(ingest_admits(&servers, &Source::Node([10, 21, 0, 1])).is_err());
    let elsewhere = Source::Pod {
        namespace: vec![("kubernetes.io/metadata.name".into(), "default".into())],
        labels: vec![],
    };
    assert!(ingest_admits(&servers, &elsewhere).is_err());
    assert!(ingest_admits(&servers, &Source::Anywhere).is_err());

    // Mode roles: a restricted list without CIDRs renders, and drops
    // Fluent Bit (hostNetwork), which is what the check reports; the pod
    // network senders are admitted by the namespace.
    let out = render_with("servers", &[&restricted], &[]);
    assert!(out.status.success());
    let servers = documents(&String::from_utf8(out.stdout).unwrap());
    let mut problems = Vec::new();
    check_agents_reach_ingest(&agents, &servers, "roles", &mut problems);
    assert!(
        problems.len() == 1 && problems[0].contains("fluent-bit"),
        "{problems:?}"
    );
}

/// The schema Job of the default servers rendering with `--set` values:
/// its name and its container (image, args, env: all `schema apply` reads).
fn schema_job(set: &[&str]) -> (String, String) {
    let out = render_with("servers", &[], set);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let docs = documents(&String::from_utf8(out.stdout).unwrap());
    let job = docs
        .iter()
        .find(|d| d["kind"].as_str() == Some("Job"))
        .expect("a schema Job");
    let container = &job["spec"]["template"]["spec"]["containers"][0];
    (
        job["metadata"]["name"].as_str().unwrap().to_string(),
        serde_norway::to_string(container).unwrap(),
    )
}

/// The Job is renamed (so it runs again) exactly when what `schema apply`
/// reads changes: a retention, the replication, the store, the image.
#[test]
fn the_schema_job_reruns_when_anything_schema_apply_reads_changes() {
    let (base_name, base_container) = schema_job(&[]);
    for set in [
        "retention.metrics=30d",
        "retention.logs=1d",
        "retention.events=30d",
        "retention.topology=7d",
        "cassandra.replication=dc1:3,dc2:3",
        "cassandra.keyspace=other",
        "image=example.invalid/kube-insight:9.9.9",
    ] {
        let (name, container) = schema_job(&[set]);
        assert_ne!(container, base_container, "{set} changes nothing");
        assert_ne!(name, base_name, "{set}: the Job would not run again");
    }
    // What schema apply does not read leaves the Job alone (no rerun on
    // every scale-out).
    for set in ["api.replicas=7", "grafana.enabled=false"] {
        let (name, container) = schema_job(&[set]);
        assert_eq!(container, base_container, "{set}");
        assert_eq!(name, base_name, "{set}");
    }
}
