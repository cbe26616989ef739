//! The cassandra backend against a real server: the shared conformance
//! suite, plus what only this backend shows (schema lock and version,
//! connection errors).
//!
//! Set `KUBE_INSIGHT_TEST_CASSANDRA=host:port` (Apache Cassandra 4.0 or
//! later, protocol v4) to run the suite; each case gets its own keyspace,
//! dropped afterwards. Without it, every case prints that it was skipped.
//! The connection-error tests need no server and always run.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is a failing test

use kube_insight_store::{CassandraAuth, DynStore, Error, Store, StoreOptions};
use kube_insight_store_cassandra::config::CassandraConfig;
use kube_insight_store_cassandra::session::Db;
use kube_insight_store_cassandra::CassandraStore;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

const ENV: &str = "KUBE_INSIGHT_TEST_CASSANDRA";

/// Schema changes of the cases run one at a time: concurrent DDL is what
/// corrupts Cassandra schemas, in tests as in production.
fn ddl_lock() -> &'static tokio::sync::Mutex<()> {
    static L: OnceLock<tokio::sync::Mutex<()>> = OnceLock::new();
    L.get_or_init(|| tokio::sync::Mutex::new(()))
}

fn server() -> Option<String> {
    std::env::var(ENV).ok().filter(|s| !s.is_empty())
}

fn config(host: &str, case: &str) -> CassandraConfig {
    static N: AtomicUsize = AtomicUsize::new(0);
    let short: String = case
        .trim_start_matches("case_")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .take(20)
        .collect();
    let keyspace = format!(
        "ki_{}_{}_{short}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let url = format!("cassandra://{host}/{keyspace}");
    CassandraConfig::from_url(
        &url,
        vec![host.to_string()],
        keyspace,
        &[],
        CassandraAuth::default(),
    )
    .unwrap()
}

/// Drops the case's keyspace when the case ends (from its own thread and
/// runtime: the case's runtime is shutting down by then).
struct DropKeyspace(CassandraConfig);

impl Drop for DropKeyspace {
    fn drop(&mut self) {
        let mut config = self.0.clone();
        // DROP KEYSPACE snapshots every table first (`auto_snapshot`, on by
        // default in Cassandra 4.0): slower than the default 10 s timeout
        // on a busy test node.
        config.request_timeout = std::time::Duration::from_secs(60);
        let done = std::thread::spawn(move || {
            let _g = ddl_lock().blocking_lock();
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let ks = config.keyspace.clone();
                match Db::connect(config).await {
                    Ok(db) => {
                        let cql = format!("DROP KEYSPACE IF EXISTS {ks}");
                        if let Err(e) = db.session.query_unpaged(cql, ()).await {
                            eprintln!("could not drop keyspace {ks}: {e}");
                        }
                    }
                    Err(e) => eprintln!("could not drop keyspace {ks}: {e}"),
                }
            });
        });
        let _ = done.join();
    }
}

/// A store in a keyspace of its own, or `None` (said) without a server.
async fn fresh_store(
    case: &str,
    options: StoreOptions,
) -> Option<(Arc<CassandraStore>, DropKeyspace)> {
    let Some(host) = server() else {
        eprintln!("skipped {case}: set {ENV}=host:port to run the cassandra conformance suite");
        return None;
    };
    let config = config(&host, case);
    let _g = ddl_lock().lock().await;
    let store = CassandraStore::open(config.clone(), options, true)
        .await
        .unwrap();
    Some((Arc::new(store), DropKeyspace(config)))
}

async fn fresh(case: &str, options: StoreOptions) -> Option<(DynStore, DropKeyspace)> {
    let (s, guard) = fresh_store(case, options).await?;
    Some((s, guard))
}

mod conformance {
    use super::*;
    kube_insight_store::store_conformance_suite!(optional fresh);
}

async fn fresh_logs(
    case: &str,
    options: StoreOptions,
) -> Option<(
    kube_insight_store::conformance_logs::DynLogStore,
    DropKeyspace,
)> {
    let (s, guard) = fresh_store(case, options).await?;
    Some((s.logs(), guard))
}

mod logs_conformance {
    use super::*;
    kube_insight_store::log_store_conformance_suite!(optional fresh_logs);
}

async fn fresh_events(
    case: &str,
    options: StoreOptions,
) -> Option<(
    kube_insight_store::conformance_events::DynEventStore,
    DropKeyspace,
)> {
    let (s, guard) = fresh_store(case, options).await?;
    Some((s.events(), guard))
}

mod events_conformance {
    use super::*;
    kube_insight_store::event_store_conformance_suite!(optional fresh_events);
}

async fn fresh_topology(
    case: &str,
    options: StoreOptions,
) -> Option<(kube_insight_store::DynTopologyStore, DropKeyspace)> {
    let (s, guard) = fresh_store(case, options).await?;
    Some((s.topology(), guard))
}

mod topology_conformance {
    use super::*;
    kube_insight_store::topology_store_conformance_suite!(optional fresh_topology);
}

