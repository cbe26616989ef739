//! The evaluator: every node is evaluated once over all steps of its grid
//! (as Prometheus' engine does), on series fetched beforehand.

use crate::engine::{Compat, EngineOptions};
use crate::error::PromqlError;
use crate::functions as f;
use kube_insight_core::{is_stale_nan, Labels, Sample, TimeSeries, METRIC_NAME};
use promql_parser::label::Labels as PLabels;
use promql_parser::parser::token::{
    T_ADD, T_ATAN2, T_AVG, T_BOTTOMK, T_COUNT, T_COUNT_VALUES, T_DIV, T_EQLC, T_GROUP, T_GTE,
    T_GTR, T_LAND, T_LIMITK, T_LIMIT_RATIO, T_LOR, T_LSS, T_LTE, T_LUNLESS, T_MAX, T_MIN, T_MOD,
    T_MUL, T_NEQ, T_POW, T_QUANTILE, T_STDDEV, T_STDVAR, T_SUB, T_SUM, T_TOPK,
};
use promql_parser::parser::value::ValueType;
use promql_parser::parser::{
    AggregateExpr, AtModifier, BinaryExpr, Call, Expr, LabelModifier, Offset, SubqueryExpr,
    VectorMatchCardinality, VectorSelector,
};
use std::collections::HashMap;
use std::time::{Instant, SystemTime};

mod aggregate;
mod calls;

pub(crate) type Result<T, E = PromqlError> = std::result::Result<T, E>;

pub(crate) const DUPLICATE_LABELSET: &str = "vector cannot contain metrics with the same labelset";

/// The evaluation timestamps of one node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Grid {
    pub start: i64,
    pub end: i64,
    pub interval: i64,
    pub n: usize,
}

impl Grid {
    pub fn new(start: i64, end: i64, interval: i64) -> Grid {
        let n = if interval <= 0 || end <= start {
            1
        } else {
            ((end - start) / interval) as usize + 1
        };
        Grid {
            start,
            end,
            interval,
            n,
        }
    }

    pub fn ts(&self, i: usize) -> i64 {
        self.start + i as i64 * self.interval
    }
}

/// A series of an instant-vector node: points at grid steps.
#[derive(Clone, Debug, Default)]
pub(crate) struct Series {
    pub labels: Labels,
    pub steps: Vec<u32>,
    pub vals: Vec<f64>,
}

/// A series of raw samples (range-vector results).
#[derive(Clone, Debug)]
pub(crate) struct RawSeries {
    pub labels: Labels,
    pub points: Vec<Sample>,
}

pub(crate) enum Val {
    Scalar(Vec<f64>),
    Vector(Vec<Series>),
    Matrix(Vec<RawSeries>),
    Str(String),
}

/// Collects output series keyed by label set, as Prometheus' rangeEval does,
/// failing when two samples with the same labels land on one step.
#[derive(Default)]
struct Builder {
    index: HashMap<Labels, usize>,
    out: Vec<Series>,
}

impl Builder {
    fn slot(&mut self, labels: Labels) -> usize {
        if let Some(&i) = self.index.get(&labels) {
            return i;
        }
        let i = self.out.len();
        self.index.insert(labels.clone(), i);
        self.out.push(Series {
            labels,
            ..Default::default()
        });
        i
    }

    /// Appends a point; steps must arrive in ascending order per slot.
    fn push(&mut self, slot: usize, step: u32, v: f64) -> Result<()> {
        let s = &mut self.out[slot];
        if s.steps.last() == Some(&step) {
            return Err(PromqlError::Execution(DUPLICATE_LABELSET.into()));
        }
        s.steps.push(step);
        s.vals.push(v);
        Ok(())
    }

