//! kube-insight's data model, shared by every store backend, source and API.
//!
//! No IO lives here: this crate is pure types and pure functions, so everything
//! built on it can be tested on fixtures. The dependency direction is
//! `sources/api/kube-insight → store → core`.

pub mod entity;
pub mod error;
pub mod event;
pub mod labels;
pub mod log;
pub mod matcher;
pub mod rollup;
pub mod sample;
pub mod scope;
pub mod time;
pub mod topology;

pub use entity::{Entity, EntityKey, Workload};
pub use error::{Error, Result};
pub use labels::{Label, Labels, LabelsBuilder, METRIC_NAME};
pub use log::{
    extract_level, Level, LineFilter, LogRecord, LogStreamKey, LogStreamMeta, StdStream,
};
pub use matcher::{MatchOp, Matcher};
pub use rollup::{Resolution, RollupField};
pub use sample::{is_stale_nan, Sample, TimeSeries, STALE_NAN, STALE_NAN_BITS};
pub use scope::ClusterScope;
pub use time::{parse_duration, parse_time_ms, TimeRange};
