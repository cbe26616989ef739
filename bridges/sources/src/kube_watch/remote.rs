//! The push agent's [`EventStore`]: the `events` target running in the
//! monitored cluster writes through it, so [`super::run`] is unchanged.
//!
//! Writes (`write_objects`, `write_events`, `set_checkpoint`) become one
//! [`WatchBatch`] record each, appended to the [`Spool`] (fsynced) before
//! they return; a sender task delivers the records in order to the
//! insight's `POST /ingest/v1/watch` ([`super::ingest`]), gzipped, several
//! per request up to [`PushConfig::max_body_bytes`]. Since a checkpoint is
//! spooled after the writes it covers, it is delivered after them.
//!
//! Delivery: 2xx acknowledges the records (the spool forgets them). 429,
//! 5xx, 401/403/404 (a token or an insight being fixed) and connection
//! errors are retried with capped exponential backoff, honouring
//! `Retry-After`; 400, 413, 415 and 422 can never succeed: the records are
//! re-sent one by one and each one refused is logged and dropped.
//!
//! When the spool is full, a write waits up to [`PushConfig::full_wait`] for
//! room, then fails as overloaded: the watch retries from its last point and,
//! once its resourceVersion expired, re-lists and reconciles.
//!
//! Reads (`checkpoint`, `live_objects`) go to `POST /ingest/v1/watch/state`
//! only after every record spooled before the call was delivered (else the
//! stored state would be behind the watch's own writes); they wait up to
//! [`PushConfig::read_wait`], then fail as unavailable (the watch retries).
//! `secret_key` is read once and kept. The other reads are not served by an
//! agent.

use super::ingest::{
    hex_decode, CheckpointWrite, StateRequest, StateResponse, WatchBatch, STATE_PATH, WATCH_PATH,
};
use super::spool::{Spool, SpoolError};
use crate::pull::{backoff, error_chain};
use async_trait::async_trait;
use kube_insight_core::event::{KubeEvent, SecretKey};
use kube_insight_store::events::{
    ChangeQuery, ChangeRow, EventQuery, EventStore, EventWriteOutcome, LiveObject, ObjectAt,
    ObjectWrite, ObjectWriteOutcome, WatchCheckpoint,
};
use kube_insight_store::Error as StoreError;
use kube_insight_telemetry::{labels, Telemetry};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

/// Settings of the push agent.
#[derive(Debug, Clone)]
pub struct PushConfig {
    /// The insight's ingest base URL (`https://insight.example:9091`).
    pub url: String,
    pub token: String,
    /// PEM certificates trusted for an https URL besides the web PKI roots
    /// (an insight behind a private CA).
    pub ca_pem: Option<Vec<u8>>,
    pub spool_dir: PathBuf,
    /// Bytes of spool files at most.
    pub spool_bytes: u64,
    /// Bytes of records per request (before gzip) at most; one larger
    /// record is sent alone.
    pub max_body_bytes: usize,
    /// Largest state answer read.
    pub max_response_bytes: usize,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Longest `Retry-After` honoured.
    pub retry_after_max: Duration,
    /// How long a write waits for room in a full spool.
    pub full_wait: Duration,
    /// How long a read waits for the spool to be delivered.
    pub read_wait: Duration,
}

impl PushConfig {
    pub fn new(url: impl Into<String>, token: impl Into<String>, spool_dir: PathBuf) -> Self {
        PushConfig {
            url: url.into().trim_end_matches('/').to_string(),
            token: token.into(),
            ca_pem: None,
            spool_dir,
            spool_bytes: 512 << 20,
            max_body_bytes: 4 << 20,
            max_response_bytes: 64 << 20,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            backoff_min: Duration::from_millis(500),
            backoff_max: Duration::from_secs(60),
            retry_after_max: Duration::from_secs(300),
            full_wait: Duration::from_secs(30),
            read_wait: Duration::from_secs(30),
        }
    }
}

/// The spool's component label on `/metrics`.
pub const SPOOL_COMPONENT: &str = "events_spool";

