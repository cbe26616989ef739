//! Prometheus remote write 1.0 decoding: round trips, bit-exact stale
//! markers, and each way a body can be bad.

// Test helpers may unwrap: a panic there is a failing test (as clippy.toml allows in #[test]).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use kube_insight_core::{Labels, Sample, TimeSeries, STALE_NAN, STALE_NAN_BITS};
use kube_insight_sources::prometheus::remote_write::{
    decode, decode_protobuf, decompress, encode, encode_request, proto, DecodeOptions,
    InvalidSeriesPolicy, InvalidSeriesReason, Metadata, MetricType, RemoteWriteError,
    DEFAULT_MAX_DECOMPRESSED_BYTES,
};
use prost::Message;

fn series(pairs: &[(&str, &str)], samples: &[(i64, f64)]) -> TimeSeries {
    TimeSeries::new(
        Labels::from_pairs(pairs.iter().copied()),
        samples.iter().map(|&(t, v)| Sample::new(t, v)).collect(),
    )
}

fn label(name: &str, value: &str) -> proto::Label {
    proto::Label {
        name: name.into(),
        value: value.into(),
    }
}

fn raw_series(labels: &[(&str, &str)], samples: &[(i64, f64)]) -> proto::TimeSeries {
    proto::TimeSeries {
        labels: labels.iter().map(|(n, v)| label(n, v)).collect(),
        samples: samples
            .iter()
            .map(|&(timestamp, value)| proto::Sample { value, timestamp })
            .collect(),
        exemplars: vec![],
        histograms: vec![],
    }
}

fn body(ts: Vec<proto::TimeSeries>) -> Vec<u8> {
    encode_request(&proto::WriteRequest {
        timeseries: ts,
        metadata: vec![],
    })
    .unwrap()
}

fn opts() -> DecodeOptions {
    DecodeOptions::default()
}

#[test]
fn round_trip() {
    let input = vec![
        series(
            &[
                ("__name__", "container_cpu_usage_seconds_total"),
                ("namespace", "shop"),
                ("pod", "api-5f6d7c8b9-qwz7p"),
                ("container", "api"),
            ],
            &[(1717171712345, 1234.567), (1717171727345, 1235.0)],
        ),
        series(
            &[(
                "__name__",
                "namespace_memory:kube_pod_container_resource_requests:sum",
            )],
            &[(-5, 5.36870912e+08)],
        ),
    ];
    let meta = vec![Metadata {
        metric_family_name: "container_cpu_usage_seconds_total".into(),
        metric_type: MetricType::Counter,
        help: "Cumulative cpu time consumed in seconds.".into(),
        unit: "seconds".into(),
    }];
    let b = encode(&input, &meta).unwrap();
    let batch = decode(&b, &opts()).unwrap();
    assert_eq!(batch.series, input);
    assert_eq!(batch.metadata, meta);
    assert_eq!(batch.samples, 3);
    assert_eq!(batch.invalid_total, 0);
    assert_eq!(batch.empty_series, 0);
}

#[test]
fn stale_nan_and_other_nans_are_bit_exact() {
    let odd_nan = f64::from_bits(0x7ff8_dead_beef_0001);
    let input = vec![series(
        &[("__name__", "up")],
        &[(1, STALE_NAN), (2, f64::NAN), (3, odd_nan)],
    )];
    let batch = decode(&encode(&input, &[]).unwrap(), &opts()).unwrap();
    let bits: Vec<u64> = batch.series[0]
        .samples
        .iter()
        .map(|s| s.value.to_bits())
        .collect();
    assert_eq!(
        bits,
        [STALE_NAN_BITS, f64::NAN.to_bits(), odd_nan.to_bits()]
    );
    assert!(kube_insight_core::is_stale_nan(
        batch.series[0].samples[0].value
    ));
}

#[test]
fn labels_are_sorted_and_empty_values_dropped() {
    let b = body(vec![raw_series(
        &[
            ("pod", "p"),
            ("__name__", "m"),
            ("container", ""),
            ("a", "1"),
        ],
        &[(1, 1.0)],
    )]);
    let batch = decode(&b, &opts()).unwrap();
    assert_eq!(batch.series[0].labels.to_string(), "m{a=\"1\", pod=\"p\"}");
}

#[test]
fn series_without_samples_are_skipped() {
    let b = body(vec![
        raw_series(&[("__name__", "a")], &[]),
        raw_series(&[("__name__", "b")], &[(1, 1.0)]),
    ]);
    let batch = decode(&b, &opts()).unwrap();
    assert_eq!(batch.series.len(), 1);
    assert_eq!(batch.series[0].labels.metric_name(), "b");
    assert_eq!(batch.empty_series, 1);
}

