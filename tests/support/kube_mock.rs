//! A mock Kubernetes API server on a loopback port that speaks the list and
//! watch protocol (paged lists with a resourceVersion, newline-delimited
//! watch streams with ADDED/MODIFIED/DELETED/BOOKMARK/ERROR, `410 Gone` for
//! compacted resourceVersions), scripted by the test. Used by the events
//! watch tests (`bridges/sources/tests/kube_watch_mock.rs`) and the end to
//! end test (`tests/e2e_events.rs`).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

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
    /// (plural, uid) → object
    objects: BTreeMap<(String, String), Value>,
    log: Vec<Entry>,
    /// Watches from a resourceVersion below this get 410 Gone.
    compacted_below: u64,
    /// While set, changes are not sent to open watches (a network gap).
    hidden: bool,
    /// Closes open watch streams when bumped.
    generation: u64,
    /// Every request: "LIST plural" or "WATCH plural rv".
    requests: Vec<String>,
    /// Answer watches with an HTTP 410 instead of an ERROR event.
    gone_as_http: bool,
}

/// The mock server; dropped with the test.
#[derive(Clone)]
pub struct KubeMock {
    inner: Arc<Mutex<Inner>>,
    tx: broadcast::Sender<(u64, Entry)>,
    pub url: String,
}

impl KubeMock {
    pub async fn start() -> KubeMock {
        let (tx, _) = broadcast::channel(100_000);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let mock = KubeMock {
            inner: Arc::new(Mutex::new(Inner {
                rv: 1000,
                ..Default::default()
            })),
            tx,
            url,
        };
        let app = Router::new()
            .route("/api/v1/{plural}", get(core_handler))
            .route("/apis/{group}/{version}/{plural}", get(group_handler))
            .with_state(mock.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        mock
    }

    /// A kubeconfig for this server, written to `dir/kubeconfig`.
    pub fn kubeconfig(&self, dir: &std::path::Path) -> std::path::PathBuf {
        let p = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: mock\n  cluster:\n    server: {}\ncontexts:\n- name: mock\n  context:\n    cluster: mock\n    user: mock\ncurrent-context: mock\nusers:\n- name: mock\n  user:\n    token: mock-token\n",
            self.url
        );
        std::fs::write(&p, text).unwrap();
        p
    }

    fn push(&self, inner: &mut Inner, plural: &str, kind: &'static str, object: Value) {
        let e = Entry {
            rv: inner.rv,
            plural: plural.to_string(),
            kind,
            object,
        };
        inner.log.push(e.clone());
        if !inner.hidden {
            let _ = self.tx.send((inner.generation, e));
        }
    }

    /// Creates or updates an object (by `metadata.uid`); returns its new RV.
    pub fn apply(&self, plural: &str, mut object: Value) -> u64 {
        let mut inner = self.inner.lock().unwrap();
        inner.rv += 1;
        let rv = inner.rv;
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        let uid = object["metadata"]["uid"].as_str().unwrap().to_string();
        let key = (plural.to_string(), uid);
        let kind = if inner.objects.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        inner.objects.insert(key, object.clone());
        self.push(&mut inner, plural, kind, object);
        rv
    }

    /// Deletes an object by uid.
    pub fn delete(&self, plural: &str, uid: &str) {
        let mut inner = self.inner.lock().unwrap();
        inner.rv += 1;
        let rv = inner.rv;
        if let Some(mut o) = inner.objects.remove(&(plural.to_string(), uid.to_string())) {
            o["metadata"]["resourceVersion"] = json!(rv.to_string());
            self.push(&mut inner, plural, "DELETED", o);
        }
    }

    /// Sends a bookmark to the watches of `plural`; returns its RV.
    pub fn bookmark(&self, plural: &str) -> u64 {
        let mut inner = self.inner.lock().unwrap();
        inner.rv += 1;
        let rv = inner.rv;
        let o = json!({"kind": "Bookmark", "apiVersion": "v1", "metadata": {"resourceVersion": rv.to_string()}});
        self.push(&mut inner, plural, "BOOKMARK", o);
        rv
    }

