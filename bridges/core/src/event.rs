//! Kubernetes events and object change history: the data model and the pure
//! functions the `events` target and the store share (no IO).
//!
//! - [`KubeEvent`]: one Kubernetes Event (core/v1 or events.k8s.io/v1 shape,
//!   [`parse_event`]), de-duplicated by uid; each `count` is an occurrence.
//! - Object hygiene ([`sanitize`]): what is kept of a watched object. It
//!   strips `managedFields`, `resourceVersion`, `kubectl.kubernetes.io/last-applied-configuration`
//!   and noisy status (heartbeats, probe times, image lists), keeps replicas,
//!   conditions, phases and image digests, and replaces ConfigMap data and
//!   secret-looking env values with keyed hashes (`hmac-sha256:`, [`hmac_tag`]
//!   under the installation's [`SecretKey`]; rows stored before it hold
//!   `sha256:`). Secrets are refused.
//! - Versions are a full copy plus JSON merge patches (RFC 7386,
//!   [`merge_diff`] / [`merge_apply`]); sanitized objects hold no `null`, so
//!   a merge patch reproduces the next version exactly.
//! - Who made a change ([`attribute`]): the managedFields manager whose
//!   fields the change touched, and GitOps annotations ([`gitops_of`]).
//! - A one-line human summary ([`summarize`]): `image registry.local/shop/api:1.4 →
//!   registry.local/shop/api:1.5 by argocd`; image references stay whole
//!   ([`ImageRef`]).

use crate::time::{format_rfc3339_ms, parse_time_ms};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use thiserror::Error;

/// The annotation `kubectl apply` leaves with the whole applied manifest
/// (passwords included); never stored.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Errors of the pure event functions; messages name the input at fault.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum EventError {
    #[error("event {what}: {reason}")]
    InvalidEvent { what: String, reason: String },
    #[error("object {what}: {reason}")]
    InvalidObject { what: String, reason: String },
    #[error("refusing to store a Secret ({what}): Secrets are never watched")]
    SecretRefused { what: String },
}

/// The object an event is about.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ObjectRef {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub api_version: String,
    pub field_path: String,
}

/// Where an event came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventOrigin {
    Watch,
    KubeEventer,
}

impl EventOrigin {
    pub fn as_str(self) -> &'static str {
        match self {
            EventOrigin::Watch => "watch",
            EventOrigin::KubeEventer => "kube_eventer",
        }
    }
}

/// One Kubernetes Event as stored. `uid` is the event's uid; an event
/// without one (kube-eventer's default body) gets a synthetic uid starting
/// with [`SYNTHETIC_UID_PREFIX`] and is matched against watched events by
/// content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KubeEvent {
    pub cluster: String,
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub reason: String,
    /// `Normal` or `Warning`.
    pub event_type: String,
    pub message: String,
    pub involved: ObjectRef,
    pub source_component: String,
    pub source_host: String,
    /// How many times the event happened so far (at least 1).
    pub count: u64,
    pub first_ms: i64,
    pub last_ms: i64,
    pub resource_version: String,
    pub origin: EventOrigin,
}

pub const SYNTHETIC_UID_PREFIX: &str = "synthetic:";

impl KubeEvent {
    pub fn is_synthetic(&self) -> bool {
        self.uid.starts_with(SYNTHETIC_UID_PREFIX)
    }

    /// A stable uid for an event that has none, from its content (the same
    /// event repeated later gets the same uid and another occurrence).
    pub fn synthetic_uid(
        kind: &str,
        namespace: &str,
        name: &str,
        reason: &str,
        message: &str,
    ) -> String {
        let mut h = Sha256::new();
        for p in [kind, namespace, name, reason, message] {
            h.update((p.len() as u64).to_le_bytes());
            h.update(p.as_bytes());
        }
        format!("{SYNTHETIC_UID_PREFIX}{}", &hex(&h.finalize())[..32])
    }
}

fn s(v: &Value, path: &[&str]) -> String {
    let mut cur = v;
    for p in path {
        match cur.get(p) {
            Some(x) => cur = x,
            None => return String::new(),
        }
    }
    match cur {
        Value::String(x) => x.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => String::new(),
    }
}

fn time_at(v: &Value, path: &[&str]) -> Option<i64> {
    let t = s(v, path);
    if t.is_empty() || t.starts_with("0001-01-01") {
        return None;
    }
    parse_time_ms(&t).ok()
}

fn u64_at(v: &Value, path: &[&str]) -> Option<u64> {
    let mut cur = v;
    for p in path {
        cur = cur.get(p)?;
    }
    match cur {
        Value::Number(n) => n.as_u64(),
        Value::String(x) => x.trim().parse().ok(),
        _ => None,
    }
}

/// Parses a Kubernetes Event in the core/v1 shape (`involvedObject`,
/// `message`, `count`, `firstTimestamp`…) or the events.k8s.io/v1 shape
/// (`regarding`, `note`, `deprecatedCount`, `series`, `eventTime`…). The
/// cluster is the caller's. `now_ms` stands in when the event has no time.
pub fn parse_event(
    obj: &Value,
    cluster: &str,
    origin: EventOrigin,
    now_ms: i64,
) -> Result<KubeEvent, EventError> {
    if !obj.is_object() {
        return Err(EventError::InvalidEvent {
            what: "body".into(),
            reason: "not a JSON object".into(),
        });
    }
    let name = s(obj, &["metadata", "name"]);
    let namespace = s(obj, &["metadata", "namespace"]);
    let involved_v = obj
        .get("involvedObject")
        .or_else(|| obj.get("regarding"))
        .cloned()
        .unwrap_or(Value::Null);
    let involved = ObjectRef {
        kind: s(&involved_v, &["kind"]),
        namespace: s(&involved_v, &["namespace"]),
        name: s(&involved_v, &["name"]),
        uid: s(&involved_v, &["uid"]),
        api_version: s(&involved_v, &["apiVersion"]),
        field_path: s(&involved_v, &["fieldPath"]),
    };
    let reason = s(obj, &["reason"]);
    let mut message = s(obj, &["message"]);
    if message.is_empty() {
        message = s(obj, &["note"]);
    }
    let series_count = u64_at(obj, &["series", "count"]);
    let count = series_count
        .or_else(|| u64_at(obj, &["count"]))
        .or_else(|| u64_at(obj, &["deprecatedCount"]))
        .unwrap_or(1)
        .max(1);
    let event_time = time_at(obj, &["eventTime"]);
    let first_ms = time_at(obj, &["firstTimestamp"])
        .or_else(|| time_at(obj, &["deprecatedFirstTimestamp"]))
        .or(event_time)
        .or_else(|| time_at(obj, &["metadata", "creationTimestamp"]));
    let last_ms = time_at(obj, &["series", "lastObservedTime"])
        .or_else(|| time_at(obj, &["lastTimestamp"]))
        .or_else(|| time_at(obj, &["deprecatedLastTimestamp"]))
        .or(event_time)
        .or(first_ms);
    let (first_ms, last_ms) = match (first_ms, last_ms) {
        (Some(f), Some(l)) => (f.min(l), l.max(f)),
        (Some(f), None) | (None, Some(f)) => (f, f),
        (None, None) => (now_ms, now_ms),
    };
    let mut source_component = s(obj, &["source", "component"]);
    if source_component.is_empty() {
        source_component = s(obj, &["deprecatedSource", "component"]);
    }
    if source_component.is_empty() {
        source_component = s(obj, &["reportingComponent"]);
    }
    if source_component.is_empty() {
        source_component = s(obj, &["reportingController"]);
    }
    let mut source_host = s(obj, &["source", "host"]);
    if source_host.is_empty() {
        source_host = s(obj, &["deprecatedSource", "host"]);
    }
    if source_host.is_empty() {
        source_host = s(obj, &["reportingInstance"]);
    }
    let mut uid = s(obj, &["metadata", "uid"]);
    if uid.is_empty() {
        if reason.is_empty() && message.is_empty() {
            return Err(EventError::InvalidEvent {
                what: if name.is_empty() {
                    "without a name".into()
                } else {
                    format!("{namespace}/{name}")
                },
                reason: "has no uid, reason or message".into(),
            });
        }
        uid = KubeEvent::synthetic_uid(
            &involved.kind,
            &involved.namespace,
            &involved.name,
            &reason,
            &message,
        );
    }
    Ok(KubeEvent {
        cluster: cluster.to_string(),
        uid,
        namespace,
        name,
        reason,
        event_type: s(obj, &["type"]),
        message,
        involved,
        source_component,
        source_host,
        count,
        first_ms,
        last_ms,
        resource_version: s(obj, &["metadata", "resourceVersion"]),
        origin,
    })
}

