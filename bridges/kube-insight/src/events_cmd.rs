//! The `events` target's start-up, and the change-history CLI:
//! `kube-insight get deploy/NAME -n NS --at T -o yaml` and
//! `kube-insight diff deploy/NAME -n NS --from T1 --to T2`, both reading the
//! store directly (`KUBE_INSIGHT_STORE`).

use crate::config::StoreSettings;
use anyhow::{bail, Context, Result};
use clap::Args;
use kube_insight_core::event::to_yaml;
use kube_insight_core::parse_time_ms;
use kube_insight_core::time::format_rfc3339_ms;
use kube_insight_sources::kube_watch::{self, parse_kinds, WatchConfig};
use kube_insight_store::change_feed;
use kube_insight_store::events::{ChangeQuery, EventStore, ObjectAt};
use kube_insight_store::StoreUrl;
use kube_insight_store_sqlite::events::SqliteEventStore;
use kube_insight_telemetry::Telemetry;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Settings of the `events` target (flattened into `RunSettings`).
#[derive(Debug, Clone, Args)]
pub struct EventsSettings {
    /// Kinds the events target watches: comma list of group/version/Kind
    /// (version/Kind for the core group, /plural for irregular plurals);
    /// `default` is events, workloads, pods, services, ingresses, network
    /// policies, HPAs, PDBs, config maps, nodes and namespaces. Example:
    /// default,argoproj.io/v1alpha1/Rollout. Secrets are never watched.
    #[arg(long, env = "KUBE_INSIGHT_EVENTS_KINDS", default_value = "default")]
    pub events_kinds: String,
}

impl EventsSettings {
    pub fn validate(&self) -> Result<()> {
        parse_kinds(&self.events_kinds).map_err(|e| {
            anyhow::anyhow!("invalid KUBE_INSIGHT_EVENTS_KINDS / --events-kinds: {e}")
        })?;
        Ok(())
    }
}

/// Opens the event store of a store URL.
pub async fn open_event_store(store: &StoreSettings) -> Result<Arc<dyn EventStore>> {
    match StoreUrl::parse(&store.store).with_context(|| "invalid KUBE_INSIGHT_STORE / --store")? {
        StoreUrl::Sqlite { path } => Ok(Arc::new(
            SqliteEventStore::open(&path, store.options())
                .await
                .with_context(|| format!("opening the event store {}", store.store))?,
        )),
        _ => bail!(
            "the events store is built for sqlite only; KUBE_INSIGHT_STORE is {}",
            store.store
        ),
    }
}

/// Configures the watch of the monitored cluster (a bad kubeconfig fails
/// start-up) and returns its starter: each call spawns the watch on `tasks`
/// until `stop`. The collector calls it whenever it gains leadership; the
/// watch resumes from the stored checkpoints (a re-list reconciles, never
/// re-creates).
pub async fn events_target(
    cluster: &str,
    kubeconfig: Option<PathBuf>,
    settings: &EventsSettings,
    store: Arc<dyn EventStore>,
    telemetry: Arc<Telemetry>,
) -> Result<impl Fn(&mut JoinSet<()>, CancellationToken) + Send + 'static> {
    let kinds = parse_kinds(&settings.events_kinds)
        .map_err(|e| anyhow::anyhow!("invalid KUBE_INSIGHT_EVENTS_KINDS: {e}"))?;
    let watch = if kubeconfig.is_none() && std::env::var_os("KUBERNETES_SERVICE_HOST").is_none() {
        // Like federation without KUBE_INSIGHT_PROMETHEUS_URL: idle, and say so.
        tracing::info!("KUBE_INSIGHT_KUBECONFIG is unset and this is not a Kubernetes pod: the events watch idles; kube-eventer's webhook on the ingest listener still works");
        None
    } else {
        let client = kube_watch::client(kubeconfig.as_deref())
            .await
            .with_context(|| {
                "configuring the Kubernetes client for the events target (KUBE_INSIGHT_KUBECONFIG)"
            })?;
        tracing::info!(kinds = %kinds.iter().map(|k| k.to_string()).collect::<Vec<_>>().join(","), "events target: watching the API server");
        Some((client, WatchConfig::new(cluster, kinds)))
    };
    Ok(
        move |tasks: &mut JoinSet<()>, stop: CancellationToken| match &watch {
            None => {
                tasks.spawn(async move { stop.cancelled().await });
            }
            Some((client, config)) => {
                tasks.spawn(kube_watch::run(
                    client.clone(),
                    store.clone(),
                    config.clone(),
                    telemetry.clone(),
                    stop,
                ));
            }
        },
    )
}

