//! The public engine: parse, plan the selections, fetch them through a
//! [`Querier`], evaluate, shape the result.

use crate::error::{PromqlError, QuerierError};
use crate::eval::{at_ms, offset_ms, selector_key, subquery_grid, Evaluator, Grid, Result, Val};
use crate::querier::{Querier, SelectHints};
use crate::result::{InstantSample, QueryResult, RangeSeries};
use kube_insight_core::rollup::{Resolution, RollupField, ROLLUP_STEP_MS};
use kube_insight_core::{MatchOp, Matcher, TimeRange, TimeSeries, METRIC_NAME};
use promql_parser::label::MatchOp as PMatchOp;
use promql_parser::parser::token::{
    T_ADD, T_ATAN2, T_AVG, T_BOTTOMK, T_COUNT, T_COUNT_VALUES, T_DIV, T_EQLC, T_GROUP, T_GTE,
    T_GTR, T_LAND, T_LIMITK, T_LIMIT_RATIO, T_LOR, T_LSS, T_LTE, T_LUNLESS, T_MAX, T_MIN, T_MOD,
    T_MUL, T_NEQ, T_POW, T_QUANTILE, T_STDDEV, T_STDVAR, T_SUB, T_SUM, T_TOPK,
};
use promql_parser::parser::value::ValueType;
use promql_parser::parser::{Expr, VectorSelector};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Which Prometheus release's boundary semantics to reproduce.
///
/// * `Prometheus2` (default; Debian 12 ships 2.42, which the differential test
///   runs against): range-vector windows are closed, `[t - range, t]`, and the
///   lookback of instant selectors is closed, `[t - 5m, t]`; `rate`'s
///   zero-point clamp is applied before the 1.1× extrapolation threshold.
/// * `Prometheus3`: windows and lookback are left-open, `(t - range, t]`; the
///   threshold is applied before the zero-point clamp (Prometheus ≥ 3.0).
///
/// The function set follows the release too ([`function_exists`]): 2.42's
/// 70 functions, or 3.x's (`holt_winters` renamed
/// `double_exponential_smoothing`; `mad_over_time`, `sort_by_label*`,
/// `histogram_avg`/`_stddev`/`_stdvar`, and the `limitk`/`limit_ratio`
/// aggregations added).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Compat {
    #[default]
    Prometheus2,
    Prometheus3,
}

/// Engine limits and semantics.
#[derive(Clone, Debug)]
pub struct EngineOptions {
    /// How far back an instant selector looks for a sample (Prometheus: 5m).
    pub lookback_delta_ms: i64,
    /// Most samples loaded from the store plus points held by evaluation
    /// (Prometheus' `--query.max-samples`, default 50M).
    pub max_samples: usize,
    /// Most series selected by one query, all selectors together.
    pub max_series: usize,
    /// Upper bound of a query's run time (Prometheus' `--query.timeout`, 2m);
    /// the `timeout` parameter can only shorten it.
    pub timeout: Duration,
    /// Subquery step when none is given (Prometheus' global evaluation interval, 1m).
    pub default_subquery_step_ms: i64,
    pub compat: Compat,
    /// When selections may read 5-minute rollups instead of raw samples.
    pub rollups: RollupPolicy,
}

/// When a selection reads 5-minute rollups ([`Resolution::Rollup5m`])
/// instead of raw samples. Rollups are read only where they give the raw
/// answer up to the window edges: an instant selector (the bucket's last
/// value), and `rate`, `increase`, `max_over_time`, `min_over_time`,
/// `sum_over_time` and `last_over_time` over ranges of at least two buckets
/// (one for the `*_over_time` functions). Everything else reads raw samples.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RollupPolicy {
    /// Raw samples only (`max_source_resolution=0s`).
    Never,
    /// Rollups when the evaluation step is at least this many ms (range
    /// queries only). The default, 25 minutes, is Thanos' `auto` (step / 5
    /// at least the 5-minute resolution): a window edge cuts at most a fifth
    /// of a step.
    Auto { min_step_ms: i64 },
    /// Rollups wherever they apply (`max_source_resolution=5m`).
    Always,
}

