//! The backend-neutral part of the events store: how a version is planned
//! from the last stored state (duplicate, stale, unchanged, or a new version
//! with its patch, attribution and summary), how objects and patches are
//! encoded, and how events become timeline rows. Every backend stores what
//! these functions decide, so they give the same answers.

use crate::error::{Error, Result};
use crate::events::{ChangeRow, ObjectWrite};
use kube_insight_core::event::{
    attribute, merge_apply, merge_diff, normalize_kind, summarize, who_label, workload_of,
    ChangeKind, EventOrigin, SYNTHETIC_UID_PREFIX,
};
use serde_json::Value;

/// A full copy every this many versions of an object.
pub const KEYFRAME_EVERY: i64 = 16;

/// Two events are twins (a kube-eventer copy of a watched event) when
/// their times are this close.
pub const TWIN_WINDOW_MS: i64 = 1000;

/// A resourceVersion as a number, when it is one (etcd's are).
pub fn rv_num(rv: &str) -> Option<u128> {
    rv.parse().ok()
}

/// Is `rv` older than `than`? Only numeric resourceVersions compare.
pub fn rv_older(rv: &str, than: &str) -> bool {
    matches!((rv_num(rv), rv_num(than)), (Some(a), Some(b)) if a < b)
}

/// An object as zstd-compressed JSON.
pub fn encode_object(v: &Value, level: i32) -> Result<Vec<u8>> {
    let raw =
        serde_json::to_vec(v).map_err(|e| Error::Corrupt(format!("encoding an object: {e}")))?;
    zstd::bulk::compress(&raw, level).map_err(Error::Io)
}

/// The inverse of [`encode_object`].
pub fn decode_object(b: &[u8]) -> Result<Value> {
    let raw = zstd::stream::decode_all(b)
        .map_err(|e| Error::Corrupt(format!("an object version does not decompress: {e}")))?;
    serde_json::from_slice(&raw)
        .map_err(|e| Error::Corrupt(format!("an object version is not JSON: {e}")))
}

/// A merge patch as JSON text.
pub fn encode_patch(p: &Value) -> Result<String> {
    serde_json::to_string(p).map_err(|e| Error::Corrupt(format!("encoding a patch: {e}")))
}

/// The inverse of [`encode_patch`]; `what` names the object in errors.
pub fn decode_patch(text: &[u8], what: &str) -> Result<Value> {
    serde_json::from_slice(text)
        .map_err(|e| Error::Corrupt(format!("a patch of object {what} is not JSON: {e}")))
}

/// A keyframe with the patches after it applied in order.
pub fn apply_patches<'a>(mut base: Value, patches: impl IntoIterator<Item = &'a Value>) -> Value {
    for p in patches {
        merge_apply(&mut base, p);
    }
    base
}

/// The last stored state of an object, as a backend reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct LatestState {
    /// The last resourceVersion seen (an unchanged write moves it).
    pub rv: String,
    pub seq: i64,
    pub deleted: bool,
    pub at_ms: i64,
    /// The state after version `seq` (for a deletion: the last state).
    pub object: Value,
}

/// A version to store.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionPlan {
    pub seq: i64,
    pub change: ChangeKind,
    /// Never before the previous version's time.
    pub at_ms: i64,
    /// The merge patch from version `seq - 1` (updates only).
    pub patch: Option<Value>,
    /// Who made the change (a managedFields manager).
    pub manager: Option<String>,
    pub summary: String,
    pub category: &'static str,
    /// The owning workload's name, or empty.
    pub workload: String,
    /// The state after this version; for a deletion the last state before it.
    pub state: Value,
    /// Whether this version must hold a full copy: the first, a deletion,
    /// and every [`KEYFRAME_EVERY`]th.
    pub keyframe: bool,
}

/// What to do with one [`ObjectWrite`].
#[derive(Debug, Clone, PartialEq)]
pub enum WritePlan {
    /// The same (cluster, uid, resourceVersion) is stored.
    Duplicate,
    /// Older than the stored state, or about a deleted object.
    Stale,
    /// The sanitized object equals the stored state: only the last seen
    /// resourceVersion moves.
    Unchanged,
    Version(Box<VersionPlan>),
}

