//! Function calls: instant and range functions.

use super::*;

impl Evaluator<'_> {
    pub(super) fn eval_call(&mut self, c: &Call, g: &Grid) -> Result<Val> {
        let name = c.func.name;
        let args = &c.args.args;
        match name {
            "rate"
            | "irate"
            | "increase"
            | "delta"
            | "idelta"
            | "avg_over_time"
            | "max_over_time"
            | "min_over_time"
            | "sum_over_time"
            | "count_over_time"
            | "last_over_time"
            | "stddev_over_time"
            | "stdvar_over_time"
            | "quantile_over_time"
            | "changes"
            | "resets"
            | "present_over_time"
            | "deriv"
            | "predict_linear"
            | "holt_winters"
            | "double_exponential_smoothing"
            | "mad_over_time" => self.eval_range_func(name, args, g),
            "absent" => self.eval_absent(args, g),
            "absent_over_time" => self.eval_absent_over_time(args, g),
            "timestamp" => self.eval_timestamp(args, g),
            "sort" | "sort_desc" => self.eval_sort(args, g, name == "sort_desc"),
            "sort_by_label" | "sort_by_label_desc" => {
                self.eval_sort_by_label(args, g, name == "sort_by_label_desc")
            }
            "year" | "month" | "day_of_month" | "day_of_week" | "day_of_year" | "days_in_month"
            | "hour" | "minute" => self.eval_date(name, args, g),
            "sin" | "cos" | "tan" | "asin" | "acos" | "atan" | "sinh" | "cosh" | "tanh"
            | "asinh" | "acosh" | "atanh" | "deg" | "rad" => {
                let v = self.arg_vector(args, 0, name, g)?;
                let op: fn(f64) -> f64 = match name {
                    "sin" => f64::sin,
                    "cos" => f64::cos,
                    "tan" => f64::tan,
                    "asin" => f64::asin,
                    "acos" => f64::acos,
                    "atan" => f64::atan,
                    "sinh" => f64::sinh,
                    "cosh" => f64::cosh,
                    "tanh" => f64::tanh,
                    "asinh" => f64::asinh,
                    "acosh" => f64::acosh,
                    "atanh" => f64::atanh,
                    "deg" => |x| x * 180.0 / std::f64::consts::PI,
                    _ => |x| x * std::f64::consts::PI / 180.0,
                };
                self.map_series(v, |_, x| Some(op(x)), true)
            }
            "pi" => Ok(Val::Scalar(vec![std::f64::consts::PI; g.n])),
            // Native-histogram functions: kube-insight stores float samples
            // only, which these functions skip, as Prometheus does.
            "histogram_count" | "histogram_sum" | "histogram_avg" | "histogram_stddev"
            | "histogram_stdvar" | "histogram_fraction" => {
                for a in args {
                    self.eval(a, g)?;
                }
                Ok(Val::Vector(Vec::new()))
            }
            "abs" | "ceil" | "floor" | "sqrt" | "exp" | "ln" | "log2" | "log10" | "sgn" => {
                let v = self.arg_vector(args, 0, name, g)?;
                let op: fn(f64) -> f64 = match name {
                    "abs" => f64::abs,
                    "ceil" => f64::ceil,
                    "floor" => f64::floor,
                    "sqrt" => f64::sqrt,
                    "exp" => f64::exp,
                    "ln" => f64::ln,
                    "log2" => f::go_log2,
                    "log10" => f::go_log10,
                    _ => f::sgn,
                };
                self.map_series(v, |_, x| Some(op(x)), true)
            }
            "round" => {
                let v = self.arg_vector(args, 0, name, g)?;
                let to = if args.len() > 1 {
                    self.eval_scalar(&args[1], g)?
                } else {
                    vec![1.0; g.n]
                };
                self.map_series(
                    v,
                    |i, x| {
                        let inv = 1.0 / to[i];
                        Some((x * inv + 0.5).floor() / inv)
                    },
                    true,
                )
            }
            "clamp_min" | "clamp_max" => {
                let v = self.arg_vector(args, 0, name, g)?;
                let b = self.arg_scalar(args, 1, name, g)?;
                let is_min = name == "clamp_min";
                self.map_series(
                    v,
                    |i, x| {
                        Some(if is_min {
                            f::go_max(b[i], x)
                        } else {
                            f::go_min(b[i], x)
                        })
                    },
                    true,
                )
            }
            "clamp" => {
                let v = self.arg_vector(args, 0, name, g)?;
                let lo = self.arg_scalar(args, 1, name, g)?;
                let hi = self.arg_scalar(args, 2, name, g)?;
                self.map_series(
                    v,
                    |i, x| {
                        if hi[i] < lo[i] {
                            None
                        } else {
                            Some(f::go_max(lo[i], f::go_min(hi[i], x)))
                        }
                    },
                    true,
                )
            }
            "time" => Ok(Val::Scalar(
                (0..g.n).map(|i| g.ts(i) as f64 / 1000.0).collect(),
            )),
            "vector" => {
                let s = self.arg_scalar(args, 0, name, g)?;
                Ok(Val::Vector(vec![Series {
                    labels: Labels::default(),
                    steps: (0..g.n as u32).collect(),
                    vals: s,
                }]))
            }
            "scalar" => {
                let v = self.arg_vector(args, 0, name, g)?;
                let mut cnt = vec![0u32; g.n];
                let mut val = vec![f64::NAN; g.n];
                for s in &v {
                    for (st, x) in s.steps.iter().zip(&s.vals) {
                        cnt[*st as usize] += 1;
                        val[*st as usize] = *x;
                    }
                }
                Ok(Val::Scalar(
                    val.into_iter()
                        .zip(cnt)
                        .map(|(x, c)| if c == 1 { x } else { f64::NAN })
                        .collect(),
                ))
            }
            "label_replace" => self.eval_label_replace(args, g),
            "label_join" => self.eval_label_join(args, g),
            "histogram_quantile" => self.eval_histogram_quantile(args, g),
            other => Err(self.unsupported(format!("function {other}()"))),
        }
    }

    fn arg_vector(
        &mut self,
        args: &[Box<Expr>],
        i: usize,
        f: &str,
        g: &Grid,
    ) -> Result<Vec<Series>> {
        match args.get(i) {
            Some(a) => self.eval_vector(a, g),
            None => Err(PromqlError::BadData(format!(
                "missing argument {} of {f}()",
                i + 1
            ))),
        }
    }

    fn arg_scalar(&mut self, args: &[Box<Expr>], i: usize, f: &str, g: &Grid) -> Result<Vec<f64>> {
        match args.get(i) {
            Some(a) => self.eval_scalar(a, g),
            None => Err(PromqlError::BadData(format!(
                "missing argument {} of {f}()",
                i + 1
            ))),
        }
    }

    fn arg_string(&self, args: &[Box<Expr>], i: usize, f: &str) -> Result<String> {
        let mut e = args.get(i).map(|b| b.as_ref());
        while let Some(Expr::Paren(p)) = e {
            e = Some(&p.expr);
        }
        match e {
            Some(Expr::StringLiteral(s)) => Ok(s.val.clone()),
            _ => Err(PromqlError::BadData(format!(
                "argument {} of {f}() must be a string literal",
                i + 1
            ))),
        }
    }

    /// Element-wise map (rangeEval semantics: same-labels outputs merge, a
    /// collision on one step is an error).
    pub(super) fn map_series(
        &mut self,
        v: Vec<Series>,
        op: impl Fn(usize, f64) -> Option<f64>,
        drop_name: bool,
    ) -> Result<Val> {
        let mut b = Builder::default();
        for mut s in v {
            self.check()?;
            let mut steps = Vec::with_capacity(s.steps.len());
            let mut vals = Vec::with_capacity(s.steps.len());
            for (st, x) in s.steps.iter().zip(&s.vals) {
                if let Some(y) = op(*st as usize, *x) {
                    steps.push(*st);
                    vals.push(y);
                }
            }
            if drop_name {
                s.labels = s.labels.without_name();
            }
            b.add(Series {
                labels: s.labels,
                steps,
                vals,
            })?;
        }
        Ok(Val::Vector(b.finish()))
    }

    /// The range-vector argument `i` of `name`: a matrix selector or a
    /// subquery, in parentheses or not.
    fn range_arg(
        &mut self,
        args: &[Box<Expr>],
        i: usize,
        name: &str,
        g: &Grid,
    ) -> Result<RangeInput> {
        let Some(m) = args.get(i) else {
            return Err(PromqlError::BadData(format!(
                "missing range-vector argument of {name}()"
            )));
        };
        let mut inner = m.as_ref();
        while let Expr::Paren(p) = inner {
            inner = &p.expr;
        }
        match inner {
            Expr::MatrixSelector(ms) => {
                self.range_input_selector(&ms.vs, ms.range.as_millis() as i64)
            }
            Expr::Subquery(sq) => self.range_input_subquery(sq, g),
            _ => Err(PromqlError::BadData(format!(
                "expected a range vector as argument of {name}(), got {m}"
            ))),
        }
    }

    fn eval_range_func(&mut self, name: &str, args: &[Box<Expr>], g: &Grid) -> Result<Val> {
        // Scalar parameters, evaluated per step, and where the matrix is.
        let (marg, param, param2) = match name {
            "quantile_over_time" => (1, Some(self.arg_scalar(args, 0, name, g)?), None),
            "predict_linear" => (0, Some(self.arg_scalar(args, 1, name, g)?), None),
            "holt_winters" | "double_exponential_smoothing" => (
                0,
                Some(self.arg_scalar(args, 1, name, g)?),
                Some(self.arg_scalar(args, 2, name, g)?),
            ),
            _ => (0, None, None),
        };
        let input = self.range_arg(args, marg, name, g)?;
        let func = RangeFn::from_name(name)
            .ok_or_else(|| self.unsupported(format!("function {name}()")))?;
        let drop_name = func != RangeFn::LastOverTime;
        let mut out: Vec<Series> = Vec::with_capacity(input.series.len());
        let closed = self.closed();
        let range = input.range;
        let (mut offset, mut at) = (input.offset, input.at);
        let mut series = input.series;
        if let (RangeFn::PredictLinear, Some(a)) = (func, at) {
            // predict_linear is "@-unsafe" in Prometheus: it is evaluated at
            // every step, with the `@` turned into an offset from the query
            // start, over the samples selected for the `@` window only.
            let end = a - offset;
            for (_, pts) in &mut series {
                pts.retain(|s| s.timestamp_ms >= end - range && s.timestamp_ms <= end);
            }
            offset += self.query_start - a;
            at = None;
        }
        let counter = matches!(func, RangeFn::Rate | RangeFn::Increase);
        let mut qbuf: Vec<f64> = Vec::new();
        let mut failed: Option<PromqlError> = None;
        for (labels, mut pts) in series {
            self.check()?;
            // One pass: stale markers (dropped) and whether the counter ever
            // decreases (reset correction is skipped when it never does).
            let (mut stale, mut resets) = (false, false);
            let mut prev = f64::NAN;
            for smp in &pts {
                if is_stale_nan(smp.value) {
                    stale = true;
                } else {
                    resets |= smp.value < prev;
                    prev = smp.value;
                }
            }
            if stale {
                pts.retain(|s| !is_stale_nan(s.value));
            }
            let resets = counter && resets;
            let mut s = Series {
                labels: Labels::default(),
                steps: Vec::with_capacity(g.n),
                vals: Vec::with_capacity(g.n),
            };
            self.windows(&pts, g, range, offset, at, |i, w, end| {
                let r = match func {
                    RangeFn::Rate => {
                        f::extrapolated_rate(w, end - range, end, range, resets, true, true, closed)
                    }
                    RangeFn::Increase => f::extrapolated_rate(
                        w,
                        end - range,
                        end,
                        range,
                        resets,
                        true,
                        false,
                        closed,
                    ),
                    RangeFn::Delta => f::extrapolated_rate(
                        w,
                        end - range,
                        end,
                        range,
                        false,
                        false,
                        false,
                        closed,
                    ),
                    RangeFn::Irate => f::instant_value(w, true),
                    RangeFn::Idelta => f::instant_value(w, false),
                    RangeFn::AvgOverTime => Some(f::avg(w)),
                    RangeFn::MaxOverTime => Some(f::max(w)),
                    RangeFn::MinOverTime => Some(f::min(w)),
                    RangeFn::SumOverTime => Some(f::sum(w)),
                    RangeFn::CountOverTime => Some(w.len() as f64),
                    RangeFn::LastOverTime => w.last().map(|s| s.value),
                    RangeFn::StddevOverTime => Some(f::stdvar(w).sqrt()),
                    RangeFn::StdvarOverTime => Some(f::stdvar(w)),
                    RangeFn::Changes => Some(f::changes(w)),
                    RangeFn::Resets => Some(f::resets(w)),
                    RangeFn::QuantileOverTime => {
                        let q = param.as_ref().map(|p| p[i]).unwrap_or(f64::NAN);
                        qbuf.clear();
                        qbuf.extend(w.iter().map(|s| s.value));
                        Some(f::quantile(q, &mut qbuf))
                    }
                    RangeFn::PresentOverTime => Some(1.0),
                    RangeFn::Deriv => {
                        (w.len() >= 2).then(|| f::linear_regression(w, w[0].timestamp_ms).0)
                    }
                    RangeFn::PredictLinear => (w.len() >= 2).then(|| {
                        let d = param.as_ref().map(|p| p[i]).unwrap_or(f64::NAN);
                        let (slope, icpt) = f::linear_regression(w, g.ts(i));
                        slope * d + icpt
                    }),
                    RangeFn::HoltWinters => {
                        let sf = param.as_ref().map(|p| p[i]).unwrap_or(f64::NAN);
                        let tf = param2.as_ref().map(|p| p[i]).unwrap_or(f64::NAN);
                        // Prometheus checks the factors whenever a window
                        // has samples, and fails the whole query.
                        if !(sf > 0.0 && sf < 1.0) {
                            failed.get_or_insert_with(|| {
                                PromqlError::Execution(format!(
                                    "invalid smoothing factor. Expected: 0 < sf < 1, got: {sf:.6}"
                                ))
                            });
                            None
                        } else if !(tf > 0.0 && tf < 1.0) {
                            failed.get_or_insert_with(|| {
                                PromqlError::Execution(format!(
                                    "invalid trend factor. Expected: 0 < tf < 1, got: {tf:.6}"
                                ))
                            });
                            None
                        } else {
                            f::holt_winters(w, sf, tf)
                        }
                    }
                    RangeFn::MadOverTime => Some(f::mad(w, &mut qbuf)),
                };
                if let Some(v) = r {
                    s.steps.push(i as u32);
                    s.vals.push(v);
                }
            });
            if let Some(e) = failed.take() {
                return Err(e);
            }
            if !s.steps.is_empty() {
                let mut labels = labels;
                if drop_name {
                    labels.remove(METRIC_NAME);
                }
                s.labels = labels;
                out.push(s);
            }
        }
        // Prometheus checks the whole matrix of a range function for duplicates.
        check_unique(&out)?;
        Ok(Val::Vector(out))
    }

    fn eval_label_replace(&mut self, args: &[Box<Expr>], g: &Grid) -> Result<Val> {
        let v = self.arg_vector(args, 0, "label_replace", g)?;
        let dst = self.arg_string(args, 1, "label_replace")?;
        let repl = self.arg_string(args, 2, "label_replace")?;
        let src = self.arg_string(args, 3, "label_replace")?;
        let re_s = self.arg_string(args, 4, "label_replace")?;
        // Prometheus' messages: the raw argument, no quotes.
        let re = regex::Regex::new(&format!("^(?:{re_s})$")).map_err(|_| {
            PromqlError::Execution(format!(
                "invalid regular expression in label_replace(): {re_s}"
            ))
        })?;
        if !kube_insight_core::labels::is_valid_label_name(&dst) {
            return Err(PromqlError::Execution(format!(
                "invalid destination label name in label_replace(): {dst}"
            )));
        }
        let mut b = Builder::default();
        for mut s in v {
            self.check()?;
            let src_val = s.labels.get(&src).unwrap_or("").to_string();
            if let Some(caps) = re.captures(&src_val) {
                let mut res = String::new();
                caps.expand(&repl, &mut res);
                s.labels.set(&dst, res);
            }
            b.add(s)?;
        }
        Ok(Val::Vector(b.finish()))
    }

    fn eval_label_join(&mut self, args: &[Box<Expr>], g: &Grid) -> Result<Val> {
        let v = self.arg_vector(args, 0, "label_join", g)?;
        let dst = self.arg_string(args, 1, "label_join")?;
        let sep = self.arg_string(args, 2, "label_join")?;
        let mut srcs = Vec::new();
        for i in 3..args.len() {
            srcs.push(self.arg_string(args, i, "label_join")?);
        }
        if !kube_insight_core::labels::is_valid_label_name(&dst) {
            return Err(PromqlError::Execution(format!(
                "invalid destination label name in label_join(): {dst}"
            )));
        }
        for s in &srcs {
            if !kube_insight_core::labels::is_valid_label_name(s) {
                return Err(PromqlError::Execution(format!(
                    "invalid source label name in label_join(): {s:?}"
                )));
            }
        }
        let mut b = Builder::default();
        for mut s in v {
            self.check()?;
            let joined = srcs
                .iter()
                .map(|n| s.labels.get(n).unwrap_or(""))
                .collect::<Vec<_>>()
                .join(&sep);
            s.labels.set(&dst, joined);
            b.add(s)?;
        }
        Ok(Val::Vector(b.finish()))
    }

    /// `absent(v)`: 1 at the steps where `v` is empty, labelled from the
    /// argument's equality matchers (Prometheus' createLabelsForAbsentFunction).
    fn eval_absent(&mut self, args: &[Box<Expr>], g: &Grid) -> Result<Val> {
        let v = self.arg_vector(args, 0, "absent", g)?;
        let mut present = vec![false; g.n];
        for s in &v {
            for st in &s.steps {
                present[*st as usize] = true;
            }
        }
        Ok(absent_result(&present, &args[0]))
    }

    /// `absent_over_time(m[r])`: 1 at the steps where no series has a sample in its window.
    fn eval_absent_over_time(&mut self, args: &[Box<Expr>], g: &Grid) -> Result<Val> {
        let input = self.range_arg(args, 0, "absent_over_time", g)?;
        let mut present = vec![false; g.n];
        for (_, pts) in &input.series {
            self.check()?;
            let pts = without_stale(pts);
            self.windows(&pts, g, input.range, input.offset, input.at, |i, _, _| {
                present[i] = true
            });
        }
        Ok(absent_result(&present, &args[0]))
    }

    /// `timestamp(v)`: of a selector, each sample's own time; of any other
    /// expression, the evaluation time.
    fn eval_timestamp(&mut self, args: &[Box<Expr>], g: &Grid) -> Result<Val> {
        let Some(arg) = args.first() else {
            return Err(PromqlError::BadData(
                "missing argument 1 of timestamp()".into(),
            ));
        };
        let mut e = arg.as_ref();
        while let Expr::Paren(p) = e {
            e = &p.expr;
        }
        if let Expr::VectorSelector(vs) = e {
            let data = self.take_fetched(vs)?;
            let v = self.eval_selector_on(&data, vs, g, true)?;
            return self.map_series(v, |_, t| Some(t), true);
        }
        let v = self.eval_vector(e, g)?;
        self.map_series(v, |i, _| Some(g.ts(i) as f64 / 1000.0), true)
    }

    /// `sort`/`sort_desc`: an instant query's result by value, NaN last;
    /// ties keep their order. A range query's result is sorted by labels.
    fn eval_sort(&mut self, args: &[Box<Expr>], g: &Grid, desc: bool) -> Result<Val> {
        let mut v = self.arg_vector(args, 0, if desc { "sort_desc" } else { "sort" }, g)?;
        if g.n == 1 {
            v.sort_by(|a, b| {
                let (x, y) = (a.vals[0], b.vals[0]);
                match (x.is_nan(), y.is_nan()) {
                    (true, true) => std::cmp::Ordering::Equal,
                    (true, false) => std::cmp::Ordering::Greater,
                    (false, true) => std::cmp::Ordering::Less,
                    _ if desc => y.partial_cmp(&x).unwrap_or(std::cmp::Ordering::Equal),
                    _ => x.partial_cmp(&y).unwrap_or(std::cmp::Ordering::Equal),
                }
            });
        }
        Ok(Val::Vector(v))
    }

    /// `sort_by_label(v, "l", …)` (Prometheus 3): by the labels' values in
    /// natural order, then by the whole label set.
    fn eval_sort_by_label(&mut self, args: &[Box<Expr>], g: &Grid, desc: bool) -> Result<Val> {
        let name = if desc {
            "sort_by_label_desc"
        } else {
            "sort_by_label"
        };
        let mut v = self.arg_vector(args, 0, name, g)?;
        let names: Vec<String> = (1..args.len())
            .map(|i| self.arg_string(args, i, name))
            .collect::<Result<_>>()?;
        v.sort_by(|a, b| {
            for n in &names {
                let (x, y) = (a.labels.get(n).unwrap_or(""), b.labels.get(n).unwrap_or(""));
                if x == y {
                    continue;
                }
                let less = f::natural_less(x, y);
                return if less != desc {
                    std::cmp::Ordering::Less
                } else {
                    std::cmp::Ordering::Greater
                };
            }
            if desc {
                b.labels.cmp(&a.labels)
            } else {
                a.labels.cmp(&b.labels)
            }
        });
        Ok(Val::Vector(v))
    }

    /// The date functions, of `vector(time())` without an argument.
    fn eval_date(&mut self, name: &str, args: &[Box<Expr>], g: &Grid) -> Result<Val> {
        let field = |unix_sec: i64| -> f64 {
            let d = f::go_date(unix_sec);
            (match name {
                "year" => d.year,
                "month" => d.month,
                "day_of_month" => d.day,
                "day_of_week" => d.weekday,
                "day_of_year" => d.yday,
                "days_in_month" => f::days_in_month(d.year, d.month),
                "hour" => d.hour,
                _ => d.minute,
            }) as f64
        };
        if args.is_empty() {
            return Ok(Val::Vector(vec![Series {
                labels: Labels::default(),
                steps: (0..g.n as u32).collect(),
                vals: (0..g.n).map(|i| field(g.ts(i) / 1000)).collect(),
            }]));
        }
        let v = self.arg_vector(args, 0, name, g)?;
        self.map_series(v, |_, x| Some(field(f::go_int64(x))), true)
    }

    fn eval_histogram_quantile(&mut self, args: &[Box<Expr>], g: &Grid) -> Result<Val> {
        let q = self.arg_scalar(args, 0, "histogram_quantile", g)?;
        let v = self.arg_vector(args, 1, "histogram_quantile", g)?;
        // Group by all labels but `le` (the name included, as Prometheus'
        // signature does); the output drops the name and `le`.
        let mut groups: HashMap<Labels, usize> = HashMap::new();
        let mut group_labels: Vec<Labels> = Vec::new();
        let mut members: Vec<(usize, f64, usize)> = Vec::new(); // (series, le, group)
        for (i, s) in v.iter().enumerate() {
            let Some(le) = s.labels.get("le").and_then(f::parse_go_float) else {
                continue;
            };
            let sig = s.labels.without(&["le"]);
            let gi = match groups.get(&sig) {
                Some(&gi) => gi,
                None => {
                    let gi = group_labels.len();
                    group_labels.push(sig.without_name());
                    groups.insert(sig, gi);
                    gi
                }
            };
            members.push((i, le, gi));
        }
        let mut b = Builder::default();
        let slots: Vec<usize> = group_labels.into_iter().map(|l| b.slot(l)).collect();
        let mut cursors: Vec<Cursor> = members.iter().map(|_| Cursor { pos: 0 }).collect();
        let mut buckets: Vec<Vec<(f64, f64)>> = vec![Vec::new(); slots.len()];
        for step in 0..g.n as u32 {
            self.check()?;
            for bk in &mut buckets {
                bk.clear();
            }
            for (k, (si, le, gi)) in members.iter().enumerate() {
                if let Some(x) = cursors[k].at(&v[*si], step) {
                    buckets[*gi].push((*le, x));
                }
            }
            for (gi, bk) in buckets.iter_mut().enumerate() {
                if !bk.is_empty() {
                    let r = f::bucket_quantile(q[step as usize], bk);
                    b.push(slots[gi], step, r)?;
                }
            }
        }
        Ok(Val::Vector(b.finish()))
    }
}

