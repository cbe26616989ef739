//! The exposition parser on the shared fixtures (`shared/fixtures/`): exact
//! counts, spot-checked values and labels, TYPE/HELP metadata, series.

// Test helpers may unwrap: a panic there is a failing test (as clippy.toml allows in #[test]).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "exposition/common.rs"]
mod common;

use common::{fixture, parse_all, Owned, DEFAULT_TS};
use kube_insight_sources::prometheus::exposition::{parse_to_series, MetricType};

fn find<'a>(samples: &'a [Owned], name: &str, pairs: &[(&str, &str)]) -> &'a Owned {
    samples
        .iter()
        .find(|s| s.name == name && pairs.iter().all(|(k, v)| s.label(k) == Some(*v)))
        .unwrap_or_else(|| panic!("no sample {name} {pairs:?}"))
}

#[test]
fn federate_sample() {
    let body = fixture("federate-sample.txt");
    let (samples, report) = parse_all(&body);
    assert!(report.is_clean(), "{:?}", report.errors);
    assert_eq!(report.lines, 23);
    assert_eq!(samples.len(), 16);
    assert!(samples.iter().all(|s| s.has_timestamp));
    assert_eq!(report.types.len(), 7);
    assert!(report.types.values().all(|t| *t == MetricType::Untyped));
    assert!(report.help.is_empty());

    // The recording rule that prometheus-parse 0.2.5 drops.
    let rule = find(
        &samples,
        "namespace_memory:kube_pod_container_resource_requests:sum",
        &[],
    );
    assert_eq!(rule.value, 536870912.0);
    assert_eq!(rule.timestamp_ms, 1717171695000);
    assert_eq!(rule.label("instance"), Some(""));
    assert_eq!(rule.label("namespace"), Some("shop"));

    let mem = find(
        &samples,
        "container_memory_working_set_bytes",
        &[("pod", "api-5f6d7c8b9-qwz7p")],
    );
    assert_eq!(mem.value, 187695104.0);
    assert_eq!(mem.timestamp_ms, 1717171712345);
    assert_eq!(mem.labels.len(), 10);
    assert_eq!(
        mem.label("image"),
        Some("registry.example.com/shop/api:2.4.1")
    );

    // The pod-level cgroup: no `container` label at all.
    let pod_cpu = &samples[2];
    assert_eq!(pod_cpu.name, "container_cpu_usage_seconds_total");
    assert_eq!(pod_cpu.label("container"), None);
    assert_eq!(pod_cpu.value, 1301.002);

    let owners: Vec<&str> = samples
        .iter()
        .filter(|s| s.name == "kube_replicaset_owner")
        .filter_map(|s| s.label("owner_name"))
        .collect();
    assert_eq!(owners, ["api", "frontend"]);

    // As series: instance="" is dropped from the label set.
    let (series, _) = parse_to_series(&body, DEFAULT_TS);
    assert_eq!(series.len(), 16);
    let rule = series
        .iter()
        .find(|s| s.labels.metric_name().contains(':'))
        .unwrap();
    assert_eq!(
        rule.labels.to_string(),
        "namespace_memory:kube_pod_container_resource_requests:sum{namespace=\"shop\"}"
    );
}

#[test]
fn kubelet_cadvisor_sample() {
    let body = fixture("kubelet-cadvisor-sample.txt");
    let (samples, report) = parse_all(&body);
    assert!(report.is_clean(), "{:?}", report.errors);
    assert_eq!(samples.len(), 4);
    assert_eq!(report.lines, 10);
    assert_eq!(
        report.types.get("container_cpu_usage_seconds_total"),
        Some(&MetricType::Counter)
    );
    assert_eq!(
        report.types.get("container_memory_working_set_bytes"),
        Some(&MetricType::Gauge)
    );
    assert_eq!(
        report.types.get("container_network_receive_bytes_total"),
        Some(&MetricType::Counter)
    );
    assert_eq!(
        report.help["container_cpu_usage_seconds_total"],
        "Cumulative cpu time consumed in seconds."
    );
    assert_eq!(report.help.len(), 3);

    // Empty labels are present as written; gone once turned into Labels.
    let pod_level = &samples[1];
    assert_eq!(pod_level.label("container"), Some(""));
    assert_eq!(pod_level.value, 1301.002);
    let (series, _) = parse_to_series(&body, DEFAULT_TS);
    assert_eq!(series[1].labels.get("container"), None);
    assert_eq!(series[1].labels.get("image"), None);
    assert_eq!(series[1].labels.get("name"), None);
    assert_eq!(series[1].labels.len(), 5); // __name__ cpu id namespace pod

    let net = find(
        &samples,
        "container_network_receive_bytes_total",
        &[("interface", "eth0")],
    );
    assert_eq!(net.value, 987654321.0);
    assert_eq!(net.timestamp_ms, 1717171712345);
}

