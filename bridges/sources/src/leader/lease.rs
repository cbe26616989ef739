//! The election's IO: a loop over a `coordination.k8s.io/v1` Lease that
//! feeds [`Elector`] and publishes the outcome.
//!
//! Every `retry_period`: GET the Lease → [`Elector::on_read`] → create it
//! (absent) or replace it with the read resourceVersion (renew, take over);
//! a 409 Conflict is re-read at once and decided again. The result goes to
//! the [`Fence`] (granted until the renew deadline of the last successful
//! write, revoked first when lost) and to a watch channel of [`Leadership`]
//! that the collector targets follow ([`super::run_while_leading`]). The
//! renew deadline is also enforced while a request hangs: leadership is
//! dropped the moment it passes, whatever the API server does.
//!
//! On shutdown the holder releases the Lease (no holder, duration 1 s), so
//! a standby takes over at its next retry instead of waiting for expiry.

use super::{Action, Elector, Fence, LeaseRecord, LeaseSettings, WriteOutcome};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use kube::Client;
use std::future::Future;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Whether this process leads, as the collector targets see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leadership {
    Following,
    /// Leading; `generation` is the Lease's `leaseTransitions` at acquire.
    Leading {
        generation: i32,
    },
}

impl Leadership {
    pub fn is_leading(self) -> bool {
        matches!(self, Leadership::Leading { .. })
    }

    /// Without a Lease (one replica): always leading, generation 0. The
    /// sender is dropped: the value never changes.
    pub fn always() -> watch::Receiver<Leadership> {
        watch::channel(Leadership::Leading { generation: 0 }).1
    }
}

/// The election loop of one candidate.
pub struct LeaseElection {
    api: Api<Lease>,
    settings: LeaseSettings,
    elector: Elector,
    fence: Fence,
    tx: watch::Sender<Leadership>,
    /// Bound of one request to the API server.
    request_timeout: Duration,
    /// The Lease as our last successful write left it (for the release).
    written: Option<Lease>,
    /// A read or write is failing (logged once per change).
    failing: bool,
}

/// How a request ended.
enum Call<T> {
    Ok(T),
    Err(kube::Error),
    Timeout,
}

impl LeaseElection {
    /// An election over `settings.namespace/settings.name` with `client`
    /// (the cluster that holds the Lease). `settings` must be valid
    /// ([`LeaseSettings::validate`]).
    pub fn new(client: Client, settings: LeaseSettings) -> Self {
        let api = Api::namespaced(client, &settings.namespace);
        let (tx, _) = watch::channel(Leadership::Following);
        LeaseElection {
            api,
            elector: Elector::new(&settings),
            fence: Fence::new(settings.identity.clone()),
            request_timeout: settings.renew_deadline,
            settings,
            tx,
            written: None,
            failing: false,
        }
    }

    /// The fence writers check before each write (revoked before the
    /// leadership channel says `Following`).
    pub fn fence(&self) -> Fence {
        self.fence.clone()
    }

    /// The leadership channel.
    pub fn subscribe(&self) -> watch::Receiver<Leadership> {
        self.tx.subscribe()
    }