/// `kube-insight get KIND/NAME`.
#[derive(Debug, Clone, Args)]
pub struct GetArgs {
    /// The object: KIND/NAME (deploy/api, statefulset/db, node/n1, …).
    pub object: String,
    /// Namespace (empty for cluster-scoped kinds).
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    /// The time: RFC 3339, epoch seconds or ms, now, now-1h.
    #[arg(long, default_value = "now")]
    pub at: String,
    /// Output: yaml or json.
    #[arg(short = 'o', long, default_value = "yaml")]
    pub output: String,
    /// Cluster (any when unset).
    #[arg(long)]
    pub cluster: Option<String>,
    #[command(flatten)]
    pub server: crate::remote::ServerArgs,
    #[command(flatten)]
    pub store: StoreSettings,
}

/// `kube-insight diff KIND/NAME --from T1 --to T2`.
#[derive(Debug, Clone, Args)]
pub struct DiffArgs {
    pub object: String,
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    #[arg(long)]
    pub from: String,
    #[arg(long, default_value = "now")]
    pub to: String,
    #[arg(long)]
    pub cluster: Option<String>,
    /// Also list status-only updates (controller status writes), which the
    /// change list leaves out by default.
    #[arg(long)]
    pub include_status: bool,
    #[command(flatten)]
    pub store: StoreSettings,
}

fn split_object(s: &str) -> Result<(String, String)> {
    match s.split_once('/') {
        Some((k, n)) if !k.is_empty() && !n.is_empty() && !n.contains('/') => {
            Ok((k.to_string(), n.to_string()))
        }
        _ => bail!("invalid object {s:?}: expected KIND/NAME, e.g. deploy/api"),
    }
}

fn time_arg(name: &str, s: &str) -> Result<i64> {
    parse_time_ms(s).map_err(|e| anyhow::anyhow!("--{name}: {e}"))
}

fn is_cluster_scoped(kind: &str) -> bool {
    matches!(
        kube_insight_core::event::normalize_kind(kind).as_str(),
        "node" | "namespace"
    )
}

async fn at(
    store: &dyn EventStore,
    cluster: Option<&str>,
    kind: &str,
    ns: &str,
    name: &str,
    t: i64,
) -> Result<Option<ObjectAt>> {
    let ns = if is_cluster_scoped(kind) { "" } else { ns };
    store
        .object_at(cluster, kind, ns, name, t)
        .await
        .with_context(|| format!("reading {kind}/{name} at {}", format_rfc3339_ms(t)))
}

/// What `get` shows, from the store or from the server's `/api/v1/objects`.
pub struct ObjectView {
    pub kind: String,
    pub name: String,
    pub version_ms: i64,
    pub resource_version: String,
    pub manager: Option<String>,
    pub object: serde_json::Value,
}

/// The text `get` prints, from the store.
pub async fn get_text(store: &dyn EventStore, args: &GetArgs) -> Result<String> {
    let (kind, name) = split_object(&args.object)?;
    let t = time_arg("at", &args.at)?;
    let Some(o) = at(
        store,
        args.cluster.as_deref(),
        &kind,
        &args.namespace,
        &name,
        t,
    )
    .await?
    else {
        bail!(
            "{kind}/{name} in namespace {:?} did not exist at {} (or is not watched)",
            args.namespace,
            format_rfc3339_ms(t)
        );
    };
    let view = ObjectView {
        kind: o.kind.clone(),
        name: o.name.clone(),
        version_ms: o.version_ms,
        resource_version: o.resource_version.clone(),
        manager: o.manager.clone(),
        object: o.object.clone(),
    };
    render_get(&view, t, &args.output)
}

/// `get` through the server's `GET /api/v1/objects/{kind}/{namespace}/{name}?at=`.
pub async fn get_text_remote(client: &crate::remote::Client, args: &GetArgs) -> Result<String> {
    let (kind, name) = split_object(&args.object)?;
    let t = time_arg("at", &args.at)?;
    let ns = if args.namespace.is_empty() {
        "_".to_string()
    } else {
        args.namespace.clone()
    };
    let mut q = vec![("at", t.to_string())];
    if let Some(c) = &args.cluster {
        q.push(("cluster", c.clone()));
    }
    let v: serde_json::Value = client
        .get_json(&format!("api/v1/objects/{kind}/{ns}/{name}"), &q)
        .await?;
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
    let version_ms = s("version_time")
        .and_then(|x| parse_time_ms(&x).ok())
        .unwrap_or(t);
    let view = ObjectView {
        kind: s("kind").unwrap_or(kind),
        name: s("name").unwrap_or(name),
        version_ms,
        resource_version: s("resource_version").unwrap_or_default(),
        manager: s("who"),
        object: v.get("object").cloned().unwrap_or(serde_json::Value::Null),
    };
    render_get(&view, t, &args.output)
}

