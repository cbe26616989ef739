//! The change feed: the project's one change model. The API
//! (`/api/v1/changes`, `/api/v1/changes/workloads`), the CLI (`diff`), the
//! dashboards and the suspects engine all read changes through it, so they
//! agree on what a change is.
//!
//! - **Status is not a change** ([`is_status_only`]): a version whose stored
//!   patch touches only `status` and controller bookkeeping (the
//!   `deployment.kubernetes.io/*` annotations, deletion marks) stays in the
//!   object history, so `objects?at=` is exact, but the feed leaves it out
//!   unless asked (`include_status`). Both backends apply this one function
//!   before their row limit ([`crate::events::ChangeQuery::include_status`]).
//!   Node changes and image digest changes are changes even though they live
//!   in `status`.
//! - **A rollout is one change** ([`group`]): a Deployment, StatefulSet or
//!   DaemonSet template change (or its creation) opens a rollout; its
//!   ReplicaSets', Pods' and the workload's own later versions and the
//!   Normal events about them are its members until the next template or
//!   scale change of the workload, the rollout's completion (plus
//!   [`COMPLETION_GRACE_MS`]), or [`ROLLOUT_MAX_MS`]. A `spec.replicas`
//!   change opens a scale the same way. The outcome comes from stored data:
//!   the workload's status versions (Deployment `Progressing` condition,
//!   StatefulSet revisions, DaemonSet counts, available replicas for a
//!   scale), a `ProgressDeadlineExceeded` event or condition, and for a
//!   rollback the next rollout bringing back a ReplicaSet this one replaced.
//!   Warning events stay rows of their own: they are symptoms, not changes.
//!
//! [`load`] is the IO half: it reads the rows a feed needs from an
//! [`EventStore`] (the status versions of the rolled-out workloads even when
//! status rows are not shown) and calls [`group`].

use crate::error::Result;
use crate::events::{ChangeQuery, ChangeRow, EventStore};
use kube_insight_core::event::{
    container_images, patch_segments, workload_of_ref, ImageRef, ObjectRef,
};
use kube_insight_core::TimeRange;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};

/// Raw rows [`load`] reads at most per query.
pub const MAX_SCAN_ROWS: usize = 10_000;

/// Members are taken this long after a rollout completed (the controllers'
/// last status writes and events).
pub const COMPLETION_GRACE_MS: i64 = 60_000;

/// A rollout or scale takes members for at most this long (twice the
/// default `progressDeadlineSeconds`).
pub const ROLLOUT_MAX_MS: i64 = 20 * 60_000;

/// Annotations controllers keep on the objects they manage; changing them
/// is bookkeeping, not a change.
const BOOKKEEPING_ANNOTATIONS: &[&str] = &["deployment.kubernetes.io/"];

/// Metadata fields that move without anyone changing the object's intent
/// (the deletion marks come before the `deleted` version, which is the
/// change).
const BOOKKEEPING_METADATA: &[&str] = &[
    "resourceVersion",
    "generation",
    "managedFields",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
];

/// The workload kinds whose template changes are rollouts.
pub const ROLLOUT_KINDS: &[&str] = &["Deployment", "StatefulSet", "DaemonSet"];

/// Is this timeline row a status-only update (see the module docs)? Events,
/// creations, deletions, Node and image digest changes never are.
pub fn is_status_only(row: &ChangeRow) -> bool {
    if row.change != "updated" || row.category != "object" {
        return false;
    }
    let Some(patch) = row.patch.as_ref().filter(|p| p.is_object()) else {
        return false;
    };
    let paths = patch_segments(patch, 3);
    !paths.is_empty()
        && paths.iter().all(|p| {
            let seg = |i: usize| p.get(i).map(String::as_str);
            match (seg(0), seg(1), seg(2)) {
                (Some("status"), _, _) => true,
                (Some("metadata"), Some(f), _) if BOOKKEEPING_METADATA.contains(&f) => true,
                (Some("metadata"), Some("annotations"), Some(a)) => {
                    BOOKKEEPING_ANNOTATIONS.iter().any(|b| a.starts_with(b))
                }
                _ => false,
            }
        })
}