/// The range functions, resolved once per call instead of once per window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RangeFn {
    Rate,
    Irate,
    Increase,
    Delta,
    Idelta,
    AvgOverTime,
    MaxOverTime,
    MinOverTime,
    SumOverTime,
    CountOverTime,
    LastOverTime,
    StddevOverTime,
    StdvarOverTime,
    QuantileOverTime,
    Changes,
    Resets,
    PresentOverTime,
    Deriv,
    PredictLinear,
    HoltWinters,
    MadOverTime,
}

impl RangeFn {
    fn from_name(n: &str) -> Option<RangeFn> {
        Some(match n {
            "rate" => RangeFn::Rate,
            "irate" => RangeFn::Irate,
            "increase" => RangeFn::Increase,
            "delta" => RangeFn::Delta,
            "idelta" => RangeFn::Idelta,
            "avg_over_time" => RangeFn::AvgOverTime,
            "max_over_time" => RangeFn::MaxOverTime,
            "min_over_time" => RangeFn::MinOverTime,
            "sum_over_time" => RangeFn::SumOverTime,
            "count_over_time" => RangeFn::CountOverTime,
            "last_over_time" => RangeFn::LastOverTime,
            "stddev_over_time" => RangeFn::StddevOverTime,
            "stdvar_over_time" => RangeFn::StdvarOverTime,
            "quantile_over_time" => RangeFn::QuantileOverTime,
            "changes" => RangeFn::Changes,
            "resets" => RangeFn::Resets,
            "present_over_time" => RangeFn::PresentOverTime,
            "deriv" => RangeFn::Deriv,
            "predict_linear" => RangeFn::PredictLinear,
            "holt_winters" | "double_exponential_smoothing" => RangeFn::HoltWinters,
            "mad_over_time" => RangeFn::MadOverTime,
            _ => return None,
        })
    }
}

