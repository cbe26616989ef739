//! A workload's symptom signals on a grid (RED and saturation), the onset
//! over all of them, and the before/after shift at a moment. Pure.

use crate::bins::{median, Grid};
use crate::onset::{detect, Direction, Floors, Onset, MIN_RELATIVE_EFFECT};
use serde::Serialize;

/// How a signal's values read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Unit {
    /// 0–1, shown as a percentage.
    Ratio,
    Milliseconds,
    PerSecond,
    /// A count per bin.
    Count,
    Bytes,
}

impl Unit {
    pub fn fmt(self, v: f64) -> String {
        match self {
            Unit::Ratio => {
                let p = v * 100.0;
                if p != 0.0 && p.abs() < 1.0 {
                    format!("{p:.2} %")
                } else {
                    format!("{p:.1} %")
                }
            }
            Unit::Milliseconds => format!("{v:.1} ms"),
            Unit::PerSecond => format!("{v:.2}/s"),
            Unit::Count => format!("{v:.0}"),
            Unit::Bytes => format!("{:.1} MiB", v / (1024.0 * 1024.0)),
        }
    }
}

/// The signals a symptom can be seen in, in the order they are preferred
/// when two start in the same bin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SignalKind {
    ErrorRatio,
    LatencyMean,
    RequestRate,
    ErrorLogs,
    Restarts,
    OomKills,
    CpuThrottling,
    Memory,
}

impl SignalKind {
    pub fn name(self) -> &'static str {
        match self {
            SignalKind::ErrorRatio => "error ratio",
            SignalKind::LatencyMean => "mean latency",
            SignalKind::RequestRate => "request rate",
            SignalKind::ErrorLogs => "error log lines",
            SignalKind::Restarts => "container restarts",
            SignalKind::OomKills => "OOM kills",
            SignalKind::CpuThrottling => "CPU throttling",
            SignalKind::Memory => "memory working set",
        }
    }

    pub fn unit(self) -> Unit {
        match self {
            SignalKind::ErrorRatio | SignalKind::CpuThrottling => Unit::Ratio,
            SignalKind::LatencyMean => Unit::Milliseconds,
            SignalKind::RequestRate => Unit::PerSecond,
            SignalKind::ErrorLogs | SignalKind::Restarts | SignalKind::OomKills => Unit::Count,
            SignalKind::Memory => Unit::Bytes,
        }
    }

    /// Which way is worse.
    pub fn direction(self) -> Direction {
        match self {
            SignalKind::RequestRate => Direction::Down,
            _ => Direction::Up,
        }
    }

    /// Noise floors of the baseline scale (see [`crate::onset`]).
    pub fn floors(self) -> Floors {
        let (abs_floor, rel_floor) = match self {
            // Half a percent of errors, or 10 % of the usual ratio.
            SignalKind::ErrorRatio => (0.005, 0.1),
            SignalKind::LatencyMean => (2.0, 0.1),
            SignalKind::RequestRate => (0.05, 0.15),
            SignalKind::ErrorLogs => (1.0, 0.2),
            SignalKind::Restarts | SignalKind::OomKills => (0.34, 0.2),
            SignalKind::CpuThrottling => (0.02, 0.1),
            SignalKind::Memory => (8.0 * 1024.0 * 1024.0, 0.05),
        };
        Floors {
            abs_floor,
            rel_floor,
        }
    }
}

/// One signal of one subject (a workload `ns/name` or an edge `a→b`).
#[derive(Debug, Clone, PartialEq)]
pub struct Signal {
    pub kind: SignalKind,
    pub subject: String,
    /// Where it was read from (`beyla`, `service graph`, `cadvisor`, …).
    pub source: &'static str,
    pub values: Vec<Option<f64>>,
}

/// The degradation onset over a set of signals: the earliest onset of any
/// of them (ties: [`SignalKind`] order).
#[derive(Debug, Clone, PartialEq)]
pub struct SignalOnset {
    pub signal: usize,
    pub onset: Onset,
}