impl Default for RollupPolicy {
    fn default() -> Self {
        RollupPolicy::Auto {
            min_step_ms: 5 * ROLLUP_STEP_MS,
        }
    }
}

impl RollupPolicy {
    /// Parses Thanos' `max_source_resolution` parameter: `auto`, `0s`/`raw`
    /// or `5m` (any longer duration also allows the 5-minute rollups).
    pub fn from_param(value: &str) -> Result<RollupPolicy> {
        let v = value.trim();
        if v.is_empty() || v == "auto" {
            return Ok(RollupPolicy::default());
        }
        if v == "raw" {
            return Ok(RollupPolicy::Never);
        }
        let d = crate::params::parse_duration_param("max_source_resolution", v)?;
        let ms = d.as_millis() as i64;
        Ok(if ms == 0 {
            RollupPolicy::Never
        } else if ms >= ROLLUP_STEP_MS {
            RollupPolicy::Always
        } else {
            return Err(PromqlError::BadData(format!(
                "invalid parameter \"max_source_resolution\": {v:?} is below the only \
                 downsampled resolution, 5m; use auto, 0s (raw) or 5m"
            )));
        })
    }

    /// The resolution a selection is read at: `func` consumes it, `range_ms`
    /// is its range (0 for an instant selector), `step_ms` the grid step (0
    /// for an instant query).
    pub fn resolution(self, func: Option<&str>, range_ms: i64, step_ms: i64) -> Resolution {
        let allowed = match self {
            RollupPolicy::Never => false,
            RollupPolicy::Always => true,
            RollupPolicy::Auto { min_step_ms } => step_ms > 0 && step_ms >= min_step_ms,
        };
        if !allowed {
            return Resolution::Raw;
        }
        let field = if range_ms == 0 {
            // `timestamp()` would see the bucket's time, not the sample's.
            (func != Some("timestamp")).then_some(RollupField::Last)
        } else {
            match func {
                Some("rate" | "increase") if range_ms >= 2 * ROLLUP_STEP_MS => {
                    Some(RollupField::Counter)
                }
                Some(f) if range_ms >= ROLLUP_STEP_MS => match f {
                    "max_over_time" => Some(RollupField::Max),
                    "min_over_time" => Some(RollupField::Min),
                    "sum_over_time" => Some(RollupField::Sum),
                    "last_over_time" => Some(RollupField::Last),
                    _ => None,
                },
                _ => None,
            }
        };
        field.map_or(Resolution::Raw, Resolution::Rollup5m)
    }
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            lookback_delta_ms: 5 * 60 * 1000,
            max_samples: 50_000_000,
            max_series: 1_000_000,
            timeout: Duration::from_secs(120),
            default_subquery_step_ms: 60_000,
            compat: Compat::Prometheus2,
            rollups: RollupPolicy::default(),
        }
    }
}

/// A PromQL engine. Cheap to clone; holds no data.
#[derive(Clone, Debug, Default)]
pub struct Engine {
    opts: EngineOptions,
}

struct Planned {
    key: usize,
    matchers: Vec<Matcher>,
    range: TimeRange,
    hints: SelectHints,
}

impl Engine {
    pub fn new(opts: EngineOptions) -> Self {
        Engine { opts }
    }

    pub fn options(&self) -> &EngineOptions {
        &self.opts
    }

