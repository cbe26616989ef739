//! Throughput of the text exposition parser on a generated body shaped like
//! a `/federate` answer for 100k series: kubelet/cAdvisor container series
//! (long `id` cgroup paths, ~11 labels) and kube-state-metrics series.
//!
//! `cargo bench -p kube-insight-sources --bench exposition`
//! (the target is ≥ 150 MB/s per core for `parse`).

// Tests and benches may unwrap: a panic is a failing run with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kube_insight_sources::prometheus::exposition::{parse, parse_to_series, SampleRef};
use std::hint::black_box;
use std::time::Duration;

const SERIES: usize = 100_000;

/// A deterministic body: 60% cAdvisor, 40% KSM, every line with a timestamp.
pub fn generate_body(series: usize) -> String {
    const CADVISOR: &[&str] = &[
        "container_cpu_usage_seconds_total",
        "container_memory_working_set_bytes",
        "container_network_receive_bytes_total",
        "container_fs_writes_bytes_total",
        "container_memory_rss",
    ];
    const KSM: &[&str] = &[
        "kube_pod_info",
        "kube_pod_owner",
        "kube_pod_container_status_restarts_total",
        "kube_pod_status_phase",
    ];
    let mut out = String::with_capacity(series * 450);
    let cadvisor = series * 6 / 10;
    let per_metric = cadvisor.div_ceil(CADVISOR.len());
    let mut n = 0usize;
    for (mi, metric) in CADVISOR.iter().enumerate() {
        out.push_str(&format!("# TYPE {metric} untyped\n"));
        for i in 0..per_metric.min(cadvisor - n) {
            let node = i % 50;
            let pod = format!("app-{:x}-{:05}", i / 7 % 997, i);
            let uid = format!(
                "{:08x}_{:04x}_4c9d_8e0f_{:012x}",
                i * 2654435761 % 0xffff_ffff,
                i % 0xffff,
                i * 97
            );
            let cid = format!(
                "{:064x}",
                (i as u128 * 0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c834) >> 4
            );
            let value = match mi {
                0 => format!("{}", 1234.567 + i as f64 * 0.125),
                1 => format!("{:e}", 1.87695104e+08 + i as f64),
                _ => format!("{}", i * 4096),
            };
            out.push_str(&format!(
                "{metric}{{container=\"c{c}\",cpu=\"total\",id=\"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid}.slice/cri-containerd-{cid}.scope\",image=\"registry.example.com/team{t}/app:{v}.{r}.1\",instance=\"ip-10-0-{node}-41.eu-west-1.compute.internal\",job=\"kubelet\",metrics_path=\"/metrics/cadvisor\",name=\"{cid}\",namespace=\"ns-{ns}\",node=\"ip-10-0-{node}-41.eu-west-1.compute.internal\",pod=\"{pod}\"}} {value} {ts}\n",
                c = i % 3,
                t = i % 40,
                v = i % 5,
                r = i % 11,
                ns = i % 30,
                ts = 1_717_171_712_345i64 + (i % 15_000) as i64,
            ));
            n += 1;
        }
    }
    let ksm = series - n;
    let per_metric = ksm.div_ceil(KSM.len());
    let mut m = 0usize;
    for metric in KSM {
        out.push_str(&format!("# TYPE {metric} untyped\n"));
        for i in 0..per_metric.min(ksm - m) {
            out.push_str(&format!(
                "{metric}{{created_by_kind=\"ReplicaSet\",created_by_name=\"app-{rs:x}\",host_ip=\"10.0.{a}.{b}\",instance=\"10.244.0.12:8080\",job=\"kube-state-metrics\",namespace=\"ns-{ns}\",node=\"ip-10-0-{a}-{b}.eu-west-1.compute.internal\",pod=\"app-{rs:x}-{i:05}\",pod_ip=\"10.244.{a}.{b}\",uid=\"{i:08x}-a7b8-4c9d-8e0f-1a2b3c4d5e6f\"}} 1 {ts}\n",
                rs = i / 7 % 997,
                a = i % 250,
                b = i / 250 % 250,
                ns = i % 30,
                ts = 1_717_171_710_001i64 + (i % 15_000) as i64,
            ));
            m += 1;
        }
    }
    out
}

fn bench(c: &mut Criterion) {
    let body = generate_body(SERIES);
    // Sanity: the body parses cleanly into the expected number of samples.
    let mut count = 0usize;
    let report = parse(&body, 0, |_: &SampleRef<'_>| count += 1);
    assert!(report.is_clean(), "{:?}", report.errors.first());
    assert_eq!(count, SERIES);
    eprintln!(
        "exposition bench body: {} series, {:.1} MB",
        SERIES,
        body.len() as f64 / 1e6
    );

    let mut g = c.benchmark_group("exposition");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(8));
    g.bench_function("parse", |b| {
        b.iter(|| {
            let mut sum = 0.0f64;
            let mut labels = 0usize;
            let report = parse(black_box(&body), 0, |s: &SampleRef<'_>| {
                sum += s.value;
                labels += s.labels.len();
            });
            black_box((sum, labels, report.samples))
        })
    });
    g.bench_function("parse_to_series", |b| {
        b.iter(|| {
            let (series, report) = parse_to_series(black_box(&body), 0);
            black_box((series.len(), report.samples))
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
