//! The effective configuration. Precedence, highest first: command-line flag,
//! environment variable (`KUBE_INSIGHT_*`), built-in default. Every variable
//! has a matching `--flag`; a bad value fails at start-up naming the variable.

use anyhow::{bail, Context, Result};
use clap::Args;
use kube_insight_core::parse_duration;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub(crate) fn duration(s: &str) -> Result<Duration, String> {
    parse_duration(s).map_err(|e| e.to_string())
}

/// Settings shared by every subcommand that touches the store.
#[derive(Debug, Clone, Args)]
pub struct StoreSettings {
    /// Where data is kept: sqlite://PATH (embedded, one node) or
    /// cassandra://HOST:9042,HOST:9042/KEYSPACE?dc=DC&consistency=local_quorum.
    #[arg(
        long,
        env = "KUBE_INSIGHT_STORE",
        default_value = "sqlite://./data/insight.db"
    )]
    pub store: String,

    /// How long metrics are kept.
    #[arg(long, env = "KUBE_INSIGHT_RETENTION_METRICS", default_value = "14d", value_parser = duration)]
    pub retention_metrics: Duration,
    /// How long logs are kept.
    #[arg(long, env = "KUBE_INSIGHT_RETENTION_LOGS", default_value = "7d", value_parser = duration)]
    pub retention_logs: Duration,
    /// How long events and object versions are kept.
    #[arg(long, env = "KUBE_INSIGHT_RETENTION_EVENTS", default_value = "90d", value_parser = duration)]
    pub retention_events: Duration,
    /// How long topology snapshots are kept.
    #[arg(long, env = "KUBE_INSIGHT_RETENTION_TOPOLOGY", default_value = "90d", value_parser = duration)]
    pub retention_topology: Duration,

    /// How long a 2 h metrics window stays in memory after it ends, for samples
    /// that arrive late. Later samples are still stored (merged into the
    /// window's chunk at the next maintenance pass, which costs more); a
    /// longer grace costs memory: about 1.5 B per series per 15 s scrape.
    #[arg(long, env = "KUBE_INSIGHT_METRICS_HEAD_GRACE", default_value = "10m", value_parser = duration)]
    pub metrics_head_grace: Duration,

    /// Cap on live metric series per cluster (written within the head grace); new series beyond it are refused and counted.
    #[arg(long, env = "KUBE_INSIGHT_MAX_SERIES", default_value_t = 500_000)]
    pub max_series: usize,

    /// Cassandra user name.
    #[arg(long, env = "KUBE_INSIGHT_CASSANDRA_USERNAME")]
    pub cassandra_username: Option<String>,
    /// Cassandra password.
    #[arg(long, env = "KUBE_INSIGHT_CASSANDRA_PASSWORD", hide_env_values = true)]
    pub cassandra_password: Option<String>,
    /// CA certificate (PEM) to verify Cassandra's TLS certificate; enables TLS.
    #[arg(long, env = "KUBE_INSIGHT_CASSANDRA_CA_FILE")]
    pub cassandra_ca_file: Option<PathBuf>,
}

impl StoreSettings {
    pub fn options(&self) -> kube_insight_store::StoreOptions {
        kube_insight_store::StoreOptions {
            retention: kube_insight_store::Retention {
                metrics: self.retention_metrics,
                logs: self.retention_logs,
                events: self.retention_events,
                topology: self.retention_topology,
            },
            max_series_per_cluster: self.max_series,
            head_grace: self.metrics_head_grace,
            cassandra: kube_insight_store::CassandraAuth {
                username: self.cassandra_username.clone(),
                password: self.cassandra_password.clone(),
                ca_file: self.cassandra_ca_file.clone(),
            },
            ..Default::default()
        }
    }

    pub fn validate(&self) -> Result<()> {
        kube_insight_store::StoreUrl::parse(&self.store)
            .with_context(|| "invalid KUBE_INSIGHT_STORE / --store")?;
        if self.max_series == 0 {
            bail!("invalid KUBE_INSIGHT_MAX_SERIES / --max-series 0: must be at least 1");
        }
        let grace = self.metrics_head_grace;
        if grace < Duration::from_secs(60) || grace > Duration::from_secs(2 * 3600) {
            bail!(
                "invalid KUBE_INSIGHT_METRICS_HEAD_GRACE {}: must be between 1m and 2h",
                humantime::format_duration(grace)
            );
        }
        for (name, d) in [
            ("KUBE_INSIGHT_RETENTION_METRICS", self.retention_metrics),
            ("KUBE_INSIGHT_RETENTION_LOGS", self.retention_logs),
            ("KUBE_INSIGHT_RETENTION_EVENTS", self.retention_events),
            ("KUBE_INSIGHT_RETENTION_TOPOLOGY", self.retention_topology),
        ] {
            if d < Duration::from_secs(3600) {
                bail!(
                    "invalid {name} {}: must be at least 1h",
                    humantime::format_duration(d)
                );
            }
        }
        Ok(())
    }
}

