//! The exposition parser against its conformance corpus
//! (`tests/exposition/corpus.rs`): exact samples, errors and metadata, the
//! same answer however the body is split into chunks, and the label-set
//! semantics of the core types.

// Test helpers may unwrap: a panic there is a failing test (as clippy.toml allows in #[test]).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "exposition/common.rs"]
mod common;
#[path = "exposition/corpus.rs"]
mod corpus;

use common::{parse_all, parse_opts, Owned, DEFAULT_TS};
use corpus::{cases, Case};
use kube_insight_core::{Labels, STALE_NAN_BITS};
use kube_insight_sources::prometheus::exposition::{
    parse, parse_to_series, ErrorKind, ExpositionParser, ParseOptions, ParseReport, SampleRef,
};

fn check_case(c: &Case, got: &[Owned], report: &ParseReport) -> Result<(), String> {
    if got.len() != c.samples.len() {
        return Err(format!(
            "expected {} samples, got {}: {got:#?}\nerrors: {:?}",
            c.samples.len(),
            got.len(),
            report.errors
        ));
    }
    for (g, e) in got.iter().zip(&c.samples) {
        let labels: Vec<(String, String)> = e
            .labels
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        let (ts, has_ts) = match e.ts {
            Some(t) => (t, true),
            None => (DEFAULT_TS, false),
        };
        let value_ok = g.value.to_bits() == e.value.to_bits();
        if g.name != e.name
            || g.labels != labels
            || !value_ok
            || g.timestamp_ms != ts
            || g.has_timestamp != has_ts
        {
            return Err(format!(
                "sample mismatch:\n  got      {g:?}\n  expected {e:?}"
            ));
        }
    }
    let errors: Vec<(usize, String)> = report
        .errors
        .iter()
        .map(|e| {
            let dbg = format!("{:?}", e.kind);
            let variant = dbg
                .split(|c: char| !c.is_alphanumeric())
                .next()
                .unwrap_or_default()
                .to_owned();
            (e.line, variant)
        })
        .collect();
    let expected: Vec<(usize, String)> =
        c.errors.iter().map(|(l, k)| (*l, k.to_string())).collect();
    if errors != expected {
        return Err(format!(
            "errors: got {errors:?}, expected {expected:?} ({:?})",
            report.errors
        ));
    }
    if report.errors_total != report.errors.len() {
        return Err("errors_total differs from the kept errors".into());
    }
    let mut types: Vec<(String, String)> = report
        .types
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().to_owned()))
        .collect();
    types.sort();
    let mut want: Vec<(String, String)> = c
        .types
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    want.sort();
    if types != want {
        return Err(format!("types: got {types:?}, expected {want:?}"));
    }
    if report.samples != got.len() {
        return Err("report.samples differs from the sink calls".into());
    }
    Ok(())
}

#[test]
fn corpus_cases_parse_as_expected() {
    let mut failures = Vec::new();
    for c in cases() {
        let (got, report) = parse_all(&c.input);
        if let Err(e) = check_case(&c, &got, &report) {
            failures.push(format!("case {}: {e}", c.name));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn corpus_names_are_unique() {
    let mut names: Vec<_> = cases().iter().map(|c| c.name).collect();
    let n = names.len();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), n);
}

/// Feeding a body in two chunks split anywhere, or byte by byte, gives the
/// same samples, errors and line numbers as one call.
#[test]
fn chunking_never_changes_the_result() {
    for c in cases() {
        let (want, want_report) = parse_all(&c.input);
        let mut splits: Vec<Vec<usize>> = (0..=c.input.len()).map(|i| vec![i]).collect();
        splits.push((1..c.input.len()).collect()); // byte by byte
        for cuts in splits {
            let mut got = Vec::new();
            let mut sink = |s: &SampleRef<'_>| got.push(Owned::from_ref(s));
            let mut p = ExpositionParser::new(DEFAULT_TS);
            let mut prev = 0;
            for &cut in &cuts {
                p.feed(&c.input[prev..cut], &mut sink);
                prev = cut;
            }
            p.feed(&c.input[prev..], &mut sink);
            let report = p.finish(&mut sink);
            assert_eq!(report, want_report, "case {} cuts {cuts:?}", c.name);
            assert_eq!(got.len(), want.len(), "case {} cuts {cuts:?}", c.name);
            for (g, w) in got.iter().zip(&want) {
                assert_eq!(g.name, w.name);
                assert_eq!(g.labels, w.labels);
                assert_eq!(g.value.to_bits(), w.value.to_bits());
                assert_eq!((g.timestamp_ms, g.line), (w.timestamp_ms, w.line));
            }
        }
    }
}

#[test]
fn labels_follow_prometheus_semantics() {
    let mut labels = Vec::new();
    let report = parse(
        "m{z=\"1\",a=\"\",b=\"x\\\\y\"} 1\n",
        DEFAULT_TS,
        |s: &SampleRef<'_>| labels.push(s.to_labels()),
    );
    assert!(report.is_clean());
    // Sorted, __name__ included, the empty `a` dropped, escapes decoded.
    assert_eq!(
        labels,
        vec![Labels::from_pairs([
            ("__name__", "m"),
            ("b", "x\\y"),
            ("z", "1")
        ])]
    );
}

#[test]
fn nan_is_never_the_stale_marker() {
    let (got, _) = parse_all(b"m NaN\n");
    assert!(got[0].value.is_nan());
    assert_ne!(got[0].value.to_bits(), STALE_NAN_BITS);
}

#[test]
fn unterminated_last_line_is_parsed_only_when_allowed() {
    let body = b"a 1 1000\nb{x=\"y\"} 12";
    let (got, report) = parse_all(body);
    assert_eq!(got.len(), 1);
    assert!(report.truncated);
    assert_eq!(report.errors[0].line, 2);
    assert_eq!(report.errors[0].kind, ErrorKind::Truncated);
    assert_eq!(report.lines, 2);

    let opts = ParseOptions {
        allow_unterminated_last_line: true,
        ..ParseOptions::default()
    };
    let (got, report) = parse_opts(body, opts);
    assert_eq!(got.len(), 2);
    assert!(report.is_clean() && !report.truncated);
    assert_eq!(got[1].value, 12.0);
}

#[test]
fn errors_are_capped_but_counted() {
    let body = "bad line\n".repeat(1000) + "good 1\n";
    let (got, report) = parse_opts(
        body.as_bytes(),
        ParseOptions {
            max_errors: 10,
            ..ParseOptions::default()
        },
    );
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].line, 1001);
    assert_eq!(report.errors.len(), 10);
    assert_eq!(report.errors_total, 1000);
    assert_eq!(report.errors[9].line, 10);
}

