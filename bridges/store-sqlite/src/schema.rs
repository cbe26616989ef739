//! The SQLite schema, its version, and connection settings.
//!
//! ```sql
//! schema_version(version INTEGER NOT NULL)            -- one row
//! meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL)  -- compacted_until, …
//! series(id INTEGER PRIMARY KEY AUTOINCREMENT, cluster, labels BLOB,
//!        first_ms, last_ms)                             -- read once, at start-up
//! chunks(id INTEGER PRIMARY KEY, series_id, start_ms, end_ms, count, data BLOB)
//!        UNIQUE (series_id, start_ms), INDEX (end_ms)  -- end_ms: last sample's ts
//! rollups(id INTEGER PRIMARY KEY, series_id, window_start_ms, data BLOB)
//!        UNIQUE (series_id, window_start_ms), INDEX (window_start_ms)
//! head_wal(id INTEGER PRIMARY KEY, max_ts INTEGER NOT NULL, data BLOB NOT NULL)
//! ```
//!
//! `chunks` and `rollups` are rowid tables with a unique index rather than
//! `WITHOUT ROWID` tables keyed by `(series_id, start_ms)`, for two measured
//! reasons: a `WITHOUT ROWID` row is stored in an index b-tree, which spills
//! any row above ~1 KB (a 2 h chunk of a busy counter) into an overflow page
//! that is mostly empty; and keying by series makes every compaction insert
//! land in the middle of the tree, leaving pages half full. Rowids grow with
//! each compaction pass, so chunks append into full pages, and the index
//! rows stay small.
//!
//! `apply` is idempotent and runs every step above the recorded version, in
//! order, in one transaction: a new database runs them all. A future version
//! adds its step to [`STEPS`] and bumps [`SCHEMA_VERSION`].
//!
//! - v1: the tables.
//! - v2: drops the series columns `fingerprint`, `name`, `namespace`, `pod`,
//!   `container` and their two indexes. Nothing read them (the head holds
//!   the series index in memory, loaded from `labels`), and they were 15 %
//!   of the file in a 2 h run of 5k series (BENCHMARKS.md).
//! - v3: `install_keys(name TEXT PRIMARY KEY, key BLOB)` with the random
//!   key of the secret hashes (`secret_hash`, 32 bytes).

use kube_insight_store::error::Error;
use rusqlite::{params, Connection, ErrorCode, OptionalExtension};
use std::path::Path;
use std::time::Duration;

/// The schema version this build reads and writes.
pub const SCHEMA_VERSION: u32 = 3;

