//! The differential test's shared half: Prometheus over blocks built from
//! `corpus/synthetic.om`, the query corpus, and the comparison.

// Test helpers may unwrap: a panic is a failing test with its message.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const T0: i64 = 1_700_000_000;

/// Instant query times (ms): aligned with samples, between samples, inside
/// the node exporter outage and the gauge gap, and after the data ends.
pub fn instant_times() -> Vec<i64> {
    vec![
        (T0 + 3600) * 1000,
        (T0 + 2717) * 1000 + 500,
        (T0 + 2410) * 1000,
        (T0 + 5580) * 1000,
        (T0 + 1230) * 1000,
    ]
}

/// Range queries (start ms, end ms, step ms).
pub fn ranges() -> Vec<(i64, i64, i64)> {
    vec![
        ((T0 + 300) * 1000, (T0 + 5700) * 1000, 60_000),
        ((T0 + 13) * 1000 + 500, (T0 + 5413) * 1000 + 500, 37_000),
        ((T0 + 2950) * 1000, (T0 + 3650) * 1000, 15_000),
    ]
}

pub struct Prom {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Prom {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The corpus folder, found from the calling package's manifest dir (the
/// promql crate itself, or the kube-insight package's end-to-end test).
pub fn corpus_dir() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    for p in [
        here.join("tests/corpus"),
        here.join("../promql/tests/corpus"),
    ] {
        if p.is_dir() {
            return p;
        }
    }
    panic!("promql corpus not found from {}", here.display())
}

pub fn start_prometheus(bin: &str) -> Prom {
    let promtool = std::env::var("KUBE_INSIGHT_TEST_PROMTOOL_BIN").unwrap_or_else(|_| {
        Path::new(bin)
            .with_file_name("promtool")
            .to_string_lossy()
            .into_owned()
    });
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let out = Command::new(&promtool)
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(corpus_dir().join("synthetic.om"))
        .arg(&data)
        .output()
        .unwrap_or_else(|e| panic!("running {promtool}: {e}"));
    assert!(
        out.status.success(),
        "promtool failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cfg = dir.path().join("prometheus.yml");
    std::fs::write(
        &cfg,
        "global:\n  evaluation_interval: 1m\nscrape_configs: []\n",
    )
    .unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
    let child = Command::new(bin)
        .arg(format!("--config.file={}", cfg.display()))
        .arg(format!("--storage.tsdb.path={}", data.display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--storage.tsdb.retention.time=100y")
        .arg("--log.level=warn")
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {bin}: {e}"));
    let prom = Prom {
        child,
        port,
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok((code, _)) = http_get(port, "/-/ready") {
            if code == 200 {
                break;
            }
        }
        assert!(Instant::now() < deadline, "prometheus did not become ready");
        std::thread::sleep(Duration::from_millis(200));
    }
    prom
}

pub fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(60)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((code, body.to_string()))
}

pub fn enc(s: &str) -> String {
    let mut o = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            o.push(b as char);
        } else {
            o.push_str(&format!("%{b:02X}"));
        }
    }
    o
}

pub fn ts_param(ms: i64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

pub fn parse_val(v: &Value) -> f64 {
    match v.as_str().unwrap_or("") {
        "NaN" => f64::NAN,
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        s => s.parse().unwrap_or(f64::NAN),
    }
}

pub fn close(a: f64, b: f64) -> bool {
    if a.is_nan() || b.is_nan() {
        return a.is_nan() && b.is_nan();
    }
    if a == b {
        return true;
    }
    let d = (a - b).abs();
    d <= 1e-9 * a.abs().max(b.abs()) || d <= 1e-12
}

pub fn point(p: &Value) -> (f64, f64) {
    (p[0].as_f64().unwrap_or(f64::NAN), parse_val(&p[1]))
}

/// Compares two `data` objects; Err describes the first difference.
pub fn compare(prom: &Value, ours: &Value) -> Result<(), String> {
    let pt = prom["resultType"].as_str().unwrap_or("");
    let ot = ours["resultType"].as_str().unwrap_or("");
    if pt != ot {
        return Err(format!("resultType {pt} vs ours {ot}"));
    }
    match pt {
        "scalar" | "string" => {
            let (a, b) = (&prom["result"], &ours["result"]);
            if a[0].as_f64() != b[0].as_f64() {
                return Err(format!("timestamp {a} vs ours {b}"));
            }
            if pt == "string" {
                return if a[1] == b[1] {
                    Ok(())
                } else {
                    Err(format!("{a} vs ours {b}"))
                };
            }
            if close(parse_val(&a[1]), parse_val(&b[1])) {
                Ok(())
            } else {
                Err(format!("{a} vs ours {b}"))
            }
        }
        "vector" | "matrix" => {
            let key = if pt == "vector" { "value" } else { "values" };
            let index = |v: &Value| -> Result<BTreeMap<String, Value>, String> {
                let mut m = BTreeMap::new();
                for e in v["result"].as_array().cloned().unwrap_or_default() {
                    // Canonical key: label names sorted, whatever the JSON map's order.
                    let k = serde_json::to_string(
                        &e["metric"]
                            .as_object()
                            .map(|m| {
                                m.iter()
                                    .map(|(k, v)| (k.clone(), v.clone()))
                                    .collect::<BTreeMap<String, Value>>()
                            })
                            .unwrap_or_default(),
                    )
                    .unwrap_or_default();
                    if m.insert(k.clone(), e[key].clone()).is_some() {
                        return Err(format!("duplicate series {k}"));
                    }
                }
                Ok(m)
            };
            let a = index(prom)?;
            let b = index(ours)?;
            let ka: Vec<&String> = a.keys().collect();
            let kb: Vec<&String> = b.keys().collect();
            if ka != kb {
                let only_p: Vec<_> = ka.iter().filter(|k| !b.contains_key(**k)).collect();
                let only_o: Vec<_> = kb.iter().filter(|k| !a.contains_key(**k)).collect();
                return Err(format!(
                    "series differ: only in prometheus {only_p:?}, only in ours {only_o:?}"
                ));
            }
            for (k, pv) in &a {
                let ov = &b[k];
                let (pp, op): (Vec<Value>, Vec<Value>) = if pt == "vector" {
                    (vec![pv.clone()], vec![ov.clone()])
                } else {
                    (
                        pv.as_array().cloned().unwrap_or_default(),
                        ov.as_array().cloned().unwrap_or_default(),
                    )
                };
                if pp.len() != op.len() {
                    let pts: Vec<f64> = pp.iter().map(|p| point(p).0).collect();
                    let ots: Vec<f64> = op.iter().map(|p| point(p).0).collect();
                    return Err(format!(
                        "{k}: {} points vs ours {}; prometheus ts {pts:?} ours ts {ots:?}",
                        pp.len(),
                        op.len()
                    ));
                }
                for (x, y) in pp.iter().zip(&op) {
                    let (tx, vx) = point(x);
                    let (ty, vy) = point(y);
                    if tx != ty || !close(vx, vy) {
                        return Err(format!("{k}: point {x} vs ours {y}"));
                    }
                }
            }
            Ok(())
        }
        other => Err(format!("unexpected resultType {other}")),
    }
}

/// The corpus files: Prometheus' functions, operators and edge cases, then
/// the kubernetes-mixin's rule and dashboard expressions.
pub const CORPUS_FILES: &[&str] = &["queries.txt", "mixin.txt"];

pub fn load_queries() -> Vec<String> {
    CORPUS_FILES
        .iter()
        .flat_map(|f| {
            std::fs::read_to_string(corpus_dir().join(f))
                .unwrap()
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect()
}

pub enum Outcome {
    Data(Value),
    Error(String, String),
}

/// The raw `data` member of a Prometheus answer, for byte comparisons.
pub fn raw_data(body: &str) -> Option<&str> {
    let i = body.find("\"data\":")?;
    let rest = &body[i + 7..];
    rest.strip_suffix('}')
        .or_else(|| rest.trim_end().strip_suffix('}'))
}

pub fn prom_call(port: u16, path: &str) -> Outcome {
    prom_call_raw(port, path).0
}

pub fn prom_call_raw(port: u16, path: &str) -> (Outcome, String) {
    let (_, body) = http_get(port, path).unwrap();
    let raw = raw_data(&body).unwrap_or("").to_string();
    (prom_outcome(&body, path), raw)
}

pub fn prom_outcome(body: &str, path: &str) -> Outcome {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"));
    if v["status"] == "success" {
        Outcome::Data(v["data"].clone())
    } else {
        Outcome::Error(
            v["errorType"].as_str().unwrap_or("").to_string(),
            v["error"].as_str().unwrap_or("").to_string(),
        )
    }
}

pub fn judge(p: &Outcome, o: &Outcome) -> Result<(), String> {
    match (p, o) {
        (Outcome::Data(a), Outcome::Data(b)) => compare(a, b),
        // Evaluation errors carry Prometheus' message exactly (Grafana shows
        // it); parse errors come from another parser and only share the type.
        (Outcome::Error(ta, ma), Outcome::Error(tb, mb)) if ta == tb => {
            if ta == "execution" && ma != mb {
                return Err(format!(
                    "execution error messages differ: prometheus {ma:?} vs ours {mb:?}"
                ));
            }
            if std::env::var_os("KUBE_INSIGHT_TEST_DIFF_MESSAGES").is_some() && ma != mb {
                println!("MESSAGE {ta}: prometheus {ma:?} vs ours {mb:?}");
            }
            Ok(())
        }
        (Outcome::Error(ta, ma), Outcome::Error(tb, mb)) => Err(format!(
            "error types differ: prometheus {ta} ({ma}) vs ours {tb} ({mb})"
        )),
        (Outcome::Error(t, m), Outcome::Data(_)) => {
            Err(format!("prometheus failed ({t}: {m}), ours succeeded"))
        }
        (Outcome::Data(_), Outcome::Error(t, m)) => {
            Err(format!("ours failed ({t}: {m}), prometheus succeeded"))
        }
    }
}

/// Fails when two successful vector answers list their series in different orders.
pub fn same_order(p: &Outcome, o: &Outcome) -> Result<(), String> {
    let order = |v: &Value| -> Vec<String> {
        v["result"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|e| {
                        let m: BTreeMap<String, Value> = e["metric"]
                            .as_object()
                            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                            .unwrap_or_default();
                        serde_json::to_string(&m).unwrap_or_default()
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    match (p, o) {
        (Outcome::Data(a), Outcome::Data(b)) if a["resultType"] == "vector" => {
            let (x, y) = (order(a), order(b));
            if x == y {
                Ok(())
            } else {
                Err(format!("order differs: prometheus {x:?} vs ours {y:?}"))
            }
        }
        _ => Ok(()),
    }
}

/// One call of the corpus.
pub enum Call<'a> {
    Instant {
        query: &'a str,
        time_ms: i64,
    },
    Range {
        query: &'a str,
        start_ms: i64,
        end_ms: i64,
        step_ms: i64,
    },
}

/// Runs every corpus query at every instant time and range against Prometheus
/// on `prom_port` and against `ours` (which returns its outcome and, when it
/// has one, the raw `data` JSON for a byte comparison). Panics listing the
/// mismatches; prints a one-line summary.
pub fn run(label: &str, prom_port: u16, mut ours: impl FnMut(&Call) -> (Outcome, Option<String>)) {
    let verbose = std::env::var_os("KUBE_INSIGHT_TEST_DIFF_VERBOSE").is_some();
    let queries = load_queries();
    assert!(
        queries.len() >= 150,
        "corpus has only {} queries",
        queries.len()
    );
    let (mut inst_ok, mut inst_n, mut range_ok, mut range_n) = (0, 0, 0, 0);
    let mut both_ok = 0;
    let mut failures: Vec<String> = Vec::new();
    let mut prom_errors = 0;
    let mut range_bytes = 0;
    for q in &queries {
        let mut q_ok = true;
        for t in instant_times() {
            inst_n += 1;
            let p = prom_call(
                prom_port,
                &format!("/api/v1/query?query={}&time={}", enc(q), ts_param(t)),
            );
            if matches!(p, Outcome::Error(..)) {
                prom_errors += 1;
            }
            let (o, _) = ours(&Call::Instant {
                query: q,
                time_ms: t,
            });
            // sort() and sort_desc() order an instant query's result.
            let ordered = q.starts_with("sort");
            match judge(&p, &o).and_then(|()| if ordered { same_order(&p, &o) } else { Ok(()) }) {
                Ok(()) => inst_ok += 1,
                Err(e) => {
                    q_ok = false;
                    failures.push(format!("query {q:?} at {}: {e}", ts_param(t)));
                }
            }
        }
        for (s, e, st) in ranges() {
            range_n += 1;
            let (p, raw) = prom_call_raw(
                prom_port,
                &format!(
                    "/api/v1/query_range?query={}&start={}&end={}&step={}",
                    enc(q),
                    ts_param(s),
                    ts_param(e),
                    ts_param(st)
                ),
            );
            let (o, mine) = ours(&Call::Range {
                query: q,
                start_ms: s,
                end_ms: e,
                step_ms: st,
            });
            if let Some(mine) = mine {
                // Range results are sorted by labels on both sides: compare bytes too.
                if mine == raw {
                    range_bytes += 1;
                } else if verbose {
                    let at = mine
                        .bytes()
                        .zip(raw.bytes())
                        .position(|(a, b)| a != b)
                        .unwrap_or(0);
                    let lo = at.saturating_sub(60);
                    println!(
                        "BYTES {q:?}: prometheus …{}… ours …{}…",
                        raw.get(lo..(at + 60).min(raw.len())).unwrap_or(""),
                        mine.get(lo..(at + 60).min(mine.len())).unwrap_or("")
                    );
                }
            }
            match judge(&p, &o) {
                Ok(()) => range_ok += 1,
                Err(err) => {
                    q_ok = false;
                    failures.push(format!(
                        "query_range {q:?} {}..{} step {}: {err}",
                        ts_param(s),
                        ts_param(e),
                        ts_param(st)
                    ));
                }
            }
        }
        if q_ok {
            both_ok += 1;
        }
    }
    println!(
        "differential ({label}): {} queries, {both_ok} matched on every call; /api/v1/query {inst_ok}/{inst_n} calls matched, /api/v1/query_range {range_ok}/{range_n} calls matched ({prom_errors} instant calls were errors on prometheus' side, as on ours); {range_bytes} successful query_range answers byte-identical to prometheus' data",
        queries.len()
    );
    for f in &failures {
        if verbose {
            println!("MISMATCH {f}");
        } else {
            println!("MISMATCH {}", f.chars().take(400).collect::<String>());
        }
    }
    assert!(
        failures.is_empty(),
        "{label}: {} mismatching calls",
        failures.len()
    );
}

/// The Prometheus binary from `KUBE_INSIGHT_TEST_PROMETHEUS_BIN`, or `None`
/// after printing why the test is skipped (a failure under `CI`).
pub fn prometheus_bin() -> Option<String> {
    match std::env::var("KUBE_INSIGHT_TEST_PROMETHEUS_BIN") {
        Ok(b) if !b.is_empty() => Some(b),
        _ => {
            if std::env::var_os("CI").is_some() {
                panic!("CI is set but KUBE_INSIGHT_TEST_PROMETHEUS_BIN is not: the differential test must run in CI");
            }
            println!("skipped: set KUBE_INSIGHT_TEST_PROMETHEUS_BIN to a prometheus binary to run the differential test");
            None
        }
    }
}
