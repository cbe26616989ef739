//! Reads: events folded from their occurrences, objects at T rebuilt from
//! their version chains, the change timeline and the live objects.

use super::*;

impl CassandraEventStore {
    // -----------------------------------------------------------------
    // Events: reads

    /// Folds the occurrences of the given (cluster, day) partitions.
    pub(super) async fn fold(
        &self,
        parts: Vec<(String, i32)>,
        from: i64,
        to: Option<i64>,
    ) -> Result<EventFolds> {
        let mut s = stream::iter(
            parts
                .into_iter()
                .map(|(cluster, d)| async move {
                    let rows: Vec<OccurrenceRow> = match to {
                        Some(to) => {
                            self.db
                                .rows(
                                    OCC_RANGE,
                                    (cluster.as_str(), d, from, to),
                                    MAX_SCAN_ROWS,
                                    "event occurrences",
                                )
                                .await?
                        }
                        None => {
                            self.db
                                .rows(
                                    OCC_FROM,
                                    (cluster.as_str(), d, from),
                                    MAX_SCAN_ROWS,
                                    "event occurrences",
                                )
                                .await?
                        }
                    };
                    Ok::<_, Error>((cluster, rows))
                })
                .collect::<Vec<_>>(),
        )
        .buffer_unordered(FANOUT);
        let mut folds = EventFolds::default();
        let mut scanned = 0usize;
        while let Some((cluster, rows)) = s.try_next().await? {
            scanned += rows.len();
            if scanned > MAX_SCAN_ROWS {
                return Err(Error::LimitExceeded {
                    what: "event occurrences",
                    limit: MAX_SCAN_ROWS,
                });
            }
            for o in rows.into_iter().filter_map(Occurrence::from_row) {
                folds.add(&cluster, o);
            }
        }
        Ok(folds)
    }

    pub(super) async fn query_events_q(&self, q: &EventQuery) -> Result<Vec<KubeEvent>> {
        let limit = q.limit.clamp(1, MAX_ROWS);
        let start = q.range.start_ms.max(self.horizon());
        let catalog = self.catalog(SCOPE_EVENTS).await?;
        // An event is in the range when it had an occurrence at or after
        // its start and began before its end: every later day counts.
        let parts = pick_days(&catalog, q.cluster.as_deref(), day_of(start), i32::MAX);
        let folds = self.fold(parts, start, None).await?;
        events_answer(folds, q, limit)
    }

    // -----------------------------------------------------------------
    // Objects: reads

    /// The last stored state of an object: its `object_latest` row, or
    /// (when that is missing) rebuilt from its versions.
    pub(super) async fn latest(
        &self,
        cluster: &str,
        resource: &str,
        shard: i32,
        uid: &str,
    ) -> Result<Option<Latest>> {
        let r = self
            .db
            .exec(LATEST_Q, (cluster, resource, shard, uid))
            .await?;
        let rows: Vec<LatestRow> = crate::session::result_rows(LATEST_Q, r)?;
        if let Some((
            Some(seq),
            Some(rv),
            vrv,
            Some(at_ms),
            deleted,
            vms,
            kms,
            object,
            ns,
            name,
            ttl,
            written_us,
        )) = rows.into_iter().next()
        {
            let deleted = deleted.unwrap_or(false);
            let object = if deleted {
                Value::Null
            } else {
                decode_object(object.as_deref().unwrap_or_default())?
            };
            return Ok(Some(Latest {
                vrv: vrv.unwrap_or_else(|| rv.clone()),
                state: LatestState {
                    rv,
                    seq,
                    deleted,
                    at_ms,
                    object,
                },
                namespace: ns.unwrap_or_default(),
                name: name.unwrap_or_default(),
                version_ms: vms.unwrap_or(0),
                keyframe_ms: kms.unwrap_or(0),
                ttl,
                written_us,
                from_versions: false,
            }));
        }
        let versions = self.version_rows(cluster, uid).await?;
        let Some(last) = versions.last() else {
            return Ok(None);
        };
        tracing::warn!(
            cluster,
            uid,
            "cassandra events: no latest row; rebuilding it from the versions"
        );
        let object = self.rebuild(cluster, uid, last.seq, &versions).await?;
        let meta = self.version_meta(cluster, uid, last.seq).await?;
        Ok(Some(Latest {
            state: LatestState {
                rv: last.rv.clone(),
                seq: last.seq,
                deleted: last.change == ChangeKind::Deleted,
                at_ms: last.at_ms,
                object,
            },
            vrv: last.rv.clone(),
            namespace: meta
                .as_ref()
                .map(|m| m.namespace.clone())
                .unwrap_or_default(),
            name: meta.map(|m| m.name).unwrap_or_default(),
            version_ms: 0,
            keyframe_ms: 0,
            ttl: None,
            written_us: None,
            from_versions: true,
        }))
    }