    /// Sends a raw watch line (`{"type":…,"object":…}`) as the next event
    /// of `plural`'s watches, and keeps ADDED/MODIFIED objects for lists.
    pub fn raw_event(&self, plural: &str, line: &Value) {
        let kind: &'static str = match line["type"].as_str().unwrap() {
            "ADDED" => "ADDED",
            "MODIFIED" => "MODIFIED",
            "DELETED" => "DELETED",
            "BOOKMARK" => "BOOKMARK",
            _ => "ERROR",
        };
        let mut inner = self.inner.lock().unwrap();
        let obj = line["object"].clone();
        let rv: u64 = obj["metadata"]["resourceVersion"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or(inner.rv + 1);
        inner.rv = inner.rv.max(rv);
        if let Some(uid) = obj["metadata"]["uid"].as_str() {
            if kind == "DELETED" {
                inner.objects.remove(&(plural.to_string(), uid.to_string()));
            } else if kind != "BOOKMARK" {
                inner
                    .objects
                    .insert((plural.to_string(), uid.to_string()), obj.clone());
            }
        }
        let e = Entry {
            rv,
            plural: plural.to_string(),
            kind,
            object: obj,
        };
        inner.log.push(e.clone());
        if !inner.hidden {
            let _ = self.tx.send((inner.generation, e));
        }
    }

    /// While hidden, changes reach lists but not open watches.
    pub fn hide(&self, hidden: bool) {
        self.inner.lock().unwrap().hidden = hidden;
    }

    /// Closes every open watch stream (a disconnect).
    pub fn disconnect(&self) {
        self.inner.lock().unwrap().generation += 1;
        let _ = self.tx.send((
            u64::MAX,
            Entry {
                rv: 0,
                plural: String::new(),
                kind: "CLOSE",
                object: Value::Null,
            },
        ));
    }

    /// Forgets history: watches from an older RV get 410 Gone; open
    /// watches are closed.
    pub fn compact(&self, gone_as_http: bool) {
        {
            let mut inner = self.inner.lock().unwrap();
            inner.compacted_below = inner.rv + 1;
            inner.gone_as_http = gone_as_http;
        }
        self.disconnect();
    }

    pub fn requests(&self) -> Vec<String> {
        self.inner.lock().unwrap().requests.clone()
    }

    /// The environment of a collector (targets `events,api`, cluster
    /// `prod`) watching `kinds` (`KUBE_INSIGHT_EVENTS_KINDS`) on this
    /// server, its kubeconfig written to `dir`. The events retention is a
    /// century: the scripted objects are dated 2024, past the default 90 d
    /// that a maintenance pass a minute in would apply.
    pub fn collector_env(&self, dir: &std::path::Path, kinds: &str) -> Vec<(&'static str, String)> {
        vec![
            ("KUBE_INSIGHT_TARGETS", "events,api".to_string()),
            ("KUBE_INSIGHT_CLUSTER", "prod".to_string()),
            ("KUBE_INSIGHT_RETENTION_EVENTS", "36500d".to_string()),
            (
                "KUBE_INSIGHT_KUBECONFIG",
                self.kubeconfig(dir).display().to_string(),
            ),
            ("KUBE_INSIGHT_EVENTS_KINDS", kinds.to_string()),
        ]
    }

