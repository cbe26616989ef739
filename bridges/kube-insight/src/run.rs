//! `kube-insight run`: opens the store once, starts the selected targets on
//! three listeners (ingest, api, ops), and shuts down gracefully on SIGTERM or
//! Ctrl-C (listeners stop accepting, in-flight requests finish, the store
//! flushes).

use crate::config::RunSettings;
use crate::targets::{self, Target};
use anyhow::{Context, Result};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use kube_insight_sources::kube_watch::ingest::{WatchIngestSource, WatchStateSource};
use kube_insight_sources::kube_watch::remote::{PushConfig, RemoteEventStore};
use kube_insight_sources::leader::{run_while_leading, Fence, Leadership, LeaseElection};
use kube_insight_sources::metrics::transform::LabelPolicy;
use kube_insight_sources::metrics::{FederateConfig, FederateSource, RemoteWriteSource};
use kube_insight_sources::{pull, push};
use kube_insight_store::DynStore;
use kube_insight_telemetry::{labels, Telemetry};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

pub fn init_logging(format: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("KUBE_INSIGHT_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if format == "json" {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.try_init()
    };
}

struct OpsState {
    store: DynStore,
    telemetry: Arc<Telemetry>,
    started: AtomicBool,
}

pub async fn run(settings: RunSettings) -> Result<()> {
    run_until(settings, shutdown_signal()).await
}

