//! A streaming, hand-written parser for the Prometheus text exposition format
//! 0.0.4: what `/federate`, kubelet `/metrics/cadvisor` and kube-state-metrics
//! emit.
//!
//! # Rules (reference: `prometheus/common` `expfmt/text_parse.go`)
//! - Lines end with `\n`. Leading and trailing blanks and tabs are ignored;
//!   tokens are separated by blanks or tabs. `\r` is not whitespace: a CRLF
//!   body fails line by line, as it does in the Go parser.
//! - Metric names match `[a-zA-Z_:][a-zA-Z0-9_:]*` (recording rules have `:`),
//!   label names `[a-zA-Z_][a-zA-Z0-9_]*`; `__name__` is reserved inside
//!   braces; a label name may not repeat. Quoted (UTF-8) names of the newer
//!   escaping schemes are reported as unsupported.
//! - Label values are double-quoted; the escapes are `\\`, `\"` and `\n`, any
//!   other escape is an error. Values may hold `,` `=` `{` `}` and any UTF-8.
//!   A trailing comma in the label set is allowed. Empty values are dropped
//!   when a sample becomes [`Labels`] (Prometheus treats them as absent).
//! - A value is a Go float: decimal or e-notation (`1.87695104e+08`), `NaN`,
//!   `Inf`, `+Inf`, `-Inf` (case-insensitive, as Go's `strconv`); hex,
//!   `_` separators and values beyond the float64 range are errors. `NaN` is
//!   parsed as a plain NaN, never as the staleness marker.
//! - An optional timestamp follows: an integer in ms since the epoch, possibly
//!   negative. Without it the sample gets the caller's default time.
//! - `# HELP name text` (escapes `\\`, `\n`, `\"`) and `# TYPE name type`
//!   (`counter`, `gauge`, `histogram`, `summary`, `untyped`) fill the
//!   per-family metadata of the [`ParseReport`]; a second HELP or TYPE line
//!   for a family is an error (the first one is kept). Other comments and
//!   blank lines are ignored.
//!
//! # Errors never lose good lines
//! Each bad line is reported as a [`ParseError`] (line number and reason) and
//! skipped; nothing of a half-parsed line is emitted. Unlike the Go parser,
//! which stops at the first error, parsing goes on with the next line. A
//! bad HELP or TYPE line loses metadata only, never samples.
//!
//! # A truncated body
//! The format requires the last line to end with `\n`, and every exporter
//! writes it. A body cut mid-line (a proxy timeout, a dropped connection)
//! may still look like a complete sample: `x 1234.5 1717171712345` cut to
//! `x 12` parses as the wrong value. So by default a final line without its
//! newline is never parsed: it is reported as [`ErrorKind::Truncated`] and
//! [`ParseReport::truncated`] is set, while all the complete lines before it
//! are kept. The Go parser rejects such a body too ("unexpected end of input
//! stream"). [`ParseOptions::allow_unterminated_last_line`] parses it instead,
//! for inputs known to be complete (hand-written text, tests).
//!
//! # Performance
//! One pass over the bytes, no regex, no allocation per line: names and
//! unescaped values are borrowed from the input (a value with escapes is the
//! only thing copied), and the label buffer is reused. The sink gets a
//! borrowed [`SampleRef`]; building [`Labels`] (which owns its strings) is the
//! caller's choice, e.g. through [`SeriesCollector`].

use kube_insight_core::{Label, Labels, Sample, TimeSeries, METRIC_NAME};
use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;

/// The type a `# TYPE` line gives a metric family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MetricType {
    Counter,
    Gauge,
    Histogram,
    Summary,
    Untyped,
}