/// `schema apply` twice gives one version; a process that only checks
/// opens the same keyspace; a keyspace without the schema is refused with
/// the command to run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_is_versioned_and_checked() {
    let Some(host) = server() else {
        eprintln!("skipped schema_is_versioned_and_checked: set {ENV}=host:port");
        return;
    };
    let config = config(&host, "schema");
    let _drop = DropKeyspace(config.clone());
    {
        let _g = ddl_lock().lock().await;
        let missing = CassandraStore::open(config.clone(), StoreOptions::default(), false).await;
        let e = missing.err().expect("no keyspace yet").to_string();
        assert!(e.contains("schema apply"), "{e}");
        let store = CassandraStore::open(config.clone(), StoreOptions::default(), true)
            .await
            .unwrap();
        let v = store.apply_schema().await.unwrap();
        assert_eq!(store.check_schema().await.unwrap(), v);
    }
    let reader = CassandraStore::open(config, StoreOptions::default(), false)
        .await
        .unwrap();
    assert_eq!(reader.backend(), "cassandra");
    reader.ping().await.unwrap();
}

/// `schema apply` over a keyspace of the previous version: the keyspace is
/// set up, then put back to what version N-1 left (its recorded version,
/// and without a table added since: the last of `TABLES`), with data in a
/// table both versions have. Apply brings it to this version, creates the
/// table, keeps the data, and readers open it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_apply_upgrades_a_keyspace_of_the_previous_version() {
    use kube_insight_core::{Labels, Matcher, Sample, TimeRange, TimeSeries};
    use kube_insight_store::{MetricBatch, MetricStore, Resolution, SelectQuery};
    use kube_insight_store_cassandra::schema::{SCHEMA_VERSION, TABLES};
    let Some(host) = server() else {
        eprintln!(
            "skipped schema_apply_upgrades_a_keyspace_of_the_previous_version: set {ENV}=host:port"
        );
        return;
    };
    let config = config(&host, "upgrade");
    let _drop = DropKeyspace(config.clone());
    let _g = ddl_lock().lock().await;
    let store = CassandraStore::open(config.clone(), StoreOptions::default(), true)
        .await
        .unwrap();
    let now = kube_insight_core::time::now_ms();
    let series = TimeSeries::new(
        Labels::from_pairs([
            ("__name__", "up".to_string()),
            ("job", "upgrade".to_string()),
        ]),
        vec![Sample::new(now - 60_000, 1.0), Sample::new(now, 1.0)],
    );
    store
        .write_samples(MetricBatch {
            cluster: "prod".into(),
            series: vec![series],
        })
        .await
        .unwrap();
    let db = Db::connect(config.clone()).await.unwrap();
    db.use_keyspace().await.unwrap();
    let added = TABLES.last().unwrap().name;
    for cql in [
        format!("DROP TABLE {added}"),
        format!(
            "INSERT INTO schema_meta (name, version) VALUES ('version', {})",
            SCHEMA_VERSION - 1
        ),
    ] {
        db.session.query_unpaged(cql, ()).await.unwrap();
        db.session.await_schema_agreement().await.unwrap();
    }
    let stale = CassandraStore::open(config.clone(), StoreOptions::default(), false).await;
    assert!(
        matches!(stale, Err(Error::SchemaMismatch { .. })),
        "readers wait for the Job"
    );
    assert_eq!(store.apply_schema().await.unwrap(), SCHEMA_VERSION as u32);
    let reader = CassandraStore::open(config, StoreOptions::default(), false)
        .await
        .unwrap();
    assert_eq!(reader.check_schema().await.unwrap(), SCHEMA_VERSION as u32);
    let q = format!("SELECT count(*) FROM {added}");
    db.session.query_unpaged(q, ()).await.unwrap();
    let read = reader
        .select(&SelectQuery {
            matchers: vec![Matcher::eq("job", "upgrade")],
            range: TimeRange::new(now - 120_000, now + 1).unwrap(),
            max_series: 10,
            max_samples: 100,
            resolution: Resolution::Raw,
        })
        .await
        .unwrap();
    assert_eq!(read.len(), 1);
    assert_eq!(
        read[0].samples.len(),
        2,
        "the data written before the upgrade"
    );
}

/// A keyspace made with `simple:1` (before the manifests rendered a
/// replication) is altered by the next `schema apply` with another one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schema_apply_alters_a_changed_replication() {
    use kube_insight_store_cassandra::config::Replication;
    let Some(host) = server() else {
        eprintln!("skipped schema_apply_alters_a_changed_replication: set {ENV}=host:port");
        return;
    };
    let config = config(&host, "replication");
    let _drop = DropKeyspace(config.clone());
    let _g = ddl_lock().lock().await;
    assert_eq!(config.replication, Replication::Simple(1));
    CassandraStore::open(config.clone(), StoreOptions::default(), true)
        .await
        .unwrap();
    // A single test node: a factor of 2 is accepted (with a warning) and
    // is what system_schema then says.
    let mut two = config.clone();
    two.replication = Replication::Simple(2);
    CassandraStore::open(two.clone(), StoreOptions::default(), true)
        .await
        .unwrap();
    let db = Db::connect(two).await.unwrap();
    let r = db
        .session
        .query_unpaged(
            "SELECT replication FROM system_schema.keyspaces WHERE keyspace_name = ?",
            (config.keyspace.to_ascii_lowercase(),),
        )
        .await
        .unwrap()
        .into_rows_result()
        .unwrap();
    let (stored,): (std::collections::HashMap<String, String>,) = r.first_row().unwrap();
    assert_eq!(
        stored.get("replication_factor").map(String::as_str),
        Some("2")
    );
}