    /// `/api/v1/query`: evaluates `query` at `time_ms`. `timeout` (the
    /// request's `timeout` parameter) shortens the engine's own timeout.
    pub async fn query(
        &self,
        querier: &dyn Querier,
        query: &str,
        time_ms: i64,
        timeout: Option<Duration>,
    ) -> Result<QueryResult> {
        let expr = parse(query)?;
        let g = Grid::new(time_ms, time_ms, 0);
        let ctx = RunCtx {
            querier,
            query,
            expr: &expr,
            query_start: time_ms,
            query_end: time_ms,
            deadline: self.deadline(timeout),
        };
        let val = self.run(&ctx, g).await?;
        Ok(match val {
            Val::Scalar(v) => QueryResult::Scalar {
                timestamp_ms: time_ms,
                value: v.first().copied().unwrap_or(f64::NAN),
            },
            Val::Str(s) => QueryResult::String {
                timestamp_ms: time_ms,
                value: s,
            },
            Val::Vector(vs) => QueryResult::Vector(
                vs.into_iter()
                    .filter_map(|s| {
                        s.vals.first().map(|v| InstantSample {
                            labels: s.labels,
                            timestamp_ms: time_ms,
                            value: *v,
                        })
                    })
                    .collect(),
            ),
            Val::Matrix(m) => QueryResult::Matrix(
                m.into_iter()
                    .map(|s| RangeSeries {
                        labels: s.labels,
                        points: s
                            .points
                            .into_iter()
                            .map(|p| (p.timestamp_ms, p.value))
                            .collect(),
                    })
                    .collect(),
            ),
        })
    }

    /// `/api/v1/query_range`: evaluates `query` at `start_ms`, `start_ms + step_ms`, … ≤ `end_ms`.
    /// Validate the parameters first with [`crate::params::parse_range_params`].
    pub async fn query_range(
        &self,
        querier: &dyn Querier,
        query: &str,
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
        timeout: Option<Duration>,
    ) -> Result<QueryResult> {
        if step_ms <= 0 {
            return Err(PromqlError::param(
                "step",
                "zero or negative query resolution step widths are not accepted, try a positive integer",
            ));
        }
        if end_ms < start_ms {
            return Err(PromqlError::param(
                "end",
                "end timestamp must not be before start time",
            ));
        }
        let expr = parse(query)?;
        match expr.value_type() {
            ValueType::Vector | ValueType::Scalar => {}
            t => {
                return Err(PromqlError::BadData(format!(
                    "invalid parameter \"query\": invalid expression type {:?} for range query, must be scalar or instant vector (query {query:?})",
                    documented_type(t)
                )))
            }
        }
        let g = Grid::new(start_ms, end_ms, step_ms);
        let ctx = RunCtx {
            querier,
            query,
            expr: &expr,
            query_start: start_ms,
            query_end: end_ms,
            deadline: self.deadline(timeout),
        };
        let mut out = match self.range_slice(&ctx, g).await {
            Err(PromqlError::TooManySamples { .. }) if g.n >= 2 => {
                self.range_sliced(&ctx, g).await?
            }
            r => r?,
        };
        out.sort_by(|a, b| a.labels.cmp(&b.labels));
        Ok(QueryResult::Matrix(out))
    }