/// The one renderer of `get` (yaml with a header line, or json).
pub fn render_get(o: &ObjectView, t: i64, output: &str) -> Result<String> {
    match output {
        "yaml" => Ok(format!(
            "# {}/{} as it was at {} (version of {}, resourceVersion {}{})\n{}",
            o.kind,
            o.name,
            format_rfc3339_ms(t),
            format_rfc3339_ms(o.version_ms),
            o.resource_version,
            o.manager
                .as_deref()
                .map(|m| format!(", by {m}"))
                .unwrap_or_default(),
            to_yaml(&o.object)
        )),
        "json" => Ok(format!(
            "{}\n",
            serde_json::to_string_pretty(&o.object).unwrap_or_default()
        )),
        other => bail!("invalid -o {other:?}: expected yaml or json"),
    }
}

/// The text `diff` prints: the changes between T1 and T2, then a line diff
/// of the object's YAML at both times.
pub async fn diff_text(store: &dyn EventStore, args: &DiffArgs) -> Result<String> {
    let (kind, name) = split_object(&args.object)?;
    let (t1, t2) = (time_arg("from", &args.from)?, time_arg("to", &args.to)?);
    if t1 > t2 {
        bail!("--from {} is after --to {}", args.from, args.to);
    }
    let a = at(
        store,
        args.cluster.as_deref(),
        &kind,
        &args.namespace,
        &name,
        t1,
    )
    .await?;
    let b = at(
        store,
        args.cluster.as_deref(),
        &kind,
        &args.namespace,
        &name,
        t2,
    )
    .await?;
    if a.is_none() && b.is_none() {
        bail!(
            "{kind}/{name} in namespace {:?} existed neither at {} nor at {}",
            args.namespace,
            format_rfc3339_ms(t1),
            format_rfc3339_ms(t2)
        );
    }
    let mut out = String::new();
    let ns = if is_cluster_scoped(&kind) {
        None
    } else {
        Some(args.namespace.clone())
    };
    let query = ChangeQuery {
        cluster: args.cluster.clone(),
        namespace: ns,
        workload: None,
        kind: Some(kind.clone()),
        range: kube_insight_core::TimeRange::new(t1 + 1, t2).map_err(|e| anyhow::anyhow!("{e}"))?,
        limit: 1000,
        include_events: false,
        include_status: args.include_status,
    };
    let items = change_feed::load(store, &query)
        .await
        .context("reading the changes")?;
    for i in items.iter().rev().filter(|i| i.head.name == name) {
        out.push_str(&format!(
            "# {} {}: {}\n",
            format_rfc3339_ms(i.head.at_ms),
            i.head.change,
            i.summary()
        ));
    }
    let ya = a.as_ref().map(|o| to_yaml(&o.object)).unwrap_or_default();
    let yb = b.as_ref().map(|o| to_yaml(&o.object)).unwrap_or_default();
    let label = |o: &Option<ObjectAt>, t: i64| match o {
        Some(o) => format!(
            "{kind}/{name} at {} (resourceVersion {})",
            format_rfc3339_ms(t),
            o.resource_version
        ),
        None => format!("{kind}/{name} at {} (did not exist)", format_rfc3339_ms(t)),
    };
    out.push_str(&format!("--- {}\n+++ {}\n", label(&a, t1), label(&b, t2)));
    out.push_str(&line_diff(&ya, &yb));
    Ok(out)
}

/// A plain line diff (LCS), unchanged lines prefixed with two spaces.
pub fn line_diff(a: &str, b: &str) -> String {
    let a: Vec<&str> = a.lines().collect();
    let b: Vec<&str> = b.lines().collect();
    let (n, m) = (a.len(), b.len());
    let mut lcs = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut out = String::new();
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            out.push_str(&format!("  {}\n", a[i]));
            i += 1;
            j += 1;
        } else if i < n && (j == m || lcs[i + 1][j] >= lcs[i][j + 1]) {
            out.push_str(&format!("- {}\n", a[i]));
            i += 1;
        } else {
            out.push_str(&format!("+ {}\n", b[j]));
            j += 1;
        }
    }
    out
}

/// Runs `get` (for `cli.rs`).
pub async fn run_get(args: GetArgs) -> Result<()> {
    if let Some(client) = args.server.client()? {
        print!("{}", get_text_remote(&client, &args).await?);
        return Ok(());
    }
    args.store.validate()?;
    let store = open_event_store(&args.store).await?;
    print!("{}", get_text(store.as_ref(), &args).await?);
    Ok(())
}