// ---------------------------------------------------------------------------
// Object identity and hygiene

/// A watched kind: `group` is empty for the core group.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct KindRef {
    pub group: String,
    pub version: String,
    pub kind: String,
}

/// Identity fields of a raw object.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ObjectMetaLite {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub resource_version: String,
    pub creation_ms: Option<i64>,
    pub deletion_ms: Option<i64>,
}

impl ObjectMetaLite {
    pub fn of(obj: &Value) -> Result<ObjectMetaLite, EventError> {
        let m = ObjectMetaLite {
            kind: s(obj, &["kind"]),
            namespace: s(obj, &["metadata", "namespace"]),
            name: s(obj, &["metadata", "name"]),
            uid: s(obj, &["metadata", "uid"]),
            resource_version: s(obj, &["metadata", "resourceVersion"]),
            creation_ms: time_at(obj, &["metadata", "creationTimestamp"]),
            deletion_ms: time_at(obj, &["metadata", "deletionTimestamp"]),
        };
        if m.name.is_empty() || m.uid.is_empty() {
            return Err(EventError::InvalidObject {
                what: format!("{} {}/{}", m.kind, m.namespace, m.name),
                reason: "metadata.name and metadata.uid are required".into(),
            });
        }
        Ok(m)
    }
}

/// One managedFields entry, kept only to attribute changes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldManager {
    pub manager: String,
    pub operation: String,
    pub subresource: String,
    pub time_ms: Option<i64>,
    /// `fieldsV1` as sent (`{"f:spec": {"f:replicas": {}}}`).
    pub fields: Value,
}

