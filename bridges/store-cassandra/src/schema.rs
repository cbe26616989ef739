//! The CQL schema: one versioned list of statements, applied by
//! `kube-insight schema apply` only, under a lightweight-transaction lock,
//! waiting for schema agreement after every statement (concurrent DDL
//! corrupts Cassandra 4.x schemas: "Column family ID mismatch"). Every other
//! process only checks the version.
//!
//! Every table has one TTL (from `KUBE_INSIGHT_RETENTION_*`), uses
//! TimeWindowCompactionStrategy with fewer than 50 windows, and since its
//! data only ever expires, `read_repair = 'NONE'` and a low
//! `gc_grace_seconds`. ARCHITECTURE.md documents each table's partition key,
//! size and queries.

use super::config::Replication;
use super::session::{result_rows, Db};
use kube_insight_core::event::SecretKey;
use kube_insight_store::error::{Error, Result};
use kube_insight_store::StoreOptions;
use std::collections::HashMap;
use std::time::Duration;

/// Bumped whenever a table changes.
pub const SCHEMA_VERSION: i32 = 1;

/// Cassandra refuses TTLs above 20 years.
pub const MAX_TTL_SECS: i32 = 630_720_000;

/// The last expiry Cassandra 4.0 can store (2038-01-19T03:14:06Z, in
/// seconds): with the default `cassandra.expiration_date_overflow_policy`
/// (REJECT) a write whose TTL (or its table's default TTL) ends later is
/// refused (CASSANDRA-14092, `db/ExpirationDateOverflowHandling.java`).
const MAX_EXPIRY_SECS: i64 = i32::MAX as i64 - 1;

/// Kept between a TTL's end and [`MAX_EXPIRY_SECS`], so that a table's
/// default TTL set by `schema apply` stays writable for a year.
const EXPIRY_MARGIN_SECS: i64 = 366 * 86_400;

/// The longest TTL a write may use now: [`MAX_TTL_SECS`], or less when it
/// would end past what Cassandra 4.0 stores (retention of many years).
pub fn max_ttl_secs() -> i32 {
    max_ttl_secs_at(kube_insight_core::time::now_ms())
}

/// [`max_ttl_secs`] at wall-clock time `now_ms`.
pub fn max_ttl_secs_at(now_ms: i64) -> i32 {
    let left = MAX_EXPIRY_SECS - now_ms.div_euclid(1000) - EXPIRY_MARGIN_SECS;
    left.clamp(3600, i64::from(MAX_TTL_SECS)) as i32
}

/// How long the DDL lock is held at most (a crashed Job frees it).
const LOCK_TTL_SECS: i32 = 600;

/// Client-side timeout of one schema statement: Cassandra 4.0 flushes its
/// schema tables on every change (and `DROP KEYSPACE` snapshots every
/// table first), which takes seconds on a busy node, more than an ordinary
/// request may (`request_timeout`, 10 s by default, 3 s in the fault test).
pub const DDL_TIMEOUT: Duration = Duration::from_secs(120);

/// A schema statement, with [`DDL_TIMEOUT`] (or the configured request
/// timeout when that is longer).
pub fn ddl_statement(db: &Db, cql: &str) -> scylla::statement::unprepared::Statement {
    let mut s = scylla::statement::unprepared::Statement::new(cql);
    s.set_request_timeout(Some(DDL_TIMEOUT.max(db.config.request_timeout)));
    s
}

/// A table: its name, its columns and key, and how long its data lives.
pub struct Table {
    pub name: &'static str,
    /// Columns and `PRIMARY KEY (…)`, inside `CREATE TABLE name (…)`.
    pub body: &'static str,
    /// Extra options after `WITH`, e.g. a clustering order.
    pub order: Option<&'static str>,
    pub ttl: fn(&StoreOptions) -> Duration,
}

fn metrics_ttl(o: &StoreOptions) -> Duration {
    o.retention.metrics
}
fn rollups_ttl(o: &StoreOptions) -> Duration {
    o.retention.metrics.max(o.retention.topology)
}
fn logs_ttl(o: &StoreOptions) -> Duration {
    o.retention.logs
}
fn events_ttl(o: &StoreOptions) -> Duration {
    o.retention.events
}
/// Object history outlives the events retention by a day, so a keyframe
/// outlives the versions rebuilt from it (see `events.rs`).
fn objects_ttl(o: &StoreOptions) -> Duration {
    o.retention.events + super::events::OBJECT_TTL_SLACK
}
fn topology_ttl(o: &StoreOptions) -> Duration {
    o.retention.topology
}

