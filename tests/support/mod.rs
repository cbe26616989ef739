//! Shared helpers for the end-to-end tests: real processes on loopback
//! ephemeral ports (kube-insight itself, Prometheus, node exporter), stopped
//! when dropped.
//!
//! A test that needs a tool that is not installed prints `skipped: …` and
//! passes, except under CI (`CI` set), where a missing tool fails the test:
//! CI installs everything (`.ci/run`).

// Tests and benches may unwrap: a panic is a failing run with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Bytes of every file under `p`, recursively (what a store keeps on disk).
pub fn dir_bytes(p: &Path) -> u64 {
    let mut total = 0;
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let path = e.path();
            if path.is_dir() {
                total += dir_bytes(&path);
            } else if let Ok(m) = e.metadata() {
                total += m.len();
            }
        }
    }
    total
}

/// A free loopback port.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free loopback port")
}

/// The path of a tool, or `None` after printing why the test is skipped.
/// Under CI a missing tool is a failure.
pub fn tool(name: &str, install_hint: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        if std::env::var_os("CI").is_some() {
            panic!("{name} is not installed; CI must install it: {install_hint}");
        }
        eprintln!("skipped: {name} is not installed ({install_hint})");
    }
    found
}

/// A child process killed on drop; its output goes to a log file that is
/// printed if the test panics.
pub struct Proc {
    pub name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &str, mut cmd: Command, log_dir: &Path) -> Proc {
        let log = log_dir.join(format!("{name}-{}.log", std::process::id()));
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log file");
        let err = file.try_clone().expect("log file");
        cmd.stdout(Stdio::from(file)).stderr(Stdio::from(err));
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {name}: {e}"));
        Proc {
            name: name.to_string(),
            child: Some(child),
            log,
        }
    }

    /// The process id, 0 once stopped.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    /// SIGTERM, then wait (SIGKILL after 20 s).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(c.id().to_string())
                .status();
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                match c.try_wait() {
                    Ok(Some(_)) => break,
                    _ if Instant::now() > deadline => {
                        let _ = c.kill();
                        let _ = c.wait();
                        break;
                    }
                    _ => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        }
    }

    /// Exit status after a stop, if it exited by itself.
    pub fn try_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            let text = self.log_text();
            let tail: Vec<&str> = text.lines().rev().take(60).collect();
            eprintln!(
                "----- last lines of {} ({}) -----",
                self.name,
                self.log.display()
            );
            for l in tail.into_iter().rev() {
                eprintln!("{l}");
            }
        }
    }
}

