//! `kube-insight topology` (the graph at a moment) and `kube-insight
//! topology diff` (what changed between two), reading the store directly;
//! and the wiring of the `topology` target for `kube-insight run`.

use crate::config::StoreSettings;
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use kube_insight_core::parse_time_ms;
use kube_insight_core::time::format_rfc3339_ms;
use kube_insight_core::topology::{
    self as topo, Change, DiffOptions, Group, Snapshot, ViewOptions,
};
use kube_insight_sources::leader::Fence;
use kube_insight_sources::pull;
use kube_insight_sources::topology::{TopologyConfig, TopologySource};
use kube_insight_store::{DynStore, DynTopologyStore, StoreOptions, StoreUrl};
use kube_insight_store_sqlite::topology::SqliteTopologyStore;
use kube_insight_telemetry::Telemetry;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// `kube-insight topology`: the graph as it was at a moment.
#[derive(Debug, Clone, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct TopologyArgs {
    #[command(subcommand)]
    pub command: Option<TopologyCommand>,
    #[command(flatten)]
    pub view: ViewArgs,
    /// The moment: RFC 3339, epoch seconds or milliseconds, now or now-1h.
    #[arg(long, default_value = "now")]
    pub at: String,
    #[command(flatten)]
    pub store: StoreSettings,
}

#[derive(Debug, Clone, Subcommand)]
pub enum TopologyCommand {
    /// What appeared, disappeared or changed between two moments.
    Diff(DiffArgs),
}

#[derive(Debug, Clone, Args)]
pub struct DiffArgs {
    /// The earlier moment.
    #[arg(long)]
    pub from: String,
    /// The later moment.
    #[arg(long, default_value = "now")]
    pub to: String,
    /// An edge changed when its traffic or error ratio moved by more than this factor.
    #[arg(long, default_value_t = 2.0)]
    pub factor: f64,
    #[command(flatten)]
    pub view: ViewArgs,
    #[command(flatten)]
    pub store: StoreSettings,
}

#[derive(Debug, Clone, Args)]
pub struct ViewArgs {
    /// The monitored cluster (default: the only one with topology).
    #[arg(long, env = "KUBE_INSIGHT_CLUSTER")]
    pub cluster: Option<String>,
    /// Nodes of this namespace and their direct peers.
    #[arg(long)]
    pub namespace: Option<String>,
    /// A workload (namespace/name, or a unique name) to centre on.
    #[arg(long)]
    pub focus: Option<String>,
    /// Hops from the focus.
    #[arg(long, default_value_t = 1)]
    pub depth: usize,
    /// namespace, workload or pod (default: workload, namespace for large graphs).
    #[arg(long)]
    pub group: Option<String>,
    /// At most this many nodes; the rest fold into "N others".
    #[arg(long, default_value_t = topo::DEFAULT_MAX_NODES)]
    pub limit: usize,
    /// table, json or dot (Graphviz: `| dot -Tpng -o topology.png`).
    #[arg(long, default_value = "table")]
    pub format: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Table,
    Json,
    Dot,
}

impl ViewArgs {
    fn options(&self) -> Result<ViewOptions> {
        let group = match &self.group {
            None => None,
            Some(g) => Some(Group::parse(g).context("--group")?),
        };
        if self.limit == 0 {
            bail!("invalid --limit 0: must be at least 2");
        }
        Ok(ViewOptions {
            namespace: self.namespace.clone(),
            focus: self.focus.clone(),
            depth: self.depth.min(topo::MAX_DEPTH),
            group,
            max_nodes: self.limit.clamp(2, topo::MAX_NODES_LIMIT),
        })
    }

    fn format(&self) -> Result<Format> {
        match self.format.as_str() {
            "table" => Ok(Format::Table),
            "json" => Ok(Format::Json),
            "dot" => Ok(Format::Dot),
            other => Err(topo::TopologyError::InvalidFormat {
                input: other.to_string(),
            })
            .context("--format"),
        }
    }
}