/// Settings of `kube-insight run`.
#[derive(Debug, Clone, Args)]
pub struct RunSettings {
    /// Comma list of targets to run: metrics, topology, logs, events, api, or all.
    #[arg(long, env = "KUBE_INSIGHT_TARGETS", default_value = "all")]
    pub targets: String,

    /// Read API listener (kube-insight API and Prometheus-compatible API).
    #[arg(
        long,
        env = "KUBE_INSIGHT_API_LISTEN",
        default_value = "127.0.0.1:8080"
    )]
    pub api_listen: SocketAddr,
    /// Push endpoints listener (/ingest/*).
    #[arg(
        long,
        env = "KUBE_INSIGHT_INGEST_LISTEN",
        default_value = "127.0.0.1:8081"
    )]
    pub ingest_listen: SocketAddr,
    /// Operations listener (/metrics, /healthz, /readyz).
    #[arg(
        long,
        env = "KUBE_INSIGHT_OPS_LISTEN",
        default_value = "127.0.0.1:8082"
    )]
    pub ops_listen: SocketAddr,

    /// Name of the monitored cluster, recorded on every row (when pushes carry no token).
    #[arg(long, env = "KUBE_INSIGHT_CLUSTER", default_value = "default")]
    pub cluster: String,

    #[command(flatten)]
    pub store: StoreSettings,

    /// Base URL of a Prometheus to federate from (pull fallback). Unset: the pull idles.
    #[arg(long, env = "KUBE_INSIGHT_PROMETHEUS_URL")]
    pub prometheus_url: Option<String>,
    /// match[] selectors for federation, newline or ';' separated.
    #[arg(long, env = "KUBE_INSIGHT_METRICS_MATCH")]
    pub metrics_match: Option<String>,
    /// Federation pull interval.
    #[arg(long, env = "KUBE_INSIGHT_METRICS_INTERVAL", default_value = "15s", value_parser = duration)]
    pub metrics_interval: Duration,
    /// Topology snapshot interval.
    #[arg(long, env = "KUBE_INSIGHT_TOPOLOGY_INTERVAL", default_value = "15s", value_parser = duration)]
    pub topology_interval: Duration,
    /// How far back each topology snapshot looks for traffic (default: 4 × the interval, at least 2m).
    #[arg(long, env = "KUBE_INSIGHT_TOPOLOGY_WINDOW", value_parser = duration)]
    pub topology_window: Option<Duration>,

    #[command(flatten)]
    pub events: crate::events_cmd::EventsSettings,

    /// kubeconfig for the monitored cluster (events watch); in-cluster config if unset.
    #[arg(long, env = "KUBE_INSIGHT_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,

    /// File of `token cluster-name` lines; a push is accepted only with a listed token.
    #[arg(long, env = "KUBE_INSIGHT_INGEST_TOKENS_FILE")]
    pub ingest_tokens_file: Option<PathBuf>,
    /// One ingest token for the cluster named by KUBE_INSIGHT_CLUSTER.
    #[arg(long, env = "KUBE_INSIGHT_INGEST_TOKEN", hide_env_values = true)]
    pub ingest_token: Option<String>,
    /// Bearer token required on /api/* and /prometheus/*.
    #[arg(long, env = "KUBE_INSIGHT_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,
    /// File of `token cluster[,cluster…]` or `token *` lines: each API token and the clusters it may read.
    #[arg(long, env = "KUBE_INSIGHT_API_TOKENS_FILE")]
    pub api_tokens_file: Option<PathBuf>,
    /// Samples one PromQL query may load (Prometheus' --query.max-samples); more is an error, not an OOM.
    #[arg(
        long,
        env = "KUBE_INSIGHT_QUERY_MAX_SAMPLES",
        default_value_t = 50_000_000
    )]
    pub query_max_samples: usize,
    /// Deadline of one query (Prometheus' --query.timeout); the `timeout` parameter can only shorten it.
    #[arg(long, env = "KUBE_INSIGHT_QUERY_TIMEOUT", default_value = "2m", value_parser = duration)]
    pub query_timeout: Duration,
    /// Allow a non-loopback ingest listener without tokens.
    #[arg(long, env = "KUBE_INSIGHT_INSECURE_NO_AUTH", default_value_t = false, action = clap::ArgAction::Set)]
    pub insecure_no_auth: bool,

    /// TLS certificate (PEM) for the ingest and api listeners.
    #[arg(long, env = "KUBE_INSIGHT_TLS_CERT_FILE")]
    pub tls_cert_file: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, env = "KUBE_INSIGHT_TLS_KEY_FILE")]
    pub tls_key_file: Option<PathBuf>,
    /// CA (PEM) for client certificates (mTLS) on the ingest listener.
    #[arg(long, env = "KUBE_INSIGHT_TLS_CLIENT_CA_FILE")]
    pub tls_client_ca_file: Option<PathBuf>,

    /// Largest push body in bytes (compressed, and again after gunzip).
    #[arg(long, env = "KUBE_INSIGHT_INGEST_MAX_BODY_BYTES", default_value_t = 32 << 20)]
    pub ingest_max_body_bytes: usize,
    /// Push requests processed at once per endpoint; beyond, 429/503 with Retry-After.
    #[arg(long, env = "KUBE_INSIGHT_INGEST_MAX_IN_FLIGHT", default_value_t = 64)]
    pub ingest_max_in_flight: usize,

    /// Log format: text or json.
    #[arg(long, env = "KUBE_INSIGHT_LOG_FORMAT", default_value = "text")]
    pub log_format: String,

    #[command(flatten)]
    pub lease: LeaseArgs,
}

