//! The `events` target's start-up, and the change-history CLI:
//! `kube-insight get deploy/NAME -n NS --at T -o yaml`,
//! `kube-insight diff deploy/NAME -n NS --from T1 --to T2` and
//! `kube-insight changes -n NS --since 2h`, each reading the read API of a
//! server (`--server`) or of a store (`--store`, in-process) through
//! [`crate::remote::Api`], with one renderer.

use crate::config::StoreSettings;
use crate::remote::Api;
use anyhow::{bail, Context, Result};
use clap::Args;
use kube_insight_core::event::to_yaml;
use kube_insight_core::parse_time_ms;
use kube_insight_core::time::format_rfc3339_ms;
use kube_insight_sources::kube_watch::remote::PushConfig;
use kube_insight_sources::kube_watch::{self, parse_kinds, WatchConfig};
use kube_insight_store::events::EventStore;
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

    // Push mode: the events target runs in the monitored cluster and sends
    // to an insight's ingest listener (kube_watch::remote), with no store.
    /// Push mode: the insight's ingest base URL (https://insight.example:8081).
    /// With it, `run --targets events` watches this cluster and sends object
    /// versions, events and checkpoints there (POST /ingest/v1/watch),
    /// spooled on disk across outages; no store is opened.
    #[arg(long, env = "KUBE_INSIGHT_EVENTS_PUSH_URL")]
    pub events_push_url: Option<String>,
    /// Push mode: this cluster's ingest token (a line of the insight's
    /// KUBE_INSIGHT_INGEST_TOKENS_FILE); the insight records everything as
    /// that token's cluster.
    #[arg(long, env = "KUBE_INSIGHT_PUSH_TOKEN", hide_env_values = true)]
    pub push_token: Option<String>,
    /// Push mode: a file holding the token (a mounted Secret).
    #[arg(long, env = "KUBE_INSIGHT_PUSH_TOKEN_FILE")]
    pub push_token_file: Option<PathBuf>,
    /// Push mode: PEM CA certificates to trust for an https push URL, besides
    /// the public web PKI roots (an insight whose TLS certificate a private CA
    /// signed).
    #[arg(long, env = "KUBE_INSIGHT_EVENTS_PUSH_CA_FILE")]
    pub events_push_ca_file: Option<PathBuf>,
    /// Push mode: the spool directory (records not yet delivered survive a
    /// restart here; use a volume).
    #[arg(
        long,
        env = "KUBE_INSIGHT_EVENTS_SPOOL_DIR",
        default_value = "./data/events-spool"
    )]
    pub events_spool_dir: PathBuf,
    /// Push mode: the spool's bound in bytes; when full, the watch backs
    /// off and re-lists (reconciles) once the insight takes writes again.
    #[arg(long, env = "KUBE_INSIGHT_EVENTS_SPOOL_BYTES", default_value_t = 512 << 20)]
    pub events_spool_bytes: u64,
}

impl EventsSettings {
    pub fn validate(&self) -> Result<()> {
        parse_kinds(&self.events_kinds).map_err(|e| {
            anyhow::anyhow!("invalid KUBE_INSIGHT_EVENTS_KINDS / --events-kinds: {e}")
        })?;
        if let Some(u) = &self.events_push_url {
            let parsed = reqwest::Url::parse(u).with_context(|| {
                format!("invalid KUBE_INSIGHT_EVENTS_PUSH_URL {u:?}: expected the insight's ingest base URL, https://host:port")
            })?;
            if !matches!(parsed.scheme(), "http" | "https") {
                bail!("invalid KUBE_INSIGHT_EVENTS_PUSH_URL {u:?}: the scheme must be https (or http on a trusted network)");
            }
            if self.push_token.is_some() == self.push_token_file.is_some() {
                bail!("KUBE_INSIGHT_EVENTS_PUSH_URL needs this cluster's ingest token: set one of KUBE_INSIGHT_PUSH_TOKEN or KUBE_INSIGHT_PUSH_TOKEN_FILE");
            }
            if self.events_spool_bytes < 1 << 20 {
                bail!(
                    "invalid KUBE_INSIGHT_EVENTS_SPOOL_BYTES {}: must be at least 1048576 (1 MiB)",
                    self.events_spool_bytes
                );
            }
        } else if self.push_token.is_some() || self.push_token_file.is_some() {
            bail!("KUBE_INSIGHT_PUSH_TOKEN(_FILE) is set without KUBE_INSIGHT_EVENTS_PUSH_URL: set the insight's ingest URL too, or unset the token");
        }
        Ok(())
    }