#[test]
fn kube_state_metrics_sample() {
    let body = fixture("kube-state-metrics-sample.txt");
    let (samples, report) = parse_all(&body);
    assert!(report.is_clean(), "{:?}", report.errors);
    assert_eq!(samples.len(), 5);
    assert!(samples
        .iter()
        .all(|s| !s.has_timestamp && s.timestamp_ms == DEFAULT_TS));
    assert!(samples.iter().all(|s| s.value == 1.0));
    assert_eq!(report.types.len(), 3);
    assert!(report.types.values().all(|t| *t == MetricType::Gauge));
    assert_eq!(
        report.help["kube_pod_info"],
        "[STABLE] Information about pod."
    );

    // KSM label order is kept as emitted.
    let info = &samples[0];
    let names: Vec<&str> = info.labels.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "namespace",
            "pod",
            "uid",
            "host_ip",
            "pod_ip",
            "node",
            "created_by_kind",
            "created_by_name",
            "priority_class",
            "host_network"
        ]
    );

    // A pod without owner: the empty owner labels vanish from the series.
    let (series, _) = parse_to_series(&body, DEFAULT_TS);
    let standalone = series
        .iter()
        .find(|s| s.labels.get("pod") == Some("standalone-debug"))
        .unwrap();
    assert_eq!(
        standalone.labels.to_string(),
        "kube_pod_owner{namespace=\"default\", pod=\"standalone-debug\", uid=\"99990000-1111-4222-8333-444455556666\"}"
    );
}

#[test]
fn beyla_network_federate_sample() {
    let body = fixture("beyla-network-federate-sample.txt");
    let (samples, report) = parse_all(&body);
    assert!(report.is_clean(), "{:?}", report.errors);
    assert_eq!(samples.len(), 5);
    assert_eq!(
        report.types.get("beyla_network_flow_bytes_total"),
        Some(&MetricType::Untyped)
    );
    let values: Vec<f64> = samples.iter().map(|s| s.value).collect();
    assert_eq!(values, [1234567.0, 881230.0, 450000.0, 12000.0, 3300.0]);
    assert!(samples.iter().all(|s| s.timestamp_ms == 1764000000000));
    // The flow from outside the cluster: empty src labels.
    let outside = &samples[4];
    assert_eq!(outside.label("k8s_src_owner_name"), Some(""));
    let (series, _) = parse_to_series(&body, DEFAULT_TS);
    assert_eq!(series[4].labels.get("k8s_src_owner_name"), None);
    assert_eq!(series[4].labels.get("k8s_dst_owner_name"), Some("checkout"));
}

/// The fixtures concatenated, then cut at every byte: the complete lines
/// before the cut always parse, and nothing wrong is ever emitted.
#[test]
fn truncation_anywhere_never_emits_a_wrong_sample() {
    let body = fixture("federate-sample.txt");
    let (full, _) = parse_all(&body);
    for cut in 0..body.len() {
        let (got, report) = parse_all(&body[..cut]);
        for g in &got {
            assert!(
                full.iter().any(|f| f.line == g.line
                    && f.name == g.name
                    && f.labels == g.labels
                    && f.value.to_bits() == g.value.to_bits()
                    && f.timestamp_ms == g.timestamp_ms),
                "cut at {cut}: emitted {g:?}"
            );
        }
        let complete_lines = body[..cut].iter().filter(|&&b| b == b'\n').count();
        let expected = full.iter().filter(|f| f.line <= complete_lines).count();
        assert_eq!(got.len(), expected, "cut at {cut}");
        let mid_line = cut > 0 && body[cut - 1] != b'\n';
        assert_eq!(report.truncated, mid_line, "cut at {cut}");
        assert_eq!(report.errors_total, usize::from(mid_line), "cut at {cut}");
    }
}