/// Every signal's onset, earliest first.
pub fn onsets(signals: &[Signal]) -> Vec<SignalOnset> {
    let mut out: Vec<SignalOnset> = signals
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            detect(&s.values, s.kind.direction(), s.kind.floors())
                .map(|onset| SignalOnset { signal: i, onset })
        })
        .collect();
    out.sort_by_key(|o| (o.onset.bin, signals[o.signal].kind, o.signal));
    out
}

/// A measured before/after move of one signal around a moment.
#[derive(Debug, Clone, PartialEq)]
pub struct Shift {
    pub kind: SignalKind,
    pub subject: String,
    pub before: f64,
    pub after: f64,
    /// From the moment to the end of the first bin past the midpoint
    /// between before and after.
    pub lag_ms: i64,
    /// In baseline scales, positive when worse.
    pub z: f64,
    /// 0–1: `1 − exp(−z/4)` when the move is also at least
    /// [`MIN_RELATIVE_EFFECT`] relative; 0 otherwise.
    pub strength: f64,
}

impl Shift {
    /// The evidence line, e.g. "error ratio of shop/payment rose from 0.2 % to 30.0 % within 40 s after this change".
    pub fn evidence(&self) -> String {
        let u = self.kind.unit();
        let verb = if self.after >= self.before {
            "rose"
        } else {
            "fell"
        };
        if self.strength > 0.0 {
            format!(
                "{} of {} {verb} from {} to {} within {} after this change",
                self.kind.name(),
                self.subject,
                u.fmt(self.before),
                u.fmt(self.after),
                fmt_duration(self.lag_ms)
            )
        } else {
            format!(
                "{} of {} did not move after this change ({} before, {} after)",
                self.kind.name(),
                self.subject,
                u.fmt(self.before),
                u.fmt(self.after)
            )
        }
    }
}

/// Bins compared on each side of a moment.
pub fn shift_span(grid: &Grid) -> usize {
    ((10 * 60_000) / grid.step_ms.max(1)).clamp(3, 20) as usize
}

/// The move of `signal` around `t_ms`: the median of up to [`shift_span`]
/// bins before the bin holding `t_ms` against the median of the bins from
/// it on (up to `end_bin`, exclusive). `None` without data on both sides.
pub fn shift_at(signal: &Signal, grid: &Grid, t_ms: i64, end_bin: usize) -> Option<Shift> {
    let span = shift_span(grid);
    let tb = grid.bin_clamped(t_ms);
    let before_vals: Vec<f64> = signal.values[tb.saturating_sub(span)..tb]
        .iter()
        .flatten()
        .copied()
        .collect();
    let end = end_bin.min(signal.values.len()).min(tb + span);
    if before_vals.len() < 2 || end <= tb {
        return None;
    }
    let after_slice = &signal.values[tb..end];
    let mut after_vals: Vec<f64> = after_slice.iter().flatten().copied().collect();
    let mut b = before_vals.clone();
    let before = median(&mut b)?;
    let after = median(&mut after_vals)?;
    let mut dev: Vec<f64> = before_vals.iter().map(|x| (x - before).abs()).collect();
    let mad = median(&mut dev).unwrap_or(0.0);
    let f = signal.kind.floors();
    let scale = (1.4826 * mad)
        .max(f.rel_floor * before.abs())
        .max(f.abs_floor);
    let sign = match signal.kind.direction() {
        Direction::Up => 1.0,
        Direction::Down => -1.0,
    };
    let z = sign * (after - before) / scale;
    let relative_ok =
        sign * (after - before) >= MIN_RELATIVE_EFFECT * before.abs().max(f.abs_floor);
    let strength = if z > 1.0 && relative_ok {
        1.0 - (-z / 4.0).exp()
    } else {
        0.0
    };
    let mid = (before + after) / 2.0;
    let cross = after_slice
        .iter()
        .position(|v| v.is_some_and(|x| sign * (x - mid) >= 0.0))
        .unwrap_or(0);
    let lag_ms = (grid.time(tb + cross) + grid.step_ms - t_ms).max(0);
    Some(Shift {
        kind: signal.kind,
        subject: signal.subject.clone(),
        before,
        after,
        lag_ms,
        z,
        strength,
    })
}