impl MetricType {
    /// The name used in `# TYPE` lines.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Histogram => "histogram",
            MetricType::Summary => "summary",
            MetricType::Untyped => "untyped",
        }
    }

    /// Parses a type name, ASCII case-insensitively (as the Go parser does).
    pub fn from_name(s: &str) -> Option<MetricType> {
        [
            MetricType::Counter,
            MetricType::Gauge,
            MetricType::Histogram,
            MetricType::Summary,
            MetricType::Untyped,
        ]
        .into_iter()
        .find(|t| t.as_str().eq_ignore_ascii_case(s))
    }
}

impl fmt::Display for MetricType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a line was rejected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ErrorKind {
    #[error("line is not valid utf-8")]
    InvalidUtf8,
    #[error("missing metric name before the label set")]
    MissingMetricName,
    #[error("invalid metric name: unexpected {found}")]
    InvalidMetricName { found: String },
    #[error("quoted (utf-8) metric and label names are not supported by format 0.0.4")]
    QuotedName,
    #[error("invalid label name: unexpected {found}")]
    InvalidLabelName { found: String },
    #[error("label name \"__name__\" is reserved")]
    ReservedLabelName,
    #[error("expected '=' after label name {label:?}, found {found}")]
    ExpectedEquals { label: String, found: String },
    #[error("expected '\"' to open the value of label {label:?}, found {found}")]
    ExpectedQuote { label: String, found: String },
    #[error("invalid escape sequence '\\{escape}' in the value of label {label:?}")]
    InvalidEscape { label: String, escape: String },
    #[error("unterminated value of label {label:?}")]
    UnterminatedLabelValue { label: String },
    #[error("unterminated label set")]
    UnterminatedLabelSet,
    #[error("duplicate label name {label:?}")]
    DuplicateLabelName { label: String },
    #[error("expected ',' or '}}' after a label value, found {found}")]
    ExpectedCommaOrBrace { found: String },
    #[error("missing sample value")]
    MissingValue,
    #[error("invalid sample value {token:?}")]
    InvalidValue { token: String },
    #[error("sample value {token:?} is out of the float64 range")]
    ValueOutOfRange { token: String },
    #[error("invalid timestamp {token:?}: expected an integer number of milliseconds")]
    InvalidTimestamp { token: String },
    #[error("unexpected {token:?} after the timestamp")]
    TrailingGarbage { token: String },
    #[error("invalid metric name in {keyword} line")]
    InvalidCommentMetricName { keyword: &'static str },
    #[error("invalid escape sequence '\\{escape}' in HELP text")]
    InvalidHelpEscape { escape: String },
    #[error("unknown metric type {token:?}")]
    UnknownType { token: String },
    #[error("second HELP line for metric family {family:?}")]
    DuplicateHelp { family: String },
    #[error("second TYPE line for metric family {family:?}")]
    DuplicateType { family: String },
    #[error("last line has no trailing newline (truncated body?)")]
    Truncated,
}

/// A rejected line: its 1-based number and the reason.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {kind}")]
pub struct ParseError {
    pub line: usize,
    pub kind: ErrorKind,
}

/// Knobs of the parser.
#[derive(Clone, Debug)]
pub struct ParseOptions {
    /// How many [`ParseError`]s are kept in the report; the rest are only
    /// counted in [`ParseReport::errors_total`] (a garbage body must not
    /// turn into millions of error records).
    pub max_errors: usize,
    /// Parse a final line that has no `\n` instead of reporting it as
    /// truncated. Only for input known to be complete: see the module docs.
    pub allow_unterminated_last_line: bool,
}

impl Default for ParseOptions {
    fn default() -> Self {
        ParseOptions {
            max_errors: 100,
            allow_unterminated_last_line: false,
        }
    }
}

/// What a parse did, and the metadata it found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ParseReport {
    /// Lines seen (complete lines, plus an unterminated last one).
    pub lines: usize,
    /// Samples handed to the sink.
    pub samples: usize,
    /// The first [`ParseOptions::max_errors`] rejected lines, in order.
    pub errors: Vec<ParseError>,
    /// All rejected lines, kept or not.
    pub errors_total: usize,
    /// `# TYPE` per metric family.
    pub types: HashMap<String, MetricType>,
    /// `# HELP` per metric family, unescaped.
    pub help: HashMap<String, String>,
    /// The body ended without a newline and its last line was dropped.
    pub truncated: bool,
}