/// The head's lifetime: an open window, its grace, and four hours for
/// maintenance to compact it (see `metrics.rs`).
pub fn head_ttl(o: &StoreOptions) -> Duration {
    o.chunk_window + o.head_grace + Duration::from_secs(4 * 3600)
}

/// Every table of the schema.
pub const TABLES: &[Table] = &[
    Table {
        name: "metrics_head",
        body: "cluster text, shard int, bucket bigint, fp bigint, ts bigint, value bigint, \
               PRIMARY KEY ((cluster, shard, bucket), fp, ts)",
        order: None,
        ttl: head_ttl,
    },
    Table {
        name: "metrics_late",
        body: "cluster text, fp bigint, day int, window_start bigint, ts bigint, value bigint, \
               PRIMARY KEY ((cluster, fp, day), window_start, ts)",
        order: None,
        ttl: metrics_ttl,
    },
    Table {
        name: "metrics_chunks",
        body: "cluster text, fp bigint, day int, window_start bigint, data blob, \
               min_ts bigint, max_ts bigint, samples int, \
               PRIMARY KEY ((cluster, fp, day), window_start)",
        order: None,
        ttl: metrics_ttl,
    },
    Table {
        name: "metrics_rollups",
        body: "cluster text, fp bigint, day int, window_start bigint, data blob, \
               PRIMARY KEY ((cluster, fp, day), window_start)",
        order: None,
        ttl: rollups_ttl,
    },
    Table {
        name: "metrics_series",
        body: "cluster text, day int, metric text, fp bigint, labels blob, first_ms bigint, \
               last_ms bigint, PRIMARY KEY ((cluster, day, metric), fp)",
        order: None,
        ttl: metrics_ttl,
    },
    Table {
        name: "metrics_names",
        body: "cluster text, day int, metric text, PRIMARY KEY ((cluster, day), metric)",
        order: None,
        ttl: metrics_ttl,
    },
    Table {
        name: "clusters",
        body: "day int, cluster text, PRIMARY KEY ((day), cluster)",
        order: None,
        ttl: rollups_ttl,
    },
    Table {
        name: "metrics_pending",
        body: "cluster text, day int, window_start bigint, shard int, fp bigint, \
               PRIMARY KEY ((cluster, day), window_start, shard, fp)",
        order: None,
        ttl: metrics_ttl,
    },
    Table {
        name: "log_streams",
        body: "cluster text, day int, namespace text, stream bigint, pod text, container text, \
               workload text, PRIMARY KEY ((cluster, day), namespace, stream)",
        order: None,
        ttl: logs_ttl,
    },
    Table {
        name: "log_blocks",
        body:
            "cluster text, namespace text, hour bigint, slot int, stream bigint, block_id bigint, \
               first_seq bigint, min_ns bigint, max_ns bigint, lines int, raw_bytes int, \
               levels blob, data blob, merged_from blob, \
               PRIMARY KEY ((cluster, namespace, hour, slot), stream, block_id)",
        order: None,
        ttl: logs_ttl,
    },
    Table {
        name: "log_batches",
        body: "cluster text, hash text, at bigint, PRIMARY KEY ((cluster, hash))",
        order: None,
        ttl: |_| Duration::from_secs(6 * 3600),
    },
    Table {
        name: "log_pending",
        body: "cluster text, day int, hour bigint, namespace text, slot int, \
               PRIMARY KEY ((cluster, day), hour, namespace, slot)",
        order: None,
        ttl: logs_ttl,
    },
    Table {
        name: "event_occurrences",
        body: "cluster text, day int, at_ms bigint, uid text, cnt bigint, first_ms bigint, \
               data blob, PRIMARY KEY ((cluster, day), at_ms, uid, cnt)",
        order: None,
        ttl: events_ttl,
    },
    Table {
        name: "event_keys",
        body: "cluster text, uid text, cnt bigint, at_ms bigint, \
               PRIMARY KEY ((cluster, uid), cnt, at_ms)",
        order: None,
        ttl: events_ttl,
    },
    Table {
        name: "event_content",
        body: "cluster text, day int, content bigint, at_ms bigint, uid text, cnt bigint, \
               first_ms bigint, PRIMARY KEY ((cluster, day, content), at_ms, uid, cnt)",
        order: None,
        ttl: events_ttl,
    },
    Table {
        name: "object_versions",
        body: "cluster text, uid text, seq bigint, rv text, at_ms bigint, change text, \
               kf boolean, meta blob, patch blob, frame blob, PRIMARY KEY ((cluster, uid), seq)",
        order: None,
        ttl: objects_ttl,
    },
    Table {
        name: "object_changes",
        body: "cluster text, day int, at_ms bigint, uid text, seq bigint, data blob, \
               PRIMARY KEY ((cluster, day), at_ms, uid, seq)",
        order: None,
        ttl: events_ttl,
    },
    Table {
        name: "object_latest",
        body: "cluster text, resource text, shard int, uid text, namespace text, name text, \
               rv text, vrv text, seq bigint, at_ms bigint, deleted boolean, version_ms bigint, \
               keyframe_ms bigint, object blob, PRIMARY KEY ((cluster, resource, shard), uid)",
        order: None,
        ttl: objects_ttl,
    },
    Table {
        name: "object_names",
        body: "cluster text, object text, uid text, PRIMARY KEY ((cluster, object), uid)",
        order: None,
        ttl: objects_ttl,
    },
    Table {
        name: "watch_checkpoints",
        body: "cluster text, resource text, rv text, at_ms bigint, \
               PRIMARY KEY ((cluster, resource))",
        order: None,
        ttl: events_ttl,
    },
    Table {
        name: "event_catalog",
        body: "scope int, cluster text, day int, resource text, \
               PRIMARY KEY ((scope), cluster, day, resource)",
        order: None,
        ttl: objects_ttl,
    },
    Table {
        name: "topo_keyframes",
        body: "cluster text, day int, t_ms bigint, data blob, PRIMARY KEY ((cluster, day), t_ms)",
        order: None,
        ttl: topology_ttl,
    },
    Table {
        name: "topo_deltas",
        body: "cluster text, day int, t_ms bigint, data blob, PRIMARY KEY ((cluster, day), t_ms)",
        order: None,
        ttl: topology_ttl,
    },
    Table {
        name: "topo_stats",
        body: "cluster text, day int, minute_ms bigint, keyframe boolean, data blob, \
               PRIMARY KEY ((cluster, day), minute_ms)",
        order: None,
        ttl: topology_ttl,
    },
    Table {
        name: "topo_changes",
        body: "cluster text, day int, t_ms bigint, source text, target text, directed boolean, \
               change int, PRIMARY KEY ((cluster, day), t_ms, source, target, directed, change)",
        order: None,
        ttl: topology_ttl,
    },
    Table {
        name: "topo_coverage",
        body:
            "cluster text, day int, first_ms bigint, last_ms bigint, PRIMARY KEY ((cluster), day)",
        order: None,
        ttl: topology_ttl,
    },
    Table {
        name: "topo_clusters",
        body: "shard int, cluster text, seen_ms bigint, kept_from bigint, \
               PRIMARY KEY ((shard), cluster)",
        order: None,
        ttl: topology_ttl,
    },
];

