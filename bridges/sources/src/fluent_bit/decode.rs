//! Pure decoding of Fluent Bit `http` output bodies (after gunzip): `json`
//! (one array of records) and `json_lines` (one record per line; records
//! concatenated on one line, `json_stream`, are read too).
//!
//! Per record (FORMATS.md §3.4): the date key Fluent Bit inserts first
//! (`date` by default, `Json_Date_Key`) as a double (`%.16g`, `N.0`), epoch
//! seconds or milliseconds, `iso8601` or `java_sql_timestamp`; the runtime's
//! `time` (RFC3339Nano), `stream`, CRI `_p`, `log`, the `kubernetes` filter's
//! map, and any other keys (e.g. lifted by `Merge_Log`), kept as fields.
//!
//! Time: the date key, or the `time` field when it is the same instant to
//! the millisecond (it has nanoseconds; the date key microseconds). Without
//! a readable date key: the `time` field, then the receive time — counted
//! (`time_fallback`, `time_receive`), never dropped.
//!
//! A record that cannot be used is counted with its reason and position and
//! skipped; its neighbours are kept. A body with no JSON at all is an error.

use kube_insight_core::entity::Workload;
use kube_insight_core::log::{
    extract_level, parse_timestamp_ns, truncate_utf8, workload_of, LogRecord, LogStreamKey,
    LogStreamMeta, StdStream, MAX_FIELDS_BYTES, MAX_KEY_BYTES, MAX_LINE_BYTES,
};
use kube_insight_core::Level;
use kube_insight_store::LogStreamBatch;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use std::collections::HashMap;
use std::fmt;
use thiserror::Error;

/// How bodies are read.
#[derive(Debug, Clone)]
pub struct DecodeOptions {
    /// Names accepted for the date key, which Fluent Bit puts first in each
    /// record (`Json_Date_Key`; default `date`).
    pub date_keys: Vec<String>,
    /// Malformed records described in [`Decoded::malformed`] (all are counted).
    pub max_reported: usize,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        DecodeOptions {
            date_keys: ["date", "ts", "timestamp", "@timestamp"]
                .map(String::from)
                .to_vec(),
            max_reported: 10,
        }
    }
}

/// A body that cannot be read at all (answered 400).
#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("fluent bit body is not JSON ({detail}); set the http output's Format to json_lines or json")]
    NotJson { detail: String },
    #[error("fluent bit json body: {detail}")]
    BrokenArray { detail: String },
}

/// One skipped record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed {
    /// 1-based position of the record in the body (line for `json_lines`).
    pub position: usize,
    /// `snake_case` reason, as counted on `/metrics`.
    pub reason: &'static str,
    pub detail: String,
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "record {}: {}", self.position, self.detail)
    }
}

/// What a body held.
#[derive(Debug, Default)]
pub struct Decoded {
    /// Records grouped by stream, in the order streams first appear; each
    /// stream's records in body order. `key.cluster` is left empty.
    pub streams: Vec<LogStreamBatch>,
    pub records: usize,
    /// The first few skipped records.
    pub malformed: Vec<Malformed>,
    /// Skipped records by reason.
    pub malformed_counts: Vec<(&'static str, u64)>,
    /// Records timed by their `time` field (no readable date key).
    pub time_fallback: u64,
    /// Records timed at receipt (neither date key nor `time` readable).
    pub time_receive: u64,
    /// Lines cut at [`MAX_LINE_BYTES`].
    pub truncated: u64,
    /// Records without kubernetes metadata (kept under empty key parts).
    pub no_kubernetes: u64,
}

impl Decoded {
    pub fn malformed_total(&self) -> u64 {
        self.malformed_counts.iter().map(|(_, n)| n).sum()
    }
}

/// Decodes a body received at `receive_ns` (epoch nanoseconds).
pub fn decode(body: &[u8], receive_ns: i64, opts: &DecodeOptions) -> Result<Decoded, DecodeError> {
    let mut acc = Accumulator {
        out: Decoded::default(),
        index: HashMap::new(),
        opts,
        receive_ns,
    };
    let start = body.iter().position(|b| !b.is_ascii_whitespace());
    match start.map(|i| body[i]) {
        None => {}
        Some(b'[') => {
            let mut de = serde_json::Deserializer::from_slice(body);
            let seq = ArraySeed { acc: &mut acc };
            de.deserialize_seq(seq)
                .and_then(|()| de.end())
                .map_err(|e| DecodeError::BrokenArray {
                    detail: e.to_string(),
                })?;
        }
        Some(_) => decode_lines(body, &mut acc)?,
    }
    Ok(acc.out)
}

fn decode_lines(body: &[u8], acc: &mut Accumulator<'_>) -> Result<(), DecodeError> {
    let mut position = 0;
    let mut any_json = false;
    let mut first_error = None;
    for line in body.split(|&b| b == b'\n') {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        // `json_stream` puts several records on one line.
        let mut stream =
            serde_json::Deserializer::from_slice(line).into_iter::<Tolerant<RawRecord>>();
        loop {
            match stream.next() {
                None => break,
                Some(Ok(rec)) => {
                    any_json = true;
                    position += 1;
                    acc.push(position, rec.0);
                }
                Some(Err(e)) => {
                    position += 1;
                    let detail = format!("invalid JSON: {e}");
                    first_error.get_or_insert_with(|| detail.clone());
                    acc.malformed(position, "invalid_json", detail);
                    break;
                }
            }
        }
    }
    if !any_json {
        if let Some(detail) = first_error {
            return Err(DecodeError::NotJson { detail });
        }
    }
    Ok(())
}

struct Accumulator<'o> {
    out: Decoded,
    index: HashMap<(String, String, String), usize>,
    opts: &'o DecodeOptions,
    receive_ns: i64,
}