/// A host with nothing listening: the error names it, says what to check,
/// and is retryable (the push endpoints answer 503 while Cassandra is down).
#[tokio::test]
async fn connection_errors_name_the_host() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    }; // closed again: nothing listens there now
    let host = format!("127.0.0.1:{port}");
    let mut config = config(&host, "unreachable");
    config.connect_timeout = std::time::Duration::from_secs(2);
    let e = match CassandraStore::open(config, StoreOptions::default(), false).await {
        Ok(_) => panic!("connected to a closed port"),
        Err(e) => e,
    };
    let text = e.to_string();
    assert!(text.contains(&host), "{text}");
    assert!(text.contains("KUBE_INSIGHT_STORE"), "{text}");
    assert!(matches!(e, Error::Unavailable(_)), "{e:?}");
    assert!(e.is_retryable());
}

/// The store URL goes through `open`: parameters are checked before any
/// connection is tried.
#[tokio::test]
async fn bad_urls_are_refused_before_connecting() {
    for (url, needle) in [
        ("cassandra://127.0.0.1:1/ks?consistency=most", "consistency"),
        ("cassandra://127.0.0.1:1/ks?replication=eu:3", "dc=NAME"),
        ("cassandra://127.0.0.1:1/k-s", "keyspace"),
    ] {
        let e = match kube_insight_store_cassandra::open(url, StoreOptions::default()).await {
            Ok(_) => panic!("{url} opened"),
            Err(e) => e.to_string(),
        };
        assert!(e.contains(needle), "{url}: {e}");
    }
}

/// Read-after-write under load: every sample a write answered `Ok` for is
/// in the answer of the next `select`, made by another store instance (no
/// shared cache, as another replica of kube-insight would be) at the
/// configured consistency (`local_quorum` by default), while the box's
/// cores are kept busy and eight writers push at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_written_sample_is_read_back_at_once_under_load() {
    use kube_insight_core::{Labels, Matcher, Sample, TimeRange, TimeSeries};
    use kube_insight_store::{MetricBatch, MetricStore, Resolution, SelectQuery};
    let Some((writer, guard)) = fresh_store("case_read_after_write", StoreOptions::default()).await
    else {
        return;
    };
    let reader = Arc::new(
        CassandraStore::open(guard.0.clone(), StoreOptions::default(), false)
            .await
            .unwrap(),
    );
    // Keep every core busy for the length of the test.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let burners: Vec<_> = (0..cores * 2)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut x = 1u64;
                while !stop.load(Ordering::Relaxed) {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
                    std::hint::black_box(x);
                }
            })
        })
        .collect();
    let t0 = kube_insight_core::time::now_ms() - 60_000;
    let mut tasks = Vec::new();
    for w in 0..8usize {
        let (writer, reader) = (writer.clone(), reader.clone());
        tasks.push(tokio::spawn(async move {
            let mut misses = Vec::new();
            for step in 0..25i64 {
                let ts = t0 + step * 1_000 + w as i64;
                // 200 series a writer: new ones at the first step, then known.
                let series: Vec<TimeSeries> = (0..200)
                    .map(|i| {
                        let l = Labels::from_pairs([
                            ("__name__", "raw_test".to_string()),
                            ("writer", w.to_string()),
                            ("i", i.to_string()),
                        ]);
                        TimeSeries::new(l, vec![Sample::new(ts, step as f64)])
                    })
                    .collect();
                writer
                    .write_samples(MetricBatch {
                        cluster: "raw".into(),
                        series,
                    })
                    .await
                    .unwrap();
                let i = (step * 37) % 200;
                let got = reader
                    .select(&SelectQuery {
                        matchers: vec![
                            Matcher::eq("__name__", "raw_test"),
                            Matcher::eq("writer", w.to_string()),
                            Matcher::eq("i", i.to_string()),
                        ],
                        range: TimeRange::new(ts, ts).unwrap(),
                        max_series: 10,
                        max_samples: 100,
                        resolution: Resolution::Raw,
                    })
                    .await
                    .unwrap();
                let seen = got
                    .iter()
                    .flat_map(|s| &s.samples)
                    .any(|s| s.timestamp_ms == ts && s.value == step as f64);
                if !seen {
                    misses.push((step, i));
                }
            }
            misses
        }));
    }
    let mut misses = Vec::new();
    for t in tasks {
        misses.extend(t.await.unwrap());
    }
    stop.store(true, Ordering::Relaxed);
    for b in burners {
        b.join().unwrap();
    }
    assert!(
        misses.is_empty(),
        "{} of 200 reads right after an Ok missed their sample: {misses:?}",
        misses.len()
    );
}