/// `CREATE TABLE IF NOT EXISTS` with the options every table shares.
pub fn create_table(t: &Table, o: &StoreOptions) -> String {
    let ttl = (t.ttl)(o);
    let mut s = format!(
        "CREATE TABLE IF NOT EXISTS {} ({}) WITH {}",
        t.name,
        t.body,
        table_options(ttl)
    );
    if let Some(order) = t.order {
        s.push_str(" AND ");
        s.push_str(order);
    }
    s
}

/// `ALTER TABLE … WITH …`: brings a table's TTL and compaction in line
/// with the configured retention (idempotent).
pub fn alter_table(t: &Table, o: &StoreOptions) -> String {
    format!("ALTER TABLE {} WITH {}", t.name, table_options((t.ttl)(o)))
}

/// TTL, TWCS windows (fewer than 50 over the TTL), no read repair, and a
/// low gc_grace: the data is TTL-only.
pub fn table_options(ttl: Duration) -> String {
    table_options_at(ttl, kube_insight_core::time::now_ms())
}

/// [`table_options`] at wall-clock time `now_ms` (the TTL is capped by
/// [`max_ttl_secs_at`]).
fn table_options_at(ttl: Duration, now_ms: i64) -> String {
    let secs = ttl.as_secs().clamp(3600, max_ttl_secs_at(now_ms) as u64);
    let (unit, size) = twcs_window(Duration::from_secs(secs));
    format!(
        "default_time_to_live = {secs} \
         AND compaction = {{'class': 'TimeWindowCompactionStrategy', 'compaction_window_unit': '{unit}', 'compaction_window_size': {size}}} \
         AND gc_grace_seconds = 10800 \
         AND read_repair = 'NONE'"
    )
}

