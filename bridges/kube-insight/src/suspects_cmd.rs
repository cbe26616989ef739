//! `kube-insight suspects deploy/NAME -n NS --at T [--window 2h] [-o table|json]`:
//! which change caused the degradation of a workload, reading
//! `/api/v1/suspects` and `/api/v1/suspects/onset` of a server
//! (`--server`) or of a store (`--store`, in-process) through
//! [`crate::remote::Api`]. The query is `kube_insight_suspects::suspects`,
//! which the API calls.

use crate::config::StoreSettings;
use crate::remote::Api;
use anyhow::{bail, Context, Result};
use clap::Args;
use kube_insight_core::{parse_duration, parse_time_ms};
use kube_insight_suspects::SuspectsQuery;
use serde_json::Value;
use std::fmt::Write as _;

#[derive(Debug, Clone, Args)]
pub struct SuspectsArgs {
    /// The workload showing the symptom: deploy/NAME, sts/NAME or NAME.
    pub workload: String,
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    /// The monitored cluster (default: the one whose topology holds the workload).
    #[arg(long, env = "KUBE_INSIGHT_CLUSTER")]
    pub cluster: Option<String>,
    /// When the symptom is seen: RFC 3339, epoch seconds or milliseconds, now or now-10m.
    #[arg(long, default_value = "now")]
    pub at: String,
    /// How far back to look (5m..7d).
    #[arg(long, default_value = "2h")]
    pub window: String,
    /// Suspects shown at most.
    #[arg(long, default_value_t = 10)]
    pub limit: usize,
    /// table or json.
    #[arg(short = 'o', long, default_value = "table")]
    pub output: String,
    #[command(flatten)]
    pub server: crate::remote::ServerArgs,
    #[command(flatten)]
    pub store: StoreSettings,
}

/// The query of the arguments; errors name the flag.
pub fn query_of(args: &SuspectsArgs) -> Result<SuspectsQuery> {
    let workload = args
        .workload
        .rsplit('/')
        .next()
        .unwrap_or(&args.workload)
        .to_string();
    let at_ms = parse_time_ms(&args.at).with_context(|| format!("--at {:?}", args.at))?;
    let window_ms = parse_duration(&args.window)
        .with_context(|| format!("--window {:?}", args.window))?
        .as_millis() as i64;
    let q = SuspectsQuery {
        cluster: args.cluster.clone(),
        namespace: args.namespace.clone(),
        workload,
        at_ms,
        window_ms,
        limit: args.limit.clamp(1, 200),
    };
    q.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(q)
}

/// What `suspects` shows: the onset, the topology used and the caps hit
/// (`/api/v1/suspects/onset`), and the suspects (`/api/v1/suspects`).
pub struct SuspectsView {
    pub onset: String,
    pub topology: Option<String>,
    pub capped: Vec<String>,
    pub suspects: Vec<Value>,
}

/// Reads the answer of `q` from a server or a store.
pub async fn read(api: &Api, q: &SuspectsQuery) -> Result<SuspectsView> {
    let mut params = vec![
        ("namespace", q.namespace.clone()),
        ("workload", q.workload.clone()),
        ("at", q.at_ms.to_string()),
        ("window", format!("{}ms", q.window_ms)),
        ("limit", q.limit.to_string()),
    ];
    if let Some(c) = &q.cluster {
        params.push(("cluster", c.clone()));
    }
    let (onset, suspects) = tokio::try_join!(
        api.get_json::<Value>("api/v1/suspects/onset", &params),
        api.get_json::<Vec<Value>>("api/v1/suspects", &params),
    )?;
    let strings = |v: Option<&Value>| -> Vec<String> {
        v.and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect()
            })
            .unwrap_or_default()
    };
    Ok(SuspectsView {
        onset: onset["onset"]["summary"].as_str().unwrap_or("").to_string(),
        topology: onset
            .get("topology")
            .and_then(Value::as_str)
            .map(str::to_string),
        capped: strings(onset.get("capped")),
        suspects,
    })
}