/// Leader election of the collector targets (events watch, federation,
/// topology snapshots) through a `coordination.k8s.io/v1` Lease.
#[derive(Debug, Clone, Args)]
pub struct LeaseArgs {
    /// Lease the collector replicas compete for; only its holder runs the
    /// events watch, federation and topology snapshots. Unset: this process
    /// always leads (run one replica).
    #[arg(long, env = "KUBE_INSIGHT_LEASE_NAME")]
    pub lease_name: Option<String>,
    /// Namespace of the Lease (the chart sets the pod's own).
    #[arg(long, env = "KUBE_INSIGHT_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,
    /// This candidate's name, a random suffix added (default: $HOSTNAME, the pod name).
    #[arg(long, env = "KUBE_INSIGHT_LEASE_IDENTITY")]
    pub lease_identity: Option<String>,
    /// How long a Lease not renewed is respected before a standby takes it over.
    #[arg(long, env = "KUBE_INSIGHT_LEASE_DURATION", default_value = "15s", value_parser = duration)]
    pub lease_duration: Duration,
    /// The leader stops its targets when it could not renew for this long (shorter than the duration).
    #[arg(long, env = "KUBE_INSIGHT_LEASE_RENEW_DEADLINE", default_value = "10s", value_parser = duration)]
    pub lease_renew_deadline: Duration,
    /// How often the Lease is read and renewed (shorter than the renew deadline).
    #[arg(long, env = "KUBE_INSIGHT_LEASE_RETRY_PERIOD", default_value = "2s", value_parser = duration)]
    pub lease_retry_period: Duration,
    /// kubeconfig of the cluster holding the Lease; in-cluster config if unset
    /// (KUBE_INSIGHT_KUBECONFIG is the monitored cluster's, which may be another).
    #[arg(long, env = "KUBE_INSIGHT_LEASE_KUBECONFIG")]
    pub lease_kubeconfig: Option<PathBuf>,
}

impl LeaseArgs {
    /// The election's settings, `None` without a Lease; checked.
    pub fn settings(&self) -> Result<Option<kube_insight_sources::leader::LeaseSettings>> {
        let Some(name) = &self.lease_name else {
            return Ok(None);
        };
        if !valid_dns_subdomain(name) {
            bail!("invalid KUBE_INSIGHT_LEASE_NAME {name:?}: use lower-case letters, digits, '-' and '.' (a Kubernetes object name)");
        }
        let Some(namespace) = self.lease_namespace.as_ref().filter(|n| !n.is_empty()) else {
            bail!("KUBE_INSIGHT_LEASE_NAME is set but KUBE_INSIGHT_LEASE_NAMESPACE is not: set the Lease's namespace (the chart sets the pod's own)");
        };
        if !valid_dns_subdomain(namespace) || namespace.contains('.') {
            bail!("invalid KUBE_INSIGHT_LEASE_NAMESPACE {namespace:?}: use lower-case letters, digits and '-' (a namespace name)");
        }
        let host = self
            .lease_identity
            .clone()
            .filter(|i| !i.is_empty())
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_default();
        let settings = kube_insight_sources::leader::LeaseSettings {
            name: name.clone(),
            namespace: namespace.clone(),
            identity: kube_insight_sources::leader::identity(&host),
            lease_duration: self.lease_duration,
            renew_deadline: self.lease_renew_deadline,
            retry_period: self.lease_retry_period,
        };
        settings.validate().map_err(|e| {
            anyhow::anyhow!("invalid KUBE_INSIGHT_LEASE_DURATION / KUBE_INSIGHT_LEASE_RENEW_DEADLINE / KUBE_INSIGHT_LEASE_RETRY_PERIOD: {e}")
        })?;
        if let Some(k) = &self.lease_kubeconfig {
            if !k.is_file() {
                bail!("invalid KUBE_INSIGHT_LEASE_KUBECONFIG {}: no such file; point it at the kubeconfig of the cluster holding the Lease, or unset it to use the in-cluster configuration", k.display());
            }
        } else if std::env::var_os("KUBERNETES_SERVICE_HOST").is_none() {
            bail!("KUBE_INSIGHT_LEASE_NAME is set but this is not a Kubernetes pod and KUBE_INSIGHT_LEASE_KUBECONFIG is unset: set it to the kubeconfig of the cluster holding the Lease, or unset KUBE_INSIGHT_LEASE_NAME to run one replica without election");
        }
        Ok(Some(settings))
    }
}