/// Decides what a write stores, given the object's last stored state and
/// whether a version with the write's resourceVersion is already stored.
/// The store's contract ([`crate::events`]) in one place: idempotent on
/// (cluster, uid, resourceVersion), stale writes ignored, unchanged states
/// stored once, the first sight of an existing object a baseline.
pub fn plan_write(
    latest: Option<&LatestState>,
    rv_stored: bool,
    w: &ObjectWrite,
    keyframe_every: i64,
) -> WritePlan {
    if rv_stored {
        return WritePlan::Duplicate;
    }
    if let Some(l) = latest {
        if l.rv == w.resource_version && w.change != ChangeKind::Deleted {
            return WritePlan::Duplicate;
        }
        let older = rv_older(&w.resource_version, &l.rv);
        if l.deleted || (older && w.change != ChangeKind::Deleted) {
            return if l.deleted && w.change == ChangeKind::Deleted {
                WritePlan::Duplicate
            } else {
                WritePlan::Stale
            };
        }
    }
    // Versions of one object never go back in time (a change time taken
    // from managedFields may be older than the last stored one).
    let at_ms = latest.map_or(w.at_ms, |l| w.at_ms.max(l.at_ms));
    let (seq, change, patch, prev) = match latest {
        None => {
            let change = match w.change {
                ChangeKind::Updated => ChangeKind::Observed,
                c => c,
            };
            (0i64, change, None, None)
        }
        Some(l) if w.change == ChangeKind::Deleted => {
            (l.seq + 1, ChangeKind::Deleted, None, Some(&l.object))
        }
        Some(l) => match merge_diff(&l.object, &w.object) {
            None => return WritePlan::Unchanged,
            Some(p) => (l.seq + 1, ChangeKind::Updated, Some(p), Some(&l.object)),
        },
    };
    let manager = match (&patch, change) {
        (Some(p), _) => attribute(p, &w.managers),
        (None, ChangeKind::Created) | (None, ChangeKind::Observed) => {
            attribute(&w.object, &w.managers)
        }
        _ => None,
    };
    let who = who_label(manager.as_deref(), w.gitops.as_deref());
    let (summary, category) = summarize(&w.kind, change, prev, &w.object, who.as_deref(), w.gap);
    let state = if change == ChangeKind::Deleted {
        prev.cloned().unwrap_or_else(|| w.object.clone())
    } else {
        w.object.clone()
    };
    let keyframe = patch.is_none() || seq % keyframe_every.max(1) == 0;
    WritePlan::Version(Box::new(VersionPlan {
        seq,
        change,
        at_ms,
        patch,
        manager,
        summary,
        category,
        workload: workload_of(&w.kind, &w.object).unwrap_or_default(),
        state,
        keyframe,
    }))
}

/// An event's count as reported: a synthetic (uid-less) event counts its
/// occurrences, a watched one reports the highest count seen.
pub fn event_count(uid: &str, max_count: i64, occurrences: i64) -> u64 {
    let n = if uid.starts_with(SYNTHETIC_UID_PREFIX) {
        occurrences
    } else {
        max_count
    };
    n.max(1) as u64
}

/// `reason: message`, with `(xN)` when it happened more than once.
pub fn event_summary(reason: &str, message: &str, count: u64) -> String {
    let mut summary = format!("{reason}: {message}");
    if count > 1 {
        summary.push_str(&format!(" (x{count})"));
    }
    summary
}

/// The origin stored as [`EventOrigin::as_str`].
pub fn event_origin(s: &str) -> EventOrigin {
    if s == EventOrigin::KubeEventer.as_str() {
        EventOrigin::KubeEventer
    } else {
        EventOrigin::Watch
    }
}

/// Does `kind` pass a kind filter (already normalized)?
pub fn kind_matches(filter: Option<&str>, kind: &str) -> bool {
    filter.is_none_or(|k| normalize_kind(kind) == k)
}