struct Inner {
    cfg: PushConfig,
    client: reqwest::Client,
    spool: Mutex<Spool>,
    /// Records appended (since open, plus those pending at open).
    written: AtomicU64,
    /// Records delivered or dropped.
    acked: watch::Sender<u64>,
    /// The sender has work.
    wake: Notify,
    /// The spool has room again.
    room: Notify,
    key: Mutex<Option<SecretKey>>,
    /// For `kube_insight_queue_depth{component="events_spool"}` (spool bytes).
    telemetry: Arc<Telemetry>,
}

/// The agent's store: spool + sender + state reads over HTTP.
#[derive(Clone)]
pub struct RemoteEventStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RemoteEventStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteEventStore")
            .field("url", &self.inner.cfg.url)
            .field("spool_dir", &self.inner.cfg.spool_dir)
            .finish()
    }
}

fn unavailable(msg: String) -> StoreError {
    StoreError::Unavailable(msg)
}

impl RemoteEventStore {
    /// Opens the spool (resuming what a previous run left) and starts the
    /// sender, which runs until `shutdown`.
    /// The spool's bytes and bound are `kube_insight_queue_depth` and
    /// `kube_insight_queue_capacity` of component `events_spool` (the
    /// KubeInsightPushBacklog alert's ratio).
    pub fn start(
        cfg: PushConfig,
        telemetry: Arc<Telemetry>,
        shutdown: CancellationToken,
    ) -> Result<RemoteEventStore, StoreError> {
        let (spool, pending) = Spool::open(&cfg.spool_dir, cfg.spool_bytes).map_err(spool_err)?;
        let component = labels([("component", SPOOL_COMPONENT)]);
        telemetry
            .queue_capacity
            .get_or_create(&component)
            .set(i64::try_from(cfg.spool_bytes).unwrap_or(i64::MAX));
        set_depth(&telemetry, spool.bytes());
        let mut builder = reqwest::Client::builder()
            .connect_timeout(cfg.connect_timeout)
            .timeout(cfg.request_timeout);
        if let Some(pem) = &cfg.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem).map_err(|e| {
                StoreError::InvalidQuery(format!("push CA certificates: {}", error_chain(&e)))
            })?;
            if certs.is_empty() {
                return Err(StoreError::InvalidQuery(
                    "push CA certificates: no PEM certificate found".into(),
                ));
            }
            for c in certs {
                builder = builder.add_root_certificate(c);
            }
        }
        let client = builder
            .build()
            .map_err(|e| unavailable(format!("push client for {}: {e}", cfg.url)))?;
        if pending > 0 {
            tracing::info!(spool = %cfg.spool_dir.display(), records = pending, bytes = spool.bytes(),
                "push spool: resuming the delivery of records a previous run left");
        }
        let (acked, _) = watch::channel(0);
        let store = RemoteEventStore {
            inner: Arc::new(Inner {
                cfg,
                client,
                spool: Mutex::new(spool),
                written: AtomicU64::new(pending),
                acked,
                wake: Notify::new(),
                room: Notify::new(),
                key: Mutex::new(None),
                telemetry,
            }),
        };
        let s = store.clone();
        tokio::spawn(async move { s.send_loop(shutdown).await });
        Ok(store)
    }

    /// Records spooled and not yet delivered.
    pub fn pending(&self) -> u64 {
        self.inner
            .written
            .load(Ordering::SeqCst)
            .saturating_sub(*self.inner.acked.borrow())
    }

    /// Waits until every record spooled so far is delivered (or `within`).
    pub async fn flushed(&self, within: Duration) -> bool {
        let target = self.inner.written.load(Ordering::SeqCst);
        let mut rx = self.inner.acked.subscribe();
        tokio::time::timeout(within, rx.wait_for(|a| *a >= target))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    async fn spool(&self, batch: WatchBatch) -> Result<(), StoreError> {
        // Large batches are split so that each record stays within a request.
        let payload = serde_json::to_vec(&batch)
            .map_err(|e| StoreError::InvalidQuery(format!("encoding a watch batch: {e}")))?;
        if payload.len() > self.inner.cfg.max_body_bytes && batch.records() > 1 {
            let (a, b) = split(batch);
            Box::pin(self.spool(a)).await?;
            return Box::pin(self.spool(b)).await;
        }
        let deadline = tokio::time::Instant::now() + self.inner.cfg.full_wait;
        loop {
            let room = self.inner.room.notified();
            let inner = self.inner.clone();
            let p = payload.clone();
            let r = tokio::task::spawn_blocking(move || {
                let mut s = inner.spool.lock().map_err(|_| poisoned())?;
                let r = s.append(&p);
                set_depth(&inner.telemetry, s.bytes());
                r
            })
            .await
            .map_err(|e| unavailable(format!("push spool: {e}")))?;
            match r {
                Ok(()) => {
                    self.inner.written.fetch_add(1, Ordering::SeqCst);
                    self.inner.wake.notify_one();
                    return Ok(());
                }
                Err(SpoolError::Full { .. })
                    if tokio::time::timeout_at(deadline, room).await.is_ok() => {}
                Err(e @ SpoolError::Full { .. }) => {
                    return Err(StoreError::Overloaded(e.to_string()))
                }
                Err(e) => return Err(spool_err(e)),
            }
        }
    }

    async fn state(&self, ask: StateRequest) -> Result<StateResponse, StoreError> {
        let url = format!("{}{STATE_PATH}", self.inner.cfg.url);
        let body = serde_json::to_vec(&ask)
            .map_err(|e| StoreError::InvalidQuery(format!("encoding {ask:?}: {e}")))?;
        let resp = self
            .inner
            .client
            .post(&url)
            .bearer_auth(&self.inner.cfg.token)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| unavailable(format!("POST {url}: {}", error_chain(&e))))?;
        let status = resp.status();
        let bytes = read_limited(resp, self.inner.cfg.max_response_bytes)
            .await
            .map_err(|e| unavailable(format!("POST {url}: {e}")))?;
        if !status.is_success() {
            let text = String::from_utf8_lossy(&bytes[..bytes.len().min(512)]).into_owned();
            return Err(unavailable(format!(
                "POST {url}: {status}: {}{}",
                text.trim(),
                fix_for(status)
            )));
        }
        serde_json::from_slice(&bytes)
            .map_err(|e| unavailable(format!("POST {url}: answer is not watch state JSON: {e}")))
    }

    /// Waits until the records spooled before now are delivered.
    async fn barrier(&self, what: &str) -> Result<(), StoreError> {
        if self.flushed(self.inner.cfg.read_wait).await {
            return Ok(());
        }
        Err(unavailable(format!(
            "push: reading {what} waits for {} spooled records to reach {}; retrying",
            self.pending(),
            self.inner.cfg.url
        )))
    }

    async fn send_loop(self, shutdown: CancellationToken) {
        let mut failures = 0u32;
        let mut failing = false;
        loop {
            if self.pending() == 0 {
                let woken = self.inner.wake.notified();
                if self.pending() == 0 {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = woken => {}
                    }
                }
            }
            // Every record counted here is on disk (counted after its append).
            let written = self.inner.written.load(Ordering::SeqCst);
            let inner = self.inner.clone();
            let max = self.inner.cfg.max_body_bytes;
            let peeked = tokio::task::spawn_blocking(move || {
                inner.spool.lock().map_err(|_| poisoned())?.peek(max)
            })
            .await;
            let records = match peeked {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "push spool: reading failed; retrying");
                    if sleep_or_stop(Duration::from_secs(5), &shutdown).await {
                        return;
                    }
                    continue;
                }
                Err(e) => {
                    tracing::error!(error = %e, "push spool: reading failed");
                    return;
                }
            };
            if records.is_empty() {
                // Counted but not on disk (a corrupt record skipped at open):
                // nothing before `written` is left to deliver.
                self.inner.acked.send_modify(|a| *a = (*a).max(written));
                continue;
            }
            let n = records.len();
            let mut batch = WatchBatch::default();
            for (payload, _) in &records {
                match serde_json::from_slice::<WatchBatch>(payload) {
                    Ok(b) => batch.extend(b),
                    Err(e) => {
                        tracing::error!(error = %e, "push spool: a record is not a watch batch; dropped")
                    }
                }
            }
            let last = records[n - 1].1;
            match self.send(&batch).await {
                Sent::Ok => {}
                Sent::Retry(why, after) => {
                    failures += 1;
                    let wait = after
                        .map(|a| a.min(self.inner.cfg.retry_after_max))
                        .unwrap_or_else(|| {
                            backoff(
                                self.inner.cfg.backoff_min,
                                self.inner.cfg.backoff_max,
                                failures,
                            )
                        });
                    if !failing {
                        tracing::warn!(url = %self.inner.cfg.url, error = %why, pending = self.pending(),
                            retry_in_ms = wait.as_millis() as u64, "push: delivery failed; records stay spooled and are retried");
                    } else {
                        tracing::debug!(error = %why, retry_in_ms = wait.as_millis() as u64, "push: still failing");
                    }
                    failing = true;
                    if sleep_or_stop(wait, &shutdown).await {
                        return;
                    }
                    continue;
                }
                Sent::Refused(why) if n == 1 => {
                    tracing::error!(url = %self.inner.cfg.url, error = %why, objects = batch.objects.len(),
                        events = batch.events.len(), checkpoints = batch.checkpoints.len(),
                        first_uid = batch.objects.first().map(|o| o.uid.as_str()).or(batch.events.first().map(|e| e.uid.as_str())).unwrap_or(""),
                        "push: the insight refused a record for good; dropped");
                }
                Sent::Refused(_) => {
                    // Find the bad record(s): one by one, in order.
                    if !self.send_one_by_one(records, &shutdown).await {
                        return;
                    }
                    failures = 0;
                    failing = false;
                    continue;
                }
            }
            if failing {
                tracing::info!(url = %self.inner.cfg.url, "push: delivering again");
            }
            failures = 0;
            failing = false;
            if !self.ack(last, n as u64).await {
                return;
            }
        }
    }

    /// Sends each record alone (retrying each), dropping the refused ones.
    /// False on shutdown or a spool failure.
    async fn send_one_by_one(
        &self,
        records: Vec<(Vec<u8>, super::spool::Pos)>,
        shutdown: &CancellationToken,
    ) -> bool {
        for (payload, pos) in records {
            let batch: WatchBatch = serde_json::from_slice(&payload).unwrap_or_default();
            let mut failures = 0u32;
            loop {
                match self.send(&batch).await {
                    Sent::Ok => break,
                    Sent::Refused(why) => {
                        tracing::error!(url = %self.inner.cfg.url, error = %why, objects = batch.objects.len(),
                            events = batch.events.len(), checkpoints = batch.checkpoints.len(),
                            first_uid = batch.objects.first().map(|o| o.uid.as_str()).or(batch.events.first().map(|e| e.uid.as_str())).unwrap_or(""),
                            "push: the insight refused a record for good; dropped");
                        break;
                    }
                    Sent::Retry(why, after) => {
                        failures += 1;
                        let wait = after.unwrap_or_else(|| {
                            backoff(
                                self.inner.cfg.backoff_min,
                                self.inner.cfg.backoff_max,
                                failures,
                            )
                        });
                        tracing::debug!(error = %why, "push: retrying one record");
                        if sleep_or_stop(wait.min(self.inner.cfg.retry_after_max), shutdown).await {
                            return false;
                        }
                    }
                }
            }
            if !self.ack(pos, 1).await {
                return false;
            }
        }
        true
    }

    async fn ack(&self, to: super::spool::Pos, n: u64) -> bool {
        let inner = self.inner.clone();
        let r = tokio::task::spawn_blocking(move || {
            let mut s = inner.spool.lock().map_err(|_| poisoned())?;
            let r = s.ack(to);
            set_depth(&inner.telemetry, s.bytes());
            r
        })
        .await;
        match r {
            Ok(Ok(_)) => {
                self.inner.acked.send_modify(|a| *a += n);
                self.inner.room.notify_waiters();
                true
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "push spool: recording the delivery failed; records may be re-sent (idempotent)");
                self.inner.acked.send_modify(|a| *a += n);
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "push spool: recording the delivery failed");
                false
            }
        }
    }

    async fn send(&self, batch: &WatchBatch) -> Sent {
        let url = format!("{}{WATCH_PATH}", self.inner.cfg.url);
        let body = match gzip_json(batch) {
            Ok(b) => b,
            Err(e) => return Sent::Refused(format!("encoding the batch: {e}")),
        };
        let resp = self
            .inner
            .client
            .post(&url)
            .bearer_auth(&self.inner.cfg.token)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(reqwest::header::CONTENT_ENCODING, "gzip")
            .body(body)
            .send()
            .await;
        let resp = match resp {
            Ok(r) => r,
            Err(e) => return Sent::Retry(format!("POST {url}: {}", error_chain(&e)), None),
        };
        let status = resp.status();
        if status.is_success() {
            return Sent::Ok;
        }
        let after = resp
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let text = read_limited(resp, 4096).await.unwrap_or_default();
        let why = format!(
            "POST {url}: {status}: {}{}",
            String::from_utf8_lossy(&text).trim(),
            fix_for(status)
        );
        match status.as_u16() {
            400 | 413 | 415 | 422 => Sent::Refused(why),
            _ => Sent::Retry(why, after),
        }
    }
}