#[test]
fn out_of_order_samples_are_sorted() {
    let b = body(vec![raw_series(
        &[("__name__", "a")],
        &[(3, 3.0), (1, 1.0), (2, 2.0)],
    )]);
    let batch = decode(&b, &opts()).unwrap();
    let ts: Vec<i64> = batch.series[0]
        .samples
        .iter()
        .map(|s| s.timestamp_ms)
        .collect();
    assert_eq!(ts, [1, 2, 3]);
}

#[test]
fn empty_request_decodes_to_nothing() {
    let b = body(vec![]);
    assert_eq!(b, [0]); // snappy of zero bytes
    let batch = decode(&b, &opts()).unwrap();
    assert!(batch.series.is_empty() && batch.metadata.is_empty());
}

#[test]
fn empty_body_is_corrupt_snappy() {
    let err = decode(&[], &opts()).unwrap_err();
    assert_eq!(err.kind(), "corrupt_snappy");
    assert_eq!(err.to_string(), "corrupt snappy block: empty body");
}

#[test]
fn corrupt_snappy_is_reported_as_such() {
    let mut b = encode(
        &[series(&[("__name__", "up"), ("job", "x")], &[(1, 1.0)])],
        &[],
    )
    .unwrap();
    // Keep the length header, break the stream.
    for byte in b.iter_mut().skip(1) {
        *byte = 0xff;
    }
    let err = decode(&b, &opts()).unwrap_err();
    assert!(matches!(err, RemoteWriteError::CorruptSnappy(_)), "{err:?}");
    assert!(err.to_string().starts_with("corrupt snappy block: "));

    // A framed-format stream (what `snap::write::FrameEncoder` makes) is not
    // the block format Prometheus sends.
    let framed = [
        0xff, 0x06, 0x00, 0x00, b's', b'N', b'a', b'P', b'p', b'Y', 0x01, 0x05, 0x00, 0x00,
    ];
    assert_eq!(
        decode(&framed, &opts()).unwrap_err().kind(),
        "corrupt_snappy"
    );
}

#[test]
fn valid_snappy_with_garbage_protobuf() {
    let garbage = snap::raw::Encoder::new()
        .compress_vec(b"\x0a\xff\xff\xff\xff\x0fnot a protobuf")
        .unwrap();
    let err = decode(&garbage, &opts()).unwrap_err();
    assert_eq!(err.kind(), "corrupt_protobuf");
    assert!(
        err.to_string()
            .starts_with("corrupt protobuf write request: "),
        "{err}"
    );
    // Invalid UTF-8 in a string field is a protobuf error too.
    let mut raw = proto::WriteRequest {
        timeseries: vec![raw_series(&[("__name__", "ab")], &[(1, 1.0)])],
        metadata: vec![],
    }
    .encode_to_vec();
    let pos = raw.windows(2).position(|w| w == b"ab").unwrap();
    raw[pos] = 0xff;
    let err = decode_protobuf(&raw, &opts()).unwrap_err();
    assert_eq!(err.kind(), "corrupt_protobuf");
}

#[test]
fn oversize_header_is_refused_before_allocating() {
    // A snappy header claiming 3 GiB (varint), followed by nothing useful:
    // refused without trying to allocate it.
    let mut b = Vec::new();
    let mut n: u64 = 3 << 30;
    while n >= 0x80 {
        b.push((n as u8) | 0x80);
        n >>= 7;
    }
    b.push(n as u8);
    b.extend_from_slice(b"\x00\x01");
    match decode(&b, &opts()) {
        Err(RemoteWriteError::TooLarge { claimed, max }) => {
            assert_eq!(claimed as u64, 3 << 30);
            assert_eq!(max, DEFAULT_MAX_DECOMPRESSED_BYTES);
        }
        other => panic!("{other:?}"),
    }
    // Beyond snappy's own 2^32 limit the header is corrupt.
    let huge = [0x80, 0x80, 0x80, 0x80, 0x80, 0x01];
    assert_eq!(decode(&huge, &opts()).unwrap_err().kind(), "corrupt_snappy");

    // A real body over a small limit.
    let big = encode(
        &[series(
            &[("__name__", "up"), ("job", &"x".repeat(5000))],
            &[(1, 1.0)],
        )],
        &[],
    )
    .unwrap();
    let small = DecodeOptions {
        max_decompressed_bytes: 1024,
        ..DecodeOptions::default()
    };
    let err = decode(&big, &small).unwrap_err();
    assert_eq!(err.kind(), "too_large");
    assert!(err.to_string().contains("the limit is 1024"), "{err}");
    assert!(decompress(&big, 1 << 20).is_ok());
}

