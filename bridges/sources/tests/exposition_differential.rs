//! Differential test: our exposition parser against Python's reference
//! parser, `prometheus_client.parser.text_string_to_metric_families`, run
//! through `tests/oracle/parse_oracle.py` on every corpus case, every shared
//! fixture and a generated body of tricky label values.
//!
//! Python is `$KUBE_INSIGHT_TEST_PYTHON`, else `python3`. Without an
//! importable `prometheus_client` the test fails when `$CI` is set and prints
//! "skipped: …" otherwise.
//!
//! Where the two parsers legitimately differ, the corpus says so case by
//! case ([`corpus::Oracle`]) with the reason, and the test checks that the
//! difference really happens, so a change on either side is noticed.

// Test helpers may unwrap: a panic there is a failing test (as clippy.toml allows in #[test]).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "exposition/common.rs"]
mod common;
#[path = "exposition/corpus.rs"]
mod corpus;

use common::{fixture, parse_all, Owned, FIXTURES};
use corpus::{cases, Oracle};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn python() -> String {
    std::env::var("KUBE_INSIGHT_TEST_PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

fn oracle_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oracle/parse_oracle.py")
}

/// Ok(()) when the oracle can run; Err(why) otherwise.
fn oracle_available(py: &str) -> Result<(), String> {
    match Command::new(py)
        .args(["-c", "import prometheus_client.parser"])
        .output()
    {
        Err(e) => Err(format!("cannot run {py}: {e}")),
        Ok(out) if !out.status.success() => Err(format!(
            "{py} cannot import prometheus_client: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Ok(_) => Ok(()),
    }
}

/// Returns false (after saying why) when the test must be skipped.
fn require_oracle() -> bool {
    let py = python();
    match oracle_available(&py) {
        Ok(()) => true,
        Err(why) if std::env::var_os("CI").is_some() => panic!(
            "{why}\nthe differential test needs Python's prometheus_client: \
             `pip install prometheus_client` into a venv and set KUBE_INSIGHT_TEST_PYTHON to its python"
        ),
        Err(why) => {
            println!(
                "skipped: differential exposition test ({why}); \
                 `pip install prometheus_client` and set KUBE_INSIGHT_TEST_PYTHON to run it"
            );
            false
        }
    }
}

/// Runs the oracle on many documents at once (one Python start-up).
fn run_oracle(docs: &[(String, Vec<u8>)]) -> Vec<Value> {
    let dir = std::env::temp_dir().join(format!(
        "kube-insight-exposition-oracle-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let paths: Vec<PathBuf> = docs
        .iter()
        .enumerate()
        .map(|(i, (name, body))| {
            let p = dir.join(format!("{i:04}-{name}.txt"));
            std::fs::write(&p, body).unwrap();
            p
        })
        .collect();
    let out = Command::new(python())
        .arg(oracle_script())
        .args(&paths)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        out.status.success(),
        "oracle failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results: Vec<Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(results.len(), docs.len(), "one oracle answer per document");
    results
}

/// Our samples normalised like the oracle's output.
fn normalise(samples: &[Owned]) -> Vec<Value> {
    samples
        .iter()
        .map(|s| {
            let mut labels: Vec<(String, String)> = s.labels.clone();
            labels.sort();
            serde_json::json!({
                "name": s.name,
                "labels": labels.iter().map(|(k, v)| vec![k.clone(), v.clone()]).collect::<Vec<_>>(),
                "value_bits": format!("{:016x}", s.value.to_bits()),
                "timestamp_ms": if s.has_timestamp { Value::from(s.timestamp_ms) } else { Value::Null },
            })
        })
        .collect()
}

fn python_samples(v: &Value) -> Vec<Value> {
    v["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            serde_json::json!({
                "name": s["name"],
                "labels": s["labels"],
                "value_bits": s["value_bits"],
                "timestamp_ms": s["timestamp_ms"],
            })
        })
        .collect()
}

/// Our TYPE map is consistent with the oracle's families (it calls untyped
/// "unknown" and strips `_total` from counter family names).
fn types_agree(report: &kube_insight_sources::prometheus::ParseReport, py: &Value) -> bool {
    let fams: Vec<(String, String)> = py["families"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f[0].as_str().unwrap().to_owned(),
                f[1].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    report.types.iter().all(|(name, t)| {
        let want = match t.as_str() {
            "untyped" => "unknown",
            other => other,
        };
        let stripped = name.strip_suffix("_total").unwrap_or(name);
        fams.iter()
            .any(|(n, ty)| (n == name || n == stripped) && ty == want)
    })
}

/// A deterministic body of valid lines with tricky label values.
fn generated_body() -> Vec<u8> {
    const PIECES: &[&str] = &[
        "a", "Z", "0", ",", "=", "{", "}", " ", "\\\\", "\\\"", "\\n", "#", "é", "✓", ":", "/",
        "\t", "",
    ];
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut body = String::new();
    for i in 0..400 {
        let name = [
            "m",
            "ns:rule:sum",
            "_x",
            "container_cpu_usage_seconds_total",
        ][i % 4];
        body.push_str(name);
        body.push('{');
        let nlabels = (next() % 6) as usize;
        for l in 0..nlabels {
            body.push_str(&format!("l{l}=\""));
            for _ in 0..(next() % 8) {
                body.push_str(PIECES[(next() % PIECES.len() as u64) as usize]);
            }
            body.push_str("\",");
        }
        body.push('}');
        let value = match next() % 6 {
            0 => "NaN".to_owned(),
            1 => "-Inf".to_owned(),
            2 => format!("{:e}", (next() % 1_000_000) as f64 * 1.5),
            3 => format!("{}", next() % 100_000),
            _ => format!("{}", (next() % 1_000_000) as f64 / 7.0),
        };
        body.push_str(&format!(" {value}"));
        if next() % 2 == 0 {
            body.push_str(&format!(
                " {}",
                1_700_000_000_000 + (next() % 1_000_000) as i64
            ));
        }
        body.push('\n');
    }
    body.into_bytes()
}

#[test]
fn exposition_parser_agrees_with_prometheus_client() {
    if !require_oracle() {
        return;
    }
    let corpus = cases();
    let mut docs: Vec<(String, Vec<u8>, Oracle)> = corpus
        .iter()
        .map(|c| (c.name.to_owned(), c.input.clone(), c.oracle))
        .collect();
    for f in FIXTURES {
        docs.push((f.to_string(), fixture(f), Oracle::Same));
    }
    docs.push((
        "generated_tricky_values".into(),
        generated_body(),
        Oracle::Same,
    ));

    let answers = run_oracle(
        &docs
            .iter()
            .map(|(n, b, _)| (n.clone(), b.clone()))
            .collect::<Vec<_>>(),
    );

    let mut failures = Vec::new();
    let mut agreed = 0;
    let mut differences = Vec::new();
    for ((name, body, oracle), py) in docs.iter().zip(&answers) {
        let (ours, report) = parse_all(body);
        let our_ok = report.errors_total == 0;
        let py_ok = py["ok"].as_bool().unwrap();
        let same_samples = py_ok && normalise(&ours) == python_samples(py);
        let verdict = match oracle {
            Oracle::Same if our_ok => {
                if !py_ok {
                    Err(format!("oracle rejects what we accept: {}", py["error"]))
                } else if !same_samples {
                    Err(format!(
                        "samples differ:\n  ours   {:?}\n  python {:?}",
                        normalise(&ours),
                        python_samples(py)
                    ))
                } else if !types_agree(&report, py) {
                    Err(format!(
                        "types differ: ours {:?}, python {}",
                        report.types, py["families"]
                    ))
                } else {
                    Ok(())
                }
            }
            Oracle::Same => {
                if py_ok {
                    Err(format!(
                        "oracle accepts what we reject ({:?}): {:?}",
                        report.errors,
                        python_samples(py)
                    ))
                } else {
                    Ok(())
                }
            }
            Oracle::PythonRejects(why) => {
                if our_ok && !py_ok {
                    differences.push(format!("{name}: {why}"));
                    Ok(())
                } else {
                    Err(format!(
                        "expected: we accept, python rejects; got ours ok={our_ok} python ok={py_ok} {}",
                        py["error"]
                    ))
                }
            }
            Oracle::PythonAccepts(why) => {
                if !our_ok && py_ok {
                    differences.push(format!("{name}: {why}"));
                    Ok(())
                } else {
                    Err(format!(
                        "expected: we reject, python accepts; got ours ok={our_ok} python ok={py_ok} {}",
                        py["error"]
                    ))
                }
            }
            Oracle::PythonDiffers(why) => {
                if our_ok && py_ok && !same_samples {
                    differences.push(format!("{name}: {why}"));
                    Ok(())
                } else {
                    Err(format!(
                        "expected both to accept with different samples; got ours ok={our_ok} python ok={py_ok} same={same_samples}"
                    ))
                }
            }
        };
        match verdict {
            Ok(()) => agreed += 1,
            Err(e) => failures.push(format!("{name}: {e}")),
        }
    }
    println!(
        "differential: {agreed} of {} documents as expected, {} of them documented differences:",
        docs.len(),
        differences.len()
    );
    for d in &differences {
        println!("  {d}");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
