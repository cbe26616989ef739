//! Prometheus remote write 1.0: a snappy **block** (not framed) holding a
//! protobuf `WriteRequest` (`prompb/remote.proto`, `prompb/types.proto`).
//!
//! [`decode`] checks the size the snappy header claims against a limit
//! before allocating, decompresses, decodes the protobuf, and turns every
//! series into a core [`TimeSeries`]. Its errors say which layer is at fault
//! ([`RemoteWriteError::kind`]) so the HTTP layer can answer 400 with the
//! reason.
//!
//! Series:
//! - a series without samples is skipped (senders may send one);
//! - labels are sorted and empty values dropped ([`Labels::new`]);
//! - a series with an invalid label name, an invalid or missing metric
//!   name, or a repeated label name is invalid: by default it is skipped and
//!   reported in [`WriteBatch::invalid`] while its neighbours are kept
//!   (Prometheus drops a whole batch for good on a 400, so one bad series
//!   must not cost the good ones); [`InvalidSeriesPolicy::Reject`] turns the
//!   first one into [`RemoteWriteError::InvalidSeries`] instead;
//! - sample values are kept bit-exact, so the staleness marker
//!   ([`kube_insight_core::STALE_NAN`]) survives;
//! - exemplars and native histograms are not decoded, only counted.

use kube_insight_core::labels::is_valid_label_name;
use kube_insight_core::{Label, Labels, Sample, TimeSeries, METRIC_NAME};
use prost::Message;
use std::fmt;

/// The default bound on the decompressed body: 64 MiB (a default Prometheus
/// batch of 2000 samples is well under 1 MiB).
pub const DEFAULT_MAX_DECOMPRESSED_BYTES: usize = 64 << 20;

/// The protobuf messages, written by hand (field numbers from `prompb`).
pub mod proto {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct WriteRequest {
        #[prost(message, repeated, tag = "1")]
        pub timeseries: Vec<TimeSeries>,
        #[prost(message, repeated, tag = "3")]
        pub metadata: Vec<MetricMetadata>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TimeSeries {
        #[prost(message, repeated, tag = "1")]
        pub labels: Vec<Label>,
        #[prost(message, repeated, tag = "2")]
        pub samples: Vec<Sample>,
        /// `Exemplar` messages, kept opaque.
        #[prost(bytes = "vec", repeated, tag = "3")]
        pub exemplars: Vec<Vec<u8>>,
        /// Native `Histogram` messages, kept opaque.
        #[prost(bytes = "vec", repeated, tag = "4")]
        pub histograms: Vec<Vec<u8>>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Label {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub value: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Sample {
        #[prost(double, tag = "1")]
        pub value: f64,
        #[prost(int64, tag = "2")]
        pub timestamp: i64,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct MetricMetadata {
        #[prost(enumeration = "MetricType", tag = "1")]
        pub r#type: i32,
        #[prost(string, tag = "2")]
        pub metric_family_name: String,
        #[prost(string, tag = "4")]
        pub help: String,
        #[prost(string, tag = "5")]
        pub unit: String,
    }

    #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
    #[repr(i32)]
    pub enum MetricType {
        Unknown = 0,
        Counter = 1,
        Gauge = 2,
        Histogram = 3,
        Gaugehistogram = 4,
        Summary = 5,
        Info = 6,
        Stateset = 7,
    }
}

pub use proto::MetricType;

/// Why a request cannot be decoded.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RemoteWriteError {
    #[error("corrupt snappy block: {0}")]
    CorruptSnappy(String),
    #[error(
        "decompressed body too large: the snappy header claims {claimed} bytes, the limit is {max}"
    )]
    TooLarge { claimed: usize, max: usize },
    #[error("corrupt protobuf write request: {0}")]
    CorruptProtobuf(String),
    #[error(transparent)]
    InvalidSeries(#[from] InvalidSeries),
}

impl RemoteWriteError {
    /// A stable snake_case name, for metrics and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            RemoteWriteError::CorruptSnappy(_) => "corrupt_snappy",
            RemoteWriteError::TooLarge { .. } => "too_large",
            RemoteWriteError::CorruptProtobuf(_) => "corrupt_protobuf",
            RemoteWriteError::InvalidSeries(_) => "invalid_series",
        }
    }
}

