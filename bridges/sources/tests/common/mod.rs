//! Helpers for the sources' HTTP tests: a real SQLite store in a temp dir and
//! a real HTTP server on a loopback ephemeral port.

// Tests and benches may unwrap: a panic is a failing run with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(dead_code)]

use axum::Router;
use kube_insight_core::{Labels, Matcher, Sample, TimeRange, TimeSeries};
use kube_insight_store::{DynStore, SelectQuery, StoreOptions};
use std::net::SocketAddr;

pub async fn sqlite_store() -> (DynStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}/t.db", dir.path().display());
    // Fixtures carry timestamps from 2023–2024: keep everything.
    let opts = StoreOptions {
        retention: kube_insight_store::Retention {
            metrics: std::time::Duration::from_secs(100 * 365 * 86_400),
            ..Default::default()
        },
        ..Default::default()
    };
    let store = kube_insight_store_sqlite::open(&url, opts).await.unwrap();
    (store, dir)
}

/// Serves `app` on 127.0.0.1:0 until the test ends.
pub async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    addr
}

/// Every stored series matching `__name__=name`, all time.
pub async fn read(store: &DynStore, name: &str) -> Vec<TimeSeries> {
    store
        .select(&SelectQuery {
            matchers: vec![Matcher::eq("__name__", name)],
            range: TimeRange::new(0, i64::MAX / 2).unwrap(),
            max_series: 1_000_000,
            max_samples: 100_000_000,
            resolution: Default::default(),
        })
        .await
        .unwrap()
}

pub fn series(name: &str, extra: &[(&str, &str)], samples: &[(i64, f64)]) -> TimeSeries {
    let mut pairs = vec![("__name__", name)];
    pairs.extend_from_slice(extra);
    TimeSeries::new(
        Labels::from_pairs(pairs),
        samples.iter().map(|&(t, v)| Sample::new(t, v)).collect(),
    )
}
