//! The command line. Every `run` flag also reads a `KUBE_INSIGHT_*`
//! environment variable (flag > env > default).

use crate::config::{RunSettings, StoreSettings};
use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

const ABOUT: &str = "kube-insight: a Kubernetes observability stack — topology, metrics, logs, events, with time travel.";

const LONG_ABOUT: &str = "\
kube-insight: a Kubernetes observability stack — topology, metrics, logs, events, with time travel.

One binary runs any subset of targets (like Loki's -target):
  metrics   Prometheus remote write receiver (POST /ingest/prometheus/api/v1/write on the
            ingest listener) and federation puller (GET $KUBE_INSIGHT_PROMETHEUS_URL/federate)
  api       kube-insight API (/api/v1/...) and Prometheus-compatible API (/prometheus/api/v1/...)
  logs      Fluent Bit receiver (POST /ingest/fluent-bit) and log search (/api/v1/logs)
  events    Kubernetes events and object history from a watch of the monitored cluster's
            API server, and kube-eventer's webhook (POST /ingest/kube-eventer)
  topology  the service graph from Beyla flow and service-graph metrics, saved every
            KUBE_INSIGHT_TOPOLOGY_INTERVAL for time travel (/api/v1/topology?at=T)

Three listeners: api (:8080), ingest (:8081), ops (:8082: /healthz, /readyz, /metrics).
All loopback by default.";

const AFTER_HELP: &str = "\
Examples:
  # Everything on one machine, embedded store in ./data, federating from a Prometheus:
  KUBE_INSIGHT_PROMETHEUS_URL=http://localhost:9090 kube-insight run

  # Only the push endpoints, as the `ingest` role in Kubernetes:
  kube-insight run --targets metrics --ingest-listen 0.0.0.0:8081 \\
      --ingest-tokens-file /etc/kube-insight/tokens --store cassandra://cassandra:9042/kube_insight

  # Point Prometheus at it (prometheus.yml):
  remote_write:
    - url: http://kube-insight:8081/ingest/prometheus/api/v1/write
      authorization: { credentials_file: /etc/prometheus/kube-insight-token }

  # Query it like Prometheus:
  curl 'http://127.0.0.1:8080/prometheus/api/v1/query_range?query=up&start=...&end=...&step=15s'

  # Read a store (--store, KUBE_INSIGHT_STORE) or a running server (--server URL --token T):
  kube-insight get deploy/api -n shop --at 2024-05-31T16:00:00Z -o yaml
  kube-insight diff deploy/api -n shop --from now-2h --to now
  kube-insight changes -n shop --since 2h
  kube-insight logs deploy/api -n shop --since 1h -f --server http://kube-insight:8080
  kube-insight topology --at now --format dot | dot -Tpng > graph.png
  kube-insight suspects deploy/frontend -n shop --at now-5m --window 2h
  kube-insight config          # the effective configuration, secrets masked
  kube-insight schema apply    # create or migrate the store (run once, by a Job)";

const RUN_EXAMPLES: &str = "\
Examples:
  KUBE_INSIGHT_PROMETHEUS_URL=http://localhost:9090 kube-insight run
  kube-insight run --targets metrics,api --store sqlite:///var/lib/kube-insight/insight.db
  kube-insight run --targets api --api-listen 0.0.0.0:8080 --store cassandra://cassandra:9042/kube_insight";

const CONFIG_EXAMPLES: &str = "\
Examples:
  kube-insight config
  KUBE_INSIGHT_TARGETS=metrics,api kube-insight config --store sqlite:///data/insight.db";

const SCHEMA_EXAMPLES: &str = "\
Examples:
  kube-insight schema apply --store cassandra://cassandra:9042/kube_insight
  kube-insight schema check --store sqlite:///var/lib/kube-insight/insight.db";

const GET_EXAMPLES: &str = "\
Examples:
  kube-insight get deploy/api -n shop --at 2024-05-31T16:00:00Z -o yaml
  kube-insight get node/node-1 --at now-1d -o json
  kube-insight get deploy/api -n shop --at now-1h --server http://kube-insight:8080 --token \"$TOKEN\"";

const DIFF_EXAMPLES: &str = "\
Examples:
  kube-insight diff deploy/api -n shop --from now-2h --to now
  kube-insight diff configmap/api-config -n shop --from 2024-05-31T07:00:00Z --to 2024-05-31T13:00:00Z
  kube-insight diff deploy/api -n shop --from now-1d --include-status --server http://kube-insight:8080";

const CHANGES_EXAMPLES: &str = "\
Examples:
  kube-insight changes -n shop --since 2h
  kube-insight changes deploy/api -n shop --from 2024-05-31T00:00:00Z --to 2024-06-01T00:00:00Z
  kube-insight changes --kind Node --since 7d --no-events -o json
  kube-insight changes -n shop --since 1d --server http://kube-insight:8080 --token \"$TOKEN\"";

const LOGS_EXAMPLES: &str = "\
Examples:
  kube-insight logs deploy/api -n shop --since 1h
  kube-insight logs deploy/api -n shop -c api --since 10m -f --prefix
  kube-insight logs pod/api-7d9c-x2x4k -n shop --level error,warn --timestamps
  kube-insight logs deploy/api -n shop --from 2024-05-31T16:00:00Z --to 2024-05-31T16:30:00Z --contains timeout
  kube-insight logs deploy/api -n shop -f --server http://kube-insight:8080 --token \"$TOKEN\"";

const TOPOLOGY_EXAMPLES: &str = "\
Examples:
  kube-insight topology --at now --namespace shop
  kube-insight topology --at now-1h --focus shop/api --depth 2 --format dot | dot -Tpng > graph.png
  kube-insight topology diff --from now-1d --to now
  kube-insight topology --format json --server http://kube-insight:8080";

const SUSPECTS_EXAMPLES: &str = "\
Examples:
  kube-insight suspects deploy/frontend -n shop --at now-5m --window 2h
  kube-insight suspects frontend -n shop --at 2024-05-31T16:10:00Z -o json
  kube-insight suspects deploy/frontend -n shop --server http://kube-insight:8080 --token \"$TOKEN\"";

const DEMO_EXAMPLES: &str = "\
Examples:
  kube-insight demo                                   # a temporary store and server; open http://127.0.0.1:8080
  kube-insight demo --history 6h --every 1m --duration 30m
  kube-insight demo --ingest http://127.0.0.1:8081 --api http://127.0.0.1:8080   # into a running kube-insight";

/// `kube-insight --version`: the crate version and the git commit (build.rs).
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("KUBE_INSIGHT_BUILD_COMMIT"),
    ")"
);