/// The managedFields of a raw object.
pub fn managers_of(obj: &Value) -> Vec<FieldManager> {
    obj.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|m| FieldManager {
                    manager: s(m, &["manager"]),
                    operation: s(m, &["operation"]),
                    subresource: s(m, &["subresource"]),
                    time_ms: time_at(m, &["time"]),
                    fields: m.get("fieldsV1").cloned().unwrap_or(Value::Null),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The sha256 of a value: `sha256:<hex>`, how versions stored before the
/// keyed hash hold secrets (a weak value is a dictionary lookup away).
pub fn sha256_tag(data: &[u8]) -> String {
    format!("{LEGACY_HASH_PREFIX}{}", hex(&Sha256::digest(data)))
}

/// The prefix of secrets hashed without a key (old rows).
pub const LEGACY_HASH_PREFIX: &str = "sha256:";
/// The prefix of secrets hashed with the installation's key.
pub const KEYED_HASH_PREFIX: &str = "hmac-sha256:";

/// The per-installation key of the secret hashes: created once by the
/// store (`schema apply` or the first start) and kept there, so equal
/// values hash equal across versions and processes while a stored hash
/// reveals nothing without the key.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretKey([u8; 32]);

impl SecretKey {
    pub const LEN: usize = 32;

    /// A key from its stored bytes; `None` unless exactly 32.
    pub fn from_bytes(b: &[u8]) -> Option<SecretKey> {
        <[u8; 32]>::try_from(b).ok().map(SecretKey)
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

/// HMAC-SHA256 (RFC 2104) of `data` under `key`: `hmac-sha256:<hex>`, what
/// is stored in place of a secret.
pub fn hmac_tag(key: &SecretKey, data: &[u8]) -> String {
    const BLOCK: usize = 64;
    let mut ipad = [0x36u8; BLOCK];
    let mut opad = [0x5cu8; BLOCK];
    for (i, k) in key.0.iter().enumerate() {
        ipad[i] ^= k;
        opad[i] ^= k;
    }
    let inner = Sha256::new()
        .chain_update(ipad)
        .chain_update(data)
        .finalize();
    let outer = Sha256::new()
        .chain_update(opad)
        .chain_update(inner)
        .finalize();
    format!("{KEYED_HASH_PREFIX}{}", hex(&outer))
}

/// `prev` with every unkeyed hash (`sha256:`) replaced by the keyed hash
/// `cur` holds at the same place: the two cannot be compared, so a change
/// of scheme is not a change of value. `None` when there is none.
pub fn adopt_rekeyed_hashes(prev: &Value, cur: &Value) -> Option<Value> {
    fn walk(p: &mut Value, c: &Value, n: &mut usize) {
        match (p, c) {
            (Value::String(a), Value::String(b))
                if a.starts_with(LEGACY_HASH_PREFIX) && b.starts_with(KEYED_HASH_PREFIX) =>
            {
                *a = b.clone();
                *n += 1;
            }
            (Value::Object(a), Value::Object(b)) => {
                for (k, v) in a.iter_mut() {
                    if let Some(bv) = b.get(k) {
                        walk(v, bv, n);
                    }
                }
            }
            (Value::Array(a), Value::Array(b)) => {
                for (v, bv) in a.iter_mut().zip(b) {
                    walk(v, bv, n);
                }
            }
            _ => {}
        }
    }
    let mut out = prev.clone();
    let mut n = 0;
    walk(&mut out, cur, &mut n);
    (n > 0).then_some(out)
}

fn hex(b: &[u8]) -> String {
    const H: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(b.len() * 2);
    for &x in b {
        out.push(H[(x >> 4) as usize] as char);
        out.push(H[(x & 15) as usize] as char);
    }
    out
}

/// Whether an environment variable's name looks like it holds a secret.
pub fn is_secret_name(name: &str) -> bool {
    let n = name.to_ascii_uppercase();
    const WORDS: &[&str] = &[
        "PASSWORD",
        "PASSWD",
        "PWD",
        "SECRET",
        "TOKEN",
        "APIKEY",
        "API_KEY",
        "ACCESS_KEY",
        "PRIVATE_KEY",
        "CREDENTIAL",
        "AUTH",
        "DSN",
        "CONNECTION_STRING",
        "CONN_STR",
        "SESSION_KEY",
        "SIGNING_KEY",
        "ENCRYPTION_KEY",
    ];
    WORDS.iter().any(|w| n.contains(w)) || n.ends_with("_KEY") || n == "KEY"
}

/// Keeps what matters of a watched object; see the module docs. The object
/// is a raw API object (kind set or given by `kind`).
pub fn sanitize(kind: &str, obj: &Value, key: &SecretKey) -> Result<Value, EventError> {
    let kind = if kind.is_empty() {
        obj.get("kind").and_then(Value::as_str).unwrap_or("")
    } else {
        kind
    };
    if kind == "Secret" {
        return Err(EventError::SecretRefused {
            what: format!(
                "{}/{}",
                s(obj, &["metadata", "namespace"]),
                s(obj, &["metadata", "name"])
            ),
        });
    }
    let mut o = obj.clone();
    let Some(root) = o.as_object_mut() else {
        return Err(EventError::InvalidObject {
            what: kind.to_string(),
            reason: "not a JSON object".into(),
        });
    };
    if !kind.is_empty() {
        root.insert("kind".into(), Value::String(kind.to_string()));
    }
    if let Some(Value::Object(meta)) = root.get_mut("metadata") {
        for k in ["managedFields", "resourceVersion", "generation", "selfLink"] {
            meta.remove(k);
        }
        if let Some(Value::Object(ann)) = meta.get_mut("annotations") {
            ann.remove(LAST_APPLIED);
            if ann.is_empty() {
                meta.remove("annotations");
            }
        }
    }
    if kind == "ConfigMap" {
        for field in ["data", "binaryData"] {
            if let Some(Value::Object(data)) = root.get_mut(field) {
                for (_, v) in data.iter_mut() {
                    let raw = match &*v {
                        Value::String(x) => x.clone(),
                        other => other.to_string(),
                    };
                    *v = Value::String(hmac_tag(key, raw.as_bytes()));
                }
            }
        }
    }
    if let Some(status) = root.remove("status") {
        let kept = keep_status(kind, &status);
        if kept.as_object().is_some_and(|m| !m.is_empty()) {
            root.insert("status".into(), kept);
        }
    }
    hash_secret_env(&mut o, key);
    strip_nulls(&mut o);
    Ok(o)
}

/// Replaces `value` of env entries whose name looks secret, anywhere in the
/// object (pod templates of every workload kind and of custom resources).
fn hash_secret_env(v: &mut Value, key: &SecretKey) {
    match v {
        Value::Object(m) => {
            for (k, child) in m.iter_mut() {
                if k == "env" {
                    if let Value::Array(items) = child {
                        for item in items.iter_mut() {
                            let secret = item
                                .get("name")
                                .and_then(Value::as_str)
                                .is_some_and(is_secret_name);
                            if secret {
                                if let Some(Value::String(val)) = item.get_mut("value") {
                                    *val = hmac_tag(key, val.as_bytes());
                                }
                            }
                        }
                    }
                }
                hash_secret_env(child, key);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|c| hash_secret_env(c, key)),
        _ => {}
    }
}

fn strip_nulls(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, x| !x.is_null());
            m.values_mut().for_each(strip_nulls);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

fn pick(src: &Value, keys: &[&str]) -> Map<String, Value> {
    let mut out = Map::new();
    for k in keys {
        if let Some(v) = src.get(*k) {
            if !v.is_null() {
                out.insert((*k).to_string(), v.clone());
            }
        }
    }
    out
}

/// Conditions without their heartbeat/probe/update times (which change on
/// every status report and are not changes).
fn conditions(src: &Value) -> Option<Value> {
    let a = src.get("conditions")?.as_array()?;
    Some(Value::Array(
        a.iter()
            .map(|c| {
                Value::Object(pick(
                    c,
                    &["type", "status", "reason", "message", "lastTransitionTime"],
                ))
            })
            .collect(),
    ))
}

fn container_statuses(src: &Value, key: &str) -> Option<Value> {
    let a = src.get(key)?.as_array()?;
    let state = |st: Option<&Value>| -> Value {
        let mut out = Map::new();
        if let Some(Value::Object(m)) = st {
            for (k, v) in m {
                let inner = match k.as_str() {
                    "waiting" => pick(v, &["reason"]),
                    "terminated" => pick(v, &["reason", "exitCode"]),
                    _ => Map::new(),
                };
                out.insert(k.clone(), Value::Object(inner));
            }
        }
        Value::Object(out)
    };
    Some(Value::Array(
        a.iter()
            .map(|c| {
                let mut m = pick(c, &["name", "image", "imageID", "restartCount", "ready"]);
                m.insert("state".into(), state(c.get("state")));
                if c.get("lastState")
                    .is_some_and(|x| x.as_object().is_some_and(|o| !o.is_empty()))
                {
                    m.insert("lastState".into(), state(c.get("lastState")));
                }
                Value::Object(m)
            })
            .collect(),
    ))
}

/// The status fields worth a version, per kind.
pub fn keep_status(kind: &str, status: &Value) -> Value {
    let mut out = match kind {
        "Pod" => {
            let mut m = pick(status, &["phase", "reason", "podIP", "hostIP", "qosClass"]);
            for key in [
                "containerStatuses",
                "initContainerStatuses",
                "ephemeralContainerStatuses",
            ] {
                if let Some(v) = container_statuses(status, key) {
                    m.insert(key.into(), v);
                }
            }
            m
        }
        "Node" => {
            let mut m = pick(status, &["capacity", "allocatable", "addresses"]);
            if let Some(info) = status.get("nodeInfo") {
                m.insert(
                    "nodeInfo".into(),
                    Value::Object(pick(
                        info,
                        &[
                            "kubeletVersion",
                            "kernelVersion",
                            "osImage",
                            "containerRuntimeVersion",
                            "architecture",
                        ],
                    )),
                );
            }
            m
        }
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" => pick(
            status,
            &[
                "replicas",
                "readyReplicas",
                "availableReplicas",
                "updatedReplicas",
                "currentReplicas",
                "desiredNumberScheduled",
                "currentNumberScheduled",
                "numberReady",
                "numberAvailable",
                "updatedNumberScheduled",
                "currentRevision",
                "updateRevision",
            ],
        ),
        "Job" => pick(
            status,
            &[
                "active",
                "succeeded",
                "failed",
                "startTime",
                "completionTime",
            ],
        ),
        "CronJob" => Map::new(),
        "HorizontalPodAutoscaler" => pick(status, &["currentReplicas", "desiredReplicas"]),
        "PodDisruptionBudget" => pick(status, &["disruptionsAllowed", "expectedPods"]),
        "Service" | "Ingress" => pick(status, &["loadBalancer"]),
        "Namespace" => pick(status, &["phase"]),
        _ => pick(
            status,
            &[
                "phase",
                "replicas",
                "readyReplicas",
                "availableReplicas",
                "updatedReplicas",
                "currentReplicas",
                "desiredReplicas",
            ],
        ),
    };
    if kind != "CronJob" {
        if let Some(c) = conditions(status) {
            out.insert("conditions".into(), c);
        }
    }
    Value::Object(out)
}

// ---------------------------------------------------------------------------
// JSON merge patch (RFC 7386)

/// The merge patch turning `old` into `new`; `None` when they are equal.
/// Exact for values without `null` (see [`sanitize`]).
pub fn merge_diff(old: &Value, new: &Value) -> Option<Value> {
    if old == new {
        return None;
    }
    match (old, new) {
        (Value::Object(a), Value::Object(b)) => {
            let mut patch = Map::new();
            for (k, va) in a {
                match b.get(k) {
                    None => {
                        patch.insert(k.clone(), Value::Null);
                    }
                    Some(vb) => {
                        if let Some(p) = merge_diff(va, vb) {
                            // An object replacing a non-object must be sent whole.
                            let p = if vb.is_object() && !va.is_object() {
                                vb.clone()
                            } else {
                                p
                            };
                            patch.insert(k.clone(), p);
                        }
                    }
                }
            }
            for (k, vb) in b {
                if !a.contains_key(k) {
                    patch.insert(k.clone(), vb.clone());
                }
            }
            Some(Value::Object(patch))
        }
        _ => Some(new.clone()),
    }
}

/// Applies a merge patch to `target`.
pub fn merge_apply(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(t) = target {
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                let slot = t.entry(k.clone()).or_insert(Value::Null);
                merge_apply(slot, v);
            }
        }
    }
}

/// The paths a merge patch changes, as segments, depth-limited
/// (`["metadata", "annotations", "deployment.kubernetes.io/revision"]`);
/// arrays are leaves (a merge patch replaces them whole).
pub fn patch_segments(patch: &Value, max_depth: usize) -> Vec<Vec<String>> {
    fn walk(v: &Value, prefix: &mut Vec<String>, max: usize, out: &mut Vec<Vec<String>>) {
        match v {
            Value::Object(m) if prefix.len() < max && !m.is_empty() => {
                for (k, c) in m {
                    prefix.push(k.clone());
                    walk(c, prefix, max, out);
                    prefix.pop();
                }
            }
            _ => out.push(prefix.clone()),
        }
    }
    let mut out = Vec::new();
    walk(patch, &mut Vec::new(), max_depth, &mut out);
    out
}

/// The dotted paths a merge patch changes, depth-limited (`spec.replicas`,
/// `spec.template.spec.containers`).
pub fn patch_paths(patch: &Value, max_depth: usize) -> Vec<String> {
    patch_segments(patch, max_depth)
        .into_iter()
        .map(|p| p.join("."))
        .collect()
}

// ---------------------------------------------------------------------------
// Who made a change

/// Does a managedFields `fieldsV1` tree own the path (`["spec","replicas"]`)?
/// A manager owns it when its tree reaches the path's end (it owns the
/// field or fields under it) or a leaf (`{}`) on the way (it owns the whole
/// field).
fn owns(fields: &Value, path: &[String]) -> bool {
    let mut cur = fields;
    for p in path {
        let Some(m) = cur.as_object() else {
            return false;
        };
        if m.is_empty() {
            return true;
        }
        match m.get(&format!("f:{p}")) {
            Some(x) => cur = x,
            None => return false,
        }
    }
    true
}

/// Can this managedFields entry have written the path? Fields under
/// `status` are written through the status subresource (or, for a kind
/// without one, by a manager owning `f:status`); every other field through
/// the main resource or another subresource (`scale`).
fn may_write(m: &FieldManager, path: &[String]) -> bool {
    let status_path = path.first().is_some_and(|f| f == "status");
    let status_entry = m.subresource == "status";
    if status_path {
        status_entry || m.fields.get("f:status").is_some()
    } else {
        !status_entry
    }
}

/// The manager of a change: the managedFields entry whose subresource and
/// `fieldsV1` own the changed paths, the latest one when several do.
/// Spec and metadata paths decide before status paths (a change of both is
/// its spec change); a status-only change is the status writer's. Without
/// an owner, the latest entry that may write those paths (status writers
/// for a status change, others otherwise), else the latest entry.
pub fn attribute(patch: &Value, managers: &[FieldManager]) -> Option<String> {
    if managers.is_empty() {
        return None;
    }
    let paths = patch_segments(patch, 8);
    let (main, status): (Vec<&Vec<String>>, Vec<&Vec<String>>) = paths
        .iter()
        .partition(|p| p.first().is_none_or(|f| f != "status"));
    let latest = |it: &mut dyn Iterator<Item = &FieldManager>| {
        it.max_by_key(|m| m.time_ms.unwrap_or(i64::MIN))
            .map(|m| m.manager.clone())
    };
    let mut best = None;
    for group in [&main, &status] {
        if group.is_empty() {
            continue;
        }
        best = latest(
            &mut managers
                .iter()
                .filter(|m| group.iter().any(|p| may_write(m, p) && owns(&m.fields, p))),
        );
        if best.is_none() {
            best = latest(
                &mut managers
                    .iter()
                    .filter(|m| group.iter().any(|p| may_write(m, p))),
            );
        }
        if best.is_some() {
            break;
        }
    }
    let best = best.or_else(|| latest(&mut managers.iter()))?;
    (!best.is_empty()).then_some(best)
}

/// GitOps provenance from annotations and labels: `argocd app=… rev=…`,
/// `flux kustomization=ns/name rev=…`, `helm release=…`.
pub fn gitops_of(obj: &Value) -> Option<String> {
    let ann = obj
        .pointer("/metadata/annotations")
        .cloned()
        .unwrap_or(Value::Null);
    let lab = obj
        .pointer("/metadata/labels")
        .cloned()
        .unwrap_or(Value::Null);
    let a = |k: &str| ann.get(k).and_then(Value::as_str).map(str::to_string);
    let l = |k: &str| lab.get(k).and_then(Value::as_str).map(str::to_string);
    let rev = a("argocd.argoproj.io/revision")
        .or_else(|| a("kustomize.toolkit.fluxcd.io/revision"))
        .or_else(|| a("helm.toolkit.fluxcd.io/revision"))
        .or_else(|| a("fluxcd.io/sync-checksum"))
        .or_else(|| a("app.kubernetes.io/revision"));
    let with_rev = |s: String| match &rev {
        Some(r) => format!("{s} rev={r}"),
        None => s,
    };
    if let Some(t) = a("argocd.argoproj.io/tracking-id") {
        let app = t.split(':').next().unwrap_or(&t).to_string();
        return Some(with_rev(format!("argocd app={app}")));
    }
    if let Some(app) = l("argocd.argoproj.io/instance").or_else(|| a("argocd.argoproj.io/instance"))
    {
        return Some(with_rev(format!("argocd app={app}")));
    }
    if let Some(n) = l("kustomize.toolkit.fluxcd.io/name") {
        let ns = l("kustomize.toolkit.fluxcd.io/namespace").unwrap_or_default();
        return Some(with_rev(format!("flux kustomization={ns}/{n}")));
    }
    if let Some(n) = l("helm.toolkit.fluxcd.io/name") {
        let ns = l("helm.toolkit.fluxcd.io/namespace").unwrap_or_default();
        return Some(with_rev(format!("flux helmrelease={ns}/{n}")));
    }
    if let Some(n) = a("meta.helm.sh/release-name") {
        return Some(with_rev(format!("helm release={n}")));
    }
    None
}

/// The short name of who made a change, for summaries: the GitOps tool when
/// the manager is its controller, else the manager.
pub fn who_label(manager: Option<&str>, gitops: Option<&str>) -> Option<String> {
    let tool = gitops.and_then(|g| g.split_whitespace().next());
    match (manager, tool) {
        (Some(m), Some(t))
            if m.contains(t)
                || (t == "flux"
                    && (m.contains("kustomize-controller") || m.contains("helm-controller"))) =>
        {
            Some(t.to_string())
        }
        (Some(m), _) if m.starts_with("argocd") => Some("argocd".into()),
        (Some(m), _) => Some(m.to_string()),
        (None, Some(t)) => Some(t.to_string()),
        (None, None) => None,
    }
}

// ---------------------------------------------------------------------------
// Change kinds and summaries

/// What a version records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// First sight of an object that already existed (initial list): a
    /// baseline, not a change; left out of the changes timeline.
    Observed,
    Created,
    Updated,
    Deleted,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Observed => "observed",
            ChangeKind::Created => "created",
            ChangeKind::Updated => "updated",
            ChangeKind::Deleted => "deleted",
        }
    }

    pub fn parse(s: &str) -> Option<ChangeKind> {
        Some(match s {
            "observed" => ChangeKind::Observed,
            "created" => ChangeKind::Created,
            "updated" => ChangeKind::Updated,
            "deleted" => ChangeKind::Deleted,
            _ => return None,
        })
    }
}

