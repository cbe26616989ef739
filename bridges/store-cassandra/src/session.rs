//! The connection: session set-up (auth, TLS, token- and DC-aware load
//! balancing), a cache of prepared statements, bounded in-flight requests
//! and the mapping of driver errors onto [`kube_insight_store::Error`].

use super::config::{CassandraConfig, RetryMode};
use futures::TryStreamExt;
use kube_insight_store::error::{Error, Result};
use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session::Session;
use scylla::client::session_builder::SessionBuilder;
use scylla::errors::{
    DbError, ExecutionError, PagerExecutionError, PrepareError, RequestAttemptError,
};
use scylla::policies::load_balancing::DefaultPolicy;
use scylla::policies::retry::{DefaultRetryPolicy, FallthroughRetryPolicy, RetryPolicy};
use scylla::policies::timestamp_generator::MonotonicTimestampGenerator;
use scylla::response::query_result::QueryResult;
use scylla::serialize::row::SerializeRow;
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::prepared::PreparedStatement;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Cassandra warns at 5 KiB per batch; ours stay under this many bytes of
/// bound values.
pub const MAX_BATCH_BYTES: usize = 4 * 1024;

/// A statement with its bound values, for [`Db::send`].
pub trait Statement: SerializeRow + Sync {
    fn cql(&self) -> &'static str;
}

/// One session for the whole process, shared by every signal.
pub struct Db {
    pub session: Session,
    pub config: CassandraConfig,
    prepared: RwLock<HashMap<&'static str, PreparedStatement>>,
    slots: Arc<Semaphore>,
    /// Requests sent (a batch counts once), for benchmarks and `/metrics`.
    pub counts: RequestCounts,
}

/// CQL requests sent by this process.
#[derive(Debug, Default)]
pub struct RequestCounts {
    pub writes: AtomicU64,
    pub reads: AtomicU64,
}

impl RequestCounts {
    /// (writes, reads) so far.
    pub fn get(&self) -> (u64, u64) {
        (
            self.writes.load(Ordering::Relaxed),
            self.reads.load(Ordering::Relaxed),
        )
    }
}

impl Db {
    /// Connects to the cluster; errors name the hosts and the cause.
    pub async fn connect(config: CassandraConfig) -> Result<Db> {
        let mut policy = DefaultPolicy::builder().token_aware(true);
        if let Some(dc) = &config.dc {
            policy = policy
                .prefer_datacenter(dc.clone())
                .permit_dc_failover(false);
        }
        let retry: Arc<dyn RetryPolicy> = match config.retry {
            RetryMode::Default => Arc::new(DefaultRetryPolicy::new()),
            RetryMode::Never => Arc::new(FallthroughRetryPolicy::new()),
        };
        let profile = ExecutionProfile::builder()
            .consistency(config.consistency)
            .request_timeout(Some(config.request_timeout))
            .load_balancing_policy(policy.build())
            .retry_policy(retry)
            .build();
        let mut builder = SessionBuilder::new()
            .known_nodes(&config.hosts)
            .connection_timeout(config.connect_timeout)
            .default_execution_profile_handle(profile.into_handle())
            .compression(Some(scylla::frame::Compression::Lz4))
            // Write times from this process's clock (µs, increasing), the
            // clock maintenance reads when it deletes `USING TIMESTAMP` of
            // its start: with the server's clock instead, a skew between
            // them would let such a delete shadow rows written after it.
            .timestamp_generator(Arc::new(MonotonicTimestampGenerator::new()));
        if let (Some(u), Some(p)) = (&config.auth.username, &config.auth.password) {
            builder = builder.user(u.clone(), p.clone());
        }
        if let Some(ca) = &config.auth.ca_file {
            builder = builder.tls_context(Some(tls(ca)?));
        }
        if !config.address_map.is_empty() {
            builder = builder.address_translator(Arc::new(AddressMap(config.address_map.clone())));
        }
        let session = builder.build().await.map_err(|e| {
            Error::Unavailable(format!(
                "cannot connect to cassandra at {}: {e}; check the hosts of KUBE_INSIGHT_STORE, that port 9042 is reachable, and the credentials",
                config.hosts.join(",")
            ))
        })?;
        let slots = Arc::new(Semaphore::new(config.max_in_flight));
        Ok(Db {
            session,
            config,
            prepared: RwLock::new(HashMap::new()),
            slots,
            counts: RequestCounts::default(),
        })
    }