#[derive(Debug, Parser)]
#[command(name = "kube-insight", version = VERSION, about = ABOUT, long_about = LONG_ABOUT, after_help = AFTER_HELP)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run targets (default: all) until SIGTERM or Ctrl-C.
    #[command(after_help = RUN_EXAMPLES)]
    Run(Box<RunSettings>),
    /// Create, migrate or check the store's schema.
    #[command(subcommand, after_help = SCHEMA_EXAMPLES)]
    Schema(SchemaCommand),
    /// Print the effective configuration (flags > env > defaults), secrets masked.
    #[command(after_help = CONFIG_EXAMPLES)]
    Config(Box<RunSettings>),
    /// Show an object as it was at a time: `get deploy/api -n shop --at 2024-05-31T16:00:00Z -o yaml`.
    #[command(after_help = GET_EXAMPLES)]
    Get(Box<crate::events_cmd::GetArgs>),
    /// What changed in an object between two times: `diff deploy/api -n shop --from T1 --to T2`.
    #[command(after_help = DIFF_EXAMPLES)]
    Diff(Box<crate::events_cmd::DiffArgs>),
    /// The change timeline (rollouts, config, scale, nodes, events, dependencies), oldest first:
    /// `changes -n shop --since 2h [-o table|json]`.
    #[command(after_help = CHANGES_EXAMPLES)]
    Changes(Box<crate::events_cmd::ChangesArgs>),
    /// Stored log lines of a workload's pods or of one pod, like `kubectl logs` (`-f` follows).
    #[command(after_help = LOGS_EXAMPLES)]
    Logs(Box<crate::logs_cmd::LogsArgs>),
    /// The service graph at a time (`--format table|json|dot`), or `topology diff --from T1 --to T2`.
    #[command(after_help = TOPOLOGY_EXAMPLES)]
    Topology(Box<crate::topology_cmd::TopologyArgs>),
    /// Which change caused a workload's degradation, ranked with evidence:
    /// `suspects deploy/frontend -n shop --at T [--window 2h] [-o table|json]`.
    #[command(after_help = SUSPECTS_EXAMPLES)]
    Suspects(Box<crate::suspects_cmd::SuspectsArgs>),
    /// A synthetic shop with incidents, played into kube-insight (started on a temporary store unless --ingest is given).
    #[command(after_help = DEMO_EXAMPLES)]
    Demo(Box<crate::demo_cmd::DemoArgs>),
}