/// The timeline category of a change.
pub fn category(kind: &str, summary_items: &[SummaryItem]) -> &'static str {
    if kind == "Node" {
        "node"
    } else if !summary_items.is_empty()
        && summary_items
            .iter()
            .all(|i| matches!(i, SummaryItem::Digest(_)))
    {
        "image_digest"
    } else {
        "object"
    }
}

/// One part of a summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SummaryItem {
    Image(String),
    Digest(String),
    Other(String),
}

impl SummaryItem {
    fn text(&self) -> &str {
        match self {
            SummaryItem::Image(s) | SummaryItem::Digest(s) | SummaryItem::Other(s) => s,
        }
    }
}

fn pod_spec(obj: &Value) -> Option<&Value> {
    obj.pointer("/spec/template/spec")
        .or_else(|| obj.pointer("/spec/jobTemplate/spec/template/spec"))
        .or_else(|| {
            if obj.get("kind").and_then(Value::as_str) == Some("Pod") {
                obj.get("spec")
            } else {
                None
            }
        })
}

fn containers(obj: &Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Some(spec) = pod_spec(obj) {
        for key in ["initContainers", "containers"] {
            if let Some(a) = spec.get(key).and_then(Value::as_array) {
                for c in a {
                    out.push((s(c, &["name"]), s(c, &["image"])));
                }
            }
        }
    }
    out
}

/// A container image reference as written, split into its parts
/// (`registry.local:5000/shop/payment:2.2@sha256:…`). Nothing is defaulted
/// or shortened: `payment:2.2` has no registry, and two references with the
/// same last path component are different images.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRef {
    /// The reference as written.
    pub reference: String,
    /// The registry host (`registry.local:5000`), empty when not written.
    pub registry: String,
    /// The repository path without the registry (`shop/payment`).
    pub repository: String,
    pub tag: String,
    pub digest: String,
}

impl ImageRef {
    /// Splits a reference the way the container runtimes do: the first
    /// path component is a registry when it has a `.` or a `:` or is
    /// `localhost`.
    pub fn parse(reference: &str) -> ImageRef {
        let (name, digest) = match reference.split_once('@') {
            Some((n, d)) => (n, d),
            None => (reference, ""),
        };
        let (registry, path) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first, rest)
            }
            _ => ("", name),
        };
        let (repository, tag) = match path.rsplit_once(':') {
            Some((r, t)) if !t.contains('/') => (r, t),
            _ => (path, ""),
        };
        ImageRef {
            reference: reference.to_string(),
            registry: registry.to_string(),
            repository: repository.to_string(),
            tag: tag.to_string(),
            digest: digest.to_string(),
        }
    }
}

/// The containers' images of an object, or of a merge patch of one (whose
/// container lists are whole): `(container, image)`.
pub fn container_images(obj: &Value) -> Vec<(String, String)> {
    containers(obj)
}

/// The digest of an `imageID` (`docker.io/library/api@sha256:…` →
/// `sha256:…`), whole: two digests sharing a prefix are different images.
fn digest_of(id: &str) -> &str {
    id.rsplit('@').next().unwrap_or(id)
}

fn scalar_text(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "none".into(),
        Some(Value::String(x)) => x.clone(),
        Some(other) => other.to_string(),
    }
}

fn condition_status(obj: &Value, ty: &str) -> Option<String> {
    obj.pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(ty))
        .map(|c| s(c, &["status"]))
}

