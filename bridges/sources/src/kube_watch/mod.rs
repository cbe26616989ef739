//! `kube_watch`: the `events` target's watch of the monitored cluster's API
//! server, through the `kube` crate with dynamic objects (any kind, custom
//! resources included).
//!
//! Per kind, a list + watch loop:
//! 1. **List** (paged) and **reconcile** against the last stored state
//!    ([`EventStore::live_objects`]): an object changed since is stored as
//!    one version "changed between t1 and t2", one missing is stored as
//!    "deleted between t1 and t2" (t1 = the kind's last checkpoint, t2 = the
//!    list), one new is "created" only if its `creationTimestamp` is after t1
//!    minus [`CREATED_SLACK_MS`] (creation times are whole seconds, and the
//!    previous run's checkpoint may be ahead of the events it had received:
//!    an object it stored is matched by uid, never "created" again), else an
//!    "observed" baseline: a re-list, a restart or a leader takeover never
//!    produces spurious "created" records. Events are written (de-duplicated
//!    by uid + count).
//! 2. **Watch** from the list's resourceVersion with bookmarks. A closed
//!    stream (server timeout, disconnect) resumes from the last
//!    resourceVersion seen (object or bookmark); `410 Gone` (as an HTTP
//!    status or an `ERROR` watch event) goes back to 1.
//!
//! The checkpoint (resourceVersion, time) is stored every
//! [`WatchConfig::checkpoint_every`] while in sync, so after a restart the
//! gap is known. Writes are idempotent on (cluster, uid, resourceVersion),
//! so two collector replicas are safe. Secrets are never watched.
//!
//! Push mode: the same loop runs in the monitored cluster over
//! [`remote::RemoteEventStore`] (an on-disk [`spool`] and an ordered sender),
//! and the insight takes its writes on the ingest listener ([`ingest`]).

pub mod ingest;
pub mod kinds;
pub mod remote;
pub mod spool;

pub use kinds::{parse_kinds, KindSpec, DEFAULT_KINDS};

use futures::StreamExt;
use kube::api::{Api, DynamicObject, ListParams, WatchEvent, WatchParams};
use kube::Client;
use kube_insight_core::event::{
    gitops_of, managers_of, parse_event, sanitize, ChangeKind, EventOrigin, ObjectMetaLite,
    SecretKey,
};
use kube_insight_core::time::now_ms;
use kube_insight_store::events::{EventStore, ObjectWrite, WatchCheckpoint};
use kube_insight_telemetry::Telemetry;
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio_util::sync::CancellationToken;

/// How far before the checkpoint a listed object not stored yet still
/// counts as created in the gap: the second a `creationTimestamp` is
/// truncated to, plus the watch latency of the previous run.
pub const CREATED_SLACK_MS: i64 = 2_000;

const COMPONENT: &str = "kube_watch";
const TARGET: &str = "events";

#[derive(Debug, Error)]
pub enum WatchError {
    #[error("kubeconfig {path}: {reason}")]
    Kubeconfig { path: String, reason: String },
    #[error("in-cluster config (KUBE_INSIGHT_KUBECONFIG unset): {0}")]
    InCluster(String),
    #[error("kube client: {0}")]
    Client(String),
    #[error("invalid watch kind {input:?}: {reason}")]
    Kind { input: String, reason: String },
}

/// Settings of the watch.
#[derive(Debug, Clone)]
pub struct WatchConfig {
    /// The cluster recorded on every row.
    pub cluster: String,
    pub kinds: Vec<KindSpec>,
    /// Items per list page.
    pub page_size: u32,
    /// Server-side watch timeout (the stream is resumed after it).
    pub watch_timeout_secs: u32,
    /// How often the in-sync checkpoint is stored.
    pub checkpoint_every: Duration,
    /// Watch events per store write at most.
    pub batch_max: usize,
    /// Backoff after an error: doubles from `backoff_min` to `backoff_max`.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

impl WatchConfig {
    pub fn new(cluster: impl Into<String>, kinds: Vec<KindSpec>) -> Self {
        WatchConfig {
            cluster: cluster.into(),
            kinds,
            page_size: 500,
            watch_timeout_secs: 290,
            checkpoint_every: Duration::from_secs(10),
            batch_max: 512,
            backoff_min: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
        }
    }
}

/// A client for `KUBE_INSIGHT_KUBECONFIG`, or the in-cluster config.
pub async fn client(kubeconfig: Option<&Path>) -> Result<Client, WatchError> {
    // Two rustls crypto providers are linked (ring, ours, and aws-lc-rs,
    // the Cassandra driver's): kube picks the process default, so name it.
    // Already installed (by the binary or an earlier call) is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = match kubeconfig {
        Some(p) => {
            let bad = |reason: String| WatchError::Kubeconfig {
                path: p.display().to_string(),
                reason,
            };
            let kc = kube::config::Kubeconfig::read_from(p).map_err(|e| bad(e.to_string()))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(|e| bad(e.to_string()))?
        }
        None => kube::Config::incluster().map_err(|e| WatchError::InCluster(e.to_string()))?,
    };
    Client::try_from(config).map_err(|e| WatchError::Client(e.to_string()))
}

