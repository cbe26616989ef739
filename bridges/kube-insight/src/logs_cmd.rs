//! `kube-insight logs deploy/api -n shop --since 1h [-f]` (also `pod/NAME`,
//! `-c CONTAINER`): stored log lines, oldest first, read from
//! `/api/v1/logs` of a server (`--server`) or of a store (`--store`,
//! in-process) through [`crate::remote::Api`].
//!
//! `-f` follows like `kubectl logs -f`: every `--interval` it reads the
//! lines from [`SETTLE_MS`] before the previous poll's end (for batches that
//! reach the store late) up to now, pages through them with the API's
//! cursor (`envelope=true`, `next_cursor`), and prints the ones it has not
//! printed yet, oldest first. What it remembers is the identity (time,
//! stream, text) of the lines of the last two settle windows, at most
//! [`MAX_SEEN`] of them, and one poll reads at most [`MAX_POLL_LINES`], so
//! memory stays bounded however long it follows. Ctrl-C (or SIGTERM) stops
//! it cleanly. Two identical lines of one stream at the same nanosecond
//! print once.

use crate::config::StoreSettings;
use crate::remote::Api;
use anyhow::{bail, Result};
use clap::Args;
use kube_insight_core::time::now_ms;
use serde::Deserialize;
use std::collections::BTreeSet;
use std::hash::{Hash, Hasher};
use std::io::Write as _;
use std::time::Duration;

/// Lines one API page holds at most (the API's own cap).
pub const PAGE_LIMIT: usize = 5000;
/// Lines one follow poll reads at most; more is reported, not buffered.
pub const MAX_POLL_LINES: usize = 50_000;
/// Identities of printed lines kept for de-duplication at most.
pub const MAX_SEEN: usize = 200_000;
/// How far before the previous poll's end each follow poll reads again.
pub const SETTLE_MS: i64 = 10_000;
/// `--tail` at most (the first read is held to print it oldest first).
pub const MAX_TAIL: usize = 100_000;

/// `kube-insight logs OBJECT`.
#[derive(Debug, Clone, Args)]
pub struct LogsArgs {
    /// deploy/NAME, sts/NAME, ds/NAME, job/NAME (a workload's pods),
    /// pod/NAME or NAME (one pod).
    pub object: String,
    /// Namespace.
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    /// Only this container's lines.
    #[arg(short = 'c', long)]
    pub container: Option<String>,
    /// Lines newer than this (before --to): 30s, 10m, 1h, 7d.
    #[arg(long, default_value = "1h")]
    pub since: String,
    /// The start instead of --since: RFC 3339, epoch seconds or ms, now-1d.
    #[arg(long)]
    pub from: Option<String>,
    /// The end (not with -f, which follows from now).
    #[arg(long, default_value = "now")]
    pub to: String,
    /// Keep printing new lines until Ctrl-C.
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Print at most the newest N lines of the range (before following; at most 100000).
    #[arg(long, default_value_t = 1000)]
    pub tail: usize,
    /// Only lines containing this text (case-sensitive).
    #[arg(long)]
    pub contains: Option<String>,
    /// Only these levels: comma list of trace, debug, info, warn, error, fatal, unknown.
    #[arg(long)]
    pub level: Option<String>,
    /// Start each line with its time (RFC 3339, nanoseconds).
    #[arg(long)]
    pub timestamps: bool,
    /// Start each line with [pod/POD/CONTAINER].
    #[arg(long)]
    pub prefix: bool,
    /// Output: text, or json (one API row per line).
    #[arg(short = 'o', long, default_value = "text")]
    pub output: String,
    /// How often -f asks for new lines.
    #[arg(long, default_value = "1s", value_parser = crate::config::duration)]
    pub interval: Duration,
    /// Cluster (any when unset).
    #[arg(long)]
    pub cluster: Option<String>,
    #[command(flatten)]
    pub server: crate::remote::ServerArgs,
    #[command(flatten)]
    pub store: StoreSettings,
}

/// One row of `/api/v1/logs`, kept whole for `-o json`.
#[derive(Debug, Clone, Deserialize)]
struct Row {
    time: String,
    #[serde(default)]
    line: String,
    #[serde(default)]
    pod: String,
    #[serde(default)]
    container: String,
    #[serde(flatten)]
    rest: serde_json::Map<String, serde_json::Value>,
}