    /// A range query too large for one pass, evaluated in time slices.
    ///
    /// Every step of a range query is evaluated on its own (a range vector,
    /// a lookback or a subquery grid at step `t` depends only on `t`; `@
    /// start()`/`@ end()` keep the whole query's bounds), so evaluating the
    /// steps in slices and concatenating each series' points gives exactly
    /// the one-pass answer. The samples limit then bounds what one slice
    /// loads, as Prometheus' `--query.max-samples` bounds what is in memory at
    /// once, rather than the whole range. A slice over the limit is split in
    /// four (a single step over it fails the query); the points returned,
    /// all slices together, stay within the limit too.
    async fn range_sliced(&self, ctx: &RunCtx<'_>, g: Grid) -> Result<Vec<RangeSeries>> {
        let mut merged: HashMap<kube_insight_core::Labels, Vec<(i64, f64)>> = HashMap::new();
        let mut points = 0usize;
        // Step ranges [first, last) still to evaluate, the earliest on top.
        let mut todo = split_steps(0, g.n, SLICES_PER_SPLIT);
        todo.reverse();
        while let Some((first, last)) = todo.pop() {
            let slice = Grid::new(g.ts(first), g.ts(last - 1), g.interval);
            match self.range_slice(ctx, slice).await {
                Ok(series) => {
                    for s in series {
                        points += s.points.len();
                        merged.entry(s.labels).or_default().extend(s.points);
                    }
                    if points > self.opts.max_samples {
                        return Err(PromqlError::TooManySamples {
                            query: ctx.query.to_string(),
                            loaded: points,
                            limit: self.opts.max_samples,
                        });
                    }
                }
                Err(PromqlError::TooManySamples { .. }) if last - first >= 2 => {
                    let mut parts = split_steps(first, last, SLICES_PER_SPLIT);
                    parts.reverse();
                    todo.extend(parts);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(merged
            .into_iter()
            .map(|(labels, points)| RangeSeries { labels, points })
            .collect())
    }

    /// One pass of a range query over the steps of `g`, unsorted.
    async fn range_slice(&self, ctx: &RunCtx<'_>, g: Grid) -> Result<Vec<RangeSeries>> {
        let val = self.run(ctx, g).await?;
        Ok(match val {
            Val::Scalar(v) => vec![RangeSeries {
                labels: Default::default(),
                points: v
                    .into_iter()
                    .enumerate()
                    .map(|(i, x)| (g.ts(i), x))
                    .collect(),
            }],
            Val::Vector(vs) => vs
                .into_iter()
                .map(|s| RangeSeries {
                    labels: s.labels,
                    points: s
                        .steps
                        .iter()
                        .zip(&s.vals)
                        .map(|(st, x)| (g.ts(*st as usize), *x))
                        .collect(),
                })
                .collect(),
            _ => {
                return Err(PromqlError::Internal(format!(
                    "range query {:?} evaluated to a non-numeric value",
                    ctx.query
                )))
            }
        })
    }

    /// The deadline of a query: the engine's timeout, or the request's
    /// `timeout` parameter when that is shorter.
    fn deadline(&self, timeout: Option<Duration>) -> Deadline {
        let timeout = match timeout {
            Some(t) if t < self.opts.timeout => t,
            _ => self.opts.timeout,
        };
        Deadline {
            at: Instant::now().checked_add(timeout),
            timeout_ms: timeout.as_millis() as u64,
        }
    }

    /// Plans, fetches and evaluates `ctx.expr` over the steps of `g`.
    async fn run(&self, ctx: &RunCtx<'_>, g: Grid) -> Result<Val> {
        let RunCtx {
            querier,
            query,
            expr,
            query_start,
            query_end,
            deadline:
                Deadline {
                    at: deadline,
                    timeout_ms,
                },
        } = *ctx;
        validate(expr, query, self.opts.compat)?;
        let mut planned = Vec::new();
        plan(
            expr,
            &g,
            None,
            &self.opts,
            query_start,
            query_end,
            &mut planned,
        )?;
        let futs = planned.iter().map(|p| {
            let mut h = p.hints.clone();
            h.max_series = self.opts.max_series;
            h.max_samples = self.opts.max_samples;
            async move { querier.select(&p.matchers, p.range, &h).await }
        });
        let joined = futures::future::join_all(futs);
        let results = match deadline {
            Some(d) => match tokio::time::timeout_at(d.into(), joined).await {
                Ok(r) => r,
                Err(_) => {
                    return Err(PromqlError::Timeout {
                        query: query.to_string(),
                        phase: "query preparation",
                        timeout_ms,
                    })
                }
            },
            None => joined.await,
        };
        let mut fetched: HashMap<usize, Vec<TimeSeries>> = HashMap::new();
        let (mut nseries, mut nsamples) = (0usize, 0usize);
        for (p, r) in planned.iter().zip(results) {
            let mut series = r.map_err(|e| match e {
                QuerierError::TooManySamples { limit } => PromqlError::TooManySamples {
                    query: query.to_string(),
                    loaded: nsamples.saturating_add(limit).saturating_add(1),
                    limit,
                },
                e => e.into(),
            })?;
            nseries += series.len();
            if nseries > self.opts.max_series {
                return Err(PromqlError::TooManySeries {
                    query: query.to_string(),
                    selected: nseries,
                    limit: self.opts.max_series,
                });
            }
            nsamples += series.iter().map(|s| s.samples.len()).sum::<usize>();
            if nsamples > self.opts.max_samples {
                return Err(PromqlError::TooManySamples {
                    query: query.to_string(),
                    loaded: nsamples,
                    limit: self.opts.max_samples,
                });
            }
            sort_by_labels(&mut series);
            series.dedup_by(|a, b| a.labels == b.labels);
            for s in &mut series {
                if !s
                    .samples
                    .windows(2)
                    .all(|w| w[0].timestamp_ms <= w[1].timestamp_ms)
                {
                    s.samples.sort_by_key(|x| x.timestamp_ms);
                }
            }
            fetched.insert(p.key, series);
        }
        let mut ev = Evaluator {
            fetched,
            opts: &self.opts,
            query,
            query_start,
            query_end,
            deadline,
            timeout_ms,
            points: 0,
            checks: 0,
        };
        ev.eval(expr, &g)
    }
}

/// What every pass of one query shares.
struct RunCtx<'a> {
    querier: &'a dyn Querier,
    query: &'a str,
    expr: &'a Expr,
    /// The whole query's bounds (`@ start()`, `@ end()`), whatever slice runs.
    query_start: i64,
    query_end: i64,
    deadline: Deadline,
}

/// When a query must be done by, one instant for all its passes.
#[derive(Clone, Copy)]
struct Deadline {
    at: Option<Instant>,
    timeout_ms: u64,
}

/// How many slices a range query, or a slice of it, is split into when it
/// loads more samples than the limit.
const SLICES_PER_SPLIT: usize = 4;

/// Splits the steps `[first, last)` into at most `parts` contiguous,
/// non-empty ranges of near-equal length, in order.
fn split_steps(first: usize, last: usize, parts: usize) -> Vec<(usize, usize)> {
    let n = last.saturating_sub(first);
    let parts = parts.clamp(1, n.max(1));
    (0..parts)
        .map(|i| (first + n * i / parts, first + n * (i + 1) / parts))
        .filter(|(a, b)| a < b)
        .collect()
}

/// Sorts series by label set (Prometheus' order) comparing one flat key per
/// series (`name 0x00 value 0x00 …` orders exactly as the label sets do).
fn sort_by_labels(series: &mut Vec<TimeSeries>) {
    if series.windows(2).all(|w| w[0].labels <= w[1].labels) {
        return;
    }
    let mut keyed: Vec<(Vec<u8>, TimeSeries)> = std::mem::take(series)
        .into_iter()
        .map(|s| {
            let mut k = Vec::with_capacity(128);
            for l in s.labels.iter() {
                k.extend_from_slice(l.name.as_bytes());
                k.push(0);
                k.extend_from_slice(l.value.as_bytes());
                k.push(0);
            }
            (k, s)
        })
        .collect();
    keyed.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    *series = keyed.into_iter().map(|(_, s)| s).collect();
}

fn documented_type(t: ValueType) -> &'static str {
    match t {
        ValueType::Vector => "instant vector",
        ValueType::Matrix => "range vector",
        ValueType::Scalar => "scalar",
        ValueType::String => "string",
    }
}

/// Teaches the parser Prometheus 2's `holt_winters` (promql-parser knows
/// only its 3.x name, `double_exponential_smoothing`).
fn register_functions() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        use promql_parser::parser::function::{register_extra_functions, Function};
        // Only fails on a clash with a built-in name, which holt_winters is not.
        let _ = register_extra_functions(vec![Function::new(
            "holt_winters",
            vec![ValueType::Matrix, ValueType::Scalar, ValueType::Scalar],
            0,
            ValueType::Vector,
            false,
        )]);
    });
}

