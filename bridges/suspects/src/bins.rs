//! Time bins: stored samples turned into one value per fixed step, the
//! input of onset detection and of before/after comparisons. Pure.

use kube_insight_core::{is_stale_nan, Sample, TimeSeries};

/// A regular grid of `len` bins of `step_ms` starting at `start_ms`; bin
/// `i` covers `[start + i·step, start + (i+1)·step)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grid {
    pub start_ms: i64,
    pub step_ms: i64,
    pub len: usize,
}

impl Grid {
    /// The grid over `[start_ms, end_ms]` with at most `max_bins` bins of at
    /// least `min_step_ms`.
    pub fn over(start_ms: i64, end_ms: i64, min_step_ms: i64, max_bins: usize) -> Grid {
        let span = (end_ms - start_ms).max(1);
        let max_bins = max_bins.max(1) as i64;
        let step = (span + max_bins - 1) / max_bins;
        let step = step.max(min_step_ms.max(1));
        let len = ((span + step - 1) / step).max(1) as usize;
        Grid {
            start_ms,
            step_ms: step,
            len,
        }
    }

    /// The bin holding `t`, if inside the grid.
    pub fn bin(&self, t: i64) -> Option<usize> {
        if t < self.start_ms {
            return None;
        }
        let i = ((t - self.start_ms) / self.step_ms) as usize;
        (i < self.len).then_some(i)
    }

    /// The bin holding `t`, clamped to the grid.
    pub fn bin_clamped(&self, t: i64) -> usize {
        if t < self.start_ms {
            return 0;
        }
        (((t - self.start_ms) / self.step_ms) as usize).min(self.len.saturating_sub(1))
    }

    pub fn time(&self, i: usize) -> i64 {
        self.start_ms + i as i64 * self.step_ms
    }
}

/// Counter increases per bin, summed over series: `inc[i]` is the increase
/// of the sample pairs ending in bin `i` (resets handled as Prometheus does:
/// a drop is a restart from zero), `secs[i]` the seconds those pairs cover
/// per series, so `inc[i] / secs[i]` is a rate. `None` where no series had
/// a pair ending in the bin.
#[derive(Debug, Clone, PartialEq)]
pub struct CounterBins {
    pub inc: Vec<Option<f64>>,
    pub rate: Vec<Option<f64>>,
}

impl CounterBins {
    pub fn empty(grid: &Grid) -> CounterBins {
        CounterBins {
            inc: vec![None; grid.len],
            rate: vec![None; grid.len],
        }
    }

    /// Adds one counter series.
    pub fn add(&mut self, grid: &Grid, samples: &[Sample]) {
        let mut prev: Option<&Sample> = None;
        for s in samples {
            if is_stale_nan(s.value) || !s.value.is_finite() {
                prev = None;
                continue;
            }
            if let Some(p) = prev {
                if let Some(i) = grid.bin(s.timestamp_ms) {
                    let inc = if s.value >= p.value {
                        s.value - p.value
                    } else {
                        s.value
                    };
                    let secs = (s.timestamp_ms - p.timestamp_ms) as f64 / 1000.0;
                    *self.inc[i].get_or_insert(0.0) += inc;
                    if secs > 0.0 {
                        *self.rate[i].get_or_insert(0.0) += inc / secs;
                    }
                }
            }
            prev = Some(s);
        }
    }

    pub fn of(grid: &Grid, series: &[TimeSeries]) -> CounterBins {
        let mut b = CounterBins::empty(grid);
        for s in series {
            b.add(grid, &s.samples);
        }
        b
    }

    /// The sum of increases over bins `[from, to)`; `None` without data.
    pub fn sum(&self, from: usize, to: usize) -> Option<f64> {
        let to = to.min(self.inc.len());
        let mut out = None;
        for v in self.inc.get(from..to).unwrap_or(&[]).iter().flatten() {
            *out.get_or_insert(0.0) += v;
        }
        out
    }
}

/// `num[i] / den[i]` where the denominator is positive (an error ratio, a
/// mean latency, a throttling ratio); `None` elsewhere.
pub fn ratio(num: &CounterBins, den: &CounterBins) -> Vec<Option<f64>> {
    den.inc
        .iter()
        .enumerate()
        .map(|(i, d)| match d {
            Some(d) if *d > 0.0 => Some(num.inc.get(i).copied().flatten().unwrap_or(0.0) / d),
            _ => None,
        })
        .collect()
}

/// Gauges per bin: the mean over each series' samples in the bin, summed
/// over series (a workload's memory is the sum of its containers').
pub fn gauge_sum(grid: &Grid, series: &[TimeSeries]) -> Vec<Option<f64>> {
    let mut out: Vec<Option<f64>> = vec![None; grid.len];
    for s in series {
        let mut acc: Vec<(f64, u32)> = vec![(0.0, 0); grid.len];
        for x in &s.samples {
            if is_stale_nan(x.value) || !x.value.is_finite() {
                continue;
            }
            if let Some(i) = grid.bin(x.timestamp_ms) {
                acc[i].0 += x.value;
                acc[i].1 += 1;
            }
        }
        for (i, (sum, n)) in acc.into_iter().enumerate() {
            if n > 0 {
                *out[i].get_or_insert(0.0) += sum / n as f64;
            }
        }
    }
    out
}

/// The median of the present values in `[from, to)`.
pub fn median_of(values: &[Option<f64>], from: usize, to: usize) -> Option<f64> {
    let to = to.min(values.len());
    let mut v: Vec<f64> = values.get(from..to)?.iter().flatten().copied().collect();
    median(&mut v)
}

/// The median (sorts `v`); `None` when empty.
pub fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_insight_core::Labels;

    #[test]
    fn grid_bounds_bins_and_step() {
        let g = Grid::over(0, 7_200_000, 15_000, 240);
        assert_eq!(g.step_ms, 30_000);
        assert_eq!(g.len, 240);
        assert_eq!(g.bin(0), Some(0));
        assert_eq!(g.bin(7_199_999), Some(239));
        assert_eq!(g.bin(7_200_000), None);
        assert_eq!(g.bin(-1), None);
        let small = Grid::over(0, 60_000, 15_000, 240);
        assert_eq!((small.step_ms, small.len), (15_000, 4));
    }

    #[test]
    fn counters_bin_increases_and_handle_resets() {
        let g = Grid::over(0, 60_000, 15_000, 100);
        let s = TimeSeries::new(
            Labels::from_pairs([("__name__", "x")]),
            vec![
                Sample::new(0, 10.0),
                Sample::new(15_000, 13.0),
                Sample::new(30_000, 2.0), // reset
                Sample::new(45_000, 5.0),
            ],
        );
        let b = CounterBins::of(&g, &[s]);
        assert_eq!(b.inc, vec![None, Some(3.0), Some(2.0), Some(3.0)]);
        assert_eq!(b.rate[1], Some(0.2));
        assert_eq!(b.sum(0, 4), Some(8.0));
        let r = ratio(&b, &b);
        assert_eq!(r[1], Some(1.0));
        assert_eq!(r[0], None);
    }

    #[test]
    fn medians() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&mut []), None);
        assert_eq!(
            median_of(&[Some(1.0), None, Some(5.0), Some(3.0)], 0, 4),
            Some(3.0)
        );
    }
}
