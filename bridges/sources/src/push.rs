//! The one HTTP mount every push source shares.
//!
//! In order, for every request: a queue slot (bounded; when full: 429/503 with
//! `Retry-After` before the body is read, so memory is bounded by
//! `max_in_flight × max_body_bytes`), bearer-token auth (the cluster comes from
//! the token), the body read under a size limit (413), `Content-Encoding:
//! gzip` undone under the same limit, then the source's own
//! [`PushSource::ingest`] (decode + store). The answer is 2xx only after the
//! store said the data is durable; a retryable store error is 503 with
//! `Retry-After`, which Prometheus and Fluent Bit both retry.

use crate::auth::{AuthError, TokenMap};
use async_trait::async_trait;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use kube_insight_telemetry::{labels, Telemetry};
use std::io::Read;
use std::sync::Arc;
use std::time::Instant;
use thiserror::Error;
use tokio::sync::Semaphore;

/// Limits shared by the push endpoints.
#[derive(Debug, Clone)]
pub struct PushLimits {
    /// Largest accepted body, compressed or not, and after gunzip.
    pub max_body_bytes: usize,
    /// Requests processed at once per component; beyond: push back.
    pub max_in_flight: usize,
    /// Seconds sent in `Retry-After`.
    pub retry_after_secs: u64,
}

impl Default for PushLimits {
    fn default() -> Self {
        PushLimits {
            max_body_bytes: 32 << 20,
            max_in_flight: 64,
            retry_after_secs: 5,
        }
    }
}