impl ParseReport {
    /// True when no line was rejected.
    pub fn is_clean(&self) -> bool {
        self.errors_total == 0
    }

    /// The declared type of the family a sample belongs to. Looks up the
    /// name itself, then, for `_bucket`/`_sum`/`_count` (histograms,
    /// summaries) and `_total`, the name without that suffix.
    pub fn type_of(&self, metric_name: &str) -> Option<MetricType> {
        if let Some(t) = self.types.get(metric_name) {
            return Some(*t);
        }
        for suffix in ["_bucket", "_sum", "_count", "_created"] {
            if let Some(family) = metric_name.strip_suffix(suffix) {
                if let Some(t) = self.types.get(family) {
                    if matches!(t, MetricType::Histogram | MetricType::Summary) {
                        return Some(*t);
                    }
                }
            }
        }
        None
    }
}

/// One label of a [`SampleRef`], borrowed from the input (copied only when
/// the value had escapes). Empty values are kept here, as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LabelRef<'a> {
    pub name: &'a str,
    pub value: Cow<'a, str>,
}

/// One parsed sample, borrowed from the input. Valid for the sink call only.
#[derive(Clone, Debug)]
pub struct SampleRef<'a> {
    /// The metric name.
    pub name: &'a str,
    /// The labels in input order, without `__name__`, empty values included.
    pub labels: &'a [LabelRef<'a>],
    pub value: f64,
    /// The sample's timestamp, or the default one when the line had none.
    pub timestamp_ms: i64,
    /// True when the line carried its own timestamp.
    pub has_timestamp: bool,
    /// The 1-based line number.
    pub line: usize,
    /// The raw `name{…}` text: equal text means an equal series.
    pub series_text: &'a str,
}

impl SampleRef<'_> {
    /// The series' label set, metric name included as `__name__`, sorted,
    /// empty values dropped.
    pub fn to_labels(&self) -> Labels {
        let mut v = Vec::with_capacity(self.labels.len() + 1);
        v.push(Label::new(METRIC_NAME, self.name));
        for l in self.labels {
            if !l.value.is_empty() {
                v.push(Label::new(l.name, l.value.as_ref()));
            }
        }
        Labels::new(v)
    }

    pub fn sample(&self) -> Sample {
        Sample::new(self.timestamp_ms, self.value)
    }

    /// A label's value as written (empty when present but empty).
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|l| l.name == name)
            .map(|l| l.value.as_ref())
    }
}

/// The streaming parser: feed it chunks of the body as they arrive (lines
/// may span chunks), then [`finish`](ExpositionParser::finish).
#[derive(Debug)]
pub struct ExpositionParser {
    opts: ParseOptions,
    default_ts_ms: i64,
    carry: Vec<u8>,
    report: ParseReport,
}

impl ExpositionParser {
    /// `default_ts_ms` is given to samples without a timestamp (the scrape
    /// time).
    pub fn new(default_ts_ms: i64) -> Self {
        Self::with_options(default_ts_ms, ParseOptions::default())
    }

    pub fn with_options(default_ts_ms: i64, opts: ParseOptions) -> Self {
        ExpositionParser {
            opts,
            default_ts_ms,
            carry: Vec::new(),
            report: ParseReport::default(),
        }
    }