/// What a feed row is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedKind {
    /// One version or event.
    Change,
    /// A workload template change (or creation) with what it set off.
    Rollout,
    /// A workload `spec.replicas` change with what it set off.
    Scale,
}

impl FeedKind {
    pub fn as_str(self) -> &'static str {
        match self {
            FeedKind::Change => "change",
            FeedKind::Rollout => "rollout",
            FeedKind::Scale => "scale",
        }
    }
}

/// How a rollout or scale ended, as far as the stored data tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Completed,
    /// `ProgressDeadlineExceeded`.
    Stuck,
    /// The next rollout brought back a ReplicaSet (or the images) this one
    /// replaced.
    RolledBack,
    InProgress,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Completed => "completed",
            Outcome::Stuck => "stuck",
            Outcome::RolledBack => "rolled_back",
            Outcome::InProgress => "in_progress",
        }
    }
}

/// An image a rollout sets, from its template change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageChange {
    pub container: String,
    /// The image before: the previous rollout's, else the template's
    /// state just before the head (from the store, in [`load`]).
    pub from: Option<ImageRef>,
    pub to: ImageRef,
}

/// One row of the change feed.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedItem {
    /// The change itself: the version or event, or the workload's template
    /// or replicas change of a rollout or scale.
    pub head: ChangeRow,
    pub kind: FeedKind,
    /// Rollouts and scales only, when anything of the workload was stored
    /// after its change.
    pub outcome: Option<Outcome>,
    /// What the rollout or scale set off, oldest first (status versions only
    /// when status was asked for).
    pub members: Vec<ChangeRow>,
    /// The time of the last member (the head's time without members).
    pub end_ms: i64,
    /// The ReplicaSet the rollout brought up, when known.
    pub new_replicaset: Option<String>,
    /// The images the template change sets (rollouts).
    pub images: Vec<ImageChange>,
}

impl FeedItem {
    fn single(row: ChangeRow) -> FeedItem {
        FeedItem {
            end_ms: row.at_ms,
            head: row,
            kind: FeedKind::Change,
            outcome: None,
            members: Vec::new(),
            new_replicaset: None,
            images: Vec::new(),
        }
    }

    /// The head's summary, with the outcome of a rollout or scale
    /// (`image … → … by kubectl-set; rollout completed`).
    pub fn summary(&self) -> String {
        match (self.kind, self.outcome) {
            (FeedKind::Change, _) | (_, None) => self.head.summary.clone(),
            (k, Some(o)) => format!(
                "{}; {} {}",
                self.head.summary,
                k.as_str(),
                o.as_str().replace('_', " ")
            ),
        }
    }

    /// The (namespace, workload) the row is about, empty when none.
    pub fn workload(&self) -> String {
        workload_name(&self.head).unwrap_or_default()
    }
}

/// The workload of a row, by its kind and name.
fn workload_name(r: &ChangeRow) -> Option<String> {
    workload_of_ref(&ObjectRef {
        kind: r.kind.clone(),
        namespace: r.namespace.clone(),
        name: r.name.clone(),
        ..ObjectRef::default()
    })
}

type WorkloadKey = (String, String, String);

fn key_of(r: &ChangeRow) -> Option<WorkloadKey> {
    workload_name(r).map(|w| (r.cluster.clone(), r.namespace.clone(), w))
}

/// Does a head row open a rollout or a scale?
fn opens(r: &ChangeRow) -> Option<FeedKind> {
    if r.category != "object" || !ROLLOUT_KINDS.contains(&r.kind.as_str()) {
        return None;
    }
    match r.change.as_str() {
        "created" => Some(FeedKind::Rollout),
        "updated" => {
            let spec = r.patch.as_ref()?.get("spec")?;
            if spec.get("template").is_some() {
                Some(FeedKind::Rollout)
            } else if spec.get("replicas").is_some() {
                Some(FeedKind::Scale)
            } else {
                None
            }
        }
        _ => None,
    }
}