    /// Selects the keyspace for every later statement.
    pub async fn use_keyspace(&self) -> Result<()> {
        self.session
            .use_keyspace(&self.config.keyspace, false)
            .await
            .map_err(|e| {
                Error::Unavailable(format!(
                    "cassandra keyspace {:?} is not usable ({e}); run `kube-insight schema apply` first",
                    self.config.keyspace
                ))
            })
    }

    /// The prepared form of a statement, prepared once per process. Every
    /// statement we run is idempotent (no counters, no list appends), so
    /// the driver may retry and speculate.
    pub async fn prepared(&self, cql: &'static str) -> Result<PreparedStatement> {
        if let Some(p) = read(&self.prepared).get(cql) {
            return Ok(p.clone());
        }
        let mut p = self
            .session
            .prepare(cql)
            .await
            .map_err(|e| map_prepare_err(cql, e))?;
        p.set_is_idempotent(true);
        write(&self.prepared).insert(cql, p.clone());
        Ok(p)
    }

    /// Waits for an in-flight slot; a write that cannot get one within the
    /// enqueue timeout is refused as overloaded (the push endpoints answer
    /// 503 and the sender retries), so a slow cluster never grows memory.
    pub async fn slot(&self, waiting: bool) -> Result<OwnedSemaphorePermit> {
        let acquire = self.slots.clone().acquire_owned();
        let permit = if waiting {
            acquire.await.ok()
        } else {
            match tokio::time::timeout(self.config.enqueue_timeout, acquire).await {
                Ok(p) => p.ok(),
                Err(_) => {
                    return Err(Error::Overloaded(format!(
                        "cassandra is slow: all {} in-flight requests are busy",
                        self.config.max_in_flight
                    )))
                }
            }
        };
        permit.ok_or_else(|| Error::Unavailable("the cassandra session is closed".into()))
    }

    /// Runs one statement (unpaged: for writes and single-partition reads
    /// bounded by LIMIT or by the partition's size).
    pub async fn exec(&self, cql: &'static str, values: impl SerializeRow) -> Result<QueryResult> {
        let p = self.prepared(cql).await?;
        let _slot = self.slot(true).await?;
        self.counts.reads.fetch_add(1, Ordering::Relaxed);
        self.session
            .execute_unpaged(&p, values)
            .await
            .map_err(|e| map_err(cql, e))
    }

    /// A write: like [`Db::exec`], but refused as overloaded when no slot
    /// frees up in time.
    pub async fn write(&self, cql: &'static str, values: impl SerializeRow) -> Result<()> {
        let p = self.prepared(cql).await?;
        let _slot = self.slot(false).await?;
        self.counts.writes.fetch_add(1, Ordering::Relaxed);
        self.session
            .execute_unpaged(&p, values)
            .await
            .map_err(|e| map_err(cql, e))?;
        Ok(())
    }

