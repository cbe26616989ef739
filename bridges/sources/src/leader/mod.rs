//! Leader election through a `coordination.k8s.io/v1` Lease: the decision
//! logic, pure and driven by a caller-supplied monotonic clock (milliseconds).
//!
//! Semantics follow client-go's `leaderelection`:
//! - expiry is judged on the *local* clock from the moment this candidate
//!   last saw the record change (holder, renew time or resourceVersion), so
//!   clock skew between replicas does not matter;
//! - a candidate acquires when the lease is absent, has no holder, or has
//!   not changed for `lease_duration`; acquiring a lease another identity
//!   held increments `leaseTransitions` (the generation);
//! - the holder renews every `retry_period`; writes use the read
//!   resourceVersion, and a 409 Conflict means "re-read and decide again".
//!
//! Fencing: the leader stops (its [`Fence`] reports "not leader") when it
//! has not renewed successfully for `renew_deadline`, measured from the
//! moment it *sent* its last successful renew. `renew_deadline <
//! lease_duration`, so a partitioned leader stops before any other
//! candidate can take the lease over.
//!
//! The IO around it: [`lease`] runs the election against the API server
//! (`Api<Lease>`) and publishes [`Leadership`] and the [`Fence`];
//! [`supervise`] runs the collector targets only while leading.

pub mod lease;
pub mod supervise;

pub use lease::{Leadership, LeaseElection};
pub use supervise::{run_while_leading, SuperviseError};

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Settings of one election.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseSettings {
    pub name: String,
    pub namespace: String,
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_deadline: Duration,
    pub retry_period: Duration,
}

/// A setting that cannot work.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LeaseSettingsError {
    #[error("lease name is empty")]
    EmptyName,
    #[error("lease identity is empty")]
    EmptyIdentity,
    #[error(
        "lease renew deadline ({renew:?}) must be shorter than the lease duration ({duration:?})"
    )]
    RenewNotBelowDuration { renew: Duration, duration: Duration },
    #[error("lease retry period ({retry:?}) must be shorter than the renew deadline ({renew:?})")]
    RetryNotBelowRenew { retry: Duration, renew: Duration },
    #[error("lease retry period must be positive")]
    ZeroRetry,
}

impl LeaseSettings {
    /// Checks the relations client-go requires: retry < renew deadline < duration.
    pub fn validate(&self) -> Result<(), LeaseSettingsError> {
        if self.name.is_empty() {
            return Err(LeaseSettingsError::EmptyName);
        }
        if self.identity.is_empty() {
            return Err(LeaseSettingsError::EmptyIdentity);
        }
        if self.retry_period.is_zero() {
            return Err(LeaseSettingsError::ZeroRetry);
        }
        if self.renew_deadline >= self.lease_duration {
            return Err(LeaseSettingsError::RenewNotBelowDuration {
                renew: self.renew_deadline,
                duration: self.lease_duration,
            });
        }
        if self.retry_period >= self.renew_deadline {
            return Err(LeaseSettingsError::RetryNotBelowRenew {
                retry: self.retry_period,
                renew: self.renew_deadline,
            });
        }
        Ok(())
    }
}

/// Identity of this process: the pod name plus a random suffix, so a
/// restarted pod with the same name is a new holder.
pub fn identity(hostname: &str) -> String {
    let suffix: u32 = rand::random();
    let host = if hostname.is_empty() {
        "kube-insight"
    } else {
        hostname
    };
    format!("{host}_{suffix:08x}")
}

/// The part of a Lease the decision reads.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LeaseRecord {
    pub holder: Option<String>,
    /// Opaque renew time as stored (only compared for change).
    pub renew_time: Option<String>,
    pub transitions: i32,
    pub resource_version: Option<String>,
}

/// What the candidate should do after a read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// No lease yet: create one held by us with `transitions`.
    Create { transitions: i32 },
    /// Take over (free or expired) or renew (ours): replace with the read
    /// resourceVersion, holder us, `transitions`.
    Update { transitions: i32, takeover: bool },
    /// Someone else holds a live lease.
    Wait,
}

/// Result of a write attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOutcome {
    Ok,
    /// 409: the resourceVersion moved; re-read.
    Conflict,
    /// Transport error or timeout.
    Failed,
}

/// The candidate's state machine. Times are monotonic milliseconds.
#[derive(Debug)]
pub struct Elector {
    identity: String,
    lease_duration_ms: u64,
    renew_deadline_ms: u64,
    /// Last record seen and the local time it was first seen.
    observed: Option<(LeaseRecord, u64)>,
    /// When the last successful renew/acquire was sent, while leading.
    leading_since_sent: Option<u64>,
    generation: i32,
}

impl Elector {
    pub fn new(settings: &LeaseSettings) -> Self {
        Self {
            identity: settings.identity.clone(),
            lease_duration_ms: millis(settings.lease_duration),
            renew_deadline_ms: millis(settings.renew_deadline),
            observed: None,
            leading_since_sent: None,
            generation: 0,
        }
    }

    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// The generation (leaseTransitions) of our leadership, if leading.
    pub fn generation(&self) -> i32 {
        self.generation
    }

