//! Aggregation operators.

use super::*;

impl Evaluator<'_> {
    pub(super) fn eval_aggregate(&mut self, a: &AggregateExpr, g: &Grid) -> Result<Vec<Series>> {
        let op = a.op.id();
        if op == T_COUNT_VALUES {
            return self.aggregate_count_values(a, g);
        }
        let param = match op {
            T_TOPK | T_BOTTOMK | T_QUANTILE | T_LIMITK | T_LIMIT_RATIO => match &a.param {
                Some(p) => Some(self.eval_scalar(p, g)?),
                None => {
                    return Err(PromqlError::BadData(format!(
                        "missing parameter of {}",
                        a.op
                    )))
                }
            },
            T_SUM | T_AVG | T_COUNT | T_MIN | T_MAX | T_GROUP | T_STDDEV | T_STDVAR => None,
            _ => return Err(self.unsupported(format!("aggregation {}", a.op))),
        };
        let input = self.eval_vector(&a.expr, g)?;
        let (without, names): (bool, Vec<&str>) = match &a.modifier {
            None => (false, vec![]),
            Some(LabelModifier::Include(l)) => {
                (false, l.labels.iter().map(|s| s.as_str()).collect())
            }
            Some(LabelModifier::Exclude(l)) => {
                (true, l.labels.iter().map(|s| s.as_str()).collect())
            }
        };
        // Group id per series, in order of first appearance. The key is
        // built in a reused buffer; label sets are only built for new groups.
        let mut gidx: FnvMap<Vec<u8>, usize> = FnvMap::default();
        let mut glabels: Vec<Labels> = Vec::new();
        let mut sgroup: Vec<usize> = Vec::with_capacity(input.len());
        let mut drop: Vec<&str> = names.clone();
        drop.push(METRIC_NAME);
        let mut buf: Vec<u8> = Vec::with_capacity(256);
        for s in &input {
            self.check()?;
            buf.clear();
            for l in s.labels.iter() {
                let keep = if without {
                    !drop.contains(&l.name.as_str())
                } else {
                    names.contains(&l.name.as_str())
                };
                if keep {
                    buf.extend_from_slice(l.name.as_bytes());
                    buf.push(0xff);
                    buf.extend_from_slice(l.value.as_bytes());
                    buf.push(0xff);
                }
            }
            let gi = match gidx.get(buf.as_slice()) {
                Some(&gi) => gi,
                None => {
                    let gi = glabels.len();
                    gidx.insert(buf.clone(), gi);
                    glabels.push(if without {
                        s.labels.without(&drop)
                    } else {
                        s.labels.only(&names)
                    });
                    gi
                }
            };
            sgroup.push(gi);
        }
        std::mem::drop(gidx);
        match op {
            T_TOPK | T_BOTTOMK => self.aggregate_topk(
                op == T_TOPK,
                input,
                &sgroup,
                glabels.len(),
                param.unwrap_or_default(),
                g,
            ),
            T_QUANTILE => {
                self.aggregate_quantile(input, &sgroup, glabels, param.unwrap_or_default(), g)
            }
            T_LIMITK => {
                self.aggregate_limitk(input, &sgroup, glabels.len(), param.unwrap_or_default(), g)
            }
            T_LIMIT_RATIO => self.aggregate_limit_ratio(input, param.unwrap_or_default()),
            _ => self.aggregate_simple(op, &input, &sgroup, glabels, g),
        }
    }

    fn aggregate_simple(
        &mut self,
        op: u16,
        input: &[Series],
        sgroup: &[usize],
        glabels: Vec<Labels>,
        g: &Grid,
    ) -> Result<Vec<Series>> {
        let ng = glabels.len();
        let n = g.n;
        // Per group × step state.
        let mut cnt = vec![0u32; ng * n];
        let mut val = vec![0f64; ng * n];
        let mut mean = if matches!(op, T_AVG | T_STDDEV | T_STDVAR) {
            vec![0f64; ng * n]
        } else {
            Vec::new()
        };
        for (s, &gi) in input.iter().zip(sgroup) {
            self.check()?;
            let base = gi * n;
            for (st, &x) in s.steps.iter().zip(&s.vals) {
                let k = base + *st as usize;
                let c = cnt[k];
                if c == 0 {
                    cnt[k] = 1;
                    match op {
                        T_STDDEV | T_STDVAR => {
                            val[k] = 0.0;
                            mean[k] = x;
                        }
                        T_AVG => mean[k] = x,
                        T_GROUP => val[k] = 1.0,
                        _ => val[k] = x,
                    }
                    continue;
                }
                cnt[k] = c + 1;
                let cf = (c + 1) as f64;
                match op {
                    T_SUM => val[k] += x,
                    T_AVG => {
                        let m = mean[k];
                        if m.is_infinite() {
                            if x.is_infinite() && (m > 0.0) == (x > 0.0) {
                                continue;
                            }
                            if !x.is_infinite() && !x.is_nan() {
                                continue;
                            }
                        }
                        mean[k] = m + (x / cf - m / cf);
                    }
                    T_MAX if val[k] < x || val[k].is_nan() => val[k] = x,
                    T_MIN if val[k] > x || val[k].is_nan() => val[k] = x,
                    T_STDDEV | T_STDVAR => {
                        let delta = x - mean[k];
                        mean[k] += delta / cf;
                        val[k] += delta * (x - mean[k]);
                    }
                    _ => {}
                }
            }
        }
        let mut out = Vec::with_capacity(ng);
        for (gi, l) in glabels.into_iter().enumerate() {
            let mut s = Series {
                labels: l,
                steps: Vec::new(),
                vals: Vec::new(),
            };
            for st in 0..n {
                let k = gi * n + st;
                if cnt[k] == 0 {
                    continue;
                }
                let v = match op {
                    T_AVG => mean[k],
                    T_COUNT => cnt[k] as f64,
                    T_STDVAR => val[k] / cnt[k] as f64,
                    T_STDDEV => (val[k] / cnt[k] as f64).sqrt(),
                    _ => val[k],
                };
                s.steps.push(st as u32);
                s.vals.push(v);
            }
            if !s.steps.is_empty() {
                out.push(s);
            }
        }
        Ok(out)
    }

    fn aggregate_topk(
        &mut self,
        top: bool,
        input: Vec<Series>,
        sgroup: &[usize],
        ng: usize,
        k: Vec<f64>,
        g: &Grid,
    ) -> Result<Vec<Series>> {
        let mut keep: Vec<Vec<(u32, f64)>> = vec![Vec::new(); input.len()];
        let mut cursors: Vec<Cursor> = input.iter().map(|_| Cursor { pos: 0 }).collect();
        let mut heaps: Vec<Vec<(f64, usize)>> = vec![Vec::new(); ng];
        for (step, &kf) in k.iter().enumerate().take(g.n) {
            self.check()?;
            let kk = k_param(kf)?;
            if kk < 1 {
                continue;
            }
            for h in &mut heaps {
                h.clear();
            }
            for (si, s) in input.iter().enumerate() {
                let Some(x) = cursors[si].at(s, step as u32) else {
                    continue;
                };
                let h = &mut heaps[sgroup[si]];
                f::topk_push(h, (x, si), kk as usize, top);
            }
            for h in &heaps {
                for &(x, si) in h {
                    keep[si].push((step as u32, x));
                }
            }
        }
        let mut b = Builder::default();
        for (s, kept) in input.into_iter().zip(keep) {
            let mut kept = kept;
            kept.sort_by_key(|p| p.0);
            b.add(Series {
                labels: s.labels,
                steps: kept.iter().map(|p| p.0).collect(),
                vals: kept.iter().map(|p| p.1).collect(),
            })?;
        }
        Ok(b.finish())
    }

    fn aggregate_quantile(
        &mut self,
        input: Vec<Series>,
        sgroup: &[usize],
        glabels: Vec<Labels>,
        q: Vec<f64>,
        g: &Grid,
    ) -> Result<Vec<Series>> {
        let ng = glabels.len();
        let mut vals: Vec<Vec<f64>> = vec![Vec::new(); ng];
        let mut out: Vec<Series> = glabels
            .into_iter()
            .map(|l| Series {
                labels: l,
                steps: Vec::new(),
                vals: Vec::new(),
            })
            .collect();
        let mut cursors: Vec<Cursor> = input.iter().map(|_| Cursor { pos: 0 }).collect();
        for (step, &qs) in q.iter().enumerate().take(g.n) {
            self.check()?;
            for v in &mut vals {
                v.clear();
            }
            for (si, s) in input.iter().enumerate() {
                if let Some(x) = cursors[si].at(s, step as u32) {
                    vals[sgroup[si]].push(x);
                }
            }
            for (gi, v) in vals.iter_mut().enumerate() {
                if !v.is_empty() {
                    let r = f::quantile(qs, v);
                    out[gi].steps.push(step as u32);
                    out[gi].vals.push(r);
                }
            }
        }
        Ok(out.into_iter().filter(|s| !s.steps.is_empty()).collect())
    }

    /// `count_values("label", v)`: per group, how many series have each
    /// value, the value (Go's 'f' format) in `label`.
    fn aggregate_count_values(&mut self, a: &AggregateExpr, g: &Grid) -> Result<Vec<Series>> {
        let mut p = a.param.as_deref();
        while let Some(Expr::Paren(x)) = p {
            p = Some(&x.expr);
        }
        let Some(Expr::StringLiteral(label)) = p else {
            return Err(PromqlError::BadData(
                "count_values' parameter must be a string literal".into(),
            ));
        };
        let label = label.val.as_str();
        if !kube_insight_core::labels::is_valid_label_name(label) {
            return Err(PromqlError::Execution(format!(
                "invalid label name {label:?}"
            )));
        }
        let input = self.eval_vector(&a.expr, g)?;
        let (without, mut names): (bool, Vec<&str>) = match &a.modifier {
            None => (false, vec![]),
            Some(LabelModifier::Include(l)) => {
                (false, l.labels.iter().map(|s| s.as_str()).collect())
            }
            Some(LabelModifier::Exclude(l)) => {
                (true, l.labels.iter().map(|s| s.as_str()).collect())
            }
        };
        if without {
            names.push(METRIC_NAME);
        } else {
            names.push(label);
        }
        let mut b = Builder::default();
        let mut cursors: Vec<Cursor> = input.iter().map(|_| Cursor { pos: 0 }).collect();
        // Per step: the count of each group slot, and the slots touched.
        let mut counts: Vec<f64> = Vec::new();
        let mut touched: Vec<usize> = Vec::new();
        for step in 0..g.n as u32 {
            self.check()?;
            for (si, s) in input.iter().enumerate() {
                let Some(x) = cursors[si].at(s, step) else {
                    continue;
                };
                let mut l = s.labels.clone();
                l.set(label, f::format_float_f(x));
                let l = if without {
                    l.without(&names)
                } else {
                    l.only(&names)
                };
                let slot = b.slot(l);
                if slot >= counts.len() {
                    counts.resize(slot + 1, 0.0);
                }
                if counts[slot] == 0.0 {
                    touched.push(slot);
                }
                counts[slot] += 1.0;
            }
            touched.sort_unstable();
            for slot in touched.drain(..) {
                b.push(slot, step, counts[slot])?;
                counts[slot] = 0.0;
            }
        }
        Ok(b.finish())
    }

    /// `limitk(k, v)` (Prometheus 3): the first `k` series of each group, in input order.
    fn aggregate_limitk(
        &mut self,
        input: Vec<Series>,
        sgroup: &[usize],
        ng: usize,
        k: Vec<f64>,
        g: &Grid,
    ) -> Result<Vec<Series>> {
        let mut keep: Vec<Series> = input
            .iter()
            .map(|s| Series {
                labels: s.labels.clone(),
                ..Default::default()
            })
            .collect();
        let mut cursors: Vec<Cursor> = input.iter().map(|_| Cursor { pos: 0 }).collect();
        let mut taken = vec![0i64; ng];
        for (step, &kf) in k.iter().enumerate().take(g.n) {
            self.check()?;
            let kk = k_param(kf)?;
            if kk < 1 {
                continue;
            }
            taken.iter_mut().for_each(|t| *t = 0);
            for (si, s) in input.iter().enumerate() {
                let Some(x) = cursors[si].at(s, step as u32) else {
                    continue;
                };
                let t = &mut taken[sgroup[si]];
                if *t < kk {
                    *t += 1;
                    keep[si].steps.push(step as u32);
                    keep[si].vals.push(x);
                }
            }
        }
        Ok(keep.into_iter().filter(|s| !s.steps.is_empty()).collect())
    }

    /// `limit_ratio(r, v)` (Prometheus 3): the series whose label hash falls
    /// in the first `r` of the hash space (the last `-r` when negative).
    fn aggregate_limit_ratio(&mut self, input: Vec<Series>, r: Vec<f64>) -> Result<Vec<Series>> {
        let mut out = Vec::new();
        for mut s in input {
            self.check()?;
            let off = f::sample_offset(&s.labels);
            let mut steps = Vec::new();
            let mut vals = Vec::new();
            for (st, x) in s.steps.iter().zip(&s.vals) {
                let ratio = r
                    .get(*st as usize)
                    .copied()
                    .unwrap_or(f64::NAN)
                    .clamp(-1.0, 1.0);
                if (ratio >= 0.0 && off < ratio) || (ratio < 0.0 && off >= 1.0 + ratio) {
                    steps.push(*st);
                    vals.push(*x);
                }
            }
            if !steps.is_empty() {
                s.steps = steps;
                s.vals = vals;
                out.push(s);
            }
        }
        Ok(out)
    }
}

/// `topk`/`bottomk`/`limitk`'s k, as Prometheus converts it.
pub(super) fn k_param(kf: f64) -> Result<i64> {
    if !(-9.223_372_036_854_776e18..=9.223_372_036_854_775e18).contains(&kf) {
        return Err(PromqlError::Execution(format!(
            // Prometheus' message, capital included.
            "Scalar value {} overflows int64",
            crate::result::format_value(kf)
        )));
    }
    Ok(kf as i64)
}