/// The TWCS window: the TTL split into at most 40 windows, in whole hours
/// or days.
pub fn twcs_window(ttl: Duration) -> (&'static str, u64) {
    let hours = ttl.as_secs().div_ceil(3600).max(1);
    let per = hours.div_ceil(40).max(1);
    if per >= 24 {
        ("DAYS", per.div_ceil(24))
    } else {
        ("HOURS", per)
    }
}

/// `CREATE KEYSPACE IF NOT EXISTS`.
pub fn create_keyspace(keyspace: &str, replication: &str) -> String {
    format!(
        "CREATE KEYSPACE IF NOT EXISTS {keyspace} WITH replication = {replication} AND durable_writes = true"
    )
}

/// `ALTER KEYSPACE … WITH replication = …`: a changed replication.
pub fn alter_keyspace(keyspace: &str, replication: &str) -> String {
    format!("ALTER KEYSPACE {keyspace} WITH replication = {replication}")
}

/// Whether a keyspace's replication as `system_schema.keyspaces` stores it
/// (`class` fully qualified, factors as text) is `wanted`.
pub fn replication_matches(current: &HashMap<String, String>, wanted: &Replication) -> bool {
    let class = current.get("class").map(String::as_str).unwrap_or("");
    let factor = |v: &String| v.parse::<u32>().ok();
    match wanted {
        Replication::Simple(n) => {
            class.ends_with("SimpleStrategy")
                && current.get("replication_factor").and_then(factor) == Some(*n)
        }
        Replication::Network(dcs) => {
            class.ends_with("NetworkTopologyStrategy")
                && current.len() == dcs.len() + 1
                && dcs
                    .iter()
                    .all(|(dc, n)| current.get(dc).and_then(factor) == Some(*n))
        }
    }
}

/// What `schema apply` says after it changed a keyspace's replication:
/// the existing data is on the old replicas only until a full repair.
pub fn repair_needed_message(keyspace: &str) -> String {
    format!(
        "the replication of keyspace {keyspace} changed: run `nodetool repair -full {keyspace}` \
         on every Cassandra node (Reaper: a full repair of the keyspace) so the existing data \
         reaches its new replicas; until then reads at the new factor may miss it"
    )
}

/// Alters the keyspace when its replication is not the configured one;
/// `true` when it did (a repair is then needed).
async fn reconcile_replication(db: &Db) -> Result<bool> {
    const Q: &str = "SELECT replication FROM system_schema.keyspaces WHERE keyspace_name = ?";
    let ks = &db.config.keyspace;
    let lower = ks.to_ascii_lowercase();
    let r = db.exec(Q, (lower.as_str(),)).await?;
    let rows: Vec<(HashMap<String, String>,)> = result_rows(Q, r)?;
    let Some((current,)) = rows.into_iter().next() else {
        return Ok(false);
    };
    let wanted = &db.config.replication;
    if replication_matches(&current, wanted) {
        return Ok(false);
    }
    ddl(db, &alter_keyspace(ks, &wanted.cql())).await?;
    tracing::warn!(
        keyspace = %ks,
        from = ?current,
        to = %wanted.cql(),
        "{}",
        repair_needed_message(ks)
    );
    Ok(true)
}

const META: &str =
    "CREATE TABLE IF NOT EXISTS schema_meta (name text PRIMARY KEY, version int, owner text)";