impl Row {
    /// What identifies a line (its time, stream and text).
    fn identity(&self) -> (String, u64) {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (&self.pod, &self.container, &self.line).hash(&mut h);
        for k in ["cluster", "namespace", "stream"] {
            self.rest.get(k).map(|v| v.to_string()).hash(&mut h);
        }
        (self.time.clone(), h.finish())
    }
}

#[derive(Debug, Deserialize)]
struct Page {
    rows: Vec<Row>,
    next_cursor: Option<String>,
}

/// The selector of OBJECT: (`workload` | `pod`, name).
fn selector(object: &str) -> Result<(&'static str, String)> {
    let (kind, name) = match object.split_once('/') {
        None => ("pod", object),
        Some((k, n)) => (k, n),
    };
    if name.is_empty() || name.contains('/') {
        bail!("invalid object {object:?}: expected deploy/NAME, sts/NAME, pod/NAME or NAME");
    }
    let key = match kube_insight_core::event::normalize_kind(kind).as_str() {
        "pod" => "pod",
        "deployment" | "statefulset" | "daemonset" | "replicaset" | "job" | "cronjob" => "workload",
        _ => bail!(
            "invalid object {object:?}: {kind:?} has no logs; use deploy/, sts/, ds/, job/ or pod/"
        ),
    };
    Ok((key, name.to_string()))
}

/// The lines of `base` between `from` and `to` (ms, inclusive), newest
/// first, at most `max`; true when more were left.
async fn read_range(
    api: &Api,
    base: &[(&'static str, String)],
    from: i64,
    to: i64,
    max: usize,
) -> Result<(Vec<Row>, bool)> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut q = base.to_vec();
        q.extend([
            ("from", from.to_string()),
            ("to", to.to_string()),
            ("envelope", "true".to_string()),
            ("limit", PAGE_LIMIT.min(max - out.len()).max(1).to_string()),
        ]);
        if let Some(c) = &cursor {
            q.push(("cursor", c.clone()));
        }
        let page: Page = api.get_json("api/v1/logs", &q).await?;
        out.extend(page.rows);
        match page.next_cursor {
            Some(c) if out.len() < max => cursor = Some(c),
            Some(_) => return Ok((out, true)),
            None => return Ok((out, false)),
        }
    }
}

/// The one renderer of a log line.
fn render(r: &Row, args: &LogsArgs) -> Result<String> {
    if args.output == "json" {
        let mut o = r.rest.clone();
        o.insert("time".into(), r.time.clone().into());
        o.insert("line".into(), r.line.clone().into());
        o.insert("pod".into(), r.pod.clone().into());
        o.insert("container".into(), r.container.clone().into());
        return Ok(serde_json::to_string(&o)?);
    }
    let mut s = String::new();
    if args.prefix {
        s.push_str(&format!("[pod/{}/{}] ", r.pod, r.container));
    }
    if args.timestamps {
        s.push_str(&r.time);
        s.push(' ');
    }
    s.push_str(&r.line);
    Ok(s)
}

/// Prints rows (given newest first) oldest first; false when stdout is
/// closed (`| head`).
fn print(rows: &[&Row], args: &LogsArgs) -> Result<bool> {
    let mut out = std::io::stdout().lock();
    for r in rows.iter().rev() {
        let line = render(r, args)?;
        if let Err(e) = writeln!(out, "{line}") {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                return Ok(false);
            }
            return Err(e.into());
        }
    }
    match out.flush() {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        r => r.map(|()| true).map_err(Into::into),
    }
}

/// The identities of the lines printed lately, in time order, bounded.
#[derive(Default)]
struct Seen {
    set: BTreeSet<(String, u64)>,
}

impl Seen {
    fn contains(&self, id: &(String, u64)) -> bool {
        self.set.contains(id)
    }

    fn insert(&mut self, id: (String, u64)) {
        self.set.insert(id);
        while self.set.len() > MAX_SEEN {
            self.set.pop_first();
        }
    }

    /// Forgets the lines older than `time` (RFC 3339, the API's fixed width).
    fn forget_before(&mut self, time: &str) {
        let keep = self.set.split_off(&(time.to_string(), 0));
        self.set = keep;
    }
}