    /// The versions of an object (without payloads), by seq.
    pub(super) async fn version_rows(&self, cluster: &str, uid: &str) -> Result<Vec<VersionRow>> {
        let rows: Vec<VersionListRow> = self
            .db
            .rows(
                VERSIONS_OF,
                (cluster, uid),
                MAX_PER_KEY,
                "versions of one object",
            )
            .await?;
        Ok(rows.into_iter().filter_map(VersionRow::from_row).collect())
    }

    pub(super) async fn version_meta(
        &self,
        cluster: &str,
        uid: &str,
        seq: i64,
    ) -> Result<Option<VersionMeta>> {
        let r = self.db.exec(VERSION_META, (cluster, uid, seq)).await?;
        let rows: Vec<(Option<Vec<u8>>,)> = crate::session::result_rows(VERSION_META, r)?;
        match rows.into_iter().next().and_then(|r| r.0) {
            Some(b) => VersionMeta::decode(&b, uid).map(Some),
            None => Ok(None),
        }
    }

    /// Version `seq` of an object from its keyframe and patches.
    pub(super) async fn rebuild(
        &self,
        cluster: &str,
        uid: &str,
        seq: i64,
        versions: &[VersionRow],
    ) -> Result<Value> {
        let k = keyframe_for(versions, seq).ok_or_else(|| {
            Error::Corrupt(format!(
                "object {uid} in cluster {cluster}: no keyframe at or before version {seq}"
            ))
        })?;
        let r = self.db.exec(VERSION_CHAIN, (cluster, uid, k, seq)).await?;
        let rows: Vec<ChainRow> = crate::session::result_rows(VERSION_CHAIN, r)?;
        rebuild_from(&rows, uid)
    }

    pub(super) async fn object_at_q(
        &self,
        cluster: Option<&str>,
        kind: &str,
        namespace: &str,
        name: &str,
        at_ms: i64,
    ) -> Result<Option<ObjectAt>> {
        let clusters = match cluster {
            Some(c) => vec![c.to_string()],
            None => self.clusters_with_objects().await?,
        };
        let key = object_key(kind, namespace, name);
        let mut uids: Vec<(String, String)> = Vec::new();
        for c in &clusters {
            let rows: Vec<(String,)> = self
                .db
                .rows(
                    NAME_UIDS,
                    (c.as_str(), key.as_str()),
                    MAX_PER_KEY,
                    "objects of one name",
                )
                .await?;
            uids.extend(rows.into_iter().map(|r| (c.clone(), r.0)));
        }
        let h = self.horizon();
        let lists: Vec<(String, String, Vec<VersionRow>)> = stream::iter(
            uids.into_iter()
                .map(|(c, uid)| async move {
                    let v = self.version_rows(&c, &uid).await?;
                    Ok::<_, Error>((c, uid, v))
                })
                .collect::<Vec<_>>(),
        )
        .buffered(FANOUT)
        .try_collect()
        .await?;
        let mut best: Option<(&str, &str, &[VersionRow], &VersionRow)> = None;
        for (c, uid, versions) in &lists {
            if let Some(v) = version_at(visible(versions, h), at_ms) {
                if best.is_none_or(|b| (v.at_ms, v.seq) > (b.3.at_ms, b.3.seq)) {
                    best = Some((c, uid, versions, v));
                }
            }
        }
        let Some((c, uid, versions, v)) = best else {
            return Ok(None);
        };
        if v.change == ChangeKind::Deleted {
            return Ok(None);
        }
        let meta = self.version_meta(c, uid, v.seq).await?.ok_or_else(|| {
            Error::Corrupt(format!(
                "object {uid} in cluster {c}: version {} has no metadata",
                v.seq
            ))
        })?;
        let object = self.rebuild(c, uid, v.seq, versions).await?;
        Ok(Some(ObjectAt {
            cluster: c.to_string(),
            group: meta.group,
            kind: meta.kind,
            namespace: namespace.to_string(),
            name: name.to_string(),
            uid: uid.to_string(),
            resource_version: v.rv.clone(),
            version_ms: v.at_ms,
            change: v.change,
            manager: meta.manager,
            object,
        }))
    }

