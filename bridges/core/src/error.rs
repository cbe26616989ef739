use thiserror::Error;

/// Errors of the pure data-model functions. Messages are lowercase, have no
/// trailing period and name the input at fault.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum Error {
    #[error("invalid time {input:?}: expected RFC 3339 (2024-05-31T16:08:37Z), epoch seconds (1717171717.5), epoch milliseconds (1717171717000), now or now-1h")]
    InvalidTime { input: String },
    #[error(
        "invalid duration {input:?}: expected a number with a unit such as 15s, 5m, 2h, 14d or 1w"
    )]
    InvalidDuration { input: String },
    #[error("invalid time range: start {start_ms} is after end {end_ms}")]
    InvalidRange { start_ms: i64, end_ms: i64 },
    #[error("invalid regular expression {pattern:?} for label {label:?}: {reason}")]
    InvalidRegex {
        label: String,
        pattern: String,
        reason: String,
    },
    #[error("invalid label name {name:?}: must match [a-zA-Z_][a-zA-Z0-9_]*")]
    InvalidLabelName { name: String },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