    /// Adds a whole series, merging with an existing one of the same labels.
    fn add(&mut self, s: Series) -> Result<()> {
        if s.steps.is_empty() {
            return Ok(());
        }
        match self.index.get(&s.labels) {
            None => {
                self.index.insert(s.labels.clone(), self.out.len());
                self.out.push(s);
                Ok(())
            }
            Some(&i) => {
                let a = std::mem::take(&mut self.out[i]);
                let mut m = Series {
                    labels: a.labels,
                    steps: Vec::with_capacity(a.steps.len() + s.steps.len()),
                    vals: Vec::with_capacity(a.steps.len() + s.steps.len()),
                };
                let (mut x, mut y) = (0, 0);
                while x < a.steps.len() || y < s.steps.len() {
                    let take_a = match (a.steps.get(x), s.steps.get(y)) {
                        (Some(p), Some(q)) if p == q => {
                            return Err(PromqlError::Execution(DUPLICATE_LABELSET.into()))
                        }
                        (Some(p), Some(q)) => p < q,
                        (Some(_), None) => true,
                        _ => false,
                    };
                    if take_a {
                        m.steps.push(a.steps[x]);
                        m.vals.push(a.vals[x]);
                        x += 1;
                    } else {
                        m.steps.push(s.steps[y]);
                        m.vals.push(s.vals[y]);
                        y += 1;
                    }
                }
                self.out[i] = m;
                Ok(())
            }
        }
    }

    fn finish(self) -> Vec<Series> {
        self.out
            .into_iter()
            .filter(|s| !s.steps.is_empty())
            .collect()
    }
}

/// Cursor over a series' steps, advanced step by step.
struct Cursor {
    pos: usize,
}

impl Cursor {
    #[inline]
    fn at(&mut self, s: &Series, step: u32) -> Option<f64> {
        while self.pos < s.steps.len() && s.steps[self.pos] < step {
            self.pos += 1;
        }
        if self.pos < s.steps.len() && s.steps[self.pos] == step {
            Some(s.vals[self.pos])
        } else {
            None
        }
    }
}

pub(crate) fn system_time_ms(t: &SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => ((d.as_nanos() + 500_000) / 1_000_000) as i64,
        Err(e) => -(((e.duration().as_nanos() + 500_000) / 1_000_000) as i64),
    }
}

pub(crate) fn offset_ms(o: &Option<Offset>) -> i64 {
    match o {
        None => 0,
        Some(Offset::Pos(d)) => d.as_millis() as i64,
        Some(Offset::Neg(d)) => -(d.as_millis() as i64),
    }
}

pub(crate) fn at_ms(at: &Option<AtModifier>, query_start: i64, query_end: i64) -> Option<i64> {
    match at {
        None => None,
        Some(AtModifier::Start) => Some(query_start),
        Some(AtModifier::End) => Some(query_end),
        Some(AtModifier::At(t)) => Some(system_time_ms(t)),
    }
}

pub(crate) fn selector_key(vs: &VectorSelector) -> usize {
    vs as *const VectorSelector as usize
}

/// Inner grid of a subquery evaluated for an outer grid (Prometheus' alignment).
pub(crate) fn subquery_grid(
    sq: &SubqueryExpr,
    outer: &Grid,
    query_start: i64,
    query_end: i64,
    default_step: i64,
) -> Grid {
    let step = sq
        .step
        .map(|d| d.as_millis() as i64)
        .filter(|s| *s > 0)
        .unwrap_or(default_step)
        .max(1);
    let off = offset_ms(&sq.offset);
    let range = sq.range.as_millis() as i64;
    let (s, e) = match at_ms(&sq.at, query_start, query_end) {
        Some(a) => (a - off - range, a - off),
        None => (outer.start - off - range, outer.end - off),
    };
    // Go's integer division truncates toward zero.
    let mut start = step * (s / step);
    if start < s {
        start += step;
    }
    Grid::new(start, e, step)
}

pub(crate) struct Evaluator<'a> {
    pub fetched: HashMap<usize, Vec<TimeSeries>>,
    pub opts: &'a EngineOptions,
    pub query: &'a str,
    pub query_start: i64,
    pub query_end: i64,
    pub deadline: Option<Instant>,
    pub timeout_ms: u64,
    pub points: usize,
    pub checks: u32,
}

/// Input of a range function: raw samples (stale markers removed) and the window shape.
struct RangeInput {
    series: Vec<(Labels, Vec<Sample>)>,
    range: i64,
    offset: i64,
    at: Option<i64>,
}

impl<'a> Evaluator<'a> {
    fn closed(&self) -> bool {
        self.opts.compat == Compat::Prometheus2
    }