/// Waits for Ctrl-C or SIGTERM.
async fn stopped() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Runs `logs` (for `cli.rs`).
pub async fn run(args: LogsArgs) -> Result<()> {
    if args.output != "text" && args.output != "json" {
        bail!("invalid -o {:?}: expected text or json", args.output);
    }
    let (key, name) = selector(&args.object)?;
    if args.follow && args.to != "now" {
        bail!(
            "-f follows from now: leave --to out (or drop -f to read up to {:?})",
            args.to
        );
    }
    let (from, to) = crate::events_cmd::range_args(&args.since, args.from.as_deref(), &args.to)?;
    if args.tail > MAX_TAIL {
        bail!(
            "invalid --tail {}: at most {MAX_TAIL}; narrow the range (--since, --from/--to)",
            args.tail
        );
    }
    if args.interval < Duration::from_millis(100) {
        bail!("invalid --interval: at least 100ms");
    }
    let mut base: Vec<(&'static str, String)> =
        vec![("namespace", args.namespace.clone()), (key, name)];
    for (k, v) in [
        ("container", &args.container),
        ("contains", &args.contains),
        ("level", &args.level),
        ("cluster", &args.cluster),
    ] {
        if let Some(v) = v.as_ref().filter(|v| !v.is_empty()) {
            base.push((k, v.clone()));
        }
    }
    let api = args.server.api(&args.store).await?;
    let (rows, _) = read_range(&api, &base, from, to, args.tail.max(1)).await?;
    let rows = if args.tail == 0 { Vec::new() } else { rows };
    if !print(&rows.iter().collect::<Vec<_>>(), &args)? || !args.follow {
        return Ok(());
    }
    let mut seen = Seen::default();
    for r in &rows {
        seen.insert(r.identity());
    }
    // A poll reads from a settle window before the previous poll's end; not
    // before the oldest line of a cut first read (those were left out on
    // purpose by --tail).
    let floor = match rows.last() {
        Some(oldest) if rows.len() >= args.tail => {
            kube_insight_core::parse_time_ms(&oldest.time).unwrap_or(from)
        }
        _ => from,
    };
    let mut last_end = to;
    let stop = stopped();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => return Ok(()),
            _ = tokio::time::sleep(args.interval) => {}
        }
        let end = now_ms();
        let start = (last_end - SETTLE_MS).max(floor);
        let read = tokio::select! {
            _ = &mut stop => return Ok(()),
            r = read_range(&api, &base, start, end, MAX_POLL_LINES) => r,
        };
        let (rows, more) = match read {
            Ok(r) => r,
            Err(e) => {
                // A server restart or a busy store: say so, keep following.
                eprintln!("kube-insight: warning: {e:#}; retrying");
                continue;
            }
        };
        if more {
            eprintln!("kube-insight: warning: more than {MAX_POLL_LINES} lines in {} ms; some were skipped, narrow the selector (-c, --contains, --level)", end - start);
        }
        let mut fresh: Vec<&Row> = Vec::new();
        for r in &rows {
            let id = r.identity();
            if !seen.contains(&id) {
                seen.insert(id);
                fresh.push(r);
            }
        }
        if !print(&fresh, &args)? {
            return Ok(());
        }
        last_end = end;
        seen.forget_before(&kube_insight_core::log::format_rfc3339_ns(
            (end - 2 * SETTLE_MS).saturating_mul(1_000_000),
        ));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn objects_select_a_workload_or_a_pod() {
        assert_eq!(
            selector("deploy/api").unwrap(),
            ("workload", "api".to_string())
        );
        assert_eq!(
            selector("statefulset/db").unwrap(),
            ("workload", "db".to_string())
        );
        assert_eq!(selector("pod/api-1").unwrap(), ("pod", "api-1".to_string()));
        assert_eq!(selector("api-1").unwrap(), ("pod", "api-1".to_string()));
        let e = selector("configmap/x").unwrap_err().to_string();
        assert!(e.contains("configmap/x") && e.contains("pod/"), "{e}");
        assert!(selector("deploy/").is_err());
    }

    #[test]
    fn seen_is_bounded_and_forgets_old_lines() {
        let mut s = Seen::default();
        for i in 0..(MAX_SEEN + 10) {
            s.insert((format!("2024-05-31T16:00:00.{i:09}Z"), 1));
        }
        assert_eq!(s.set.len(), MAX_SEEN);
        assert!(!s.contains(&("2024-05-31T16:00:00.000000000Z".to_string(), 1)));
        s.forget_before("2024-05-31T16:00:00.000100000Z");
        assert_eq!(s.set.len(), MAX_SEEN + 10 - 100_000);
        assert!(s.contains(&("2024-05-31T16:00:00.000100000Z".to_string(), 1)));
    }
}
