//! Pure decoders of the metrics path: no IO, no tokio, tested on the shared
//! fixtures.
//!
//! - [`exposition`]: the Prometheus text exposition format 0.0.4, what
//!   `/federate`, kubelet `/metrics/cadvisor` and kube-state-metrics emit
//!   (used by the `prometheus_federate` pull);
//! - [`remote_write`]: Prometheus remote write 1.0, a snappy block holding a
//!   protobuf `WriteRequest` (used by the `prometheus_remote_write` push).
//!
//! Both produce [`kube_insight_core::TimeSeries`]: labels sorted, the metric
//! name as `__name__`, empty label values dropped, timestamps in ms.

pub mod exposition;
pub mod remote_write;

pub use exposition::{
    parse, parse_to_series, parse_with_options, ErrorKind, ExpositionParser, LabelRef, MetricType,
    ParseError, ParseOptions, ParseReport, SampleRef, SeriesCollector,
};
pub use remote_write::{
    DecodeOptions, InvalidSeries, InvalidSeriesPolicy, InvalidSeriesReason, Metadata,
    RemoteWriteError, WriteBatch, DEFAULT_MAX_DECOMPRESSED_BYTES,
};