    #[inline]
    fn check(&mut self) -> Result<()> {
        self.checks = self.checks.wrapping_add(1);
        if self.checks.is_multiple_of(256) {
            if let Some(d) = self.deadline {
                if Instant::now() >= d {
                    return Err(PromqlError::Timeout {
                        query: self.query.to_string(),
                        phase: "query execution",
                        timeout_ms: self.timeout_ms,
                    });
                }
            }
        }
        Ok(())
    }

    fn count_points(&mut self, n: usize) -> Result<()> {
        self.points = self.points.saturating_add(n);
        if self.points > self.opts.max_samples {
            return Err(PromqlError::TooManySamples {
                query: self.query.to_string(),
                loaded: self.points,
                limit: self.opts.max_samples,
            });
        }
        Ok(())
    }

    fn unsupported(&self, what: impl Into<String>) -> PromqlError {
        PromqlError::Unsupported {
            query: self.query.to_string(),
            what: what.into(),
        }
    }

    pub fn eval(&mut self, e: &Expr, g: &Grid) -> Result<Val> {
        self.check()?;
        let v = match e {
            Expr::NumberLiteral(n) => Val::Scalar(vec![n.val; g.n]),
            Expr::StringLiteral(s) => Val::Str(s.val.clone()),
            Expr::Paren(p) => self.eval(&p.expr, g)?,
            Expr::Unary(u) => match self.eval(&u.expr, g)? {
                Val::Scalar(mut v) => {
                    v.iter_mut().for_each(|x| *x = -*x);
                    Val::Scalar(v)
                }
                Val::Vector(mut vs) => {
                    for s in &mut vs {
                        s.labels.remove(METRIC_NAME);
                        s.vals.iter_mut().for_each(|x| *x = -*x);
                    }
                    check_unique(&vs)?;
                    Val::Vector(vs)
                }
                _ => return Err(self.unsupported("unary minus on a non-numeric expression")),
            },
            Expr::VectorSelector(vs) => Val::Vector(self.eval_selector(vs, g)?),
            Expr::MatrixSelector(ms) => {
                let input = self.range_input_selector(&ms.vs, ms.range.as_millis() as i64)?;
                Val::Matrix(self.materialize_windows(input, g)?)
            }
            Expr::Subquery(sq) => {
                let input = self.range_input_subquery(sq, g)?;
                Val::Matrix(self.materialize_windows(input, g)?)
            }
            Expr::Aggregate(a) => Val::Vector(self.eval_aggregate(a, g)?),
            Expr::Binary(b) => self.eval_binary(b, g)?,
            Expr::Call(c) => self.eval_call(c, g)?,
            Expr::Extension(_) => return Err(self.unsupported("extension expressions")),
        };
        if let Val::Vector(vs) = &v {
            let n: usize = vs.iter().map(|s| s.steps.len()).sum();
            self.count_points(n)?;
        }
        Ok(v)
    }

    fn eval_vector(&mut self, e: &Expr, g: &Grid) -> Result<Vec<Series>> {
        match self.eval(e, g)? {
            Val::Vector(v) => Ok(v),
            _ => Err(PromqlError::BadData(format!(
                "expected an instant vector for {e}"
            ))),
        }
    }

    fn eval_scalar(&mut self, e: &Expr, g: &Grid) -> Result<Vec<f64>> {
        match self.eval(e, g)? {
            Val::Scalar(v) => Ok(v),
            _ => Err(PromqlError::BadData(format!("expected a scalar for {e}"))),
        }
    }

    // ---------------------------------------------------------------- selectors

    fn eval_selector(&mut self, vs: &VectorSelector, g: &Grid) -> Result<Vec<Series>> {
        let data = self.take_fetched(vs)?;
        self.eval_selector_on(&data, vs, g, false)
    }

