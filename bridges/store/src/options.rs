use std::time::Duration;

/// How long each signal is kept (`KUBE_INSIGHT_RETENTION_*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retention {
    pub metrics: Duration,
    pub logs: Duration,
    pub events: Duration,
    pub topology: Duration,
}

impl Default for Retention {
    fn default() -> Self {
        const DAY: u64 = 86_400;
        Retention {
            metrics: Duration::from_secs(14 * DAY),
            logs: Duration::from_secs(7 * DAY),
            events: Duration::from_secs(90 * DAY),
            topology: Duration::from_secs(90 * DAY),
        }
    }
}

/// Options shared by every backend.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub retention: Retention,
    /// Cap on live series per cluster (written within `head_grace`); new
    /// series beyond it are rejected and counted (`KUBE_INSIGHT_MAX_SERIES`,
    /// see [`crate::series_cap`]).
    pub max_series_per_cluster: usize,
    /// Width of an immutable metrics chunk (Prometheus uses 2 h).
    pub chunk_window: Duration,
    /// How long after its end a head window stays open for late samples
    /// (`KUBE_INSIGHT_METRICS_HEAD_GRACE`). Samples later than that are still
    /// stored, by the late path: the window reopens and is merged into its
    /// chunk at the next maintenance pass.
    pub head_grace: Duration,
    /// Credentials and TLS of the cassandra backend (ignored by sqlite).
    pub cassandra: CassandraAuth,
}

/// `KUBE_INSIGHT_CASSANDRA_USERNAME`, `_PASSWORD`, `_CA_FILE`.
#[derive(Clone, Default)]
pub struct CassandraAuth {
    pub username: Option<String>,
    pub password: Option<String>,
    /// PEM CA bundle; when set, connections use TLS verified against it.
    pub ca_file: Option<std::path::PathBuf>,
}

impl std::fmt::Debug for CassandraAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CassandraAuth")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            retention: Retention::default(),
            max_series_per_cluster: 500_000,
            chunk_window: Duration::from_secs(2 * 3600),
            head_grace: Duration::from_secs(10 * 60),
            cassandra: CassandraAuth::default(),
        }
    }
}
