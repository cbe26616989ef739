use thiserror::Error;

/// Store errors. [`Error::is_retryable`] tells the push endpoints whether to
/// answer 503 (try again) or to report a permanent fault.
#[derive(Debug, Error)]
pub enum Error {
    #[error("invalid store url {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store overloaded: {0}")]
    Overloaded(String),
    #[error("query limit exceeded: {what} would exceed the limit of {limit}; narrow the selector or the time range")]
    LimitExceeded { what: &'static str, limit: usize },
    #[error("schema version {found} in the store, this kube-insight needs {wanted}: run `kube-insight schema apply`")]
    SchemaMismatch { found: u32, wanted: u32 },
    #[error("invalid query: {0}")]
    InvalidQuery(String),
    #[error("sqlite store {path}: {source}")]
    Sqlite {
        path: String,
        /// The backend's error (`rusqlite::Error`); boxed so this crate
        /// does not depend on the backend.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("cassandra store: {0}")]
    Cassandra(String),
    #[error("corrupt data in the store: {0}")]
    Corrupt(String),
    #[error(transparent)]
    Core(#[from] kube_insight_core::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl Error {
    /// True when the same request may succeed later (answer 429/503 with Retry-After).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Unavailable(_) | Error::Overloaded(_))
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