/// The ReplicaSet of a Deployment's Pod (`api-5f6d7c8b9-qwz7p` →
/// `api-5f6d7c8b9`).
fn replicaset_of_pod(pod: &str) -> Option<&str> {
    pod.rsplit_once('-').map(|(rs, _)| rs)
}

/// A rollout or scale being assembled.
struct Open {
    item: FeedItem,
    key: WorkloadKey,
    deadline_ms: i64,
    /// The workload's status as its status versions after the head left it:
    /// a key with `null` was removed (Kubernetes omits zeros).
    status: Map<String, Value>,
    target_replicas: Option<i64>,
    old_replicasets: BTreeSet<String>,
    deadline_exceeded: bool,
    completed: bool,
    /// Rows taken (listed or not): without any, the outcome is unknown.
    taken: usize,
}

impl Open {
    fn new(head: ChangeRow, kind: FeedKind, key: WorkloadKey) -> Open {
        let target_replicas = head
            .patch
            .as_ref()
            .and_then(|p| p.pointer("/spec/replicas"))
            .and_then(Value::as_i64);
        let images = head
            .patch
            .as_ref()
            .map(container_images)
            .unwrap_or_default()
            .into_iter()
            .map(|(container, image)| ImageChange {
                container,
                from: None,
                to: ImageRef::parse(&image),
            })
            .collect();
        Open {
            deadline_ms: head.at_ms.saturating_add(ROLLOUT_MAX_MS),
            item: FeedItem {
                end_ms: head.at_ms,
                head,
                kind,
                outcome: None,
                members: Vec::new(),
                new_replicaset: None,
                images: if kind == FeedKind::Rollout {
                    images
                } else {
                    Vec::new()
                },
            },
            key,
            status: Map::new(),
            target_replicas,
            old_replicasets: BTreeSet::new(),
            deadline_exceeded: false,
            completed: false,
            taken: 0,
        }
    }

    fn workload_kind(&self) -> &str {
        &self.item.head.kind
    }

    /// Takes a member; `keep` says whether it is listed.
    fn take(&mut self, r: ChangeRow, keep: bool) {
        if !(r.category == "event" && r.change == "Warning") {
            self.taken += 1;
        }
        let own = r.kind == self.item.head.kind && r.name == self.key.2;
        if r.category == "event" {
            if r.reason.as_deref() == Some("ProgressDeadlineExceeded") {
                self.deadline_exceeded = true;
            }
        } else if own {
            if let Some(s) = r.patch.as_ref().and_then(|p| p.get("status")) {
                if let Some(m) = s.as_object() {
                    for (k, v) in m {
                        self.status.insert(k.clone(), v.clone());
                    }
                }
            }
            if let Some(n) = r
                .patch
                .as_ref()
                .and_then(|p| p.pointer("/spec/replicas"))
                .and_then(Value::as_i64)
            {
                self.target_replicas = Some(n);
            }
        } else if r.kind == "ReplicaSet" {
            if r.change == "created" && self.item.new_replicaset.is_none() {
                self.item.new_replicaset = Some(r.name.clone());
            } else if Some(&r.name) != self.item.new_replicaset.as_ref() {
                self.old_replicasets.insert(r.name.clone());
            }
        } else if r.kind == "Pod" && self.workload_kind() == "Deployment" {
            if let Some(rs) = replicaset_of_pod(&r.name) {
                if r.change == "created" && self.item.new_replicaset.is_none() {
                    self.item.new_replicaset = Some(rs.to_string());
                } else if r.change == "deleted" && Some(rs) != self.item.new_replicaset.as_deref() {
                    self.old_replicasets.insert(rs.to_string());
                }
            }
        }
        self.item.end_ms = self.item.end_ms.max(r.at_ms);
        if !self.completed && self.is_complete() {
            self.completed = true;
            self.deadline_ms = self
                .deadline_ms
                .min(r.at_ms.saturating_add(COMPLETION_GRACE_MS));
        }
        if keep {
            self.item.members.push(r);
        }
    }