enum Sent {
    Ok,
    /// Try again later (after the server's `Retry-After` if given).
    Retry(String, Option<Duration>),
    /// Can never succeed.
    Refused(String),
}

fn fix_for(status: reqwest::StatusCode) -> &'static str {
    match status.as_u16() {
        401 | 403 => {
            "; check KUBE_INSIGHT_PUSH_TOKEN against the insight's KUBE_INSIGHT_INGEST_TOKENS_FILE"
        }
        404 => "; is the insight running the events target (KUBE_INSIGHT_TARGETS) at this URL?",
        _ => "",
    }
}

fn split(b: WatchBatch) -> (WatchBatch, WatchBatch) {
    // Objects first, then events, then checkpoints: the order they apply in.
    let mut first = WatchBatch::default();
    let mut rest = b;
    if rest.objects.len() > 1 || (rest.objects.len() == 1 && rest.records() > 1) {
        let half = rest.objects.len().div_ceil(2);
        first.objects = rest.objects.drain(..half).collect();
    } else if rest.events.len() > 1 || (rest.events.len() == 1 && !rest.checkpoints.is_empty()) {
        let half = rest.events.len().div_ceil(2);
        first.objects = std::mem::take(&mut rest.objects);
        first.events = rest.events.drain(..half).collect();
    } else {
        let half = rest.checkpoints.len().div_ceil(2);
        first.objects = std::mem::take(&mut rest.objects);
        first.events = std::mem::take(&mut rest.events);
        first.checkpoints = rest.checkpoints.drain(..half).collect();
    }
    (first, rest)
}