/// Runs `diff` (for `cli.rs`).
pub async fn run_diff(args: DiffArgs) -> Result<()> {
    args.store.validate()?;
    let store = open_event_store(&args.store).await?;
    print!("{}", diff_text(store.as_ref(), &args).await?);
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use kube_insight_core::event::{managers_of, sanitize, ChangeKind};
    use kube_insight_store::ObjectWrite;
    use serde_json::Value;

    fn store_settings(dir: &std::path::Path) -> StoreSettings {
        StoreSettings {
            store: format!("sqlite://{}/insight.db", dir.display()),
            retention_metrics: std::time::Duration::from_secs(86400),
            retention_logs: std::time::Duration::from_secs(86400),
            retention_events: std::time::Duration::from_secs(86400 * 90),
            retention_topology: std::time::Duration::from_secs(86400),
            metrics_head_grace: std::time::Duration::from_secs(600),
            max_series: 10,
            cassandra_username: None,
            cassandra_password: None,
            cassandra_ca_file: None,
        }
    }

    #[tokio::test]
    async fn get_and_diff_read_the_history() {
        let dir = tempfile::tempdir().unwrap();
        let settings = store_settings(dir.path());
        let store = open_event_store(&settings).await.unwrap();
        let w = |image: &str, rv: &str, at: i64| {
            let raw = serde_json::json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "api", "namespace": "shop", "uid": "u", "managedFields": [{"manager": "kubectl", "time": "2024-05-31T16:00:00Z", "fieldsV1": {"f:spec": {}}}]},
                "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "api", "image": image}]}}}});
            ObjectWrite {
                cluster: "prod".into(),
                group: "apps".into(),
                kind: "Deployment".into(),
                namespace: "shop".into(),
                name: "api".into(),
                uid: "u".into(),
                resource_version: rv.into(),
                at_ms: at,
                change: ChangeKind::Updated,
                object: sanitize(
                    "Deployment",
                    &raw,
                    &kube_insight_core::event::SecretKey::from_bytes(&[7; 32]).unwrap(),
                )
                .unwrap(),
                managers: managers_of(&raw),
                gitops: None,
                gap: None,
            }
        };
        store
            .write_objects(vec![
                w("api:1.4", "1", 1_717_171_200_000),
                w("api:1.5", "2", 1_717_171_260_000),
            ])
            .await
            .unwrap();
        let get = GetArgs {
            server: Default::default(),
            object: "deploy/api".into(),
            namespace: "shop".into(),
            at: "2024-05-31T16:00:30Z".into(),
            output: "yaml".into(),
            cluster: None,
            store: settings.clone(),
        };
        let text = get_text(store.as_ref(), &get).await.unwrap();
        assert!(text.contains("image: api:1.4"), "{text}");
        assert!(
            text.starts_with("# Deployment/api as it was at 2024-05-31T16:00:30.000Z"),
            "{text}"
        );
        let json = get_text(
            store.as_ref(),
            &GetArgs {
                server: Default::default(),
                output: "json".into(),
                ..get.clone()
            },
        )
        .await
        .unwrap();
        assert_eq!(
            serde_json::from_str::<Value>(&json).unwrap()["spec"]["replicas"],
            2
        );
        let e = get_text(
            store.as_ref(),
            &GetArgs {
                server: Default::default(),
                at: "2024-05-31T15:00:00Z".into(),
                ..get.clone()
            },
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(e.contains("did not exist"), "{e}");
        assert!(get_text(
            store.as_ref(),
            &GetArgs {
                server: Default::default(),
                object: "api".into(),
                ..get.clone()
            }
        )
        .await
        .is_err());
        let diff = DiffArgs {
            object: "deployment/api".into(),
            namespace: "shop".into(),
            from: "2024-05-31T16:00:30Z".into(),
            to: "2024-05-31T16:02:00Z".into(),
            cluster: None,
            include_status: false,
            store: settings,
        };
        let text = diff_text(store.as_ref(), &diff).await.unwrap();
        assert!(
            text.contains("# 2024-05-31T16:01:00.000Z updated: image api:1.4 → api:1.5 by kubectl"),
            "{text}"
        );
        assert!(
            text.contains("- ") && text.contains("api:1.4") && text.contains("+ "),
            "{text}"
        );
    }

    #[test]
    fn line_diff_marks_changes() {
        assert_eq!(line_diff("a\nb\nc\n", "a\nx\nc\n"), "  a\n- b\n+ x\n  c\n");
        assert!(EventsSettings {
            events_kinds: "v1/Secret".into()
        }
        .validate()
        .is_err());
        assert!(EventsSettings {
            events_kinds: "default".into()
        }
        .validate()
        .is_ok());
    }
}