#[derive(Debug, Subcommand)]
pub enum SchemaCommand {
    /// Create or migrate the schema; idempotent.
    #[command(after_help = SCHEMA_EXAMPLES)]
    Apply(StoreSettings),
    /// Check that the schema is at the version this build needs (exit 1 if not).
    #[command(after_help = SCHEMA_EXAMPLES)]
    Check(StoreSettings),
}

impl Command {
    /// The `--server`/`--token` flags of a read command.
    fn server_args_mut(&mut self) -> Option<&mut crate::remote::ServerArgs> {
        use crate::topology_cmd::TopologyCommand;
        match self {
            Command::Get(a) => Some(&mut a.server),
            Command::Diff(a) => Some(&mut a.server),
            Command::Changes(a) => Some(&mut a.server),
            Command::Logs(a) => Some(&mut a.server),
            Command::Suspects(a) => Some(&mut a.server),
            Command::Topology(a) => Some(match &mut a.command {
                Some(TopologyCommand::Diff(d)) => &mut d.server,
                None => &mut a.server,
            }),
            _ => None,
        }
    }
}

/// Parses the command line. A read command reads a server or a store:
/// `--server` and `--store` both on the command line are a usage error; a
/// `--store` flag wins over a `KUBE_INSIGHT_SERVER` from the environment,
/// and `--server` (flag or environment) over a `KUBE_INSIGHT_STORE` from
/// the environment.
pub fn parse() -> Result<Cli, clap::Error> {
    parse_from(std::env::args_os())
}

pub fn parse_from<I, T>(args: I) -> Result<Cli, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    use clap::parser::ValueSource;
    use clap::{CommandFactory, FromArgMatches};
    let mut cmd = Cli::command();
    let matches = cmd.try_get_matches_from_mut(args)?;
    let mut m = &matches;
    while let Some((_, sub)) = m.subcommand() {
        m = sub;
    }
    let source = |id: &str| {
        if m.ids().any(|i| i.as_str() == id) {
            m.value_source(id)
        } else {
            None
        }
    };
    let (server, store) = (source("server"), source("store"));
    let store_flag = store == Some(ValueSource::CommandLine);
    if store_flag && server == Some(ValueSource::CommandLine) {
        return Err(cmd.error(
            clap::error::ErrorKind::ArgumentConflict,
            "--server and --store cannot be used together: --server reads a running kube-insight's API, --store a store; give one",
        ));
    }
    let mut cli = Cli::from_arg_matches(&matches)?;
    if store_flag && server == Some(ValueSource::EnvVariable) {
        if let Some(s) = cli.command.server_args_mut() {
            s.server = None;
        }
    }
    Ok(cli)
}