/// Runs one list + watch loop per kind until `shutdown`.
pub async fn run(
    client: Client,
    store: Arc<dyn EventStore>,
    config: WatchConfig,
    telemetry: Arc<Telemetry>,
    shutdown: CancellationToken,
) {
    // The key of the secret hashes, from the store (made there once).
    let key = loop {
        match store.secret_key().await {
            Ok(k) => break Arc::new(k),
            Err(e) => {
                tracing::warn!(error = %e, "kube watch: reading the secret-hash key from the store failed; retrying in 5 s");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
                }
            }
        }
    };
    let mut tasks = tokio::task::JoinSet::new();
    for kind in config.kinds.clone() {
        let w = KindWatcher {
            api: Api::all_with(client.clone(), &kind.api_resource()),
            kind,
            key: key.clone(),
            store: store.clone(),
            config: config.clone(),
            telemetry: telemetry.clone(),
        };
        let stop = shutdown.clone();
        tasks.spawn(async move { w.run(stop).await });
    }
    while tasks.join_next().await.is_some() {}
}

struct KindWatcher {
    api: Api<DynamicObject>,
    kind: KindSpec,
    /// The installation's key of the secret hashes.
    key: Arc<SecretKey>,
    store: Arc<dyn EventStore>,
    config: WatchConfig,
    telemetry: Arc<Telemetry>,
}

/// Why a watch stopped.
enum WatchEnd {
    /// The stream closed (timeout, disconnect): resume from the last RV.
    Closed,
    /// 410 Gone: re-list.
    Gone,
    /// Any other error: back off, then resume.
    Failed(String),
    Shutdown,
}

fn is_gone(e: &kube::Error) -> bool {
    match e {
        kube::Error::Api(s) => s.code == 410,
        _ => false,
    }
}

impl KindWatcher {
    fn ident(&self) -> String {
        self.kind.to_string()
    }

    fn count(&self, reason: Option<&'static str>, n: u64) {
        if n == 0 {
            return;
        }
        let cluster = &self.config.cluster;
        match reason {
            None => self.telemetry.record_in(TARGET, COMPONENT, cluster, n),
            Some(r) => self
                .telemetry
                .record_rejected(TARGET, COMPONENT, cluster, r, n),
        };
    }

