//! The server side of the watch's push mode: an `events` agent running in
//! the monitored cluster sends what [`super::run`] would have written to
//! the store, over the ingest listener, through the one push mount
//! ([`crate::push::mount`]: token auth, queue slot, body limit, gzip).
//!
//! - `POST /ingest/v1/watch` ([`WatchIngestSource`]): a JSON [`WatchBatch`]
//!   `{"objects":[…],"events":[…],"checkpoints":[…]}`, applied in that
//!   order (objects, then events, then checkpoints, so a checkpoint is
//!   stored after everything it covers). 204 once durable; idempotent like
//!   the store (objects on (cluster, uid, resourceVersion), events on
//!   (cluster, uid, count); a re-sent checkpoint is re-set).
//! - `POST /ingest/v1/watch/state` ([`WatchStateSource`]): the reads the
//!   agent's watch needs, one [`StateRequest`] per call, answered as JSON
//!   ([`StateResponse`]); live objects are paged by uid and bytes.
//!
//! **The cluster is the token's** (invariant 5): every record's `cluster`
//! is overwritten with it, never refused, so an agent whose
//! `KUBE_INSIGHT_CLUSTER` differs loses nothing (the state answer names the
//! token's cluster and the agent warns). A token can only read and write its
//! own cluster.
//!
//! The secret-hash key given to an agent is derived from the installation's
//! key and the token's cluster (HMAC), so one cluster's token never learns
//! the key of another's hashes. A cluster moved from pull to push mode hashes
//! with a new key: the first change of each hashed field after the move
//! shows as a change of its hash.

use crate::push::{PushError, PushOutcome, PushRequest, PushSource};
use async_trait::async_trait;
use bytes::Bytes;
use kube_insight_core::event::{hmac_tag, KubeEvent, SecretKey};
use kube_insight_store::events::{EventStore, LiveObject, ObjectWrite, WatchCheckpoint};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// The write route.
pub const WATCH_PATH: &str = "/ingest/v1/watch";
/// The read route.
pub const STATE_PATH: &str = "/ingest/v1/watch/state";
/// Bytes of live objects per state answer at most (the last row may pass it).
pub const LIVE_PAGE_BYTES: usize = 8 << 20;
/// Live objects per state answer at most.
pub const LIVE_PAGE_ROWS: usize = 2_000;

/// A checkpoint of one kind; the cluster is the token's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointWrite {
    pub group: String,
    pub kind: String,
    pub checkpoint: WatchCheckpoint,
}

/// One push of the watch: applied objects, then events, then checkpoints.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WatchBatch {
    #[serde(default)]
    pub objects: Vec<ObjectWrite>,
    #[serde(default)]
    pub events: Vec<KubeEvent>,
    #[serde(default)]
    pub checkpoints: Vec<CheckpointWrite>,
}

impl WatchBatch {
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty() && self.events.is_empty() && self.checkpoints.is_empty()
    }

    pub fn records(&self) -> usize {
        self.objects.len() + self.events.len() + self.checkpoints.len()
    }

    /// Appends `other` after this batch's records (kept in order per list).
    pub fn extend(&mut self, other: WatchBatch) {
        self.objects.extend(other.objects);
        self.events.extend(other.events);
        self.checkpoints.extend(other.checkpoints);
    }
}

/// One read of the watch state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum StateRequest {
    /// The secret-hash key of the token's cluster.
    SecretKey,
    Checkpoint {
        group: String,
        kind: String,
    },
    /// Live objects of a kind with uid > `after`, in uid order.
    LiveObjects {
        group: String,
        kind: String,
        #[serde(default)]
        after: Option<String>,
    },
}

/// The answer of a state read.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StateResponse {
    /// The token's cluster (what every write is recorded as).
    pub cluster: String,
    /// `SecretKey`: 64 hex digits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<WatchCheckpoint>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub live: Vec<LiveObject>,
    /// `LiveObjects`: ask again with `after` = this for the next page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_after: Option<String>,
}

/// The key an agent of `cluster` hashes secrets with.
pub fn cluster_key(installation: &SecretKey, cluster: &str) -> SecretKey {
    let tag = hmac_tag(
        installation,
        format!("kube-insight push key of cluster {cluster}").as_bytes(),
    );
    let hex = tag.rsplit(':').next().unwrap_or_default();
    let bytes = hex_decode(hex).unwrap_or_default();
    // hmac_tag always ends in 32 bytes of hex; the fallback keeps this total.
    SecretKey::from_bytes(&bytes).unwrap_or_else(|| installation.clone())
}

pub fn hex_encode(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect()
}

/// `POST /ingest/v1/watch`.
pub struct WatchIngestSource {
    store: Arc<dyn EventStore>,
}

impl WatchIngestSource {
    pub fn new(store: Arc<dyn EventStore>) -> Self {
        WatchIngestSource { store }
    }
}

