//! Plays a [`World`] into a running kube-insight through its real ingest
//! paths: Prometheus remote write (snappy protobuf) for metrics, the Fluent
//! Bit endpoint (`json_lines`) for logs, and the scripted [`ApiServer`] for
//! the watch. Time is compressed: a backdated history is written in time
//! order, in chunks, as fast as kube-insight takes it.

use crate::apiserver::ApiServer;
use crate::world::{Batch, Op, World, STEP_MS};
use kube_insight_sources::prometheus::remote_write::encode;
use std::time::Duration;

/// Errors of playing into kube-insight.
#[derive(Debug, thiserror::Error)]
pub enum PlayError {
    #[error("POST {url}: {source}")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("POST {url} answered {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("encoding a remote-write body: {0}")]
    Encode(#[from] kube_insight_sources::prometheus::remote_write::EncodeError),
}

/// Where and how to send.
pub struct Player {
    http: reqwest::Client,
    /// The ingest listener's base URL (`http://127.0.0.1:8081`).
    pub ingest: String,
    /// Bearer token of the ingest endpoints, if they need one.
    pub token: Option<String>,
    pub api: ApiServer,
    /// Samples sent so far.
    pub samples: u64,
    pub log_records: u64,
    pub changes: u64,
}

/// The kinds the scripted API server serves, for `KUBE_INSIGHT_EVENTS_KINDS`.
pub const WATCH_KINDS: &str = "v1/Event,apps/v1/Deployment,apps/v1/StatefulSet,apps/v1/ReplicaSet,v1/Pod,v1/Service,networking.k8s.io/v1/NetworkPolicy,autoscaling/v2/HorizontalPodAutoscaler,policy/v1/PodDisruptionBudget,v1/ConfigMap,v1/Node";

/// The plurals of [`WATCH_KINDS`].
pub const WATCH_PLURALS: [&str; 11] = [
    "events",
    "deployments",
    "statefulsets",
    "replicasets",
    "pods",
    "services",
    "networkpolicies",
    "horizontalpodautoscalers",
    "poddisruptionbudgets",
    "configmaps",
    "nodes",
];

impl Player {
    pub fn new(ingest: &str, token: Option<String>, api: ApiServer) -> Player {
        Player {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap_or_default(),
            ingest: ingest.trim_end_matches('/').to_string(),
            token,
            api,
            samples: 0,
            log_records: 0,
            changes: 0,
        }
    }

    /// Sends the changes due by `t` to the API server.
    pub fn apply_changes(&mut self, world: &mut World, t: i64) {
        for op in world.changes_until(t) {
            self.changes += 1;
            match op {
                Op::Apply(plural, o) => {
                    self.api.apply(plural, o);
                }
                Op::Delete(plural, o) => self.api.delete(plural, &o),
            }
        }
    }

    /// Plays the scrapes from `from` to `to` (inclusive, every `STEP_MS`),
    /// `chunk` scrapes per request, changes applied as their time passes.
    pub async fn play(
        &mut self,
        world: &mut World,
        from: i64,
        to: i64,
        chunk: usize,
    ) -> Result<(), PlayError> {
        let mut t = from;
        while t <= to {
            let mut batch = Batch::default();
            let mut last = t;
            for _ in 0..chunk.max(1) {
                if t > to {
                    break;
                }
                world.step(t, &mut batch);
                last = t;
                t += STEP_MS;
            }
            self.send(&mut batch).await?;
            self.apply_changes(world, last);
        }
        Ok(())
    }

    /// Sends one batch: metrics by remote write, logs to Fluent Bit.
    pub async fn send(&mut self, batch: &mut Batch) -> Result<(), PlayError> {
        let series = batch.take_series();
        for part in series.chunks(4000) {
            self.samples += part.iter().map(|s| s.samples.len() as u64).sum::<u64>();
            let body = encode(part, &[])?;
            self.post(
                "/ingest/prometheus/api/v1/write",
                body,
                &[
                    ("content-encoding", "snappy"),
                    ("content-type", "application/x-protobuf"),
                    ("x-prometheus-remote-write-version", "0.1.0"),
                ],
            )
            .await?;
        }
        for part in batch.logs.chunks(2000) {
            self.log_records += part.len() as u64;
            let mut body = String::new();
            for r in part {
                body.push_str(&r.to_string());
                body.push('\n');
            }
            self.post(
                "/ingest/fluent-bit",
                body.into_bytes(),
                &[("content-type", "application/json")],
            )
            .await?;
        }
        batch.logs.clear();
        Ok(())
    }

    async fn post(
        &self,
        path: &str,
        body: Vec<u8>,
        headers: &[(&str, &str)],
    ) -> Result<(), PlayError> {
        let url = format!("{}{path}", self.ingest);
        let mut delay = Duration::from_millis(100);
        loop {
            let mut req = self.http.post(&url).body(body.clone());
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            if let Some(t) = &self.token {
                req = req.bearer_auth(t);
            }
            let r = req.send().await.map_err(|source| PlayError::Http {
                url: url.clone(),
                source,
            })?;
            let status = r.status().as_u16();
            if (200..300).contains(&status) {
                return Ok(());
            }
            // Pushed back: retry like Prometheus does.
            if (status == 429 || status == 503) && delay < Duration::from_secs(10) {
                tokio::time::sleep(delay).await;
                delay *= 2;
                continue;
            }
            return Err(PlayError::Status {
                url,
                status,
                body: r.text().await.unwrap_or_default(),
            });
        }
    }
}