    pub(super) async fn changes_q(&self, q: &ChangeQuery) -> Result<Vec<ChangeRow>> {
        let limit = q.limit.clamp(1, MAX_ROWS);
        let kind = q.kind.as_deref().map(normalize_kind);
        let start = q.range.start_ms.max(self.horizon());
        let end = q.range.end_ms;
        if start > end {
            return Ok(Vec::new());
        }
        let catalog = self.catalog(SCOPE_CHANGES).await?;
        let parts = pick_days(&catalog, q.cluster.as_deref(), day_of(start), day_of(end));
        type Row = (i64, String, i64, Option<Vec<u8>>);
        let mut days = stream::iter(
            parts
                .into_iter()
                .map(|(cluster, d)| async move {
                    let rows: Vec<Row> = self
                        .db
                        .rows(
                            CHANGES_RANGE,
                            (cluster.as_str(), d, start, end),
                            MAX_SCAN_ROWS,
                            "changes",
                        )
                        .await?;
                    Ok::<_, Error>((cluster, d, rows))
                })
                .collect::<Vec<_>>(),
        )
        .buffered(FANOUT);
        let mut out: Vec<ChangeRow> = Vec::new();
        let mut scanned = 0usize;
        let mut day_rows: Vec<(i64, String, i64, ChangeRow)> = Vec::new();
        let mut current: Option<i32> = None;
        // Days arrive newest first: once a day is complete and the limit
        // reached, older days cannot come before what is kept.
        while let Some((cluster, d, rows)) = days.try_next().await? {
            if current != Some(d) {
                flush_day(&mut out, &mut day_rows);
                if out.len() >= limit {
                    break;
                }
                current = Some(d);
            }
            scanned += rows.len();
            if scanned > MAX_SCAN_ROWS {
                return Err(Error::LimitExceeded {
                    what: "changes",
                    limit: MAX_SCAN_ROWS,
                });
            }
            for (at, uid, seq, data) in rows {
                let Some(data) = data else { continue };
                let rec = serde_json::from_slice::<ChangeRecord>(&data)
                    .map_err(|e| corrupt(&format!("a change of object {uid}"), e));
                let Some(rec) = skip_corrupt(rec)? else {
                    continue;
                };
                if q.namespace.as_deref().is_some_and(|ns| rec.namespace != ns)
                    || q.workload
                        .as_deref()
                        .is_some_and(|w| rec.workload != w && rec.name != w)
                    || !kind_matches(kind.as_deref(), &rec.kind)
                {
                    continue;
                }
                let row = rec.row(&cluster, at, &uid);
                if !q.include_status && is_status_only(&row) {
                    continue;
                }
                day_rows.push((at, uid, seq, row));
            }
        }
        flush_day(&mut out, &mut day_rows);
        out.truncate(limit);
        let events = if q.include_events {
            let catalog = self.catalog(SCOPE_EVENTS).await?;
            let parts = pick_days(&catalog, q.cluster.as_deref(), day_of(start), day_of(end));
            let folds = self.fold(parts, start, Some(end)).await?;
            event_changes(folds, q, kind.as_deref(), limit)?
        } else {
            Vec::new()
        };
        Ok(merge_timeline(out, events, limit))
    }

    pub(super) async fn live_objects_q(
        &self,
        cluster: &str,
        group: &str,
        kind: &str,
    ) -> Result<Vec<LiveObject>> {
        type Row = (
            String,
            Option<String>,
            Option<String>,
            Option<String>,
            Option<i64>,
            Option<bool>,
            Option<Vec<u8>>,
        );
        let resource = resource_key(group, kind);
        let resource = resource.as_str();
        let shards: Vec<Vec<Row>> = stream::iter(
            (0..LATEST_SHARDS)
                .map(|shard| async move {
                    self.db
                        .rows(
                            LATEST_SHARD,
                            (cluster, resource, shard),
                            MAX_SCAN_ROWS,
                            "objects of one kind",
                        )
                        .await
                })
                .collect::<Vec<_>>(),
        )
        .buffered(FANOUT)
        .try_collect()
        .await?;
        let mut out = Vec::new();
        for (uid, ns, name, rv, at_ms, deleted, object) in shards.into_iter().flatten() {
            let (Some(rv), Some(at_ms)) = (rv, at_ms) else {
                continue;
            };
            if deleted.unwrap_or(false) {
                continue;
            }
            let object = decode_object(object.as_deref().unwrap_or_default())?;
            out.push(LiveObject {
                uid,
                namespace: ns.unwrap_or_default(),
                name: name.unwrap_or_default(),
                resource_version: rv,
                at_ms,
                object,
            });
            if out.len() > MAX_ROWS {
                return Err(Error::LimitExceeded {
                    what: "live objects",
                    limit: MAX_ROWS,
                });
            }
        }
        out.sort_by(|a, b| a.uid.cmp(&b.uid));
        Ok(out)
    }
}