fn decode<T: serde::de::DeserializeOwned>(body: &[u8], what: &str) -> Result<T, PushError> {
    serde_json::from_slice(body).map_err(|e| {
        PushError::BadRequest(format!(
            "{what}: invalid JSON at line {} column {}: {e}",
            e.line(),
            e.column()
        ))
    })
}

#[async_trait]
impl PushSource for WatchIngestSource {
    fn name(&self) -> &'static str {
        "kube_watch_push"
    }
    fn target(&self) -> &'static str {
        "events"
    }
    fn path(&self) -> &'static str {
        WATCH_PATH
    }

    async fn ingest(&self, req: PushRequest) -> Result<PushOutcome, PushError> {
        let mut batch: WatchBatch = decode(&req.body, "watch batch")?;
        let n = batch.records() as u64;
        for o in &mut batch.objects {
            o.cluster.clone_from(&req.cluster);
        }
        for e in &mut batch.events {
            e.cluster.clone_from(&req.cluster);
        }
        if !batch.objects.is_empty() {
            let out = self.store.write_objects(batch.objects).await?;
            tracing::debug!(cluster = %req.cluster, versions = out.versions_written, duplicates = out.duplicates,
                unchanged = out.unchanged, stale = out.stale, "pushed object versions stored");
        }
        if !batch.events.is_empty() {
            let out = self.store.write_events(batch.events).await?;
            tracing::debug!(cluster = %req.cluster, occurrences = out.occurrences_written, duplicates = out.duplicates,
                "pushed events stored");
        }
        for c in batch.checkpoints {
            self.store
                .set_checkpoint(&req.cluster, &c.group, &c.kind, c.checkpoint)
                .await?;
        }
        Ok(PushOutcome {
            accepted: n,
            ..Default::default()
        })
    }
}

/// `POST /ingest/v1/watch/state`.
pub struct WatchStateSource {
    store: Arc<dyn EventStore>,
}

impl WatchStateSource {
    pub fn new(store: Arc<dyn EventStore>) -> Self {
        WatchStateSource { store }
    }
}

#[async_trait]
impl PushSource for WatchStateSource {
    fn name(&self) -> &'static str {
        "kube_watch_state"
    }
    fn target(&self) -> &'static str {
        "events"
    }
    fn path(&self) -> &'static str {
        STATE_PATH
    }

    async fn ingest(&self, req: PushRequest) -> Result<PushOutcome, PushError> {
        let ask: StateRequest = decode(&req.body, "watch state request")?;
        let mut out = StateResponse {
            cluster: req.cluster.clone(),
            ..Default::default()
        };
        match ask {
            StateRequest::SecretKey => {
                let key = self.store.secret_key().await?;
                out.secret_key = Some(hex_encode(cluster_key(&key, &req.cluster).as_bytes()));
            }
            StateRequest::Checkpoint { group, kind } => {
                out.checkpoint = self.store.checkpoint(&req.cluster, &group, &kind).await?;
            }
            StateRequest::LiveObjects { group, kind, after } => {
                let mut live = self.store.live_objects(&req.cluster, &group, &kind).await?;
                if let Some(a) = &after {
                    live.retain(|l| l.uid.as_str() > a.as_str());
                }
                live.sort_by(|a, b| a.uid.cmp(&b.uid));
                let total = live.len();
                let mut bytes = 0usize;
                for l in live {
                    if out.live.len() >= LIVE_PAGE_ROWS || bytes >= LIVE_PAGE_BYTES {
                        break;
                    }
                    bytes += l.object.to_string().len() + 256;
                    out.live.push(l);
                }
                if out.live.len() < total {
                    out.next_after = out.live.last().map(|l| l.uid.clone());
                }
            }
        }
        let json = serde_json::to_vec(&out)
            .map_err(|e| PushError::BadRequest(format!("encoding the watch state: {e}")))?;
        Ok(PushOutcome {
            accepted: 0,
            json: Some(Bytes::from(json)),
            ..Default::default()
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn cluster_keys_differ_by_cluster_and_are_stable() {
        let k = SecretKey::from_bytes(&[7u8; 32]).unwrap();
        let a = cluster_key(&k, "a");
        assert_eq!(a, cluster_key(&k, "a"));
        assert_ne!(a, cluster_key(&k, "b"));
        assert_ne!(a, k);
    }

    #[test]
    fn hex_round_trips() {
        let b = [0u8, 1, 0xab, 0xff];
        assert_eq!(hex_decode(&hex_encode(&b)).unwrap(), b);
        assert!(hex_decode("abc").is_none());
        assert!(hex_decode("zz").is_none());
    }

    #[test]
    fn state_requests_are_tagged() {
        let r: StateRequest =
            serde_json::from_str(r#"{"op":"live_objects","group":"apps","kind":"Deployment"}"#)
                .unwrap();
        assert_eq!(
            r,
            StateRequest::LiveObjects {
                group: "apps".into(),
                kind: "Deployment".into(),
                after: None
            }
        );
    }
}
