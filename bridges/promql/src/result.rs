//! Query results, serialised exactly like the `data` member of Prometheus'
//! `/api/v1/query` and `/api/v1/query_range` answers.

use kube_insight_core::Labels;
use serde::ser::{SerializeMap, SerializeSeq, SerializeStruct};
use serde::{Serialize, Serializer};

/// One sample of an instant vector.
#[derive(Clone, Debug, PartialEq)]
pub struct InstantSample {
    pub labels: Labels,
    pub timestamp_ms: i64,
    pub value: f64,
}

/// One series of a range vector (matrix).
#[derive(Clone, Debug, PartialEq)]
pub struct RangeSeries {
    pub labels: Labels,
    /// (timestamp ms, value), ascending.
    pub points: Vec<(i64, f64)>,
}

/// The result of `query` / `query_range`. Serialises to
/// `{"resultType":"vector","result":[…]}` and so on; the HTTP layer wraps it
/// in `{"status":"success","data":…}`.
///
/// Timestamps are written as Prometheus writes them (`1700000000`,
/// `1700000000.5` → `1700000000.500`) through `serde_json`'s raw values, so
/// serialise with `serde_json`.
#[derive(Clone, Debug, PartialEq)]
pub enum QueryResult {
    Vector(Vec<InstantSample>),
    Matrix(Vec<RangeSeries>),
    Scalar { timestamp_ms: i64, value: f64 },
    String { timestamp_ms: i64, value: String },
}

impl QueryResult {
    /// `vector`, `matrix`, `scalar` or `string`.
    pub fn result_type(&self) -> &'static str {
        match self {
            QueryResult::Vector(_) => "vector",
            QueryResult::Matrix(_) => "matrix",
            QueryResult::Scalar { .. } => "scalar",
            QueryResult::String { .. } => "string",
        }
    }
}

/// Prometheus' sample value text (jsonutil.MarshalValue): the shortest
/// round-trip form, `strconv.AppendFloat(v, 'f', -1, 64)`, switching to the
/// `'e'` form (`3.5e-07`, `1e+21`) when |v| < 1e-6 or |v| ≥ 1e21; `NaN`,
/// `+Inf` and `-Inf`.
pub fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_string()
    } else if v == f64::INFINITY {
        "+Inf".to_string()
    } else if v == f64::NEG_INFINITY {
        "-Inf".to_string()
    } else if v != 0.0 && (v.abs() < 1e-6 || v.abs() >= 1e21) {
        // Rust's `{:e}` is shortest round-trip too, but writes `e-7` where Go
        // writes `e-07`, and `e21` where Go writes `e+21`.
        let s = format!("{v:e}");
        match s.split_once('e') {
            Some((m, e)) => {
                let (sign, digits) = match e.strip_prefix('-') {
                    Some(d) => ('-', d),
                    None => ('+', e),
                };
                if digits.len() < 2 {
                    format!("{m}e{sign}0{digits}")
                } else {
                    format!("{m}e{sign}{digits}")
                }
            }
            None => s,
        }
    } else {
        // Rust's Display is the shortest round-trip form without an exponent,
        // as Go's 'f' format with precision -1.
        format!("{v}")
    }
}

/// Prometheus' timestamp text (jsonutil.MarshalTimestamp): seconds, and when
/// the milliseconds are not zero, a dot and exactly three digits.
pub fn format_timestamp(ms: i64) -> String {
    let neg = ms < 0;
    let a = ms.unsigned_abs();
    let secs = a / 1000;
    let frac = a % 1000;
    let sign = if neg { "-" } else { "" };
    if frac == 0 {
        format!("{sign}{secs}")
    } else {
        format!("{sign}{secs}.{frac:03}")
    }
}

struct Ts(i64);

impl Serialize for Ts {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match serde_json::value::RawValue::from_string(format_timestamp(self.0)) {
            Ok(raw) => raw.serialize(s),
            Err(_) => s.serialize_f64(self.0 as f64 / 1000.0),
        }
    }
}

/// `[ts, "value"]`.
struct Point<'a>(i64, &'a str);

impl Serialize for Point<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(2))?;
        seq.serialize_element(&Ts(self.0))?;
        seq.serialize_element(self.1)?;
        seq.end()
    }
}

struct VectorElem<'a>(&'a InstantSample);

impl Serialize for VectorElem<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_struct("Sample", 2)?;
        m.serialize_field("metric", &self.0.labels)?;
        m.serialize_field(
            "value",
            &Point(self.0.timestamp_ms, &format_value(self.0.value)),
        )?;
        m.end()
    }
}