/// [`run`] until `stop` completes (SIGTERM or Ctrl-C for `run`; the demo's own bound).
pub async fn run_until(
    settings: RunSettings,
    stop: impl std::future::Future<Output = ()>,
) -> Result<()> {
    init_logging(&settings.log_format);
    let selected = targets::parse(&settings.targets)?;
    if let Some(push) = settings.events.push_config()? {
        return run_push_agent(settings, selected, push, stop).await;
    }
    let tokens = Arc::new(settings.tokens()?);
    // Read before anything starts: a bad file stops start-up.
    let api_tokens = settings.api_tokens()?;
    for t in &selected.not_built {
        tracing::warn!(
            target_name = t.name(),
            "target {} is not built in this version and does not run: {}",
            t.name(),
            t.describe()
        );
    }
    tracing::info!(
        targets = %selected.run.iter().map(|t| t.name()).collect::<Vec<_>>().join(","),
        store = %settings.store.store,
        cluster = %settings.cluster,
        "starting kube-insight {}",
        env!("CARGO_PKG_VERSION")
    );

    let store = open_store(&settings).await?;
    let telemetry = Arc::new(Telemetry::new());
    for t in Target::ALL {
        telemetry
            .target_up
            .get_or_create(&labels([("target", t.name())]))
            .set(i64::from(selected.contains(t)));
    }
    self_telemetry(&telemetry, &settings, &selected);
    let shutdown = CancellationToken::new();
    let mut tasks: JoinSet<Result<()>> = JoinSet::new();
    let tls = tls_config(&settings).await?;

    // ops: always.
    let ops_state = Arc::new(OpsState {
        store: store.clone(),
        telemetry: telemetry.clone(),
        started: AtomicBool::new(false),
    });
    let ops = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(ops_state.clone());
    let ops_listener = bind(settings.ops_listen, "KUBE_INSIGHT_OPS_LISTEN").await?;
    tasks.spawn(serve(ops_listener, ops, None, shutdown.clone(), "ops"));

    // ingest: the push endpoints of the selected targets, on one listener.
    let label_policy = LabelPolicy::default();
    let limits = push::PushLimits {
        max_body_bytes: settings.ingest_max_body_bytes,
        max_in_flight: settings.ingest_max_in_flight,
        retry_after_secs: 5,
    };
    let mut ingest = Router::new();
    let mut endpoints: Vec<&str> = Vec::new();
    if selected.contains(Target::Metrics) {
        let rw = Arc::new(RemoteWriteSource::new(store.clone(), label_policy.clone()));
        endpoints.push("POST /ingest/prometheus/api/v1/write");
        ingest = push::mount(
            ingest,
            rw,
            tokens.clone(),
            limits.clone(),
            telemetry.clone(),
        );
    }
    if selected.contains(Target::Logs) {
        let fb = Arc::new(kube_insight_sources::fluent_bit::FluentBitSource::new(
            store.logs(),
        ));
        endpoints.push("POST /ingest/fluent-bit");
        ingest = push::mount(
            ingest,
            fb,
            tokens.clone(),
            limits.clone(),
            telemetry.clone(),
        );
    }
    if selected.contains(Target::Events) {
        let src = Arc::new(kube_insight_sources::kube_eventer::KubeEventerSource::new(
            store.events(),
        ));
        endpoints.push("POST /ingest/kube-eventer");
        ingest = push::mount(
            ingest,
            src,
            tokens.clone(),
            limits.clone(),
            telemetry.clone(),
        );
        // The watch's push mode: agents in monitored clusters (kube_watch::ingest).
        endpoints.push("POST /ingest/v1/watch, /ingest/v1/watch/state");
        ingest = push::mount(
            ingest,
            Arc::new(WatchIngestSource::new(store.events())),
            tokens.clone(),
            limits.clone(),
            telemetry.clone(),
        );
        ingest = push::mount(
            ingest,
            Arc::new(WatchStateSource::new(store.events())),
            tokens.clone(),
            limits.clone(),
            telemetry.clone(),
        );
    }
    if !endpoints.is_empty() {
        let ingest_listener = bind(settings.ingest_listen, "KUBE_INSIGHT_INGEST_LISTEN").await?;
        tracing::info!(listen = %settings.ingest_listen, auth = if tokens.is_open() { "none (loopback or insecure)" } else { "bearer tokens" }, endpoints = %endpoints.join(", "), "ingest listening");
        tasks.spawn(serve(
            ingest_listener,
            ingest,
            tls.clone(),
            shutdown.clone(),
            "ingest",
        ));
    }

    // The collector targets (federation, the events watch, topology
    // snapshots): with a Lease only its holder runs them, started on gaining
    // leadership and cancelled on losing it; without one this process leads.
    let mut collector = Collector::default();
    if selected.contains(Target::Metrics) {
        match &settings.prometheus_url {
            Some(url) => {
                let src = FederateSource::new(
                    store.clone(),
                    FederateConfig {
                        base_url: url.clone(),
                        matchers: settings.match_selectors(),
                        cluster: settings.cluster.clone(),
                        policy: label_policy.clone(),
                        max_body_bytes: 512 << 20,
                    },
                )
                .context("configuring federation from KUBE_INSIGHT_PROMETHEUS_URL")?;
                tracing::info!(url = %url, interval = %humantime::format_duration(settings.metrics_interval), "federating from Prometheus");
                collector.federation = Some((
                    Arc::new(src),
                    pull::PullConfig::every(settings.metrics_interval),
                ));
            }
            None => tracing::info!("KUBE_INSIGHT_PROMETHEUS_URL is unset: federation idles; remote write on the ingest listener needs none"),
        }
    }

    // events: the watch of the monitored cluster's API server.
    if selected.contains(Target::Events) {
        let start = crate::events_cmd::events_target(
            &settings.cluster,
            settings.kubeconfig.clone(),
            &settings.events,
            store.events(),
            telemetry.clone(),
        )
        .await?;
        collector.events = Some(Box::new(start));
    }

    // topology: snapshots derived from the stored flow and service-graph series.
    if selected.contains(Target::Topology) {
        let mut cfg = kube_insight_sources::topology::TopologyConfig::new(
            settings.cluster.clone(),
            settings.topology_interval,
        );
        if let Some(w) = settings.topology_window {
            cfg.window = w;
        }
        collector.topology = Some((cfg, settings.topology_interval));
    }

    let election_stop = CancellationToken::new();
    let mut election = None;
    if !collector.is_empty() {
        let (leadership, fence, grace) = match settings.lease.settings()? {
            None => (Leadership::always(), None, Duration::from_secs(25)),
            Some(lease) => {
                let client = kube_insight_sources::kube_watch::client(
                    settings.lease.lease_kubeconfig.as_deref(),
                )
                .await
                .context("configuring the Kubernetes client for the Lease (KUBE_INSIGHT_LEASE_KUBECONFIG, or in-cluster)")?;
                // Stopping must end before the lease can expire elsewhere.
                let grace = lease.lease_duration.saturating_sub(lease.renew_deadline);
                let e = LeaseElection::new(client, lease);
                let (rx, fence) = (e.subscribe(), e.fence());
                election = Some(tokio::spawn(e.run(election_stop.clone())));
                (rx, Some(fence), grace)
            }
        };
        let leads: Vec<Target> = [Target::Events, Target::Topology]
            .into_iter()
            .filter(|t| selected.contains(*t))
            .collect();
        let (tel, stop) = (telemetry.clone(), shutdown.clone());
        let on_change = move |leading: bool| {
            for t in &leads {
                tel.collector_leader
                    .get_or_create(&labels([("target", t.name())]))
                    .set(i64::from(leading));
            }
        };
        let (store, tel) = (store.clone(), telemetry.clone());
        let start =
            move |term: CancellationToken| collector.start(&store, fence.clone(), &tel, term);
        tasks.spawn(async move {
            run_while_leading(leadership, start, on_change, grace, stop)
                .await
                .context("the collector targets")
        });
    }

    // api.
    if selected.contains(Target::Api) {
        let api = kube_insight_api::router(
            store.clone(),
            telemetry.clone(),
            kube_insight_api::ApiConfig {
                tokens: api_tokens,
                max_samples: settings.query_max_samples,
                query_timeout: settings.query_timeout,
                ..Default::default()
            },
        )
        // The web UI at `/` (public assets; the data they fetch is guarded).
        .merge(kube_insight_ui::router());
        let api_listener = bind(settings.api_listen, "KUBE_INSIGHT_API_LISTEN").await?;
        tracing::info!(listen = %settings.api_listen, "api listening: /api/v1/*, /prometheus/api/v1/*, web ui at /");
        tasks.spawn(serve(
            api_listener,
            api,
            tls.clone(),
            shutdown.clone(),
            "api",
        ));
    }

    // Maintenance: compaction and retention, and store stats for /metrics.
    {
        let (store, tel, stop) = (store.clone(), telemetry.clone(), shutdown.clone());
        tasks.spawn(async move {
            maintenance_loop(store, tel, stop).await;
            Ok(())
        });
    }
    ops_state.started.store(true, Ordering::SeqCst);

    // Wait for a signal or a failed task.
    let result = wait_then_stop(stop, &mut tasks, &shutdown, &election_stop, election).await;
    store
        .flush()
        .await
        .context("flushing the store at shutdown")?;
    tracing::info!("stopped");
    result
}

