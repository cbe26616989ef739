//! 5-minute rollups: what they summarise, and how a long-range query reads
//! them back as samples.
//!
//! A store computes [`rollup_5m`] per sealed chunk window (2 h by default)
//! and keeps the buckets long after the raw samples would be too costly to
//! read. A query that asks for [`Resolution::Rollup5m`] gets, per series, one
//! synthetic sample per bucket made by [`synthesize`]: the field the
//! consuming function needs, at the bucket's last millisecond. PromQL then
//! evaluates those samples with its usual code, so `max_over_time` over
//! bucket-aligned windows is exact and `rate` is exact up to where the
//! window's edges cut a bucket (at most one bucket per edge), the accuracy
//! Thanos' downsampling gives.

use crate::sample::STALE_NAN_BITS;
use crate::time::TimeRange;

/// Width of one rollup bucket.
pub const ROLLUP_STEP_MS: i64 = 5 * 60 * 1000;

/// One 5-minute bucket of a series. Stale markers are not counted; a bucket
/// holding only stale markers is not emitted.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RollupBucket {
    /// Bucket start (a multiple of [`ROLLUP_STEP_MS`]).
    pub start_ms: i64,
    pub count: u32,
    pub min: f64,
    pub max: f64,
    pub sum: f64,
    /// The value of the bucket's last sample.
    pub last: f64,
    /// Counter increase over the bucket, reset-aware: the sum of
    /// `v[i] - v[i-1]` for consecutive samples, where a decrease counts as a
    /// reset and adds `v[i]`. The step from the previous bucket's last sample
    /// (inside the same [`rollup_5m`] call, i.e. the same chunk window) into
    /// this bucket is included; [`synthesize`] restores the step across
    /// windows. Meaningless for gauges.
    pub increase: f64,
}

/// Computes 5-minute rollups from samples sorted by timestamp.
pub fn rollup_5m(samples: &[(i64, f64)]) -> Vec<RollupBucket> {
    let mut out: Vec<RollupBucket> = Vec::new();
    let mut prev: Option<f64> = None;
    for &(t, v) in samples {
        if v.to_bits() == STALE_NAN_BITS {
            continue;
        }
        let start = t.div_euclid(ROLLUP_STEP_MS) * ROLLUP_STEP_MS;
        let inc = match prev {
            Some(p) if v >= p => v - p,
            Some(_) => v, // counter reset
            None => 0.0,
        };
        let inc = if inc.is_nan() { 0.0 } else { inc };
        prev = Some(v);
        match out.last_mut() {
            Some(b) if b.start_ms == start => {
                b.count += 1;
                b.min = b.min.min(v);
                b.max = b.max.max(v);
                b.sum += v;
                b.last = v;
                b.increase += inc;
            }
            _ => out.push(RollupBucket {
                start_ms: start,
                count: 1,
                min: v,
                max: v,
                sum: v,
                last: v,
                increase: inc,
            }),
        }
    }
    out
}

/// Rollups of samples that span several chunk windows, computed window by
/// window exactly as a store seals them, so on-the-fly and stored rollups
/// agree bit for bit.
pub fn rollup_5m_windowed(samples: &[(i64, f64)], window_ms: i64) -> Vec<RollupBucket> {
    let window_ms = window_ms.max(ROLLUP_STEP_MS);
    let mut out = Vec::new();
    let mut rest = samples;
    while let Some(&(t, _)) = rest.first() {
        let end = (t.div_euclid(window_ms) + 1).saturating_mul(window_ms);
        let n = rest.partition_point(|s| s.0 < end);
        out.extend(rollup_5m(&rest[..n]));
        rest = &rest[n..];
    }
    out
}

/// Which summary of each bucket a rollup read returns as its sample value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RollupField {
    Min,
    Max,
    Sum,
    /// The bucket's last value: what an instant selector sees.
    Last,
    /// A synthetic counter without resets whose steps are the buckets'
    /// increases: `rate`/`increase` over it give the raw counter's.
    Counter,
}

impl RollupField {
    pub fn as_str(self) -> &'static str {
        match self {
            RollupField::Min => "min",
            RollupField::Max => "max",
            RollupField::Sum => "sum",
            RollupField::Last => "last",
            RollupField::Counter => "counter",
        }
    }
}

/// Which data a metrics read returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum Resolution {
    /// Every stored sample.
    #[default]
    Raw,
    /// One synthetic sample per 5-minute bucket, see [`synthesize`].
    Rollup5m(RollupField),
}

/// Timestamp of a bucket's synthetic sample: its last millisecond, so a
/// window `[t - r, t]` with `t` and `r` on bucket boundaries holds exactly
/// the buckets inside it, and no sample is dated before the data it sums.
pub fn sample_time(b: &RollupBucket) -> i64 {
    b.start_ms + ROLLUP_STEP_MS - 1
}

/// One sample per bucket for `field`. `buckets` are sorted by start and were
/// computed per chunk window of `window_ms` (as [`rollup_5m_windowed`]
/// does); for [`RollupField::Counter`] the step from one window's last value
/// into the next window, which a per-window rollup cannot see, is restored
/// from the next bucket's first value (`last - increase`; exact unless that
/// bucket itself holds a reset).
pub fn synthesize(buckets: &[RollupBucket], field: RollupField, window_ms: i64) -> Vec<(i64, f64)> {
    let window_ms = window_ms.max(ROLLUP_STEP_MS);
    let mut out = Vec::with_capacity(buckets.len());
    let mut counter = 0.0f64;
    let mut prev: Option<&RollupBucket> = None;
    for b in buckets {
        let v = match field {
            RollupField::Min => b.min,
            RollupField::Max => b.max,
            RollupField::Sum => b.sum,
            RollupField::Last => b.last,
            RollupField::Counter => {
                counter = match prev {
                    None => b.last,
                    Some(p)
                        if p.start_ms.div_euclid(window_ms) != b.start_ms.div_euclid(window_ms) =>
                    {
                        let first = b.last - b.increase;
                        let step = if first >= p.last {
                            first - p.last
                        } else {
                            first
                        };
                        let step = if step.is_finite() { step } else { 0.0 };
                        counter + step + b.increase
                    }
                    Some(_) => counter + b.increase,
                };
                counter
            }
        };
        prev = Some(b);
        out.push((sample_time(b), v));
    }
    out
}