    fn int(&self, k: &str) -> Option<i64> {
        // A removed count is a zero (Kubernetes omits zero counts).
        self.status.get(k).map(|v| {
            if v.is_null() {
                0
            } else {
                v.as_i64().unwrap_or(-1)
            }
        })
    }

    fn progressing(&self) -> Option<(String, String, String)> {
        self.status
            .get("conditions")?
            .as_array()?
            .iter()
            .find(|c| c.get("type").and_then(Value::as_str) == Some("Progressing"))
            .map(|c| {
                let f = |k: &str| c.get(k).and_then(Value::as_str).unwrap_or("").to_string();
                (f("status"), f("reason"), f("message"))
            })
    }

    fn is_complete(&self) -> bool {
        if self.item.kind == FeedKind::Scale {
            let Some(target) = self.target_replicas else {
                return false;
            };
            let have = match self.workload_kind() {
                "StatefulSet" => self.int("readyReplicas"),
                _ => self.int("availableReplicas"),
            };
            return have == Some(target) && self.int("replicas").is_none_or(|n| n == target);
        }
        match self.workload_kind() {
            "Deployment" => {
                self.progressing().is_some_and(|(_, reason, message)| {
                    reason == "NewReplicaSetAvailable"
                        && self.item.new_replicaset.as_ref().is_none_or(|rs| {
                            !message.contains('"') || message.contains(rs.as_str())
                        })
                })
            }
            "StatefulSet" => match (
                self.status.get("currentRevision"),
                self.status.get("updateRevision"),
            ) {
                (Some(c), Some(u)) => c == u && !c.is_null(),
                (Some(c), None) => !c.is_null(),
                _ => false,
            },
            "DaemonSet" => match (
                self.int("updatedNumberScheduled"),
                self.int("numberAvailable"),
                self.int("desiredNumberScheduled"),
            ) {
                (Some(u), _, Some(d)) => {
                    u == d && self.int("numberAvailable").is_none_or(|a| a == d)
                }
                (Some(u), Some(a), None) => u == a && u > 0,
                _ => false,
            },
            _ => false,
        }
    }

    fn finish(mut self) -> (FeedItem, BTreeSet<String>) {
        let stuck = self.deadline_exceeded
            || self
                .progressing()
                .is_some_and(|(s, reason, _)| s == "False" && reason == "ProgressDeadlineExceeded");
        // Nothing of the workload was seen after its change (its
        // ReplicaSets, Pods and status not watched): the outcome is unknown.
        self.item.outcome = (self.taken > 0 || stuck).then_some(if stuck {
            Outcome::Stuck
        } else if self.completed {
            Outcome::Completed
        } else {
            Outcome::InProgress
        });
        (self.item, self.old_replicasets)
    }
}

/// Groups timeline rows (any order) into the feed, newest first (see the
/// module docs). Status-only rows are listed (as rows or members) only with
/// `include_status`; they count for outcomes either way.
pub fn group(mut rows: Vec<ChangeRow>, include_status: bool) -> Vec<FeedItem> {
    // Oldest first; at one time, the workload's own change opens before
    // what it sets off.
    rows.sort_by_key(|r| (r.at_ms, opens(r).is_none()));
    let mut open: BTreeMap<WorkloadKey, Open> = BTreeMap::new();
    // Finished rollouts and scales with the ReplicaSets they replaced.
    let mut done: Vec<(FeedItem, BTreeSet<String>)> = Vec::new();
    let mut singles: Vec<FeedItem> = Vec::new();
    for r in rows {
        let key = key_of(&r);
        // Close what expired by now.
        let expired: Vec<WorkloadKey> = open
            .iter()
            .filter(|(_, o)| o.deadline_ms < r.at_ms)
            .map(|(k, _)| k.clone())
            .collect();
        for k in expired {
            if let Some(o) = open.remove(&k) {
                done.push(o.finish());
            }
        }
        if let Some(kind) = opens(&r) {
            let k = (r.cluster.clone(), r.namespace.clone(), r.name.clone());
            if let Some(prev) = open.remove(&k) {
                done.push(prev.finish());
            }
            open.insert(k.clone(), Open::new(r, kind, k));
            continue;
        }
        let status_only = is_status_only(&r);
        let warning = r.category == "event" && r.change == "Warning";
        match key.as_ref().and_then(|k| open.get_mut(k)) {
            Some(o) if !warning => o.take(r, include_status || !status_only),
            Some(o) => {
                // A Warning stays a row of its own, but a deadline counts.
                o.take(r.clone(), false);
                singles.push(FeedItem::single(r));
            }
            None if include_status || !status_only => singles.push(FeedItem::single(r)),
            None => {}
        }
    }
    done.extend(open.into_values().map(Open::finish));
    mark_rollbacks(&mut done);
    let mut out: Vec<FeedItem> = done.into_iter().map(|(i, _)| i).collect();
    out.extend(singles);
    // Newest first; a stable sort keeps heads before what they set off.
    out.sort_by_key(|i| std::cmp::Reverse(i.head.at_ms));
    out
}