/// An event as a timeline row.
#[derive(Debug, Clone)]
pub struct EventLine {
    pub cluster: String,
    pub uid: String,
    /// Its last occurrence in the range.
    pub at_ms: i64,
    pub event_type: String,
    /// The involved object's.
    pub namespace: String,
    pub kind: String,
    pub name: String,
    pub resource_version: String,
    pub reason: String,
    pub message: String,
    pub count: u64,
    pub source_component: String,
}

impl From<EventLine> for ChangeRow {
    fn from(e: EventLine) -> ChangeRow {
        ChangeRow {
            at_ms: e.at_ms,
            category: "event".into(),
            change: e.event_type,
            cluster: e.cluster,
            namespace: e.namespace,
            kind: e.kind,
            name: e.name,
            uid: e.uid,
            resource_version: e.resource_version,
            summary: event_summary(&e.reason, &e.message, e.count),
            manager: (!e.source_component.is_empty()).then_some(e.source_component),
            gitops: None,
            patch: None,
            reason: Some(e.reason),
            count: Some(e.count),
            gap_from_ms: None,
        }
    }
}

/// The timeline: versions (newest first) and at most `limit` event rows
/// (newest first), merged newest first (versions before events at the same
/// time), at most `limit` rows.
pub fn merge_timeline(
    mut versions: Vec<ChangeRow>,
    events: Vec<ChangeRow>,
    limit: usize,
) -> Vec<ChangeRow> {
    versions.truncate(limit);
    versions.extend(events.into_iter().take(limit));
    versions.sort_by_key(|r| std::cmp::Reverse(r.at_ms));
    versions.truncate(limit);
    versions
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use kube_insight_core::event::FieldManager;
    use serde_json::json;

    fn write(rv: &str, at: i64, change: ChangeKind, image: &str) -> ObjectWrite {
        ObjectWrite {
            cluster: "prod".into(),
            group: "apps".into(),
            kind: "Deployment".into(),
            namespace: "shop".into(),
            name: "api".into(),
            uid: "u".into(),
            resource_version: rv.into(),
            at_ms: at,
            change,
            object: json!({"spec": {"template": {"spec": {"containers": [{"name": "api", "image": image}]}}}}),
            managers: vec![FieldManager {
                manager: "kubectl".into(),
                operation: "Update".into(),
                subresource: String::new(),
                time_ms: None,
                fields: json!({"f:spec": {"f:template": {}}}),
            }],
            gitops: None,
            gap: None,
        }
    }

    fn latest(rv: &str, seq: i64, deleted: bool, image: &str) -> LatestState {
        let w = write(rv, 100, ChangeKind::Updated, image);
        LatestState {
            rv: rv.into(),
            seq,
            deleted,
            at_ms: 100,
            object: w.object,
        }
    }

    #[test]
    fn first_sight_is_a_baseline_and_a_keyframe() {
        let w = write("10", 5, ChangeKind::Updated, "a:1");
        let WritePlan::Version(v) = plan_write(None, false, &w, 16) else {
            panic!("no version")
        };
        assert_eq!(
            (v.seq, v.change, v.keyframe),
            (0, ChangeKind::Observed, true)
        );
        assert!(v.patch.is_none());
        assert!(v.summary.starts_with("observed"), "{}", v.summary);
    }

    #[test]
    fn duplicates_stale_and_unchanged() {
        let l = latest("10", 3, false, "a:1");
        let same = write("10", 200, ChangeKind::Updated, "a:2");
        assert_eq!(plan_write(Some(&l), false, &same, 16), WritePlan::Duplicate);
        let stored = write("7", 200, ChangeKind::Updated, "a:0");
        assert_eq!(
            plan_write(Some(&l), true, &stored, 16),
            WritePlan::Duplicate
        );
        let older = write("9", 200, ChangeKind::Updated, "a:0");
        assert_eq!(plan_write(Some(&l), false, &older, 16), WritePlan::Stale);
        let heartbeat = write("11", 200, ChangeKind::Updated, "a:1");
        assert_eq!(
            plan_write(Some(&l), false, &heartbeat, 16),
            WritePlan::Unchanged
        );
        let gone = latest("12", 4, true, "a:1");
        let again = write("12", 300, ChangeKind::Deleted, "a:1");
        assert_eq!(
            plan_write(Some(&gone), false, &again, 16),
            WritePlan::Duplicate
        );
        let after = write("13", 300, ChangeKind::Updated, "a:3");
        assert_eq!(plan_write(Some(&gone), false, &after, 16), WritePlan::Stale);
    }

    #[test]
    fn updates_carry_a_patch_and_never_go_back_in_time() {
        let l = latest("10", 15, false, "a:1");
        let w = write("11", 50, ChangeKind::Updated, "a:2");
        let WritePlan::Version(v) = plan_write(Some(&l), false, &w, 16) else {
            panic!("no version")
        };
        assert_eq!((v.seq, v.at_ms, v.keyframe), (16, 100, true));
        let mut rebuilt = l.object.clone();
        merge_apply(&mut rebuilt, v.patch.as_ref().unwrap());
        assert_eq!(rebuilt, w.object);
        assert_eq!(v.manager.as_deref(), Some("kubectl"));
        let l = latest("10", 3, false, "a:1");
        let WritePlan::Version(v) = plan_write(Some(&l), false, &w, 16) else {
            panic!("no version")
        };
        assert!(!v.keyframe);
        // A deletion keeps the last state.
        let d = write("12", 400, ChangeKind::Deleted, "ignored");
        let WritePlan::Version(v) = plan_write(Some(&l), false, &d, 16) else {
            panic!("no version")
        };
        assert_eq!((v.change, v.keyframe), (ChangeKind::Deleted, true));
        assert_eq!(v.state, l.object);
    }

    #[test]
    fn codecs_round_trip() {
        let v = json!({"a": [1, 2, {"b": "c"}]});
        assert_eq!(decode_object(&encode_object(&v, 3).unwrap()).unwrap(), v);
        assert!(decode_object(b"nope").is_err());
        let p = json!({"spec": {"replicas": 5, "x": null}});
        let text = encode_patch(&p).unwrap();
        assert_eq!(decode_patch(text.as_bytes(), "u").unwrap(), p);
        let e = decode_patch(b"{", "uid-7").unwrap_err().to_string();
        assert!(e.contains("uid-7"), "{e}");
        let base = json!({"a": 1, "b": {"c": 2}});
        let out = apply_patches(base, &[json!({"a": 2}), json!({"b": {"c": null}})]);
        assert_eq!(out, json!({"a": 2, "b": {}}));
    }

    #[test]
    fn event_helpers() {
        assert_eq!(event_count("synthetic:ab", 0, 3), 3);
        assert_eq!(event_count("real", 7, 3), 7);
        assert_eq!(event_count("real", 0, 0), 1);
        assert_eq!(event_summary("BackOff", "m", 2), "BackOff: m (x2)");
        assert_eq!(event_summary("BackOff", "m", 1), "BackOff: m");
        assert_eq!(event_origin("kube_eventer"), EventOrigin::KubeEventer);
        assert_eq!(event_origin("watch"), EventOrigin::Watch);
        assert!(kind_matches(Some("pod"), "Pod"));
        assert!(!kind_matches(Some("pod"), "Node"));
        assert!(kind_matches(None, "Node"));
        assert!(rv_older("9", "10") && !rv_older("10", "9") && !rv_older("x", "10"));
    }

    #[test]
    fn timeline_merge_orders_and_limits() {
        let row = |at: i64, cat: &str| ChangeRow {
            at_ms: at,
            category: cat.into(),
            change: String::new(),
            cluster: String::new(),
            namespace: String::new(),
            kind: String::new(),
            name: String::new(),
            uid: String::new(),
            resource_version: String::new(),
            summary: String::new(),
            manager: None,
            gitops: None,
            patch: None,
            reason: None,
            count: None,
            gap_from_ms: None,
        };
        let out = merge_timeline(
            vec![row(30, "object"), row(10, "object")],
            vec![row(30, "event"), row(20, "event")],
            3,
        );
        let got: Vec<(i64, &str)> = out.iter().map(|r| (r.at_ms, r.category.as_str())).collect();
        assert_eq!(got, [(30, "object"), (30, "event"), (20, "event")]);
    }
}