/// One authenticated, size-checked, decompressed push.
#[derive(Debug)]
pub struct PushRequest {
    pub cluster: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// What the source did with a push.
#[derive(Debug, Default)]
pub struct PushOutcome {
    /// Records stored (or already stored: retries count here too).
    pub accepted: u64,
    /// Records skipped, by reason (`snake_case`), each counted on `/metrics`.
    pub rejected: Vec<(&'static str, u64)>,
    /// A short note for the response body and the log (first bad record, …).
    pub note: Option<String>,
    /// When set, the request is answered with this 4xx after the accepted
    /// records were stored (e.g. a series limit hit; the sender must not retry).
    pub refuse: Option<(StatusCode, String)>,
    /// A JSON answer (a read route such as the watch state): 200 with this
    /// body instead of 204.
    pub json: Option<Bytes>,
}

#[derive(Debug, Error)]
pub enum PushError {
    /// The body can never be read (corrupt compression or framing): 400.
    #[error("{0}")]
    BadRequest(String),
    /// 415 for a content encoding or type the source does not speak.
    #[error("{0}")]
    Unsupported(String),
    #[error(transparent)]
    Store(#[from] kube_insight_store::Error),
}

/// A push source: it decodes its body and hands records to the store.
#[async_trait]
pub trait PushSource: Send + Sync + 'static {
    /// The component's snake_case name (module, config key, metric label, span).
    fn name(&self) -> &'static str;
    /// The target it belongs to (`metrics`, `logs`, `events`).
    fn target(&self) -> &'static str;
    /// The HTTP path under the ingest listener.
    fn path(&self) -> &'static str;
    /// The status for "try again later" that this sender retries reliably.
    fn overload_status(&self) -> StatusCode {
        StatusCode::TOO_MANY_REQUESTS
    }
    /// Content encodings the source undoes itself (besides gzip and identity,
    /// which the mount handles).
    fn own_encodings(&self) -> &'static [&'static str] {
        &[]
    }
    async fn ingest(&self, request: PushRequest) -> Result<PushOutcome, PushError>;
}

struct MountState {
    source: Arc<dyn PushSource>,
    tokens: Arc<TokenMap>,
    limits: PushLimits,
    slots: Semaphore,
    telemetry: Arc<Telemetry>,
}

/// Adds `source` at its path to an ingest router.
pub fn mount(
    router: Router,
    source: Arc<dyn PushSource>,
    tokens: Arc<TokenMap>,
    limits: PushLimits,
    telemetry: Arc<Telemetry>,
) -> Router {
    let path = source.path();
    let slots = limits.max_in_flight.max(1);
    telemetry
        .queue_capacity
        .get_or_create(&labels([("component", source.name())]))
        .set(i64::try_from(slots).unwrap_or(i64::MAX));
    let state = Arc::new(MountState {
        slots: Semaphore::new(slots),
        source,
        tokens,
        limits,
        telemetry,
    });
    router.route(path, post(handle).with_state(state))
}

fn reply(st: &MountState, status: StatusCode, msg: String) -> Response {
    st.telemetry
        .push_requests
        .get_or_create(&labels([
            ("component", st.source.name()),
            ("code", status.as_str()),
        ]))
        .inc();
    let mut resp = (status, msg).into_response();
    if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE {
        if let Ok(v) = HeaderValue::from_str(&st.limits.retry_after_secs.to_string()) {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
    }
    resp
}

async fn handle(State(st): State<Arc<MountState>>, req: Request) -> Response {
    let component = st.source.name();
    let started = Instant::now();
    // 1. A queue slot, before anything is buffered.
    let Ok(_slot) = st.slots.try_acquire() else {
        st.telemetry
            .record_rejected(st.source.target(), component, "", "queue_full", 1);
        tracing::debug!(component, "push queue full; asking the sender to retry");
        return reply(
            &st,
            st.source.overload_status(),
            format!(
                "{component}: too many requests in flight ({}); retry later",
                st.limits.max_in_flight
            ),
        );
    };
    let depth = st
        .telemetry
        .queue_depth
        .get_or_create(&labels([("component", component)]))
        .clone();
    depth.inc();
    let _depth_guard = scopeguard(move || {
        depth.dec();
    });

    // 2. Auth: the cluster comes from the token.
    let (parts, body) = req.into_parts();
    let cluster = match st.tokens.cluster_for(&parts.headers) {
        Ok(c) => c,
        Err(e @ (AuthError::Missing | AuthError::Unknown)) => {
            tracing::warn!(component, error = %e, "push refused: authentication");
            let mut r = reply(&st, StatusCode::UNAUTHORIZED, e.to_string());
            r.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            return r;
        }
        Err(e) => return reply(&st, StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };

    // 3. The body, bounded.
    let limit = st.limits.max_body_bytes;
    if let Some(len) = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
    {
        if len > limit {
            return reply(
                &st,
                StatusCode::PAYLOAD_TOO_LARGE,
                too_large(component, limit),
            );
        }
    }
    let raw = match read_limited(body, limit).await {
        Ok(b) => b,
        Err(ReadError::TooLarge) => {
            return reply(
                &st,
                StatusCode::PAYLOAD_TOO_LARGE,
                too_large(component, limit),
            )
        }
        Err(ReadError::Broken(e)) => {
            return reply(
                &st,
                StatusCode::BAD_REQUEST,
                format!("{component}: reading the body: {e}"),
            )
        }
    };

    // 4. Content-Encoding.
    let encoding = parts
        .headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity")
        .trim()
        .to_ascii_lowercase();
    let body = match encoding.as_str() {
        "" | "identity" => raw,
        "gzip" | "x-gzip" => match gunzip_limited(&raw, limit) {
            Ok(b) => b,
            Err(GunzipError::TooLarge) => {
                return reply(
                    &st,
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("{component}: gzip body inflates beyond the limit of {limit} bytes; send smaller batches"),
                )
            }
            Err(GunzipError::Corrupt(e)) => {
                st.telemetry.record_rejected(st.source.target(), component, &cluster, "corrupt_gzip", 1);
                return reply(&st, StatusCode::BAD_REQUEST, format!("{component}: corrupt gzip body: {e}"));
            }
        },
        other if st.source.own_encodings().contains(&other) => raw,
        other => {
            return reply(
                &st,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("{component}: unsupported Content-Encoding {other:?}; send gzip or identity"),
            )
        }
    };

    // 5. The source decodes and stores.
    let result = st
        .source
        .ingest(PushRequest {
            cluster: cluster.clone(),
            headers: parts.headers,
            body,
        })
        .await;
    let target = st.source.target();
    match result {
        Ok(out) => {
            st.telemetry
                .record_in(target, component, &cluster, out.accepted);
            for (reason, n) in &out.rejected {
                st.telemetry
                    .record_rejected(target, component, &cluster, reason, *n);
            }
            let rejected: u64 = out.rejected.iter().map(|(_, n)| n).sum();
            if rejected > 0 {
                tracing::warn!(component, %cluster, accepted = out.accepted, rejected, note = out.note.as_deref().unwrap_or(""), "push stored with skipped records");
            } else {
                tracing::debug!(component, %cluster, accepted = out.accepted, elapsed_ms = started.elapsed().as_millis() as u64, "push stored");
            }
            if let Some((status, msg)) = out.refuse {
                return reply(&st, status, format!("{component}: {msg}"));
            }
            if let Some(json) = out.json {
                let mut r = reply(&st, StatusCode::OK, String::new());
                *r.body_mut() = Body::from(json);
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                return r;
            }
            let msg = match out.note {
                Some(n) if rejected > 0 => {
                    format!("stored {} records, skipped {rejected}: {n}\n", out.accepted)
                }
                _ => String::new(),
            };
            if msg.is_empty() {
                reply(&st, StatusCode::NO_CONTENT, msg)
            } else {
                reply(&st, StatusCode::OK, msg)
            }
        }
        Err(PushError::BadRequest(m)) => {
            st.telemetry
                .record_rejected(target, component, &cluster, "bad_request", 1);
            tracing::warn!(component, %cluster, error = %m, "push refused: unreadable body");
            reply(&st, StatusCode::BAD_REQUEST, format!("{component}: {m}"))
        }
        Err(PushError::Unsupported(m)) => reply(
            &st,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("{component}: {m}"),
        ),
        Err(PushError::Store(e)) => {
            st.telemetry
                .store_errors
                .get_or_create(&labels([
                    ("signal", target),
                    (
                        "kind",
                        if e.is_retryable() {
                            "retryable"
                        } else {
                            "fatal"
                        },
                    ),
                ]))
                .inc();
            if e.is_retryable() {
                tracing::warn!(component, %cluster, error = %e, "store cannot take the push now; sender will retry");
                let status = match e {
                    kube_insight_store::Error::Overloaded(_) => st.source.overload_status(),
                    _ => StatusCode::SERVICE_UNAVAILABLE,
                };
                reply(&st, status, format!("{component}: {e}; retry later"))
            } else {
                tracing::error!(component, %cluster, error = %e, "store write failed");
                // 500 is retried by Prometheus and Fluent Bit too: nothing is lost
                // while the operator fixes the store.
                reply(
                    &st,
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("{component}: {e}"),
                )
            }
        }
    }
}

fn too_large(component: &str, limit: usize) -> String {
    format!("{component}: body larger than the limit of {limit} bytes; send smaller batches")
}

enum ReadError {
    TooLarge,
    Broken(String),
}

async fn read_limited(body: Body, limit: usize) -> Result<Bytes, ReadError> {
    use http_body_util_compat::collect_limited;
    collect_limited(body, limit).await
}

/// Reads a body with a limit without extra dependencies.
mod http_body_util_compat {
    use super::ReadError;
    use axum::body::{Body, Bytes};
    use futures::StreamExt;

    pub async fn collect_limited(body: Body, limit: usize) -> Result<Bytes, ReadError> {
        let mut stream = body.into_data_stream();
        let mut buf = bytes::BytesMut::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| ReadError::Broken(e.to_string()))?;
            if buf.len() + chunk.len() > limit {
                return Err(ReadError::TooLarge);
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(buf.freeze())
    }
}

#[derive(Debug)]
pub enum GunzipError {
    TooLarge,
    Corrupt(String),
}

/// Gunzips (multi-member aware) with an output limit: a small body cannot
/// inflate into unbounded memory.
pub fn gunzip_limited(data: &[u8], limit: usize) -> Result<Bytes, GunzipError> {
    let decoder = flate2::read::MultiGzDecoder::new(data);
    let mut out = Vec::with_capacity((data.len() * 4).min(limit));
    let mut limited = decoder.take(limit as u64 + 1);
    limited
        .read_to_end(&mut out)
        .map_err(|e| GunzipError::Corrupt(e.to_string()))?;
    if out.len() > limit {
        return Err(GunzipError::TooLarge);
    }
    Ok(Bytes::from(out))
}

/// Runs a closure on drop.
fn scopeguard<F: FnOnce()>(f: F) -> impl Drop {
    struct Guard<F: FnOnce()>(Option<F>);
    impl<F: FnOnce()> Drop for Guard<F> {
        fn drop(&mut self) {
            if let Some(f) = self.0.take() {
                f();
            }
        }
    }
    Guard(Some(f))
}

#[cfg(test)]
mod tests;