/// A rollout is rolled back when the next rollout of its workload brings
/// back a ReplicaSet it replaced, or sets the images it replaced; the
/// images a rollout replaced are the previous rollout's.
fn mark_rollbacks(done: &mut [(FeedItem, BTreeSet<String>)]) {
    let mut by_workload: BTreeMap<WorkloadKey, Vec<usize>> = BTreeMap::new();
    for (i, (item, _)) in done.iter().enumerate() {
        if item.kind == FeedKind::Rollout {
            let h = &item.head;
            by_workload
                .entry((h.cluster.clone(), h.namespace.clone(), h.name.clone()))
                .or_default()
                .push(i);
        }
    }
    for idx in by_workload.values_mut() {
        idx.sort_by_key(|&i| done[i].0.head.at_ms);
        for w in 1..idx.len() {
            let (cur, prev) = (idx[w], idx[w - 1]);
            let from: Vec<ImageChange> = done[prev].0.images.clone();
            for ic in done[cur].0.images.iter_mut() {
                ic.from = from
                    .iter()
                    .find(|p| p.container == ic.container)
                    .map(|p| p.to.clone());
            }
        }
        for w in 0..idx.len().saturating_sub(1) {
            let (cur, next) = (idx[w], idx[w + 1]);
            let brings_back_rs = done[next]
                .0
                .new_replicaset
                .as_ref()
                .is_some_and(|rs| done[cur].1.contains(rs));
            let restores_images = !done[next].0.images.is_empty()
                && done[next].0.images.iter().all(|ic| {
                    ic.from.as_ref() != Some(&ic.to)
                        && done[cur]
                            .0
                            .images
                            .iter()
                            .find(|c| c.container == ic.container)
                            .and_then(|c| c.from.as_ref())
                            == Some(&ic.to)
                });
            if brings_back_rs || restores_images {
                done[cur].0.outcome = Some(Outcome::RolledBack);
            }
        }
    }
}

/// Reads the feed for a query: the rows of `query` (at most
/// [`MAX_SCAN_ROWS`]) and, when status rows are left out, the status
/// versions of the workloads that rolled out or scaled (for their
/// outcomes); then [`group`], at most `query.limit` items.
pub async fn load(store: &dyn EventStore, query: &ChangeQuery) -> Result<Vec<FeedItem>> {
    let mut q = query.clone();
    q.limit = MAX_SCAN_ROWS;
    let mut rows = store.changes(&q).await?;
    if !query.include_status {
        let heads: BTreeSet<(String, String, String, String)> = rows
            .iter()
            .filter(|r| opens(r).is_some())
            .map(|r| {
                (
                    r.cluster.clone(),
                    r.namespace.clone(),
                    r.kind.clone(),
                    r.name.clone(),
                )
            })
            .collect();
        if let Some(start) = rows
            .iter()
            .filter(|r| opens(r).is_some())
            .map(|r| r.at_ms)
            .min()
        {
            if let Ok(range) = TimeRange::new(start, query.range.end_ms) {
                let sq = ChangeQuery {
                    range,
                    include_status: true,
                    include_events: false,
                    limit: MAX_SCAN_ROWS,
                    ..query.clone()
                };
                let extra = store.changes(&sq).await?;
                rows.extend(extra.into_iter().filter(|r| {
                    is_status_only(r)
                        && heads.contains(&(
                            r.cluster.clone(),
                            r.namespace.clone(),
                            r.kind.clone(),
                            r.name.clone(),
                        ))
                }));
            }
        }
    }
    let mut items = group(rows, query.include_status);
    items.truncate(query.limit);
    images_before(store, &mut items).await?;
    Ok(items)
}

