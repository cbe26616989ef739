//! `kube-insight demo`: a synthetic Online-Boutique-shaped cluster
//! (`kube-insight-scenario`) played into kube-insight through its real ingest
//! paths: a backdated hour of history, then real time with an incident
//! every few minutes. By default it starts `run` in this process on a
//! temporary store; `--ingest URL` plays into a running one instead.

use crate::cli::Cli;
use crate::config::RunSettings;
use anyhow::{bail, Context, Result};
use kube_insight_core::time::now_ms;
use kube_insight_scenario::cluster::rfc3339;
use kube_insight_scenario::{catalog, scenarios, ApiServer, Player, Timeline, World, STEP_MS};
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Ingest URL of a running kube-insight to play into (default: start one).
    #[arg(long)]
    pub ingest: Option<String>,
    /// API URL of that kube-insight (for the printed links).
    #[arg(long, requires = "ingest")]
    pub api: Option<String>,
    /// Ingest token of that kube-insight.
    #[arg(long, env = "KUBE_INSIGHT_INGEST_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Backdated history played first.
    #[arg(long, default_value = "1h", value_parser = crate::config::duration)]
    pub history: Duration,
    /// Time between live incidents.
    #[arg(long, default_value = "3m", value_parser = crate::config::duration)]
    pub every: Duration,
    /// Stop after this long in real time (default: until Ctrl-C).
    #[arg(long, value_parser = crate::config::duration)]
    pub duration: Option<Duration>,
    /// API listener of the started kube-insight.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub api_listen: SocketAddr,
    /// Ingest listener of the started kube-insight.
    #[arg(long, default_value = "127.0.0.1:8081")]
    pub ingest_listen: SocketAddr,
    /// Ops listener of the started kube-insight.
    #[arg(long, default_value = "127.0.0.1:8082")]
    pub ops_listen: SocketAddr,
    /// Store of the started kube-insight (default: a temporary directory, removed at exit).
    #[arg(long)]
    pub store: Option<String>,
}

/// The incidents of the history, minutes before its end.
const HISTORY_INCIDENTS: [(usize, i64); 3] = [(0, 48), (8, 28), (4, 12)];

