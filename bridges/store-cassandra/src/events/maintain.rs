//! Maintenance: retention of events, changes and versions by day, and the
//! refresh that rewrites long-lived objects before their rows expire.

use super::*;

impl CassandraEventStore {
    // -----------------------------------------------------------------
    // Maintenance

    pub(super) async fn maintain(&self, now_ms: i64) -> Result<u64> {
        let now = now_ms.max(self.now_floor.fetch_max(now_ms, Ordering::SeqCst));
        self.horizon
            .fetch_max(now.saturating_sub(self.retention_ms), Ordering::SeqCst);
        let h = self.horizon();
        let first_kept = day_of(h);
        let mut expired = 0u64;
        for (cluster, d, _) in self.catalog(SCOPE_EVENTS).await? {
            if d < first_kept {
                expired += self.expire_event_day(&cluster, d).await?;
            }
        }
        let days: BTreeSet<(String, i32)> = self
            .catalog(SCOPE_CHANGES)
            .await?
            .into_iter()
            .filter(|r| r.1 < first_kept)
            .map(|r| (r.0, r.1))
            .collect();
        for (cluster, d) in days {
            expired += self.expire_change_day(&cluster, d, h).await?;
        }
        self.refresh().await?;
        let wall = kube_insight_core::time::now_ms();
        self.catalog_written
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, t| wall - *t <= CATALOG_REWRITE_MS);
        Ok(expired)
    }

    /// Deletes one day of occurrences (and their keys and content rows).
    pub(super) async fn expire_event_day(&self, cluster: &str, d: i32) -> Result<u64> {
        type Row = (i64, String, i64, Option<Vec<u8>>);
        let rows: Vec<Row> = self
            .db
            .rows(
                OCC_DAY,
                (cluster, d),
                MAX_SCAN_ROWS,
                "event occurrences of a day",
            )
            .await?;
        let mut contents = BTreeSet::new();
        for (_, uid, _, data) in &rows {
            match data.as_deref().map(|b| EventMeta::decode(b, uid)) {
                Some(Ok(m)) => {
                    contents.insert(m.content());
                }
                Some(Err(e)) => {
                    tracing::warn!(cluster, uid = %uid, error = %e, "cassandra events: an expiring occurrence does not decode")
                }
                None => {}
            }
        }
        stream::iter(
            rows.iter()
                .map(|(at, uid, cnt, _)| self.db.write(KEY_DEL, (cluster, uid.as_str(), *cnt, *at)))
                .collect::<Vec<_>>(),
        )
        .buffer_unordered(FANOUT)
        .try_collect::<Vec<()>>()
        .await?;
        stream::iter(
            contents
                .iter()
                .map(|c| self.db.write(CONTENT_DEL, (DELETE_TS_US, cluster, d, *c)))
                .collect::<Vec<_>>(),
        )
        .buffer_unordered(FANOUT)
        .try_collect::<Vec<()>>()
        .await?;
        self.db
            .write(OCC_DAY_DEL, (DELETE_TS_US, cluster, d))
            .await?;
        self.db
            .write(CATALOG_DEL, (DELETE_TS_US, SCOPE_EVENTS, cluster, d))
            .await?;
        Ok(rows.len() as u64)
    }

    /// Retention of the objects changed on one day, then the day's timeline.
    pub(super) async fn expire_change_day(&self, cluster: &str, d: i32, h: i64) -> Result<u64> {
        let rows: Vec<(String,)> = self
            .db
            .rows(CHANGE_UIDS, (cluster, d), MAX_SCAN_ROWS, "changes of a day")
            .await?;
        let uids: BTreeSet<String> = rows.into_iter().map(|r| r.0).collect();
        let counts: Vec<u64> = stream::iter(
            uids.iter()
                .map(|uid| async move {
                    let _lock = self.object_locks[stripe(uid)].lock().await;
                    skip_corrupt(self.expire_object(cluster, uid, h).await).map(|n| n.unwrap_or(0))
                })
                .collect::<Vec<_>>(),
        )
        .buffer_unordered(FANOUT)
        .try_collect()
        .await?;
        self.db
            .write(CHANGES_DEL, (DELETE_TS_US, cluster, d))
            .await?;
        self.db
            .write(CATALOG_DEL, (DELETE_TS_US, SCOPE_CHANGES, cluster, d))
            .await?;
        Ok(counts.into_iter().sum())
    }

    pub(super) async fn expire_object(&self, cluster: &str, uid: &str, h: i64) -> Result<u64> {
        let versions = self.version_rows(cluster, uid).await?;
        match retention_plan(&versions, h) {
            Trim::Nothing => Ok(0),
            Trim::DropObject { rows } => {
                let last = versions.last().map_or(0, |v| v.seq);
                if let Some(m) = self.version_meta(cluster, uid, last).await? {
                    let resource = resource_key(&m.group, &m.kind);
                    let key = object_key(&m.kind, &m.namespace, &m.name);
                    self.db
                        .write(
                            LATEST_DEL,
                            (
                                DELETE_TS_US,
                                cluster,
                                resource.as_str(),
                                latest_shard(uid),
                                uid,
                            ),
                        )
                        .await?;
                    self.db
                        .write(NAME_DEL, (DELETE_TS_US, cluster, key.as_str(), uid))
                        .await?;
                }
                self.db
                    .write(VERSIONS_DEL, (DELETE_TS_US, cluster, uid))
                    .await?;
                Ok(rows)
            }
            Trim::Cut { keep, older, frame } => {
                if frame {
                    let object = self.rebuild(cluster, uid, keep, &versions).await?;
                    self.reanchor(cluster, uid, keep, &object).await?;
                }
                if older > 0 {
                    self.db
                        .write(VERSIONS_BEFORE_DEL, (DELETE_TS_US, cluster, uid, keep))
                        .await?;
                }
                Ok(older)
            }
        }
    }

    /// Keeps the state of unchanged live objects: rewrites keyframes halfway
    /// through their TTL (wall clock, every few hours).
    pub(super) async fn refresh(&self) -> Result<()> {
        let wall = kube_insight_core::time::now_ms();
        let last = self.last_refresh.load(Ordering::SeqCst);
        if last != i64::MIN && wall - last < REFRESH_EVERY_MS {
            return Ok(());
        }
        self.last_refresh.store(wall, Ordering::SeqCst);
        let kinds: BTreeSet<(String, String)> = self
            .catalog(SCOPE_KINDS)
            .await?
            .into_iter()
            .map(|r| (r.0, r.2))
            .collect();
        let mut refreshed = 0u64;
        for (cluster, resource) in &kinds {
            let mut live = false;
            for shard in 0..LATEST_SHARDS {
                let rows: Vec<(String, Option<bool>, Option<i64>)> = self
                    .db
                    .rows(
                        LATEST_AGES,
                        (cluster.as_str(), resource.as_str(), shard),
                        MAX_SCAN_ROWS,
                        "objects of one kind",
                    )
                    .await?;
                live |= rows.iter().any(|r| !r.1.unwrap_or(false));
                let due: Vec<String> = rows
                    .into_iter()
                    .filter(|(_, deleted, kms)| {
                        !deleted.unwrap_or(false)
                            && refresh_due(kms.unwrap_or(0), wall, self.retention_ms)
                    })
                    .map(|r| r.0)
                    .collect();
                refreshed += due.len() as u64;
                stream::iter(
                    due.iter()
                        .map(|uid| async move {
                            skip_corrupt(
                                self.refresh_object(cluster, resource, shard, uid, wall)
                                    .await,
                            )
                            .map(|_| ())
                        })
                        .collect::<Vec<_>>(),
                )
                .buffer_unordered(FANOUT)
                .try_collect::<Vec<()>>()
                .await?;
            }
            if live {
                // Kinds with live objects stay listed.
                self.register([(SCOPE_KINDS, cluster.clone(), 0, resource.clone())])
                    .await?;
            }
        }
        if refreshed > 0 {
            tracing::info!(
                objects = refreshed,
                "cassandra events: keyframes of unchanged objects rewritten"
            );
        }
        Ok(())
    }

    pub(super) async fn refresh_object(
        &self,
        cluster: &str,
        resource: &str,
        shard: i32,
        uid: &str,
        wall: i64,
    ) -> Result<()> {
        let _lock = self.object_locks[stripe(uid)].lock().await;
        let Some(mut l) = self.latest(cluster, resource, shard, uid).await? else {
            return Ok(());
        };
        if l.state.deleted
            || l.from_versions
            || !refresh_due(l.keyframe_ms, wall, self.retention_ms)
        {
            return Ok(());
        }
        let (group, kind) = resource.split_once('/').unwrap_or(("", resource));
        if !self
            .reanchor(cluster, uid, l.state.seq, &l.state.object)
            .await?
        {
            // The version row expired: write it back from the latest state.
            let meta = VersionMeta {
                group: group.to_string(),
                kind: kind.to_string(),
                namespace: l.namespace.clone(),
                name: l.name.clone(),
                manager: None,
            }
            .encode()?;
            let frame = encode_object(&l.state.object, ZSTD_LEVEL)?;
            self.db
                .write(
                    VERSION_W,
                    (
                        cluster,
                        uid,
                        l.state.seq,
                        l.vrv.as_str(),
                        l.state.at_ms,
                        ChangeKind::Observed.as_str(),
                        true,
                        MaybeUnset::Set(meta),
                        MaybeUnset::<Vec<u8>>::Unset,
                        MaybeUnset::Set(frame),
                    ),
                )
                .await?;
        }
        let key = object_key(kind, &l.namespace, &l.name);
        self.db.write(NAME_W, (cluster, key.as_str(), uid)).await?;
        l.version_ms = wall;
        l.keyframe_ms = wall;
        let Some(written_us) = l.written_us else {
            return self.write_latest(cluster, resource, shard, uid, &l).await;
        };
        let object = encode_object(&l.state.object, ZSTD_LEVEL)?;
        self.db
            .write(
                LATEST_REFRESH_W,
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
                    written_us.saturating_add(1),
                ),
            )
            .await
    }
}
