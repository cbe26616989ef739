//! `kube-insight topology` (the graph at a moment) and `kube-insight
//! topology diff` (what changed between two), reading `/api/v1/topology*`
//! of a server (`--server`) or of a store (`--store`, in-process) through
//! [`crate::remote::Api`], one renderer each; and the wiring of the
//! `topology` target for `kube-insight run`.

use crate::config::StoreSettings;
use crate::remote::Api;
use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use kube_insight_core::parse_time_ms;
use kube_insight_core::time::format_rfc3339_ms;
use kube_insight_core::topology::{self as topo, Group, ViewOptions};
use kube_insight_sources::leader::Fence;
use kube_insight_sources::pull;
use kube_insight_sources::topology::{TopologyConfig, TopologySource};
use kube_insight_store::{DynStore, DynTopologyStore};
use kube_insight_telemetry::Telemetry;
use serde_json::Value;
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
    pub server: crate::remote::ServerArgs,
    #[command(flatten)]
    pub store: StoreSettings,
}

#[derive(Debug, Clone, Subcommand)]
pub enum TopologyCommand {
    /// What appeared, disappeared or changed between two moments.
    #[command(after_help = "Examples:
  kube-insight topology diff --from now-1d --to now
  kube-insight topology diff --from 2024-05-31T15:00:00Z --to 2024-05-31T16:00:00Z --namespace shop --factor 3
  kube-insight topology diff --from now-2h --format dot | dot -Tpng > changes.png
  kube-insight topology diff --from now-1h --format json --server http://kube-insight:8080")]
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
    pub server: crate::remote::ServerArgs,
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

    /// The view's query parameters (checked first, so errors name the flags).
    fn query(&self) -> Result<Vec<(&'static str, String)>> {
        let o = self.options()?;
        let mut q = vec![
            ("depth", o.depth.to_string()),
            ("limit", o.max_nodes.to_string()),
        ];
        let mut opt = |k: &'static str, v: Option<String>| {
            if let Some(v) = v.filter(|v| !v.is_empty()) {
                q.push((k, v));
            }
        };
        opt("cluster", self.cluster.clone());
        opt("namespace", o.namespace);
        opt("focus", o.focus);
        opt("group", o.group.map(|g| g.name().to_string()));
        Ok(q)
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

/// Runs `kube-insight topology …` against a server or a store; returns the
/// text to print.
pub async fn run(args: TopologyArgs) -> Result<String> {
    match args.command {
        Some(TopologyCommand::Diff(d)) => {
            let api = d.server.api(&d.store).await?;
            diff_text(&api, &d).await
        }
        None => {
            let api = args.server.api(&args.store).await?;
            graph_text(&api, &args).await
        }
    }
}

/// The graph at `--at` (`GET /api/v1/topology`), rendered.
pub async fn graph_text(api: &Api, args: &TopologyArgs) -> Result<String> {
    let at = parse_time_ms(&args.at).context("--at")?;
    let format = args.view.format()?;
    let mut q = args.view.query()?;
    q.push(("at", at.to_string()));
    if format == Format::Dot {
        q.push(("format", "dot".into()));
        return api.get_text("api/v1/topology", &q).await;
    }
    let v: Value = api.get_json("api/v1/topology", &q).await?;
    if v.get("note").is_some() {
        bail!(
            "no topology at {} (before the first snapshot, or removed by retention)",
            format_rfc3339_ms(at)
        );
    }
    Ok(match format {
        Format::Json => serde_json::to_string_pretty(&v)? + "\n",
        _ => graph_table(&rows(&v, "nodes"), &rows(&v, "edges")),
    })
}

/// What changed between `--from` and `--to` (`GET /api/v1/topology/diff`), rendered.
pub async fn diff_text(api: &Api, d: &DiffArgs) -> Result<String> {
    let from = parse_time_ms(&d.from).context("--from")?;
    let to = parse_time_ms(&d.to).context("--to")?;
    if from > to {
        bail!("--from {} is after --to {}", d.from, d.to);
    }
    if !(d.factor.is_finite() && d.factor > 1.0) {
        bail!("invalid --factor {}: must be greater than 1", d.factor);
    }
    let format = d.view.format()?;
    let mut q = d.view.query()?;
    q.extend([
        ("from", from.to_string()),
        ("to", to.to_string()),
        ("factor", d.factor.to_string()),
    ]);
    if format == Format::Dot {
        q.push(("format", "dot".into()));
        return api.get_text("api/v1/topology/diff", &q).await;
    }
    let changes: Vec<Value> = api.get_json("api/v1/topology/diff", &q).await?;
    Ok(match format {
        Format::Json => {
            serde_json::to_string_pretty(&serde_json::json!({
                "cluster": d.view.cluster,
                "from": format_rfc3339_ms(from),
                "to": format_rfc3339_ms(to),
                "changes": changes,
            }))? + "\n"
        }
        _ => diff_table(&changes),
    })
}

fn rows(v: &Value, key: &str) -> Vec<Value> {
    v.get(key)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn txt<'a>(v: &'a Value, k: &str) -> &'a str {
    v.get(k).and_then(Value::as_str).unwrap_or("")
}

