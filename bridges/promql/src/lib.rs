//! kube-insight's PromQL engine.
//!
//! `query` and `query_range` with Prometheus' semantics (2.42 by default, see
//! [`Compat`]) over any [`Querier`]. The query is parsed with `promql-parser`,
//! every selector's time range is planned from the AST, all selections are
//! fetched (concurrently), then the expression is evaluated synchronously,
//! each node over all steps at once.
//!
//! Supported: instant and range selectors with all four matchers, `offset`,
//! `@` (incl. `start()`/`end()`), subqueries; `rate`, `irate`, `increase`,
//! `delta`, `idelta`, `*_over_time` (avg, min, max, sum, count, last,
//! quantile, stddev, stdvar), `changes`, `resets`; `sum`, `avg`, `min`,
//! `max`, `count`, `group`, `stddev`, `stdvar`, `topk`, `bottomk`,
//! `quantile` with `by`/`without`; arithmetic, comparison (with `bool`) and
//! set operators with `on`/`ignoring`/`group_left`/`group_right`;
//! `histogram_quantile` (classic buckets), `label_replace`, `label_join`,
//! `abs`, `ceil`, `floor`, `round`, `sqrt`, `exp`, `ln`, `log2`, `log10`,
//! `sgn`, `clamp`, `clamp_min`, `clamp_max`, `time`, `vector`, `scalar`.
//! Anything else is a `bad_data` error naming the construct.
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

pub use engine::{function_exists, parse, Compat, Engine, EngineOptions, RollupPolicy};
pub use error::{ErrorType, PromqlError, QuerierError};
pub use format::{format_query, parse_query};
pub use openmetrics::{parse_openmetrics, OpenMetricsError};
pub use params::{
    parse_duration_param, parse_match_selector, parse_range_params, parse_time_param,
    validate_range, MAX_POINTS_PER_SERIES,
};
pub use querier::{MemoryQuerier, Querier, SelectHints};
pub use result::{format_timestamp, format_value, InstantSample, QueryResult, RangeSeries};
