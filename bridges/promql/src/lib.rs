//! kube-insight's PromQL engine.
//!
//! `query` and `query_range` with Prometheus' semantics (2.42 by default, see
//! [`Compat`]) over any [`Querier`]. The query is parsed with `promql-parser`,
//! every selector's time range is planned from the AST, all selections are
//! fetched (concurrently), then the expression is evaluated synchronously,
//! each node over all steps at once.
//!
//! Supported: all of Prometheus 2.42's PromQL (every function of
//! [`engine::FUNCTIONS_PROMETHEUS2`], every aggregation and operator,
//! subqueries, `offset`, `@ start()`/`@ end()`), and in
//! [`Compat::Prometheus3`] 3.x's function set (`double_exponential_smoothing`,
//! `mad_over_time`, `sort_by_label*`, `limitk`, `limit_ratio`…). A function
//! the reproduced release does not have is a `bad_data` parse error, as in
//! Prometheus. [`format_query`] and [`parse_query`] print a parsed query as
//! Prometheus' API does.
//!
//! Long ranges at a coarse step read 5-minute rollups where they give the
//! raw answer up to the window edges ([`RollupPolicy`]; Thanos'
//! `max_source_resolution` parameter overrides it per query).

pub mod engine;
pub mod error;
mod eval;
mod format;
mod functions;
pub mod openmetrics;
pub mod params;
pub mod querier;
pub mod result;

pub use engine::{
    function_exists, parse, selector_matcher_sets, Compat, Engine, EngineOptions, RollupPolicy,
};
pub use error::{ErrorType, PromqlError, QuerierError};
pub use format::{format_query, parse_query};
pub use openmetrics::{parse_openmetrics, OpenMetricsError};
pub use params::{
    parse_duration_param, parse_match_selector, parse_range_params, parse_time_param,
    validate_range, MAX_POINTS_PER_SERIES,
};
pub use querier::{MemoryQuerier, Querier, SelectHints};
pub use result::{format_timestamp, format_value, InstantSample, QueryResult, RangeSeries};