/// Applies the schema: takes the lock, creates or alters every table,
/// waits for agreement after each statement, records the version.
pub async fn apply(db: &Db, o: &StoreOptions) -> Result<i32> {
    let ks = &db.config.keyspace;
    ddl(db, &create_keyspace(ks, &db.config.replication.cql())).await?;
    db.use_keyspace().await?;
    ddl(db, META).await?;
    let owner = format!(
        "{}-{}",
        std::env::var("HOSTNAME").unwrap_or_else(|_| "kube-insight".into()),
        std::process::id()
    );
    lock(db, &owner).await?;
    let result = apply_locked(db, o).await;
    let unlock = db
        .session
        .query_unpaged(
            "DELETE FROM schema_meta WHERE name = 'lock' IF owner = ?",
            (owner.as_str(),),
        )
        .await;
    if let Err(e) = unlock {
        tracing::warn!(error = %e, "could not release the schema lock; it expires by itself in 10 min");
    }
    result
}

/// The statements that take a keyspace from the version before to the one
/// named, beyond creating missing tables and altering existing ones (an
/// added column, a dropped table). Run in order by [`plan`] for every
/// version above the keyspace's. Version 1 is the first: none yet.
pub const MIGRATIONS: &[(i32, &[&str])] = &[];

/// What `schema apply` runs on a keyspace recorded at version `found`
/// (`None`: never set up) holding the tables `existing`: each table of
/// [`TABLES`] altered when it exists (a changed retention), created when
/// missing (a fresh keyspace costs one schema change per table, not two; a
/// keyspace of version N-1 gets the tables added since), then the
/// [`MIGRATIONS`] above `found`. A keyspace newer than this build is refused.
pub fn plan(found: Option<i32>, existing: &[String], o: &StoreOptions) -> Result<Vec<String>> {
    let from = found.unwrap_or(0);
    if from > SCHEMA_VERSION {
        return Err(Error::SchemaMismatch {
            found: from as u32,
            wanted: SCHEMA_VERSION as u32,
        });
    }
    let mut out: Vec<String> = TABLES
        .iter()
        .map(|t| {
            if existing.iter().any(|e| e == t.name) {
                alter_table(t, o)
            } else {
                create_table(t, o)
            }
        })
        .collect();
    for (version, statements) in MIGRATIONS {
        if *version > from && *version <= SCHEMA_VERSION {
            out.extend(statements.iter().map(|s| s.to_string()));
        }
    }
    Ok(out)
}

async fn apply_locked(db: &Db, o: &StoreOptions) -> Result<i32> {
    let found = version(db).await?;
    // A keyspace created earlier keeps its replication until altered here
    // (CREATE KEYSPACE IF NOT EXISTS changes nothing).
    reconcile_replication(db).await?;
    // A table that exists is altered (a changed retention), a missing one
    // created: a fresh keyspace costs one schema change per table, not two.
    let existing = existing_tables(db).await?;
    for cql in plan(found, &existing, o)? {
        ddl(db, &cql).await?;
    }
    secret_key(db).await?;
    db.session
        .query_unpaged(
            "INSERT INTO schema_meta (name, version) VALUES ('version', ?)",
            (SCHEMA_VERSION,),
        )
        .await
        .map_err(|e| super::session::map_err("INSERT INTO schema_meta", e))?;
    Ok(SCHEMA_VERSION)
}

/// The installation's secret-hash key ([`kube_insight_core::event::sanitize`]):
/// the row `secret_hash` of `schema_meta`, its 32 bytes as hex in `owner`,
/// inserted once by a lightweight transaction (`schema apply`, or the first
/// start of a keyspace made before it), so concurrent starts agree on one.
pub async fn secret_key(db: &Db) -> Result<SecretKey> {
    const PUT: &str =
        "INSERT INTO schema_meta (name, owner) VALUES ('secret_hash', ?) IF NOT EXISTS";
    if let Some(k) = read_secret_key(db).await? {
        return Ok(k);
    }
    let fresh: [u8; SecretKey::LEN] = rand::random();
    db.session
        .query_unpaged(PUT, (hex_encode(&fresh),))
        .await
        .map_err(|e| super::session::map_err(PUT, e))?;
    read_secret_key(db).await?.ok_or_else(|| {
        Error::Unavailable(
            "the secret-hash key (schema_meta secret_hash) is not readable yet; retry".into(),
        )
    })
}

async fn read_secret_key(db: &Db) -> Result<Option<SecretKey>> {
    const GET: &str = "SELECT owner FROM schema_meta WHERE name = 'secret_hash'";
    let r = db.exec(GET, ()).await?;
    let rows: Vec<(Option<String>,)> = result_rows(GET, r)?;
    let Some(hex) = rows.into_iter().next().and_then(|r| r.0) else {
        return Ok(None);
    };
    hex_decode(&hex)
        .and_then(|b| SecretKey::from_bytes(&b))
        .map(Some)
        .ok_or_else(|| Error::Corrupt("schema_meta secret_hash is not 64 hex digits".into()))
}

