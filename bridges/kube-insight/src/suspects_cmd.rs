//! `kube-insight suspects deploy/NAME -n NS --at T [--window 2h] [-o table|json]`:
//! which change caused the degradation of a workload, reading the store
//! directly (`KUBE_INSIGHT_STORE`). The query is
//! `kube_insight_suspects::suspects`, the same function the API calls.

use crate::config::StoreSettings;
use anyhow::{bail, Context, Result};
use clap::Args;
use kube_insight_core::{parse_duration, parse_time_ms};
use kube_insight_suspects::{suspects, Answer, Limits, SuspectsQuery};
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

/// The answer as text: the onset, then one block per suspect.
pub fn render_table(a: &Answer) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "onset: {}", a.onset.summary);
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
    for s in &a.suspects {
        let object = if s.namespace.is_empty() {
            format!("{}/{}", s.kind, s.name)
        } else {
            format!("{}/{}/{}", s.kind, s.namespace, s.name)
        };
        let who = s
            .who
            .as_deref()
            .map(|w| format!(" by {w}"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{:<4} {:<6.3} {:<24} {:<14} {:<4} {:<40} {}{who}",
            s.rank,
            s.score,
            s.time,
            s.category.name(),
            s.distance,
            object,
            s.summary
        );
        // The answer-wide lines (onset, topology, caps) are printed once above.
        let shared = 1 + usize::from(a.topology.is_some()) + a.capped.len();
        let own = s.why.len().saturating_sub(shared);
        for w in &s.why[..own] {
            let _ = writeln!(out, "       - {w}");
        }
    }
    out
}

pub async fn run(args: SuspectsArgs) -> Result<String> {
    args.store.validate()?;
    let q = query_of(&args)?;
    if args.output != "table" && args.output != "json" {
        bail!("-o {:?}: use table or json", args.output);
    }
    let store = crate::store_open::open(&args.store.store, args.store.options())
        .await
        .with_context(|| format!("opening the store {}", args.store.store))?;
    let a = suspects(store.as_ref(), &q, &Limits::default())
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
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