    /// Parses every complete line of `chunk` (with the unfinished line of the
    /// previous chunk in front) and keeps the unfinished rest for later.
    pub fn feed<F: FnMut(&SampleRef<'_>)>(&mut self, chunk: &[u8], sink: &mut F) {
        let mut rest = chunk;
        if !self.carry.is_empty() {
            match find_byte(b'\n', rest) {
                None => {
                    self.carry.extend_from_slice(rest);
                    return;
                }
                Some(i) => {
                    let mut carry = std::mem::take(&mut self.carry);
                    carry.extend_from_slice(&rest[..i]);
                    self.parse_lines(&carry, sink);
                    carry.clear();
                    self.carry = carry;
                    rest = &rest[i + 1..];
                }
            }
        }
        match rest.iter().rposition(|&b| b == b'\n') {
            None => self.carry.extend_from_slice(rest),
            Some(last) => {
                self.parse_lines(&rest[..last], sink);
                self.carry.extend_from_slice(&rest[last + 1..]);
            }
        }
    }

    /// Ends the input: handles an unterminated last line (see the module
    /// docs) and returns the report.
    pub fn finish<F: FnMut(&SampleRef<'_>)>(mut self, sink: &mut F) -> ParseReport {
        let carry = std::mem::take(&mut self.carry);
        if !carry.iter().all(|&b| is_blank(b)) {
            if self.opts.allow_unterminated_last_line {
                self.parse_lines(&carry, sink);
            } else {
                self.report.lines += 1;
                self.report.truncated = true;
                let line = self.report.lines;
                self.push_error(line, ErrorKind::Truncated);
            }
        }
        self.report
    }

    /// Parses `buf`, a run of lines separated by `\n` (the last one without
    /// its `\n`).
    fn parse_lines<F: FnMut(&SampleRef<'_>)>(&mut self, buf: &[u8], sink: &mut F) {
        let mut labels: Vec<LabelRef<'_>> = Vec::with_capacity(16);
        let mut pos = 0;
        loop {
            let end = find_byte(b'\n', &buf[pos..]).map_or(buf.len(), |i| pos + i);
            let line = &buf[pos..end];
            self.report.lines += 1;
            let line_no = self.report.lines;
            labels.clear();
            match self.parse_line(line, &mut labels) {
                Ok(None) => {}
                Ok(Some(p)) => {
                    self.report.samples += 1;
                    let (timestamp_ms, has_timestamp) = match p.timestamp_ms {
                        Some(t) => (t, true),
                        None => (self.default_ts_ms, false),
                    };
                    sink(&SampleRef {
                        name: p.name,
                        labels: &labels,
                        value: p.value,
                        timestamp_ms,
                        has_timestamp,
                        line: line_no,
                        series_text: p.series_text,
                    });
                }
                Err(kind) => self.push_error(line_no, kind),
            }
            if end >= buf.len() {
                break;
            }
            pos = end + 1;
        }
    }

    fn push_error(&mut self, line: usize, kind: ErrorKind) {
        self.report.errors_total += 1;
        if self.report.errors.len() < self.opts.max_errors {
            self.report.errors.push(ParseError { line, kind });
        }
    }