fn gzip_json(batch: &WatchBatch) -> Result<Vec<u8>, String> {
    let json = serde_json::to_vec(batch).map_err(|e| e.to_string())?;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(&json).map_err(|e| e.to_string())?;
    enc.finish().map_err(|e| e.to_string())
}

async fn read_limited(mut resp: reqwest::Response, limit: usize) -> Result<Vec<u8>, String> {
    let mut buf = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| error_chain(&e))? {
        if buf.len() + chunk.len() > limit {
            return Err(format!("answer larger than {limit} bytes"));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf)
}

fn set_depth(telemetry: &Telemetry, bytes: u64) {
    telemetry
        .queue_depth
        .get_or_create(&labels([("component", SPOOL_COMPONENT)]))
        .set(i64::try_from(bytes).unwrap_or(i64::MAX));
}

fn poisoned() -> SpoolError {
    SpoolError::Io {
        path: "push spool".into(),
        source: std::io::Error::other("lock poisoned by a panic"),
    }
}

fn spool_err(e: SpoolError) -> StoreError {
    match e {
        SpoolError::Io { source, path } => StoreError::Io(std::io::Error::new(
            source.kind(),
            format!("{path}: {source}"),
        )),
        other => StoreError::Overloaded(other.to_string()),
    }
}

async fn sleep_or_stop(d: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => true,
        _ = tokio::time::sleep(d) => false,
    }
}