/// Opens the topology side of the store named by `KUBE_INSIGHT_STORE`.
pub async fn open_topology_store(url: &str, options: StoreOptions) -> Result<DynTopologyStore> {
    match StoreUrl::parse(url).with_context(|| format!("invalid KUBE_INSIGHT_STORE {url:?}"))? {
        StoreUrl::Sqlite { path } => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).with_context(|| {
                    format!(
                        "creating the store directory {} (KUBE_INSIGHT_STORE)",
                        dir.display()
                    )
                })?;
            }
            let s = SqliteTopologyStore::open(&path, options)
                .await
                .with_context(|| format!("opening the topology store {url}"))?;
            Ok(Arc::new(s))
        }
        _ => bail!(
            "the topology store needs the sqlite backend for now (KUBE_INSIGHT_STORE={url:?})"
        ),
    }
}

/// Starts the `topology` target: the snapshot loop (the shared pull loop)
/// and its retention pass (every 10 minutes).
/// `fence`: the collector's leadership, checked before each save (`None`:
/// no election, always allowed).
#[allow(clippy::too_many_arguments)]
pub fn start_topology_target(
    tasks: &mut JoinSet<()>,
    metrics: DynStore,
    topology: DynTopologyStore,
    cfg: TopologyConfig,
    interval: Duration,
    fence: Option<Fence>,
    telemetry: Arc<Telemetry>,
    shutdown: CancellationToken,
) {
    tracing::info!(cluster = %cfg.cluster, interval = %humantime::format_duration(interval), window = %humantime::format_duration(cfg.window), "topology: snapshotting from stored flow, service-graph and owner series");
    let mut src = TopologySource::new(metrics, topology.clone(), cfg);
    if let Some(f) = fence {
        src = src.with_fence(f);
    }
    let src = Arc::new(src);
    let (tel, stop) = (telemetry, shutdown.clone());
    tasks.spawn(async move {
        pull::run(src, pull::PullConfig::every(interval), tel, stop).await;
    });
    tasks.spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(600));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            if let Err(e) = topology
                .maintain_topology(kube_insight_core::time::now_ms())
                .await
            {
                tracing::warn!(error = %e, "topology retention failed; retrying in 10 minutes");
            }
        }
    });
}

