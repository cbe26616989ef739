//! The per-cluster series cap (`KUBE_INSIGHT_MAX_SERIES`), shared by every
//! backend.
//!
//! A series counts toward the cap while it was written within the head
//! grace (`KUBE_INSIGHT_METRICS_HEAD_GRACE`): the series of a finished
//! rollout stop counting once they go quiet, so the pods of the next
//! rollout get their metrics even while the old series are still held.
//! What the head holds is bounded too: at most [`HELD_FACTOR`] × the cap,
//! idle or not, so memory stays bounded while idle series wait for their
//! window to close.
//!
//! Counting the series written within the grace takes a scan, so it is
//! done only when a new series arrives with the cluster at the cap, at most
//! once per [`RECOUNT_MS`] per cluster; series admitted meanwhile are added
//! to the last count.

use std::collections::HashMap;

/// Series held (idle ones included) may reach this multiple of the cap.
pub const HELD_FACTOR: u64 = 2;

/// A cluster's live count is recounted at most this often while at the cap.
pub const RECOUNT_MS: i64 = 10_000;

/// Whether a new series may be admitted: `live` series written within the
/// grace, `held` series in the head (live or idle), `cap` the limit.
pub fn admits(live: u64, held: u64, cap: u64) -> bool {
    live < cap && held < cap.saturating_mul(HELD_FACTOR)
}

/// The last live count of each cluster at the cap.
#[derive(Debug, Default)]
pub struct CapGate {
    /// cluster → (counted at, live series then + admitted since).
    counts: HashMap<String, (i64, u64)>,
}

impl CapGate {
    /// Whether a new series of `cluster`, which holds `held` series, is
    /// admitted at `now_ms`; `count_live` counts the cluster's series
    /// written within the grace (called at most once per [`RECOUNT_MS`]).
    pub fn admit(
        &mut self,
        cluster: &str,
        held: u64,
        cap: u64,
        now_ms: i64,
        count_live: impl FnOnce() -> u64,
    ) -> bool {
        if held < cap {
            // A count taken earlier must include this series too.
            if let Some(entry) = self.counts.get_mut(cluster) {
                entry.1 += 1;
            }
            return true;
        }
        let fresh = self
            .counts
            .get(cluster)
            .is_some_and(|&(at, _)| now_ms.saturating_sub(at) < RECOUNT_MS && at <= now_ms);
        if !fresh {
            self.counts
                .insert(cluster.to_string(), (now_ms, count_live()));
        }
        let Some(entry) = self.counts.get_mut(cluster) else {
            return false;
        };
        if admits(entry.1, held, cap) {
            entry.1 += 1;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn below_the_cap_everything_is_admitted_without_a_count() {
        let mut g = CapGate::default();
        assert!(g.admit("c", 2, 3, 0, || panic!("counted below the cap")));
    }

    #[test]
    fn at_the_cap_idle_series_do_not_count() {
        let mut g = CapGate::default();
        // 3 held, all live: refused.
        assert!(!g.admit("c", 3, 3, 1_000, || 3));
        // Within RECOUNT_MS the count is reused.
        assert!(!g.admit("c", 3, 3, 1_000 + RECOUNT_MS - 1, || 0));
        // Later the series went idle: recounted, admitted, and each
        // admission counts until the next recount.
        assert!(g.admit("c", 3, 3, 1_000 + RECOUNT_MS, || 1));
        assert!(g.admit("c", 4, 3, 1_000 + RECOUNT_MS, || 0));
        assert!(!g.admit("c", 5, 3, 1_000 + RECOUNT_MS, || 0));
        // Another cluster has its own count.
        assert!(g.admit("d", 3, 3, 1_000, || 0));
    }

    #[test]
    fn what_is_held_stays_bounded() {
        assert!(admits(0, 5, 3));
        assert!(!admits(0, 6, 3), "held bounded at twice the cap");
        assert!(!admits(3, 3, 3));
        let mut g = CapGate::default();
        assert!(!g.admit("c", 6, 3, 0, || 0));
    }
}