    /// One line, without its `\n`. `Ok(None)` for blank lines and comments.
    fn parse_line<'a>(
        &mut self,
        line: &'a [u8],
        labels: &mut Vec<LabelRef<'a>>,
    ) -> Result<Option<ParsedLine<'a>>, ErrorKind> {
        let start = skip_blanks(line, 0);
        match line.get(start) {
            None => Ok(None),
            Some(b'#') => self.parse_comment(line, start + 1).map(|()| None),
            Some(_) => {
                let s = std::str::from_utf8(line).map_err(|_| ErrorKind::InvalidUtf8)?;
                parse_sample(s, start, labels).map(Some)
            }
        }
    }

    /// A comment line; `i` is just after the `#`.
    fn parse_comment(&mut self, b: &[u8], mut i: usize) -> Result<(), ErrorKind> {
        let n = b.len();
        i = skip_blanks(b, i);
        let kw_start = i;
        while i < n && !is_blank(b[i]) {
            i += 1;
        }
        let keyword = match &b[kw_start..i] {
            b"HELP" => "HELP",
            b"TYPE" => "TYPE",
            _ => return Ok(()), // a plain comment
        };
        i = skip_blanks(b, i);
        if i == n {
            return Ok(()); // `# HELP` alone: nothing to record, as in Go
        }
        let name_start = i;
        if is_metric_name_start(b[i]) {
            i += 1;
            while i < n && is_metric_name_char(b[i]) {
                i += 1;
            }
        }
        let name_end = i;
        if name_end < n && !is_blank(b[name_end]) {
            return Err(ErrorKind::InvalidCommentMetricName { keyword });
        }
        i = skip_blanks(b, i);
        if i == n {
            return Ok(()); // `# TYPE name` without a type: ignored, as in Go
        }
        // The name is ASCII by construction.
        let family = String::from_utf8_lossy(&b[name_start..name_end]);
        let rest = &b[i..];
        if keyword == "HELP" {
            if self.report.help.contains_key(family.as_ref()) {
                return Err(ErrorKind::DuplicateHelp {
                    family: family.into_owned(),
                });
            }
            let text = unescape_help(rest)?;
            self.report.help.insert(family.into_owned(), text);
        } else {
            let token = trim_blanks_end(rest);
            let token = std::str::from_utf8(token).map_err(|_| ErrorKind::InvalidUtf8)?;
            let t = MetricType::from_name(token).ok_or_else(|| ErrorKind::UnknownType {
                token: snippet(token),
            })?;
            if self.report.types.contains_key(family.as_ref()) {
                return Err(ErrorKind::DuplicateType {
                    family: family.into_owned(),
                });
            }
            self.report.types.insert(family.into_owned(), t);
        }
        Ok(())
    }
}

struct ParsedLine<'a> {
    name: &'a str,
    series_text: &'a str,
    value: f64,
    timestamp_ms: Option<i64>,
}

/// A sample line; `i` is its first non-blank byte.
fn parse_sample<'a>(
    s: &'a str,
    mut i: usize,
    labels: &mut Vec<LabelRef<'a>>,
) -> Result<ParsedLine<'a>, ErrorKind> {
    let b = s.as_bytes();
    let n = b.len();
    let name_start = i;
    match b[i] {
        c if is_metric_name_start(c) => {}
        b'{' => return Err(ErrorKind::MissingMetricName),
        b'"' => return Err(ErrorKind::QuotedName),
        _ => {
            return Err(ErrorKind::InvalidMetricName {
                found: describe(s, i),
            })
        }
    }
    i += 1;
    while i < n && is_metric_name_char(b[i]) {
        i += 1;
    }
    let name_end = i;
    let name = &s[name_start..name_end];
    let mut series_end = name_end;
    i = skip_blanks(b, i);
    if i < n && b[i] == b'{' {
        i = parse_labels(s, i + 1, labels)?;
        series_end = i;
        i = skip_blanks(b, i);
    } else if i == name_end && i < n {
        return Err(ErrorKind::InvalidMetricName {
            found: describe(s, i),
        });
    }

    let value_start = i;
    while i < n && !is_blank(b[i]) {
        i += 1;
    }
    if value_start == i {
        return Err(ErrorKind::MissingValue);
    }
    let value = parse_value(&s[value_start..i])?;

    i = skip_blanks(b, i);
    let timestamp_ms = if i < n {
        let ts_start = i;
        while i < n && !is_blank(b[i]) {
            i += 1;
        }
        let token = &s[ts_start..i];
        let ts = parse_timestamp(token)?;
        i = skip_blanks(b, i);
        if i < n {
            return Err(ErrorKind::TrailingGarbage {
                token: snippet(&s[i..]),
            });
        }
        Some(ts)
    } else {
        None
    };

    Ok(ParsedLine {
        name,
        series_text: &s[name_start..series_end],
        value,
        timestamp_ms,
    })
}