    /// Waits until every one of `plurals` is watched (listed, then the
    /// watch opened): changes applied after it reach the watch as changes,
    /// not as the state of a first list. Panics after 30 s.
    pub async fn wait_watched(&self, plurals: &[&str]) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let r = self.requests();
            if plurals
                .iter()
                .all(|p| r.iter().any(|x| x.starts_with(&format!("WATCH {p} "))))
            {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no watch of every one of {plurals:?} within 30 s; requests: {r:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    pub fn current_rv(&self) -> u64 {
        self.inner.lock().unwrap().rv
    }
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
    State(m): State<KubeMock>,
    Path(plural): Path<String>,
    RawQuery(q): RawQuery,
) -> Response {
    serve(m, plural, q).await
}

async fn group_handler(
    State(m): State<KubeMock>,
    Path((_g, _v, plural)): Path<(String, String, String)>,
    RawQuery(q): RawQuery,
) -> Response {
    serve(m, plural, q).await
}

async fn serve(m: KubeMock, plural: String, q: Option<String>) -> Response {
    let params = query(&q);
    if params.get("watch").map(String::as_str) == Some("true")
        || params.get("watch").map(String::as_str) == Some("1")
    {
        let from: u64 = params
            .get("resourceVersion")
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        return watch(m, plural, from).await;
    }
    let mut inner = m.inner.lock().unwrap();
    inner.requests.push(format!("LIST {plural}"));
    let items: Vec<Value> = inner
        .objects
        .iter()
        .filter(|((p, _), _)| *p == plural)
        .map(|(_, o)| o.clone())
        .collect();
    let body = json!({"kind": "List", "apiVersion": "v1", "metadata": {"resourceVersion": inner.rv.to_string(), "continue": ""}, "items": items});
    (
        StatusCode::OK,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn watch(m: KubeMock, plural: String, from: u64) -> Response {
    let gone = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                      "message": format!("too old resource version: {from}"), "reason": "Expired", "code": 410});
    let mut rx = m.tx.subscribe();
    let (backlog, generation) = {
        let mut inner = m.inner.lock().unwrap();
        inner.requests.push(format!("WATCH {plural} {from}"));
        if from < inner.compacted_below {
            if inner.gone_as_http {
                return (
                    StatusCode::GONE,
                    [("content-type", "application/json")],
                    gone.to_string(),
                )
                    .into_response();
            }
            let line = format!("{}\n", json!({"type": "ERROR", "object": gone}));
            return (StatusCode::OK, [("content-type", "application/json")], line).into_response();
        }
        let backlog: Vec<Entry> = if inner.hidden {
            Vec::new()
        } else {
            inner
                .log
                .iter()
                .filter(|e| e.plural == plural && e.rv > from)
                .cloned()
                .collect()
        };
        (backlog, inner.generation)
    };
    let (tx, rx_body) = tokio::sync::mpsc::channel::<Result<String, std::io::Error>>(1024);
    tokio::spawn(async move {
        let mut last = from;
        for e in backlog {
            last = last.max(e.rv);
            if tx
                .send(Ok(format!(
                    "{}\n",
                    json!({"type": e.kind, "object": e.object})
                )))
                .await
                .is_err()
            {
                return;
            }
        }
        loop {
            match rx.recv().await {
                Ok((g, e)) => {
                    if g != generation {
                        return;
                    }
                    if e.plural != plural || e.rv <= last && e.kind != "BOOKMARK" {
                        continue;
                    }
                    last = last.max(e.rv);
                    if tx
                        .send(Ok(format!(
                            "{}\n",
                            json!({"type": e.kind, "object": e.object})
                        )))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => return,
            }
        }
    });
    let stream = tokio_stream_compat(rx_body);
    Response::builder()
        .status(StatusCode::OK)
        .header("content-type", "application/json")
        .body(Body::from_stream(stream))
        .unwrap()
}

fn tokio_stream_compat(
    mut rx: tokio::sync::mpsc::Receiver<Result<String, std::io::Error>>,
) -> impl futures::Stream<Item = Result<String, std::io::Error>> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// A Deployment as the API server would hold it.
pub fn deployment(
    ns: &str,
    name: &str,
    uid: &str,
    image: &str,
    replicas: u64,
    manager: &str,
    time: &str,
) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {
            "name": name, "namespace": ns, "uid": uid, "creationTimestamp": "2024-05-31T00:00:00Z", "generation": 1,
            "annotations": {
                "kubectl.kubernetes.io/last-applied-configuration": "{\"spec\":{\"env\":[{\"name\":\"DB_PASSWORD\",\"value\":\"s3cr3t-hunter2\"}]},\"password\":\"s3cr3t-hunter2\"}",
                "argocd.argoproj.io/tracking-id": format!("{name}:apps/Deployment:{ns}/{name}")
            },
            "managedFields": [{"manager": manager, "operation": "Apply", "apiVersion": "apps/v1", "time": time, "fieldsType": "FieldsV1",
                "fieldsV1": {"f:spec": {"f:replicas": {}, "f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"app\"}": {"f:image": {}, "f:env": {}}}}}}}}]
        },
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}}, "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [
            {"name": "app", "image": image, "env": [{"name": "DB_PASSWORD", "value": "s3cr3t-hunter2"}, {"name": "LOG_LEVEL", "value": "info"}]}]}}},
        "status": {"replicas": replicas, "readyReplicas": replicas, "observedGeneration": 1}
    })
}

/// A ConfigMap whose data must never be stored in clear.
pub fn configmap(ns: &str, name: &str, uid: &str, value: &str, time: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": ns, "uid": uid, "creationTimestamp": "2024-05-31T00:00:00Z",
            "managedFields": [{"manager": "kubectl", "operation": "Update", "apiVersion": "v1", "time": time, "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {}}}]},
        "data": {"config.yaml": value}
    })
}