    /// Runs the election until `shutdown`, then releases the Lease if held.
    pub async fn run(mut self, shutdown: CancellationToken) {
        tracing::info!(
            lease = %self.settings.name,
            namespace = %self.settings.namespace,
            identity = %self.settings.identity,
            duration_ms = millis(self.settings.lease_duration),
            renew_deadline_ms = millis(self.settings.renew_deadline),
            retry_period_ms = millis(self.settings.retry_period),
            "leader election: competing for the lease"
        );
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                _ = self.round() => {}
            }
            self.publish();
            let deadline = self.deadline();
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => break,
                _ = sleep_until(deadline) => {}
                _ = tokio::time::sleep(self.settings.retry_period) => {}
            }
            self.publish();
        }
        self.release().await;
    }

    /// One read and, if the decision says so, one write (and one re-read
    /// and write after a 409).
    async fn round(&mut self) {
        for _ in 0..2 {
            let api = self.api.clone();
            let name = self.settings.name.clone();
            let lease = match self.call(async move { api.get_opt(&name).await }).await {
                Call::Ok(l) => l,
                Call::Err(e) => return self.failed("reading", &e.to_string()),
                Call::Timeout => return self.failed("reading", "timed out"),
            };
            let record = lease.as_ref().map(record_of);
            let action = self.elector.on_read(record, self.fence.now_ms());
            let body = match &action {
                Action::Wait => {
                    self.recovered();
                    return;
                }
                Action::Create { transitions } => self.lease_body(None, *transitions, true),
                Action::Update {
                    transitions,
                    takeover,
                } => self.lease_body(lease, *transitions, *takeover),
            };
            let sent = self.fence.now_ms();
            let api = self.api.clone();
            let name = self.settings.name.clone();
            let create = matches!(action, Action::Create { .. });
            let written = self
                .call(async move {
                    let pp = PostParams::default();
                    if create {
                        api.create(&pp, &body).await
                    } else {
                        api.replace(&name, &pp, &body).await
                    }
                })
                .await;
            let outcome = match written {
                Call::Ok(lease) => {
                    self.written = Some(lease);
                    WriteOutcome::Ok
                }
                Call::Err(kube::Error::Api(s)) if s.code == 409 => WriteOutcome::Conflict,
                Call::Err(e) => {
                    self.failed("writing", &e.to_string());
                    WriteOutcome::Failed
                }
                Call::Timeout => {
                    self.failed("writing", "timed out");
                    WriteOutcome::Failed
                }
            };
            self.elector.on_write(&action, outcome.clone(), sent);
            match outcome {
                WriteOutcome::Ok => {
                    self.recovered();
                    return;
                }
                // Someone wrote in between: read again and decide again.
                WriteOutcome::Conflict => {
                    tracing::debug!(lease = %self.settings.name, "leader election: conflict; re-reading");
                }
                WriteOutcome::Failed => return,
            }
        }
    }

    /// Awaits `fut` within the request timeout; if our renew deadline
    /// passes meanwhile, leadership is dropped at that moment.
    async fn call<T>(&mut self, fut: impl Future<Output = Result<T, kube::Error>>) -> Call<T> {
        let fut = tokio::time::timeout(self.request_timeout, fut);
        tokio::pin!(fut);
        loop {
            let deadline = self.deadline();
            tokio::select! {
                r = &mut fut => return match r {
                    Ok(Ok(v)) => Call::Ok(v),
                    Ok(Err(e)) => Call::Err(e),
                    Err(_) => Call::Timeout,
                },
                _ = sleep_until(deadline) => self.publish(),
            }
        }
    }

    /// The local instant at which our leadership ends unless renewed.
    fn deadline(&self) -> Option<tokio::time::Instant> {
        self.elector
            .fence_deadline()
            .map(|ms| tokio::time::Instant::from_std(self.fence.instant_at(ms)))
    }

    /// Brings the fence and the channel in line with the elector: the fence
    /// is granted before the channel says `Leading` and revoked before it
    /// says `Following`.
    fn publish(&mut self) {
        let now = self.fence.now_ms();
        let state = if self.elector.is_leader(now) {
            let generation = self.elector.generation();
            self.fence
                .grant(generation, self.elector.fence_deadline().unwrap_or(0));
            Leadership::Leading { generation }
        } else {
            self.elector.step_down();
            self.fence.revoke();
            Leadership::Following
        };
        let (name, identity) = (&self.settings.name, &self.settings.identity);
        self.tx.send_if_modified(|cur| {
            if *cur == state {
                return false;
            }
            match state {
                Leadership::Leading { generation } => tracing::info!(
                    lease = %name,
                    identity = %identity,
                    generation,
                    "leader election: acquired the lease; this process leads the collector targets"
                ),
                Leadership::Following => tracing::warn!(
                    lease = %name,
                    identity = %identity,
                    "leader election: lost the lease (not renewed within the renew deadline or taken over); the collector targets stop"
                ),
            }
            *cur = state;
            true
        });
    }

    /// The Lease to write: `read` (or a new one) held by us.
    fn lease_body(&self, read: Option<Lease>, transitions: i32, takeover: bool) -> Lease {
        let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
        let mut lease = read.unwrap_or_else(|| Lease {
            metadata: ObjectMeta {
                name: Some(self.settings.name.clone()),
                namespace: Some(self.settings.namespace.clone()),
                ..Default::default()
            },
            spec: None,
        });
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        if takeover || spec.acquire_time.is_none() {
            spec.acquire_time = Some(now.clone());
        }
        spec.holder_identity = Some(self.settings.identity.clone());
        spec.lease_duration_seconds = Some(seconds_ceil(self.settings.lease_duration));
        spec.renew_time = Some(now);
        spec.lease_transitions = Some(transitions);
        lease
    }

    /// Gives the Lease up if we hold it: no holder, duration 1 s, the same
    /// transitions (the next holder increments them).
    async fn release(&mut self) {
        let leading = self.elector.is_leader(self.fence.now_ms());
        self.elector.step_down();
        self.fence.revoke();
        self.tx.send_replace(Leadership::Following);
        let Some(mut lease) = self.written.take().filter(|_| leading) else {
            return;
        };
        if let Some(spec) = lease.spec.as_mut() {
            spec.holder_identity = None;
            spec.lease_duration_seconds = Some(1);
            spec.renew_time = Some(MicroTime(k8s_openapi::jiff::Timestamp::now()));
        }
        let api = self.api.clone();
        let name = self.settings.name.clone();
        let released = tokio::time::timeout(self.request_timeout, async move {
            api.replace(&name, &PostParams::default(), &lease).await
        })
        .await;
        match released {
            Ok(Ok(_)) => {
                tracing::info!(lease = %self.settings.name, identity = %self.settings.identity, "leader election: released the lease")
            }
            Ok(Err(e)) => {
                tracing::warn!(lease = %self.settings.name, error = %e, "leader election: releasing the lease failed; a standby takes over when it expires")
            }
            Err(_) => {
                tracing::warn!(lease = %self.settings.name, "leader election: releasing the lease timed out; a standby takes over when it expires")
            }
        }
    }

    fn failed(&mut self, what: &str, reason: &str) {
        if !self.failing {
            tracing::warn!(
                lease = %self.settings.name,
                namespace = %self.settings.namespace,
                error = %reason,
                "leader election: {what} the lease failed; retrying every {:?} (check the API server and the Role allowing get/update on leases)",
                self.settings.retry_period
            );
            self.failing = true;
        }
    }

    fn recovered(&mut self) {
        if self.failing {
            tracing::info!(lease = %self.settings.name, "leader election: the lease is reachable again");
            self.failing = false;
        }
    }
}

/// The part of a Lease the decision reads.
fn record_of(lease: &Lease) -> LeaseRecord {
    let spec = lease.spec.as_ref();
    LeaseRecord {
        holder: spec.and_then(|s| s.holder_identity.clone()),
        renew_time: spec
            .and_then(|s| s.renew_time.as_ref())
            .map(|t| t.0.to_string()),
        transitions: spec.and_then(|s| s.lease_transitions).unwrap_or(0),
        resource_version: lease.metadata.resource_version.clone(),
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn seconds_ceil(d: Duration) -> i32 {
    let s = d.as_millis().div_ceil(1000).max(1);
    i32::try_from(s).unwrap_or(i32::MAX)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