/// A Kubernetes object name (RFC 1123 subdomain).
fn valid_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|part| {
            !part.is_empty()
                && part.len() <= 63
                && part
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !part.starts_with('-')
                && !part.ends_with('-')
        })
}

/// The default federation selectors: cAdvisor container series,
/// kube-state-metrics pod and owner series, and Beyla flow counters.
pub const DEFAULT_METRICS_MATCH: &[&str] = &[
    r#"{__name__=~"container_(cpu_usage_seconds_total|memory_working_set_bytes|memory_rss|network_receive_bytes_total|network_transmit_bytes_total|fs_reads_bytes_total|fs_writes_bytes_total|cpu_cfs_throttled_periods_total|cpu_cfs_periods_total)"}"#,
    r#"{__name__=~"kube_pod_(info|owner|status_phase|status_ready|container_status_restarts_total|container_info|container_resource_requests|container_resource_limits)"}"#,
    r#"{__name__=~"kube_(replicaset|job)_owner"}"#,
    r#"{__name__=~"kube_(deployment|statefulset|daemonset)_.*"}"#,
    r#"{__name__=~"(beyla|obi)_network_flow_bytes_total"}"#,
    r#"{__name__=~"traces_service_graph_.*"}"#,
];

impl RunSettings {
    pub fn match_selectors(&self) -> Vec<String> {
        match &self.metrics_match {
            Some(m) if !m.trim().is_empty() => m
                .split(['\n', ';'])
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect(),
            _ => DEFAULT_METRICS_MATCH
                .iter()
                .map(|s| s.to_string())
                .collect(),
        }
    }