/// Parses a query, mapping the parser's error to `bad_data`.
pub fn parse(query: &str) -> Result<Expr> {
    register_functions();
    promql_parser::parser::parse(query).map_err(|reason| PromqlError::Parse {
        query: query.to_string(),
        reason: reason.trim_end_matches('.').to_string(),
    })
}

/// The functions of Prometheus 2.42 (promql/parser/functions.go): the
/// `Compat::Prometheus2` set. Every one is evaluated; the native-histogram
/// ones (`histogram_count`, `histogram_sum`, `histogram_fraction`) skip
/// float samples, so over kube-insight's store they answer nothing, as
/// Prometheus does over float series.
pub const FUNCTIONS_PROMETHEUS2: &[&str] = &[
    "abs",
    "absent",
    "absent_over_time",
    "acos",
    "acosh",
    "asin",
    "asinh",
    "atan",
    "atanh",
    "avg_over_time",
    "ceil",
    "changes",
    "clamp",
    "clamp_max",
    "clamp_min",
    "cos",
    "cosh",
    "count_over_time",
    "days_in_month",
    "day_of_month",
    "day_of_week",
    "day_of_year",
    "deg",
    "delta",
    "deriv",
    "exp",
    "floor",
    "histogram_count",
    "histogram_fraction",
    "histogram_quantile",
    "histogram_sum",
    "holt_winters",
    "hour",
    "idelta",
    "increase",
    "irate",
    "label_join",
    "label_replace",
    "last_over_time",
    "ln",
    "log10",
    "log2",
    "max_over_time",
    "min_over_time",
    "minute",
    "month",
    "pi",
    "predict_linear",
    "present_over_time",
    "quantile_over_time",
    "rad",
    "rate",
    "resets",
    "round",
    "scalar",
    "sgn",
    "sin",
    "sinh",
    "sort",
    "sort_desc",
    "sqrt",
    "stddev_over_time",
    "stdvar_over_time",
    "sum_over_time",
    "tan",
    "tanh",
    "time",
    "timestamp",
    "vector",
    "year",
];