/// Push mode (`KUBE_INSIGHT_EVENTS_PUSH_URL`): only the events target, in
/// the monitored cluster, writing through [`RemoteEventStore`] (a spool and
/// a sender to the insight's ingest listener); no store, no ingest or api
/// listener; the ops listener, and the Lease when configured.
async fn run_push_agent(
    settings: RunSettings,
    selected: targets::TargetSet,
    push: PushConfig,
    stop: impl std::future::Future<Output = ()>,
) -> Result<()> {
    if selected.run.iter().any(|t| *t != Target::Events) {
        anyhow::bail!(
            "KUBE_INSIGHT_EVENTS_PUSH_URL runs the events target alone: set KUBE_INSIGHT_TARGETS=events (got {:?})",
            settings.targets
        );
    }
    let telemetry = Arc::new(Telemetry::new());
    for t in Target::ALL {
        telemetry
            .target_up
            .get_or_create(&labels([("target", t.name())]))
            .set(i64::from(t == Target::Events));
    }
    self_telemetry(&telemetry, &settings, &selected);
    tracing::info!(url = %push.url, spool = %push.spool_dir.display(), spool_bytes = push.spool_bytes,
        cluster = %settings.cluster, "starting kube-insight {} in push mode: the events watch sends to the insight", env!("CARGO_PKG_VERSION"));
    let shutdown = CancellationToken::new();
    let sender_stop = CancellationToken::new();
    let remote = RemoteEventStore::start(push, telemetry.clone(), sender_stop.clone())
        .context("opening the push spool (KUBE_INSIGHT_EVENTS_SPOOL_DIR)")?;
    let mut tasks: JoinSet<Result<()>> = JoinSet::new();
    let ops = Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(|| async { "ready\n" }))
        .route(
            "/metrics",
            get({
                let tel = telemetry.clone();
                move || async move {
                    (
                        [(
                            header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        tel.render(),
                    )
                }
            }),
        );
    let ops_listener = bind(settings.ops_listen, "KUBE_INSIGHT_OPS_LISTEN").await?;
    tasks.spawn(serve(ops_listener, ops, None, shutdown.clone(), "ops"));

    let start = crate::events_cmd::events_target(
        &settings.cluster,
        settings.kubeconfig.clone(),
        &settings.events,
        Arc::new(remote.clone()),
        telemetry.clone(),
    )
    .await?;
    let election_stop = CancellationToken::new();
    let mut election = None;
    let (leadership, grace) = match settings.lease.settings()? {
        None => (Leadership::always(), Duration::from_secs(25)),
        Some(lease) => {
            let client =
                kube_insight_sources::kube_watch::client(settings.lease.lease_kubeconfig.as_deref())
                    .await
                    .context("configuring the Kubernetes client for the Lease (KUBE_INSIGHT_LEASE_KUBECONFIG, or in-cluster)")?;
            let grace = lease.lease_duration.saturating_sub(lease.renew_deadline);
            let e = LeaseElection::new(client, lease);
            let rx = e.subscribe();
            election = Some(tokio::spawn(e.run(election_stop.clone())));
            (rx, grace)
        }
    };
    let tel = telemetry.clone();
    let on_change = move |leading: bool| {
        tel.collector_leader
            .get_or_create(&labels([("target", Target::Events.name())]))
            .set(i64::from(leading));
    };
    let stop_targets = shutdown.clone();
    tasks.spawn(async move {
        let start = move |term: CancellationToken| {
            let mut set = JoinSet::new();
            start(&mut set, term);
            set
        };
        run_while_leading(leadership, start, on_change, grace, stop_targets)
            .await
            .context("the events target")
    });

    let result = wait_then_stop(stop, &mut tasks, &shutdown, &election_stop, election).await;
    // Give the sender a moment to deliver; what is left stays spooled.
    if !remote.flushed(Duration::from_secs(5)).await {
        tracing::info!(
            pending = remote.pending(),
            "push: records left in the spool are delivered after the restart"
        );
    }
    sender_stop.cancel();
    tracing::info!("stopped");
    result
}

/// Waits for `stop` or a task that ends, then stops every task (30 s at
/// most) and, once the collector targets have stopped, gives the Lease up
/// for the standby (15 s at most). The first task error is the answer.
async fn wait_then_stop<E>(
    stop: impl std::future::Future<Output = ()>,
    tasks: &mut JoinSet<Result<()>>,
    shutdown: &CancellationToken,
    election_stop: &CancellationToken,
    election: Option<tokio::task::JoinHandle<E>>,
) -> Result<()> {
    let mut result = Ok(());
    tokio::select! {
        _ = stop => tracing::info!("shutdown requested; finishing in-flight work"),
        Some(r) = tasks.join_next() => {
            result = match r {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(e),
                Err(e) => Err(anyhow::anyhow!("a task panicked: {e}")),
            };
            tracing::error!("a listener or task stopped unexpectedly; shutting down");
        }
    }
    shutdown.cancel();
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(30), drain)
        .await
        .is_err()
    {
        tracing::warn!("tasks did not stop within 30s; continuing shutdown");
    }
    election_stop.cancel();
    if let Some(e) = election {
        if tokio::time::timeout(Duration::from_secs(15), e)
            .await
            .is_err()
        {
            tracing::warn!("releasing the lease did not finish within 15s; a standby takes over when it expires");
        }
    }
    result
}