    /// Decides after a read at `now` (`None`: the lease does not exist).
    pub fn on_read(&mut self, record: Option<LeaseRecord>, now: u64) -> Action {
        let Some(record) = record else {
            self.observed = None;
            return Action::Create { transitions: 0 };
        };
        let changed = self
            .observed
            .as_ref()
            .is_none_or(|(seen, _)| *seen != record);
        if changed {
            self.observed = Some((record.clone(), now));
        }
        let seen_at = self.observed.as_ref().map_or(now, |(_, at)| *at);
        let holder = record.holder.as_deref().filter(|h| !h.is_empty());
        match holder {
            Some(h) if h == self.identity => Action::Update {
                transitions: record.transitions,
                takeover: false,
            },
            None => Action::Update {
                transitions: record.transitions.saturating_add(1),
                takeover: true,
            },
            Some(_) if now.saturating_sub(seen_at) >= self.lease_duration_ms => Action::Update {
                transitions: record.transitions.saturating_add(1),
                takeover: true,
            },
            Some(_) => {
                self.leading_since_sent = None;
                Action::Wait
            }
        }
    }

    /// Records the outcome of the write decided by `action`, `sent_at` being
    /// the time the request was sent. Returns whether we lead afterwards.
    pub fn on_write(&mut self, action: &Action, outcome: WriteOutcome, sent_at: u64) -> bool {
        match outcome {
            WriteOutcome::Ok => {
                let transitions = match action {
                    Action::Create { transitions } | Action::Update { transitions, .. } => {
                        *transitions
                    }
                    Action::Wait => return self.leading_since_sent.is_some(),
                };
                self.generation = transitions;
                self.leading_since_sent = Some(sent_at);
                // Our own write changes the record: forget the observation so
                // the next read starts a fresh expiry window.
                self.observed = None;
                true
            }
            WriteOutcome::Conflict | WriteOutcome::Failed => self.is_leader(sent_at),
        }
    }

    /// Leading at `now`: the last successful renew was sent less than
    /// `renew_deadline` ago.
    pub fn is_leader(&self, now: u64) -> bool {
        self.leading_since_sent
            .is_some_and(|sent| now.saturating_sub(sent) < self.renew_deadline_ms)
    }

    /// The local time at which leadership ends unless renewed.
    pub fn fence_deadline(&self) -> Option<u64> {
        self.leading_since_sent
            .map(|s| s.saturating_add(self.renew_deadline_ms))
    }