    /// An unlogged batch of one statement into one partition (the caller
    /// groups rows by partition and keeps the batch under
    /// [`MAX_BATCH_BYTES`]).
    pub async fn write_batch<V: SerializeRow>(
        &self,
        cql: &'static str,
        rows: Vec<V>,
    ) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        if rows.len() == 1 {
            let mut rows = rows;
            if let Some(row) = rows.pop() {
                return self.write(cql, row).await;
            }
            return Ok(());
        }
        let p = self.prepared(cql).await?;
        self.unlogged_batch(vec![p; rows.len()], cql, rows).await
    }

    /// One request of a write plan: a single statement, or an unlogged
    /// batch of statements that the caller grouped into one partition and
    /// kept under [`MAX_BATCH_BYTES`] (`metrics::plan`).
    pub async fn send<S: Statement>(&self, rows: &[S]) -> Result<()> {
        let first = match rows {
            [] => return Ok(()),
            [one] => return self.write(one.cql(), one).await,
            [first, ..] => first.cql(),
        };
        let mut statements = Vec::with_capacity(rows.len());
        for r in rows {
            statements.push(self.prepared(r.cql()).await?);
        }
        self.unlogged_batch(statements, first, rows).await
    }

    /// Sends `values` (one row per statement) as one unlogged, idempotent
    /// batch; refused as overloaded when no in-flight slot frees up in time.
    async fn unlogged_batch<V: scylla::serialize::batch::BatchValues>(
        &self,
        statements: Vec<PreparedStatement>,
        cql: &'static str,
        values: V,
    ) -> Result<()> {
        let mut batch = Batch::new(BatchType::Unlogged);
        for p in statements {
            batch.append_statement(p);
        }
        batch.set_is_idempotent(true);
        let _slot = self.slot(false).await?;
        self.counts.writes.fetch_add(1, Ordering::Relaxed);
        self.session
            .batch(&batch, values)
            .await
            .map_err(|e| map_err(cql, e))?;
        Ok(())
    }

    /// Every row of a query, page by page (for partitions that may be
    /// large). `max_rows` bounds memory: more is [`Error::LimitExceeded`].
    pub async fn rows<R>(
        &self,
        cql: &'static str,
        values: impl SerializeRow,
        max_rows: usize,
        what: &'static str,
    ) -> Result<Vec<R>>
    where
        R: for<'f, 'm> scylla::deserialize::row::DeserializeRow<'f, 'm> + Send + 'static,
    {
        let mut p = self.prepared(cql).await?;
        p.set_page_size(5_000);
        let _slot = self.slot(true).await?;
        self.counts.reads.fetch_add(1, Ordering::Relaxed);
        let pager = self
            .session
            .execute_iter(p, values)
            .await
            .map_err(|e| map_pager_err(cql, e))?;
        let mut stream = pager
            .rows_stream::<R>()
            .map_err(|e| Error::Cassandra(format!("{cql:?}: unexpected columns: {e}")))?;
        let mut out = Vec::new();
        while let Some(row) = stream.try_next().await.map_err(|e| {
            Error::Unavailable(format!(
                "cassandra: {e} (statement {:?})",
                cql.chars().take(80).collect::<String>()
            ))
        })? {
            if out.len() >= max_rows {
                return Err(Error::LimitExceeded {
                    what,
                    limit: max_rows,
                });
            }
            out.push(row);
        }
        Ok(out)
    }
}

/// How far behind this process's clock another writer's may be. NTP keeps
/// pods within milliseconds; a minute is a wide margin.
pub const WRITER_CLOCK_SKEW_US: i64 = 60_000_000;

/// The write time for a maintenance delete that must shadow rows read
/// before it and nothing written after, by any process: this process's
/// clock in µs (the clock of its write times, see [`Db::connect`]) less
/// [`WRITER_CLOCK_SKEW_US`]. A row another writer stored during the pass,
/// with a clock up to that much behind, is newer than the tombstone and
/// survives to the next pass; a row read less than that before the pass
/// survives too, and is merged again (merges are idempotent).
pub fn maintenance_delete_time_us() -> i64 {
    let us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX));
    us.saturating_sub(WRITER_CLOCK_SKEW_US)
}