async fn open_store(settings: &RunSettings) -> Result<DynStore> {
    if let Ok(kube_insight_store::StoreUrl::Sqlite { path }) =
        kube_insight_store::StoreUrl::parse(&settings.store.store)
    {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| {
                format!(
                    "creating the store directory {} (KUBE_INSIGHT_STORE)",
                    dir.display()
                )
            })?;
        }
    }
    // A shared store (cassandra) is set up by the schema Job: until it has
    // run, or while the cluster is starting, wait instead of crash-looping.
    let shared = settings.store.store.starts_with("cassandra://");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    let store = loop {
        let opened = crate::store_open::open(&settings.store.store, settings.store.options()).await;
        match opened {
            Ok(s) => break s,
            Err(
                e @ (kube_insight_store::Error::SchemaMismatch { found: 0, .. }
                | kube_insight_store::Error::Unavailable(_)),
            ) if shared && tokio::time::Instant::now() < deadline => {
                tracing::warn!(error = %e, "store not ready; waiting for `kube-insight schema apply` or the cluster (retrying every 5s for up to 5 min)");
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            Err(e) => {
                return Err(anyhow::Error::new(e)).with_context(|| {
                    format!(
                        "opening the store {} (KUBE_INSIGHT_STORE)",
                        settings.store.store
                    )
                })
            }
        }
    };
    let version = store
        .check_schema()
        .await
        .context("checking the store schema")?;
    tracing::info!(
        backend = store.backend(),
        schema_version = version,
        "store open"
    );
    Ok(store)
}