fn taints(obj: &Value) -> Vec<String> {
    obj.pointer("/spec/taints")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|t| {
                    let v = s(t, &["value"]);
                    let kv = if v.is_empty() {
                        s(t, &["key"])
                    } else {
                        format!("{}={v}", s(t, &["key"]))
                    };
                    format!("{kv}:{}", s(t, &["effect"]))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// The parts of a change worth a line (images, digests, replicas, phases,
/// restarts, Node readiness, taints and versions, ConfigMap keys), else the
/// changed paths.
pub fn summary_items(kind: &str, prev: &Value, cur: &Value) -> Vec<SummaryItem> {
    let mut items = Vec::new();
    // Hashes re-keyed (sha256 → hmac-sha256) are not compared.
    let rekeyed = adopt_rekeyed_hashes(prev, cur);
    let prev = rekeyed.as_ref().unwrap_or(prev);
    // Images, by container name.
    let before = containers(prev);
    for (name, img) in containers(cur) {
        if let Some((_, old)) = before.iter().find(|(n, _)| *n == name) {
            if *old != img {
                items.push(SummaryItem::Image(format!("image {old} → {img}")));
            }
        }
    }
    // Pod digests under the same image, and restarts.
    let statuses = |o: &Value| -> Vec<(String, String, String, u64)> {
        o.pointer("/status/containerStatuses")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .map(|c| {
                        (
                            s(c, &["name"]),
                            s(c, &["image"]),
                            s(c, &["imageID"]),
                            u64_at(c, &["restartCount"]).unwrap_or(0),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    let old_st = statuses(prev);
    for (name, image, id, restarts) in statuses(cur) {
        if let Some((_, oimg, oid, orestarts)) = old_st.iter().find(|(n, ..)| *n == name) {
            if *oimg == image && !oid.is_empty() && !id.is_empty() && *oid != id {
                items.push(SummaryItem::Digest(format!(
                    "image digest of {image} (container {name}) {} → {}",
                    digest_of(oid),
                    digest_of(&id)
                )));
            }
            if restarts > *orestarts {
                items.push(SummaryItem::Other(format!(
                    "container {name} restarts {orestarts} → {restarts}"
                )));
            }
        }
    }
    let pairs: &[(&str, &str)] = &[
        ("/spec/replicas", "replicas"),
        ("/status/phase", "phase"),
        ("/spec/unschedulable", "unschedulable"),
    ];
    for (ptr, label) in pairs {
        let (a, b) = (prev.pointer(ptr), cur.pointer(ptr));
        if a != b {
            let (ta, tb) = (scalar_text(a), scalar_text(b));
            let (ta, tb) = if *label == "unschedulable" {
                (
                    if ta == "none" { "false".into() } else { ta },
                    if tb == "none" { "false".into() } else { tb },
                )
            } else {
                (ta, tb)
            };
            if ta != tb {
                items.push(SummaryItem::Other(format!("{label} {ta} → {tb}")));
            }
        }
    }
    if kind == "Node" {
        let (a, b) = (
            condition_status(prev, "Ready"),
            condition_status(cur, "Ready"),
        );
        if a != b {
            items.push(SummaryItem::Other(format!(
                "Ready {} → {}",
                a.unwrap_or_else(|| "unknown".into()),
                b.unwrap_or_else(|| "unknown".into())
            )));
        }
        let (ta, tb) = (taints(prev), taints(cur));
        for t in tb.iter().filter(|t| !ta.contains(t)) {
            items.push(SummaryItem::Other(format!("taint +{t}")));
        }
        for t in ta.iter().filter(|t| !tb.contains(t)) {
            items.push(SummaryItem::Other(format!("taint -{t}")));
        }
        for (ptr, label) in [
            ("/status/nodeInfo/kubeletVersion", "kubelet"),
            ("/status/nodeInfo/kernelVersion", "kernel"),
        ] {
            let (a, b) = (prev.pointer(ptr), cur.pointer(ptr));
            if a != b {
                items.push(SummaryItem::Other(format!(
                    "{label} {} → {}",
                    scalar_text(a),
                    scalar_text(b)
                )));
            }
        }
    }
    if kind == "ConfigMap" {
        let keys = |o: &Value| -> Vec<(String, Value)> {
            o.get("data")
                .and_then(Value::as_object)
                .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                .unwrap_or_default()
        };
        let (ka, kb) = (keys(prev), keys(cur));
        let changed: Vec<String> = kb
            .iter()
            .filter(|(k, v)| {
                ka.iter()
                    .find(|(x, _)| x == k)
                    .is_none_or(|(_, ov)| ov != v)
            })
            .map(|(k, _)| k.clone())
            .chain(
                ka.iter()
                    .filter(|(k, _)| !kb.iter().any(|(x, _)| x == k))
                    .map(|(k, _)| format!("-{k}")),
            )
            .collect();
        if !changed.is_empty() {
            items.push(SummaryItem::Other(format!(
                "data keys changed: {}",
                changed.join(", ")
            )));
        }
    }
    if items.is_empty() && rekeyed.is_some() && merge_diff(prev, cur).is_none() {
        items.push(SummaryItem::Other(
            "secret hashes re-keyed to hmac-sha256 (values not comparable)".into(),
        ));
    }
    if items.is_empty() {
        if let Some(p) = merge_diff(prev, cur) {
            let mut paths = patch_paths(&p, 3);
            let more = paths.len().saturating_sub(5);
            paths.truncate(5);
            let mut text = format!("changed {}", paths.join(", "));
            if more > 0 {
                text.push_str(&format!(" (+{more} more)"));
            }
            items.push(SummaryItem::Other(text));
        }
    }
    items
}

/// A one-line summary of a version, e.g. `image api:1.4 → api:1.5 by argocd`,
/// plus its timeline category (`object`, `image_digest`, `node`).
pub fn summarize(
    kind: &str,
    change: ChangeKind,
    prev: Option<&Value>,
    cur: &Value,
    who: Option<&str>,
    gap: Option<(i64, i64)>,
) -> (String, &'static str) {
    let (mut text, cat) = match (change, prev) {
        (ChangeKind::Deleted, _) => (
            match gap {
                Some((a, b)) => format!(
                    "deleted between {} and {}",
                    format_rfc3339_ms(a),
                    format_rfc3339_ms(b)
                ),
                None => "deleted".into(),
            },
            if kind == "Node" { "node" } else { "object" },
        ),
        (ChangeKind::Created, _) | (ChangeKind::Observed, None) | (ChangeKind::Updated, None) => {
            let imgs: Vec<String> = containers(cur).into_iter().map(|(_, i)| i).collect();
            let verb = if change == ChangeKind::Observed {
                "observed"
            } else {
                "created"
            };
            let t = if imgs.is_empty() {
                verb.to_string()
            } else {
                format!("{verb} (image {})", imgs.join(", "))
            };
            (t, if kind == "Node" { "node" } else { "object" })
        }
        (_, Some(prev)) => {
            let items = summary_items(kind, prev, cur);
            let cat = category(kind, &items);
            let t = items
                .iter()
                .map(SummaryItem::text)
                .collect::<Vec<_>>()
                .join("; ");
            let t = match gap {
                Some((a, b)) => format!(
                    "changed between {} and {}: {t}",
                    format_rfc3339_ms(a),
                    format_rfc3339_ms(b)
                ),
                None => t,
            };
            (t, cat)
        }
    };
    if let Some(w) = who.filter(|w| !w.is_empty()) {
        if change != ChangeKind::Deleted || gap.is_none() {
            text.push_str(" by ");
            text.push_str(w);
        }
    }
    (text, cat)
}

/// A kind as users type it (`deploy`, `deployments`, `Deployment`, `hpa`)
/// as the lower-case singular kind (`deployment`).
pub fn normalize_kind(input: &str) -> String {
    let k = input.trim().to_ascii_lowercase();
    let short = match k.as_str() {
        "deploy" | "deployments" => "deployment",
        "sts" | "statefulsets" => "statefulset",
        "ds" | "daemonsets" => "daemonset",
        "rs" | "replicasets" => "replicaset",
        "cj" | "cronjobs" => "cronjob",
        "jobs" => "job",
        "po" | "pods" => "pod",
        "svc" | "services" => "service",
        "ing" | "ingresses" => "ingress",
        "netpol" | "networkpolicies" => "networkpolicy",
        "hpa" | "horizontalpodautoscalers" => "horizontalpodautoscaler",
        "pdb" | "poddisruptionbudgets" => "poddisruptionbudget",
        "cm" | "configmaps" => "configmap",
        "no" | "nodes" => "node",
        "ns" | "namespaces" => "namespace",
        "ev" | "events" => "event",
        "ro" | "rollouts" => "rollout",
        _ => "",
    };
    if !short.is_empty() {
        return short.to_string();
    }
    if let Some(x) = k.strip_suffix("ies") {
        return format!("{x}y");
    }
    if let Some(x) = k.strip_suffix("sses") {
        return format!("{x}ss");
    }
    match k.strip_suffix('s') {
        Some(x) if !k.ends_with("ss") && !x.is_empty() => x.to_string(),
        _ => k,
    }
}

// ---------------------------------------------------------------------------
// Workloads

fn strip_hash_suffix(name: &str) -> &str {
    match name.rsplit_once('-') {
        Some((head, tail))
            if !head.is_empty()
                && (6..=10).contains(&tail.len())
                && tail.bytes().all(|b| b.is_ascii_alphanumeric()) =>
        {
            head
        }
        _ => name,
    }
}

/// The workload an object belongs to (Deployment name for its ReplicaSets
/// and Pods, the StatefulSet/DaemonSet/Job/CronJob name, the HPA's target),
/// or `None` when it is not part of one.
pub fn workload_of(kind: &str, obj: &Value) -> Option<String> {
    let name = s(obj, &["metadata", "name"]);
    let owner = obj
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .and_then(|a| {
            a.iter()
                .find(|o| o.get("controller").and_then(Value::as_bool) == Some(true))
                .or_else(|| a.first())
        })
        .map(|o| (s(o, &["kind"]), s(o, &["name"])));
    match kind {
        "Deployment" | "StatefulSet" | "DaemonSet" | "CronJob" | "Rollout" => Some(name),
        "ReplicaSet" | "Job" => Some(owner.map(|(_, n)| n).unwrap_or(name)),
        "Pod" => match owner {
            Some((k, n)) if k == "ReplicaSet" => {
                let hash = s(obj, &["metadata", "labels", "pod-template-hash"]);
                Some(match n.strip_suffix(&format!("-{hash}")) {
                    Some(w) if !hash.is_empty() => w.to_string(),
                    _ => strip_hash_suffix(&n).to_string(),
                })
            }
            Some((_, n)) => Some(n),
            None => None,
        },
        "HorizontalPodAutoscaler" => obj
            .pointer("/spec/scaleTargetRef/name")
            .and_then(Value::as_str)
            .map(str::to_string),
        _ => None,
    }
}

/// The workload of an event's involved object, by name (the object itself
/// may not be stored): a Pod `api-5f6d7c8b9-qwz7p` is workload `api`.
pub fn workload_of_ref(r: &ObjectRef) -> Option<String> {
    match r.kind.as_str() {
        "Deployment" | "StatefulSet" | "DaemonSet" | "CronJob" | "Rollout" | "Job" => {
            Some(r.name.clone())
        }
        "ReplicaSet" => Some(strip_hash_suffix(&r.name).to_string()),
        "Pod" => {
            let once = match r.name.rsplit_once('-') {
                Some((head, tail))
                    if tail.len() == 5 && tail.bytes().all(|b| b.is_ascii_alphanumeric()) =>
                {
                    head
                }
                Some((head, tail))
                    if !tail.is_empty() && tail.bytes().all(|b| b.is_ascii_digit()) =>
                {
                    return Some(head.to_string())
                }
                _ => return None,
            };
            Some(strip_hash_suffix(once).to_string())
        }
        _ => None,
    }
}

// ---------------------------------------------------------------------------
// YAML output (for `kube-insight get -o yaml`)

/// Renders a JSON value as YAML (block style; strings double-quoted when
/// they need it, which is valid YAML).
pub fn to_yaml(v: &Value) -> String {
    let mut out = String::new();
    match v {
        Value::Object(m) if !m.is_empty() => yaml_map(m, 0, &mut out),
        Value::Array(a) if !a.is_empty() => yaml_seq(a, 0, &mut out),
        other => {
            out.push_str(&yaml_scalar(other));
            out.push('\n');
        }
    }
    out
}

fn yaml_scalar(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(x) => {
            let plain = !x.is_empty()
                && x.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./@+:".contains(c))
                && !x.starts_with(['-', '.', '@', ':'])
                && !x.ends_with(':')
                && x.parse::<f64>().is_err()
                && !matches!(
                    x.to_ascii_lowercase().as_str(),
                    "true" | "false" | "yes" | "no" | "on" | "off" | "null" | "y" | "n" | "~"
                );
            if plain {
                x.clone()
            } else {
                serde_json::to_string(x).unwrap_or_default()
            }
        }
        Value::Array(a) if a.is_empty() => "[]".into(),
        Value::Object(m) if m.is_empty() => "{}".into(),
        other => other.to_string(),
    }
}

fn yaml_key(k: &str) -> String {
    yaml_scalar(&Value::String(k.to_string()))
}

fn yaml_map(m: &Map<String, Value>, indent: usize, out: &mut String) {
    for (k, v) in m {
        out.push_str(&" ".repeat(indent));
        out.push_str(&yaml_key(k));
        out.push(':');
        match v {
            Value::Object(c) if !c.is_empty() => {
                out.push('\n');
                yaml_map(c, indent + 2, out);
            }
            Value::Array(a) if !a.is_empty() => {
                out.push('\n');
                yaml_seq(a, indent, out);
            }
            other => {
                out.push(' ');
                out.push_str(&yaml_scalar(other));
                out.push('\n');
            }
        }
    }
}

fn yaml_seq(a: &[Value], indent: usize, out: &mut String) {
    for v in a {
        out.push_str(&" ".repeat(indent));
        out.push_str("- ");
        match v {
            Value::Object(c) if !c.is_empty() => {
                let mut inner = String::new();
                yaml_map(c, indent + 2, &mut inner);
                // First line goes after "- ".
                out.push_str(inner.trim_start());
            }
            Value::Array(x) if !x.is_empty() => {
                out.push('\n');
                yaml_seq(x, indent + 2, out);
            }
            other => {
                out.push_str(&yaml_scalar(other));
                out.push('\n');
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn test_key() -> SecretKey {
        SecretKey::from_bytes(&[7; 32]).unwrap()
    }
    use serde_json::json;

    fn fixture(name: &str) -> String {
        std::fs::read_to_string(format!(
            "{}/../../../shared/fixtures/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    #[test]
    fn core_and_events_v1_fixtures_parse_to_the_same_event() {
        let a: Value = serde_json::from_str(&fixture("k8s-core-v1-event.json")).unwrap();
        let b: Value = serde_json::from_str(&fixture("k8s-events-v1-event.json")).unwrap();
        let ea = parse_event(&a, "prod", EventOrigin::Watch, 0).unwrap();
        let eb = parse_event(&b, "prod", EventOrigin::Watch, 0).unwrap();
        assert_eq!(ea.uid, "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d");
        assert_eq!(ea.count, 7);
        assert_eq!(ea.first_ms, parse_time_ms("2024-05-31T15:58:02Z").unwrap());
        assert_eq!(ea.last_ms, parse_time_ms("2024-05-31T16:08:37Z").unwrap());
        assert_eq!(ea.involved.kind, "Pod");
        assert_eq!(ea.source_component, "kubelet");
        assert_eq!(ea, eb);
        assert_eq!(workload_of_ref(&ea.involved).as_deref(), Some("api"));
    }

    #[test]
    fn series_events_take_count_and_last_from_the_series() {
        let lines = fixture("k8s-watch-events-stream.jsonl");
        let second: Value = serde_json::from_str(lines.lines().nth(1).unwrap()).unwrap();
        let e = parse_event(&second["object"], "c", EventOrigin::Watch, 0).unwrap();
        assert_eq!(e.count, 4);
        assert_eq!(
            e.first_ms,
            parse_time_ms("2024-05-31T16:08:40.512345Z").unwrap()
        );
        assert_eq!(
            e.last_ms,
            parse_time_ms("2024-05-31T16:12:41.002211Z").unwrap()
        );
        assert_eq!(e.source_component, "default-scheduler");
    }

    fn deployment(image: &str, replicas: u64) -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {
                "name": "api", "namespace": "shop", "uid": "u1", "resourceVersion": "10", "generation": 3,
                "annotations": {
                    LAST_APPLIED: "{\"env\":[{\"name\":\"DB_PASSWORD\",\"value\":\"hunter2\"}]}",
                    "argocd.argoproj.io/tracking-id": "shop-api:apps/Deployment:shop/api"
                },
                "managedFields": [
                    {"manager": "argocd-controller", "operation": "Apply", "time": "2024-05-31T16:00:00Z",
                     "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:replicas": {}, "f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"api\"}": {"f:image": {}}}}}}}},
                    {"manager": "kube-controller-manager", "operation": "Update", "subresource": "status", "time": "2024-05-31T16:05:00Z",
                     "fieldsType": "FieldsV1", "fieldsV1": {"f:status": {"f:replicas": {}}}}
                ]
            },
            "spec": {"replicas": replicas, "template": {"spec": {"containers": [
                {"name": "api", "image": format!("registry.example/{image}"),
                 "env": [{"name": "DB_PASSWORD", "value": "hunter2"}, {"name": "LOG_LEVEL", "value": "info"},
                         {"name": "FROM_SECRET", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]}
            ]}}},
            "status": {"replicas": replicas, "observedGeneration": 3, "readyReplicas": replicas,
                       "conditions": [{"type": "Available", "status": "True", "lastUpdateTime": "2024-05-31T16:05:00Z", "lastTransitionTime": "2024-05-31T15:00:00Z"}]}
        })
    }

    #[test]
    fn sanitize_strips_noise_and_hashes_secrets() {
        let raw = deployment("api:1.4", 3);
        let clean = sanitize("Deployment", &raw, &test_key()).unwrap();
        let text = clean.to_string();
        assert!(!text.contains("hunter2"), "{text}");
        assert!(!text.contains("managedFields"));
        assert!(!text.contains(LAST_APPLIED));
        assert!(!text.contains("resourceVersion"));
        assert!(!text.contains("observedGeneration"));
        assert!(!text.contains("lastUpdateTime"));
        assert_eq!(
            clean
                .pointer("/spec/template/spec/containers/0/env/0/value")
                .unwrap(),
            &json!(hmac_tag(&test_key(), b"hunter2"))
        );
        assert_eq!(
            clean
                .pointer("/spec/template/spec/containers/0/env/1/value")
                .unwrap(),
            "info"
        );
        assert_eq!(clean.pointer("/status/readyReplicas").unwrap(), 3);
        assert_eq!(
            clean
                .pointer("/status/conditions/0/lastTransitionTime")
                .unwrap(),
            "2024-05-31T15:00:00Z"
        );
        let secret = json!({"kind": "Secret", "metadata": {"name": "s", "namespace": "n"}, "data": {"p": "aGk="}});
        assert!(matches!(
            sanitize("Secret", &secret, &test_key()),
            Err(EventError::SecretRefused { .. })
        ));
    }

    #[test]
    fn configmap_data_is_hashed_and_nodes_lose_heartbeats() {
        let cm = json!({"kind": "ConfigMap", "metadata": {"name": "c", "uid": "u"}, "data": {"db.url": "postgres://u:pw@h/db"}, "binaryData": {"b": "AAE="}});
        let c = sanitize("ConfigMap", &cm, &test_key()).unwrap();
        assert_eq!(
            c["data"]["db.url"],
            json!(hmac_tag(&test_key(), b"postgres://u:pw@h/db"))
        );
        assert!(!c.to_string().contains("pw@h"));
        let node = |hb: &str, ready: &str| {
            json!({"kind": "Node", "metadata": {"name": "n1", "uid": "n"}, "spec": {"unschedulable": false},
                   "status": {"conditions": [{"type": "Ready", "status": ready, "lastHeartbeatTime": hb, "lastTransitionTime": "2024-01-01T00:00:00Z"}],
                              "images": [{"names": ["x"], "sizeBytes": 1}],
                              "nodeInfo": {"kubeletVersion": "v1.30.1", "kernelVersion": "6.1", "machineID": "m", "bootID": "b"}}})
        };
        let a = sanitize("Node", &node("2024-01-01T00:00:10Z", "True"), &test_key()).unwrap();
        let b = sanitize("Node", &node("2024-01-01T00:00:20Z", "True"), &test_key()).unwrap();
        assert_eq!(a, b, "a heartbeat is not a change");
        assert!(a.pointer("/status/images").is_none());
        let c = sanitize("Node", &node("2024-01-01T00:00:30Z", "False"), &test_key()).unwrap();
        let (sum, cat) = summarize(
            "Node",
            ChangeKind::Updated,
            Some(&a),
            &c,
            Some("kubelet"),
            None,
        );
        assert_eq!(cat, "node");
        assert!(sum.contains("Ready True → False"), "{sum}");
    }

    #[test]
    fn merge_patch_round_trips() {
        let a = sanitize("Deployment", &deployment("api:1.4", 3), &test_key()).unwrap();
        let b = sanitize("Deployment", &deployment("api:1.5", 5), &test_key()).unwrap();
        let p = merge_diff(&a, &b).unwrap();
        let mut x = a.clone();
        merge_apply(&mut x, &p);
        assert_eq!(x, b);
        assert_eq!(merge_diff(&a, &a), None);
        // Removal, type change, nested add.
        let c = json!({"a": {"b": 1}, "x": [1, 2], "y": "s"});
        let d = json!({"a": 5, "x": [2], "z": {"w": {}}});
        let p = merge_diff(&c, &d).unwrap();
        let mut y = c.clone();
        merge_apply(&mut y, &p);
        assert_eq!(y, d);
        let p = merge_diff(&d, &c).unwrap();
        let mut y = d.clone();
        merge_apply(&mut y, &p);
        assert_eq!(y, c);
    }

    #[test]
    fn attribution_and_summary_name_the_gitops_tool() {
        let raw_a = deployment("api:1.4", 3);
        let raw_b = deployment("api:1.5", 3);
        let a = sanitize("Deployment", &raw_a, &test_key()).unwrap();
        let b = sanitize("Deployment", &raw_b, &test_key()).unwrap();
        let patch = merge_diff(&a, &b).unwrap();
        let manager = attribute(&patch, &managers_of(&raw_b));
        assert_eq!(manager.as_deref(), Some("argocd-controller"));
        let gitops = gitops_of(&raw_b);
        assert_eq!(gitops.as_deref(), Some("argocd app=shop-api"));
        let who = who_label(manager.as_deref(), gitops.as_deref());
        let (sum, cat) = summarize(
            "Deployment",
            ChangeKind::Updated,
            Some(&a),
            &b,
            who.as_deref(),
            None,
        );
        assert_eq!(
            sum,
            "image registry.example/api:1.4 → registry.example/api:1.5 by argocd"
        );
        assert_eq!(cat, "object");
        let c = sanitize("Deployment", &deployment("api:1.5", 5), &test_key()).unwrap();
        let (sum, _) = summarize("Deployment", ChangeKind::Updated, Some(&b), &c, None, None);
        assert_eq!(sum, "replicas 3 → 5");
    }

    fn fm(manager: &str, subresource: &str, time: &str, fields: Value) -> FieldManager {
        FieldManager {
            manager: manager.into(),
            operation: "Update".into(),
            subresource: subresource.into(),
            time_ms: parse_time_ms(time).ok(),
            fields,
        }
    }

    #[test]
    fn attribution_follows_the_subresource_and_the_fields() {
        // What kube-apiserver 1.32 records after `kubectl set image` and the
        // controller's status writes (the status entry is the latest).
        let managers = vec![
            fm(
                "kubectl-client-side-apply",
                "",
                "2024-05-31T15:00:00Z",
                json!({"f:spec": {"f:replicas": {}, "f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"api\"}": {"f:name": {}}}}}}}),
            ),
            fm(
                "kubectl-set",
                "",
                "2024-05-31T16:00:00Z",
                json!({"f:spec": {"f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"api\"}": {"f:image": {}}}}}}}),
            ),
            fm(
                "kube-controller-manager",
                "",
                "2024-05-31T16:00:01Z",
                json!({"f:metadata": {"f:annotations": {"f:deployment.kubernetes.io/revision": {}}}}),
            ),
            fm(
                "kube-controller-manager",
                "status",
                "2024-05-31T16:00:30Z",
                json!({"f:status": {"f:conditions": {}, "f:replicas": {}, "f:updatedReplicas": {}}}),
            ),
            fm(
                "kubectl",
                "scale",
                "2024-05-31T15:30:00Z",
                json!({"f:spec": {"f:replicas": {}}}),
            ),
        ];
        let who = |patch: Value| attribute(&patch, &managers);
        assert_eq!(
            who(json!({"spec": {"template": {"spec": {"containers": [{"name": "api", "image": "b"}]}}}})).as_deref(),
            Some("kubectl-set")
        );
        assert_eq!(
            who(json!({"status": {"updatedReplicas": 1, "conditions": []}})).as_deref(),
            Some("kube-controller-manager")
        );
        assert_eq!(
            who(json!({"metadata": {"annotations": {"deployment.kubernetes.io/revision": "2"}}}))
                .as_deref(),
            Some("kube-controller-manager")
        );
        assert_eq!(
            who(json!({"spec": {"replicas": 5}})).as_deref(),
            Some("kubectl")
        );
        // A change of spec and status is its spec change.
        assert_eq!(
            who(json!({"spec": {"replicas": 5}, "status": {"replicas": 5}})).as_deref(),
            Some("kubectl")
        );
        // Nobody owns it: the latest writer of that part, never a status
        // writer for a spec change.
        assert_eq!(
            who(json!({"spec": {"paused": true}})).as_deref(),
            Some("kube-controller-manager")
        );
        let only_status_and_kubectl = vec![managers[1].clone(), managers[3].clone()];
        assert_eq!(
            attribute(&json!({"spec": {"paused": true}}), &only_status_and_kubectl).as_deref(),
            Some("kubectl-set")
        );
    }

    #[test]
    fn image_references_keep_every_part() {
        let r = ImageRef::parse("registry.local:5000/shop/payment:2.2@sha256:abc");
        assert_eq!(
            (
                r.registry.as_str(),
                r.repository.as_str(),
                r.tag.as_str(),
                r.digest.as_str()
            ),
            ("registry.local:5000", "shop/payment", "2.2", "sha256:abc")
        );
        let r = ImageRef::parse("payment:2.1");
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_str()),
            ("", "payment", "2.1")
        );
        let r = ImageRef::parse("localhost/x");
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_str()),
            ("localhost", "x", "")
        );
        let a = sanitize(
            "Deployment",
            &deployment("shop/payment:2.1", 3),
            &test_key(),
        )
        .unwrap();
        let b = sanitize(
            "Deployment",
            &deployment("other/payment:2.1", 3),
            &test_key(),
        )
        .unwrap();
        let (sum, _) = summarize("Deployment", ChangeKind::Updated, Some(&a), &b, None, None);
        assert_eq!(
            sum,
            "image registry.example/shop/payment:2.1 → registry.example/other/payment:2.1"
        );
        let p = merge_diff(&a, &b).unwrap();
        assert_eq!(
            container_images(&p),
            [(
                "api".to_string(),
                "registry.example/other/payment:2.1".to_string()
            )]
        );
    }

    #[test]
    fn digest_change_under_the_same_tag() {
        let pod = |id: &str, restarts: u64| {
            json!({"kind": "Pod", "metadata": {"name": "api-5f6d7c8b9-qwz7p", "uid": "p", "labels": {"pod-template-hash": "5f6d7c8b9"},
                    "ownerReferences": [{"kind": "ReplicaSet", "name": "api-5f6d7c8b9", "controller": true}]},
                   "spec": {"nodeName": "n1", "containers": [{"name": "api", "image": "api:1.5"}]},
                   "status": {"phase": "Running", "containerStatuses": [{"name": "api", "image": "api:1.5", "imageID": id, "restartCount": restarts,
                       "state": {"running": {"startedAt": "2024-01-01T00:00:00Z"}}}]}})
        };
        let a = sanitize(
            "Pod",
            &pod("docker.io/library/api@sha256:aaaaaaaaaaaaaaaaaaaa", 0),
            &test_key(),
        )
        .unwrap();
        let b = sanitize(
            "Pod",
            &pod("docker.io/library/api@sha256:bbbbbbbbbbbbbbbbbbbb", 0),
            &test_key(),
        )
        .unwrap();
        let (sum, cat) = summarize("Pod", ChangeKind::Updated, Some(&a), &b, None, None);
        assert_eq!(cat, "image_digest");
        assert_eq!(
            sum,
            "image digest of api:1.5 (container api) sha256:aaaaaaaaaaaaaaaaaaaa → sha256:bbbbbbbbbbbbbbbbbbbb"
        );
        assert_eq!(workload_of("Pod", &a).as_deref(), Some("api"));
        let c = sanitize(
            "Pod",
            &pod("docker.io/library/api@sha256:bbbbbbbbbbbbbbbbbbbb", 1),
            &test_key(),
        )
        .unwrap();
        let (sum, cat) = summarize("Pod", ChangeKind::Updated, Some(&b), &c, None, None);
        assert_eq!(
            (sum.as_str(), cat),
            ("container api restarts 0 → 1", "object")
        );
    }

    #[test]
    fn gap_summaries_and_yaml() {
        let v = json!({"kind": "ConfigMap"});
        let (sum, _) = summarize(
            "ConfigMap",
            ChangeKind::Deleted,
            Some(&v),
            &v,
            Some("x"),
            Some((0, 60_000)),
        );
        assert_eq!(
            sum,
            "deleted between 1970-01-01T00:00:00.000Z and 1970-01-01T00:01:00.000Z"
        );
        let y = to_yaml(
            &json!({"a": {"b": [1, {"c": "yes", "d": []}], "e": "api:1.4"}, "f": "x: y", "g": "k:"}),
        );
        assert_eq!(
            y,
            "a:\n  b:\n  - 1\n  - c: \"yes\"\n    d: []\n  e: api:1.4\nf: \"x: y\"\ng: \"k:\"\n"
        );
    }

    #[test]
    fn secret_names() {
        for n in [
            "DB_PASSWORD",
            "api_key",
            "GITHUB_TOKEN",
            "AWS_SECRET_ACCESS_KEY",
            "SENTRY_DSN",
            "MYSQL_PWD",
        ] {
            assert!(is_secret_name(n), "{n}");
        }
        for n in ["LOG_LEVEL", "PORT", "KEYCLOAK_URL_PATH"] {
            assert!(!is_secret_name(n), "{n}");
        }
    }

    #[test]
    fn secrets_are_hashed_with_the_installation_key() {
        // Python: hmac.new(bytes([7] * 32), b"hunter2", hashlib.sha256).hexdigest()
        assert_eq!(
            hmac_tag(&test_key(), b"hunter2"),
            "hmac-sha256:326eb4f6783e519f198c32929bd28e66c5229387bcad7eaa651b20613622ec9f"
        );
        let other = SecretKey::from_bytes(&[8; 32]).unwrap();
        assert_ne!(
            hmac_tag(&other, b"hunter2"),
            hmac_tag(&test_key(), b"hunter2")
        );
        assert!(SecretKey::from_bytes(&[1; 31]).is_none());
        assert_eq!(format!("{:?}", test_key()), "SecretKey(..)");
        let clean = sanitize("Deployment", &deployment("api:1.4", 3), &test_key()).unwrap();
        assert!(!clean.to_string().contains(&sha256_tag(b"hunter2")));
    }

    #[test]
    fn a_change_of_hash_scheme_is_not_a_change_of_value() {
        let cm = |v: &str, level: &str| json!({"kind": "ConfigMap", "metadata": {"name": "c", "uid": "u"}, "data": {"db.url": v, "level": level}});
        let old = json!({"kind": "ConfigMap", "metadata": {"name": "c", "uid": "u"},
                         "data": {"db.url": sha256_tag(b"pg"), "level": sha256_tag(b"info")}});
        let new = sanitize("ConfigMap", &cm("pg", "info"), &test_key()).unwrap();
        let (sum, _) = summarize(
            "ConfigMap",
            ChangeKind::Updated,
            Some(&old),
            &new,
            None,
            None,
        );
        assert_eq!(
            sum,
            "secret hashes re-keyed to hmac-sha256 (values not comparable)"
        );
        // A change elsewhere is still reported, the re-keyed keys are not.
        let mut moved = new.clone();
        moved["metadata"]["labels"] = json!({"team": "a"});
        let (sum, _) = summarize(
            "ConfigMap",
            ChangeKind::Updated,
            Some(&old),
            &moved,
            None,
            None,
        );
        assert_eq!(sum, "changed metadata.labels.team");
        // Both keyed: a real change of value is seen.
        let changed = sanitize("ConfigMap", &cm("pg2", "info"), &test_key()).unwrap();
        let (sum, _) = summarize(
            "ConfigMap",
            ChangeKind::Updated,
            Some(&new),
            &changed,
            None,
            None,
        );
        assert_eq!(sum, "data keys changed: db.url");
        assert!(adopt_rekeyed_hashes(&new, &changed).is_none());
    }
}