/// The rows of an unpaged result.
pub fn result_rows<R>(cql: &'static str, r: QueryResult) -> Result<Vec<R>>
where
    R: for<'f, 'm> scylla::deserialize::row::DeserializeRow<'f, 'm>,
{
    let rows = r
        .into_rows_result()
        .map_err(|e| Error::Cassandra(format!("{cql:?} returned no rows: {e}")))?;
    let it = rows
        .rows::<R>()
        .map_err(|e| Error::Cassandra(format!("{cql:?}: unexpected columns: {e}")))?;
    it.collect::<std::result::Result<Vec<R>, _>>()
        .map_err(|e| Error::Corrupt(format!("{cql:?}: {e}")))
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

/// Driver errors: what the same request may survive later (timeouts,
/// unavailable or overloaded replicas, broken connections) is retryable
/// ([`Error::Unavailable`], 503 at the push endpoints); a statement the
/// server refuses is not.
pub fn map_err(cql: &str, e: ExecutionError) -> Error {
    let permanent = match &e {
        ExecutionError::BadQuery(_) => true,
        ExecutionError::PrepareError(p) => {
            return map_prepare_err(cql, p.clone());
        }
        ExecutionError::LastAttemptError(RequestAttemptError::DbError(db, _)) => matches!(
            db,
            DbError::SyntaxError
                | DbError::Invalid
                | DbError::Unauthorized
                | DbError::AuthenticationError
                | DbError::ConfigError
        ),
        _ => false,
    };
    let short: String = cql.chars().take(80).collect();
    if permanent {
        Error::Cassandra(format!("{short:?}: {e}"))
    } else {
        Error::Unavailable(format!("cassandra: {e} (statement {short:?})"))
    }
}

/// A statement the server rejects is a bug (permanent); a prepare that
/// failed because no node could be reached is retryable, like any request
/// while Cassandra is down.
fn map_prepare_err(cql: &str, e: PrepareError) -> Error {
    let rejected = match &e {
        PrepareError::AllAttemptsFailed {
            first_attempt: RequestAttemptError::DbError(db, _),
        } => matches!(
            db,
            DbError::SyntaxError | DbError::Invalid | DbError::Unauthorized | DbError::ConfigError
        ),
        PrepareError::PreparedStatementIdsMismatch => true,
        _ => false,
    };
    if rejected {
        Error::Cassandra(format!("preparing {cql:?}: {e}"))
    } else {
        Error::Unavailable(format!("cassandra: preparing {cql:?}: {e}"))
    }
}

fn map_pager_err(cql: &str, e: PagerExecutionError) -> Error {
    match e {
        PagerExecutionError::NextPageError(n) => Error::Unavailable(format!(
            "cassandra: {n} (statement {:?})",
            cql.chars().take(80).collect::<String>()
        )),
        PagerExecutionError::PrepareError(p) => map_prepare_err(cql, p),
        other => Error::Unavailable(format!("cassandra: {other} (statement {cql:?})")),
    }
}

/// TLS verified against the CA bundle of `KUBE_INSIGHT_CASSANDRA_CA_FILE`.
fn tls(ca: &std::path::Path) -> Result<Arc<rustls::ClientConfig>> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let bad = |why: String| Error::InvalidUrl {
        url: format!("KUBE_INSIGHT_CASSANDRA_CA_FILE={}", ca.display()),
        reason: why,
    };
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(ca)
        .map_err(|e| bad(format!("cannot read the CA file: {e}")))?;
    for cert in certs {
        let cert = cert.map_err(|e| bad(format!("not a PEM certificate: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| bad(format!("unusable CA certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(bad("the file holds no PEM certificate".into()));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(format!("tls set-up: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// `address_map`: mapped broadcast addresses are replaced, the others are
/// used as the nodes broadcast them.
struct AddressMap(HashMap<std::net::SocketAddr, std::net::SocketAddr>);

#[async_trait::async_trait]
impl scylla::policies::address_translator::AddressTranslator for AddressMap {
    async fn translate_address(
        &self,
        peer: &scylla::policies::address_translator::UntranslatedPeer,
    ) -> std::result::Result<std::net::SocketAddr, scylla::errors::TranslationError> {
        let from = peer.untranslated_address();
        Ok(self.0.get(&from).copied().unwrap_or(from))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ca_file_errors_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.pem");
        let e = tls(&missing).unwrap_err().to_string();
        assert!(e.contains("nope.pem") && e.contains("cannot read"), "{e}");
        let empty = dir.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let e = tls(&empty).unwrap_err().to_string();
        assert!(e.contains("no PEM certificate"), "{e}");
    }

    #[test]
    fn timeouts_are_retryable_syntax_errors_are_not() {
        let e = map_err(
            "SELECT 1",
            ExecutionError::RequestTimeout(std::time::Duration::from_secs(1)),
        );
        assert!(e.is_retryable(), "{e}");
        let e = map_err(
            "SELEC 1",
            ExecutionError::LastAttemptError(RequestAttemptError::DbError(
                DbError::SyntaxError,
                "line 1".into(),
            )),
        );
        assert!(!e.is_retryable(), "{e}");
        assert!(e.to_string().contains("SELEC 1"), "{e}");
        let e = map_err(
            "INSERT",
            ExecutionError::LastAttemptError(RequestAttemptError::DbError(
                DbError::Overloaded,
                "busy".into(),
            )),
        );
        assert!(e.is_retryable(), "{e}");
    }
}
