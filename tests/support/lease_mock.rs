//! A mock `coordination.k8s.io/v1` Lease API server on loopback: `GET`,
//! `POST` and `PUT` of one namespace's Leases with resourceVersion conflicts
//! (409 `Conflict` / `AlreadyExists`), one listener per candidate so a test
//! can partition one candidate (its requests hang), and a log of the writes
//! it applied. Used by the election tests
//! (`bridges/sources/tests/leader_lease.rs`) and the end to end test of the
//! collector replicas (`tests/e2e_collector_ha.rs`).

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Instant;

pub const NS: &str = "kube-insight";
pub const LEASE: &str = "kube-insight-collector";

/// One accepted write, in the order the server applied it.
#[derive(Debug, Clone)]
pub struct Write {
    pub at: Instant,
    /// The listener (candidate) it came through.
    pub via: String,
    pub holder: Option<String>,
    pub transitions: i64,
}

#[derive(Default)]
struct MockState {
    lease: Option<Value>,
    rv: u64,
    /// Candidates whose requests hang (a network partition).
    partitioned: HashSet<String>,
    writes: Vec<Write>,
    conflicts: usize,
}

#[derive(Clone, Default)]
pub struct LeaseMock {
    state: Arc<Mutex<MockState>>,
}

#[derive(Clone)]
struct Conn {
    mock: LeaseMock,
    via: String,
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response {
    let body = json!({
        "kind": "Status", "apiVersion": "v1", "status": "Failure",
        "message": message, "reason": reason, "code": code.as_u16(),
    });
    (
        code,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn ok(code: StatusCode, v: &Value) -> Response {
    (code, [("content-type", "application/json")], v.to_string()).into_response()
}

impl LeaseMock {
    /// A listener for candidate `via`; returns a kubeconfig for it.
    pub async fn endpoint(&self, via: &str, dir: &std::path::Path) -> std::path::PathBuf {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let path = "/apis/coordination.k8s.io/v1/namespaces/{ns}/leases";
        let app = Router::new()
            .route(path, post(create))
            .route(&format!("{path}/{{name}}"), get(read).put(replace))
            .with_state(Conn {
                mock: self.clone(),
                via: via.to_string(),
            });
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let p = dir.join(format!("kubeconfig-{via}"));
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: mock\n  cluster:\n    server: {url}\ncontexts:\n- name: mock\n  context:\n    cluster: mock\n    user: mock\ncurrent-context: mock\nusers:\n- name: mock\n  user:\n    token: mock-token\n"
        );
        std::fs::write(&p, text).unwrap();
        p
    }

    pub fn partition(&self, via: &str, on: bool) {
        let mut s = self.state.lock().unwrap();
        if on {
            s.partitioned.insert(via.to_string());
        } else {
            s.partitioned.remove(via);
        }
    }

    pub fn writes(&self) -> Vec<Write> {
        self.state.lock().unwrap().writes.clone()
    }

    pub fn holder(&self) -> Option<String> {
        let s = self.state.lock().unwrap();
        s.lease
            .as_ref()
            .and_then(|l| l.pointer("/spec/holderIdentity"))
            .and_then(Value::as_str)
            .map(str::to_string)
    }

    pub fn transitions(&self) -> i64 {
        let s = self.state.lock().unwrap();
        s.lease
            .as_ref()
            .and_then(|l| l.pointer("/spec/leaseTransitions"))
            .and_then(Value::as_i64)
            .unwrap_or(0)
    }

    /// Seeds a Lease held by `holder` (a dead process).
    pub fn seed(&self, holder: &str, transitions: i64) {
        let mut s = self.state.lock().unwrap();
        s.rv += 1;
        s.lease = Some(json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": LEASE, "namespace": NS, "resourceVersion": s.rv.to_string()},
            "spec": {
                "holderIdentity": holder, "leaseDurationSeconds": 1,
                "renewTime": "2024-05-31T10:00:00.000000Z", "leaseTransitions": transitions,
            },
        }));
    }

    /// Hangs while `via` is partitioned (checked when the request arrives).
    async fn gate(&self, via: &str) {
        let cut = self.state.lock().unwrap().partitioned.contains(via);
        if cut {
            std::future::pending::<()>().await;
        }
    }

    /// Applies `body` as the new Lease; `expect_rv` None: a create.
    fn write(&self, via: &str, mut body: Value, create: bool) -> Response {
        let mut s = self.state.lock().unwrap();
        if create && s.lease.is_some() {
            s.conflicts += 1;
            return status(
                StatusCode::CONFLICT,
                "AlreadyExists",
                "leases already exists",
            );
        }
        if !create {
            let Some(cur) = &s.lease else {
                return status(StatusCode::NOT_FOUND, "NotFound", "leases not found");
            };
            let have = cur.pointer("/metadata/resourceVersion").cloned();
            let sent = body.pointer("/metadata/resourceVersion").cloned();
            if have != sent {
                s.conflicts += 1;
                return status(
                    StatusCode::CONFLICT,
                    "Conflict",
                    "the object has been modified; please apply your changes to the latest version and try again",
                );
            }
        }
        s.rv += 1;
        body["metadata"]["resourceVersion"] = json!(s.rv.to_string());
        let holder = body
            .pointer("/spec/holderIdentity")
            .and_then(Value::as_str)
            .map(str::to_string);
        let transitions = body
            .pointer("/spec/leaseTransitions")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        s.writes.push(Write {
            at: Instant::now(),
            via: via.to_string(),
            holder,
            transitions,
        });
        s.lease = Some(body.clone());
        ok(
            if create {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            },
            &body,
        )
    }
}

async fn read(State(c): State<Conn>, Path((_ns, _name)): Path<(String, String)>) -> Response {
    c.mock.gate(&c.via).await;
    let lease = c.mock.state.lock().unwrap().lease.clone();
    match lease {
        Some(l) => ok(StatusCode::OK, &l),
        None => status(StatusCode::NOT_FOUND, "NotFound", "leases not found"),
    }
}

async fn create(State(c): State<Conn>, Path(_ns): Path<String>, body: Bytes) -> Response {
    c.mock.gate(&c.via).await;
    match serde_json::from_slice::<Value>(&body) {
        Ok(v) => c.mock.write(&c.via, v, true),
        Err(e) => status(StatusCode::BAD_REQUEST, "BadRequest", &e.to_string()),
    }
}

async fn replace(
    State(c): State<Conn>,
    Path((_ns, _name)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    c.mock.gate(&c.via).await;
    match serde_json::from_slice::<Value>(&body) {
        Ok(v) => c.mock.write(&c.via, v, false),
        Err(e) => status(StatusCode::BAD_REQUEST, "BadRequest", &e.to_string()),
    }
}