async fn pick_cluster(store: &DynTopologyStore, asked: Option<&str>) -> Result<Option<String>> {
    if let Some(c) = asked {
        return Ok(Some(c.to_string()));
    }
    let all = store.topology_clusters().await?;
    match all.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(one.cluster.clone())),
        many => bail!(
            "--cluster is required: topology is stored for {} clusters ({})",
            many.len(),
            many.iter()
                .take(10)
                .map(|c| c.cluster.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

async fn snapshot(
    store: &DynTopologyStore,
    cluster: Option<&str>,
    at: i64,
) -> Result<Option<Snapshot>> {
    let Some(c) = cluster else { return Ok(None) };
    Ok(store.snapshot_at(c, at).await?.map(|(s, _, _)| s))
}

/// Runs `kube-insight topology …`; returns the text to print.
pub async fn run(args: TopologyArgs) -> Result<String> {
    match args.command {
        Some(TopologyCommand::Diff(d)) => run_diff(d).await,
        None => {
            args.store.validate()?;
            let at = parse_time_ms(&args.at).context("--at")?;
            let opts = args.view.options()?;
            let format = args.view.format()?;
            let store = open_topology_store(&args.store.store, args.store.options()).await?;
            let cluster = pick_cluster(&store, args.view.cluster.as_deref()).await?;
            let Some(snap) = snapshot(&store, cluster.as_deref(), at).await? else {
                bail!(
                    "no topology at {} (before the first snapshot, or removed by retention)",
                    format_rfc3339_ms(at)
                );
            };
            let v = topo::view(&snap, &opts)?;
            Ok(match format {
                Format::Dot => topo::to_dot(&v.snapshot, None),
                Format::Json => {
                    serde_json::to_string_pretty(&serde_json::json!({
                        "cluster": cluster,
                        "at": format_rfc3339_ms(at),
                        "group": v.group.name(),
                        "folded": v.folded,
                        "nodes": topo::node_rows(&v.snapshot, None),
                        "edges": topo::edge_rows(&v.snapshot, None),
                    }))? + "\n"
                }
                Format::Table => table(&v.snapshot, None),
            })
        }
    }
}

async fn run_diff(d: DiffArgs) -> Result<String> {
    d.store.validate()?;
    let from = parse_time_ms(&d.from).context("--from")?;
    let to = parse_time_ms(&d.to).context("--to")?;
    if from > to {
        bail!("--from {} is after --to {}", d.from, d.to);
    }
    if !(d.factor.is_finite() && d.factor > 1.0) {
        bail!("invalid --factor {}: must be greater than 1", d.factor);
    }
    let opts = d.view.options()?;
    let format = d.view.format()?;
    let store = open_topology_store(&d.store.store, d.store.options()).await?;
    let cluster = pick_cluster(&store, d.view.cluster.as_deref()).await?;
    let a = snapshot(&store, cluster.as_deref(), from)
        .await?
        .unwrap_or_default();
    let b = snapshot(&store, cluster.as_deref(), to)
        .await?
        .unwrap_or_default();
    let group = opts.group.unwrap_or(Group::Workload);
    let uncapped = ViewOptions {
        group: Some(group),
        max_nodes: usize::MAX / 2,
        ..opts.clone()
    };
    let shape = |s: &Snapshot| match topo::view(s, &uncapped) {
        Err(topo::TopologyError::FocusNotFound { .. }) => Ok(Snapshot::default()),
        r => r.map(|v| v.snapshot),
    };
    let (va, vb) = (shape(&a)?, shape(&b)?);
    let diff = topo::diff(
        &va,
        &vb,
        &DiffOptions {
            factor: d.factor,
            ..Default::default()
        },
    );
    let o = topo::overlay(&va, &vb, &diff);
    Ok(match format {
        Format::Dot => topo::to_dot(&o.snapshot, Some((&o.nodes, &o.edges))),
        Format::Json => {
            serde_json::to_string_pretty(&serde_json::json!({
                "cluster": cluster,
                "from": format_rfc3339_ms(from),
                "to": format_rfc3339_ms(to),
                "changes": kube_insight_api::topology::diff_rows(&diff),
            }))? + "\n"
        }
        Format::Table => {
            let mut s = String::new();
            let _ = writeln!(s, "{:<9} {:<5} {:<60} DETAIL", "CHANGE", "TYPE", "ID");
            for n in &diff.added_nodes {
                let _ = writeln!(
                    s,
                    "{:<9} {:<5} {:<60} {}",
                    "added",
                    "node",
                    n.id,
                    n.subtitle()
                );
            }
            for n in &diff.removed_nodes {
                let _ = writeln!(
                    s,
                    "{:<9} {:<5} {:<60} {}",
                    "removed",
                    "node",
                    n.id,
                    n.subtitle()
                );
            }
            for e in &diff.added_edges {
                let _ = writeln!(s, "{:<9} {:<5} {:<60}", "added", "edge", e.id);
            }
            for e in &diff.removed_edges {
                let _ = writeln!(s, "{:<9} {:<5} {:<60}", "removed", "edge", e.id);
            }
            for c in &diff.changed_edges {
                let _ = writeln!(
                    s,
                    "{:<9} {:<5} {:<60} {}: {} → {}",
                    "changed",
                    "edge",
                    c.edge.id,
                    c.reason,
                    stat_text(&c.before),
                    stat_text(&c.after)
                );
            }
            if diff.added_nodes.is_empty()
                && diff.removed_nodes.is_empty()
                && diff.added_edges.is_empty()
                && diff.removed_edges.is_empty()
                && diff.changed_edges.is_empty()
            {
                s.push_str("no change\n");
            }
            s
        }
    })
}

fn stat_text(st: &topo::EdgeStats) -> String {
    let main = topo::edge_mainstat(st);
    let sec = topo::edge_secondarystat(st);
    match (main.is_empty(), sec.is_empty()) {
        (true, true) => "-".into(),
        (false, true) => main,
        (true, false) => sec,
        (false, false) => format!("{main} ({sec})"),
    }
}

fn table(s: &Snapshot, _changes: Option<&BTreeMap<String, Change>>) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "NODES ({})", s.graph.nodes.len());
    let _ = writeln!(
        o,
        "{:<50} {:<24} {:>8} {:>10} {:>9} {:>8}",
        "ID", "KIND", "CPU", "MEMORY", "REQ/S", "ERR%"
    );
    for n in s.graph.nodes.values() {
        let st = s.stats.nodes.get(&n.id).copied().unwrap_or_default();
        let _ = writeln!(
            o,
            "{:<50} {:<24} {:>8} {:>10} {:>9} {:>8}",
            n.id,
            n.subtitle(),
            st.cpu_cores.map_or("-".into(), |c| format!("{c:.3}")),
            st.memory_bytes.map_or("-".into(), topo::fmt_bytes),
            st.requests_per_s.map_or("-".into(), |r| format!("{r:.2}")),
            st.error_ratio
                .map_or("-".into(), |e| format!("{:.1}", e * 100.0)),
        );
    }
    let _ = writeln!(o, "\nEDGES ({})", s.graph.edges.len());
    let _ = writeln!(
        o,
        "{:<40} {:<2} {:<40} {:>12} DETAIL",
        "SOURCE", "", "TARGET", "TRAFFIC"
    );
    for e in s.graph.edges.values() {
        let st = s.stats.edges.get(&e.id).copied().unwrap_or_default();
        let _ = writeln!(
            o,
            "{:<40} {:<2} {:<40} {:>12} {}",
            e.source,
            if e.directed { "->" } else { "--" },
            e.target,
            st.bytes_per_s.map_or("-".into(), topo::fmt_bytes_rate),
            topo::edge_secondarystat(&st)
        );
    }
    o
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;
    use clap::Parser;
    use kube_insight_store::conformance_topology::sample;

    #[derive(Debug, Parser)]
    struct T {
        #[command(subcommand)]
        cmd: Cmd,
    }
    #[derive(Debug, clap::Subcommand)]
    enum Cmd {
        Topology(TopologyArgs),
    }

    fn parse(args: &[&str]) -> TopologyArgs {
        let Cmd::Topology(t) = T::try_parse_from(args).unwrap().cmd;
        t
    }

    #[tokio::test]
    async fn table_json_dot_and_diff_read_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/insight.db", dir.path().display());
        let store = open_topology_store(&url, StoreOptions::default())
            .await
            .unwrap();
        let t0 = 1_764_000_000_000i64;
        store.save_snapshot("prod", t0, sample(0)).await.unwrap();
        store
            .save_snapshot("prod", t0 + 60_000, sample(1))
            .await
            .unwrap();
        let at = (t0 + 1000).to_string();
        let out = run(parse(&["x", "topology", "--store", &url, "--at", &at]))
            .await
            .unwrap();
        assert!(out.contains("shop/w0") && out.contains("EDGES"), "{out}");
        let out = run(parse(&[
            "x", "topology", "--store", &url, "--at", &at, "--focus", "w0", "--format", "json",
        ]))
        .await
        .unwrap();
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["edges"].as_array().unwrap().len(), 2, "{v}");
        let out = run(parse(&[
            "x", "topology", "--store", &url, "--at", &at, "--format", "dot",
        ]))
        .await
        .unwrap();
        assert!(out.starts_with("digraph topology"));
        let to = (t0 + 60_000).to_string();
        let out = run(parse(&[
            "x",
            "topology",
            "diff",
            "--store",
            &url,
            "--from",
            &t0.to_string(),
            "--to",
            &to,
        ]))
        .await
        .unwrap();
        assert!(out.contains("added") && out.contains("shop/w6"), "{out}");
        let out = run(parse(&[
            "x",
            "topology",
            "diff",
            "--store",
            &url,
            "--from",
            &t0.to_string(),
            "--to",
            &to,
            "--format",
            "dot",
        ]))
        .await
        .unwrap();
        assert!(out.contains(Change::Added.color()), "{out}");
        let e = run(parse(&[
            "x",
            "topology",
            "--store",
            &url,
            "--at",
            "1000000000",
        ]))
        .await
        .unwrap_err();
        assert!(e.to_string().contains("no topology"), "{e}");
        let e = run(parse(&[
            "x", "topology", "--store", &url, "--format", "png",
        ]))
        .await
        .unwrap_err();
        assert!(format!("{e:#}").contains("invalid format \"png\""), "{e:#}");
    }
}