/// What Prometheus 3.x changed in the function set (`Compat::Prometheus3`):
/// `holt_winters` became `double_exponential_smoothing`, and these were
/// added (some behind `--enable-feature=promql-experimental-functions`).
const FUNCTIONS_PROMETHEUS3_ADDED: &[&str] = &[
    "double_exponential_smoothing",
    "mad_over_time",
    "sort_by_label",
    "sort_by_label_desc",
    "histogram_avg",
    "histogram_stddev",
    "histogram_stdvar",
];

/// Whether `name` is a function of the Prometheus release `compat` reproduces.
pub fn function_exists(name: &str, compat: Compat) -> bool {
    match compat {
        Compat::Prometheus2 => FUNCTIONS_PROMETHEUS2.contains(&name),
        Compat::Prometheus3 => {
            (name != "holt_winters" && FUNCTIONS_PROMETHEUS2.contains(&name))
                || FUNCTIONS_PROMETHEUS3_ADDED.contains(&name)
        }
    }
}

/// Rejects, before any data is read, every construct the evaluator does not implement.
fn validate(e: &Expr, query: &str, compat: Compat) -> Result<()> {
    let unsupported = |what: String| PromqlError::Unsupported {
        query: query.to_string(),
        what,
    };
    let unknown = |reason: String| PromqlError::Parse {
        query: query.to_string(),
        reason,
    };
    let validate = |e: &Expr, query: &str| validate(e, query, compat);
    match e {
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) => Ok(()),
        Expr::Paren(p) => validate(&p.expr, query),
        Expr::Unary(u) => validate(&u.expr, query),
        Expr::VectorSelector(vs) => validate_selector(vs, query),
        Expr::MatrixSelector(ms) => validate_selector(&ms.vs, query),
        Expr::Subquery(sq) => validate(&sq.expr, query),
        Expr::Aggregate(a) => {
            match a.op.id() {
                T_SUM | T_AVG | T_COUNT | T_MIN | T_MAX | T_GROUP | T_STDDEV | T_STDVAR
                | T_TOPK | T_BOTTOMK | T_QUANTILE | T_COUNT_VALUES => {}
                T_LIMITK | T_LIMIT_RATIO if compat == Compat::Prometheus3 => {}
                T_LIMITK | T_LIMIT_RATIO => {
                    return Err(unknown(format!(
                        "{} is an aggregation of Prometheus 3, not of the Prometheus 2 this engine reproduces",
                        a.op
                    )))
                }
                _ => return Err(unsupported(format!("aggregation {}", a.op))),
            }
            if let Some(p) = &a.param {
                validate(p, query)?;
            }
            validate(&a.expr, query)
        }
        Expr::Binary(b) => {
            match b.op.id() {
                T_ADD | T_SUB | T_MUL | T_DIV | T_MOD | T_POW | T_ATAN2 | T_EQLC | T_NEQ
                | T_GTR | T_LSS | T_GTE | T_LTE | T_LAND | T_LOR | T_LUNLESS => {}
                _ => return Err(unsupported(format!("binary operator {}", b.op))),
            }
            if let Some(m) = &b.modifier {
                if m.fill_values.lhs.is_some() || m.fill_values.rhs.is_some() {
                    return Err(unsupported("fill modifiers".into()));
                }
            }
            validate(&b.lhs, query)?;
            validate(&b.rhs, query)
        }
        Expr::Call(c) => {
            let name = c.func.name;
            if !function_exists(name, compat) {
                let other = match compat {
                    Compat::Prometheus2 => Compat::Prometheus3,
                    Compat::Prometheus3 => Compat::Prometheus2,
                };
                if compat == Compat::Prometheus3 && !function_exists(name, other) {
                    // Newer experimental functions the parser knows.
                    return Err(unsupported(format!("function {name}()")));
                }
                return Err(unknown(format!("unknown function with name {name:?}")));
            }
            for a in &c.args.args {
                validate(a, query)?;
            }
            Ok(())
        }
        Expr::Extension(_) => Err(unsupported("extension expressions".into())),
    }
}

