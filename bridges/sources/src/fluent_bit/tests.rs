//! The Fluent Bit decoder on the shared fixtures and on the cases Fluent Bit
//! produces in the field: every date format, CRI partial lines, unicode
//! escapes, merged JSON logs, bad records among good ones.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::decode::{decode, DecodeError, DecodeOptions, Decoded};
use kube_insight_core::log::{LogStreamKey, StdStream, MAX_LINE_BYTES};
use kube_insight_core::Level;

const JSON_LINES: &str =
    include_str!("../../../../../shared/fixtures/fluentbit-http-json_lines.txt");
const JSON_ARRAY: &str = include_str!("../../../../../shared/fixtures/fluentbit-http-json.json");
const RECEIVED: i64 = 1_900_000_000_000_000_000;
const T37: i64 = 1_717_171_717_000_000_000; // 2024-05-31T16:08:37Z

fn dec(body: &str) -> Decoded {
    decode(body.as_bytes(), RECEIVED, &DecodeOptions::default()).unwrap()
}

fn one(body: &str) -> kube_insight_core::LogRecord {
    let d = dec(body);
    assert_eq!(d.records, 1, "{:?}", d.malformed);
    d.streams[0].records[0].clone()
}

/// Both fixtures hold the same two log lines (containerd via json_lines,
/// docker via json): they decode to the same streams, times and lines.
fn check_fixture(d: &Decoded) {
    assert_eq!(d.records, 2);
    assert_eq!(d.malformed_total(), 0);
    assert_eq!(d.time_fallback, 0);
    assert_eq!(d.streams.len(), 2);
    let fe = &d.streams[0];
    assert_eq!(
        fe.key,
        LogStreamKey::new("", "default", "frontend-7c9d8f6b5-x2k4q", "frontend")
    );
    assert_eq!(fe.meta.node, "ip-10-0-1-23.eu-west-1.compute.internal");
    assert_eq!(fe.meta.image, "docker.io/library/nginx:1.25.3");
    assert_eq!(fe.meta.pod_id, "7d0c2c4e-5b6a-4f3e-9d8c-1a2b3c4d5e6f");
    assert_eq!(
        fe.meta.container_id,
        "4f1c2d9e8b7a6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d"
    );
    assert_eq!(
        fe.meta.labels.get("app").map(String::as_str),
        Some("frontend")
    );
    let w = fe.meta.workload.as_ref().unwrap();
    assert_eq!(
        (w.kind.as_str(), w.name.as_str()),
        ("Deployment", "frontend")
    );
    let r = &fe.records[0];
    // The `time` field's nanoseconds win over the date key's microseconds.
    assert_eq!(r.timestamp_ns, T37 + 123_456_789);
    assert_eq!(r.stream, StdStream::Stdout);
    assert_eq!(
        r.line,
        "10.244.0.1 - - [31/May/2024:16:08:37 +0000] \"GET /healthz HTTP/1.1\" 200 2 \"-\" \"kube-probe/1.29\"",
        "no trailing newline"
    );
    assert_eq!(r.level, None);
    assert!(!r.partial);
    assert_eq!(r.fields, None, "nothing but the known keys");

    let api = &d.streams[1];
    assert_eq!(
        api.key,
        LogStreamKey::new("", "shop", "api-5f6d7c8b9-qwz7p", "api")
    );
    assert_eq!(api.meta.workload.as_ref().unwrap().name, "api");
    let r = &api.records[0];
    assert_eq!(r.timestamp_ns, T37 + 1_004_512_337);
    assert_eq!(r.stream, StdStream::Stderr);
    assert_eq!(r.level, Some(Level::Error));
    assert!(r.line.starts_with("{\"level\":\"error\""), "{}", r.line);
    assert!(r.line.ends_with("\"latency_ms\":5003}"), "{}", r.line);
}

#[test]
fn json_lines_fixture() {
    check_fixture(&dec(JSON_LINES));
}

#[test]
fn json_array_fixture() {
    check_fixture(&dec(JSON_ARRAY));
}