pub async fn run(args: DemoArgs) -> Result<()> {
    let api = ApiServer::start().await?;
    let tmp = std::env::temp_dir().join(format!("kube-insight-demo-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let kubeconfig = tmp.join("kubeconfig");
    std::fs::write(&kubeconfig, api.kubeconfig())
        .with_context(|| format!("writing {}", kubeconfig.display()))?;
    let stop = tokio_util::sync::CancellationToken::new();
    let (ingest, api_url, server) = match &args.ingest {
        Some(ingest) => {
            println!(
                "playing into {ingest}; for changes and events, run it with KUBE_INSIGHT_KUBECONFIG={} KUBE_INSIGHT_EVENTS_KINDS={}",
                kubeconfig.display(),
                kube_insight_scenario::WATCH_KINDS
            );
            let api_url = args
                .api
                .clone()
                .unwrap_or_else(|| "http://127.0.0.1:8080".into());
            (ingest.clone(), api_url, None)
        }
        None => {
            let settings = settings(&args, &tmp, &kubeconfig)?;
            let s = stop.clone();
            let server = tokio::spawn(crate::run::run_until(settings, async move {
                tokio::select! {
                    _ = crate::run::shutdown_signal() => {}
                    _ = s.cancelled() => {}
                }
            }));
            wait_ready(&format!("http://{}/readyz", args.ops_listen)).await?;
            let t0 = std::time::Instant::now();
            while !api.watching(&kube_insight_scenario::WATCH_PLURALS) {
                if t0.elapsed() > Duration::from_secs(30) {
                    bail!(
                        "the events watch did not list the demo's API server {} within 30 s",
                        api.url
                    );
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            (
                format!("http://{}", args.ingest_listen),
                format!("http://{}", args.api_listen),
                Some(server),
            )
        }
    };
    let result = play(&args, api, &ingest, &api_url, &stop).await;
    stop.cancel();
    if let Some(server) = server {
        server
            .await
            .context("the kube-insight run task panicked")??;
    }
    if args.store.is_none() {
        let _ = std::fs::remove_dir_all(&tmp);
    }
    result
}

fn settings(
    args: &DemoArgs,
    tmp: &std::path::Path,
    kubeconfig: &std::path::Path,
) -> Result<RunSettings> {
    let store = args
        .store
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", tmp.join("insight.db").display()));
    let argv: Vec<String> = [
        "kube-insight",
        "run",
        "--store",
        &store,
        "--cluster",
        "demo",
        "--api-listen",
        &args.api_listen.to_string(),
        "--ingest-listen",
        &args.ingest_listen.to_string(),
        "--ops-listen",
        &args.ops_listen.to_string(),
        "--kubeconfig",
        &kubeconfig.display().to_string(),
        "--events-kinds",
        kube_insight_scenario::WATCH_KINDS,
        "--topology-interval",
        "5s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let cli = <Cli as clap::Parser>::try_parse_from(argv)
        .context("building the run settings of the demo")?;
    match cli.command {
        crate::cli::Command::Run(s) => {
            s.validate()?;
            Ok(*s)
        }
        _ => bail!("building the run settings of the demo: not a run command"),
    }
}

async fn wait_ready(url: &str) -> Result<()> {
    let client = reqwest::Client::new();
    for _ in 0..600 {
        if let Ok(r) = client.get(url).send().await {
            if r.status().is_success() {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("kube-insight did not become ready at {url} within 60 s")
}

async fn play(
    args: &DemoArgs,
    api: ApiServer,
    ingest: &str,
    api_url: &str,
    stop: &tokio_util::sync::CancellationToken,
) -> Result<()> {
    let types = catalog();
    let tl = Timeline::ending_at(now_ms(), args.history, Duration::ZERO);
    let mut world = World::new(7, tl.start);
    scenarios::history(&mut world, tl.end);
    for (k, minutes) in HISTORY_INCIDENTS {
        let at = tl.end - minutes * 60_000;
        if at > tl.start {
            let s = &types[k % types.len()];
            scenarios::distractors(&mut world, at, k);
            s.inject(&mut world, at);
            s.resolve(&mut world, at + 6 * 60_000);
            println!(
                "history: {} at {} ({} {}/{}), resolved 6 min later",
                s.title,
                rfc3339(at),
                s.cause.kind,
                s.cause.namespace,
                s.cause.name
            );
        }
    }
    let mut player = Player::new(ingest, args.token.clone(), api);
    let started = std::time::Instant::now();
    player.play(&mut world, tl.start, tl.end, 20).await?;
    println!(
        "played {} of history in {:.1} s: {} samples, {} log records, {} object changes",
        humantime::format_duration(args.history),
        started.elapsed().as_secs_f64(),
        player.samples,
        player.log_records,
        player.changes
    );
    println!("\nlook at:\n  {api_url}/\n  {api_url}/api/v1/topology\n  {api_url}/api/v1/changes?from=now-1h\n  {api_url}/api/v1/suspects?namespace=shop&workload=frontend\n  {api_url}/prometheus/api/v1/query?query=sum+by+(k8s_owner_name)(rate(http_server_request_duration_seconds_count[1m]))\n\nCtrl-C stops.\n");
    let deadline = args.duration.map(|d| std::time::Instant::now() + d);
    let every = i64::try_from(args.every.as_millis())
        .unwrap_or(180_000)
        .max(STEP_MS);
    let mut t = tl.end;
    let mut next_incident = t + every.min(60_000);
    let mut open: Option<(usize, i64)> = None;
    let mut k = 0usize;
    let mut tick = tokio::time::interval(Duration::from_millis(STEP_MS as u64));
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.cancelled() => return Ok(()),
            _ = crate::run::shutdown_signal() => return Ok(()),
        }
        if deadline.is_some_and(|d| std::time::Instant::now() >= d) {
            return Ok(());
        }
        t = (now_ms() - now_ms().rem_euclid(STEP_MS)).max(t + STEP_MS);
        if let Some((i, until)) = open {
            if t >= until {
                types[i].resolve(&mut world, t);
                println!("{}: resolved {}", rfc3339(t), types[i].id);
                open = None;
            }
        }
        if t >= next_incident && open.is_none() {
            let i = (k * 7 + 3) % types.len();
            k += 1;
            let s = &types[i];
            s.inject(&mut world, t);
            let (ns, name) = s.symptom.split_once('/').unwrap_or(("shop", s.symptom));
            println!(
                "{}: injected {} — cause {} {}/{} ({}); symptom at {}\n  {api_url}/api/v1/suspects?namespace={ns}&workload={name}",
                rfc3339(t), s.title, s.cause.kind, s.cause.namespace, s.cause.name, s.cause.category, s.symptom
            );
            open = Some((i, t + every * 4 / 5));
            next_incident = t + every;
        }
        let mut batch = kube_insight_scenario::world::Batch::default();
        world.step(t, &mut batch);
        player.send(&mut batch).await?;
        player.apply_changes(&mut world, t);
    }
}
