//! Parsing of the Prometheus HTTP API's parameters, with its rules.

use crate::engine::selector_matchers;
use crate::error::PromqlError;
use crate::eval::Result;
use kube_insight_core::Matcher;
use promql_parser::parser::Expr;
use std::time::Duration;

/// Most points a range query may return per series (Prometheus' rule).
pub const MAX_POINTS_PER_SERIES: i64 = 11_000;

/// Parses a `time`, `start` or `end` parameter as Prometheus does: a float
/// of Unix seconds (milliseconds kept, rounded) or RFC 3339. `param` names
/// the parameter in the error.
pub fn parse_time_param(param: &str, value: &str) -> Result<i64> {
    let s = value.trim();
    if let Ok(f) = s.parse::<f64>() {
        if f.is_finite() {
            let secs = f.trunc();
            let frac = ((f - secs) * 1000.0).round();
            let ms = secs * 1000.0 + frac;
            if ms.abs() < 9.2e18 {
                return Ok(ms as i64);
            }
        }
        return Err(PromqlError::param(
            param,
            format!("cannot parse {value:?} to a valid timestamp"),
        ));
    }
    if s.is_empty() || !s.contains('T') {
        return Err(PromqlError::param(
            param,
            format!("cannot parse {value:?} to a valid timestamp"),
        ));
    }
    kube_insight_core::parse_time_ms(s).map_err(|_| {
        PromqlError::param(
            param,
            format!("cannot parse {value:?} to a valid timestamp"),
        )
    })
}

/// Parses a duration parameter (`step`, `timeout`): float seconds or a
/// Prometheus duration (`15s`, `1m30s`, `2h`).
pub fn parse_duration_param(param: &str, value: &str) -> Result<Duration> {
    let s = value.trim();
    if let Ok(f) = s.parse::<f64>() {
        if !f.is_finite() || f.abs() * 1e9 > i64::MAX as f64 {
            return Err(PromqlError::param(
                param,
                format!("cannot parse {value:?} to a valid duration, it overflows int64"),
            ));
        }
        if f < 0.0 {
            // Negative durations only matter for `step`, which rejects them below.
            return Ok(Duration::ZERO);
        }
        return Ok(Duration::from_secs_f64(f));
    }
    if s.starts_with(|c: char| c.is_ascii_digit()) {
        if let Ok(d) = kube_insight_core::parse_duration(s) {
            return Ok(d);
        }
    }
    Err(PromqlError::param(
        param,
        format!("cannot parse {value:?} to a valid duration"),
    ))
}

/// Parses and validates `start`, `end` and `step` of `/api/v1/query_range`:
/// end not before start, step > 0, at most 11,000 points per series.
/// Returns (start ms, end ms, step ms).
pub fn parse_range_params(start: &str, end: &str, step: &str) -> Result<(i64, i64, i64)> {
    let s = parse_time_param("start", start)?;
    let e = parse_time_param("end", end)?;
    if e < s {
        return Err(PromqlError::param(
            "end",
            "end timestamp must not be before start time",
        ));
    }
    let negative = step.trim().parse::<f64>().is_ok_and(|f| f < 0.0);
    let st = parse_duration_param("step", step)?;
    let step_ms = st.as_millis() as i64;
    if negative || step_ms <= 0 {
        return Err(PromqlError::param(
            "step",
            format!("zero or negative query resolution step widths are not accepted, try a positive integer (got {step:?})"),
        ));
    }
    validate_range(s, e, step_ms)?;
    Ok((s, e, step_ms))
}

/// The 11,000 points rule of Prometheus (`(end - start) / step > 11000` fails).
pub fn validate_range(start_ms: i64, end_ms: i64, step_ms: i64) -> Result<()> {
    if step_ms <= 0 {
        return Err(PromqlError::param(
            "step",
            "zero or negative query resolution step widths are not accepted, try a positive integer",
        ));
    }
    if end_ms < start_ms {
        return Err(PromqlError::param(
            "end",
            "end timestamp must not be before start time",
        ));
    }
    if (end_ms - start_ms) / step_ms > MAX_POINTS_PER_SERIES {
        return Err(PromqlError::param(
            "step",
            format!("exceeded maximum resolution of 11,000 points per timeseries, try decreasing the query resolution (?step=XX): {} points from start {start_ms} to end {end_ms} at step {step_ms} ms", (end_ms - start_ms) / step_ms + 1),
        ));
    }
    Ok(())
}

