//! The data-access trait the engine reads through, and an in-memory
//! implementation for tests, benches and fixtures.

use crate::error::QuerierError;
use async_trait::async_trait;
use kube_insight_core::matcher::matches_all;
use kube_insight_core::rollup::{self, Resolution};
use kube_insight_core::{Matcher, Sample, TimeRange, TimeSeries};

/// What the engine will do with a selection, so a store can pick a cheaper
/// representation (e.g. 5-minute rollups for long ranges at a coarse step).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SelectHints {
    /// Evaluation step of the query (0 for an instant query), in ms.
    pub step_ms: i64,
    /// Range of the range-vector selector (`x[5m]` → 300000), 0 for an instant selector.
    pub range_ms: i64,
    /// The function that consumes the range vector (`rate`, `max_over_time`…), if any.
    pub func: Option<String>,
    /// The engine fails the query once more series than this are selected; a
    /// store may stop early and return [`QuerierError::LimitExceeded`].
    pub max_series: usize,
    /// Same for samples.
    pub max_samples: usize,
    /// Raw samples, or one synthetic sample per 5-minute rollup bucket
    /// (see [`kube_insight_core::rollup`]); the engine picks it from its
    /// [`crate::RollupPolicy`].
    pub resolution: Resolution,
}

/// Where the engine reads series from. The store layer implements it.
#[async_trait]
pub trait Querier: Send + Sync {
    /// Every series matching all `matchers` that has samples in `range`
    /// (inclusive), with those samples sorted by timestamp, stale markers
    /// ([`kube_insight_core::STALE_NAN`]) included. Samples outside `range`
    /// may be returned too; the engine windows them itself.
    async fn select(
        &self,
        matchers: &[Matcher],
        range: TimeRange,
        hints: &SelectHints,
    ) -> Result<Vec<TimeSeries>, QuerierError>;
}

/// The chunk window [`MemoryQuerier`] rolls up by: the stores' default.
pub const MEMORY_CHUNK_WINDOW_MS: i64 = 2 * 3600 * 1000;

/// A [`Querier`] over series held in memory. Rollup reads are computed from
/// the samples on the fly.
#[derive(Clone, Debug, Default)]
pub struct MemoryQuerier {
    series: Vec<TimeSeries>,
}

impl MemoryQuerier {
    /// Holds `series`; each one's samples are sorted by timestamp here.
    pub fn new(mut series: Vec<TimeSeries>) -> Self {
        for s in &mut series {
            s.samples.sort_by_key(|x| x.timestamp_ms);
        }
        MemoryQuerier { series }
    }

    pub fn series(&self) -> &[TimeSeries] {
        &self.series
    }

    /// Adds a series (samples sorted here).
    pub fn push(&mut self, mut s: TimeSeries) {
        s.samples.sort_by_key(|x| x.timestamp_ms);
        self.series.push(s);
    }
}

#[async_trait]
impl Querier for MemoryQuerier {
    async fn select(
        &self,
        matchers: &[Matcher],
        range: TimeRange,
        hints: &SelectHints,
    ) -> Result<Vec<TimeSeries>, QuerierError> {
        let mut out = Vec::new();
        for s in &self.series {
            if !matches_all(matchers, &s.labels) {
                continue;
            }
            if let Resolution::Rollup5m(field) = hints.resolution {
                // Rolled up per chunk window, as the stores do.
                let raw: Vec<(i64, f64)> = s
                    .samples
                    .iter()
                    .map(|x| (x.timestamp_ms, x.value))
                    .collect();
                let buckets = rollup::rollup_5m_windowed(&raw, MEMORY_CHUNK_WINDOW_MS);
                let synth = rollup::synthesize_range(buckets, range, field, MEMORY_CHUNK_WINDOW_MS);
                if !synth.is_empty() {
                    out.push(TimeSeries::new(
                        s.labels.clone(),
                        synth.into_iter().map(|(t, v)| Sample::new(t, v)).collect(),
                    ));
                }
                continue;
            }
            let lo = s
                .samples
                .partition_point(|x| x.timestamp_ms < range.start_ms);
            let hi = s
                .samples
                .partition_point(|x| x.timestamp_ms <= range.end_ms);
            if lo < hi {
                out.push(TimeSeries::new(
                    s.labels.clone(),
                    s.samples[lo..hi].to_vec(),
                ));
            }
        }
        Ok(out)
    }
}