/// The label set; `i` is just after the `{`. Returns the index after `}`.
fn parse_labels<'a>(
    s: &'a str,
    mut i: usize,
    labels: &mut Vec<LabelRef<'a>>,
) -> Result<usize, ErrorKind> {
    let b = s.as_bytes();
    let n = b.len();
    loop {
        i = skip_blanks(b, i);
        match b.get(i) {
            None => return Err(ErrorKind::UnterminatedLabelSet),
            Some(b'}') => return Ok(i + 1),
            Some(&c) if is_label_name_start(c) => {}
            Some(b'"') => return Err(ErrorKind::QuotedName),
            Some(_) => {
                return Err(ErrorKind::InvalidLabelName {
                    found: describe(s, i),
                })
            }
        }
        let name_start = i;
        i += 1;
        while i < n && is_label_name_char(b[i]) {
            i += 1;
        }
        let name = &s[name_start..i];
        if i < n && !matches!(b[i], b'=' | b' ' | b'\t' | b',' | b'}') {
            return Err(ErrorKind::InvalidLabelName {
                found: describe(s, i),
            });
        }
        i = skip_blanks(b, i);
        if b.get(i) != Some(&b'=') {
            return Err(ErrorKind::ExpectedEquals {
                label: name.to_owned(),
                found: describe(s, i),
            });
        }
        if name == METRIC_NAME {
            return Err(ErrorKind::ReservedLabelName);
        }
        i = skip_blanks(b, i + 1);
        if b.get(i) != Some(&b'"') {
            return Err(ErrorKind::ExpectedQuote {
                label: name.to_owned(),
                found: describe(s, i),
            });
        }
        i += 1;
        let value_start = i;
        let mut escaped = false;
        loop {
            match b.get(i) {
                None => {
                    return Err(ErrorKind::UnterminatedLabelValue {
                        label: name.to_owned(),
                    })
                }
                Some(b'"') => break,
                Some(b'\\') => match b.get(i + 1) {
                    Some(b'\\' | b'"' | b'n') => {
                        escaped = true;
                        i += 2;
                    }
                    Some(_) => {
                        return Err(ErrorKind::InvalidEscape {
                            label: name.to_owned(),
                            escape: s[i + 1..]
                                .chars()
                                .next()
                                .map(String::from)
                                .unwrap_or_default(),
                        })
                    }
                    None => {
                        return Err(ErrorKind::UnterminatedLabelValue {
                            label: name.to_owned(),
                        })
                    }
                },
                Some(_) => i += 1,
            }
        }
        let raw = &s[value_start..i];
        i += 1;
        let value = if escaped {
            Cow::Owned(unescape_label_value(raw))
        } else {
            Cow::Borrowed(raw)
        };
        if labels.iter().any(|l| l.name == name) {
            return Err(ErrorKind::DuplicateLabelName {
                label: name.to_owned(),
            });
        }
        labels.push(LabelRef { name, value });
        i = skip_blanks(b, i);
        match b.get(i) {
            Some(b',') => i += 1,
            Some(b'}') => return Ok(i + 1),
            _ => {
                return Err(ErrorKind::ExpectedCommaOrBrace {
                    found: describe(s, i),
                })
            }
        }
    }
}