#[test]
fn invalid_series_are_skipped_and_named_by_default() {
    let b = body(vec![
        raw_series(&[("__name__", "good"), ("a", "1")], &[(1, 1.0)]),
        raw_series(
            &[("__name__", "bad"), ("http.method", "GET")],
            &[(1, 1.0), (2, 2.0)],
        ),
        raw_series(&[("job", "x")], &[(1, 1.0)]),
        raw_series(&[("__name__", "1bad")], &[(1, 1.0)]),
        raw_series(&[("__name__", "dup"), ("a", "1"), ("a", "2")], &[(1, 1.0)]),
        raw_series(&[("__name__", "also_good")], &[(1, 1.0)]),
    ]);
    let batch = decode(&b, &opts()).unwrap();
    let names: Vec<&str> = batch
        .series
        .iter()
        .map(|s| s.labels.metric_name())
        .collect();
    assert_eq!(names, ["good", "also_good"]);
    assert_eq!(batch.invalid_total, 4);
    assert_eq!(batch.invalid_samples, 5);
    let reasons: Vec<(usize, InvalidSeriesReason)> = batch
        .invalid
        .iter()
        .map(|i| (i.index, i.reason.clone()))
        .collect();
    assert_eq!(
        reasons,
        [
            (
                1,
                InvalidSeriesReason::InvalidLabelName("http.method".into())
            ),
            (2, InvalidSeriesReason::MissingMetricName),
            (3, InvalidSeriesReason::InvalidMetricName("1bad".into())),
            (4, InvalidSeriesReason::DuplicateLabelName("a".into())),
        ]
    );
    assert_eq!(
        batch.invalid[0].to_string(),
        "invalid series #1 {__name__=\"bad\", http.method=\"GET\"}: invalid label name \"http.method\""
    );
}

#[test]
fn invalid_series_fail_the_request_when_asked() {
    let b = body(vec![
        raw_series(&[("__name__", "good")], &[(1, 1.0)]),
        raw_series(&[("__name__", "bad"), ("", "x")], &[(1, 1.0)]),
    ]);
    let strict = DecodeOptions {
        invalid_series: InvalidSeriesPolicy::Reject,
        ..DecodeOptions::default()
    };
    let err = decode(&b, &strict).unwrap_err();
    assert_eq!(err.kind(), "invalid_series");
    assert_eq!(
        err.to_string(),
        "invalid series #1 {__name__=\"bad\", =\"x\"}: invalid label name \"\""
    );
}

/// Native histograms, exemplars and unknown fields do not break decoding.
#[test]
fn histograms_exemplars_and_unknown_fields_are_ignored() {
    #[derive(Clone, PartialEq, prost::Message)]
    struct Histogram {
        #[prost(uint64, tag = "1")]
        count_int: u64,
        #[prost(double, tag = "3")]
        sum: f64,
        #[prost(sint32, tag = "5")]
        schema: i32,
        #[prost(int64, tag = "15")]
        timestamp: i64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    struct Exemplar {
        #[prost(message, repeated, tag = "1")]
        labels: Vec<proto::Label>,
        #[prost(double, tag = "2")]
        value: f64,
        #[prost(int64, tag = "3")]
        timestamp: i64,
    }
    let mut ts = raw_series(&[("__name__", "rpc_seconds")], &[(5, 0.25)]);
    ts.histograms.push(
        Histogram {
            count_int: 3,
            sum: 1.5,
            schema: 3,
            timestamp: 5,
        }
        .encode_to_vec(),
    );
    ts.exemplars.push(
        Exemplar {
            labels: vec![label("trace_id", "abc")],
            value: 0.2,
            timestamp: 5,
        }
        .encode_to_vec(),
    );
    let mut raw = proto::WriteRequest {
        timeseries: vec![ts, raw_series(&[("__name__", "only_histograms")], &[])],
        metadata: vec![],
    }
    .encode_to_vec();
    // An unknown top-level field (tag 9, varint) is skipped.
    raw.extend_from_slice(&[0x48, 0x01]);
    let b = snap::raw::Encoder::new().compress_vec(&raw).unwrap();
    let batch = decode(&b, &opts()).unwrap();
    assert_eq!(batch.series.len(), 1);
    assert_eq!(batch.series[0].samples, [Sample::new(5, 0.25)]);
    assert_eq!(batch.histograms_ignored, 1);
    assert_eq!(batch.exemplars_ignored, 1);
    assert_eq!(batch.empty_series, 1);
}

#[test]
fn unknown_metadata_type_is_kept_as_unknown() {
    let req = proto::WriteRequest {
        timeseries: vec![],
        metadata: vec![proto::MetricMetadata {
            r#type: 42,
            metric_family_name: "x".into(),
            help: String::new(),
            unit: String::new(),
        }],
    };
    let batch = decode(&encode_request(&req).unwrap(), &opts()).unwrap();
    assert_eq!(batch.metadata[0].metric_type, MetricType::Unknown);
}