/// Polls `url` until it answers 2xx, or panics after `timeout`.
pub async fn wait_ready(url: &str, timeout: Duration) {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(r) = client.get(url).send().await {
            if r.status().is_success() {
                return;
            }
        }
        if Instant::now() > deadline {
            panic!("{url} not ready after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Polls `check` every 250 ms until it returns `Some`, or panics with `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// A running kube-insight.
pub struct KubeInsight {
    pub proc: Proc,
    pub api: String,
    pub ingest: String,
    pub ops: String,
    pub ports: (u16, u16, u16),
}

impl KubeInsight {
    /// Starts `kube-insight run` with the store in `dir`; `env` adds or
    /// overrides variables. Reuses `ports` when given (restart on the same ports).
    pub async fn start(
        dir: &Path,
        env: &[(&str, String)],
        ports: Option<(u16, u16, u16)>,
    ) -> KubeInsight {
        let (api, ingest, ops) = ports.unwrap_or_else(|| (free_port(), free_port(), free_port()));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kube-insight"));
        cmd.arg("run")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("KUBE_INSIGHT_LOG", "info,kube_insight=debug")
            .env(
                "KUBE_INSIGHT_STORE",
                format!("sqlite://{}/insight.db", dir.display()),
            )
            .env("KUBE_INSIGHT_API_LISTEN", format!("127.0.0.1:{api}"))
            .env("KUBE_INSIGHT_INGEST_LISTEN", format!("127.0.0.1:{ingest}"))
            .env("KUBE_INSIGHT_OPS_LISTEN", format!("127.0.0.1:{ops}"));
        for (k, v) in env {
            cmd.env(k, v);
        }
        let proc = Proc::spawn("kube-insight", cmd, dir);
        let ki = KubeInsight {
            proc,
            api: format!("http://127.0.0.1:{api}"),
            ingest: format!("http://127.0.0.1:{ingest}"),
            ops: format!("http://127.0.0.1:{ops}"),
            ports: (api, ingest, ops),
        };
        wait_ready(&format!("{}/readyz", ki.ops), Duration::from_secs(60)).await;
        ki
    }
}

/// Prometheus (Debian's `prometheus`) on a loopback port.
pub struct Prometheus {
    pub proc: Proc,
    pub url: String,
    pub port: u16,
}

impl Prometheus {
    /// Starts Prometheus with `config` (YAML; `{PORT}` is replaced by its own
    /// port) and a fresh TSDB in `dir`.
    pub async fn start(bin: &Path, dir: &Path, config: &str) -> Prometheus {
        let port = free_port();
        let cfg_path = dir.join("prometheus.yml");
        std::fs::write(&cfg_path, config.replace("{PORT}", &port.to_string()))
            .expect("write prometheus.yml");
        let mut cmd = Command::new(bin);
        cmd.arg(format!("--config.file={}", cfg_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn");
        let proc = Proc::spawn("prometheus", cmd, dir);
        let url = format!("http://127.0.0.1:{port}");
        wait_ready(&format!("{url}/-/ready"), Duration::from_secs(60)).await;
        Prometheus { proc, url, port }
    }
}

/// Debian's `prometheus-node-exporter` on a loopback port.
pub struct NodeExporter {
    pub proc: Proc,
    pub addr: String,
}

impl NodeExporter {
    pub async fn start(bin: &Path, dir: &Path) -> NodeExporter {
        let port = free_port();
        let mut cmd = Command::new(bin);
        cmd.arg(format!("--web.listen-address=127.0.0.1:{port}"));
        let proc = Proc::spawn("node-exporter", cmd, dir);
        let addr = format!("127.0.0.1:{port}");
        wait_ready(&format!("http://{addr}/metrics"), Duration::from_secs(30)).await;
        NodeExporter { proc, addr }
    }
}

/// GET (or POST form) a Prometheus-style API and return `data`, panicking
/// with the body on an error status.
pub async fn prom_api(base: &str, path: &str, params: &[(&str, String)]) -> serde_json::Value {
    let client = reqwest::Client::new();
    let r = client
        .get(format!("{base}{path}"))
        .query(params)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {base}{path}: {e}"));
    let status = r.status();
    let body: serde_json::Value = r
        .json()
        .await
        .unwrap_or_else(|e| panic!("GET {base}{path}: body is not JSON: {e}"));
    assert!(
        status.is_success(),
        "GET {base}{path} {params:?}: {status}: {body}"
    );
    assert_eq!(body["status"], "success", "{body}");
    body["data"].clone()
}

/// A result series: labels (without the ones named in `ignore`) and its
/// [time, "value"] pairs.
pub type Series = (
    std::collections::BTreeMap<String, String>,
    Vec<(f64, String)>,
);

/// Normalises a `matrix` (or `vector`) result for comparison.
pub fn normalise(data: &serde_json::Value, ignore: &[&str]) -> Vec<Series> {
    let mut out: Vec<Series> = data["result"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|s| {
            let labels = s["metric"]
                .as_object()
                .map(|m| {
                    m.iter()
                        .filter(|(k, _)| !ignore.contains(&k.as_str()))
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                        .collect()
                })
                .unwrap_or_default();
            let points = if let Some(vals) = s["values"].as_array() {
                vals.iter()
                    .map(|p| {
                        (
                            p[0].as_f64().unwrap_or(f64::NAN),
                            p[1].as_str().unwrap_or_default().to_string(),
                        )
                    })
                    .collect()
            } else {
                let p = &s["value"];
                vec![(
                    p[0].as_f64().unwrap_or(f64::NAN),
                    p[1].as_str().unwrap_or_default().to_string(),
                )]
            };
            (labels, points)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Runs `kube-insight ARGS` against the SQLite store of a collector run in
/// `dir`; panics (with its stderr) unless it succeeds; returns its stdout.
pub fn cli(dir: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_kube-insight"))
        .args(args)
        .env(
            "KUBE_INSIGHT_STORE",
            format!("sqlite://{}/insight.db", dir.display()),
        )
        .output()
        .unwrap_or_else(|e| panic!("running kube-insight {args:?}: {e}"));
    assert!(
        out.status.success(),
        "kube-insight {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
