//! A scripted Kubernetes API server on a loopback port: paged-list-shaped
//! answers with a resourceVersion and newline-delimited watch streams
//! (ADDED/MODIFIED/DELETED/BOOKMARK) from a requested resourceVersion, for
//! every plural under `/api/v1/{plural}` and `/apis/{group}/{version}/{plural}`
//! (unknown plurals are empty lists). The scenario applies objects whose
//! `managedFields` times are the scenario's change times; kube-insight's
//! `events` target watches it through a generated kubeconfig. The shape
//! follows `tests/support/kube_mock.rs`, without its fault injection.
//!
//! Nothing is dropped: every change is kept in a log that each watch stream
//! reads from its resourceVersion on, woken by a `watch` channel.

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Clone, Debug)]
struct Entry {
    rv: u64,
    plural: String,
    kind: &'static str,
    object: Value,
}

#[derive(Default)]
struct Inner {
    rv: u64,
    /// (plural, namespace/name) → object
    objects: BTreeMap<(String, String), Value>,
    log: Vec<Entry>,
    /// Plurals with an open (or once opened) watch.
    watched: BTreeSet<String>,
}

/// The server; it stops when the runtime that started it ends.
#[derive(Clone)]
pub struct ApiServer {
    inner: Arc<Mutex<Inner>>,
    changed: Arc<tokio::sync::watch::Sender<u64>>,
    pub url: String,
}

/// The server could not bind its port.
#[derive(Debug, thiserror::Error)]
#[error("cannot start the scripted API server on 127.0.0.1: {0}")]
pub struct StartError(#[from] std::io::Error);

impl ApiServer {
    pub async fn start() -> Result<ApiServer, StartError> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let (tx, _) = tokio::sync::watch::channel(0);
        let server = ApiServer {
            inner: Arc::new(Mutex::new(Inner {
                rv: 1000,
                ..Default::default()
            })),
            changed: Arc::new(tx),
            url,
        };
        let app = Router::new()
            .route("/api/v1/{plural}", get(core_handler))
            .route("/apis/{group}/{version}/{plural}", get(group_handler))
            .with_state(server.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(server)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A kubeconfig for this server.
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: scenario\n  cluster:\n    server: {}\ncontexts:\n- name: scenario\n  context:\n    cluster: scenario\n    user: scenario\ncurrent-context: scenario\nusers:\n- name: scenario\n  user:\n    token: scenario-token\n",
            self.url
        )
    }

    /// Creates or updates an object (keyed by namespace and name); returns its RV.
    pub fn apply(&self, plural: &str, mut object: Value) -> u64 {
        let mut inner = self.lock();
        inner.rv += 1;
        let rv = inner.rv;
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        let key = (plural.to_string(), object_key(&object));
        let kind = if inner.objects.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        inner.objects.insert(key, object.clone());
        inner.log.push(Entry {
            rv,
            plural: plural.to_string(),
            kind,
            object,
        });
        drop(inner);
        self.changed.send_replace(rv);
        rv
    }

    /// Deletes an object; the last state is sent with a new RV.
    pub fn delete(&self, plural: &str, object: &Value) {
        let mut inner = self.lock();
        let key = (plural.to_string(), object_key(object));
        let Some(mut o) = inner.objects.remove(&key) else {
            return;
        };
        inner.rv += 1;
        let rv = inner.rv;
        o["metadata"]["resourceVersion"] = json!(rv.to_string());
        if let Some(t) = object["metadata"].get("deletionTimestamp") {
            o["metadata"]["deletionTimestamp"] = t.clone();
        }
        inner.log.push(Entry {
            rv,
            plural: plural.to_string(),
            kind: "DELETED",
            object: o,
        });
        drop(inner);
        self.changed.send_replace(rv);
    }

    /// Sends a bookmark at the current RV to every watched plural.
    pub fn bookmark_all(&self) {
        let mut inner = self.lock();
        inner.rv += 1;
        let rv = inner.rv;
        let plurals: Vec<String> = inner.watched.iter().cloned().collect();
        for plural in plurals {
            let o = json!({"kind": "Bookmark", "apiVersion": "v1", "metadata": {"resourceVersion": rv.to_string()}});
            inner.log.push(Entry {
                rv,
                plural,
                kind: "BOOKMARK",
                object: o,
            });
        }
        drop(inner);
        self.changed.send_replace(rv);
    }

    /// Whether every plural in `plurals` has been listed and is watched.
    pub fn watching(&self, plurals: &[&str]) -> bool {
        let inner = self.lock();
        plurals.iter().all(|p| inner.watched.contains(*p))
    }
}

fn object_key(o: &Value) -> String {
    format!(
        "{}/{}",
        o["metadata"]["namespace"].as_str().unwrap_or(""),
        o["metadata"]["name"].as_str().unwrap_or("")
    )
}

fn query(q: &Option<String>) -> BTreeMap<String, String> {
    q.as_deref()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (p.to_string(), String::new()),
        })
        .collect()
}

async fn core_handler(
    State(s): State<ApiServer>,
    Path(plural): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    serve(s, plural, q).await
}

async fn group_handler(
    State(s): State<ApiServer>,
    Path((_g, _v, plural)): Path<(String, String, String)>,
    RawQuery(q): RawQuery,
) -> Response {
    serve(s, plural, q).await
}

fn json_response(body: String) -> Response {
    (StatusCode::OK, [("content-type", "application/json")], body).into_response()
}

async fn serve(s: ApiServer, plural: String, q: Option<String>) -> Response {
    let params = query(&q);
    if matches!(params.get("watch").map(String::as_str), Some("true" | "1")) {
        let from: u64 = params
            .get("resourceVersion")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        return watch(s, plural, from);
    }
    let inner = s.lock();
    let items: Vec<Value> = inner
        .objects
        .iter()
        .filter(|((p, _), _)| *p == plural)
        .map(|(_, o)| o.clone())
        .collect();
    json_response(
        json!({"kind": "List", "apiVersion": "v1",
               "metadata": {"resourceVersion": inner.rv.to_string(), "continue": ""}, "items": items})
        .to_string(),
    )
}

fn watch(s: ApiServer, plural: String, from: u64) -> Response {
    s.lock().watched.insert(plural.clone());
    let mut changed = s.changed.subscribe();
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<String, std::io::Error>>(256);
    tokio::spawn(async move {
        let mut last = from;
        loop {
            let lines: Vec<(u64, String)> = {
                let inner = s.lock();
                let start = inner.log.partition_point(|e| e.rv <= last);
                inner.log[start..]
                    .iter()
                    .filter(|e| e.plural == plural)
                    .map(|e| {
                        (
                            e.rv,
                            format!("{}\n", json!({"type": e.kind, "object": e.object})),
                        )
                    })
                    .collect()
            };
            for (rv, line) in lines {
                last = last.max(rv);
                if tx.send(Ok(line)).await.is_err() {
                    return;
                }
            }
            if changed.changed().await.is_err() {
                return;
            }
        }
    });
    let mut rx = rx;
    let stream = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}