const DDL_V1: &str = "
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS series (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    fingerprint INTEGER NOT NULL,
    cluster     TEXT NOT NULL,
    labels      BLOB NOT NULL,
    name        TEXT NOT NULL,
    namespace   TEXT NOT NULL,
    pod         TEXT NOT NULL,
    container   TEXT NOT NULL,
    first_ms    INTEGER NOT NULL,
    last_ms     INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS series_fingerprint ON series(fingerprint);
CREATE INDEX IF NOT EXISTS series_entity ON series(cluster, namespace, pod, container);
CREATE TABLE IF NOT EXISTS chunks (
    id        INTEGER PRIMARY KEY,
    series_id INTEGER NOT NULL,
    start_ms  INTEGER NOT NULL,
    end_ms    INTEGER NOT NULL,
    count     INTEGER NOT NULL,
    data      BLOB NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS chunks_series_start ON chunks(series_id, start_ms);
CREATE INDEX IF NOT EXISTS chunks_end ON chunks(end_ms);
CREATE TABLE IF NOT EXISTS rollups (
    id              INTEGER PRIMARY KEY,
    series_id       INTEGER NOT NULL,
    window_start_ms INTEGER NOT NULL,
    data            BLOB NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS rollups_series_start ON rollups(series_id, window_start_ms);
CREATE INDEX IF NOT EXISTS rollups_start ON rollups(window_start_ms);
CREATE TABLE IF NOT EXISTS head_wal (
    id     INTEGER PRIMARY KEY,
    max_ts INTEGER NOT NULL,
    data   BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS head_wal_max_ts ON head_wal(max_ts);
";

/// v1 → v2: see the module doc. `DROP COLUMN` (SQLite ≥ 3.35) rewrites the
/// series rows once; the freed pages are given back by the next retention
/// pass (incremental vacuum).
const MIGRATE_V2: &str = "
DROP INDEX IF EXISTS series_fingerprint;
DROP INDEX IF EXISTS series_entity;
ALTER TABLE series DROP COLUMN fingerprint;
ALTER TABLE series DROP COLUMN name;
ALTER TABLE series DROP COLUMN namespace;
ALTER TABLE series DROP COLUMN pod;
ALTER TABLE series DROP COLUMN container;
";

/// v2 → v3: the installation's key of the secret hashes (HMAC-SHA256 of
/// ConfigMap data and secret-looking env values), random, made once.
const MIGRATE_V3: &str = "
CREATE TABLE IF NOT EXISTS install_keys (name TEXT PRIMARY KEY, key BLOB NOT NULL);
INSERT OR IGNORE INTO install_keys (name, key) VALUES ('secret_hash', randomblob(32));
";

/// The migration steps: `STEPS[i]` takes a database from version `i` to `i + 1`.
const STEPS: [&str; SCHEMA_VERSION as usize] = [DDL_V1, MIGRATE_V2, MIGRATE_V3];

/// The installation's secret-hash key, made here if the database has none
/// yet (a store opened by the events signal alone runs no migration).
pub(crate) fn secret_key(conn: &Connection) -> rusqlite::Result<Vec<u8>> {
    conn.execute_batch(MIGRATE_V3)?;
    conn.query_row(
        "SELECT key FROM install_keys WHERE name = 'secret_hash'",
        [],
        |r| r.get(0),
    )
}

/// Settings of every connection: WAL journal, `synchronous=FULL` (a commit
/// is on disk before it returns, so an Ok answer means durable), a busy
/// timeout instead of immediate `SQLITE_BUSY`.
pub(crate) fn configure(conn: &Connection, busy_timeout: Duration) -> rusqlite::Result<()> {
    conn.busy_timeout(busy_timeout)?;
    // Incremental auto-vacuum lets retention give pages back to the file
    // system. Both only take effect on a database with no page written yet
    // (before WAL mode is set), and are no-ops on an existing one.
    // 8 KiB pages: a 2 h chunk (~0.3–3 KB) wastes on average half a row per
    // page, which is a fifth of a 4 KiB page and a tenth of an 8 KiB one.
    conn.execute_batch("PRAGMA page_size = 8192; PRAGMA auto_vacuum = INCREMENTAL")?;
    let mode: String = conn.query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(journal_mode = %mode, "sqlite did not switch to WAL journal mode");
    }
    conn.execute_batch(
        "PRAGMA synchronous = FULL;
         PRAGMA temp_store = MEMORY;
         PRAGMA cache_size = -4096;
         PRAGMA journal_size_limit = 67108864;",
    )?;
    Ok(())
}

/// Opens the database file with [`configure`]'s settings, creating its
/// folder: every signal's store (metrics, logs, events, topology) opens its
/// connections to the one file through here.
pub(crate) fn open_connection(path: &Path, busy_timeout: Duration) -> Result<Connection, Error> {
    let shown = path.display().to_string();
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| {
            Error::Unavailable(format!("creating directory {}: {e}", dir.display()))
        })?;
    }
    let conn = Connection::open(path).map_err(|e| sql_error(&shown, e))?;
    configure(&conn, busy_timeout).map_err(|e| sql_error(&shown, e))?;
    Ok(conn)
}

/// A SQLite error as a store error. Busy, locked, I/O, full or read-only
/// databases may recover, so they are retryable (`Unavailable`).
pub(crate) fn sql_error(path: &str, e: rusqlite::Error) -> Error {
    if let rusqlite::Error::SqliteFailure(f, _) = &e {
        if matches!(
            f.code,
            ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::SystemIoFailure
                | ErrorCode::DiskFull
                | ErrorCode::ReadOnly
                | ErrorCode::CannotOpen
        ) {
            return Error::Unavailable(format!("sqlite store {path}: {e}"));
        }
    }
    Error::Sqlite {
        path: path.to_string(),
        source: e.into(),
    }
}

/// The version recorded in the database (0 when there is none).
pub(crate) fn current_version(conn: &Connection) -> rusqlite::Result<u32> {
    let exists: bool = conn.query_row(
        "SELECT count(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'",
        [],
        |r| r.get(0),
    )?;
    if !exists {
        return Ok(0);
    }
    let v: Option<i64> = conn
        .query_row("SELECT max(version) FROM schema_version", [], |r| r.get(0))
        .optional()?
        .flatten();
    Ok(v.unwrap_or(0).clamp(0, u32::MAX as i64) as u32)
}

/// Creates or migrates the schema; idempotent. Returns the version.
///
/// A database newer than this build is left alone and reported by the
/// caller as a mismatch.
pub(crate) fn apply(conn: &mut Connection) -> rusqlite::Result<u32> {
    let found = current_version(conn)?;
    if found > SCHEMA_VERSION {
        return Ok(found);
    }
    if found == SCHEMA_VERSION {
        return Ok(found);
    }
    let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
    tx.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")?;
    // Re-check under the write lock: another process may have migrated.
    let found: Option<i64> =
        tx.query_row("SELECT max(version) FROM schema_version", [], |r| r.get(0))?;
    let found = found.unwrap_or(0).clamp(0, SCHEMA_VERSION as i64) as usize;
    if found < SCHEMA_VERSION as usize {
        for step in &STEPS[found..] {
            tx.execute_batch(step)?;
        }
        tx.execute("DELETE FROM schema_version", [])?;
        tx.execute(
            "INSERT INTO schema_version (version) VALUES (?1)",
            params![SCHEMA_VERSION],
        )?;
    }
    tx.commit()?;
    current_version(conn)
}

pub(crate) const META_COMPACTED_UNTIL: &str = "compacted_until";

pub(crate) fn meta_get(conn: &Connection, key: &str) -> rusqlite::Result<Option<i64>> {
    conn.query_row("SELECT value FROM meta WHERE key = ?1", [key], |r| r.get(0))
        .optional()
}

pub(crate) fn meta_set(conn: &Connection, key: &str, value: i64) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO meta (key, value) VALUES (?1, ?2)
         ON CONFLICT(key) DO UPDATE SET value = excluded.value",
        params![key, value],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apply_is_idempotent_and_sets_incremental_vacuum() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Connection::open(dir.path().join("s.db")).unwrap();
        configure(&c, Duration::from_secs(1)).unwrap();
        assert_eq!(current_version(&c).unwrap(), 0);
        assert_eq!(apply(&mut c).unwrap(), SCHEMA_VERSION);
        assert_eq!(apply(&mut c).unwrap(), SCHEMA_VERSION);
        let av: i64 = c.query_row("PRAGMA auto_vacuum", [], |r| r.get(0)).unwrap();
        assert_eq!(av, 2, "incremental");
        let rows: i64 = c
            .query_row("SELECT count(*) FROM schema_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 1);
        meta_set(&c, "k", 5).unwrap();
        meta_set(&c, "k", 6).unwrap();
        assert_eq!(meta_get(&c, "k").unwrap(), Some(6));
        assert_eq!(meta_get(&c, "missing").unwrap(), None);
    }

    fn columns(c: &Connection, table: &str) -> Vec<String> {
        let mut st = c
            .prepare(&format!("SELECT name FROM pragma_table_info('{table}')"))
            .unwrap();
        st.query_map([], |r| r.get(0))
            .unwrap()
            .map(|r| r.unwrap())
            .collect()
    }

    #[test]
    fn a_v1_database_migrates_to_v2_and_keeps_its_series() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Connection::open(dir.path().join("s.db")).unwrap();
        configure(&c, Duration::from_secs(1)).unwrap();
        // A database as version 1 left it, with one series.
        c.execute_batch(DDL_V1).unwrap();
        c.execute_batch(
            "CREATE TABLE schema_version (version INTEGER NOT NULL);
             INSERT INTO schema_version VALUES (1);
             INSERT INTO series (id, fingerprint, cluster, labels, name, namespace, pod, container, first_ms, last_ms)
             VALUES (7, 42, 'c1', x'0102', 'up', 'ns', 'p', 'app', 10, 20);",
        )
        .unwrap();
        assert_eq!(apply(&mut c).unwrap(), SCHEMA_VERSION);
        assert_eq!(
            columns(&c, "series"),
            ["id", "cluster", "labels", "first_ms", "last_ms"]
        );
        let row: (i64, String, Vec<u8>, i64, i64) = c
            .query_row("SELECT * FROM series", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .unwrap();
        assert_eq!(row, (7, "c1".into(), vec![1, 2], 10, 20));
        let indexes: i64 = c
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name IN ('series_fingerprint', 'series_entity')",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(indexes, 0);
        // AUTOINCREMENT survives the rewrite: ids are never reused.
        c.execute(
            "INSERT INTO series (cluster, labels, first_ms, last_ms) VALUES ('c1', x'00', 0, 0)",
            [],
        )
        .unwrap();
        assert_eq!(c.last_insert_rowid(), 8);
        assert_eq!(apply(&mut c).unwrap(), SCHEMA_VERSION, "idempotent");
    }

    #[test]
    fn the_secret_key_is_made_once_by_the_migration() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = Connection::open(dir.path().join("s.db")).unwrap();
        configure(&c, Duration::from_secs(1)).unwrap();
        apply(&mut c).unwrap();
        let k = secret_key(&c).unwrap();
        assert_eq!(k.len(), 32);
        assert_ne!(k, vec![0; 32]);
        assert_eq!(secret_key(&c).unwrap(), k, "stable");
        // Another database, another key.
        let other = Connection::open(dir.path().join("t.db")).unwrap();
        assert_ne!(secret_key(&other).unwrap(), k);
    }
}
