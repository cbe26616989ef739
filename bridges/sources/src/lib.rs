//! kube-insight's bridges from third-party collectors into the store.
//!
//! Like vector's sources, every bridge shares one of two mechanisms and only
//! writes its own decoding:
//! - [`push`]: one HTTP mount for push endpoints (bearer-token auth with the
//!   cluster taken from the token, body limit, gzip, a bounded queue that
//!   pushes back with 429/503 and `Retry-After`, status mapping, telemetry);
//! - [`pull`]: one loop for pulls (interval, timeout, backoff, logging once
//!   per state change, graceful shutdown).
//!
//! Components (each: config + pure decode + wiring; decode is tested on the
//! shared fixtures): [`prometheus`] holds the pure decoders of the metrics
//! path, and [`metrics`] wires them as `prometheus_remote_write` (push) and
//! `prometheus_federate` (pull).
//!
//! [`leader`]: the collector's leader election through a Lease, and the
//! supervisor that runs the collector targets only while leading.

pub mod auth;
pub mod fluent_bit;
pub mod kube_eventer;
pub mod kube_watch;
pub mod leader;
pub mod metrics;
pub mod prometheus;
pub mod pull;
pub mod push;
pub mod topology;

pub use auth::{AuthError, TokenMap};