/// The images a rollout replaced when no earlier rollout of its workload
/// is in the range: the template just before its head, from the store.
async fn images_before(store: &dyn EventStore, items: &mut [FeedItem]) -> Result<()> {
    for item in items
        .iter_mut()
        .filter(|i| i.kind == FeedKind::Rollout && i.images.iter().any(|ic| ic.from.is_none()))
    {
        let h = &item.head;
        let Some(prev) = store
            .object_at(
                Some(&h.cluster),
                &h.kind,
                &h.namespace,
                &h.name,
                h.at_ms.saturating_sub(1),
            )
            .await?
        else {
            continue;
        };
        let before = container_images(&prev.object);
        for ic in item.images.iter_mut().filter(|ic| ic.from.is_none()) {
            ic.from = before
                .iter()
                .find(|(c, _)| *c == ic.container)
                .map(|(_, image)| ImageRef::parse(image));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde_json::json;

    fn row(at: i64, kind: &str, name: &str, change: &str, patch: Option<Value>) -> ChangeRow {
        ChangeRow {
            at_ms: at,
            category: if change == "Normal" || change == "Warning" {
                "event".into()
            } else {
                "object".into()
            },
            change: change.into(),
            cluster: "prod".into(),
            namespace: "shop".into(),
            kind: kind.into(),
            name: name.into(),
            uid: format!("{kind}/{name}"),
            resource_version: at.to_string(),
            summary: format!("{kind} {name} {change}"),
            manager: None,
            gitops: None,
            patch,
            reason: None,
            count: None,
            gap_from_ms: None,
        }
    }

    fn event(at: i64, kind: &str, name: &str, ty: &str, reason: &str) -> ChangeRow {
        ChangeRow {
            reason: Some(reason.into()),
            ..row(at, kind, name, ty, None)
        }
    }

    fn progressing(reason: &str, rs: &str) -> Value {
        json!({"status": {"conditions": [
            {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable"},
            {"type": "Progressing", "status": if reason == "ProgressDeadlineExceeded" { "False" } else { "True" },
             "reason": reason, "message": format!("ReplicaSet \"{rs}\" is progressing.")}]}})
    }

    fn template(image: &str) -> Value {
        json!({"spec": {"template": {"spec": {"containers": [{"name": "payment", "image": image}]}}}})
    }

    /// What the controllers write after `kubectl set image` on
    /// shop/payment (3 replicas), oldest first.
    fn rollout(t: i64, image: &str, new_rs: &str, old_rs: &str, finish: &str) -> Vec<ChangeRow> {
        let mut v = vec![
            row(t, "Deployment", "payment", "updated", Some(template(image))),
            row(
                t,
                "Deployment",
                "payment",
                "updated",
                Some(
                    json!({"metadata": {"annotations": {"deployment.kubernetes.io/revision": "2"}}}),
                ),
            ),
            event(
                t + 1,
                "Deployment",
                "payment",
                "Normal",
                "ScalingReplicaSet",
            ),
            row(t + 1, "ReplicaSet", new_rs, "created", None),
            row(
                t + 2,
                "Deployment",
                "payment",
                "updated",
                Some(progressing("ReplicaSetUpdated", new_rs)),
            ),
            event(t + 2, "ReplicaSet", new_rs, "Normal", "SuccessfulCreate"),
        ];
        for i in 0..3 {
            let pod = format!("{new_rs}-p{i}xyz");
            v.push(row(t + 3 + i, "Pod", &pod, "created", None));
            v.push(row(
                t + 4 + i,
                "Pod",
                &pod,
                "updated",
                Some(json!({"status": {"phase": "Running"}})),
            ));
            v.push(event(t + 4 + i, "Pod", &pod, "Normal", "Started"));
            v.push(row(
                t + 5 + i,
                "ReplicaSet",
                old_rs,
                "updated",
                Some(json!({"spec": {"replicas": 2 - i}})),
            ));
            v.push(row(
                t + 6 + i,
                "Pod",
                &format!("{old_rs}-o{i}abc"),
                "deleted",
                None,
            ));
            v.push(row(
                t + 6 + i,
                "ReplicaSet",
                new_rs,
                "updated",
                Some(json!({"status": {"readyReplicas": i + 1}})),
            ));
        }
        v.push(row(
            t + 20,
            "Deployment",
            "payment",
            "updated",
            Some(progressing(finish, new_rs)),
        ));
        v
    }

    #[test]
    fn status_only_versions_are_bookkeeping() {
        let st = |p: Value| is_status_only(&row(1, "Deployment", "payment", "updated", Some(p)));
        assert!(st(json!({"status": {"replicas": 3}})));
        assert!(st(
            json!({"metadata": {"annotations": {"deployment.kubernetes.io/revision": "2"}}, "status": {"x": 1}})
        ));
        assert!(st(
            json!({"metadata": {"deletionTimestamp": "2024-05-31T16:00:00Z", "deletionGracePeriodSeconds": 30}})
        ));
        assert!(!st(
            json!({"spec": {"replicas": 3}, "status": {"replicas": 3}})
        ));
        assert!(!st(json!({"metadata": {"annotations": {"team": "a"}}})));
        assert!(!st(json!({"metadata": {"labels": {"a": "b"}}})));
        let mut digest = row(
            1,
            "Pod",
            "p",
            "updated",
            Some(json!({"status": {"containerStatuses": []}})),
        );
        digest.category = "image_digest".into();
        assert!(!is_status_only(&digest));
        let mut node = row(
            1,
            "Node",
            "n1",
            "updated",
            Some(json!({"status": {"conditions": []}})),
        );
        node.category = "node".into();
        assert!(!is_status_only(&node));
        assert!(!is_status_only(&row(1, "Pod", "p", "created", None)));
    }

    #[test]
    fn a_rollout_is_one_row_with_its_outcome_and_members() {
        let t = 1_000_000;
        let mut rows = rollout(
            t,
            "registry.local/shop/payment:2.2",
            "payment-7d9f8b6c5",
            "payment-5f6d7c8b9",
            "NewReplicaSetAvailable",
        );
        rows.push(row(
            t + 30,
            "ConfigMap",
            "payment-config",
            "updated",
            Some(json!({"data": {"k": "sha256:x"}})),
        ));
        rows.push(event(
            t + 40,
            "Pod",
            "payment-7d9f8b6c5-p0xyz",
            "Warning",
            "BackOff",
        ));
        // Long after completion: a pod replaced by a node drain is its own row.
        rows.push(row(
            t + 10 * 60_000,
            "Pod",
            "payment-7d9f8b6c5-zzzzz",
            "created",
            None,
        ));
        rows.reverse();
        let feed = group(rows.clone(), false);
        let brief: Vec<(&str, &str, Option<&str>)> = feed
            .iter()
            .map(|i| {
                (
                    i.kind.as_str(),
                    i.head.kind.as_str(),
                    i.outcome.map(Outcome::as_str),
                )
            })
            .collect();
        assert_eq!(
            brief,
            [
                ("change", "Pod", None),
                ("change", "Pod", None),
                ("change", "ConfigMap", None),
                ("rollout", "Deployment", Some("completed")),
            ]
        );
        let r = &feed[3];
        assert_eq!(r.new_replicaset.as_deref(), Some("payment-7d9f8b6c5"));
        assert_eq!(r.images[0].to.registry, "registry.local");
        assert_eq!(r.images[0].to.tag, "2.2");
        assert!(r.members.iter().all(|m| !is_status_only(m)));
        assert_eq!(r.members.len(), 3 + 3 * 4, "{:#?}", r.members);
        assert_eq!(r.summary(), "Deployment payment updated; rollout completed");
        // With status, the status versions are members too and nothing else changes.
        let all = group(rows, true);
        assert_eq!(all.len(), 4);
        assert!(all[3].members.iter().any(is_status_only));
        assert_eq!(all[3].outcome, Some(Outcome::Completed));
    }

    #[test]
    fn stuck_in_progress_and_rolled_back() {
        let t = 1_000_000;
        let stuck = rollout(
            t,
            "a:2",
            "payment-7d9f8b6c5",
            "payment-5f6d7c8b9",
            "ProgressDeadlineExceeded",
        );
        assert_eq!(group(stuck, false)[0].outcome, Some(Outcome::Stuck));
        let mut going = rollout(
            t,
            "a:2",
            "payment-7d9f8b6c5",
            "payment-5f6d7c8b9",
            "ReplicaSetUpdated",
        );
        going.retain(|r| r.at_ms < t + 5);
        assert_eq!(group(going, false)[0].outcome, Some(Outcome::InProgress));
        let mut deadline = rollout(
            t,
            "a:2",
            "payment-7d9f8b6c5",
            "payment-5f6d7c8b9",
            "ReplicaSetUpdated",
        );
        deadline.push(event(
            t + 30,
            "Deployment",
            "payment",
            "Warning",
            "ProgressDeadlineExceeded",
        ));
        let feed = group(deadline, false);
        assert_eq!(feed[1].outcome, Some(Outcome::Stuck));
        assert_eq!(
            feed[0].head.reason.as_deref(),
            Some("ProgressDeadlineExceeded")
        );
        // 2.1 → 2.2, then `kubectl rollout undo`: the old ReplicaSet comes back.
        let mut rows = rollout(
            t,
            "a:2.2",
            "payment-7d9f8b6c5",
            "payment-5f6d7c8b9",
            "ReplicaSetUpdated",
        );
        let mut undo = rollout(
            t + 60_000,
            "a:2.1",
            "payment-5f6d7c8b9",
            "payment-7d9f8b6c5",
            "NewReplicaSetAvailable",
        );
        undo.retain(|r| !(r.kind == "ReplicaSet" && r.change == "created"));
        rows.extend(undo);
        let feed = group(rows, false);
        let outcomes: Vec<_> = feed
            .iter()
            .map(|i| i.outcome.map(Outcome::as_str))
            .collect();
        assert_eq!(outcomes, [Some("completed"), Some("rolled_back")]);
        assert_eq!(feed[0].new_replicaset.as_deref(), Some("payment-5f6d7c8b9"));
        assert_eq!(feed[0].images[0].from.as_ref().unwrap().reference, "a:2.2");
    }

    #[test]
    fn a_scale_is_one_row() {
        let t = 5_000;
        let rows = vec![
            row(
                t,
                "Deployment",
                "payment",
                "updated",
                Some(json!({"spec": {"replicas": 5}})),
            ),
            event(t, "Deployment", "payment", "Normal", "ScalingReplicaSet"),
            row(
                t,
                "ReplicaSet",
                "payment-7d9f8b6c5",
                "updated",
                Some(
                    json!({"spec": {"replicas": 5}, "metadata": {"annotations": {"deployment.kubernetes.io/desired-replicas": "5"}}}),
                ),
            ),
            row(t + 1, "Pod", "payment-7d9f8b6c5-p3xyz", "created", None),
            row(t + 1, "Pod", "payment-7d9f8b6c5-p4xyz", "created", None),
            row(
                t + 2,
                "Deployment",
                "payment",
                "updated",
                Some(
                    json!({"status": {"replicas": 5, "availableReplicas": 5, "readyReplicas": 5}}),
                ),
            ),
        ];
        let feed = group(rows, false);
        assert_eq!(feed.len(), 1);
        assert_eq!(
            (feed[0].kind, feed[0].outcome),
            (FeedKind::Scale, Some(Outcome::Completed))
        );
        assert_eq!(feed[0].members.len(), 4);
        assert!(feed[0].images.is_empty());
    }
}