fn not_served(what: &str) -> StoreError {
    StoreError::InvalidQuery(format!(
        "{what} is not served by a push agent (KUBE_INSIGHT_EVENTS_PUSH_URL); read the insight's API"
    ))
}

#[async_trait]
impl EventStore for RemoteEventStore {
    async fn secret_key(&self) -> Result<SecretKey, StoreError> {
        if let Some(k) = self.inner.key.lock().ok().and_then(|k| k.clone()) {
            return Ok(k);
        }
        let r = self.state(StateRequest::SecretKey).await?;
        let key = r
            .secret_key
            .as_deref()
            .and_then(hex_decode)
            .and_then(|b| SecretKey::from_bytes(&b))
            .ok_or_else(|| {
                unavailable(format!(
                    "{}{STATE_PATH}: the answer has no valid secret_key",
                    self.inner.cfg.url
                ))
            })?;
        tracing::info!(url = %self.inner.cfg.url, cluster = %r.cluster, "push: connected; records are stored as the token's cluster");
        if let Ok(mut k) = self.inner.key.lock() {
            *k = Some(key.clone());
        }
        Ok(key)
    }

    async fn write_events(&self, events: Vec<KubeEvent>) -> Result<EventWriteOutcome, StoreError> {
        if events.is_empty() {
            return Ok(EventWriteOutcome::default());
        }
        self.spool(WatchBatch {
            events,
            ..Default::default()
        })
        .await?;
        // Spooled; what the insight makes of them is not known here.
        Ok(EventWriteOutcome::default())
    }