    fn eval_selector_on(
        &mut self,
        data: &[TimeSeries],
        vs: &VectorSelector,
        g: &Grid,
        timestamps: bool,
    ) -> Result<Vec<Series>> {
        let off = offset_ms(&vs.offset);
        let at = at_ms(&vs.at, self.query_start, self.query_end);
        let lookback = self.opts.lookback_delta_ms;
        let closed = self.closed();
        let mut out = Vec::with_capacity(data.len());
        for ts in data {
            self.check()?;
            let samples = &ts.samples;
            let mut s = Series {
                labels: ts.labels.clone(),
                steps: Vec::new(),
                vals: Vec::new(),
            };
            let pick = |idx: usize, rt: i64| -> Option<f64> {
                // idx: number of samples with t <= rt.
                if idx == 0 {
                    return None;
                }
                let smp = samples[idx - 1];
                let lim = rt - lookback;
                let ok = if closed {
                    smp.timestamp_ms >= lim
                } else {
                    smp.timestamp_ms > lim
                };
                if !ok || is_stale_nan(smp.value) {
                    None
                } else {
                    Some(if timestamps {
                        smp.timestamp_ms as f64 / 1000.0
                    } else {
                        smp.value
                    })
                }
            };
            if let Some(a) = at {
                let rt = a - off;
                let idx = samples.partition_point(|x| x.timestamp_ms <= rt);
                if let Some(v) = pick(idx, rt) {
                    s.steps = (0..g.n as u32).collect();
                    s.vals = vec![v; g.n];
                }
            } else {
                let mut idx = 0usize;
                for i in 0..g.n {
                    let rt = g.ts(i) - off;
                    while idx < samples.len() && samples[idx].timestamp_ms <= rt {
                        idx += 1;
                    }
                    if let Some(v) = pick(idx, rt) {
                        s.steps.push(i as u32);
                        s.vals.push(v);
                    }
                }
            }
            if !s.steps.is_empty() {
                out.push(s);
            }
        }
        Ok(out)
    }

    /// Each selector node is evaluated exactly once, so its data is moved out.
    fn take_fetched(&mut self, vs: &VectorSelector) -> Result<Vec<TimeSeries>> {
        self.fetched.remove(&selector_key(vs)).ok_or_else(|| {
            PromqlError::Internal(format!("selector {vs} was not fetched before evaluation"))
        })
    }

    fn range_input_selector(&mut self, vs: &VectorSelector, range: i64) -> Result<RangeInput> {
        let data = self.take_fetched(vs)?;
        let series = data.into_iter().map(|ts| (ts.labels, ts.samples)).collect();
        Ok(RangeInput {
            series,
            range,
            offset: offset_ms(&vs.offset),
            at: at_ms(&vs.at, self.query_start, self.query_end),
        })
    }

    fn range_input_subquery(&mut self, sq: &SubqueryExpr, g: &Grid) -> Result<RangeInput> {
        let inner = subquery_grid(
            sq,
            g,
            self.query_start,
            self.query_end,
            self.opts.default_subquery_step_ms,
        );
        let v = self.eval_vector(&sq.expr, &inner)?;
        let series = v
            .into_iter()
            .map(|s| {
                let pts: Vec<Sample> = s
                    .steps
                    .iter()
                    .zip(&s.vals)
                    .map(|(st, v)| Sample::new(inner.ts(*st as usize), *v))
                    .collect();
                (s.labels, pts)
            })
            .collect();
        Ok(RangeInput {
            series,
            range: sq.range.as_millis() as i64,
            offset: offset_ms(&sq.offset),
            at: at_ms(&sq.at, self.query_start, self.query_end),
        })
    }

    /// Calls `f(step, window, range_end)` for every step whose window is not empty.
    fn windows(
        &self,
        points: &[Sample],
        g: &Grid,
        range: i64,
        offset: i64,
        at: Option<i64>,
        mut cb: impl FnMut(usize, &[Sample], i64),
    ) {
        let closed = self.closed();
        let bounds = |end: i64, lo: &mut usize, hi: &mut usize| {
            let start = end - range;
            while *hi < points.len() && points[*hi].timestamp_ms <= end {
                *hi += 1;
            }
            while *lo < *hi
                && (points[*lo].timestamp_ms < start
                    || (!closed && points[*lo].timestamp_ms == start))
            {
                *lo += 1;
            }
        };
        if let Some(a) = at {
            let end = a - offset;
            let (mut lo, mut hi) = (0, 0);
            bounds(end, &mut lo, &mut hi);
            if lo < hi {
                for i in 0..g.n {
                    cb(i, &points[lo..hi], end);
                }
            }
        } else {
            let (mut lo, mut hi) = (0, 0);
            for i in 0..g.n {
                let end = g.ts(i) - offset;
                bounds(end, &mut lo, &mut hi);
                if lo < hi {
                    cb(i, &points[lo..hi], end);
                }
            }
        }
    }