async fn bind(addr: SocketAddr, var: &str) -> Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} ({var}): is another process using it?"))
}

async fn tls_config(
    settings: &RunSettings,
) -> Result<Option<axum_server::tls_rustls::RustlsConfig>> {
    match (&settings.tls_cert_file, &settings.tls_key_file) {
        (Some(cert), Some(key)) => Ok(Some(
            axum_server::tls_rustls::RustlsConfig::from_pem_file(cert, key)
                .await
                .with_context(|| {
                    format!(
                        "loading KUBE_INSIGHT_TLS_CERT_FILE {} / KUBE_INSIGHT_TLS_KEY_FILE {}",
                        cert.display(),
                        key.display()
                    )
                })?,
        )),
        _ => Ok(None),
    }
}

async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    tls: Option<axum_server::tls_rustls::RustlsConfig>,
    shutdown: CancellationToken,
    name: &'static str,
) -> Result<()> {
    match tls {
        None => axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.cancelled().await })
            .await
            .with_context(|| format!("{name} listener failed")),
        Some(tls) => {
            let handle = axum_server::Handle::new();
            let h = handle.clone();
            tokio::spawn(async move {
                shutdown.cancelled().await;
                h.graceful_shutdown(Some(Duration::from_secs(25)));
            });
            let std_listener = listener
                .into_std()
                .with_context(|| format!("{name} listener"))?;
            axum_server::from_tcp_rustls(std_listener, tls)
                .with_context(|| format!("{name} listener"))?
                .handle(handle)
                .serve(app.into_make_service())
                .await
                .with_context(|| format!("{name} listener failed"))
        }
    }
}

/// The gauges kube-insight's alerts compare against: build, limits, leadership.
fn self_telemetry(telemetry: &Telemetry, settings: &RunSettings, selected: &targets::TargetSet) {
    telemetry
        .build_info
        .get_or_create(&labels([
            ("version", env!("CARGO_PKG_VERSION")),
            ("commit", env!("KUBE_INSIGHT_BUILD_COMMIT")),
        ]))
        .set(1);
    telemetry
        .series_cap
        .set(i64::try_from(settings.store.max_series).unwrap_or(i64::MAX));
    // 0 until the collector supervisor starts the targets (at once without
    // a Lease, on acquiring it with one); more than one leader per target is
    // what the KubeInsightCollectorLeaders alert reports.
    for t in [Target::Events, Target::Topology] {
        if selected.contains(t) {
            telemetry
                .collector_leader
                .get_or_create(&labels([("target", t.name())]))
                .set(0);
        }
    }
}

