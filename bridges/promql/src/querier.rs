//! The data-access trait the engine reads through, and an in-memory
//! implementation for tests, benches and fixtures.

use crate::error::QuerierError;
use async_trait::async_trait;
use kube_insight_core::matcher::matches_all;
use kube_insight_core::{Matcher, TimeRange, TimeSeries};

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

/// A [`Querier`] over series held in memory.
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
        _hints: &SelectHints,
    ) -> Result<Vec<TimeSeries>, QuerierError> {
        let mut out = Vec::new();
        for s in &self.series {
            if !matches_all(matchers, &s.labels) {
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