fn num(v: &Value, k: &str) -> Option<f64> {
    v.get(k).and_then(Value::as_f64)
}

/// The one renderer of `topology --format table`, from the API's node and
/// edge rows (`topo::node_rows`, `topo::edge_rows`).
pub fn graph_table(nodes: &[Value], edges: &[Value]) -> String {
    let mut o = String::new();
    let _ = writeln!(o, "NODES ({})", nodes.len());
    let _ = writeln!(
        o,
        "{:<50} {:<24} {:>8} {:>10} {:>9} {:>8}",
        "ID", "KIND", "CPU", "MEMORY", "REQ/S", "ERR%"
    );
    for n in nodes {
        let _ = writeln!(
            o,
            "{:<50} {:<24} {:>8} {:>10} {:>9} {:>8}",
            txt(n, "id"),
            txt(n, "subtitle"),
            num(n, "detail__cpu_cores").map_or("-".into(), |c| format!("{c:.3}")),
            num(n, "detail__memory_bytes").map_or("-".into(), topo::fmt_bytes),
            num(n, "detail__requests_per_s").map_or("-".into(), |r| format!("{r:.2}")),
            num(n, "detail__error_ratio").map_or("-".into(), |e| format!("{:.1}", e * 100.0)),
        );
    }
    let _ = writeln!(o, "\nEDGES ({})", edges.len());
    let _ = writeln!(
        o,
        "{:<40} {:<2} {:<40} {:>12} DETAIL",
        "SOURCE", "", "TARGET", "TRAFFIC"
    );
    for e in edges {
        let directed = txt(e, "detail__direction") != "undirected";
        let line = format!(
            "{:<40} {:<2} {:<40} {:>12} {}",
            txt(e, "source"),
            if directed { "->" } else { "--" },
            txt(e, "target"),
            num(e, "detail__bytes_per_s").map_or("-".into(), topo::fmt_bytes_rate),
            txt(e, "secondarystat")
        );
        let _ = writeln!(o, "{}", line.trim_end());
    }
    o
}

/// The one renderer of `topology diff --format table`, from the API's diff
/// rows (`api::topology::diff_rows`).
pub fn diff_table(changes: &[Value]) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{:<9} {:<5} {:<60} DETAIL", "CHANGE", "TYPE", "ID");
    for c in changes {
        let detail = if txt(c, "type") == "node" {
            match (txt(c, "kind"), txt(c, "namespace")) {
                ("", "") => "-".to_string(),
                (k, "") => k.to_string(),
                ("", ns) => format!("service · {ns}"),
                (k, ns) => format!("{k} · {ns}"),
            }
        } else if txt(c, "change") == "changed" {
            let stats = |side: &str| topo::EdgeStats {
                bytes_per_s: num(c, &format!("{side}_bytes_per_s")),
                error_ratio: num(c, &format!("{side}_error_ratio")),
                ..Default::default()
            };
            format!(
                "{}: {} → {}",
                txt(c, "reason"),
                stat_text(&stats("before")),
                stat_text(&stats("after"))
            )
        } else {
            String::new()
        };
        let line = format!(
            "{:<9} {:<5} {:<60} {detail}",
            txt(c, "change"),
            txt(c, "type"),
            txt(c, "id")
        );
        let _ = writeln!(s, "{}", line.trim_end());
    }
    if changes.is_empty() {
        s.push_str("no change\n");
    }
    s
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
        let all = crate::store_open::open(&url, Default::default())
            .await
            .unwrap();
        let store = all.topology();
        let t0 = 1_764_000_000_000i64;
        store.save_snapshot("prod", t0, sample(0)).await.unwrap();
        store
            .save_snapshot("prod", t0 + 60_000, sample(1))
            .await
            .unwrap();
        drop((store, all));
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
        assert!(out.contains(topo::Change::Added.color()), "{out}");
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