/// `absent`'s answer: 1 at the steps not `present`, labelled from the
/// argument's equality matchers (a label matched twice, or by another
/// matcher, is left out), as Prometheus' createLabelsForAbsentFunction.
fn absent_result(present: &[bool], arg: &Expr) -> Val {
    let steps: Vec<u32> = (0..present.len() as u32)
        .filter(|i| !present[*i as usize])
        .collect();
    if steps.is_empty() {
        return Val::Vector(Vec::new());
    }
    let mut e = arg;
    while let Expr::Paren(p) = e {
        e = &p.expr;
    }
    let vs = match e {
        Expr::VectorSelector(vs) => Some(vs),
        Expr::MatrixSelector(ms) => Some(&ms.vs),
        _ => None,
    };
    let mut labels = Labels::default();
    if let Some(vs) = vs {
        let mut has: Vec<&str> = Vec::new();
        for m in &vs.matchers.matchers {
            if m.name == METRIC_NAME {
                continue;
            }
            if m.op == promql_parser::label::MatchOp::Equal && !has.contains(&m.name.as_str()) {
                labels.set(&m.name, m.value.clone());
                has.push(&m.name);
            } else {
                labels.remove(&m.name);
            }
        }
    }
    let vals = vec![1.0; steps.len()];
    Val::Vector(vec![Series {
        labels,
        steps,
        vals,
    }])
}