/// A series that was refused, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid series #{index} {series}: {reason}")]
pub struct InvalidSeries {
    /// Its 0-based position in the request.
    pub index: usize,
    /// Its labels as written, shortened for logs.
    pub series: String,
    pub reason: InvalidSeriesReason,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidSeriesReason {
    #[error("no __name__ label")]
    MissingMetricName,
    #[error("invalid metric name {0:?}")]
    InvalidMetricName(String),
    #[error("invalid label name {0:?}")]
    InvalidLabelName(String),
    #[error("duplicate label name {0:?}")]
    DuplicateLabelName(String),
}

/// What to do with an invalid series.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum InvalidSeriesPolicy {
    /// Skip it, report it in [`WriteBatch::invalid`], keep the others.
    #[default]
    Skip,
    /// Fail the whole request with [`RemoteWriteError::InvalidSeries`].
    Reject,
}

#[derive(Clone, Debug)]
pub struct DecodeOptions {
    /// Refuse bodies whose snappy header claims more decompressed bytes.
    pub max_decompressed_bytes: usize,
    pub invalid_series: InvalidSeriesPolicy,
    /// How many invalid series are kept in [`WriteBatch::invalid`] (all
    /// are counted).
    pub max_reported_invalid: usize,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        DecodeOptions {
            max_decompressed_bytes: DEFAULT_MAX_DECOMPRESSED_BYTES,
            invalid_series: InvalidSeriesPolicy::Skip,
            max_reported_invalid: 20,
        }
    }
}

/// Metadata of a metric family, as the sender reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Metadata {
    pub metric_family_name: String,
    /// Unknown enum values are kept as [`MetricType::Unknown`].
    pub metric_type: MetricType,
    pub help: String,
    pub unit: String,
}

/// A decoded request.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WriteBatch {
    /// The valid series that have samples, in request order.
    pub series: Vec<TimeSeries>,
    pub metadata: Vec<Metadata>,
    /// Samples in `series`.
    pub samples: usize,
    /// Series without samples, skipped.
    pub empty_series: usize,
    /// The first invalid series (see [`DecodeOptions::max_reported_invalid`]).
    pub invalid: Vec<InvalidSeries>,
    /// All invalid series, reported or not.
    pub invalid_total: usize,
    /// Samples of the invalid series, dropped.
    pub invalid_samples: usize,
    /// Exemplars seen and ignored.
    pub exemplars_ignored: usize,
    /// Native histogram samples seen and ignored.
    pub histograms_ignored: usize,
}

/// Decodes a remote write request body (snappy block + protobuf).
pub fn decode(body: &[u8], opts: &DecodeOptions) -> Result<WriteBatch, RemoteWriteError> {
    let raw = decompress(body, opts.max_decompressed_bytes)?;
    decode_protobuf(&raw, opts)
}

/// Decompresses a snappy block, refusing (before allocating) a body whose
/// header claims more than `max` bytes.
pub fn decompress(body: &[u8], max: usize) -> Result<Vec<u8>, RemoteWriteError> {
    if body.is_empty() {
        return Err(RemoteWriteError::CorruptSnappy("empty body".to_owned()));
    }
    let claimed = snap::raw::decompress_len(body)
        .map_err(|e| RemoteWriteError::CorruptSnappy(e.to_string()))?;
    if claimed > max {
        return Err(RemoteWriteError::TooLarge { claimed, max });
    }
    let mut out = vec![0u8; claimed];
    let n = snap::raw::Decoder::new()
        .decompress(body, &mut out)
        .map_err(|e| RemoteWriteError::CorruptSnappy(e.to_string()))?;
    out.truncate(n);
    Ok(out)
}

/// Decodes an uncompressed protobuf `WriteRequest`.
pub fn decode_protobuf(raw: &[u8], opts: &DecodeOptions) -> Result<WriteBatch, RemoteWriteError> {
    let req = proto::WriteRequest::decode(raw)
        .map_err(|e| RemoteWriteError::CorruptProtobuf(e.to_string()))?;
    convert(req, opts)
}

