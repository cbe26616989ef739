//! Degradation onset: when did a signal leave its own baseline? Pure.
//!
//! # Method: robust baseline + two-sided CUSUM
//! 1. **Baseline.** The first third of the window's bins (at least
//!    [`MIN_BASELINE`] present values): its median `m` and its scale
//!    `s = max(1.4826 · MAD, rel_floor · |m|, abs_floor)`. The median and the
//!    MAD ignore a minority of outliers, so a spike or an onset that already
//!    started inside the baseline does not move them much; the floors keep a
//!    perfectly flat baseline (0 errors) from turning any blip into an alarm.
//! 2. **Standardise.** `z_i = (x_i − m) / s` for every present bin.
//! 3. **CUSUM** (Page, 1954), both directions: `S⁺_i = max(0, S⁺_{i−1} + z_i − k)`,
//!    `S⁻_i = max(0, S⁻_{i−1} − z_i − k)`, with slack `k` = [`CUSUM_K`] and
//!    threshold `h` = [`CUSUM_H`] (in units of `s`). The alarm is the first
//!    bin where the sum of the signal's *degrading* direction passes `h`;
//!    the **onset** is the first bin of that excursion (the bin after the
//!    sum was last zero) that is itself clearly out (`z ≥ k + 1`), so a ramp
//!    is dated near where it started, not where it crossed a line, and
//!    noise leaning the same way just before a step does not date it early.
//! 4. **Effect.** The median after the onset must differ from `m` by at
//!    least `s` and by [`MIN_RELATIVE_EFFECT`] of `|m|` (or the signal's
//!    absolute floor when `m` is 0), so a statistically clear but negligible
//!    drift is not an incident.
//!
//! `k = 1` lets a signal wander within ±1 s forever without accumulating:
//! a seasonal swing whose amplitude is inside the baseline's own spread
//! (the baseline covers at least one cycle) never alarms, a step of 3 s
//! alarms within 3 bins. Limits: a season longer than the baseline (a
//! daily cycle in a 2 h window) looks like a ramp; a degradation that
//! began before the window has no baseline to leave (widen `window`).

use crate::bins::median;
use serde::Serialize;

/// Present values the baseline needs at least.
pub const MIN_BASELINE: usize = 6;
/// CUSUM slack, in baseline scales.
pub const CUSUM_K: f64 = 1.0;
/// CUSUM threshold, in baseline scales.
pub const CUSUM_H: f64 = 6.0;
/// The smallest relative shift that counts as a degradation.
pub const MIN_RELATIVE_EFFECT: f64 = 0.2;

/// Which way a signal degrades.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Up,
    Down,
}

/// A signal's noise floors: the baseline scale is never below
/// `abs_floor` nor below `rel_floor · |median|`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Floors {
    pub abs_floor: f64,
    pub rel_floor: f64,
}

/// A detected onset, in bin indexes of the input.
#[derive(Debug, Clone, PartialEq)]
pub struct Onset {
    /// First bin of the excursion.
    pub bin: usize,
    /// Bin where the CUSUM passed its threshold.
    pub alarm_bin: usize,
    pub direction: Direction,
    pub baseline: f64,
    pub scale: f64,
    /// Median of the values from the onset on.
    pub after: f64,
}