impl Accumulator<'_> {
    fn malformed(&mut self, position: usize, reason: &'static str, detail: String) {
        match self
            .out
            .malformed_counts
            .iter_mut()
            .find(|(r, _)| *r == reason)
        {
            Some((_, n)) => *n += 1,
            None => self.out.malformed_counts.push((reason, 1)),
        }
        if self.out.malformed.len() < self.opts.max_reported {
            self.out.malformed.push(Malformed {
                position,
                reason,
                detail,
            });
        }
    }

    fn push(&mut self, position: usize, rec: Result<RawRecord, &'static str>) {
        let rec = match rec {
            Ok(r) => r.resolve(&self.opts.date_keys),
            Err(reason) => {
                let detail = match reason {
                    "not_an_object" => "a record must be a JSON object".to_string(),
                    other => other.to_string(),
                };
                return self.malformed(position, reason, detail);
            }
        };
        // The line: `log`, or the record's other fields when `log` was
        // removed (`Merge_Log On` + `Keep_Log Off`).
        let (mut line, extras_are_line) = match rec.log {
            Some(l) => (l, false),
            None if !rec.extras.is_empty() => (String::new(), true),
            None => {
                return self.malformed(
                    position,
                    "missing_log",
                    "the record has no `log` field and no other content".into(),
                );
            }
        };
        let kube = rec.kube.unwrap_or_default();
        let (ns, pod, container) = (
            kube.namespace_name.unwrap_or_default(),
            kube.pod_name.unwrap_or_default(),
            kube.container_name.unwrap_or_default(),
        );
        if ns.len() > MAX_KEY_BYTES || pod.len() > MAX_KEY_BYTES || container.len() > MAX_KEY_BYTES
        {
            return self.malformed(
                position,
                "key_too_long",
                format!("namespace, pod or container name longer than {MAX_KEY_BYTES} bytes"),
            );
        }
        if pod.is_empty() {
            self.out.no_kubernetes += 1;
        }
        let fields = bounded_fields(&rec.extras);
        if extras_are_line {
            line = fields.clone().unwrap_or_default();
        }
        if line.ends_with('\n') {
            line.pop();
            if line.ends_with('\r') {
                line.pop();
            }
        }
        let truncated = truncate_utf8(&mut line, MAX_LINE_BYTES);
        if truncated {
            self.out.truncated += 1;
        }
        let date_ns = rec.date.and_then(DateVal::into_ns);
        let time_ns = rec.time.as_deref().and_then(parse_timestamp_ns);
        let timestamp_ns = match (date_ns, time_ns) {
            (Some(d), Some(t)) if (d - t).abs() < 1_000_000 => t,
            (Some(d), _) => d,
            (None, Some(t)) => {
                self.out.time_fallback += 1;
                t
            }
            (None, None) => {
                self.out.time_fallback += 1;
                self.out.time_receive += 1;
                self.receive_ns
            }
        };
        let level = rec
            .level
            .as_deref()
            .and_then(Level::parse)
            .or_else(|| extract_level(&line));
        let record = LogRecord {
            timestamp_ns,
            stream: rec
                .stream
                .as_deref()
                .and_then(StdStream::parse)
                .unwrap_or_default(),
            partial: rec.partial.as_deref() == Some("P"),
            truncated,
            level,
            fields: if extras_are_line { None } else { fields },
            line,
        };
        self.out.records += 1;
        let k = (ns, pod, container);
        let i = match self.index.get(&k) {
            Some(&i) => i,
            None => {
                let mut meta = LogStreamMeta {
                    node: bounded(kube.host),
                    image: bounded(kube.container_image),
                    pod_id: bounded(kube.pod_id),
                    container_id: bounded(kube.docker_id),
                    ..Default::default()
                };
                for (name, value) in &kube.labels {
                    meta.insert_label(name, value);
                }
                meta.workload = kube
                    .owner
                    .and_then(|(kind, name)| owner_workload(&kind, &name, &meta))
                    .or_else(|| workload_of(&k.1, &meta.labels));
                self.out.streams.push(LogStreamBatch {
                    key: LogStreamKey::new("", k.0.clone(), k.1.clone(), k.2.clone()),
                    meta,
                    records: Vec::new(),
                });
                let i = self.out.streams.len() - 1;
                self.index.insert(k, i);
                i
            }
        };
        self.out.streams[i].records.push(record);
    }
}

