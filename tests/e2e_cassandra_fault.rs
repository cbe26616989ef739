//! Cassandra stopped mid-ingest: the real binary on a real Cassandra, reached
//! through a TCP proxy that the test cuts and restores.
//!
//! Set `KUBE_INSIGHT_TEST_CASSANDRA=host:port` (Apache Cassandra 4.0 or
//! later); without it the test says it was skipped. It uses a keyspace of
//! its own, dropped at the end.
//!
//! The proxy stands in for the server: while it is down every connection of
//! the driver is cut and new ones are refused, which is what a stopped node
//! looks like from kube-insight. The driver learns the node's address from
//! `system.local`, so the store URL maps that address to the proxy
//! (`address_map`), or the driver would bypass it.
//!
//! Asserted, as a Prometheus remote-write sender sees it:
//! - while Cassandra is away, pushes answer 503 (or 429), never 2xx or 400,
//!   and the sender keeps the batch and retries it;
//! - when it is back, ingest resumes without a restart of kube-insight;
//! - every sample of every batch is stored exactly once.

// Tests may unwrap: a panic is a failing test with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use kube_insight_core::{Labels, Matcher, Sample, TimeRange, TimeSeries};
use kube_insight_sources::prometheus::remote_write::encode;
use kube_insight_store::{CassandraAuth, Resolution, SelectQuery, StoreOptions};
use kube_insight_store_cassandra::config::CassandraConfig;
use kube_insight_store_cassandra::session::Db;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::KubeInsight;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

const ENV: &str = "KUBE_INSIGHT_TEST_CASSANDRA";
const SERIES: usize = 200;
const BATCHES: i64 = 60;