fn convert(req: proto::WriteRequest, opts: &DecodeOptions) -> Result<WriteBatch, RemoteWriteError> {
    let mut batch = WriteBatch {
        series: Vec::with_capacity(req.timeseries.len()),
        ..WriteBatch::default()
    };
    for (index, ts) in req.timeseries.into_iter().enumerate() {
        batch.exemplars_ignored += ts.exemplars.len();
        batch.histograms_ignored += ts.histograms.len();
        if ts.samples.is_empty() {
            batch.empty_series += 1;
            continue;
        }
        if let Err(reason) = validate(&ts.labels) {
            let invalid = InvalidSeries {
                index,
                series: describe_series(&ts.labels),
                reason,
            };
            if opts.invalid_series == InvalidSeriesPolicy::Reject {
                return Err(invalid.into());
            }
            batch.invalid_total += 1;
            batch.invalid_samples += ts.samples.len();
            if batch.invalid.len() < opts.max_reported_invalid {
                batch.invalid.push(invalid);
            }
            continue;
        }
        let labels = Labels::new(
            ts.labels
                .into_iter()
                .map(|l| Label {
                    name: l.name,
                    value: l.value,
                })
                .collect(),
        );
        let mut samples: Vec<Sample> = ts
            .samples
            .iter()
            .map(|s| Sample::new(s.timestamp, s.value))
            .collect();
        if !samples.is_sorted_by_key(|s| s.timestamp_ms) {
            samples.sort_by_key(|s| s.timestamp_ms);
        }
        batch.samples += samples.len();
        batch.series.push(TimeSeries::new(labels, samples));
    }
    batch.metadata = req
        .metadata
        .into_iter()
        .map(|m| Metadata {
            metric_type: MetricType::try_from(m.r#type).unwrap_or(MetricType::Unknown),
            metric_family_name: m.metric_family_name,
            help: m.help,
            unit: m.unit,
        })
        .collect();
    Ok(batch)
}

fn validate(labels: &[proto::Label]) -> Result<(), InvalidSeriesReason> {
    let mut name = None;
    for (i, l) in labels.iter().enumerate() {
        if !is_valid_label_name(&l.name) {
            return Err(InvalidSeriesReason::InvalidLabelName(shorten(&l.name)));
        }
        if labels[..i].iter().any(|p| p.name == l.name) {
            return Err(InvalidSeriesReason::DuplicateLabelName(l.name.clone()));
        }
        if l.name == METRIC_NAME {
            name = Some(l.value.as_str());
        }
    }
    match name {
        None | Some("") => Err(InvalidSeriesReason::MissingMetricName),
        Some(n) if !is_valid_metric_name(n) => {
            Err(InvalidSeriesReason::InvalidMetricName(shorten(n)))
        }
        Some(_) => Ok(()),
    }
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`
fn is_valid_metric_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    match bytes.next() {
        Some(c) if c.is_ascii_alphabetic() || c == b'_' || c == b':' => {}
        _ => return false,
    }
    bytes.all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b':')
}

/// `{a="1", b="2"}` from raw labels, at most ~200 characters.
fn describe_series(labels: &[proto::Label]) -> String {
    struct D<'a>(&'a [proto::Label]);
    impl fmt::Display for D<'_> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("{")?;
            for (i, l) in self.0.iter().enumerate() {
                if i > 0 {
                    f.write_str(", ")?;
                }
                write!(f, "{}={:?}", l.name, l.value)?;
            }
            f.write_str("}")
        }
    }
    shorten(&D(labels).to_string())
}

fn shorten(s: &str) -> String {
    const MAX: usize = 200;
    match s.char_indices().nth(MAX) {
        None => s.to_owned(),
        Some((cut, _)) => format!("{}…", &s[..cut]),
    }
}

/// Builds a request body (protobuf + snappy block) from core series and
/// metadata, as Prometheus would send it. For tests, benches and tools.
pub fn encode(series: &[TimeSeries], metadata: &[Metadata]) -> Result<Vec<u8>, EncodeError> {
    let req = proto::WriteRequest {
        timeseries: series
            .iter()
            .map(|ts| proto::TimeSeries {
                labels: ts
                    .labels
                    .iter()
                    .map(|l| proto::Label {
                        name: l.name.clone(),
                        value: l.value.clone(),
                    })
                    .collect(),
                samples: ts
                    .samples
                    .iter()
                    .map(|s| proto::Sample {
                        value: s.value,
                        timestamp: s.timestamp_ms,
                    })
                    .collect(),
                exemplars: Vec::new(),
                histograms: Vec::new(),
            })
            .collect(),
        metadata: metadata
            .iter()
            .map(|m| proto::MetricMetadata {
                r#type: m.metric_type as i32,
                metric_family_name: m.metric_family_name.clone(),
                help: m.help.clone(),
                unit: m.unit.clone(),
            })
            .collect(),
    };
    encode_request(&req)
}

/// Encodes a raw protobuf request and compresses it as a snappy block.
pub fn encode_request(req: &proto::WriteRequest) -> Result<Vec<u8>, EncodeError> {
    let raw = req.encode_to_vec();
    snap::raw::Encoder::new()
        .compress_vec(&raw)
        .map_err(|e| EncodeError {
            len: raw.len(),
            reason: e.to_string(),
        })
}

/// Snappy refused to compress (only for bodies beyond its ~4 GiB limit).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot snappy-compress a {len}-byte request: {reason}")]
pub struct EncodeError {
    pub len: usize,
    pub reason: String,
}