/// Parses one `match[]` selector (`up{job="x"}`, `{__name__=~"go_.*"}`)
/// into matchers. `bad_data` unless it is a plain instant selector with at
/// least one matcher that does not match the empty string.
pub fn parse_match_selector(selector: &str) -> Result<Vec<Matcher>> {
    let bad = |reason: String| PromqlError::param("match[]", format!("{selector:?}: {reason}"));
    let e = promql_parser::parser::parse(selector)
        .map_err(|r| bad(r.trim_end_matches('.').to_string()))?;
    match e {
        Expr::VectorSelector(vs) => {
            if vs.offset.is_some() || vs.at.is_some() {
                return Err(bad(
                    "offset and @ are not allowed in a series selector".into()
                ));
            }
            if !vs.matchers.or_matchers.is_empty() {
                return Err(bad("\"or\" inside label matchers is not supported".into()));
            }
            let m = selector_matchers(&vs).map_err(|e| bad(e.to_string()))?;
            if m.iter().all(|m| m.matches_empty()) {
                return Err(bad(
                    "match[] must contain at least one non-empty matcher".into()
                ));
            }
            Ok(m)
        }
        _ => Err(bad(
            "expected a series selector such as up{job=\"x\"}".into()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_insight_core::MatchOp;

    #[test]
    fn times_as_prometheus_reads_them() {
        assert_eq!(
            parse_time_param("time", "1700000000").unwrap(),
            1_700_000_000_000
        );
        assert_eq!(
            parse_time_param("time", "1700000000.123").unwrap(),
            1_700_000_000_123
        );
        assert_eq!(
            parse_time_param("time", "2023-11-14T22:13:20Z").unwrap(),
            1_700_000_000_000
        );
        assert_eq!(
            parse_time_param("time", "2023-11-14T22:13:20.5Z").unwrap(),
            1_700_000_000_500
        );
        let e = parse_time_param("start", "yesterday").unwrap_err();
        assert_eq!(e.error_type().as_str(), "bad_data");
        assert!(
            e.to_string().contains("\"start\"") && e.to_string().contains("\"yesterday\""),
            "{e}"
        );
    }

    #[test]
    fn durations_and_steps() {
        assert_eq!(
            parse_duration_param("step", "15").unwrap(),
            Duration::from_secs(15)
        );
        assert_eq!(
            parse_duration_param("step", "0.5").unwrap(),
            Duration::from_millis(500)
        );
        assert_eq!(
            parse_duration_param("step", "1m30s").unwrap(),
            Duration::from_secs(90)
        );
        assert!(parse_duration_param("timeout", "soon").is_err());
        assert_eq!(
            parse_range_params("0", "60", "15s").unwrap(),
            (0, 60_000, 15_000)
        );
        let e = parse_range_params("0", "60", "0").unwrap_err().to_string();
        assert!(e.contains("zero or negative"), "{e}");
        assert!(parse_range_params("0", "60", "-5").is_err());
        let e = parse_range_params("60", "0", "1").unwrap_err().to_string();
        assert!(
            e.contains("end timestamp must not be before start time"),
            "{e}"
        );
        // 11,000 steps are fine, 11,001 are not.
        assert!(parse_range_params("0", "11000", "1").is_ok());
        let e = parse_range_params("0", "11001", "1")
            .unwrap_err()
            .to_string();
        assert!(e.contains("11,000"), "{e}");
    }

    #[test]
    fn match_selectors() {
        let m = parse_match_selector(r#"up{job="node",instance=~"a.*"}"#).unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].name, "__name__");
        assert_eq!(m[2].op, MatchOp::RegexMatch);
        assert!(parse_match_selector(r#"{__name__=~"go_.+"}"#).is_ok());
        for bad in [
            r#"{job=~".*"}"#,
            "up[5m]",
            "sum(up)",
            "up{",
            r#"up offset 5m"#,
        ] {
            let e = parse_match_selector(bad).unwrap_err();
            assert_eq!(e.error_type().as_str(), "bad_data", "{bad}");
            assert!(e.to_string().contains("match[]"), "{e}");
        }
    }
}