/// The onset of `values` in its degrading `direction`, or `None` when the
/// signal stayed in its baseline (or there is too little data).
pub fn detect(values: &[Option<f64>], direction: Direction, floors: Floors) -> Option<Onset> {
    let present: Vec<(usize, f64)> = values
        .iter()
        .enumerate()
        .filter_map(|(i, v)| v.filter(|x| x.is_finite()).map(|x| (i, x)))
        .collect();
    if present.len() < MIN_BASELINE * 2 {
        return None;
    }
    let nb = (present.len() / 3).max(MIN_BASELINE);
    let mut base: Vec<f64> = present[..nb].iter().map(|p| p.1).collect();
    let m = median(&mut base)?;
    let mut dev: Vec<f64> = base.iter().map(|x| (x - m).abs()).collect();
    let mad = median(&mut dev)?;
    let s = (1.4826 * mad)
        .max(floors.rel_floor * m.abs())
        .max(floors.abs_floor);
    if s <= 0.0 || !s.is_finite() {
        return None;
    }
    let sign = match direction {
        Direction::Up => 1.0,
        Direction::Down => -1.0,
    };
    let (mut cusum, mut start) = (0.0f64, None::<usize>);
    for (pos, &(i, x)) in present.iter().enumerate() {
        let z = sign * (x - m) / s;
        let next = (cusum + z - CUSUM_K).max(0.0);
        if cusum == 0.0 && next > 0.0 {
            start = Some(pos);
        }
        if next == 0.0 {
            start = None;
        }
        cusum = next;
        if cusum > CUSUM_H {
            // The first bin of the excursion that is itself clearly out
            // (z ≥ k + 1): noise that happened to lean the same way just
            // before a step does not date it early.
            let first = start.unwrap_or(pos);
            let from = (first..=pos)
                .find(|&p| sign * (present[p].1 - m) / s >= CUSUM_K + 1.0)
                .unwrap_or(first);
            let mut after: Vec<f64> = present[from..].iter().map(|p| p.1).collect();
            let after = median(&mut after)?;
            let effect = sign * (after - m);
            let needed = s.max(MIN_RELATIVE_EFFECT * m.abs());
            if effect < needed {
                return None;
            }
            return Some(Onset {
                bin: present[from].0,
                alarm_bin: i,
                direction,
                baseline: m,
                scale: s,
                after,
            });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    const LAT: Floors = Floors {
        abs_floor: 1.0,
        rel_floor: 0.05,
    };

    fn noise(rng: &mut StdRng, n: usize, level: f64, sd: f64) -> Vec<f64> {
        (0..n)
            .map(|_| {
                // Sum of uniforms: roughly normal, bounded.
                let u: f64 = (0..4).map(|_| rng.random::<f64>() - 0.5).sum();
                level + u * sd * 1.7
            })
            .collect()
    }

    fn some(v: Vec<f64>) -> Vec<Option<f64>> {
        v.into_iter().map(Some).collect()
    }

    #[test]
    fn a_step_is_dated_at_its_first_bin() {
        for seed in 0..20 {
            let mut rng = StdRng::seed_from_u64(seed);
            let mut v = noise(&mut rng, 120, 100.0, 5.0);
            for x in &mut v[80..] {
                *x += 40.0;
            }
            let o = detect(&some(v), Direction::Up, LAT).expect("step found");
            // Within a few bins: a noise bin 2 s out just before the step
            // (2 % of bins) is indistinguishable from its start.
            assert!((76..=81).contains(&o.bin), "seed {seed}: onset {}", o.bin);
            assert!(o.alarm_bin <= 84);
            assert!((o.baseline - 100.0).abs() < 5.0);
            assert!(o.after > 130.0);
        }
    }

    #[test]
    fn an_error_ratio_step_from_zero() {
        let mut v = vec![Some(0.0); 60];
        for x in &mut v[45..] {
            *x = Some(0.3);
        }
        let errors = Floors {
            abs_floor: 0.005,
            rel_floor: 0.1,
        };
        let o = detect(&v, Direction::Up, errors).unwrap();
        assert_eq!(o.bin, 45);
        assert_eq!(o.alarm_bin, 45);
        // The other direction sees nothing.
        assert!(detect(&v, Direction::Down, errors).is_none());
    }

    #[test]
    fn a_ramp_is_dated_near_where_it_started() {
        let mut rng = StdRng::seed_from_u64(3);
        let mut v = noise(&mut rng, 120, 50.0, 2.0);
        for (j, x) in v[70..].iter_mut().enumerate() {
            *x += j as f64 * 1.5;
        }
        let o = detect(&some(v), Direction::Up, LAT).unwrap();
        assert!((68..=78).contains(&o.bin), "onset {}", o.bin);
    }

    #[test]
    fn noise_alone_has_no_onset() {
        for seed in 0..50 {
            let mut rng = StdRng::seed_from_u64(100 + seed);
            let v = noise(&mut rng, 240, 80.0, 6.0);
            assert_eq!(
                detect(&some(v.clone()), Direction::Up, LAT),
                None,
                "seed {seed}"
            );
            assert_eq!(detect(&some(v), Direction::Down, LAT), None, "seed {seed}");
        }
    }

    #[test]
    fn a_seasonal_swing_is_not_an_onset_but_a_step_on_it_is() {
        let mut rng = StdRng::seed_from_u64(9);
        let n = 240;
        // Four cycles over the window: the baseline (first third) holds more than one.
        let season: Vec<f64> = noise(&mut rng, n, 200.0, 3.0)
            .into_iter()
            .enumerate()
            .map(|(i, x)| x + 20.0 * (i as f64 * std::f64::consts::TAU * 4.0 / n as f64).sin())
            .collect();
        assert_eq!(detect(&some(season.clone()), Direction::Up, LAT), None);
        assert_eq!(detect(&some(season.clone()), Direction::Down, LAT), None);
        let mut stepped = season;
        for x in &mut stepped[170..] {
            *x += 90.0;
        }
        let o = detect(&some(stepped), Direction::Up, LAT).unwrap();
        assert!((166..=172).contains(&o.bin), "onset {}", o.bin);
    }

    #[test]
    fn gaps_and_short_series() {
        assert_eq!(detect(&[Some(1.0); 5], Direction::Up, LAT), None);
        let mut v: Vec<Option<f64>> = (0..60)
            .map(|i| if i % 2 == 0 { Some(10.0) } else { None })
            .collect();
        for x in v[40..].iter_mut().step_by(2) {
            *x = Some(30.0);
        }
        let o = detect(&v, Direction::Up, LAT).unwrap();
        assert_eq!(o.bin, 40);
    }

    #[test]
    fn a_small_persistent_drift_is_not_an_incident() {
        // 10 % up on a flat baseline: clear to CUSUM, below the effect floor.
        let mut v = vec![Some(100.0); 90];
        for x in &mut v[60..] {
            *x = Some(110.0);
        }
        let f = Floors {
            abs_floor: 1.0,
            rel_floor: 0.01,
        };
        assert_eq!(detect(&v, Direction::Up, f), None);
    }
}