    /// Push mode's agent settings, if a push URL is set (reads the token file).
    pub fn push_config(&self) -> Result<Option<PushConfig>> {
        let Some(url) = &self.events_push_url else {
            return Ok(None);
        };
        let token = match (&self.push_token, &self.push_token_file) {
            (Some(t), _) => t.trim().to_string(),
            (None, Some(p)) => std::fs::read_to_string(p)
                .with_context(|| format!("reading KUBE_INSIGHT_PUSH_TOKEN_FILE {}", p.display()))?
                .trim()
                .to_string(),
            (None, None) => bail!("KUBE_INSIGHT_EVENTS_PUSH_URL needs KUBE_INSIGHT_PUSH_TOKEN or KUBE_INSIGHT_PUSH_TOKEN_FILE"),
        };
        if token.is_empty() {
            bail!("the push token (KUBE_INSIGHT_PUSH_TOKEN / _FILE) is empty");
        }
        let mut cfg = PushConfig::new(url.clone(), token, self.events_spool_dir.clone());
        cfg.spool_bytes = self.events_spool_bytes;
        if let Some(p) = &self.events_push_ca_file {
            cfg.ca_pem = Some(std::fs::read(p).with_context(|| {
                format!("reading KUBE_INSIGHT_EVENTS_PUSH_CA_FILE {}", p.display())
            })?);
        }
        Ok(Some(cfg))
    }

    /// The push lines of `config` (the token masked).
    pub fn render(&self) -> Vec<(&'static str, String)> {
        let set = |b: bool| if b { "******" } else { "(unset)" }.to_string();
        vec![
            (
                "KUBE_INSIGHT_EVENTS_PUSH_URL",
                self.events_push_url
                    .clone()
                    .unwrap_or_else(|| "(unset: the events target writes the store)".into()),
            ),
            ("KUBE_INSIGHT_PUSH_TOKEN", set(self.push_token.is_some())),
            (
                "KUBE_INSIGHT_EVENTS_PUSH_CA_FILE",
                self.events_push_ca_file
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "(unset: public roots)".into()),
            ),
            (
                "KUBE_INSIGHT_PUSH_TOKEN_FILE",
                self.push_token_file
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "(unset)".into()),
            ),
            (
                "KUBE_INSIGHT_EVENTS_SPOOL_DIR",
                self.events_spool_dir.display().to_string(),
            ),
            (
                "KUBE_INSIGHT_EVENTS_SPOOL_BYTES",
                self.events_spool_bytes.to_string(),
            ),
        ]
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
    pub server: crate::remote::ServerArgs,
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

/// What `get` shows, from `/api/v1/objects` (of a server or of a store).
pub struct ObjectView {
    pub kind: String,
    pub name: String,
    pub version_ms: i64,
    pub resource_version: String,
    pub manager: Option<String>,
    pub object: serde_json::Value,
}

/// The object as it was at `t` (`GET /api/v1/objects/{kind}/{namespace}/{name}?at=`);
/// `None` when it did not exist then.
async fn object_at(
    api: &Api,
    cluster: Option<&str>,
    kind: &str,
    namespace: &str,
    name: &str,
    t: i64,
) -> Result<Option<ObjectView>> {
    let ns = if namespace.is_empty() || is_cluster_scoped(kind) {
        "_"
    } else {
        namespace
    };
    let mut q = vec![("at", t.to_string())];
    if let Some(c) = cluster {
        q.push(("cluster", c.to_string()));
    }
    let Some(v) = api
        .get_json_opt::<serde_json::Value>(&format!("api/v1/objects/{kind}/{ns}/{name}"), &q, true)
        .await?
    else {
        return Ok(None);
    };
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
    let version_ms = s("version_time")
        .and_then(|x| parse_time_ms(&x).ok())
        .unwrap_or(t);
    Ok(Some(ObjectView {
        kind: s("kind").unwrap_or_else(|| kind.to_string()),
        name: s("name").unwrap_or_else(|| name.to_string()),
        version_ms,
        resource_version: s("resource_version").unwrap_or_default(),
        manager: s("who"),
        object: v.get("object").cloned().unwrap_or(serde_json::Value::Null),
    }))
}