    /// Checks what clap cannot: cross-field rules and files.
    pub fn validate(&self) -> Result<()> {
        self.store.validate()?;
        self.events.validate()?;
        if !kube_insight_sources::auth::valid_cluster_name(&self.cluster) {
            bail!(
                "invalid KUBE_INSIGHT_CLUSTER {:?}: use letters, digits, '-', '_' or '.'",
                self.cluster
            );
        }
        if let Some(u) = &self.prometheus_url {
            let parsed = reqwest::Url::parse(u).with_context(|| {
                format!("invalid KUBE_INSIGHT_PROMETHEUS_URL {u:?}: expected http(s)://host:port")
            })?;
            if !matches!(parsed.scheme(), "http" | "https") {
                bail!(
                    "invalid KUBE_INSIGHT_PROMETHEUS_URL {u:?}: the scheme must be http or https"
                );
            }
        }
        if self.metrics_interval < Duration::from_secs(1) {
            bail!("invalid KUBE_INSIGHT_METRICS_INTERVAL: must be at least 1s");
        }
        if self.topology_interval < Duration::from_secs(1) {
            bail!("invalid KUBE_INSIGHT_TOPOLOGY_INTERVAL: must be at least 1s");
        }
        if let Some(k) = &self.kubeconfig {
            if !k.is_file() {
                bail!("invalid KUBE_INSIGHT_KUBECONFIG {}: no such file; point it at the monitored cluster's kubeconfig, or unset it to use the in-cluster configuration", k.display());
            }
        }
        if self.ingest_tokens_file.is_some() && self.ingest_token.is_some() {
            bail!("KUBE_INSIGHT_INGEST_TOKENS_FILE and KUBE_INSIGHT_INGEST_TOKEN are both set: use one");
        }
        if let Some(t) = &self.ingest_token {
            if t.len() < 16 {
                bail!("invalid KUBE_INSIGHT_INGEST_TOKEN: shorter than 16 characters; generate one with `openssl rand -hex 32`");
            }
        }
        if self.query_max_samples == 0 {
            bail!("invalid KUBE_INSIGHT_QUERY_MAX_SAMPLES: 0; set a positive number of samples (default 50000000)");
        }
        if self.query_timeout.is_zero() {
            bail!("invalid KUBE_INSIGHT_QUERY_TIMEOUT: 0; set a duration such as 2m");
        }
        if let Some(t) = &self.api_token {
            if t.len() < 16 {
                bail!("invalid KUBE_INSIGHT_API_TOKEN: shorter than 16 characters; generate one with `openssl rand -hex 32`");
            }
        }
        if self.api_tokens_file.is_some() && self.api_token.is_some() {
            bail!("KUBE_INSIGHT_API_TOKENS_FILE and KUBE_INSIGHT_API_TOKEN are both set: use one (a `token *` line of the file reads every cluster)");
        }
        match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(_), None) | (None, Some(_)) => {
                bail!(
                    "KUBE_INSIGHT_TLS_CERT_FILE and KUBE_INSIGHT_TLS_KEY_FILE must be set together"
                )
            }
            _ => {}
        }
        if self.tls_client_ca_file.is_some() {
            bail!("KUBE_INSIGHT_TLS_CLIENT_CA_FILE (mTLS) is not supported in this version: terminate mTLS at an Ingress or service mesh, or unset it");
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            bail!(
                "invalid KUBE_INSIGHT_LOG_FORMAT {:?}: expected text or json",
                self.log_format
            );
        }
        self.lease.settings()?;
        if self.ingest_max_in_flight == 0 || self.ingest_max_body_bytes < 1024 {
            bail!("invalid KUBE_INSIGHT_INGEST_MAX_IN_FLIGHT / KUBE_INSIGHT_INGEST_MAX_BODY_BYTES: in-flight ≥ 1 and body ≥ 1024 bytes");
        }
        Ok(())
    }

    /// The ingest tokens. With none configured, only a loopback listener (or
    /// an explicit KUBE_INSIGHT_INSECURE_NO_AUTH=true) may accept pushes.
    pub fn tokens(&self) -> Result<kube_insight_sources::TokenMap> {
        use kube_insight_sources::TokenMap;
        let map = if let Some(path) = &self.ingest_tokens_file {
            TokenMap::load_file(path, &self.cluster)
                .context("invalid KUBE_INSIGHT_INGEST_TOKENS_FILE")?
        } else if let Some(t) = &self.ingest_token {
            let mut m = TokenMap::open(&self.cluster);
            m.insert(t.clone(), self.cluster.clone());
            m
        } else {
            TokenMap::open(&self.cluster)
        };
        if map.is_open() && !self.ingest_listen.ip().is_loopback() && !self.insecure_no_auth {
            bail!(
                "the ingest listener {} is not loopback and no ingest tokens are set: set KUBE_INSIGHT_INGEST_TOKENS_FILE or KUBE_INSIGHT_INGEST_TOKEN, or KUBE_INSIGHT_INSECURE_NO_AUTH=true to accept unauthenticated pushes",
                self.ingest_listen
            );
        }
        Ok(map)
    }

    /// The API tokens and the clusters each may read: the tokens file's
    /// lines, or KUBE_INSIGHT_API_TOKEN reading every cluster; none when
    /// neither is set (the API is open).
    pub fn api_tokens(&self) -> Result<Vec<(String, kube_insight_core::ClusterScope)>> {
        if let Some(path) = &self.api_tokens_file {
            return kube_insight_sources::auth::load_api_tokens(path)
                .context("invalid KUBE_INSIGHT_API_TOKENS_FILE");
        }
        Ok(self
            .api_token
            .iter()
            .map(|t| (t.clone(), kube_insight_core::ClusterScope::All))
            .collect())
    }

    /// The effective configuration as `KEY=value` lines, secrets masked.
    pub fn render(&self) -> String {
        let mask = |o: &Option<String>| match o {
            Some(_) => "******".to_string(),
            None => "(unset)".to_string(),
        };
        let opt_path = |o: &Option<PathBuf>| {
            o.as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "(unset)".into())
        };
        let d = |d: Duration| humantime::format_duration(d).to_string();
        let store_url = mask_url_password(&self.store.store);
        let mut lines: Vec<(&str, String)> = vec![
            ("KUBE_INSIGHT_TARGETS", self.targets.clone()),
            ("KUBE_INSIGHT_API_LISTEN", self.api_listen.to_string()),
            ("KUBE_INSIGHT_INGEST_LISTEN", self.ingest_listen.to_string()),
            ("KUBE_INSIGHT_OPS_LISTEN", self.ops_listen.to_string()),
            ("KUBE_INSIGHT_CLUSTER", self.cluster.clone()),
            ("KUBE_INSIGHT_STORE", store_url),
            (
                "KUBE_INSIGHT_PROMETHEUS_URL",
                self.prometheus_url
                    .clone()
                    .unwrap_or_else(|| "(unset)".into()),
            ),
            (
                "KUBE_INSIGHT_METRICS_MATCH",
                self.match_selectors().join(";"),
            ),
            ("KUBE_INSIGHT_METRICS_INTERVAL", d(self.metrics_interval)),
            ("KUBE_INSIGHT_TOPOLOGY_INTERVAL", d(self.topology_interval)),
            (
                "KUBE_INSIGHT_TOPOLOGY_WINDOW",
                self.topology_window
                    .map(d)
                    .unwrap_or_else(|| "(4 × interval, at least 2m)".into()),
            ),
            ("KUBE_INSIGHT_KUBECONFIG", opt_path(&self.kubeconfig)),
            (
                "KUBE_INSIGHT_EVENTS_KINDS",
                self.events.events_kinds.clone(),
            ),
            (
                "KUBE_INSIGHT_INGEST_TOKENS_FILE",
                opt_path(&self.ingest_tokens_file),
            ),
            ("KUBE_INSIGHT_INGEST_TOKEN", mask(&self.ingest_token)),
            ("KUBE_INSIGHT_API_TOKEN", mask(&self.api_token)),
            (
                "KUBE_INSIGHT_API_TOKENS_FILE",
                opt_path(&self.api_tokens_file),
            ),
            (
                "KUBE_INSIGHT_QUERY_MAX_SAMPLES",
                self.query_max_samples.to_string(),
            ),
            ("KUBE_INSIGHT_QUERY_TIMEOUT", d(self.query_timeout)),
            (
                "KUBE_INSIGHT_INSECURE_NO_AUTH",
                self.insecure_no_auth.to_string(),
            ),
            (
                "KUBE_INSIGHT_RETENTION_METRICS",
                d(self.store.retention_metrics),
            ),
            ("KUBE_INSIGHT_RETENTION_LOGS", d(self.store.retention_logs)),
            (
                "KUBE_INSIGHT_RETENTION_EVENTS",
                d(self.store.retention_events),
            ),
            (
                "KUBE_INSIGHT_RETENTION_TOPOLOGY",
                d(self.store.retention_topology),
            ),
            (
                "KUBE_INSIGHT_METRICS_HEAD_GRACE",
                d(self.store.metrics_head_grace),
            ),
            ("KUBE_INSIGHT_MAX_SERIES", self.store.max_series.to_string()),
            ("KUBE_INSIGHT_TLS_CERT_FILE", opt_path(&self.tls_cert_file)),
            ("KUBE_INSIGHT_TLS_KEY_FILE", opt_path(&self.tls_key_file)),
            (
                "KUBE_INSIGHT_TLS_CLIENT_CA_FILE",
                opt_path(&self.tls_client_ca_file),
            ),
            (
                "KUBE_INSIGHT_CASSANDRA_USERNAME",
                self.store
                    .cassandra_username
                    .clone()
                    .unwrap_or_else(|| "(unset)".into()),
            ),
            (
                "KUBE_INSIGHT_CASSANDRA_PASSWORD",
                mask(&self.store.cassandra_password),
            ),
            (
                "KUBE_INSIGHT_CASSANDRA_CA_FILE",
                opt_path(&self.store.cassandra_ca_file),
            ),
            (
                "KUBE_INSIGHT_INGEST_MAX_BODY_BYTES",
                self.ingest_max_body_bytes.to_string(),
            ),
            (
                "KUBE_INSIGHT_INGEST_MAX_IN_FLIGHT",
                self.ingest_max_in_flight.to_string(),
            ),
            ("KUBE_INSIGHT_LOG_FORMAT", self.log_format.clone()),
            (
                "KUBE_INSIGHT_LEASE_NAME",
                self.lease
                    .lease_name
                    .clone()
                    .unwrap_or_else(|| "(unset: always leader)".into()),
            ),
            (
                "KUBE_INSIGHT_LEASE_NAMESPACE",
                self.lease
                    .lease_namespace
                    .clone()
                    .unwrap_or_else(|| "(unset)".into()),
            ),
            (
                "KUBE_INSIGHT_LEASE_IDENTITY",
                self.lease
                    .lease_identity
                    .clone()
                    .unwrap_or_else(|| "(unset: $HOSTNAME)".into()),
            ),
            ("KUBE_INSIGHT_LEASE_DURATION", d(self.lease.lease_duration)),
            (
                "KUBE_INSIGHT_LEASE_RENEW_DEADLINE",
                d(self.lease.lease_renew_deadline),
            ),
            (
                "KUBE_INSIGHT_LEASE_RETRY_PERIOD",
                d(self.lease.lease_retry_period),
            ),
            (
                "KUBE_INSIGHT_LEASE_KUBECONFIG",
                opt_path(&self.lease.lease_kubeconfig),
            ),
        ];
        // Push mode (events_cmd.rs).
        lines.extend(self.events.render());
        lines
            .into_iter()
            .map(|(k, v)| format!("{k}={v}\n"))
            .collect()
    }
}