fn bounded(s: Option<String>) -> String {
    let mut s = s.unwrap_or_default();
    truncate_utf8(&mut s, MAX_KEY_BYTES);
    s
}

/// The workload from an owner reference: a ReplicaSet of a Deployment is
/// the Deployment (its name minus `-<pod-template-hash>`).
fn owner_workload(kind: &str, name: &str, meta: &LogStreamMeta) -> Option<Workload> {
    if kind.is_empty() || name.is_empty() {
        return None;
    }
    if kind == "ReplicaSet" {
        if let Some(hash) = meta.labels.get("pod-template-hash") {
            if let Some(dep) = name
                .strip_suffix(hash.as_str())
                .and_then(|d| d.strip_suffix('-'))
            {
                return Some(Workload {
                    kind: "Deployment".into(),
                    name: dep.into(),
                });
            }
        }
    }
    if kind == "Job" {
        // Labels tell CronJob Jobs apart; reuse the label rules.
        if let Some(w) = workload_of("", &meta.labels).filter(|w| w.kind == "CronJob") {
            return Some(w);
        }
    }
    Some(Workload {
        kind: kind.into(),
        name: name.into(),
    })
}

/// Extra fields as one JSON object of at most [`MAX_FIELDS_BYTES`]; keys
/// that do not fit are left out.
fn bounded_fields(extras: &[(String, serde_json::Value)]) -> Option<String> {
    if extras.is_empty() {
        return None;
    }
    let mut out = String::from("{");
    for (k, v) in extras {
        let (Ok(k), Ok(v)) = (serde_json::to_string(k), serde_json::to_string(v)) else {
            continue;
        };
        if out.len() + k.len() + v.len() + 2 + 1 > MAX_FIELDS_BYTES {
            continue;
        }
        if out.len() > 1 {
            out.push(',');
        }
        out.push_str(&k);
        out.push(':');
        out.push_str(&v);
    }
    out.push('}');
    Some(out)
}

// ---------------------------------------------------------------------------
// Tolerant deserialization: a record of the wrong shape is an `Err(reason)`
// value, not a parse error, so the rest of the body is still read.

#[derive(Default)]
struct RawRecord {
    date: Option<DateVal>,
    time: Option<String>,
    stream: Option<String>,
    partial: Option<String>,
    log: Option<String>,
    level: Option<String>,
    kube: Option<Kube>,
    extras: Vec<(String, serde_json::Value)>,
    first: Option<(String, serde_json::Value)>,
}

/// Keys of a record that are not kept as fields.
const RESERVED: [&str; 6] = [
    "time",
    "stream",
    "_p",
    "log",
    "kubernetes",
    "kubernetes_namespace",
];
/// Extra keys kept per record (the rest are dropped before the byte bound).
const MAX_EXTRA_KEYS: usize = 64;

enum DateVal {
    Float(f64),
    Int(i64),
    Text(String),
}

impl DateVal {
    fn of(v: serde_json::Value) -> Option<DateVal> {
        match v {
            serde_json::Value::Number(n) => match n.as_i64() {
                Some(i) => Some(DateVal::Int(i)),
                None => n.as_f64().map(DateVal::Float),
            },
            serde_json::Value::String(s) => Some(DateVal::Text(s)),
            _ => None,
        }
    }

