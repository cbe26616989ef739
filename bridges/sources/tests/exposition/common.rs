//! Helpers shared by the exposition test files (included with `#[path]`).
#![allow(dead_code)]

use kube_insight_sources::prometheus::exposition::{
    parse_with_options, ParseOptions, ParseReport, SampleRef,
};
use std::path::PathBuf;

/// The default timestamp given to samples without one.
pub const DEFAULT_TS: i64 = 1_700_000_000_000;

/// A sample copied out of the sink, labels as written (empty values kept,
/// input order).
#[derive(Clone, Debug, PartialEq)]
pub struct Owned {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
    pub timestamp_ms: i64,
    pub has_timestamp: bool,
    pub line: usize,
}

impl Owned {
    pub fn from_ref(s: &SampleRef<'_>) -> Self {
        Owned {
            name: s.name.to_owned(),
            labels: s
                .labels
                .iter()
                .map(|l| (l.name.to_owned(), l.value.to_string()))
                .collect(),
            value: s.value,
            timestamp_ms: s.timestamp_ms,
            has_timestamp: s.has_timestamp,
            line: s.line,
        }
    }

    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

pub fn parse_all(input: &[u8]) -> (Vec<Owned>, ParseReport) {
    parse_opts(input, ParseOptions::default())
}

pub fn parse_opts(input: &[u8], opts: ParseOptions) -> (Vec<Owned>, ParseReport) {
    let mut out = Vec::new();
    let report = parse_with_options(input, DEFAULT_TS, opts, &mut |s: &SampleRef<'_>| {
        out.push(Owned::from_ref(s))
    });
    (out, report)
}

/// `shared/fixtures/<name>`: `KUBE_INSIGHT_SHARED_DIR` if set, else the
/// first `shared/` found above this crate (the project's `../shared`).
pub fn fixture_path(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("KUBE_INSIGHT_SHARED_DIR") {
        return PathBuf::from(dir).join("fixtures").join(name);
    }
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    for dir in manifest.ancestors() {
        let candidate = dir.join("shared").join("fixtures").join(name);
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "fixture {name} not found in a shared/fixtures/ above {}; set KUBE_INSIGHT_SHARED_DIR",
        manifest.display()
    );
}

pub fn fixture(name: &str) -> Vec<u8> {
    let path = fixture_path(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

pub const FIXTURES: &[&str] = &[
    "federate-sample.txt",
    "kubelet-cadvisor-sample.txt",
    "kube-state-metrics-sample.txt",
    "beyla-network-federate-sample.txt",
];
