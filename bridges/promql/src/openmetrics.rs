//! A small reader for OpenMetrics text with timestamps, the format of the
//! differential-test fixture (`tests/corpus/synthetic.om`) that
//! `promtool tsdb create-blocks-from openmetrics` also reads. It supports what
//! backfill files use: `# …` lines (ignored), `name{label="value",…} value timestamp`
//! with escaped label values, `NaN`/`+Inf`/`-Inf` values, and float-second
//! timestamps. Exemplars are not supported.

use kube_insight_core::{Label, Labels, Sample, TimeSeries, METRIC_NAME};
use std::collections::HashMap;
use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("openmetrics line {line}: {reason}: {text:?}")]
pub struct OpenMetricsError {
    pub line: usize,
    pub reason: String,
    pub text: String,
}

/// Parses the text into series (samples sorted by time, series in order of
/// first appearance).
pub fn parse_openmetrics(text: &str) -> Result<Vec<TimeSeries>, OpenMetricsError> {
    let mut index: HashMap<Labels, usize> = HashMap::new();
    let mut out: Vec<TimeSeries> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_end();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let err = |reason: &str| OpenMetricsError {
            line: i + 1,
            reason: reason.to_string(),
            text: raw.to_string(),
        };
        let (labels, rest) = parse_series(line).ok_or_else(|| err("malformed series"))?;
        let mut parts = rest.split_whitespace();
        let value = parts
            .next()
            .and_then(parse_value)
            .ok_or_else(|| err("missing or malformed value"))?;
        let ts = parts
            .next()
            .ok_or_else(|| err("missing timestamp"))?
            .parse::<f64>()
            .map_err(|_| err("malformed timestamp"))?;
        let ts_ms = (ts * 1000.0).round() as i64;
        let idx = match index.get(&labels) {
            Some(&k) => k,
            None => {
                index.insert(labels.clone(), out.len());
                out.push(TimeSeries::new(labels, Vec::new()));
                out.len() - 1
            }
        };
        out[idx].samples.push(Sample::new(ts_ms, value));
    }
    for s in &mut out {
        s.samples.sort_by_key(|x| x.timestamp_ms);
    }
    Ok(out)
}

fn parse_value(s: &str) -> Option<f64> {
    match s {
        "NaN" => Some(f64::NAN),
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        _ => s.parse().ok(),
    }
}

fn parse_series(line: &str) -> Option<(Labels, &str)> {
    let name_end = line
        .find(|c: char| c == '{' || c.is_whitespace())
        .unwrap_or(line.len());
    let name = &line[..name_end];
    if name.is_empty() {
        return None;
    }
    let mut labels = vec![Label::new(METRIC_NAME, name)];
    let mut rest = &line[name_end..];
    if let Some(r) = rest.strip_prefix('{') {
        let b = r.as_bytes();
        let mut i = 0;
        loop {
            while i < b.len() && (b[i] == b',' || b[i] == b' ') {
                i += 1;
            }
            if i < b.len() && b[i] == b'}' {
                i += 1;
                break;
            }
            let ns = i;
            while i < b.len() && b[i] != b'=' {
                i += 1;
            }
            let lname = r.get(ns..i)?.trim();
            i += 1; // '='
            if b.get(i) != Some(&b'"') {
                return None;
            }
            i += 1;
            let mut val = String::new();
            loop {
                let c = *b.get(i)?;
                match c {
                    b'"' => {
                        i += 1;
                        break;
                    }
                    b'\\' => {
                        let n = *b.get(i + 1)?;
                        val.push(match n {
                            b'n' => '\n',
                            b'"' => '"',
                            b'\\' => '\\',
                            _ => return None,
                        });
                        i += 2;
                    }
                    _ => {
                        // Copy one UTF-8 character.
                        let ch = r.get(i..)?.chars().next()?;
                        val.push(ch);
                        i += ch.len_utf8();
                    }
                }
            }
            labels.push(Label::new(lname, val));
        }
        rest = r.get(i..)?;
    }
    Some((Labels::new(labels), rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_series_values_and_escapes() {
        let text = "# TYPE x counter\nx_total{a=\"1\",b=\"q\\\"z\"} 3 1700000000\nx_total{b=\"q\\\"z\",a=\"1\"} +Inf 1700000015.5\nup 1 1700000000\n# EOF\n";
        let s = parse_openmetrics(text).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].labels.get("b"), Some("q\"z"));
        assert_eq!(s[0].samples.len(), 2);
        assert_eq!(s[0].samples[1].timestamp_ms, 1_700_000_015_500);
        assert_eq!(s[0].samples[1].value, f64::INFINITY);
        assert_eq!(s[1].labels.metric_name(), "up");
        let e = parse_openmetrics("up 1\n").unwrap_err();
        assert_eq!(e.line, 1);
    }
}