    /// A range vector as a query result (instant queries only): the window at the single step.
    fn materialize_windows(&mut self, input: RangeInput, g: &Grid) -> Result<Vec<RawSeries>> {
        let mut out = Vec::new();
        let mut total = 0usize;
        for (labels, pts) in &input.series {
            let pts = without_stale(pts);
            let pts: &[Sample] = &pts;
            let mut got = Vec::new();
            self.windows(pts, g, input.range, input.offset, input.at, |i, w, _| {
                if i == 0 {
                    got = w.to_vec();
                }
            });
            if !got.is_empty() {
                total += got.len();
                out.push(RawSeries {
                    labels: labels.clone(),
                    points: got,
                });
            }
        }
        self.count_points(total)?;
        Ok(out)
    }

    // ---------------------------------------------------------------- binary

    fn eval_binary(&mut self, b: &BinaryExpr, g: &Grid) -> Result<Val> {
        let op = b.op.id();
        let return_bool = b.modifier.as_ref().is_some_and(|m| m.return_bool);
        if let Some(m) = &b.modifier {
            if m.fill_values.lhs.is_some() || m.fill_values.rhs.is_some() {
                return Err(self.unsupported("fill modifiers"));
            }
        }
        if !matches!(
            op,
            T_ADD
                | T_SUB
                | T_MUL
                | T_DIV
                | T_MOD
                | T_POW
                | T_ATAN2
                | T_EQLC
                | T_NEQ
                | T_GTR
                | T_LSS
                | T_GTE
                | T_LTE
                | T_LAND
                | T_LOR
                | T_LUNLESS
        ) {
            return Err(self.unsupported(format!("binary operator {}", b.op)));
        }
        let lt = b.lhs.value_type();
        let rt = b.rhs.value_type();
        match (lt, rt) {
            (ValueType::Scalar, ValueType::Scalar) => {
                let l = self.eval_scalar(&b.lhs, g)?;
                let r = self.eval_scalar(&b.rhs, g)?;
                Ok(Val::Scalar(
                    l.iter()
                        .zip(&r)
                        .map(|(x, y)| {
                            let (v, keep) = f::elem_binop(op, *x, *y);
                            if is_comparison(op) {
                                if keep {
                                    1.0
                                } else {
                                    0.0
                                }
                            } else {
                                v
                            }
                        })
                        .collect(),
                ))
            }
            (ValueType::Vector, ValueType::Scalar) | (ValueType::Scalar, ValueType::Vector) => {
                let swap = lt == ValueType::Scalar;
                let (v, s) = if swap {
                    let s = self.eval_scalar(&b.lhs, g)?;
                    (self.eval_vector(&b.rhs, g)?, s)
                } else {
                    let v = self.eval_vector(&b.lhs, g)?;
                    (v, self.eval_scalar(&b.rhs, g)?)
                };
                if matches!(op, T_LAND | T_LOR | T_LUNLESS) {
                    return Err(PromqlError::BadData(format!(
                        "set operator {} not allowed in binary scalar expression",
                        b.op
                    )));
                }
                let cmp = is_comparison(op);
                let drop_name = should_drop_name(op) || return_bool;
                self.map_series(
                    v,
                    |i, x| {
                        let (l, r) = if swap { (s[i], x) } else { (x, s[i]) };
                        let (mut val, keep) = f::elem_binop(op, l, r);
                        if cmp && swap {
                            val = r;
                        }
                        if return_bool {
                            Some(if keep { 1.0 } else { 0.0 })
                        } else if keep {
                            Some(val)
                        } else {
                            None
                        }
                    },
                    drop_name,
                )
            }
            (ValueType::Vector, ValueType::Vector) => {
                let l = self.eval_vector(&b.lhs, g)?;
                let r = self.eval_vector(&b.rhs, g)?;
                self.vector_binop(b, op, return_bool, l, r, g)
                    .map(Val::Vector)
            }
            _ => Err(self.unsupported(format!("binary operator {} between {lt} and {rt}", b.op))),
        }
    }