pub fn dispatch(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Config(settings) => {
            settings.validate()?;
            crate::targets::parse(&settings.targets)?;
            print!("{}", settings.render());
            Ok(())
        }
        Command::Run(settings) => {
            settings.validate()?;
            runtime()?.block_on(crate::run::run(*settings))
        }
        Command::Demo(args) => {
            // The demo prints what it plays; the server it starts logs warnings only.
            if std::env::var_os("KUBE_INSIGHT_LOG").is_none() {
                std::env::set_var("KUBE_INSIGHT_LOG", "warn");
            }
            runtime()?.block_on(crate::demo_cmd::run(*args))
        }
        Command::Get(args) => runtime()?.block_on(crate::events_cmd::run_get(*args)),
        Command::Diff(args) => runtime()?.block_on(crate::events_cmd::run_diff(*args)),
        Command::Changes(args) => runtime()?.block_on(crate::events_cmd::run_changes(*args)),
        Command::Logs(args) => runtime()?.block_on(crate::logs_cmd::run(*args)),
        Command::Topology(args) => {
            let out = runtime()?.block_on(crate::topology_cmd::run(*args))?;
            print!("{out}");
            Ok(())
        }
        Command::Suspects(args) => {
            let out = runtime()?.block_on(crate::suspects_cmd::run(*args))?;
            print!("{out}");
            Ok(())
        }
        Command::Schema(SchemaCommand::Apply(store)) => {
            store.validate()?;
            crate::run::init_logging("text");
            runtime()?.block_on(async move {
                let s = crate::store_open::open_for_schema_apply(&store.store, store.options())
                    .await
                    .with_context(|| format!("opening the store {}", store.store))?;
                let v = s.apply_schema().await.context("applying the schema")?;
                println!("schema at version {v} in {}", store.store);
                Ok(())
            })
        }
        Command::Schema(SchemaCommand::Check(store)) => {
            store.validate()?;
            runtime()?.block_on(async move {
                let s = crate::store_open::open(&store.store, store.options())
                    .await
                    .with_context(|| format!("opening the store {}", store.store))?;
                let v = s.check_schema().await?;
                println!("schema at version {v}: ok");
                Ok(())
            })
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("kube-insight")
        .build()
        .context("starting the async runtime")
}

/// Prints a command-line error. A bad value is usually set through the
/// environment, so the error names the variable as well as the flag.
pub fn usage_error(e: clap::Error) -> std::process::ExitCode {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    let code = e.exit_code();
    let _ = e.print();
    if matches!(
        e.kind(),
        ErrorKind::InvalidValue | ErrorKind::ValueValidation
    ) {
        if let Some(ContextValue::String(arg)) = e.get(ContextKind::InvalidArg) {
            if let Some(flag) = arg
                .split_whitespace()
                .next()
                .and_then(|a| a.strip_prefix("--"))
            {
                let var = format!(
                    "KUBE_INSIGHT_{}",
                    flag.replace('-', "_").to_ascii_uppercase()
                );
                eprintln!("the value comes from --{flag} or from the environment variable {var}");
            }
        }
    }
    std::process::ExitCode::from(u8::try_from(code).unwrap_or(2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_and_store_flags_together_are_a_usage_error() {
        let e = parse_from([
            "kube-insight",
            "changes",
            "--server",
            "http://127.0.0.1:8080",
            "--store",
            "sqlite:///tmp/x.db",
        ])
        .err()
        .map(|e| (e.kind(), e.to_string()));
        let (kind, msg) = e.unwrap_or_else(|| panic!("--server with --store parsed"));
        assert_eq!(kind, clap::error::ErrorKind::ArgumentConflict);
        assert!(msg.contains("--server and --store"), "{msg}");
        for args in [
            &[
                "kube-insight",
                "topology",
                "diff",
                "--from",
                "now-1h",
                "--server",
                "http://h",
                "--store",
                "sqlite:///x",
            ][..],
            &[
                "kube-insight",
                "logs",
                "deploy/api",
                "--server",
                "http://h",
                "--store",
                "sqlite:///x",
            ],
        ] {
            assert!(parse_from(args).is_err(), "{args:?}");
        }
        assert!(parse_from(["kube-insight", "changes", "--store", "sqlite:///tmp/x.db"]).is_ok());
        assert!(parse_from(["kube-insight", "changes", "--server", "http://h"]).is_ok());
    }
}
