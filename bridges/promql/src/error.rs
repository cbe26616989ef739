//! Errors, with the `errorType` Prometheus' HTTP API reports for each.

use serde::Serialize;
use thiserror::Error;

/// Prometheus' API `errorType` values (web/api/v1/api.go).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorType {
    /// 400: the request is malformed (bad parameter, parse error, unsupported construct).
    BadData,
    /// 422: the query is valid but failed while evaluating.
    Execution,
    /// 503: the query took longer than its timeout.
    Timeout,
    /// 503: the query was canceled.
    Canceled,
    /// 500: a bug or a storage failure.
    Internal,
    /// 503: the store cannot answer now (overloaded, a node down); retry.
    Unavailable,
}

impl ErrorType {
    /// The JSON string, e.g. `bad_data`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorType::BadData => "bad_data",
            ErrorType::Execution => "execution",
            ErrorType::Timeout => "timeout",
            ErrorType::Canceled => "canceled",
            ErrorType::Internal => "internal",
            ErrorType::Unavailable => "unavailable",
        }
    }

    /// The HTTP status Prometheus answers with for this error type.
    pub fn http_status(self) -> u16 {
        match self {
            ErrorType::BadData => 400,
            ErrorType::Execution => 422,
            ErrorType::Timeout | ErrorType::Canceled | ErrorType::Unavailable => 503,
            ErrorType::Internal => 500,
        }
    }
}

/// An error a [`crate::Querier`] reports.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum QuerierError {
    /// The store failed (maps to `internal`).
    #[error("storage error: {0}")]
    Storage(String),
    /// The store refused the selection as too large (maps to `execution`).
    #[error("selection too large: {0}")]
    LimitExceeded(String),
    /// The store stopped reading once the selection held more samples than
    /// `limit` ([`crate::SelectHints::max_samples`]); a range query is then
    /// evaluated in time slices.
    #[error("selection too large: more than {limit} samples")]
    TooManySamples { limit: usize },
    /// The selection was canceled (maps to `canceled`).
    #[error("selection canceled: {0}")]
    Canceled(String),
}

/// Every error the engine and the parameter helpers return. Messages are
/// lowercase, have no trailing period and name the input at fault.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum PromqlError {
    /// A request parameter is malformed (`time`, `start`, `end`, `step`, `timeout`, `match[]`).
    #[error("invalid parameter {param:?}: {reason}")]
    InvalidParam { param: String, reason: String },
    /// The query does not parse.
    #[error("invalid parameter \"query\": parse error in {query:?}: {reason}")]
    Parse { query: String, reason: String },
    /// The query parses but uses a construct this engine does not implement.
    #[error("unsupported in {query:?}: {what} is not supported by kube-insight's promql engine")]
    Unsupported { query: String, what: String },
    /// The query has the wrong result type for the endpoint, or a bad argument.
    #[error("{0}")]
    BadData(String),
    /// Evaluation failed the way Prometheus' would (vector matching errors, duplicate series…).
    #[error("{0}")]
    Execution(String),
    /// More samples than the configured limit would be loaded (at least
    /// `loaded`: a store stops counting once over the limit).
    #[error("query processing would load too many samples into memory in query execution: {loaded} or more samples exceed the limit of {limit}; narrow the selection or the time range, or raise the samples limit (query {query:?})")]
    TooManySamples {
        query: String,
        loaded: usize,
        limit: usize,
    },
    /// More series than the configured limit were selected.
    #[error("query selects too many series: {selected} series exceed the limit of {limit} (query {query:?})")]
    TooManySeries {
        query: String,
        selected: usize,
        limit: usize,
    },
    /// The deadline passed.
    #[error("query timed out in {phase} (query {query:?}, timeout {timeout_ms} ms)")]
    Timeout {
        query: String,
        phase: &'static str,
        timeout_ms: u64,
    },
    /// The selection was canceled.
    #[error("query was canceled in query execution: {0}")]
    Canceled(String),
    /// The store failed.
    #[error("storage error in query execution: {0}")]
    Storage(String),
    /// A bug.
    #[error("internal error: {0}")]
    Internal(String),
}

impl PromqlError {
    /// Prometheus' `errorType` for this error.
    pub fn error_type(&self) -> ErrorType {
        match self {
            PromqlError::InvalidParam { .. }
            | PromqlError::Parse { .. }
            | PromqlError::Unsupported { .. }
            | PromqlError::BadData(_) => ErrorType::BadData,
            PromqlError::Execution(_)
            | PromqlError::TooManySamples { .. }
            | PromqlError::TooManySeries { .. } => ErrorType::Execution,
            PromqlError::Timeout { .. } => ErrorType::Timeout,
            PromqlError::Canceled(_) => ErrorType::Canceled,
            PromqlError::Storage(_) | PromqlError::Internal(_) => ErrorType::Internal,
        }
    }

    pub(crate) fn param(param: &str, reason: impl Into<String>) -> Self {
        PromqlError::InvalidParam {
            param: param.to_string(),
            reason: reason.into(),
        }
    }
}

impl From<QuerierError> for PromqlError {
    fn from(e: QuerierError) -> Self {
        match e {
            QuerierError::Storage(m) => PromqlError::Storage(m),
            QuerierError::LimitExceeded(m) => PromqlError::Execution(m),
            QuerierError::TooManySamples { limit } => PromqlError::TooManySamples {
                query: String::new(),
                loaded: limit.saturating_add(1),
                limit,
            },
            QuerierError::Canceled(m) => PromqlError::Canceled(m),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_types_map_like_prometheus() {
        assert_eq!(
            PromqlError::param("step", "x").error_type().as_str(),
            "bad_data"
        );
        assert_eq!(
            PromqlError::Execution("x".into()).error_type().as_str(),
            "execution"
        );
        let t = PromqlError::Timeout {
            query: "up".into(),
            phase: "query execution",
            timeout_ms: 5,
        };
        assert_eq!(t.error_type(), ErrorType::Timeout);
        assert_eq!(t.error_type().http_status(), 503);
        assert_eq!(
            PromqlError::from(QuerierError::Canceled("x".into()))
                .error_type()
                .as_str(),
            "canceled"
        );
        assert_eq!(
            PromqlError::from(QuerierError::Storage("x".into())).error_type(),
            ErrorType::Internal
        );
        assert_eq!(
            serde_json::to_string(&ErrorType::BadData).unwrap(),
            "\"bad_data\""
        );
    }
}