/// Unescapes a label value already checked to hold only `\\`, `\"`, `\n`.
fn unescape_label_value(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some(other) => out.push(other),
                None => {}
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Unescapes HELP text: `\\`, `\n` and `\"` (as the Go parser does).
fn unescape_help(raw: &[u8]) -> Result<String, ErrorKind> {
    let s = std::str::from_utf8(raw).map_err(|_| ErrorKind::InvalidUtf8)?;
    if !s.contains('\\') {
        return Ok(s.to_owned());
    }
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some(c @ ('\\' | '"')) => out.push(c),
                Some(other) => {
                    return Err(ErrorKind::InvalidHelpEscape {
                        escape: other.to_string(),
                    })
                }
                None => {
                    return Err(ErrorKind::InvalidHelpEscape {
                        escape: String::new(),
                    })
                }
            }
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

/// A Go `strconv.ParseFloat` value as `expfmt` accepts it.
fn parse_value(token: &str) -> Result<f64, ErrorKind> {
    let numeric = token
        .bytes()
        .all(|c| matches!(c, b'0'..=b'9' | b'.' | b'e' | b'E' | b'+' | b'-'));
    if numeric {
        return match token.parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(v),
            // Go reports an overflow as a range error, not as ±Inf.
            Ok(_) => Err(ErrorKind::ValueOutOfRange {
                token: snippet(token),
            }),
            Err(_) => Err(ErrorKind::InvalidValue {
                token: snippet(token),
            }),
        };
    }
    let (negative, unsigned) = match token.as_bytes().first() {
        Some(b'-') => (true, &token[1..]),
        Some(b'+') => (false, &token[1..]),
        _ => (false, token),
    };
    if unsigned.eq_ignore_ascii_case("inf") || unsigned.eq_ignore_ascii_case("infinity") {
        return Ok(if negative {
            f64::NEG_INFINITY
        } else {
            f64::INFINITY
        });
    }
    // Go accepts no sign on NaN.
    if token.eq_ignore_ascii_case("nan") {
        return Ok(f64::NAN);
    }
    Err(ErrorKind::InvalidValue {
        token: snippet(token),
    })
}

/// A Go `strconv.ParseInt(s, 10, 64)` timestamp.
fn parse_timestamp(token: &str) -> Result<i64, ErrorKind> {
    token
        .parse::<i64>()
        .map_err(|_| ErrorKind::InvalidTimestamp {
            token: snippet(token),
        })
}

#[inline]
fn is_blank(c: u8) -> bool {
    c == b' ' || c == b'\t'
}

#[inline]
fn skip_blanks(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && is_blank(b[i]) {
        i += 1;
    }
    i
}

fn trim_blanks_end(b: &[u8]) -> &[u8] {
    let mut end = b.len();
    while end > 0 && is_blank(b[end - 1]) {
        end -= 1;
    }
    &b[..end]
}

#[inline]
fn is_label_name_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_'
}

#[inline]
fn is_label_name_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

#[inline]
fn is_metric_name_start(c: u8) -> bool {
    is_label_name_start(c) || c == b':'
}

#[inline]
fn is_metric_name_char(c: u8) -> bool {
    is_label_name_char(c) || c == b':'
}

/// The position of the first `needle` in `hay`, eight bytes at a time.
#[inline]
fn find_byte(needle: u8, hay: &[u8]) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    let pattern = LO.wrapping_mul(u64::from(needle));
    let mut chunks = hay.chunks_exact(8);
    let mut base = 0;
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let x = u64::from_le_bytes(word) ^ pattern;
        if (x.wrapping_sub(LO) & !x & HI) != 0 {
            // The first zero byte of x is the match.
            return chunk.iter().position(|&c| c == needle).map(|i| base + i);
        }
        base += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&c| c == needle)
        .map(|i| base + i)
}

/// Describes the character at `i` for an error message.
fn describe(s: &str, i: usize) -> String {
    match s.get(i..).and_then(|rest| rest.chars().next()) {
        None => "end of line".to_owned(),
        Some(c) => format!("{c:?}"),
    }
}

/// At most 64 characters of a token, for an error message.
fn snippet(s: &str) -> String {
    const MAX: usize = 64;
    match s.char_indices().nth(MAX) {
        None => s.to_owned(),
        Some((cut, _)) => format!("{}…", &s[..cut]),
    }
}

/// Parses a whole body. `default_ts_ms` is given to samples without a
/// timestamp. The sink sees each good sample in input order.
pub fn parse<F: FnMut(&SampleRef<'_>)>(
    text: impl AsRef<[u8]>,
    default_ts_ms: i64,
    mut sink: F,
) -> ParseReport {
    parse_with_options(text, default_ts_ms, ParseOptions::default(), &mut sink)
}