/// A loopback TCP proxy to `target` that can be cut and restored on the
/// same port.
struct Proxy {
    port: u16,
    target: String,
    accept: Option<JoinHandle<()>>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Proxy {
    async fn start(target: &str) -> Proxy {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut p = Proxy {
            port: l.local_addr().unwrap().port(),
            target: target.to_string(),
            accept: None,
            conns: Arc::default(),
        };
        p.serve(l);
        p
    }

    fn serve(&mut self, l: TcpListener) {
        let target = self.target.clone();
        let conns = self.conns.clone();
        self.accept = Some(tokio::spawn(async move {
            while let Ok((mut inbound, _)) = l.accept().await {
                let target = target.clone();
                let h = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                conns.lock().unwrap().push(h);
            }
        }));
    }

    /// Cuts every connection and refuses new ones.
    fn cut(&mut self) {
        if let Some(a) = self.accept.take() {
            a.abort();
        }
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    /// Listens again on the same port.
    async fn restore(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        let l = loop {
            match TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    eprintln!("proxy: rebinding port {}: {e}", self.port);
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => panic!("proxy: cannot listen on port {} again: {e}", self.port),
            }
        };
        self.serve(l);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
    }
}

fn config(url: &str, hosts: Vec<String>, keyspace: &str) -> CassandraConfig {
    CassandraConfig::from_url(
        url,
        hosts,
        keyspace.to_string(),
        &[],
        CassandraAuth::default(),
    )
    .unwrap()
}

fn batch(k: i64, t0: i64) -> (Vec<u8>, usize) {
    let series: Vec<TimeSeries> = (0..SERIES)
        .map(|i| {
            TimeSeries::new(
                Labels::from_pairs([
                    ("__name__", "container_cpu_usage_seconds_total"),
                    ("namespace", "shop"),
                    ("pod", &format!("api-{i}")),
                    ("container", "api"),
                ]),
                vec![Sample::new(t0 + k * 1_000, (k * 10 + i as i64) as f64)],
            )
        })
        .collect();
    (encode(&series, &[]).unwrap(), series.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cassandra_outage_mid_ingest_answers_503_and_loses_nothing() {
    let Ok(host) = std::env::var(ENV) else {
        eprintln!(
            "skipped: set {ENV}=host:port (Apache Cassandra 4.0+) to run the cassandra fault test"
        );
        return;
    };
    let _ = rustls::crypto::ring::default_provider().install_default();
    let keyspace = format!(
        "ki_fault_{}_{}",
        std::process::id(),
        kube_insight_core::time::now_ms() % 1_000_000_000
    );
    // The node's broadcast address, as the driver will learn it.
    let direct = Db::connect(config(
        &format!("cassandra://{host}/{keyspace}"),
        vec![host.clone()],
        &keyspace,
    ))
    .await
    .unwrap();
    let (rpc,): (IpAddr,) = direct
        .session
        .query_unpaged("SELECT rpc_address FROM system.local WHERE key='local'", ())
        .await
        .unwrap()
        .into_rows_result()
        .unwrap()
        .single_row()
        .unwrap();
    let mut proxy = Proxy::start(&host).await;
    let via = SocketAddr::new(rpc, proxy.port);
    let url = format!(
        "cassandra://127.0.0.1:{port}/{keyspace}?request_timeout=3s&connect_timeout=2s&enqueue_timeout=1s&address_map={via}=127.0.0.1:{port}",
        port = proxy.port
    );
    let dir = tempfile::tempdir().unwrap();
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_kube-insight"))
        .args(["schema", "apply"])
        .env("KUBE_INSIGHT_STORE", &url)
        .status()
        .unwrap();
    assert!(status.success(), "schema apply on {url}");
    let env = [
        ("KUBE_INSIGHT_TARGETS", "metrics".to_string()),
        ("KUBE_INSIGHT_STORE", url.clone()),
    ];
    let ki = KubeInsight::start(dir.path(), &env, None).await;
    let push = format!("{}/ingest/prometheus/api/v1/write", ki.ingest);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();

    let t0 = (kube_insight_core::time::now_ms() - 3_600_000) / 1_000 * 1_000;
    let mut refused = 0usize;
    let mut outage: Option<Instant> = None;
    let mut resumed_after: Option<Duration> = None;
    let mut sent = 0usize;
    for k in 0..BATCHES {
        if k == BATCHES / 3 {
            proxy.cut();
            outage = Some(Instant::now());
            eprintln!("cassandra cut after {k} batches");
        }
        let (body, n) = batch(k, t0);
        let started = Instant::now();
        loop {
            let r = client
                .post(&push)
                .header("content-encoding", "snappy")
                .header("content-type", "application/x-protobuf")
                .header("x-prometheus-remote-write-version", "0.1.0")
                .body(body.clone())
                .send()
                .await;
            let code = match &r {
                Ok(r) => r.status().as_u16(),
                Err(e) => panic!("push of batch {k} failed at the HTTP level: {e}"),
            };
            if (200..300).contains(&code) {
                if let Some(at) = outage.filter(|_| refused > 0 && resumed_after.is_none()) {
                    resumed_after = Some(at.elapsed());
                }
                break;
            }
            assert!(
                code == 503 || code == 429,
                "batch {k}: status {code}; only 503/429 make Prometheus keep and retry a batch"
            );
            refused += 1;
            // While cut: restore after a few seconds of refusals.
            if let Some(at) = outage {
                if at.elapsed() > Duration::from_secs(5) && proxy.accept.is_none() {
                    proxy.restore().await;
                    eprintln!("cassandra restored after {refused} refused pushes");
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "batch {k} still refused after 120 s (proxy restored: {}); kube-insight log:\n{}",
                proxy.accept.is_some(),
                ki.proc.log_text()
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        sent += n;
    }
    assert!(
        refused > 0,
        "no push was refused while cassandra was cut; the outage was not observed"
    );
    eprintln!("refused pushes: {refused}; ingest resumed {resumed_after:?} after the cut");

    // Everything accepted is stored, once.
    let store = kube_insight_store_cassandra::open(
        &format!("cassandra://{host}/{keyspace}"),
        StoreOptions::default(),
    )
    .await
    .unwrap();
    let got = store
        .select(&SelectQuery {
            matchers: vec![Matcher::eq("__name__", "container_cpu_usage_seconds_total")],
            range: TimeRange::all(),
            max_series: 10_000,
            max_samples: 1_000_000,
            resolution: Resolution::Raw,
        })
        .await
        .unwrap();
    assert_eq!(got.len(), SERIES);
    let stored: usize = got.iter().map(|s| s.samples.len()).sum();
    assert_eq!(stored, sent, "every accepted sample is stored exactly once");
    for s in &got {
        let pod = s.labels.get("pod").unwrap();
        let i: i64 = pod.trim_start_matches("api-").parse().unwrap();
        for (k, x) in s.samples.iter().enumerate() {
            assert_eq!(x.timestamp_ms, t0 + k as i64 * 1_000, "{pod}");
            assert_eq!(x.value, (k as i64 * 10 + i) as f64, "{pod}");
        }
    }
    drop(ki);
    if let Err(e) = direct
        .session
        .query_unpaged(format!("DROP KEYSPACE IF EXISTS {keyspace}"), ())
        .await
    {
        eprintln!("could not drop keyspace {keyspace}: {e}");
    }
}