/// The strongest shift among `signals` of one subject around `t_ms`.
pub fn strongest_shift<'a>(
    signals: impl IntoIterator<Item = &'a Signal>,
    grid: &Grid,
    t_ms: i64,
    end_bin: usize,
) -> Option<Shift> {
    signals
        .into_iter()
        .filter_map(|s| shift_at(s, grid, t_ms, end_bin))
        .max_by(|a, b| {
            a.strength
                .total_cmp(&b.strength)
                .then(a.z.total_cmp(&b.z))
                .then(b.kind.cmp(&a.kind))
        })
}

/// `40 s`, `3 min`, `2 h 5 min`.
pub fn fmt_duration(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    if s < 120 {
        format!("{s} s")
    } else if s < 7200 {
        format!("{} min", s / 60)
    } else {
        format!("{} h {} min", s / 3600, (s % 3600) / 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grid(n: usize) -> Grid {
        Grid {
            start_ms: 0,
            step_ms: 60_000,
            len: n,
        }
    }

    fn sig(kind: SignalKind, values: Vec<f64>) -> Signal {
        Signal {
            kind,
            subject: "shop/payment".into(),
            source: "test",
            values: values.into_iter().map(Some).collect(),
        }
    }

    #[test]
    fn earliest_onset_wins() {
        let mut lat = vec![100.0; 60];
        let mut err = vec![0.001; 60];
        for x in &mut lat[30..] {
            *x = 400.0;
        }
        for x in &mut err[35..] {
            *x = 0.3;
        }
        let s = [
            sig(SignalKind::ErrorRatio, err),
            sig(SignalKind::LatencyMean, lat),
        ];
        let o = onsets(&s);
        assert_eq!(o.len(), 2);
        assert_eq!(s[o[0].signal].kind, SignalKind::LatencyMean);
        assert_eq!(o[0].onset.bin, 30);
    }

    #[test]
    fn shift_measures_the_move_after_a_moment() {
        let g = grid(60);
        let mut err = vec![0.002; 60];
        for x in &mut err[31..] {
            *x = 0.3;
        }
        let s = sig(SignalKind::ErrorRatio, err);
        let sh = shift_at(&s, &g, 30 * 60_000 + 55_000, 60).unwrap();
        assert_eq!(sh.before, 0.002);
        assert_eq!(sh.after, 0.3);
        assert!(sh.strength > 0.9);
        assert_eq!(sh.lag_ms, 65_000);
        assert_eq!(
            sh.evidence(),
            "error ratio of shop/payment rose from 0.20 % to 30.0 % within 65 s after this change"
        );
        // Long before the step, nothing moved.
        let early = shift_at(&s, &g, 5 * 60_000, 60).unwrap();
        assert_eq!(early.strength, 0.0);
        assert!(early.evidence().contains("did not move"));
        // No data before the moment.
        assert!(shift_at(&s, &g, 0, 60).is_none());
    }

    #[test]
    fn request_rate_degrades_downwards() {
        let g = grid(40);
        let mut rate = vec![50.0; 40];
        for x in &mut rate[20..] {
            *x = 5.0;
        }
        let s = sig(SignalKind::RequestRate, rate);
        let sh = shift_at(&s, &g, 20 * 60_000, 40).unwrap();
        assert!(sh.strength > 0.7, "{sh:?}");
        assert!(sh.evidence().contains("fell from 50.00/s to 5.00/s"));
    }

    #[test]
    fn durations() {
        assert_eq!(fmt_duration(5_000), "5 s");
        assert_eq!(fmt_duration(600_000), "10 min");
        assert_eq!(fmt_duration(7_500_000), "2 h 5 min");
    }
}