    async fn write_objects(
        &self,
        writes: Vec<ObjectWrite>,
    ) -> Result<ObjectWriteOutcome, StoreError> {
        if writes.is_empty() {
            return Ok(ObjectWriteOutcome::default());
        }
        self.spool(WatchBatch {
            objects: writes,
            ..Default::default()
        })
        .await?;
        Ok(ObjectWriteOutcome::default())
    }

    async fn query_events(&self, _query: &EventQuery) -> Result<Vec<KubeEvent>, StoreError> {
        Err(not_served("querying events"))
    }

    async fn changes(&self, _query: &ChangeQuery) -> Result<Vec<ChangeRow>, StoreError> {
        Err(not_served("the changes timeline"))
    }

    async fn object_at(
        &self,
        _cluster: Option<&str>,
        _kind: &str,
        _namespace: &str,
        _name: &str,
        _at_ms: i64,
    ) -> Result<Option<ObjectAt>, StoreError> {
        Err(not_served("an object at a time"))
    }

    async fn live_objects(
        &self,
        _cluster: &str,
        group: &str,
        kind: &str,
    ) -> Result<Vec<LiveObject>, StoreError> {
        self.barrier(&format!("the live objects of {group}/{kind}"))
            .await?;
        let mut out = Vec::new();
        let mut after = None;
        loop {
            let r = self
                .state(StateRequest::LiveObjects {
                    group: group.to_string(),
                    kind: kind.to_string(),
                    after: after.take(),
                })
                .await?;
            out.extend(r.live);
            match r.next_after {
                Some(a) => after = Some(a),
                None => return Ok(out),
            }
        }
    }

    async fn set_checkpoint(
        &self,
        _cluster: &str,
        group: &str,
        kind: &str,
        checkpoint: WatchCheckpoint,
    ) -> Result<(), StoreError> {
        self.spool(WatchBatch {
            checkpoints: vec![CheckpointWrite {
                group: group.to_string(),
                kind: kind.to_string(),
                checkpoint,
            }],
            ..Default::default()
        })
        .await
    }

    async fn checkpoint(
        &self,
        _cluster: &str,
        group: &str,
        kind: &str,
    ) -> Result<Option<WatchCheckpoint>, StoreError> {
        self.barrier(&format!("the checkpoint of {group}/{kind}"))
            .await?;
        let r = self
            .state(StateRequest::Checkpoint {
                group: group.to_string(),
                kind: kind.to_string(),
            })
            .await?;
        Ok(r.checkpoint)
    }

    async fn maintain_events(&self, _now_ms: i64) -> Result<u64, StoreError> {
        // Retention is the insight's.
        Ok(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_keeps_the_apply_order() {
        let cp = |k: &str| CheckpointWrite {
            group: String::new(),
            kind: k.into(),
            checkpoint: WatchCheckpoint {
                resource_version: "1".into(),
                at_ms: 0,
            },
        };
        let b = WatchBatch {
            checkpoints: vec![cp("a"), cp("b"), cp("c")],
            ..Default::default()
        };
        let (x, y) = split(b);
        assert_eq!(x.checkpoints.len() + y.checkpoints.len(), 3);
        assert_eq!(x.checkpoints[0].kind, "a");
        assert_eq!(y.checkpoints.last().map(|c| c.kind.as_str()), Some("c"));
    }
}