    fn vector_binop(
        &mut self,
        b: &BinaryExpr,
        op: u16,
        return_bool: bool,
        lhs: Vec<Series>,
        rhs: Vec<Series>,
        g: &Grid,
    ) -> Result<Vec<Series>> {
        let (on, mlabels): (bool, Vec<String>) =
            match b.modifier.as_ref().and_then(|m| m.matching.as_ref()) {
                Some(LabelModifier::Include(l)) => (true, l.labels.clone()),
                Some(LabelModifier::Exclude(l)) => (false, l.labels.clone()),
                None => (false, vec![]),
            };
        let card = b
            .modifier
            .as_ref()
            .map(|m| m.card.clone())
            .unwrap_or(VectorMatchCardinality::OneToOne);
        let mrefs: Vec<&str> = mlabels.iter().map(|s| s.as_str()).collect();
        // Interned signatures.
        let mut sig_ids: HashMap<Labels, u32> = HashMap::new();
        let mut sig_of = |l: &Labels| -> u32 {
            let key = if on {
                l.only(&mrefs)
            } else {
                let mut d = mrefs.clone();
                d.push(METRIC_NAME);
                l.without(&d)
            };
            let next = sig_ids.len() as u32;
            *sig_ids.entry(key).or_insert(next)
        };
        let lsig: Vec<u32> = lhs.iter().map(|s| sig_of(&s.labels)).collect();
        let rsig: Vec<u32> = rhs.iter().map(|s| sig_of(&s.labels)).collect();
        let nsig = sig_ids.len();
        drop(sig_ids);

        let mut out = Builder::default();
        let mut lc: Vec<Cursor> = lhs.iter().map(|_| Cursor { pos: 0 }).collect();
        let mut rc: Vec<Cursor> = rhs.iter().map(|_| Cursor { pos: 0 }).collect();
        let mut lpresent: Vec<(usize, f64)> = Vec::new();
        let mut rpresent: Vec<(usize, f64)> = Vec::new();
        // Per-signature scratch, reset per step through `touched`.
        const NONE: usize = usize::MAX;
        let mut side_idx: Vec<usize> = vec![NONE; nsig];
        let mut touched: Vec<u32> = Vec::new();

        if matches!(op, T_LAND | T_LOR | T_LUNLESS) {
            let mut lslot: Vec<Option<usize>> = vec![None; lhs.len()];
            let mut rslot: Vec<Option<usize>> = vec![None; rhs.len()];
            for step in 0..g.n as u32 {
                self.check()?;
                lpresent.clear();
                rpresent.clear();
                for (i, s) in lhs.iter().enumerate() {
                    if let Some(x) = lc[i].at(s, step) {
                        lpresent.push((i, x));
                    }
                }
                for (i, s) in rhs.iter().enumerate() {
                    if let Some(x) = rc[i].at(s, step) {
                        rpresent.push((i, x));
                    }
                }
                for t in touched.drain(..) {
                    side_idx[t as usize] = NONE;
                }
                let mut emit_l = |out: &mut Builder, i: usize, x: f64| -> Result<()> {
                    let slot = match lslot[i] {
                        Some(s) => s,
                        None => {
                            let s = out.slot(lhs[i].labels.clone());
                            lslot[i] = Some(s);
                            s
                        }
                    };
                    out.push(slot, step, x)
                };
                match op {
                    T_LAND => {
                        if lpresent.is_empty() || rpresent.is_empty() {
                            continue;
                        }
                        for &(i, _) in &rpresent {
                            side_idx[rsig[i] as usize] = i;
                            touched.push(rsig[i]);
                        }
                        for &(i, x) in &lpresent {
                            if side_idx[lsig[i] as usize] != NONE {
                                emit_l(&mut out, i, x)?;
                            }
                        }
                    }
                    T_LUNLESS => {
                        for &(i, _) in &rpresent {
                            side_idx[rsig[i] as usize] = i;
                            touched.push(rsig[i]);
                        }
                        for &(i, x) in &lpresent {
                            if side_idx[lsig[i] as usize] == NONE {
                                emit_l(&mut out, i, x)?;
                            }
                        }
                    }
                    _ => {
                        for &(i, x) in &lpresent {
                            side_idx[lsig[i] as usize] = i;
                            touched.push(lsig[i]);
                            emit_l(&mut out, i, x)?;
                        }
                        for &(i, x) in &rpresent {
                            if lpresent.is_empty() || side_idx[rsig[i] as usize] == NONE {
                                let slot = match rslot[i] {
                                    Some(s) => s,
                                    None => {
                                        let s = out.slot(rhs[i].labels.clone());
                                        rslot[i] = Some(s);
                                        s
                                    }
                                };
                                out.push(slot, step, x)?;
                            }
                        }
                    }
                }
            }
            return Ok(out.finish());
        }

        let (include, one_to_many, one_to_one): (Vec<String>, bool, bool) = match &card {
            VectorMatchCardinality::ManyToOne(l) => (plabels(l), false, false),
            VectorMatchCardinality::OneToMany(l) => (plabels(l), true, false),
            VectorMatchCardinality::OneToOne => (vec![], false, true),
            VectorMatchCardinality::ManyToMany => {
                return Err(PromqlError::BadData(
                    "many-to-many matching is only allowed for set operators".into(),
                ))
            }
        };
        // "many" side = lhs unless one_to_many.
        let (many, one, many_sig, one_sig) = if one_to_many {
            (&rhs, &lhs, &rsig, &lsig)
        } else {
            (&lhs, &rhs, &lsig, &rsig)
        };
        let (mc, oc) = if one_to_many {
            (&mut rc, &mut lc)
        } else {
            (&mut lc, &mut rc)
        };
        let drop_name = should_drop_name(op);
        let mut result_slot: HashMap<(usize, usize), usize> = HashMap::new();
        let mut matched: Vec<Vec<u64>> = vec![Vec::new(); nsig];
        let mut matched_touched: Vec<u32> = Vec::new();
        let mut matched_once: Vec<bool> = vec![false; nsig];
        let inc: Vec<&str> = include.iter().map(|s| s.as_str()).collect();
        let mut side_val: Vec<f64> = vec![0.0; nsig];
        for step in 0..g.n as u32 {
            self.check()?;
            for t in touched.drain(..) {
                side_idx[t as usize] = NONE;
            }
            for t in matched_touched.drain(..) {
                matched[t as usize].clear();
                matched_once[t as usize] = false;
            }
            for (i, s) in one.iter().enumerate() {
                if let Some(x) = oc[i].at(s, step) {
                    let sg = one_sig[i] as usize;
                    if side_idx[sg] != NONE {
                        let other = &one[side_idx[sg]].labels;
                        let side = if one_to_many { "left" } else { "right" };
                        let ml = if on {
                            s.labels.only(&mrefs)
                        } else {
                            let mut d = mrefs.clone();
                            d.push(METRIC_NAME);
                            s.labels.without(&d)
                        };
                        return Err(PromqlError::Execution(format!(
                            "found duplicate series for the match group {} on the {side} hand-side of the operation: [{}, {}];many-to-many matching not allowed: matching labels must be unique on one side",
                            go_labels(&ml), go_labels(&s.labels), go_labels(other)
                        )));
                    }
                    side_idx[sg] = i;
                    side_val[sg] = x;
                    touched.push(sg as u32);
                }
            }
            for (i, s) in many.iter().enumerate() {
                let Some(x) = mc[i].at(s, step) else { continue };
                let sg = many_sig[i] as usize;
                let oi = side_idx[sg];
                if oi == NONE {
                    continue;
                }
                let y = side_val[sg];
                let (vl, vr) = if one_to_many { (y, x) } else { (x, y) };
                let (mut value, keep) = f::elem_binop(op, vl, vr);
                if return_bool {
                    value = if keep { 1.0 } else { 0.0 };
                } else if !keep {
                    continue;
                }
                let slot = match result_slot.get(&(i, oi)) {
                    Some(&sl) => sl,
                    None => {
                        let mut l = s.labels.clone();
                        if drop_name || return_bool {
                            l.remove(METRIC_NAME);
                        }
                        if one_to_one {
                            l = if on {
                                l.only(&mrefs)
                            } else {
                                l.without(&mrefs)
                            };
                        }
                        for ln in &inc {
                            match one[oi].labels.get(ln) {
                                Some(v) => l.set(ln, v.to_string()),
                                None => {
                                    l.remove(ln);
                                }
                            }
                        }
                        let sl = out.slot(l);
                        result_slot.insert((i, oi), sl);
                        sl
                    }
                };
                if one_to_one {
                    if matched_once[sg] {
                        return Err(PromqlError::Execution(
                            "multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)".into(),
                        ));
                    }
                    matched_once[sg] = true;
                    matched_touched.push(sg as u32);
                } else {
                    let h = slot as u64;
                    if matched[sg].contains(&h) {
                        return Err(PromqlError::Execution(
                            "multiple matches for labels: grouping labels must ensure unique matches".into(),
                        ));
                    }
                    matched[sg].push(h);
                    matched_touched.push(sg as u32);
                }
                out.push(slot, step, value)?;
            }
        }
        Ok(out.finish())
    }
}

