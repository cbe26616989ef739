//! Writes of events and object versions: dedup by (uid, count), twins of
//! watched and synthesized events, version chains with keyframes, the
//! latest row and its resourceVersion checks.

use super::*;

impl CassandraEventStore {
    // -----------------------------------------------------------------
    // Events: writes

    pub(super) async fn write_events_all(
        &self,
        events: Vec<KubeEvent>,
    ) -> Result<EventWriteOutcome> {
        self.register(events.iter().map(|e| {
            (
                SCOPE_EVENTS,
                e.cluster.clone(),
                day_of(e.last_ms),
                String::new(),
            )
        }))
        .await?;
        let groups = event_groups(&events);
        let events = &events;
        let outs: Vec<EventWriteOutcome> = stream::iter(
            groups
                .into_iter()
                .map(|g| async move {
                    let mut out = EventWriteOutcome::default();
                    for i in g {
                        let ev = &events[i];
                        let content = content_hash(&ev.reason, &ev.involved.kind, &ev.message);
                        let _lock = self.event_locks[stripe(&content.to_string())].lock().await;
                        let o = self.write_event(ev, content).await?;
                        out.events_created += o.events_created;
                        out.occurrences_written += o.occurrences_written;
                        out.duplicates += o.duplicates;
                        out.matched_watch += o.matched_watch;
                    }
                    Ok::<_, Error>(out)
                })
                .collect::<Vec<_>>(),
        )
        .buffer_unordered(FANOUT)
        .try_collect()
        .await?;
        let mut total = EventWriteOutcome::default();
        for o in outs {
            total.events_created += o.events_created;
            total.occurrences_written += o.occurrences_written;
            total.duplicates += o.duplicates;
            total.matched_watch += o.matched_watch;
        }
        Ok(total)
    }

    pub(super) async fn write_event(
        &self,
        ev: &KubeEvent,
        content: i64,
    ) -> Result<EventWriteOutcome> {
        let mut out = EventWriteOutcome::default();
        let synthetic = ev.is_synthetic();
        let cluster = ev.cluster.as_str();
        let uid = ev.uid.as_str();
        if synthetic && self.watched_twin(ev, content).await? {
            out.matched_watch = 1;
            return Ok(out);
        }
        // One occurrence per count: a re-send of the same count (another
        // replica, a re-list, kube-eventer) is a duplicate whatever its
        // time; uid-less events count their occurrences (count 0).
        let count = if synthetic {
            0
        } else {
            i64::try_from(ev.count).unwrap_or(i64::MAX)
        };
        let dup = if synthetic {
            let r = self
                .db
                .exec(KEY_SAME_AT, (cluster, uid, 0i64, ev.last_ms))
                .await?;
            !crate::session::result_rows::<(i64,)>(KEY_SAME_AT, r)?.is_empty()
        } else {
            let r = self.db.exec(KEY_SAME_COUNT, (cluster, uid, count)).await?;
            !crate::session::result_rows::<(i64,)>(KEY_SAME_COUNT, r)?.is_empty()
        };
        if dup {
            out.duplicates = 1;
        } else {
            let r = self.db.exec(KEY_ANY, (cluster, uid)).await?;
            let known = !crate::session::result_rows::<(i64,)>(KEY_ANY, r)?.is_empty();
            let data = EventMeta::of(ev).encode()?;
            let d = day_of(ev.last_ms);
            let at = ev.last_ms;
            let first = ev.first_ms;
            futures::try_join!(
                self.db
                    .write(OCC_W, (cluster, d, at, uid, count, first, data)),
                self.db
                    .write(CONTENT_W, (cluster, d, content, at, uid, count, first)),
            )?;
            // The key last: once it is there, a re-send is a duplicate, so
            // a write that failed midway is retried whole.
            self.db.write(KEY_W, (cluster, uid, count, at)).await?;
            out.events_created = u64::from(!known);
            out.occurrences_written = 1;
        }
        if !synthetic {
            self.remove_synthetic_twins(ev, content).await?;
        }
        Ok(out)
    }

