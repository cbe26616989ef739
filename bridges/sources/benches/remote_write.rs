//! Decoding a remote write request the size Prometheus sends by default
//! (`max_samples_per_send: 2000`), cAdvisor-shaped series.
//!
//! `cargo bench -p kube-insight-sources --bench remote_write`

// Tests and benches may unwrap: a panic is a failing run with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use kube_insight_core::{Labels, Sample, TimeSeries};
use kube_insight_sources::prometheus::remote_write::{decode, encode, DecodeOptions};
use std::hint::black_box;

fn batch(series: usize) -> Vec<TimeSeries> {
    (0..series)
        .map(|i| {
            let labels = Labels::from_pairs([
                ("__name__", "container_cpu_usage_seconds_total".to_string()),
                ("container", format!("c{}", i % 3)),
                ("cpu", "total".to_string()),
                (
                    "id",
                    format!("/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{i:032x}.slice/cri-containerd-{i:064x}.scope"),
                ),
                ("image", format!("registry.example.com/team{}/app:1.{}.0", i % 40, i % 7)),
                ("instance", format!("ip-10-0-{}-41.eu-west-1.compute.internal", i % 50)),
                ("job", "kubelet".to_string()),
                ("namespace", format!("ns-{}", i % 30)),
                ("pod", format!("app-{:x}-{i:05}", i / 7)),
            ]);
            TimeSeries::new(labels, vec![Sample::new(1_717_171_712_345, i as f64 * 0.5)])
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let body = encode(&batch(2000), &[]).unwrap_or_default();
    let opts = DecodeOptions::default();
    let mut g = c.benchmark_group("remote_write");
    g.throughput(Throughput::Elements(2000));
    g.bench_function("decode_2000_samples", |b| {
        b.iter(|| {
            let batch = decode(black_box(&body), &opts);
            black_box(batch.map(|b| b.samples).unwrap_or_default())
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