struct Values<'a>(&'a [(i64, f64)]);

impl Serialize for Values<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for (t, v) in self.0 {
            seq.serialize_element(&Point(*t, &format_value(*v)))?;
        }
        seq.end()
    }
}

struct MatrixElem<'a>(&'a RangeSeries);

impl Serialize for MatrixElem<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_struct("Series", 2)?;
        m.serialize_field("metric", &self.0.labels)?;
        m.serialize_field("values", &Values(&self.0.points))?;
        m.end()
    }
}

struct Elems<'a, T>(&'a [T]);

impl Serialize for Elems<'_, InstantSample> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for e in self.0 {
            seq.serialize_element(&VectorElem(e))?;
        }
        seq.end()
    }
}

impl Serialize for Elems<'_, RangeSeries> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(self.0.len()))?;
        for e in self.0 {
            seq.serialize_element(&MatrixElem(e))?;
        }
        seq.end()
    }
}

impl Serialize for QueryResult {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry("resultType", self.result_type())?;
        match self {
            QueryResult::Vector(v) => m.serialize_entry("result", &Elems(v))?,
            QueryResult::Matrix(v) => m.serialize_entry("result", &Elems(v))?,
            QueryResult::Scalar {
                timestamp_ms,
                value,
            } => m.serialize_entry("result", &Point(*timestamp_ms, &format_value(*value)))?,
            QueryResult::String {
                timestamp_ms,
                value,
            } => m.serialize_entry("result", &Point(*timestamp_ms, value))?,
        }
        m.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_format_like_go() {
        assert_eq!(format_value(1.0), "1");
        assert_eq!(format_value(0.1), "0.1");
        assert_eq!(format_value(1e21), "1e+21");
        assert_eq!(format_value(9.5e20), "950000000000000000000");
        assert_eq!(format_value(1.5e-7), "1.5e-07");
        assert_eq!(
            format_value(-3.3372793881031496e-7),
            "-3.3372793881031496e-07"
        );
        assert_eq!(format_value(1e-6), "0.000001");
        assert_eq!(format_value(1.5e300), "1.5e+300");
        assert_eq!(format_value(2.5e-300), "2.5e-300");
        assert_eq!(format_value(0.0), "0");
        assert_eq!(format_value(-0.0), "-0");
        assert_eq!(format_value(f64::NAN), "NaN");
        assert_eq!(format_value(f64::INFINITY), "+Inf");
        assert_eq!(format_value(f64::NEG_INFINITY), "-Inf");
        assert_eq!(format_timestamp(1_700_000_000_000), "1700000000");
        assert_eq!(format_timestamp(1_700_000_000_500), "1700000000.500");
        assert_eq!(format_timestamp(1_700_000_000_007), "1700000000.007");
        assert_eq!(format_timestamp(-1_500), "-1.500");
    }

    #[test]
    fn serialises_every_result_type_like_prometheus() {
        let l = Labels::from_pairs([("__name__", "up"), ("job", "x")]);
        let v = QueryResult::Vector(vec![InstantSample {
            labels: l.clone(),
            timestamp_ms: 1_435_781_451_781,
            value: 1.0,
        }]);
        assert_eq!(
            serde_json::to_string(&v).unwrap(),
            r#"{"resultType":"vector","result":[{"metric":{"__name__":"up","job":"x"},"value":[1435781451.781,"1"]}]}"#
        );
        let m = QueryResult::Matrix(vec![RangeSeries {
            labels: l,
            points: vec![(1_000, f64::NAN), (2_000, f64::INFINITY)],
        }]);
        assert_eq!(
            serde_json::to_string(&m).unwrap(),
            r#"{"resultType":"matrix","result":[{"metric":{"__name__":"up","job":"x"},"values":[[1,"NaN"],[2,"+Inf"]]}]}"#
        );
        let s = QueryResult::Scalar {
            timestamp_ms: 1_000,
            value: -2.5,
        };
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            r#"{"resultType":"scalar","result":[1,"-2.5"]}"#
        );
        let st = QueryResult::String {
            timestamp_ms: 1_000,
            value: "a\"b".into(),
        };
        assert_eq!(
            serde_json::to_string(&st).unwrap(),
            r#"{"resultType":"string","result":[1,"a\"b"]}"#
        );
        assert_eq!(
            serde_json::to_string(&QueryResult::Vector(vec![])).unwrap(),
            r#"{"resultType":"vector","result":[]}"#
        );
    }
}