/// Masks `user:password@` in a URL.
fn mask_url_password(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        if let Some((cred, host)) = rest.split_once('@') {
            if let Some((user, _)) = cred.split_once(':') {
                return format!("{scheme}://{user}:******@{host}");
            }
        }
    }
    url.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        run: RunSettings,
    }

    fn parse(args: &[&str]) -> RunSettings {
        let mut v = vec!["t"];
        v.extend_from_slice(args);
        T::try_parse_from(v).unwrap().run
    }

    #[test]
    fn defaults_are_loopback_and_valid() {
        let r = parse(&[]);
        assert!(r.api_listen.ip().is_loopback());
        assert_eq!(r.api_listen.port(), 8080);
        r.validate().unwrap();
        assert!(r.tokens().unwrap().is_open());
    }

    #[test]
    fn public_ingest_without_tokens_refuses_to_start() {
        let r = parse(&["--ingest-listen", "0.0.0.0:8081"]);
        let e = r.tokens().unwrap_err().to_string();
        assert!(e.contains("KUBE_INSIGHT_INSECURE_NO_AUTH"), "{e}");
        let r = parse(&[
            "--ingest-listen",
            "0.0.0.0:8081",
            "--insecure-no-auth",
            "true",
        ]);
        assert!(r.tokens().is_ok());
        let r = parse(&[
            "--ingest-listen",
            "0.0.0.0:8081",
            "--ingest-token",
            "0123456789abcdef01",
        ]);
        assert!(!r.tokens().unwrap().is_open());
    }

    #[test]
    fn bad_values_name_the_variable() {
        let e = parse(&["--store", "mysql://x"]).validate().unwrap_err();
        assert!(format!("{e:#}").contains("KUBE_INSIGHT_STORE"), "{e:#}");
        let e = parse(&["--prometheus-url", "ftp://x"])
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("KUBE_INSIGHT_PROMETHEUS_URL"));
        let e = parse(&["--retention-metrics", "10m"])
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("KUBE_INSIGHT_RETENTION_METRICS"));
        for bad in ["30s", "3h"] {
            let e = parse(&["--metrics-head-grace", bad])
                .validate()
                .unwrap_err();
            assert!(
                e.to_string().contains("KUBE_INSIGHT_METRICS_HEAD_GRACE"),
                "{e}"
            );
        }
    }

    #[test]
    fn head_grace_reaches_the_store() {
        let d = parse(&[]);
        d.validate().unwrap();
        assert_eq!(d.store.options().head_grace, Duration::from_secs(600));
        let r = parse(&["--metrics-head-grace", "45m"]);
        r.validate().unwrap();
        assert_eq!(r.store.options().head_grace, Duration::from_secs(2700));
        assert!(r.render().contains("KUBE_INSIGHT_METRICS_HEAD_GRACE=45m"));
    }

    #[test]
    fn query_limits_are_settings() {
        let r = parse(&["--query-max-samples", "200000000", "--query-timeout", "5m"]);
        r.validate().unwrap();
        assert_eq!(r.query_max_samples, 200_000_000);
        assert_eq!(r.query_timeout, Duration::from_secs(300));
        let text = r.render();
        assert!(
            text.contains("KUBE_INSIGHT_QUERY_MAX_SAMPLES=200000000"),
            "{text}"
        );
        assert!(text.contains("KUBE_INSIGHT_QUERY_TIMEOUT=5m"), "{text}");
        let d = parse(&[]);
        assert_eq!(d.query_max_samples, 50_000_000);
        assert_eq!(d.query_timeout, Duration::from_secs(120));
        let e = parse(&["--query-max-samples", "0"]).validate().unwrap_err();
        assert!(
            e.to_string().contains("KUBE_INSIGHT_QUERY_MAX_SAMPLES"),
            "{e}"
        );
    }

    #[test]
    fn config_masks_secrets() {
        let r = parse(&[
            "--api-token",
            "supersecretsupersecret",
            "--store",
            "cassandra://u:pw@h:9042/ks",
        ]);
        let text = r.render();
        assert!(!text.contains("supersecret"));
        assert!(!text.contains(":pw@"));
        assert!(text.contains("KUBE_INSIGHT_API_TOKEN=******"));
    }

    #[test]
    fn lease_is_optional_and_checked() {
        let d = parse(&[]);
        assert!(
            d.lease.settings().unwrap().is_none(),
            "no lease: always leader"
        );
        assert!(d
            .render()
            .contains("KUBE_INSIGHT_LEASE_NAME=(unset: always leader)"));
        let dir = tempfile::tempdir().unwrap();
        let kc = dir.path().join("kubeconfig");
        std::fs::write(&kc, "").unwrap();
        let kc = kc.display().to_string();
        let base = [
            "--lease-name",
            "kube-insight-collector",
            "--lease-namespace",
            "kube-insight",
            "--lease-identity",
            "collector-0",
            "--lease-kubeconfig",
            kc.as_str(),
        ];
        let r = parse(&base);
        r.validate().unwrap();
        let s = r.lease.settings().unwrap().unwrap();
        assert_eq!(s.lease_duration, Duration::from_secs(15));
        assert_eq!(s.renew_deadline, Duration::from_secs(10));
        assert_eq!(s.retry_period, Duration::from_secs(2));
        assert!(s.identity.starts_with("collector-0_"), "{}", s.identity);
        let text = r.render();
        assert!(
            text.contains("KUBE_INSIGHT_LEASE_NAME=kube-insight-collector"),
            "{text}"
        );
        assert!(
            text.contains("KUBE_INSIGHT_LEASE_RENEW_DEADLINE=10s"),
            "{text}"
        );

        // `base` with one flag's value replaced.
        let with = |flag: &str, value: &str| {
            let mut v = base.to_vec();
            match v.iter().position(|a| *a == flag) {
                Some(i) => v[i + 1] = value,
                None => v.extend_from_slice(&[flag, value]),
            }
            format!("{:#}", parse(&v).validate().unwrap_err())
        };
        let e = with("--lease-renew-deadline", "15s");
        assert!(e.contains("KUBE_INSIGHT_LEASE_RENEW_DEADLINE"), "{e}");
        let e = with("--lease-retry-period", "10s");
        assert!(e.contains("KUBE_INSIGHT_LEASE_RETRY_PERIOD"), "{e}");
        let e = with("--lease-name", "Bad_Name");
        assert!(e.contains("KUBE_INSIGHT_LEASE_NAME"), "{e}");
        let e = with("--lease-namespace", "");
        assert!(e.contains("KUBE_INSIGHT_LEASE_NAMESPACE"), "{e}");
        let e = with("--lease-kubeconfig", "/nonexistent/kubeconfig");
        assert!(e.contains("KUBE_INSIGHT_LEASE_KUBECONFIG"), "{e}");
    }

    #[test]
    fn api_tokens_file_scopes_tokens_and_excludes_the_single_token() {
        use kube_insight_core::ClusterScope;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api-tokens");
        std::fs::write(
            &path,
            "# team a\nteam-a-token-0123456 prod-eu,prod-us\nops-token-0123456789 *\n",
        )
        .unwrap();
        let file = path.to_str().unwrap();
        let r = parse(&["--api-tokens-file", file]);
        r.validate().unwrap();
        let tokens = r.api_tokens().unwrap();
        assert_eq!(
            tokens,
            vec![
                (
                    "team-a-token-0123456".to_string(),
                    ClusterScope::only(["prod-eu", "prod-us"])
                ),
                ("ops-token-0123456789".to_string(), ClusterScope::All),
            ]
        );
        // The file's path is printed, never its tokens.
        let text = r.render();
        assert!(
            text.contains(&format!("KUBE_INSIGHT_API_TOKENS_FILE={file}")),
            "{text}"
        );
        assert!(!text.contains("team-a-token"), "{text}");
        // Both ways at once is an error naming both.
        let e = parse(&[
            "--api-tokens-file",
            file,
            "--api-token",
            "0123456789abcdef01",
        ])
        .validate()
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("KUBE_INSIGHT_API_TOKENS_FILE") && e.contains("KUBE_INSIGHT_API_TOKEN are"),
            "{e}"
        );
        // The single token reads every cluster; none is an open API.
        let one = parse(&["--api-token", "0123456789abcdef01"])
            .api_tokens()
            .unwrap();
        assert_eq!(
            one,
            vec![("0123456789abcdef01".to_string(), ClusterScope::All)]
        );
        assert!(parse(&[]).api_tokens().unwrap().is_empty());
        // A bad line names the variable, the file and the line.
        std::fs::write(&path, "short prod\n").unwrap();
        let e = format!("{:#}", r.api_tokens().unwrap_err());
        assert!(
            e.contains("KUBE_INSIGHT_API_TOKENS_FILE")
                && e.contains("line 1")
                && e.contains("16 characters"),
            "{e}"
        );
    }

    #[test]
    fn match_selectors_split_on_newline_and_semicolon() {
        let r = parse(&["--metrics-match", "up\n{job=\"x\"};  foo "]);
        assert_eq!(r.match_selectors(), vec!["up", "{job=\"x\"}", "foo"]);
        assert_eq!(
            parse(&[]).match_selectors().len(),
            DEFAULT_METRICS_MATCH.len()
        );
    }
}