    fn into_ns(self) -> Option<i64> {
        match self {
            // `%.16g` seconds: microseconds at most; rounding to them undoes
            // the binary fraction.
            // Bounded so that nanoseconds fit an i64 (until 2255).
            DateVal::Float(f) if f.is_finite() && f.abs() < 9.0e9 => {
                Some((f * 1e6).round() as i64 * 1000)
            }
            DateVal::Float(_) => None,
            DateVal::Int(i) => {
                let a = i.unsigned_abs();
                Some(if a < 100_000_000_000 {
                    i.saturating_mul(1_000_000_000) // epoch seconds
                } else if a < 100_000_000_000_000 {
                    i.saturating_mul(1_000_000) // epoch_ms
                } else if a < 100_000_000_000_000_000 {
                    i.saturating_mul(1_000) // µs
                } else {
                    i // ns
                })
            }
            DateVal::Text(s) => parse_timestamp_ns(&s).or_else(|| {
                // A number sent as a string.
                s.trim()
                    .parse::<f64>()
                    .ok()
                    .and_then(|f| DateVal::Float(f).into_ns())
            }),
        }
    }
}

/// `T` or the reason the value was not a `T`.
struct Tolerant<T>(Result<T, &'static str>);

impl<'de> Deserialize<'de> for Tolerant<RawRecord> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(RecordVisitor).map(Tolerant)
    }
}

struct RecordVisitor;

macro_rules! reject_scalars {
    ($reason:expr; $($m:ident: $t:ty),*) => {
        $(fn $m<E: de::Error>(self, _: $t) -> Result<Self::Value, E> { Ok(Err($reason)) })*
    };
}

impl<'de> Visitor<'de> for RecordVisitor {
    type Value = Result<RawRecord, &'static str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a fluent bit record (a JSON object)")
    }

    reject_scalars!("not_an_object"; visit_bool: bool, visit_i64: i64, visit_u64: u64, visit_f64: f64, visit_str: &str);

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Err("not_an_object"))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Err("not_an_object"))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut r = RawRecord::default();
        let mut first = true;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if std::mem::take(&mut first) {
                // Maybe the date key: decided with the options, in `resolve`.
                let v: serde_json::Value = map.next_value()?;
                r.first = Some((key.into_owned(), v));
                continue;
            }
            match key.as_ref() {
                "time" => r.time = map.next_value::<OptStr>()?.0,
                "stream" => r.stream = map.next_value::<OptStr>()?.0,
                "_p" => r.partial = map.next_value::<OptStr>()?.0,
                "log" => r.log = map.next_value::<LogText>()?.0,
                "kubernetes" => r.kube = map.next_value::<OptKube>()?.0,
                "kubernetes_namespace" => {
                    map.next_value::<IgnoredAny>()?;
                }
                k => {
                    let v: serde_json::Value = map.next_value()?;
                    r.extra(k, v);
                }
            }
        }
        Ok(Ok(r))
    }
}

impl RawRecord {
    fn extra(&mut self, k: &str, v: serde_json::Value) {
        if matches!(k, "level" | "severity" | "lvl" | "log.level") && self.level.is_none() {
            self.level = v.as_str().map(str::to_string);
        }
        if self.extras.len() < MAX_EXTRA_KEYS && !RESERVED.contains(&k) {
            self.extras.push((k.to_string(), v));
        }
    }

    /// Places the first key: the date key when its name is one of
    /// `date_keys` (Fluent Bit inserts it first), else an ordinary key.
    fn resolve(mut self, date_keys: &[String]) -> Self {
        let Some((k, v)) = self.first.take() else {
            return self;
        };
        if date_keys.contains(&k) {
            self.date = DateVal::of(v);
            return self;
        }
        let text = |v: serde_json::Value| match v {
            serde_json::Value::String(s) => Some(s),
            _ => None,
        };
        match k.as_str() {
            "time" => self.time = text(v),
            "stream" => self.stream = text(v),
            "_p" => self.partial = text(v),
            "log" => self.log = LogText::of(v),
            "kubernetes" => self.kube = serde_json::from_value::<OptKube>(v).ok().and_then(|k| k.0),
            "kubernetes_namespace" => {}
            other => self.extra(other, v),
        }
        // Keep the record's key order for fields: the first key leads.
        if let Some(last) = self.extras.pop() {
            if last.0 == k {
                self.extras.insert(0, last);
            } else {
                self.extras.push(last);
            }
        }
        self
    }
}

struct ArraySeed<'a, 'o> {
    acc: &'a mut Accumulator<'o>,
}