#[test]
fn invalid_utf8_rejects_only_its_line() {
    let mut body = b"a 1\nb{x=\"".to_vec();
    body.extend_from_slice(&[0xff, 0xfe]);
    body.extend_from_slice(b"\"} 2\n# comment \xff\nc 3\n");
    let (got, report) = parse_all(&body);
    let names: Vec<_> = got.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["a", "c"]);
    assert_eq!(report.errors.len(), 1);
    assert_eq!(report.errors[0].line, 2);
    assert_eq!(report.errors[0].kind, ErrorKind::InvalidUtf8);
}

#[test]
fn error_messages_name_the_line_and_read_well() {
    let (_, report) = parse_all(b"ok 1\nm{a=\"1\",a=\"2\"} 1\nm{a=\"\\q\"} 1\nm 1 x\n");
    let msgs: Vec<String> = report.errors.iter().map(|e| e.to_string()).collect();
    assert_eq!(
        msgs,
        [
            "line 2: duplicate label name \"a\"",
            "line 3: invalid escape sequence '\\q' in the value of label \"a\"",
            "line 4: invalid timestamp \"x\": expected an integer number of milliseconds",
        ]
    );
    for m in msgs {
        assert!(!m.ends_with('.'));
    }
}

#[test]
fn long_tokens_are_shortened_in_errors() {
    let body = format!("m {}\n", "9".repeat(10_000) + "x");
    let (_, report) = parse_all(body.as_bytes());
    assert!(report.errors[0].to_string().len() < 200);
}

#[test]
fn series_collector_groups_consecutive_samples() {
    let body = "m{a=\"1\"} 1 1000\nm{a=\"1\"} 2 2000\nm{a=\"1\",} 3 3000\nm{a=\"2\"} 4 1000\nm{a=\"1\"} 5 4000\n";
    let (series, report) = parse_to_series(body, DEFAULT_TS);
    assert!(report.is_clean());
    // The first three lines are one series (the third spelled differently),
    // the last one repeats a series non-consecutively.
    let summary: Vec<(String, Vec<i64>)> = series
        .iter()
        .map(|s| {
            (
                s.labels.to_string(),
                s.samples.iter().map(|x| x.timestamp_ms).collect(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("m{a=\"1\"}".to_string(), vec![1000, 2000, 3000]),
            ("m{a=\"2\"}".to_string(), vec![1000]),
            ("m{a=\"1\"}".to_string(), vec![4000]),
        ]
    );
}

#[test]
fn series_collector_sorts_samples_of_a_series() {
    let (series, _) = parse_to_series("m 2 2000\nm 1 1000\n", DEFAULT_TS);
    assert_eq!(series.len(), 1);
    let ts: Vec<i64> = series[0].samples.iter().map(|s| s.timestamp_ms).collect();
    assert_eq!(ts, [1000, 2000]);
}

#[test]
fn type_of_resolves_histogram_and_summary_children() {
    let (_, report) = parse_all(
        b"# TYPE h histogram\n# TYPE s summary\n# TYPE c_total counter\n# TYPE g gauge\nh_bucket{le=\"1\"} 1\n",
    );
    use kube_insight_sources::prometheus::exposition::MetricType::*;
    assert_eq!(report.type_of("h_bucket"), Some(Histogram));
    assert_eq!(report.type_of("h_count"), Some(Histogram));
    assert_eq!(report.type_of("s_sum"), Some(Summary));
    assert_eq!(report.type_of("s"), Some(Summary));
    assert_eq!(report.type_of("c_total"), Some(Counter));
    assert_eq!(report.type_of("g_sum"), None);
    assert_eq!(report.type_of("other"), None);
}

#[test]
fn help_is_unescaped() {
    let (_, report) = parse_all(b"# HELP m a \\\\ b\\nc \\\"d\\\"  \nm 1\n");
    assert_eq!(report.help["m"], "a \\ b\nc \"d\"  ");
}