/// The samples without stale markers (borrowed when there are none).
pub(crate) fn without_stale(pts: &[Sample]) -> std::borrow::Cow<'_, [Sample]> {
    if pts.iter().any(|s| is_stale_nan(s.value)) {
        pts.iter()
            .copied()
            .filter(|s| !is_stale_nan(s.value))
            .collect()
    } else {
        std::borrow::Cow::Borrowed(pts)
    }
}

/// Fails when two series have the same label set (by fingerprint, then equality).
fn check_unique(out: &[Series]) -> Result<()> {
    let mut seen: FnvMap<u64, usize> = FnvMap::default();
    seen.reserve(out.len());
    for (i, s) in out.iter().enumerate() {
        let h = label_hash(&s.labels);
        if let Some(&j) = seen.get(&h) {
            if out[j].labels == s.labels {
                return Err(PromqlError::Execution(DUPLICATE_LABELSET.into()));
            }
            // A fingerprint collision between different label sets: compare all.
            if out[..i].iter().any(|o| o.labels == s.labels) {
                return Err(PromqlError::Execution(DUPLICATE_LABELSET.into()));
            }
            continue;
        }
        seen.insert(h, i);
    }
    Ok(())
}

/// A label set as Go's labels.String() writes it in Prometheus' messages:
/// `{__name__="up", job="x"}`.
pub(crate) fn go_labels(l: &Labels) -> String {
    let parts: Vec<String> = l
        .iter()
        .map(|x| format!("{}={:?}", x.name, x.value))
        .collect();
    format!("{{{}}}", parts.join(", "))
}