impl<'de> DeserializeSeed<'de> for ArraySeed<'_, '_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for ArraySeed<'_, '_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON array of fluent bit records")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut position = 0;
        while let Some(rec) = seq.next_element::<Tolerant<RawRecord>>()? {
            position += 1;
            self.acc.push(position, rec.0);
        }
        Ok(())
    }
}

/// A string, or `None` for any other JSON value.
struct OptStr(Option<String>);

impl<'de> Deserialize<'de> for OptStr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OptStr;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<OptStr, E> {
                Ok(OptStr(Some(v.to_string())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<OptStr, E> {
                Ok(OptStr(Some(v)))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<OptStr, E> {
                Ok(OptStr(None))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<OptStr, E> {
                Ok(OptStr(None))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<OptStr, E> {
                Ok(OptStr(None))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<OptStr, E> {
                Ok(OptStr(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<OptStr, E> {
                Ok(OptStr(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<OptStr, A::Error> {
                while s.next_element::<IgnoredAny>()?.is_some() {}
                Ok(OptStr(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<OptStr, A::Error> {
                while m.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(OptStr(None))
            }
        }
        d.deserialize_any(V)
    }
}

/// `log`: a string, or any other JSON value as its JSON text.
struct LogText(Option<String>);

impl LogText {
    fn of(v: serde_json::Value) -> Option<String> {
        match v {
            serde_json::Value::String(s) => Some(s),
            serde_json::Value::Null => None,
            other => Some(other.to_string()),
        }
    }
}

impl<'de> Deserialize<'de> for LogText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(LogText(LogText::of(serde_json::Value::deserialize(d)?)))
    }
}

#[derive(Default)]
struct Kube {
    pod_name: Option<String>,
    namespace_name: Option<String>,
    container_name: Option<String>,
    pod_id: Option<String>,
    host: Option<String>,
    docker_id: Option<String>,
    container_image: Option<String>,
    labels: Vec<(String, String)>,
    owner: Option<(String, String)>,
}

struct OptKube(Option<Kube>);

impl<'de> Deserialize<'de> for OptKube {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OptKube;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("the kubernetes filter's map")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<OptKube, A::Error> {
                let mut k = Kube::default();
                while let Some(key) = m.next_key::<std::borrow::Cow<'de, str>>()? {
                    match key.as_ref() {
                        "pod_name" => k.pod_name = m.next_value::<OptStr>()?.0,
                        "namespace_name" => k.namespace_name = m.next_value::<OptStr>()?.0,
                        "container_name" => k.container_name = m.next_value::<OptStr>()?.0,
                        "pod_id" => k.pod_id = m.next_value::<OptStr>()?.0,
                        "host" => k.host = m.next_value::<OptStr>()?.0,
                        "docker_id" => k.docker_id = m.next_value::<OptStr>()?.0,
                        "container_image" => k.container_image = m.next_value::<OptStr>()?.0,
                        "labels" => {
                            if let serde_json::Value::Object(o) =
                                m.next_value::<serde_json::Value>()?
                            {
                                k.labels = o
                                    .into_iter()
                                    .filter_map(|(n, v)| match v {
                                        serde_json::Value::String(s) => Some((n, s)),
                                        _ => None,
                                    })
                                    .collect();
                            }
                        }
                        "ownerReferences" => {
                            if let serde_json::Value::Array(refs) =
                                m.next_value::<serde_json::Value>()?
                            {
                                let pick = refs
                                    .iter()
                                    .find(|r| {
                                        r.get("controller").and_then(serde_json::Value::as_bool)
                                            == Some(true)
                                    })
                                    .or_else(|| refs.first());
                                k.owner = pick.and_then(|r| {
                                    Some((
                                        r.get("kind")?.as_str()?.to_string(),
                                        r.get("name")?.as_str()?.to_string(),
                                    ))
                                });
                            }
                        }
                        _ => {
                            m.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(OptKube(Some(k)))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<OptKube, E> {
                Ok(OptKube(None))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<OptKube, E> {
                Ok(OptKube(None))
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<OptKube, E> {
                Ok(OptKube(None))
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<OptKube, E> {
                Ok(OptKube(None))
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<OptKube, E> {
                Ok(OptKube(None))
            }
            fn visit_unit<E: de::Error>(self) -> Result<OptKube, E> {
                Ok(OptKube(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<OptKube, A::Error> {
                while s.next_element::<IgnoredAny>()?.is_some() {}
                Ok(OptKube(None))
            }
        }
        d.deserialize_any(V)
    }
}