fn hex_encode(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect()
}

/// Takes the lock for [`LOCK_TTL_SECS`] (a TTL is allowed on a conditional
/// insert, a custom write time is not).
const LOCK: &str =
    "INSERT INTO schema_meta (name, owner) VALUES ('lock', ?) IF NOT EXISTS USING TTL 600";

/// The lightweight-transaction lock: one `schema apply` at a time.
async fn lock(db: &Db, owner: &str) -> Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(LOCK_TTL_SECS as u64);
    loop {
        let r = db
            .session
            .query_unpaged(LOCK, (owner,))
            .await
            .map_err(|e| super::session::map_err("INSERT INTO schema_meta … IF NOT EXISTS", e))?;
        // The first column of an LWT answer is `[applied]`.
        let applied = r
            .into_rows_result()
            .ok()
            .and_then(|rows| {
                rows.rows::<(bool, Option<String>, Option<String>, Option<i32>)>()
                    .ok()
                    .and_then(|mut it| it.next())
                    .and_then(|r| r.ok())
                    .map(|r| r.0)
                    .or_else(|| {
                        rows.rows::<(bool,)>()
                            .ok()
                            .and_then(|mut it| it.next())
                            .and_then(|r| r.ok())
                            .map(|r| r.0)
                    })
            })
            .unwrap_or(false);
        if applied {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(Error::Unavailable(
                "another `kube-insight schema apply` holds the schema lock (schema_meta name='lock'); wait for it, or delete that row if its Job is gone".into(),
            ));
        }
        tracing::info!("another schema apply holds the lock; waiting");
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// The tables of the keyspace (lowercase names, as `TABLES` spells them).
async fn existing_tables(db: &Db) -> Result<Vec<String>> {
    const Q: &str = "SELECT table_name FROM system_schema.tables WHERE keyspace_name = ?";
    // Unquoted names are stored lowercase (`keyspace_problem` allows
    // capitals, which Cassandra folds).
    let ks = db.config.keyspace.to_ascii_lowercase();
    let r = db.exec(Q, (ks.as_str(),)).await?;
    let rows: Vec<(String,)> = result_rows(Q, r)?;
    Ok(rows.into_iter().map(|r| r.0).collect())
}

/// Runs one DDL statement and waits until every node agrees on the schema.
async fn ddl(db: &Db, cql: &str) -> Result<()> {
    db.session
        .query_unpaged(ddl_statement(db, cql), ())
        .await
        .map_err(|e| super::session::map_err(cql, e))?;
    db.session.await_schema_agreement().await.map_err(|e| {
        Error::Unavailable(format!(
            "cassandra nodes did not agree on the schema after {:?}: {e}",
            cql.chars().take(60).collect::<String>()
        ))
    })?;
    Ok(())
}

/// The schema version recorded in the keyspace, if any.
pub async fn version(db: &Db) -> Result<Option<i32>> {
    const Q: &str = "SELECT version FROM schema_meta WHERE name = 'version'";
    let r = db.exec(Q, ()).await?;
    let rows: Vec<(Option<i32>,)> = result_rows(Q, r)?;
    Ok(rows.into_iter().next().and_then(|r| r.0))
}

/// Checks the version without changing anything.
pub async fn check(db: &Db) -> Result<i32> {
    let found = match version(db).await {
        // No schema_meta table: the keyspace was never set up.
        Err(Error::Cassandra(why)) => {
            tracing::debug!(%why, "no schema version");
            None
        }
        other => other?,
    };
    match found {
        Some(v) if v == SCHEMA_VERSION => Ok(v),
        Some(v) => Err(Error::SchemaMismatch {
            found: v as u32,
            wanted: SCHEMA_VERSION as u32,
        }),
        None => Err(Error::SchemaMismatch {
            found: 0,
            wanted: SCHEMA_VERSION as u32,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn twcs_keeps_fewer_than_50_windows() {
        for days in [1u64, 7, 14, 30, 90, 365, 3650] {
            let ttl = Duration::from_secs(days * 86_400);
            let (unit, size) = twcs_window(ttl);
            let window = size * if unit == "DAYS" { 86_400 } else { 3600 };
            let windows = ttl.as_secs().div_ceil(window);
            assert!(windows < 50, "{days} d: {unit} {size} gives {windows}");
            assert!(
                windows >= 10 || days < 2,
                "{days} d: too coarse ({windows})"
            );
        }
        assert_eq!(twcs_window(Duration::from_secs(14 * 86_400)), ("HOURS", 9));
        assert_eq!(twcs_window(Duration::from_secs(90 * 86_400)), ("DAYS", 3));
    }

    #[test]
    fn ttls_end_before_2038() {
        // 2025-01-01: 13 years left, one kept as margin.
        let now = 1_735_689_600_000;
        let cap = max_ttl_secs_at(now);
        assert!(cap < MAX_TTL_SECS, "{cap}");
        assert!(now / 1000 + i64::from(cap) + 365 * 86_400 < i64::from(i32::MAX));
        assert!(cap > 11 * 365 * 86_400, "{cap}");
        // Twenty years of retention: capped, so writes are not refused.
        let twenty = Duration::from_secs(20 * 365 * 86_400);
        let opts = table_options_at(twenty, now);
        assert!(
            opts.starts_with(&format!("default_time_to_live = {cap} ")),
            "{opts}"
        );
        // Ordinary retention is untouched.
        assert!(table_options_at(Duration::from_secs(14 * 86_400), now)
            .starts_with("default_time_to_live = 1209600 "));
        // Past 2037 the cap never drops below an hour.
        assert_eq!(max_ttl_secs_at(i64::from(i32::MAX) * 1000), 3600);
        assert!(max_ttl_secs() <= MAX_TTL_SECS);
    }

    #[test]
    fn the_lock_expires_as_documented() {
        assert!(LOCK.ends_with(&format!(" USING TTL {LOCK_TTL_SECS}")));
        // Its answer is `[applied]`, then the row's columns in the order
        // `lock` reads them (key, then regular columns by name).
        assert!(META.contains("name text PRIMARY KEY, version int, owner text"));
    }

    /// Upgrades, statement by statement: from a keyspace of the previous
    /// version (tables it had, version N-1 recorded), from a keyspace a Job
    /// left half done, from the current version (retention re-applied),
    /// and never from a newer one.
    #[test]
    fn apply_plans_the_upgrade_from_the_previous_version() {
        let o = StoreOptions::default();
        let names = |n: usize| -> Vec<String> {
            TABLES.iter().take(n).map(|t| t.name.to_string()).collect()
        };
        let creates = |p: &[String]| p.iter().filter(|s| s.starts_with("CREATE TABLE")).count();
        let alters = |p: &[String]| p.iter().filter(|s| s.starts_with("ALTER TABLE")).count();
        // Fresh: every table created once, nothing altered.
        let fresh = plan(None, &[], &o).unwrap();
        assert_eq!((creates(&fresh), alters(&fresh)), (TABLES.len(), 0));
        // Version N-1 with its tables: the tables it lacked are created,
        // the ones it had altered to this build's options, then the
        // migrations of version N, in order.
        let previous = SCHEMA_VERSION - 1;
        let had = if previous == 0 { 0 } else { TABLES.len() };
        let up = plan(Some(previous), &names(had), &o).unwrap();
        assert_eq!(
            up.len(),
            TABLES.len()
                + MIGRATIONS
                    .iter()
                    .filter(|m| m.0 == SCHEMA_VERSION)
                    .map(|m| m.1.len())
                    .sum::<usize>()
        );
        assert_eq!(creates(&up) + alters(&up), TABLES.len());
        // A Job that died after creating some tables: the rest are created.
        let half = plan(None, &names(5), &o).unwrap();
        assert_eq!((creates(&half), alters(&half)), (TABLES.len() - 5, 5));
        for (t, cql) in TABLES.iter().zip(&half) {
            assert!(cql.contains(&format!(" {} ", t.name)), "{cql}");
        }
        // The current version: retention re-applied, nothing created.
        let same = plan(Some(SCHEMA_VERSION), &names(TABLES.len()), &o).unwrap();
        assert_eq!((creates(&same), alters(&same)), (0, TABLES.len()));
        // Newer than this build: refused, nothing run.
        assert!(matches!(
            plan(Some(SCHEMA_VERSION + 1), &[], &o),
            Err(Error::SchemaMismatch { found, wanted }) if found == SCHEMA_VERSION as u32 + 1 && wanted == SCHEMA_VERSION as u32
        ));
        // Migrations are numbered above 1, in order, none above this build.
        let versions: Vec<i32> = MIGRATIONS.iter().map(|m| m.0).collect();
        assert!(versions.windows(2).all(|w| w[0] < w[1]), "{versions:?}");
        let current = SCHEMA_VERSION;
        assert!(
            versions.iter().all(|v| (2..=current).contains(v)),
            "{versions:?}"
        );
    }

    #[test]
    fn statement_text() {
        let o = StoreOptions::default();
        let head = create_table(&TABLES[0], &o);
        assert_eq!(
            head,
            "CREATE TABLE IF NOT EXISTS metrics_head (cluster text, shard int, bucket bigint, fp bigint, ts bigint, value bigint, PRIMARY KEY ((cluster, shard, bucket), fp, ts)) WITH default_time_to_live = 22200 AND compaction = {'class': 'TimeWindowCompactionStrategy', 'compaction_window_unit': 'HOURS', 'compaction_window_size': 1} AND gc_grace_seconds = 10800 AND read_repair = 'NONE'"
        );
        let alter = alter_table(&TABLES[2], &o);
        assert!(
            alter.starts_with("ALTER TABLE metrics_chunks WITH default_time_to_live = 1209600 "),
            "{alter}"
        );
        assert_eq!(
            create_keyspace("ki", "{'class': 'SimpleStrategy', 'replication_factor': 1}"),
            "CREATE KEYSPACE IF NOT EXISTS ki WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1} AND durable_writes = true"
        );
        assert_eq!(
            alter_keyspace("ki", &Replication::Network(vec![("dc1".into(), 3)]).cql()),
            "ALTER KEYSPACE ki WITH replication = {'class': 'NetworkTopologyStrategy', 'dc1': 3}"
        );
        // Every table is partitioned by a time bucket or is one small row
        // per key (lock, checkpoints, object history of one uid).
        for t in TABLES {
            assert!(t.body.contains("PRIMARY KEY (("), "{}", t.name);
            let names: Vec<&str> = TABLES.iter().map(|t| t.name).collect();
            assert_eq!(names.iter().filter(|n| **n == t.name).count(), 1);
        }
    }

    fn stored(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn replication_is_compared_as_cassandra_stores_it() {
        let simple1 = stored(&[
            ("class", "org.apache.cassandra.locator.SimpleStrategy"),
            ("replication_factor", "1"),
        ]);
        let dc1_3 = stored(&[
            (
                "class",
                "org.apache.cassandra.locator.NetworkTopologyStrategy",
            ),
            ("dc1", "3"),
        ]);
        let dc1 = Replication::Network(vec![("dc1".into(), 3)]);
        assert!(replication_matches(&simple1, &Replication::Simple(1)));
        assert!(!replication_matches(&simple1, &Replication::Simple(3)));
        // The keyspace `simple:1` made before replication was rendered.
        assert!(!replication_matches(&simple1, &dc1));
        assert!(replication_matches(&dc1_3, &dc1));
        assert!(!replication_matches(
            &dc1_3,
            &Replication::Network(vec![("dc1".into(), 2)])
        ));
        // A data centre added or removed is a change.
        assert!(!replication_matches(
            &dc1_3,
            &Replication::Network(vec![("dc1".into(), 3), ("dc2".into(), 3)])
        ));
        let two = stored(&[
            (
                "class",
                "org.apache.cassandra.locator.NetworkTopologyStrategy",
            ),
            ("dc1", "3"),
            ("dc2", "3"),
        ]);
        assert!(!replication_matches(&two, &dc1));
        assert!(!replication_matches(&HashMap::new(), &dc1));
        let m = repair_needed_message("ki");
        assert!(m.contains("nodetool repair -full ki"), "{m}");
    }

    #[test]
    fn the_secret_key_round_trips_as_hex() {
        let k = [0u8, 1, 0xab, 0xff];
        assert_eq!(hex_encode(&k), "0001abff");
        assert_eq!(hex_decode("0001abff"), Some(k.to_vec()));
        assert_eq!(hex_decode("0g"), None);
        assert_eq!(hex_decode("abc"), None);
    }
}