/// FNV-1a, for hash maps keyed by label bytes on hot paths.
#[derive(Default, Clone, Copy)]
pub(crate) struct Fnv(u64);

impl std::hash::Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 {
            0xcbf2_9ce4_8422_2325
        } else {
            self.0
        };
        for b in bytes {
            h ^= *b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

pub(crate) type FnvMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<Fnv>>;

fn label_hash(l: &Labels) -> u64 {
    use std::hash::Hasher;
    let mut h = Fnv::default();
    for x in l.iter() {
        h.write(x.name.as_bytes());
        h.write(&[0xff]);
        h.write(x.value.as_bytes());
        h.write(&[0xff]);
    }
    h.finish()
}

fn plabels(l: &PLabels) -> Vec<String> {
    l.labels.clone()
}

pub(crate) fn is_set_operator(op: u16) -> bool {
    matches!(op, T_LAND | T_LOR | T_LUNLESS)
}

pub(crate) fn is_comparison(op: u16) -> bool {
    matches!(op, T_EQLC | T_NEQ | T_GTR | T_LSS | T_GTE | T_LTE)
}

fn should_drop_name(op: u16) -> bool {
    // Prometheus 2.42 keeps the name for atan2.
    matches!(op, T_ADD | T_SUB | T_MUL | T_DIV | T_POW | T_MOD)
}