fn validate_selector(vs: &VectorSelector, query: &str) -> Result<()> {
    if !vs.matchers.or_matchers.is_empty() {
        return Err(PromqlError::Unsupported {
            query: query.to_string(),
            what: "\"or\" inside label matchers".into(),
        });
    }
    Ok(())
}

/// The matchers of every selector of a query, in the order they appear,
/// read before any evaluation (the API checks a token's clusters with them).
pub fn selector_matcher_sets(query: &str) -> Result<Vec<Vec<Matcher>>> {
    fn walk(e: &Expr, out: &mut Vec<Vec<Matcher>>) -> Result<()> {
        match e {
            Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => Ok(()),
            Expr::Paren(p) => walk(&p.expr, out),
            Expr::Unary(u) => walk(&u.expr, out),
            Expr::VectorSelector(vs) => {
                out.push(selector_matchers(vs)?);
                Ok(())
            }
            Expr::MatrixSelector(ms) => {
                out.push(selector_matchers(&ms.vs)?);
                Ok(())
            }
            Expr::Subquery(sq) => walk(&sq.expr, out),
            Expr::Aggregate(a) => {
                if let Some(p) = &a.param {
                    walk(p, out)?;
                }
                walk(&a.expr, out)
            }
            Expr::Binary(b) => {
                walk(&b.lhs, out)?;
                walk(&b.rhs, out)
            }
            Expr::Call(c) => {
                for a in &c.args.args {
                    walk(a, out)?;
                }
                Ok(())
            }
        }
    }
    let mut out = Vec::new();
    walk(&parse(query)?, &mut out)?;
    Ok(out)
}

/// Core matchers of a selector (the metric name included).
pub(crate) fn selector_matchers(vs: &VectorSelector) -> Result<Vec<Matcher>> {
    let mut out = Vec::with_capacity(vs.matchers.matchers.len() + 1);
    if let Some(n) = &vs.name {
        out.push(Matcher::eq(METRIC_NAME, n.clone()));
    }
    for m in &vs.matchers.matchers {
        let op = match m.op {
            PMatchOp::Equal => MatchOp::Equal,
            PMatchOp::NotEqual => MatchOp::NotEqual,
            PMatchOp::Re(_) => MatchOp::RegexMatch,
            PMatchOp::NotRe(_) => MatchOp::RegexNoMatch,
        };
        out.push(
            Matcher::new(op, m.name.clone(), m.value.clone())
                .map_err(|e| PromqlError::BadData(e.to_string()))?,
        );
    }
    Ok(out)
}

