//! Logs end to end: `kube-insight run --targets logs,api` on a temporary
//! store; the Fluent Bit fixture payloads are posted over real HTTP (json_lines
//! gzipped as our manifests ship it, and the json array format), then read back
//! through `/api/v1/logs` field by field.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::Value;
use std::io::Write;
use support::KubeInsight;

const JSON_LINES: &str = include_str!("../../shared/fixtures/fluentbit-http-json_lines.txt");
const JSON_ARRAY: &str = include_str!("../../shared/fixtures/fluentbit-http-json.json");
const TOKEN: &str = "logs-e2e-token-0123456789";

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

fn ns(rfc3339: &str) -> (String, u32) {
    // "2024-05-31T16:08:37.123456789Z" -> ("2024-05-31T16:08:37", 123456789)
    let s = rfc3339.trim_end_matches('Z');
    let (sec, frac) = s.split_once('.').unwrap_or((s, "0"));
    let digits: String = frac.chars().chain(std::iter::repeat('0')).take(9).collect();
    (sec.to_string(), digits.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fluent_bit_fixtures_round_trip_field_by_field() {
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("KUBE_INSIGHT_TARGETS", "logs,api".to_string()),
        ("KUBE_INSIGHT_CLUSTER", "e2e".to_string()),
        ("KUBE_INSIGHT_INGEST_TOKEN", TOKEN.to_string()),
        // The fixtures are from 2024: keep them.
        ("KUBE_INSIGHT_RETENTION_LOGS", "36500d".to_string()),
    ];
    let ki = KubeInsight::start(dir.path(), &env, None).await;
    let client = reqwest::Client::new();
    let url = format!("{}/ingest/fluent-bit", ki.ingest);

    let r = client
        .post(&url)
        .bearer_auth(TOKEN)
        .header("content-type", "application/x-ndjson")
        .header("content-encoding", "gzip")
        .body(gzip(JSON_LINES.as_bytes()))
        .send()
        .await
        .unwrap();
    assert!(
        r.status().is_success(),
        "{}: {}",
        r.status(),
        r.text().await.unwrap()
    );
    let r = client
        .post(&url)
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body(JSON_ARRAY)
        .send()
        .await
        .unwrap();
    assert!(
        r.status().is_success(),
        "{}: {}",
        r.status(),
        r.text().await.unwrap()
    );
    // Without the token: refused, nothing stored.
    let r = client.post(&url).body(JSON_ARRAY).send().await.unwrap();
    assert_eq!(r.status(), 401);

    // Both fixtures carry the same two log lines of the same containers at the
    // same nanosecond (one as CRI, one as docker json-file with a trailing
    // newline): the same records, so the second batch adds nothing new.
    let expected: Vec<Value> = JSON_LINES
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let array: Vec<Value> = serde_json::from_str(JSON_ARRAY).unwrap();
    for rec in &array {
        let same = expected.iter().any(|e| {
            e["time"] == rec["time"]
                && e["log"].as_str().map(|l| l.trim_end_matches('\n'))
                    == rec["log"].as_str().map(|l| l.trim_end_matches('\n'))
                && e["kubernetes"]["pod_name"] == rec["kubernetes"]["pod_name"]
        });
        assert!(same, "the fixtures are expected to overlap: {rec}");
    }

    let rows: Vec<Value> = client
        .get(format!("{}/api/v1/logs", ki.api))
        .query(&[
            ("from", "2024-05-31T16:00:00Z"),
            ("to", "2024-05-31T17:00:00Z"),
            ("limit", "100"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(rows.len(), expected.len(), "{rows:#?}");
    // Newest first.
    let times: Vec<(String, u32)> = rows
        .iter()
        .map(|r| ns(r["time"].as_str().unwrap()))
        .collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "{times:?}");
    for want in &expected {
        let k = &want["kubernetes"];
        let line = want["log"].as_str().unwrap().trim_end_matches('\n');
        let found = rows
            .iter()
            .find(|r| {
                r["line"] == line
                    && r["stream"] == want["stream"]
                    && ns(r["time"].as_str().unwrap()) == ns(want["time"].as_str().unwrap())
            })
            .unwrap_or_else(|| panic!("record not read back: {want}\nrows: {rows:#?}"));
        assert_eq!(found["cluster"], "e2e", "the cluster comes from the token");
        assert_eq!(found["namespace"], k["namespace_name"]);
        assert_eq!(found["pod"], k["pod_name"]);
        assert_eq!(found["container"], k["container_name"]);
    }
    // The JSON error line is recognised as an error.
    let errors: Vec<&Value> = rows.iter().filter(|r| r["level"] == "error").collect();
    assert!(!errors.is_empty(), "{rows:#?}");
    // contains narrows.
    let hits: Vec<Value> = client
        .get(format!("{}/api/v1/logs", ki.api))
        .query(&[
            ("from", "2024-05-31T16:00:00Z"),
            ("to", "2024-05-31T17:00:00Z"),
            ("contains", "kube-probe"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        !hits.is_empty()
            && hits
                .iter()
                .all(|r| r["line"].as_str().unwrap().contains("kube-probe")),
        "{hits:#?}"
    );
}