/// Starts the events watch on a task set until a token is cancelled.
type EventsStart = Box<dyn Fn(&mut JoinSet<()>, CancellationToken) + Send>;

/// The configured collector targets, started (afresh) on each leadership.
#[derive(Default)]
struct Collector {
    federation: Option<(Arc<FederateSource>, pull::PullConfig)>,
    events: Option<EventsStart>,
    topology: Option<(kube_insight_sources::topology::TopologyConfig, Duration)>,
}

impl Collector {
    fn is_empty(&self) -> bool {
        self.federation.is_none() && self.events.is_none() && self.topology.is_none()
    }

    fn start(
        &self,
        store: &DynStore,
        fence: Option<Fence>,
        telemetry: &Arc<Telemetry>,
        term: CancellationToken,
    ) -> JoinSet<()> {
        let mut set = JoinSet::new();
        if let Some((src, cfg)) = &self.federation {
            let (src, cfg, tel, stop) = (src.clone(), cfg.clone(), telemetry.clone(), term.clone());
            set.spawn(async move { pull::run(src, cfg, tel, stop).await });
        }
        if let Some(start) = &self.events {
            start(&mut set, term.clone());
        }
        if let Some((cfg, interval)) = &self.topology {
            crate::topology_cmd::start_topology_target(
                &mut set,
                store.clone(),
                store.topology(),
                cfg.clone(),
                *interval,
                fence,
                telemetry.clone(),
                term,
            );
        }
        set
    }
}

/// The store's schema version and the one this binary needs, for
/// `kube_insight_schema_version{,_required}`.
async fn refresh_schema_telemetry(store: &DynStore, telemetry: &Telemetry) {
    let (found, wanted) = match store.check_schema().await {
        Ok(v) => (v, v),
        Err(kube_insight_store::Error::SchemaMismatch { found, wanted }) => (found, wanted),
        Err(e) => {
            tracing::debug!(error = %e, "cannot read the schema version");
            return;
        }
    };
    telemetry.schema_version.set(i64::from(found));
    telemetry.schema_version_required.set(i64::from(wanted));
}

async fn maintenance_loop(store: DynStore, telemetry: Arc<Telemetry>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failing = false;
    let mut cap_watch = kube_insight_telemetry::CapWatch::new(Duration::from_secs(600));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        refresh_schema_telemetry(&store, &telemetry).await;
        let stats = store.stats();
        let near = cap_watch.observe(
            &telemetry,
            &stats.live_series,
            stats.series_cap,
            std::time::Instant::now(),
        );
        for (cluster, counted) in near {
            tracing::warn!(
                cluster = %cluster,
                counted,
                cap = stats.series_cap,
                "cluster {cluster:?} is near its series cap (KUBE_INSIGHT_MAX_SERIES): new series are refused at the cap; series idle for the head grace stop counting"
            );
        }
        for (cluster, n) in &stats.active_series {
            telemetry
                .active_series
                .get_or_create(&labels([("cluster", cluster)]))
                .set(*n as i64);
        }
        telemetry.head_samples.set(stats.head_samples as i64);
        match store.maintain(kube_insight_core::time::now_ms()).await {
            Ok(r) => {
                if failing {
                    tracing::info!("store maintenance recovered");
                    failing = false;
                }
                if r.chunks_written > 0 || r.rows_expired > 0 {
                    tracing::info!(
                        chunks_written = r.chunks_written,
                        samples_compacted = r.samples_compacted,
                        rows_expired = r.rows_expired,
                        "store maintenance"
                    );
                }
            }
            Err(e) => {
                if !failing {
                    tracing::error!(error = %e, "store maintenance failed; retrying every minute");
                    failing = true;
                }
            }
        }
    }
}

async fn readyz(State(st): State<Arc<OpsState>>) -> impl IntoResponse {
    if !st.started.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "starting\n".to_string());
    }
    match st.store.ping().await {
        Ok(()) => (StatusCode::OK, "ready\n".to_string()),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("store not reachable: {e}\n"),
        ),
    }
}

async fn metrics(State(st): State<Arc<OpsState>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        st.telemetry.render(),
    )
}

pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