/// The one renderer of `suspects -o table`: the onset, then one block per suspect.
pub fn render_table(a: &SuspectsView) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "onset: {}", a.onset);
    if let Some(t) = &a.topology {
        let _ = writeln!(out, "topology: {t}");
    }
    for c in &a.capped {
        let _ = writeln!(out, "capped: {c}");
    }
    if a.suspects.is_empty() {
        let _ = writeln!(out, "no suspects: no change in the window before the onset");
        return out;
    }
    let _ = writeln!(
        out,
        "\n{:<4} {:<6} {:<24} {:<14} {:<4} {:<40} SUMMARY",
        "RANK", "SCORE", "TIME", "CATEGORY", "HOPS", "OBJECT"
    );
    let txt = |s: &Value, k: &str| s[k].as_str().unwrap_or("").to_string();
    for s in &a.suspects {
        let (kind, namespace, name) = (txt(s, "kind"), txt(s, "namespace"), txt(s, "name"));
        let object = if namespace.is_empty() {
            format!("{kind}/{name}")
        } else {
            format!("{kind}/{namespace}/{name}")
        };
        let who = s["who"]
            .as_str()
            .map(|w| format!(" by {w}"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{:<4} {:<6.3} {:<24} {:<14} {:<4} {:<40} {}{who}",
            s["rank"].as_u64().unwrap_or(0),
            s["score"].as_f64().unwrap_or(0.0),
            txt(s, "time"),
            txt(s, "category"),
            s["distance"].as_u64().unwrap_or(0),
            object,
            txt(s, "summary")
        );
        // The answer-wide lines (onset, topology, caps) are printed once above.
        let why: Vec<&str> = s["why"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let shared = 1 + usize::from(a.topology.is_some()) + a.capped.len();
        let own = why.len().saturating_sub(shared);
        for w in &why[..own] {
            let _ = writeln!(out, "       - {w}");
        }
    }
    out
}

pub async fn run(args: SuspectsArgs) -> Result<String> {
    let q = query_of(&args)?;
    if args.output != "table" && args.output != "json" {
        bail!("-o {:?}: use table or json", args.output);
    }
    let api = args.server.api(&args.store).await?;
    let a = read(&api, &q).await?;
    Ok(match args.output.as_str() {
        "json" => format!("{}\n", serde_json::to_string_pretty(&a.suspects)?),
        _ => render_table(&a),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: SuspectsArgs,
    }

    fn args(extra: &[&str], dir: &std::path::Path) -> SuspectsArgs {
        let store = format!("--store=sqlite://{}/insight.db", dir.display());
        let mut argv = vec!["x", "deploy/frontend", "-n", "shop", store.as_str()];
        argv.extend_from_slice(extra);
        Cli::parse_from(argv).args
    }

    #[tokio::test]
    async fn reads_the_store_and_names_the_cause() {
        let dir = tempfile::tempdir().unwrap();
        let store = kube_insight_suspects::testkit::incident_store(dir.path()).await;
        drop(store);
        let at = kube_insight_suspects::testkit::AT_MS.to_string();
        let long = ["--retention-metrics=36500d", "--retention-logs=36500d"];
        let mut a = args(&["--at", &at], dir.path());
        a.store = args(&long, dir.path()).store;
        let text = run(a.clone()).await.unwrap();
        assert!(
            text.starts_with("onset: error ratio of shop/frontend"),
            "{text}"
        );
        let first = text.lines().find(|l| l.starts_with("1 ")).unwrap();
        assert!(
            first.contains("image") && first.contains("Deployment/shop/payment"),
            "{text}"
        );
        assert!(
            text.contains("- the new ReplicaSet's pods (1) fail 30.0 %"),
            "{text}"
        );
        a.output = "json".into();
        let json: serde_json::Value = serde_json::from_str(&run(a.clone()).await.unwrap()).unwrap();
        assert_eq!(json[0]["name"], "payment");
        a.output = "yaml".into();
        assert!(run(a).await.unwrap_err().to_string().contains("-o"));
    }

    #[test]
    fn bad_flags_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let e = query_of(&args(&["--at", "soon"], dir.path())).unwrap_err();
        assert!(format!("{e:#}").contains("--at"), "{e:#}");
        let e = query_of(&args(&["--window", "30d"], dir.path())).unwrap_err();
        assert!(format!("{e:#}").contains("parameter window"), "{e:#}");
        let q = query_of(&args(&["--at", "1717171200000"], dir.path())).unwrap();
        assert_eq!(
            (q.workload.as_str(), q.at_ms),
            ("frontend", 1_717_171_200_000)
        );
    }
}