    /// A watched event this uid-less one is a copy of?
    pub(super) async fn watched_twin(&self, ev: &KubeEvent, content: i64) -> Result<bool> {
        let t = ev.last_ms;
        let from = t - TWIN_WINDOW_MS;
        let h = self.horizon();
        // Occurrences from a second before; spans reaching back to it show
        // in the next day's partition at the latest.
        for d in day_of(from)..=day_of(t + TWIN_WINDOW_MS).saturating_add(1) {
            let rows: Vec<(i64, String, Option<i64>)> = self
                .db
                .rows(
                    CONTENT_FROM,
                    (ev.cluster.as_str(), d, content, from),
                    MAX_PER_KEY,
                    "occurrences of one event content",
                )
                .await?;
            let rows: Vec<(i64, String, i64)> = rows
                .into_iter()
                .map(|(at, uid, first)| (at, uid, first.unwrap_or(at)))
                .collect();
            if is_watched_twin(&rows, t, h) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// A watched event removes the uid-less copies that arrived first.
    pub(super) async fn remove_synthetic_twins(&self, ev: &KubeEvent, content: i64) -> Result<()> {
        let lo = ev.first_ms.min(ev.last_ms) - TWIN_WINDOW_MS;
        let hi = ev.last_ms + TWIN_WINDOW_MS;
        let mut twins = BTreeSet::new();
        for d in twin_days(lo, hi) {
            let rows: Vec<(String,)> = self
                .db
                .rows(
                    CONTENT_RANGE,
                    (ev.cluster.as_str(), d, content, lo, hi),
                    MAX_PER_KEY,
                    "occurrences of one event content",
                )
                .await?;
            twins.extend(
                rows.into_iter()
                    .map(|r| r.0)
                    .filter(|u| u.starts_with(SYNTHETIC_UID_PREFIX)),
            );
        }
        for uid in twins {
            self.delete_event(&ev.cluster, &uid, content).await?;
        }
        Ok(())
    }

    /// Deletes every occurrence of one event.
    pub(super) async fn delete_event(&self, cluster: &str, uid: &str, content: i64) -> Result<()> {
        let keys: Vec<(i64, i64)> = self
            .db
            .rows(
                KEYS_OF,
                (cluster, uid),
                MAX_PER_KEY,
                "occurrences of one event",
            )
            .await?;
        stream::iter(
            keys.into_iter()
                .map(|(cnt, at)| async move {
                    let d = day_of(at);
                    futures::try_join!(
                        self.db.write(OCC_ROW_DEL, (cluster, d, at, uid, cnt)),
                        self.db
                            .write(CONTENT_ROW_DEL, (cluster, d, content, at, uid, cnt)),
                    )?;
                    Ok::<_, Error>(())
                })
                .collect::<Vec<_>>(),
        )
        .buffer_unordered(FANOUT)
        .try_collect::<Vec<()>>()
        .await?;
        self.db.write(KEYS_DEL, (cluster, uid)).await
    }

    // -----------------------------------------------------------------
    // Objects: writes

    pub(super) async fn write_objects_all(
        &self,
        writes: Vec<ObjectWrite>,
    ) -> Result<ObjectWriteOutcome> {
        let mut groups: Vec<Vec<&ObjectWrite>> = Vec::new();
        let mut index: HashMap<(&str, &str), usize> = HashMap::new();
        for w in &writes {
            match index.get(&(w.cluster.as_str(), w.uid.as_str())) {
                Some(&i) => groups[i].push(w),
                None => {
                    index.insert((w.cluster.as_str(), w.uid.as_str()), groups.len());
                    groups.push(vec![w]);
                }
            }
        }
        let outs: Vec<ObjectWriteOutcome> = stream::iter(
            groups
                .into_iter()
                .map(|g| async move {
                    let mut out = ObjectWriteOutcome::default();
                    let Some(first) = g.first() else {
                        return Ok(out);
                    };
                    let _lock = self.object_locks[stripe(&first.uid)].lock().await;
                    for w in g {
                        out.merge(&self.write_object(w).await?);
                    }
                    Ok::<_, Error>(out)
                })
                .collect::<Vec<_>>(),
        )
        .buffer_unordered(FANOUT)
        .try_collect()
        .await?;
        let mut total = ObjectWriteOutcome::default();
        for o in &outs {
            total.merge(o);
        }
        Ok(total)
    }

    pub(super) async fn write_object(&self, w: &ObjectWrite) -> Result<ObjectWriteOutcome> {
        let mut out = ObjectWriteOutcome::default();
        let resource = resource_key(&w.group, &w.kind);
        let shard = latest_shard(&w.uid);
        let latest = self.latest(&w.cluster, &resource, shard, &w.uid).await?;
        let stored = match rv_check(latest.as_ref(), w) {
            RvCheck::Stored => true,
            RvCheck::NotStored => false,
            RvCheck::Scan => self
                .version_rows(&w.cluster, &w.uid)
                .await?
                .iter()
                .any(|v| v.rv == w.resource_version),
        };
        match plan_write(latest.as_ref().map(|l| &l.state), stored, w, KEYFRAME_EVERY) {
            WritePlan::Duplicate => out.duplicates = 1,
            WritePlan::Stale => out.stale = 1,
            WritePlan::Unchanged => {
                if let Some(l) = &latest {
                    self.touch_rv(w, &resource, shard, l).await?;
                }
                out.unchanged = 1;
            }
            WritePlan::Version(v) => {
                self.store_version(w, &resource, shard, latest.as_ref(), &v)
                    .await?;
                out.versions_written = 1;
            }
        }
        Ok(out)
    }

    /// An unchanged write moves the last seen resourceVersion, keeping the
    /// row's time to live.
    pub(super) async fn touch_rv(
        &self,
        w: &ObjectWrite,
        resource: &str,
        shard: i32,
        l: &Latest,
    ) -> Result<()> {
        if l.from_versions {
            let mut l = l.clone();
            l.state.rv = w.resource_version.clone();
            return self
                .write_latest(&w.cluster, resource, shard, &w.uid, &l)
                .await;
        }
        let ttl = l
            .ttl
            .filter(|t| *t > 0)
            .unwrap_or_else(|| self.object_ttl_secs());
        self.db
            .write(
                LATEST_RV,
                (
                    ttl,
                    w.resource_version.as_str(),
                    w.cluster.as_str(),
                    resource,
                    shard,
                    w.uid.as_str(),
                ),
            )
            .await
    }

    pub(super) async fn store_version(
        &self,
        w: &ObjectWrite,
        resource: &str,
        shard: i32,
        latest: Option<&Latest>,
        v: &VersionPlan,
    ) -> Result<()> {
        let wall = kube_insight_core::time::now_ms();
        let cluster = w.cluster.as_str();
        let uid = w.uid.as_str();
        let mut keyframe_ms = latest.map_or(wall, |l| l.keyframe_ms);
        if let Some(l) = latest {
            // The previous version stays the state until this one's time:
            // when its rows are old, they get a fresh full copy.
            if reanchor_due(l.version_ms, wall)
                && self
                    .reanchor(cluster, uid, l.state.seq, &l.state.object)
                    .await?
            {
                keyframe_ms = wall;
            }
        }
        let keyframe = keyframe_due(v.keyframe, keyframe_ms, wall);
        if keyframe {
            keyframe_ms = wall;
        }
        let deleted = v.change == ChangeKind::Deleted;
        let blob = encode_object(&v.state, ZSTD_LEVEL)?;
        let frame = if keyframe {
            MaybeUnset::Set(blob.clone())
        } else {
            MaybeUnset::Unset
        };
        let patch = match &v.patch {
            Some(p) => MaybeUnset::Set(encode_patch(p)?.into_bytes()),
            None => MaybeUnset::Unset,
        };
        let meta = VersionMeta {
            group: w.group.clone(),
            kind: w.kind.clone(),
            namespace: w.namespace.clone(),
            name: w.name.clone(),
            manager: v.manager.clone(),
        }
        .encode()?;
        let mut catalog = vec![(SCOPE_KINDS, w.cluster.clone(), 0, resource.to_string())];
        let timeline = v.change != ChangeKind::Observed;
        if timeline {
            catalog.push((
                SCOPE_CHANGES,
                w.cluster.clone(),
                day_of(v.at_ms),
                String::new(),
            ));
        }
        self.register(catalog).await?;
        let record = if timeline {
            Some(
                serde_json::to_vec(&ChangeRecord::of(w, v))
                    .map_err(|e| corrupt("encoding a change", e))?,
            )
        } else {
            None
        };
        let version = self.db.write(
            VERSION_W,
            (
                cluster,
                uid,
                v.seq,
                w.resource_version.as_str(),
                v.at_ms,
                v.change.as_str(),
                keyframe,
                MaybeUnset::Set(meta),
                patch,
                frame,
            ),
        );
        let key = object_key(&w.kind, &w.namespace, &w.name);
        let name = self.db.write(NAME_W, (cluster, key.as_str(), uid));
        let change = async {
            match record {
                Some(r) => {
                    self.db
                        .write(CHANGE_W, (cluster, day_of(v.at_ms), v.at_ms, uid, v.seq, r))
                        .await
                }
                None => Ok(()),
            }
        };
        futures::try_join!(version, name, change)?;
        // The pointer last: until it moves, a retry plans the same version.
        let l = Latest {
            state: LatestState {
                rv: w.resource_version.clone(),
                seq: v.seq,
                deleted,
                at_ms: v.at_ms,
                object: Value::Null,
            },
            vrv: w.resource_version.clone(),
            namespace: w.namespace.clone(),
            name: w.name.clone(),
            version_ms: wall,
            keyframe_ms,
            ttl: None,
            written_us: None,
            from_versions: false,
        };
        let object = if deleted { Vec::new() } else { blob };
        self.write_latest_blob(cluster, resource, shard, uid, &l, object)
            .await
    }

    pub(super) async fn write_latest(
        &self,
        cluster: &str,
        resource: &str,
        shard: i32,
        uid: &str,
        l: &Latest,
    ) -> Result<()> {
        let object = if l.state.deleted {
            Vec::new()
        } else {
            encode_object(&l.state.object, ZSTD_LEVEL)?
        };
        self.write_latest_blob(cluster, resource, shard, uid, l, object)
            .await
    }

    pub(super) async fn write_latest_blob(
        &self,
        cluster: &str,
        resource: &str,
        shard: i32,
        uid: &str,
        l: &Latest,
        object: Vec<u8>,
    ) -> Result<()> {
        self.db
            .write(
                LATEST_W,
                (
                    cluster,
                    resource,
                    shard,
                    uid,
                    l.namespace.as_str(),
                    l.name.as_str(),
                    l.state.rv.as_str(),
                    l.vrv.as_str(),
                    l.state.seq,
                    l.state.at_ms,
                    l.state.deleted,
                    l.version_ms,
                    l.keyframe_ms,
                    object,
                ),
            )
            .await
    }

    /// Rewrites version `seq` with a full copy of `object` (its state) and a
    /// fresh time to live. `false` when the row is gone.
    pub(super) async fn reanchor(
        &self,
        cluster: &str,
        uid: &str,
        seq: i64,
        object: &Value,
    ) -> Result<bool> {
        type Row = (
            Option<String>,
            Option<i64>,
            Option<String>,
            Option<Vec<u8>>,
            Option<Vec<u8>>,
        );
        let r = self.db.exec(VERSION_ROW, (cluster, uid, seq)).await?;
        let rows: Vec<Row> = crate::session::result_rows(VERSION_ROW, r)?;
        let Some((Some(rv), Some(at_ms), Some(change), meta, patch)) = rows.into_iter().next()
        else {
            tracing::warn!(
                cluster,
                uid,
                seq,
                "cassandra events: a version to re-anchor is gone"
            );
            return Ok(false);
        };
        let frame = encode_object(object, ZSTD_LEVEL)?;
        self.db
            .write(
                VERSION_W,
                (
                    cluster,
                    uid,
                    seq,
                    rv.as_str(),
                    at_ms,
                    change.as_str(),
                    true,
                    MaybeUnset::from_option(meta),
                    MaybeUnset::from_option(patch),
                    MaybeUnset::Set(frame),
                ),
            )
            .await?;
        Ok(true)
    }
}