    async fn run(self, shutdown: CancellationToken) {
        let mut backoff = self.config.backoff_min;
        'relist: loop {
            if shutdown.is_cancelled() {
                return;
            }
            let mut rv = match self.list_and_reconcile().await {
                Ok(rv) => {
                    backoff = self.config.backoff_min;
                    rv
                }
                Err(e) => {
                    tracing::warn!(kind = %self.ident(), error = %e, retry_in_ms = backoff.as_millis() as u64, "kube watch: list failed; retrying");
                    if sleep_or_stop(backoff, &shutdown).await {
                        return;
                    }
                    backoff = (backoff * 2).min(self.config.backoff_max);
                    continue 'relist;
                }
            };
            loop {
                match self.watch_from(&mut rv, &shutdown).await {
                    WatchEnd::Shutdown => return,
                    WatchEnd::Gone => {
                        tracing::info!(kind = %self.ident(), resource_version = %rv, "kube watch: resourceVersion expired (410 Gone); re-listing and reconciling");
                        continue 'relist;
                    }
                    WatchEnd::Closed => {
                        backoff = self.config.backoff_min;
                        tracing::debug!(kind = %self.ident(), resource_version = %rv, "kube watch: stream closed; resuming");
                    }
                    WatchEnd::Failed(e) => {
                        tracing::warn!(kind = %self.ident(), resource_version = %rv, error = %e, retry_in_ms = backoff.as_millis() as u64, "kube watch: stream failed; resuming");
                        if sleep_or_stop(backoff, &shutdown).await {
                            return;
                        }
                        backoff = (backoff * 2).min(self.config.backoff_max);
                    }
                }
            }
        }
    }

    /// Lists every object (paged) and reconciles; returns the list's RV.
    async fn list_and_reconcile(&self) -> Result<String, String> {
        let t2 = now_ms();
        let mut items: Vec<Value> = Vec::new();
        let mut token: Option<String> = None;
        let rv = loop {
            let mut lp = ListParams::default().limit(self.config.page_size);
            if let Some(t) = &token {
                lp = lp.continue_token(t);
            }
            let page = self
                .api
                .list(&lp)
                .await
                .map_err(|e| format!("listing {}: {e}", self.ident()))?;
            let page_rv = page.metadata.resource_version.clone().unwrap_or_default();
            for obj in page.items {
                match serde_json::to_value(&obj) {
                    Ok(v) => items.push(v),
                    Err(e) => {
                        tracing::warn!(kind = %self.ident(), error = %e, "kube watch: an object does not encode; skipped")
                    }
                }
            }
            match page.metadata.continue_.filter(|c| !c.is_empty()) {
                Some(c) => token = Some(c),
                None => break page_rv,
            }
        };
        let checkpoint = self
            .store
            .checkpoint(&self.config.cluster, &self.kind.group, &self.kind.kind)
            .await
            .map_err(|e| format!("reading the checkpoint of {}: {e}", self.ident()))?;
        if self.kind.is_event() {
            self.write_events(items).await?;
        } else {
            self.reconcile(items, checkpoint.as_ref().map(|c| c.at_ms), t2)
                .await?;
        }
        self.store
            .set_checkpoint(
                &self.config.cluster,
                &self.kind.group,
                &self.kind.kind,
                WatchCheckpoint {
                    resource_version: rv.clone(),
                    at_ms: t2,
                },
            )
            .await
            .map_err(|e| format!("storing the checkpoint of {}: {e}", self.ident()))?;
        tracing::info!(kind = %self.ident(), resource_version = %rv, "kube watch: listed and reconciled");
        Ok(rv)
    }

    async fn write_events(&self, items: Vec<Value>) -> Result<(), String> {
        let now = now_ms();
        let mut events = Vec::with_capacity(items.len());
        let mut bad = 0;
        for v in &items {
            match parse_event(
                &with_kind(v, &self.kind),
                &self.config.cluster,
                EventOrigin::Watch,
                now,
            ) {
                Ok(e) => events.push(e),
                Err(e) => {
                    bad += 1;
                    tracing::debug!(error = %e, "kube watch: event skipped");
                }
            }
        }
        self.count(Some("invalid_event"), bad);
        let n = events.len() as u64;
        let out = self
            .store
            .write_events(events)
            .await
            .map_err(|e| format!("storing events: {e}"))?;
        self.count(None, n);
        tracing::debug!(
            created = out.events_created,
            occurrences = out.occurrences_written,
            duplicates = out.duplicates,
            "kube watch: events stored"
        );
        Ok(())
    }

    fn object_write(
        &self,
        raw: &Value,
        change: ChangeKind,
        at_ms: i64,
        gap: Option<(i64, i64)>,
    ) -> Result<ObjectWrite, String> {
        let raw = with_kind(raw, &self.kind);
        let meta = ObjectMetaLite::of(&raw).map_err(|e| e.to_string())?;
        let object = sanitize(&self.kind.kind, &raw, &self.key).map_err(|e| e.to_string())?;
        Ok(ObjectWrite {
            cluster: self.config.cluster.clone(),
            group: self.kind.group.clone(),
            kind: self.kind.kind.clone(),
            namespace: meta.namespace,
            name: meta.name,
            uid: meta.uid,
            resource_version: meta.resource_version,
            at_ms,
            change,
            object,
            managers: managers_of(&raw),
            gitops: gitops_of(&raw),
            gap,
        })
    }

    /// Stores what the list says against the last stored state.
    async fn reconcile(&self, items: Vec<Value>, t1: Option<i64>, t2: i64) -> Result<(), String> {
        let live = self
            .store
            .live_objects(&self.config.cluster, &self.kind.group, &self.kind.kind)
            .await
            .map_err(|e| format!("reading the stored state of {}: {e}", self.ident()))?;
        let mut stored: HashMap<String, (String, i64)> = live
            .into_iter()
            .map(|l| (l.uid, (l.resource_version, l.at_ms)))
            .collect();
        let mut writes = Vec::new();
        let mut bad = 0;
        for raw in &items {
            let meta = match ObjectMetaLite::of(raw) {
                Ok(m) => m,
                Err(e) => {
                    bad += 1;
                    tracing::warn!(kind = %self.ident(), error = %e, "kube watch: listed object skipped");
                    continue;
                }
            };
            let prior = stored.remove(&meta.uid);
            let (change, at, gap) = match (&prior, t1) {
                (Some((rv, _)), _) if *rv == meta.resource_version => continue,
                (Some((_, last_at)), t1) => {
                    let from = t1.unwrap_or(*last_at);
                    let at = change_time(raw)
                        .filter(|t| *t > from && *t <= t2)
                        .unwrap_or(t2);
                    (ChangeKind::Updated, at, Some((from, t2)))
                }
                (None, Some(t1))
                    if meta
                        .creation_ms
                        .is_some_and(|c| c > t1.saturating_sub(CREATED_SLACK_MS)) =>
                {
                    (
                        ChangeKind::Created,
                        meta.creation_ms.unwrap_or(t2).min(t2),
                        None,
                    )
                }
                // A baseline: the listed state has been in place since its
                // last change (the latest managedFields time), if known.
                (None, _) => (
                    ChangeKind::Observed,
                    change_time(raw)
                        .or(meta.creation_ms)
                        .filter(|t| *t <= t2)
                        .unwrap_or(t2),
                    None,
                ),
            };
            match self.object_write(raw, change, at, gap) {
                Ok(w) => writes.push(w),
                Err(e) => {
                    bad += 1;
                    tracing::warn!(kind = %self.ident(), error = %e, "kube watch: listed object skipped");
                }
            }
        }
        // Stored as live, missing from the list: deleted during the gap.
        let mut deleted = 0;
        let live = self
            .store
            .live_objects(&self.config.cluster, &self.kind.group, &self.kind.kind)
            .await
            .map_err(|e| format!("reading the stored state of {}: {e}", self.ident()))?;
        for l in live.into_iter().filter(|l| stored.contains_key(&l.uid)) {
            let from = t1.unwrap_or(l.at_ms);
            writes.push(ObjectWrite {
                cluster: self.config.cluster.clone(),
                group: self.kind.group.clone(),
                kind: self.kind.kind.clone(),
                namespace: l.namespace,
                name: l.name,
                uid: l.uid,
                resource_version: format!("deleted-{}", l.resource_version),
                at_ms: t2,
                change: ChangeKind::Deleted,
                object: l.object,
                managers: Vec::new(),
                gitops: None,
                gap: Some((from, t2)),
            });
            deleted += 1;
        }
        self.count(Some("invalid_object"), bad);
        let n = writes.len() as u64;
        let mut total = kube_insight_store::ObjectWriteOutcome::default();
        for chunk in writes.chunks(self.config.batch_max.max(1)) {
            let out = self
                .store
                .write_objects(chunk.to_vec())
                .await
                .map_err(|e| format!("storing {}: {e}", self.ident()))?;
            total.merge(&out);
        }
        self.count(None, n);
        tracing::info!(
            kind = %self.ident(), listed = items.len(), versions = total.versions_written, unchanged = total.unchanged,
            deleted_in_gap = deleted, "kube watch: reconciled after list"
        );
        Ok(())
    }

    async fn watch_from(&self, rv: &mut String, shutdown: &CancellationToken) -> WatchEnd {
        let wp = WatchParams::default().timeout(self.config.watch_timeout_secs);
        let stream = tokio::select! {
            _ = shutdown.cancelled() => return WatchEnd::Shutdown,
            s = self.api.watch(&wp, rv) => s,
        };
        let stream = match stream {
            Ok(s) => s,
            Err(e) if is_gone(&e) => return WatchEnd::Gone,
            Err(e) => return WatchEnd::Failed(e.to_string()),
        };
        let mut chunks = stream.ready_chunks(self.config.batch_max.max(1)).boxed();
        let mut last_checkpoint = std::time::Instant::now();
        loop {
            let batch = tokio::select! {
                _ = shutdown.cancelled() => return WatchEnd::Shutdown,
                b = chunks.next() => b,
            };
            let Some(batch) = batch else {
                return WatchEnd::Closed;
            };
            let mut objects = Vec::new();
            let mut events = Vec::new();
            let mut end = None;
            let mut new_rv = None;
            for item in batch {
                let ev = match item {
                    Ok(ev) => ev,
                    Err(e) if is_gone(&e) => {
                        end = Some(WatchEnd::Gone);
                        break;
                    }
                    Err(e) => {
                        end = Some(WatchEnd::Failed(e.to_string()));
                        break;
                    }
                };
                let (obj, change) = match ev {
                    WatchEvent::Added(o) => (o, ChangeKind::Created),
                    WatchEvent::Modified(o) => (o, ChangeKind::Updated),
                    WatchEvent::Deleted(o) => (o, ChangeKind::Deleted),
                    WatchEvent::Bookmark(b) => {
                        new_rv = Some(b.metadata.resource_version);
                        continue;
                    }
                    WatchEvent::Error(status) => {
                        end = Some(if status.code == 410 {
                            WatchEnd::Gone
                        } else {
                            WatchEnd::Failed(format!(
                                "watch error {}: {}",
                                status.code, status.message
                            ))
                        });
                        break;
                    }
                };
                if let Some(r) = obj.metadata.resource_version.clone() {
                    new_rv = Some(r);
                }
                let raw = match serde_json::to_value(&obj) {
                    Ok(v) => v,
                    Err(e) => {
                        tracing::warn!(kind = %self.ident(), error = %e, "kube watch: an object does not encode; skipped");
                        continue;
                    }
                };
                if self.kind.is_event() {
                    if change != ChangeKind::Deleted {
                        events.push(raw);
                    }
                } else {
                    let at = match change {
                        ChangeKind::Deleted => now_ms(),
                        _ => change_time(&raw)
                            .filter(|t| *t <= now_ms() + 60_000)
                            .unwrap_or_else(now_ms),
                    };
                    match self.object_write(&raw, change, at, None) {
                        Ok(w) => objects.push(w),
                        Err(e) => {
                            self.count(Some("invalid_object"), 1);
                            tracing::warn!(kind = %self.ident(), error = %e, "kube watch: object skipped");
                        }
                    }
                }
            }
            // Store before advancing the resourceVersion: a failed write is
            // retried by resuming from the last stored point.
            if !events.is_empty() {
                if let Err(e) = self.write_events(events).await {
                    return WatchEnd::Failed(e);
                }
            }
            if !objects.is_empty() {
                let n = objects.len() as u64;
                match self.store.write_objects(objects).await {
                    Ok(out) => {
                        self.count(None, n);
                        tracing::debug!(kind = %self.ident(), versions = out.versions_written, duplicates = out.duplicates, unchanged = out.unchanged, "kube watch: changes stored");
                    }
                    Err(e) => return WatchEnd::Failed(format!("storing {}: {e}", self.ident())),
                }
            }
            if let Some(r) = new_rv.filter(|r| !r.is_empty()) {
                *rv = r;
            }
            if last_checkpoint.elapsed() >= self.config.checkpoint_every {
                last_checkpoint = std::time::Instant::now();
                let cp = WatchCheckpoint {
                    resource_version: rv.clone(),
                    at_ms: now_ms(),
                };
                if let Err(e) = self
                    .store
                    .set_checkpoint(&self.config.cluster, &self.kind.group, &self.kind.kind, cp)
                    .await
                {
                    tracing::warn!(kind = %self.ident(), error = %e, "kube watch: storing the checkpoint failed");
                }
            }
            if let Some(end) = end {
                return end;
            }
        }
    }
}

/// The time of an object's last change: the latest managedFields time.
fn change_time(raw: &Value) -> Option<i64> {
    managers_of(raw).iter().filter_map(|m| m.time_ms).max()
}

/// The object with `kind`/`apiVersion` set (list items often lack them).
fn with_kind(v: &Value, kind: &KindSpec) -> Value {
    let mut v = v.clone();
    if let Some(m) = v.as_object_mut() {
        if m.get("kind")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            m.insert("kind".into(), Value::String(kind.kind.clone()));
        }
        if m.get("apiVersion")
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
        {
            m.insert("apiVersion".into(), Value::String(kind.api_version()));
        }
    }
    v
}

/// Sleeps, or returns true if shut down meanwhile.
async fn sleep_or_stop(d: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => true,
        _ = tokio::time::sleep(d) => false,
    }
}