    /// Gives leadership up (after a release or a lost deadline).
    pub fn step_down(&mut self) {
        self.leading_since_sent = None;
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The fence the collector targets check before each write: holder and
/// generation of the current leadership, and a deadline on a monotonic
/// clock after which the token is no longer valid even if nobody revoked it.
#[derive(Debug, Clone)]
pub struct Fence {
    inner: Arc<FenceInner>,
}

#[derive(Debug)]
struct FenceInner {
    holder: String,
    leading: AtomicBool,
    generation: AtomicU64,
    /// Deadline in ms since `epoch`.
    deadline_ms: AtomicU64,
    epoch: std::time::Instant,
}

impl Fence {
    pub fn new(holder: impl Into<String>) -> Self {
        Self {
            inner: Arc::new(FenceInner {
                holder: holder.into(),
                leading: AtomicBool::new(false),
                generation: AtomicU64::new(0),
                deadline_ms: AtomicU64::new(0),
                epoch: std::time::Instant::now(),
            }),
        }
    }

    /// A fence that always allows writes (no lease configured).
    pub fn always(holder: impl Into<String>) -> Self {
        let fence = Self::new(holder);
        fence.inner.leading.store(true, Ordering::SeqCst);
        fence.inner.deadline_ms.store(u64::MAX, Ordering::SeqCst);
        fence
    }

    pub fn holder(&self) -> &str {
        &self.inner.holder
    }

    /// Milliseconds since the fence's epoch (its monotonic clock).
    pub fn now_ms(&self) -> u64 {
        millis(self.inner.epoch.elapsed())
    }

    /// The instant of `ms` on the fence's clock.
    pub fn instant_at(&self, ms: u64) -> std::time::Instant {
        self.inner
            .epoch
            .checked_add(Duration::from_millis(ms))
            .unwrap_or_else(|| self.inner.epoch + Duration::from_secs(86_400 * 365))
    }

    /// Grants writes until `deadline_ms` (the fence's clock) for `generation`.
    pub fn grant(&self, generation: i32, deadline_ms: u64) {
        self.inner
            .generation
            .store(u64::try_from(generation).unwrap_or(0), Ordering::SeqCst);
        self.inner.deadline_ms.store(deadline_ms, Ordering::SeqCst);
        self.inner.leading.store(true, Ordering::SeqCst);
    }

    pub fn revoke(&self) {
        self.inner.leading.store(false, Ordering::SeqCst);
    }

    /// The generation if writes are allowed now, else `None`.
    pub fn check(&self) -> Option<u64> {
        let ok = self.inner.leading.load(Ordering::SeqCst)
            && self.now_ms() < self.inner.deadline_ms.load(Ordering::SeqCst);
        ok.then(|| self.inner.generation.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(id: &str) -> LeaseSettings {
        LeaseSettings {
            name: "kube-insight-collector".into(),
            namespace: "kube-insight".into(),
            identity: id.into(),
            lease_duration: Duration::from_millis(2000),
            renew_deadline: Duration::from_millis(1400),
            retry_period: Duration::from_millis(300),
        }
    }

    fn rec(holder: &str, rv: &str, transitions: i32) -> LeaseRecord {
        LeaseRecord {
            holder: Some(holder.into()),
            renew_time: Some(rv.into()),
            transitions,
            resource_version: Some(rv.into()),
        }
    }

    #[test]
    fn validate_orders_the_times() {
        assert!(settings("a").validate().is_ok());
        let mut s = settings("a");
        s.renew_deadline = s.lease_duration;
        assert!(matches!(
            s.validate(),
            Err(LeaseSettingsError::RenewNotBelowDuration { .. })
        ));
        let mut s = settings("a");
        s.retry_period = s.renew_deadline;
        assert!(matches!(
            s.validate(),
            Err(LeaseSettingsError::RetryNotBelowRenew { .. })
        ));
    }

    #[test]
    fn absent_lease_is_created_at_generation_zero() {
        let mut e = Elector::new(&settings("a"));
        let action = e.on_read(None, 0);
        assert_eq!(action, Action::Create { transitions: 0 });
        assert!(e.on_write(&action, WriteOutcome::Ok, 0));
        assert!(e.is_leader(1399));
        assert!(!e.is_leader(1400), "fence ends at the renew deadline");
    }

    #[test]
    fn live_lease_of_another_is_observed_until_expiry() {
        let mut e = Elector::new(&settings("b"));
        assert_eq!(e.on_read(Some(rec("a", "1", 0)), 0), Action::Wait);
        assert_eq!(e.on_read(Some(rec("a", "1", 0)), 1999), Action::Wait);
        // the holder renewed: a fresh window starts
        assert_eq!(e.on_read(Some(rec("a", "2", 0)), 1500), Action::Wait);
        assert_eq!(e.on_read(Some(rec("a", "2", 0)), 3499), Action::Wait);
        let action = e.on_read(Some(rec("a", "2", 0)), 3500);
        assert_eq!(
            action,
            Action::Update {
                transitions: 1,
                takeover: true
            }
        );
        assert!(e.on_write(&action, WriteOutcome::Ok, 3500));
        assert_eq!(e.generation(), 1);
    }

    #[test]
    fn released_lease_is_taken_at_once() {
        let mut e = Elector::new(&settings("b"));
        let mut r = rec("a", "5", 3);
        r.holder = None;
        assert_eq!(
            e.on_read(Some(r), 0),
            Action::Update {
                transitions: 4,
                takeover: true
            }
        );
    }

    #[test]
    fn conflict_does_not_grant_leadership() {
        let mut e = Elector::new(&settings("b"));
        let action = e.on_read(None, 0);
        assert!(!e.on_write(&action, WriteOutcome::Conflict, 0));
        assert!(!e.is_leader(1));
    }

    #[test]
    fn partitioned_leader_stops_before_anyone_can_take_over() {
        let mut a = Elector::new(&settings("a"));
        let mut b = Elector::new(&settings("b"));
        let act = a.on_read(None, 0);
        assert!(a.on_write(&act, WriteOutcome::Ok, 0));
        // b sees a's lease at t=10 (after the write landed)
        assert_eq!(b.on_read(Some(rec("a", "1", 0)), 10), Action::Wait);
        // a is partitioned from t=0 on: every renew fails
        for t in (300..3000).step_by(300) {
            let act = Action::Update {
                transitions: 0,
                takeover: false,
            };
            a.on_write(&act, WriteOutcome::Failed, t);
        }
        let a_stops = a.fence_deadline().unwrap_or(u64::MAX);
        let mut b_takes = None;
        for t in (10..5000).step_by(100) {
            if let Action::Update { .. } = b.on_read(Some(rec("a", "1", 0)), t) {
                b_takes = Some(t);
                break;
            }
        }
        let b_takes = b_takes.unwrap_or(u64::MAX);
        assert!(
            a_stops < b_takes,
            "a stops at {a_stops}, b takes at {b_takes}"
        );
        assert!(!a.is_leader(a_stops));
    }

    #[test]
    fn fence_expires_on_its_own() {
        let f = Fence::new("a");
        assert_eq!(f.check(), None);
        f.grant(3, f.now_ms() + 60_000);
        assert_eq!(f.check(), Some(3));
        f.revoke();
        assert_eq!(f.check(), None);
        f.grant(4, 0);
        assert_eq!(f.check(), None, "a past deadline does not allow writes");
        assert_eq!(Fence::always("x").check(), Some(0));
    }
}