fn plan(
    e: &Expr,
    g: &Grid,
    func: Option<&str>,
    opts: &EngineOptions,
    qs: i64,
    qe: i64,
    out: &mut Vec<Planned>,
) -> Result<()> {
    let window = |vs: &VectorSelector| -> (i64, i64) {
        let off = offset_ms(&vs.offset);
        match at_ms(&vs.at, qs, qe) {
            Some(a) => (a - off, a - off),
            None => (g.start - off, g.end - off),
        }
    };
    match e {
        Expr::NumberLiteral(_) | Expr::StringLiteral(_) | Expr::Extension(_) => Ok(()),
        Expr::Paren(p) => plan(&p.expr, g, func, opts, qs, qe, out),
        Expr::Unary(u) => plan(&u.expr, g, func, opts, qs, qe, out),
        Expr::VectorSelector(vs) => {
            let (lo, hi) = window(vs);
            out.push(Planned {
                key: selector_key(vs),
                matchers: selector_matchers(vs)?,
                range: TimeRange {
                    start_ms: lo.saturating_sub(opts.lookback_delta_ms),
                    end_ms: hi,
                },
                hints: SelectHints {
                    step_ms: g.interval,
                    range_ms: 0,
                    func: func.map(str::to_string),
                    resolution: opts.rollups.resolution(func, 0, g.interval),
                    ..Default::default()
                },
            });
            Ok(())
        }
        Expr::MatrixSelector(ms) => {
            let (lo, hi) = window(&ms.vs);
            let range = ms.range.as_millis() as i64;
            out.push(Planned {
                key: selector_key(&ms.vs),
                matchers: selector_matchers(&ms.vs)?,
                range: TimeRange {
                    start_ms: lo.saturating_sub(range),
                    end_ms: hi,
                },
                hints: SelectHints {
                    step_ms: g.interval,
                    range_ms: range,
                    func: func.map(str::to_string),
                    resolution: opts.rollups.resolution(func, range, g.interval),
                    ..Default::default()
                },
            });
            Ok(())
        }
        Expr::Subquery(sq) => {
            let inner = subquery_grid(sq, g, qs, qe, opts.default_subquery_step_ms);
            plan(&sq.expr, &inner, None, opts, qs, qe, out)
        }
        Expr::Aggregate(a) => {
            if let Some(p) = &a.param {
                plan(p, g, None, opts, qs, qe, out)?;
            }
            plan(&a.expr, g, None, opts, qs, qe, out)
        }
        Expr::Binary(b) => {
            plan(&b.lhs, g, None, opts, qs, qe, out)?;
            plan(&b.rhs, g, None, opts, qs, qe, out)
        }
        Expr::Call(c) => {
            for a in &c.args.args {
                plan(a, g, Some(c.func.name), opts, qs, qe, out)?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn selector_matcher_sets_visit_every_selector() {
        let sets = selector_matcher_sets(
            r#"sum by (pod) (rate(a{cluster="x"}[5m])) / on() group_left topk(3, b{cluster=~"y|z"}) or label_replace(max_over_time(c[1h:1m] offset 5m), "d", "$1", "e", "(.*)")"#,
        )
        .unwrap();
        let names: Vec<String> = sets
            .iter()
            .map(|s| {
                s.iter()
                    .map(|m| format!("{}{:?}{}", m.name, m.op, m.value))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .collect();
        assert_eq!(
            names,
            vec![
                "__name__Equala,clusterEqualx",
                "__name__Equalb,clusterRegexMatchy|z",
                "__name__Equalc",
            ]
        );
        assert!(selector_matcher_sets("sum(").is_err());
        assert!(selector_matcher_sets("1 + 2").unwrap().is_empty());
    }
}