#[test]
fn every_date_format() {
    let rec = |date: &str| {
        format!(
            r#"{{"date":{date},"log":"x","kubernetes":{{"pod_name":"p","namespace_name":"n","container_name":"c"}}}}"#
        )
    };
    let cases = [
        ("1717171717.123456", T37 + 123_456_000), // double, %.16g
        ("1717171717.0", T37),                    // integral double
        ("1717171717", T37),                      // epoch
        ("1717171717123", T37 + 123_000_000),     // epoch_ms
        ("\"2024-05-31T16:08:37.123456Z\"", T37 + 123_456_000), // iso8601
        ("\"2024-05-31 16:08:37.123456\"", T37 + 123_456_000), // java_sql_timestamp
        ("\"1717171717.5\"", T37 + 500_000_000),  // a number as text
        ("1717171717123456", T37 + 123_456_000),  // µs
        ("1717171717123456789", T37 + 123_456_789), // ns
    ];
    for (date, want) in cases {
        let r = one(&rec(date));
        assert_eq!(r.timestamp_ns, want, "date {date}");
    }
    // The double's binary fraction is undone to the printed microsecond.
    assert_eq!(
        one(&rec("1717171718.004512")).timestamp_ns,
        T37 + 1_004_512_000
    );
}

#[test]
fn other_date_keys_and_only_as_first_key() {
    // Json_Date_Key ts, Json_Date_Format epoch_ms (the recommended output).
    let r = one(r#"{"ts":1717171717250,"log":"x","kubernetes":{"pod_name":"p"}}"#);
    assert_eq!(r.timestamp_ns, T37 + 250_000_000);
    // An application's own `ts` (lifted by Merge_Log) is not the date key.
    let d =
        dec(r#"{"time":"2024-05-31T16:08:37.5Z","log":"x","ts":1,"kubernetes":{"pod_name":"p"}}"#);
    let r = &d.streams[0].records[0];
    assert_eq!(r.timestamp_ns, T37 + 500_000_000);
    assert_eq!(d.time_fallback, 1);
    assert_eq!(r.fields.as_deref(), Some(r#"{"ts":1}"#));
    // A custom key through the options.
    let opts = DecodeOptions {
        date_keys: vec!["@t".into()],
        ..Default::default()
    };
    let d = decode(br#"{"@t":1717171717,"log":"x"}"#, RECEIVED, &opts).unwrap();
    assert_eq!(d.streams[0].records[0].timestamp_ns, T37);
}

#[test]
fn unreadable_dates_fall_back_to_time_then_receipt_and_are_counted() {
    let body = concat!(
        r#"{"date":"last tuesday","time":"2024-05-31T16:08:37.000000001Z","log":"a","kubernetes":{"pod_name":"p"}}"#,
        "\n",
        r#"{"date":null,"log":"b","kubernetes":{"pod_name":"p"}}"#,
        "\n",
        r#"{"log":"c","time":"also not a time","kubernetes":{"pod_name":"p"}}"#,
        "\n",
        r#"{"date":1e300,"log":"d","kubernetes":{"pod_name":"p"}}"#,
        "\n",
    );
    let d = dec(body);
    assert_eq!(d.records, 4, "never dropped");
    let ts: Vec<i64> = d.streams[0]
        .records
        .iter()
        .map(|r| r.timestamp_ns)
        .collect();
    assert_eq!(ts, vec![T37 + 1, RECEIVED, RECEIVED, RECEIVED]);
    assert_eq!((d.time_fallback, d.time_receive), (4, 3));
    // The date key and `time` disagree (a parser that re-timed the record):
    // the date key wins.
    let r = one(r#"{"date":1717171717.0,"time":"2024-05-31T17:00:00Z","log":"x"}"#);
    assert_eq!(r.timestamp_ns, T37);
}

#[test]
fn cri_partial_lines_docker_newlines_and_streams() {
    let body = concat!(
        r#"{"date":1717171717.0,"time":"2024-05-31T16:08:37Z","stream":"stdout","_p":"P","log":"first half ","kubernetes":{"pod_name":"p"}}"#,
        "\n",
        r#"{"date":1717171717.0,"time":"2024-05-31T16:08:37Z","stream":"stdout","_p":"F","log":"second half","kubernetes":{"pod_name":"p"}}"#,
        "\n",
        r#"{"date":1717171717.0,"stream":"stderr","log":"docker line\r\n","kubernetes":{"pod_name":"p"}}"#,
        "\n",
        r#"{"date":1717171717.0,"stream":"weird","log":"two\n\n","kubernetes":{"pod_name":"p"}}"#,
    );
    let d = dec(body);
    let r = &d.streams[0].records;
    assert_eq!((r[0].partial, r[0].line.as_str()), (true, "first half "));
    assert_eq!((r[1].partial, r[1].line.as_str()), (false, "second half"));
    assert_eq!(
        (r[2].stream, r[2].line.as_str()),
        (StdStream::Stderr, "docker line")
    );
    assert_eq!(
        (r[3].stream, r[3].line.as_str()),
        (StdStream::Stdout, "two\n"),
        "one newline is the line's end"
    );
}

#[test]
fn unicode_escapes_and_raw_utf8() {
    // Fluent Bit escapes non-ASCII as \uXXXX (surrogate pairs for emoji).
    let r = one(
        r#"{"date":1717171717.0,"log":"caf\u00e9 \ud83d\ude80 \u65e5\u672c / \"q\" \\ \t","kubernetes":{"pod_name":"p\u00e9"}}"#,
    );
    assert_eq!(r.line, "café 🚀 日本 / \"q\" \\ \t");
    let d = dec(
        "{\"date\":1717171717.0,\"log\":\"raw ünïcødé ✓\",\"kubernetes\":{\"pod_name\":\"p\"}}",
    );
    assert_eq!(d.streams[0].records[0].line, "raw ünïcødé ✓");
    assert_eq!(
        dec(r#"{"log":"x","kubernetes":{"pod_name":"p\u00e9"}}"#).streams[0]
            .key
            .pod,
        "pé"
    );
}

#[test]
fn one_bad_record_costs_only_itself() {
    let mut body = String::new();
    for i in 0..500 {
        if i == 250 {
            body.push_str("{\"date\":1717171717.0,\"log\":\"cut sho\n");
        } else {
            body.push_str(&format!("{{\"date\":1717171717.0,\"log\":\"line {i}\",\"kubernetes\":{{\"pod_name\":\"p{}\"}}}}\n", i % 7));
        }
    }
    let d = dec(&body);
    assert_eq!(d.records, 499);
    assert_eq!(d.malformed_counts, vec![("invalid_json", 1)]);
    assert_eq!(d.malformed[0].position, 251);
    assert!(
        d.malformed[0]
            .to_string()
            .starts_with("record 251: invalid JSON"),
        "{}",
        d.malformed[0]
    );
    assert_eq!(d.streams.len(), 7);
    // Records of the wrong shape, in both formats.
    let lines = concat!(
        "\"a string\"\n",
        "[1,2]\n",
        "{\"date\":1717171717.0}\n",
        "{\"log\":\"ok\",\"kubernetes\":{\"pod_name\":\"p\"}}\n",
        "{\"log\":\"ok too\",\"kubernetes\":\"not a map\",\"stream\":7}\n",
    );
    let d = dec(lines);
    assert_eq!(d.records, 2);
    assert_eq!(
        d.malformed_counts,
        vec![("not_an_object", 2), ("missing_log", 1)]
    );
    assert_eq!(d.no_kubernetes, 1, "kept under empty key parts");
    let arr = r#"[{"log":"a","kubernetes":{"pod_name":"p"}}, 5, {"no":"log"}, {"log":"b"}]"#;
    let d = dec(arr);
    assert_eq!(d.records, 3, "{:?}", d.malformed);
    assert_eq!(d.malformed_counts, vec![("not_an_object", 1)]);
    // `{"no":"log"}`: the other fields become the line.
    let no_log = d
        .streams
        .iter()
        .flat_map(|s| &s.records)
        .find(|r| r.line.contains("no"))
        .unwrap();
    assert_eq!(no_log.line, r#"{"no":"log"}"#);
}

#[test]
fn bodies_that_are_not_json_are_errors() {
    for body in ["hello world", "<xml/>", "\u{0}\u{1}msgpack"] {
        let e = decode(body.as_bytes(), RECEIVED, &DecodeOptions::default()).unwrap_err();
        assert!(matches!(e, DecodeError::NotJson { .. }), "{body}: {e}");
        assert!(e.to_string().contains("json_lines"), "{e}");
    }
    // Lines that all start like JSON but none is.
    let e = decode(b"{nope\n{still nope\n", RECEIVED, &DecodeOptions::default()).unwrap_err();
    assert!(matches!(e, DecodeError::NotJson { .. }), "{e}");
    // A json array cut in the middle cannot be trusted at all.
    let cut = &JSON_ARRAY[..JSON_ARRAY.len() / 2];
    let e = decode(cut.as_bytes(), RECEIVED, &DecodeOptions::default()).unwrap_err();
    assert!(matches!(e, DecodeError::BrokenArray { .. }), "{e}");
    // Empty bodies are fine and hold nothing.
    assert_eq!(dec("").records, 0);
    assert_eq!(dec(" \n\n ").records, 0);
    assert_eq!(dec("[]").records, 0);
}

#[test]
fn json_stream_records_on_one_line() {
    let d = dec(
        r#"{"log":"a","kubernetes":{"pod_name":"p"}}{"log":"b","kubernetes":{"pod_name":"p"}} {"log":"c","kubernetes":{"pod_name":"q"}}"#,
    );
    assert_eq!(d.records, 3);
    assert_eq!(d.streams.len(), 2);
}

#[test]
fn merged_json_fields_levels_and_bounds() {
    // Merge_Log On: the app's JSON keys are lifted next to `log`.
    let r = one(
        r#"{"date":1717171717.0,"log":"{\"severity\":\"WARNING\"}","severity":"WARNING","msg":"disk","n":3,"kubernetes":{"pod_name":"p","labels":{"a":"b","n":5}}}"#,
    );
    assert_eq!(r.level, Some(Level::Warn));
    assert_eq!(
        r.fields.as_deref(),
        Some(r#"{"severity":"WARNING","msg":"disk","n":3}"#)
    );
    // Keep_Log Off: no `log`, the fields are the line.
    let r =
        one(r#"{"date":1717171717.0,"level":"error","msg":"boom","kubernetes":{"pod_name":"p"}}"#);
    assert_eq!(r.line, r#"{"level":"error","msg":"boom"}"#);
    assert_eq!(r.level, Some(Level::Error));
    assert_eq!(r.fields, None);
    // A non-string log is kept as its JSON.
    assert_eq!(one(r#"{"log":{"a":1}}"#).line, r#"{"a":1}"#);
    // Long lines are cut at a char boundary and flagged; big fields bounded.
    let long = "é".repeat(MAX_LINE_BYTES);
    let big = "x".repeat(20_000);
    let d = dec(&format!(r#"{{"log":"{long}","big":"{big}","small":1}}"#));
    let r = &d.streams[0].records[0];
    assert!(r.truncated && r.line.len() <= MAX_LINE_BYTES && r.line.len() > MAX_LINE_BYTES - 2);
    assert_eq!(d.truncated, 1);
    assert_eq!(r.fields.as_deref(), Some(r#"{"small":1}"#));
    // Labels that are not strings are left out; the rest kept and bounded.
    let d = dec(r#"{"log":"x","kubernetes":{"pod_name":"p","labels":{"a":"b","n":5}}}"#);
    assert_eq!(d.streams[0].meta.labels.len(), 1);
    let many: Vec<String> = (0..100).map(|i| format!("\"l{i}\":\"v\"")).collect();
    let d = dec(&format!(
        r#"{{"log":"x","kubernetes":{{"pod_name":"p","labels":{{{}}}}}}}"#,
        many.join(",")
    ));
    assert_eq!(
        d.streams[0].meta.labels.len(),
        kube_insight_core::log::MAX_STREAM_LABELS
    );
}

#[test]
fn owner_references_name_the_workload() {
    let d = dec(
        r#"{"log":"x","kubernetes":{"pod_name":"api-5f6d7c8b9-abcde","namespace_name":"shop","labels":{"pod-template-hash":"5f6d7c8b9"},"ownerReferences":[{"kind":"ReplicaSet","name":"api-5f6d7c8b9","controller":true}]}}"#,
    );
    let w = d.streams[0].meta.workload.clone().unwrap();
    assert_eq!((w.kind.as_str(), w.name.as_str()), ("Deployment", "api"));
    let d = dec(
        r#"{"log":"x","kubernetes":{"pod_name":"db-0","ownerReferences":[{"kind":"StatefulSet","name":"db"}]}}"#,
    );
    assert_eq!(
        d.streams[0].meta.workload.clone().unwrap().kind,
        "StatefulSet"
    );
}

#[test]
fn streams_group_records_in_body_order() {
    let body = concat!(
        r#"{"log":"a1","kubernetes":{"pod_name":"a","namespace_name":"n","container_name":"c"}}"#,
        "\n",
        r#"{"log":"b1","kubernetes":{"pod_name":"b","namespace_name":"n","container_name":"c"}}"#,
        "\n",
        r#"{"log":"a2","kubernetes":{"pod_name":"a","namespace_name":"n","container_name":"c"}}"#,
        "\n",
        r#"{"log":"a-side","kubernetes":{"pod_name":"a","namespace_name":"n","container_name":"sidecar"}}"#,
        "\n",
    );
    let d = dec(body);
    let got: Vec<(String, Vec<String>)> = d
        .streams
        .iter()
        .map(|s| {
            (
                format!("{}/{}", s.key.pod, s.key.container),
                s.records.iter().map(|r| r.line.clone()).collect(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            ("a/c".to_string(), vec!["a1".to_string(), "a2".to_string()]),
            ("b/c".to_string(), vec!["b1".to_string()]),
            ("a/sidecar".to_string(), vec!["a-side".to_string()]),
        ]
    );
}