/// [`parse`] with options.
pub fn parse_with_options<F: FnMut(&SampleRef<'_>)>(
    text: impl AsRef<[u8]>,
    default_ts_ms: i64,
    opts: ParseOptions,
    sink: &mut F,
) -> ParseReport {
    let mut p = ExpositionParser::with_options(default_ts_ms, opts);
    p.feed(text.as_ref(), sink);
    p.finish(sink)
}

/// Parses a whole body into series (see [`SeriesCollector`]).
pub fn parse_to_series(
    text: impl AsRef<[u8]>,
    default_ts_ms: i64,
) -> (Vec<TimeSeries>, ParseReport) {
    let mut c = SeriesCollector::new();
    let report = parse(text, default_ts_ms, |s| c.push(s));
    (c.finish(), report)
}

/// Turns samples into [`TimeSeries`], merging consecutive samples of the
/// same series into one entry. The label set is built once per run of
/// samples: a sample whose raw `name{…}` text equals the previous one's is
/// appended without building anything. Non-consecutive repeats of a series
/// stay separate entries (a text body normally has one sample per series).
#[derive(Debug, Default)]
pub struct SeriesCollector {
    series: Vec<TimeSeries>,
    last_text: String,
}

impl SeriesCollector {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, s: &SampleRef<'_>) {
        if let Some(last) = self.series.last_mut() {
            if self.last_text == s.series_text {
                last.samples.push(s.sample());
                return;
            }
        }
        let labels = s.to_labels();
        self.last_text.clear();
        self.last_text.push_str(s.series_text);
        if let Some(last) = self.series.last_mut() {
            if last.labels == labels {
                last.samples.push(s.sample());
                return;
            }
        }
        self.series.push(TimeSeries::new(labels, vec![s.sample()]));
    }

    /// The series, each with its samples sorted by timestamp.
    pub fn finish(mut self) -> Vec<TimeSeries> {
        for ts in &mut self.series {
            if !ts.samples.is_sorted_by_key(|s| s.timestamp_ms) {
                ts.samples.sort_by_key(|s| s.timestamp_ms);
            }
        }
        self.series
    }

    pub fn len(&self) -> usize {
        self.series.len()
    }

    pub fn is_empty(&self) -> bool {
        self.series.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_byte_matches_position() {
        let hay = b"0123456789abcdef\nxyz\n";
        for start in 0..hay.len() {
            assert_eq!(
                find_byte(b'\n', &hay[start..]),
                hay[start..].iter().position(|&c| c == b'\n')
            );
        }
        assert_eq!(find_byte(b'\n', b""), None);
        assert_eq!(find_byte(0x80, &[0x7f, 0x81, 0x80]), Some(2));
        assert_eq!(find_byte(b'\n', &[0xff; 9]), None);
    }

    #[test]
    fn values_follow_go() {
        assert_eq!(parse_value("1.87695104e+08"), Ok(1.87695104e+08));
        assert_eq!(parse_value("-Inf"), Ok(f64::NEG_INFINITY));
        assert_eq!(parse_value("+inf"), Ok(f64::INFINITY));
        assert_eq!(parse_value("Infinity"), Ok(f64::INFINITY));
        assert!(parse_value("NaN").is_ok_and(f64::is_nan));
        assert!(parse_value("-NaN").is_err());
        assert!(parse_value("0x1p3").is_err());
        assert!(parse_value("0x10").is_err());
        assert!(parse_value("1_000").is_err());
        assert!(parse_value("1e400").is_err());
        assert_eq!(parse_value("1e-400"), Ok(0.0));
        assert_eq!(parse_value(".5"), Ok(0.5));
        assert_eq!(parse_value("5."), Ok(5.0));
        assert!(parse_value("e5").is_err());
        assert!(parse_value("").is_err());
    }

    #[test]
    fn snippet_cuts_long_tokens() {
        let long = "x".repeat(100);
        assert_eq!(snippet(&long).chars().count(), 65);
        assert_eq!(snippet("short"), "short");
    }
}