/// The text `get` prints, from a server or a store.
pub async fn get_text(api: &Api, args: &GetArgs) -> Result<String> {
    let (kind, name) = split_object(&args.object)?;
    let t = time_arg("at", &args.at)?;
    let Some(view) = object_at(
        api,
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

/// One row of `/api/v1/changes` as the CLI reads it.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct ChangeItem {
    pub time: String,
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub change: String,
    #[serde(default)]
    pub summary: String,
    #[serde(default)]
    pub who: Option<String>,
    #[serde(default)]
    pub outcome: Option<String>,
}

/// The text `diff` prints: the changes between T1 and T2, then a line diff
/// of the object's YAML at both times.
pub async fn diff_text(api: &Api, args: &DiffArgs) -> Result<String> {
    let (kind, name) = split_object(&args.object)?;
    let (t1, t2) = (time_arg("from", &args.from)?, time_arg("to", &args.to)?);
    if t1 > t2 {
        bail!("--from {} is after --to {}", args.from, args.to);
    }
    let cluster = args.cluster.as_deref();
    let a = object_at(api, cluster, &kind, &args.namespace, &name, t1).await?;
    let b = object_at(api, cluster, &kind, &args.namespace, &name, t2).await?;
    if a.is_none() && b.is_none() {
        bail!(
            "{kind}/{name} in namespace {:?} existed neither at {} nor at {}",
            args.namespace,
            format_rfc3339_ms(t1),
            format_rfc3339_ms(t2)
        );
    }
    let mut q = vec![
        ("kind", kind.clone()),
        ("from", (t1 + 1).to_string()),
        ("to", t2.to_string()),
        ("limit", "1000".to_string()),
        ("events", "false".to_string()),
        ("dependencies", "false".to_string()),
    ];
    if !is_cluster_scoped(&kind) {
        q.push(("namespace", args.namespace.clone()));
    }
    if let Some(c) = cluster {
        q.push(("cluster", c.to_string()));
    }
    if args.include_status {
        q.push(("include", "status".to_string()));
    }
    let items: Vec<ChangeItem> = api
        .get_json("api/v1/changes", &q)
        .await
        .context("reading the changes")?;
    let mut out = String::new();
    // Newest first in the answer; oldest first here.
    for i in items.iter().rev().filter(|i| i.name == name) {
        out.push_str(&format!("# {} {}: {}\n", i.time, i.change, i.summary));
    }
    let ya = a.as_ref().map(|o| to_yaml(&o.object)).unwrap_or_default();
    let yb = b.as_ref().map(|o| to_yaml(&o.object)).unwrap_or_default();
    let label = |o: &Option<ObjectView>, t: i64| match o {
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

/// The range of `--since` or `--from`/`--to`, in epoch ms.
pub fn range_args(since: &str, from: Option<&str>, to: &str) -> Result<(i64, i64)> {
    let end = time_arg("to", to)?;
    let start = match from {
        Some(f) => time_arg("from", f)?,
        None => {
            let d = kube_insight_core::parse_duration(since)
                .map_err(|e| anyhow::anyhow!("--since {since:?}: {e}"))?;
            end - i64::try_from(d.as_millis()).unwrap_or(i64::MAX / 2)
        }
    };
    if start > end {
        bail!("the range starts after it ends: --from/--since is after --to {to:?}");
    }
    Ok((start, end))
}

/// `kube-insight changes [WORKLOAD] -n NS --since 2h`: the change timeline.
#[derive(Debug, Clone, Args)]
pub struct ChangesArgs {
    /// Only the changes of this workload: deploy/NAME, sts/NAME or NAME.
    pub workload: Option<String>,
    /// Namespace (all when unset).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// How far back from --to: 30m, 2h, 7d.
    #[arg(long, default_value = "1h")]
    pub since: String,
    /// The start instead of --since: RFC 3339, epoch seconds or ms, now-1d.
    #[arg(long)]
    pub from: Option<String>,
    /// The end.
    #[arg(long, default_value = "now")]
    pub to: String,
    /// Only this kind (Deployment, ConfigMap, Node, Event, Dependency, …).
    #[arg(long)]
    pub kind: Option<String>,
    /// Also list status-only updates (controller status writes).
    #[arg(long)]
    pub include_status: bool,
    /// Leave events out (Warning events are listed by default).
    #[arg(long)]
    pub no_events: bool,
    /// Rows at most (newest kept), up to 10000.
    #[arg(long, default_value_t = 500)]
    pub limit: usize,
    /// Output: table or json (the API's rows).
    #[arg(short = 'o', long, default_value = "table")]
    pub output: String,
    /// Cluster (any when unset).
    #[arg(long)]
    pub cluster: Option<String>,
    #[command(flatten)]
    pub server: crate::remote::ServerArgs,
    #[command(flatten)]
    pub store: StoreSettings,
}

/// The text `changes` prints, from a server or a store.
pub async fn changes_text(api: &Api, args: &ChangesArgs) -> Result<String> {
    if args.output != "table" && args.output != "json" {
        bail!("invalid -o {:?}: expected table or json", args.output);
    }
    let (from, to) = range_args(&args.since, args.from.as_deref(), &args.to)?;
    let mut q = vec![
        ("from", from.to_string()),
        ("to", to.to_string()),
        ("limit", args.limit.clamp(1, 10_000).to_string()),
    ];
    let mut opt = |k: &'static str, v: Option<&str>| {
        if let Some(v) = v.filter(|v| !v.is_empty()) {
            q.push((k, v.to_string()));
        }
    };
    opt("namespace", args.namespace.as_deref());
    opt(
        "workload",
        args.workload
            .as_deref()
            .map(|w| w.rsplit('/').next().unwrap_or(w)),
    );
    opt("kind", args.kind.as_deref());
    opt("cluster", args.cluster.as_deref());
    if args.include_status {
        q.push(("include", "status".to_string()));
    }
    if args.no_events {
        q.push(("events", "false".to_string()));
    }
    let rows: Vec<serde_json::Value> = api.get_json("api/v1/changes", &q).await?;
    if args.output == "json" {
        return Ok(format!("{}\n", serde_json::to_string_pretty(&rows)?));
    }
    let items = rows
        .into_iter()
        .map(serde_json::from_value::<ChangeItem>)
        .collect::<Result<Vec<_>, _>>()
        .context("reading the changes: a row is not the expected JSON")?;
    Ok(render_changes(&items))
}

/// The one renderer of `changes`: aligned columns, oldest first.
pub fn render_changes(items: &[ChangeItem]) -> String {
    if items.is_empty() {
        return "no changes in the range\n".to_string();
    }
    let dash = |s: &str| {
        if s.is_empty() {
            "-".to_string()
        } else {
            s.to_string()
        }
    };
    let rows: Vec<[String; 6]> = items
        .iter()
        .rev()
        .map(|i| {
            [
                i.time.clone(),
                dash(&i.namespace),
                format!("{}/{}", i.kind, i.name),
                dash(&i.summary),
                dash(i.who.as_deref().unwrap_or("")),
                dash(i.outcome.as_deref().unwrap_or("")),
            ]
        })
        .collect();
    table(
        &["TIME", "NAMESPACE", "OBJECT", "CHANGE", "WHO", "OUTCOME"],
        &rows,
    )
}

/// Columns padded to their widest cell (in characters), two spaces apart;
/// the last column is not padded.
pub fn table<const N: usize>(header: &[&str; N], rows: &[[String; N]]) -> String {
    let mut width = header.map(|h| h.chars().count());
    for r in rows {
        for (w, c) in width.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut l = String::new();
        for (i, c) in cells.enumerate() {
            if i + 1 == N {
                l.push_str(c);
            } else {
                l.push_str(&format!("{c:<w$}  ", w = width[i]));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&mut header.iter().copied());
    for r in rows {
        line(&mut r.iter().map(String::as_str));
    }
    out
}

/// Runs `changes` (for `cli.rs`).
pub async fn run_changes(args: ChangesArgs) -> Result<()> {
    let api = args.server.api(&args.store).await?;
    print!("{}", changes_text(&api, &args).await?);
    Ok(())
}

/// Runs `get` (for `cli.rs`).
pub async fn run_get(args: GetArgs) -> Result<()> {
    let api = args.server.api(&args.store).await?;
    print!("{}", get_text(&api, &args).await?);
    Ok(())
}

/// Runs `diff` (for `cli.rs`).
pub async fn run_diff(args: DiffArgs) -> Result<()> {
    let api = args.server.api(&args.store).await?;
    print!("{}", diff_text(&api, &args).await?);
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
        let all = crate::store_open::open(&settings.store, settings.options())
            .await
            .unwrap();
        let store = all.events();
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
        drop((store, all));
        let api = Api::local(&settings).await.unwrap();
        let get = GetArgs {
            server: Default::default(),
            object: "deploy/api".into(),
            namespace: "shop".into(),
            at: "2024-05-31T16:00:30Z".into(),
            output: "yaml".into(),
            cluster: None,
            store: settings.clone(),
        };
        let text = get_text(&api, &get).await.unwrap();
        assert!(text.contains("image: api:1.4"), "{text}");
        assert!(
            text.starts_with("# Deployment/api as it was at 2024-05-31T16:00:30.000Z"),
            "{text}"
        );
        let json = get_text(
            &api,
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
            &api,
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
            &api,
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
            server: Default::default(),
            store: settings,
        };
        let text = diff_text(&api, &diff).await.unwrap();
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
    fn the_change_table_is_aligned_oldest_first() {
        let item = |t: &str, name: &str, summary: &str, who: Option<&str>| ChangeItem {
            time: t.into(),
            namespace: "shop".into(),
            kind: "Deployment".into(),
            name: name.into(),
            change: "updated".into(),
            summary: summary.into(),
            who: who.map(str::to_string),
            outcome: Some("completed".into()),
        };
        // Newest first, as the API answers.
        let text = render_changes(&[
            item("2024-05-31T17:00:00.000Z", "payment", "image a → b", None),
            item(
                "2024-05-31T16:00:00.000Z",
                "frontend-long-name",
                "replicas 2 → 3",
                Some("kubectl"),
            ),
        ]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(
            lines[1].contains("frontend-long-name") && lines[2].contains("payment"),
            "{text}"
        );
        for col in ["OBJECT", "CHANGE", "WHO", "OUTCOME"] {
            let at = lines[0].find(col).unwrap();
            for l in &lines[1..] {
                let prefix: String = l.chars().take(lines[0][..at].chars().count()).collect();
                assert!(prefix.ends_with("  "), "{col} misaligned in {l:?}\n{text}");
            }
        }
        assert!(lines[2].contains(" -  "), "no who is '-': {text}");
        assert_eq!(render_changes(&[]), "no changes in the range\n");
    }

    #[test]
    fn ranges_from_since_or_from_to() {
        let (a, b) = range_args("2h", None, "1717171200000").unwrap();
        assert_eq!((a, b), (1_717_171_200_000 - 7_200_000, 1_717_171_200_000));
        let (a, _) = range_args("2h", Some("1717160000000"), "1717171200000").unwrap();
        assert_eq!(a, 1_717_160_000_000);
        let e = range_args("soon", None, "now").unwrap_err().to_string();
        assert!(e.contains("--since"), "{e}");
        assert!(range_args("1h", Some("now"), "now-2h").is_err());
    }

    #[test]
    fn line_diff_marks_changes() {
        assert_eq!(line_diff("a\nb\nc\n", "a\nx\nc\n"), "  a\n- b\n+ x\n  c\n");
        assert!(settings("v1/Secret").validate().is_err());
        assert!(settings("default").validate().is_ok());
    }

    fn settings(kinds: &str) -> EventsSettings {
        EventsSettings {
            events_kinds: kinds.into(),
            events_push_url: None,
            push_token: None,
            push_token_file: None,
            events_push_ca_file: None,
            events_spool_dir: PathBuf::from("./data/events-spool"),
            events_spool_bytes: 512 << 20,
        }
    }

    #[test]
    fn push_settings_are_checked() {
        let mut s = settings("default");
        s.events_push_url = Some("https://insight.example:8081".into());
        let e = s.validate().unwrap_err().to_string();
        assert!(e.contains("KUBE_INSIGHT_PUSH_TOKEN"), "{e}");
        s.push_token = Some("0123456789abcdef0123".into());
        s.validate().unwrap();
        let cfg = s.push_config().unwrap().unwrap();
        assert_eq!(cfg.url, "https://insight.example:8081");
        assert_eq!(cfg.spool_bytes, 512 << 20);
        let printed = format!("{:?}", s.render());
        assert!(!printed.contains("0123456789abcdef0123"), "{printed}");
        s.events_spool_bytes = 1000;
        let e = s.validate().unwrap_err().to_string();
        assert!(e.contains("KUBE_INSIGHT_EVENTS_SPOOL_BYTES"), "{e}");
        s.events_spool_bytes = 512 << 20;
        s.events_push_url = Some("ftp://x".into());
        assert!(s.validate().unwrap_err().to_string().contains("scheme"));
        s.events_push_url = None;
        let e = s.validate().unwrap_err().to_string();
        assert!(e.contains("without KUBE_INSIGHT_EVENTS_PUSH_URL"), "{e}");
    }
}