/// [`synthesize`] over the buckets whose sample falls in `range`: what a
/// rollup read returns. The synthetic counter starts at the first returned
/// bucket's last value.
pub fn synthesize_range(
    buckets: impl IntoIterator<Item = RollupBucket>,
    range: TimeRange,
    field: RollupField,
    window_ms: i64,
) -> Vec<(i64, f64)> {
    let kept: Vec<RollupBucket> = buckets
        .into_iter()
        .filter(|b| range.contains(sample_time(b)))
        .collect();
    synthesize(&kept, field, window_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: i64 = 1_717_171_200_000; // a multiple of 2 h

    #[test]
    fn buckets_summarise_five_minutes_and_steps_between_them() {
        // Counter: +10 per 15 s, reset in the middle of bucket 2.
        let mut s = Vec::new();
        let mut v = 100.0;
        for i in 0..60 {
            if i == 45 {
                v = 5.0;
            } else if i > 0 {
                v += 10.0;
            }
            s.push((BASE + i * 15_000, v));
        }
        s.push((BASE + 60 * 15_000, f64::from_bits(STALE_NAN_BITS)));
        let r = rollup_5m(&s);
        assert_eq!(r.len(), 3);
        assert_eq!((r[0].start_ms, r[0].count), (BASE, 20));
        assert_eq!((r[0].min, r[0].max, r[0].last), (100.0, 290.0, 290.0));
        assert_eq!(
            r[0].sum,
            (0..20).map(|i| 100.0 + 10.0 * i as f64).sum::<f64>()
        );
        assert_eq!(r[0].increase, 190.0);
        assert_eq!(r[1].increase, 200.0); // includes the step into the bucket
                                          // Bucket 2: 10 (step in), 4 × 10, reset adds 5, then 14 × 10.
        assert_eq!(r[2].increase, 10.0 + 40.0 + 5.0 + 140.0);
    }

    #[test]
    fn the_synthetic_counter_adds_up_to_the_raw_increase_across_windows() {
        // 6 h of a counter at 15 s with two resets, one of them exactly at a
        // window boundary, rolled up per 2 h window.
        let window = 2 * 3600 * 1000;
        let mut s = Vec::new();
        let mut v = 1_000.0;
        let mut raw_increase = 0.0;
        for i in 0..(6 * 240) {
            let t = BASE + i * 15_000;
            let next = if i == 300 || t == BASE + window {
                3.0
            } else {
                v + 7.5
            };
            if i > 0 {
                raw_increase += if next >= v { next - v } else { next };
            }
            v = next;
            s.push((t, v));
        }
        let b = rollup_5m_windowed(&s, window);
        assert_eq!(b.len(), 72);
        let c = synthesize(&b, RollupField::Counter, window);
        assert_eq!(c.len(), 72);
        assert!(c.windows(2).all(|w| w[1].1 >= w[0].1), "monotone");
        assert_eq!(c[0], (BASE + ROLLUP_STEP_MS - 1, b[0].last));
        // The synthetic counter's total equals the raw increase minus the
        // first bucket's, which precedes its first point.
        let total = c[71].1 - c[0].1;
        assert_eq!(total, raw_increase - b[0].increase);
        // Without the window fix, each boundary would lose one step.
        let naive: f64 = b[1..].iter().map(|x| x.increase).sum();
        assert!(naive < total);
    }

    #[test]
    fn gauge_fields_and_sample_times() {
        let s: Vec<(i64, f64)> = (0..40)
            .map(|i| (BASE + i * 15_000, (i % 7) as f64))
            .collect();
        let b = rollup_5m(&s);
        for (field, want) in [
            (RollupField::Max, [6.0, 6.0]),
            (RollupField::Min, [0.0, 0.0]),
            (RollupField::Last, [5.0, 4.0]),
        ] {
            let got = synthesize(&b, field, 7_200_000);
            assert_eq!(
                got,
                vec![(BASE + 299_999, want[0]), (BASE + 599_999, want[1])],
                "{field:?}"
            );
        }
        let sum = synthesize(&b, RollupField::Sum, 7_200_000);
        assert_eq!(sum[0].1, s[..20].iter().map(|x| x.1).sum::<f64>());
        assert!(synthesize(&[], RollupField::Counter, 7_200_000).is_empty());
    }

    #[test]
    fn windowed_rollups_match_per_window_calls() {
        let window = 7_200_000;
        let s: Vec<(i64, f64)> = (0..2000)
            .map(|i| (BASE - 3_600_000 + i * 10_000, i as f64))
            .collect();
        let mut want = Vec::new();
        for w in s.chunk_by(|a, b| a.0.div_euclid(window) == b.0.div_euclid(window)) {
            want.extend(rollup_5m(w));
        }
        assert_eq!(rollup_5m_windowed(&s, window), want);
        assert!(rollup_5m_windowed(&[], window).is_empty());
    }
}
