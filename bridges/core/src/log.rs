//! The log record model: one [`LogRecord`] per container output line, grouped
//! by [`LogStreamKey`] (`cluster / namespace / pod / container`), whose
//! [`LogStreamMeta`] (labels, node, image, ids) is stored once per stream.
//!
//! Pure helpers used at ingest and at query time: [`extract_level`] reads a
//! severity out of a line (JSON, logfmt, klog, common prefixes),
//! [`parse_timestamp_ns`] reads RFC 3339 / ISO 8601 / `java_sql_timestamp`
//! times with nanoseconds, [`workload_of`] names a pod's workload from its
//! labels and name, and [`LineFilter`] evaluates `contains` and `regex`.

use crate::entity::Workload;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Longest stored line; longer lines are cut at a character boundary and
/// flagged [`LogRecord::truncated`].
pub const MAX_LINE_BYTES: usize = 256 * 1024;
/// Longest stored [`LogRecord::fields`] JSON; fields past it are left out.
pub const MAX_FIELDS_BYTES: usize = 8 * 1024;
/// Labels kept per stream, and the longest label name or value kept.
pub const MAX_STREAM_LABELS: usize = 64;
pub const MAX_LABEL_BYTES: usize = 4 * 1024;
/// Longest stream key part (namespace, pod, container) or metadata value.
pub const MAX_KEY_BYTES: usize = 1024;

/// A log severity, normalised from the many spellings applications use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
    Fatal,
}

impl Level {
    pub const ALL: [Level; 6] = [
        Level::Trace,
        Level::Debug,
        Level::Info,
        Level::Warn,
        Level::Error,
        Level::Fatal,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
            Level::Fatal => "fatal",
        }
    }

    /// A stable small code (1..=6; 0 is reserved for "no level").
    pub fn code(self) -> u8 {
        self as u8 + 1
    }

    pub fn from_code(c: u8) -> Option<Level> {
        Level::ALL.get(usize::from(c).checked_sub(1)?).copied()
    }

    /// Reads a level name in any common spelling, case-insensitively:
    /// `warning`, `WRN`, `err`, `crit`, `panic`, `notice`, `E`…
    pub fn parse(s: &str) -> Option<Level> {
        let s = s.trim();
        if s.is_empty() || s.len() > 16 {
            return None;
        }
        let mut buf = [0u8; 16];
        for (d, c) in buf.iter_mut().zip(s.bytes()) {
            *d = c.to_ascii_lowercase();
        }
        let l = &buf[..s.len()];
        Some(match l {
            b"trace" | b"trc" | b"finest" | b"finer" | b"t" => Level::Trace,
            b"debug" | b"dbg" | b"debg" | b"fine" | b"d" => Level::Debug,
            b"info" | b"inf" | b"information" | b"informational" | b"notice" | b"log" | b"i"
            | b"default" => Level::Info,
            b"warn" | b"warning" | b"wrn" | b"w" => Level::Warn,
            b"error" | b"err" | b"eror" | b"severe" | b"e" => Level::Error,
            b"fatal" | b"crit" | b"critical" | b"alert" | b"emerg" | b"emergency" | b"panic"
            | b"dpanic" | b"ftl" | b"f" => Level::Fatal,
            _ => return None,
        })
    }

    /// pino / bunyan numeric levels (10 trace … 60 fatal) and syslog
    /// severities are not told apart by value alone; numbers of 10 and more
    /// are read as pino's.
    pub fn from_number(n: f64) -> Option<Level> {
        if !n.is_finite() || n < 10.0 {
            return None;
        }
        Some(match n as i64 {
            ..=19 => Level::Trace,
            20..=29 => Level::Debug,
            30..=39 => Level::Info,
            40..=49 => Level::Warn,
            50..=59 => Level::Error,
            _ => Level::Fatal,
        })
    }
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The container output a line was written to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StdStream {
    #[default]
    Stdout,
    Stderr,
}

impl StdStream {
    pub fn as_str(self) -> &'static str {
        match self {
            StdStream::Stdout => "stdout",
            StdStream::Stderr => "stderr",
        }
    }

    pub fn parse(s: &str) -> Option<StdStream> {
        match s {
            "stdout" => Some(StdStream::Stdout),
            "stderr" => Some(StdStream::Stderr),
            _ => None,
        }
    }
}

/// One log line of one container.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRecord {
    /// Nanoseconds since the epoch (CRI gives ns, Fluent Bit's date key µs).
    pub timestamp_ns: i64,
    pub stream: StdStream,
    /// The line, without its trailing newline.
    pub line: String,
    /// A CRI partial line (`_p=P`): the line continues in the next record.
    pub partial: bool,
    /// The line was longer than [`MAX_LINE_BYTES`] and was cut.
    pub truncated: bool,
    pub level: Option<Level>,
    /// Extra fields of the record (not the kubernetes metadata) as a JSON
    /// object, at most [`MAX_FIELDS_BYTES`].
    pub fields: Option<String>,
}

impl LogRecord {
    /// Bytes this record stands for (line and fields), for size accounting.
    pub fn raw_len(&self) -> usize {
        self.line.len() + self.fields.as_ref().map_or(0, String::len)
    }
}

/// The identity of a log stream: one container of one pod.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LogStreamKey {
    pub cluster: String,
    pub namespace: String,
    pub pod: String,
    pub container: String,
}

impl LogStreamKey {
    pub fn new(
        cluster: impl Into<String>,
        namespace: impl Into<String>,
        pod: impl Into<String>,
        container: impl Into<String>,
    ) -> Self {
        LogStreamKey {
            cluster: cluster.into(),
            namespace: namespace.into(),
            pod: pod.into(),
            container: container.into(),
        }
    }
}

/// What is known about a stream, stored once per stream (not per line).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogStreamMeta {
    /// Pod labels, at most [`MAX_STREAM_LABELS`], each bounded.
    pub labels: BTreeMap<String, String>,
    /// The node (Fluent Bit's `host`).
    pub node: String,
    pub image: String,
    pub pod_id: String,
    pub container_id: String,
    /// The pod's workload, when it can be named ([`workload_of`]).
    pub workload: Option<Workload>,
}

impl LogStreamMeta {
    /// Inserts a label if the label set has room and both parts fit the
    /// bounds; returns false when it was left out.
    pub fn insert_label(&mut self, name: &str, value: &str) -> bool {
        if self.labels.len() >= MAX_STREAM_LABELS
            || name.len() > MAX_LABEL_BYTES
            || value.len() > MAX_LABEL_BYTES
            || name.is_empty()
        {
            return false;
        }
        self.labels.insert(name.to_string(), value.to_string());
        true
    }
}

/// Cuts `s` to at most `max` bytes at a character boundary; true if cut.
pub fn truncate_utf8(s: &mut String, max: usize) -> bool {
    if s.len() <= max {
        return false;
    }
    let mut end = max;
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    s.truncate(end);
    true
}

/// Names a pod's workload from its labels and name, for pods whose owner is
/// not in the record: Deployments (`pod-template-hash`), StatefulSets,
/// DaemonSets (`controller-revision-hash` + `pod-template-generation`), Jobs
/// and CronJobs (`job-name`). `None` for a bare pod.
pub fn workload_of(pod: &str, labels: &BTreeMap<String, String>) -> Option<Workload> {
    let w = |kind: &str, name: &str| {
        (!name.is_empty()).then(|| Workload {
            kind: kind.to_string(),
            name: name.to_string(),
        })
    };
    if let Some(job) = labels
        .get("batch.kubernetes.io/job-name")
        .or_else(|| labels.get("job-name"))
    {
        // A CronJob's Job is `<cronjob>-<scheduled minutes>`.
        if let Some((base, suffix)) = job.rsplit_once('-') {
            if suffix.len() >= 8 && suffix.bytes().all(|b| b.is_ascii_digit()) {
                return w("CronJob", base);
            }
        }
        return w("Job", job);
    }
    if let Some(hash) = labels.get("pod-template-hash") {
        // `<deployment>-<hash>-<5 random>`.
        let rs = pod.rsplit_once('-').map_or(pod, |(a, _)| a);
        if let Some(dep) = rs
            .strip_suffix(hash.as_str())
            .and_then(|d| d.strip_suffix('-'))
        {
            return w("Deployment", dep);
        }
        return w("ReplicaSet", rs);
    }
    if labels.contains_key("statefulset.kubernetes.io/pod-name")
        || labels.contains_key("apps.kubernetes.io/pod-index")
    {
        if let Some((base, idx)) = pod.rsplit_once('-') {
            if idx.bytes().all(|b| b.is_ascii_digit()) {
                return w("StatefulSet", base);
            }
        }
    }
    if labels.contains_key("controller-revision-hash") {
        if let Some((base, _)) = pod.rsplit_once('-') {
            let kind = if labels.contains_key("pod-template-generation") {
                "DaemonSet"
            } else {
                "StatefulSet"
            };
            return w(kind, base);
        }
    }
    None
}

// ---------------------------------------------------------------------------
// Level extraction

/// Reads the severity of a line, or `None` when it has none that can be
/// told. In order: a JSON object's `level` / `severity` / `lvl` /
/// `log.level` / `levelname` / `loglevel` key (string or pino number), a
/// logfmt `level=` / `lvl=` / `severity=` pair, a klog header (`E0531
/// 16:08:37.123456 …`), then a level word among the first few tokens when it
/// is upper case, bracketed or followed by `:` (`ERROR`, `[warn]`, `WARN:`,
/// `<error>`, `production.ERROR:`).
pub fn extract_level(line: &str) -> Option<Level> {
    let t = line.trim_start();
    if t.starts_with('{') {
        if let Some(l) = json_level(t) {
            return Some(l);
        }
    } else if let Some(l) = logfmt_level(t) {
        return Some(l);
    }
    if let Some(l) = klog_level(t) {
        return Some(l);
    }
    prefix_level(t)
}

const JSON_LEVEL_KEYS: [&str; 7] = [
    "\"level\"",
    "\"severity\"",
    "\"lvl\"",
    "\"log.level\"",
    "\"levelname\"",
    "\"loglevel\"",
    "\"@l\"",
];

fn json_level(s: &str) -> Option<Level> {
    let b = s.as_bytes();
    for key in JSON_LEVEL_KEYS {
        let mut from = 0;
        while let Some(pos) = s[from..].find(key).map(|p| p + from) {
            from = pos + key.len();
            // A key, not text inside a string: the byte before it (spaces
            // skipped) opens the object or follows a comma.
            let before = b[..pos].iter().rev().find(|c| !c.is_ascii_whitespace());
            if !matches!(before, Some(b'{') | Some(b',')) {
                continue;
            }
            let mut i = from;
            while i < b.len() && b[i].is_ascii_whitespace() {
                i += 1;
            }
            if b.get(i) != Some(&b':') {
                continue;
            }
            i += 1;
            while i < b.len() && b[i].is_ascii_whitespace() {
                i += 1;
            }
            match b.get(i) {
                Some(b'"') => {
                    let rest = &s[i + 1..];
                    let end = rest.find('"')?;
                    if let Some(l) = Level::parse(&rest[..end]) {
                        return Some(l);
                    }
                }
                Some(c) if c.is_ascii_digit() => {
                    let end = b[i..]
                        .iter()
                        .position(|c| !c.is_ascii_digit() && *c != b'.')
                        .map_or(b.len(), |p| p + i);
                    if let Some(l) = s[i..end].parse::<f64>().ok().and_then(Level::from_number) {
                        return Some(l);
                    }
                }
                _ => {}
            }
        }
    }
    None
}

fn logfmt_level(s: &str) -> Option<Level> {
    for key in ["level=", "lvl=", "severity="] {
        let mut from = 0;
        while let Some(pos) = s[from..].find(key).map(|p| p + from) {
            from = pos + key.len();
            if pos > 0 && !s.as_bytes()[pos - 1].is_ascii_whitespace() {
                continue;
            }
            let rest = &s[from..];
            let v = match rest.strip_prefix('"') {
                Some(q) => q.split('"').next().unwrap_or(""),
                None => rest
                    .split(|c: char| c.is_ascii_whitespace())
                    .next()
                    .unwrap_or(""),
            };
            if let Some(l) = Level::parse(v) {
                return Some(l);
            }
        }
    }
    None
}

/// klog: `Lmmdd hh:mm:ss.uuuuuu threadid file:line] msg`.
fn klog_level(s: &str) -> Option<Level> {
    let b = s.as_bytes();
    if b.len() < 15 || b[5] != b' ' || !b[1..5].iter().all(u8::is_ascii_digit) {
        return None;
    }
    if !(b[6].is_ascii_digit() && b[7].is_ascii_digit() && b[8] == b':') {
        return None;
    }
    match b[0] {
        b'I' => Some(Level::Info),
        b'W' => Some(Level::Warn),
        b'E' => Some(Level::Error),
        b'F' => Some(Level::Fatal),
        _ => None,
    }
}

/// A level word among the first tokens of the line.
fn prefix_level(s: &str) -> Option<Level> {
    let head = &s.as_bytes()[..s.len().min(160)];
    let mut tokens = 0;
    let mut i = 0;
    while i < head.len() && tokens < 6 {
        // Skip separators and ANSI colour sequences.
        while i < head.len() {
            if head[i] == 0x1b {
                i += 1;
                if head.get(i) == Some(&b'[') {
                    while i < head.len() && !head[i].is_ascii_alphabetic() {
                        i += 1;
                    }
                    i += 1;
                }
                continue;
            }
            if head[i].is_ascii_whitespace() || head[i] == b'|' {
                i += 1;
                continue;
            }
            break;
        }
        if i >= head.len() {
            break;
        }
        let start = i;
        while i < head.len() && !head[i].is_ascii_whitespace() && head[i] != 0x1b {
            i += 1;
        }
        tokens += 1;
        if let Some(l) = token_level(&head[start..i], head.get(i).copied()) {
            return Some(l);
        }
    }
    None
}

fn token_level(tok: &[u8], after: Option<u8>) -> Option<Level> {
    let opened = matches!(tok.first(), Some(b'[' | b'<' | b'(' | b'{'));
    let mut t = tok;
    while let Some((&c, rest)) = t.split_first() {
        if matches!(c, b'[' | b'<' | b'(' | b'{') {
            t = rest;
        } else {
            break;
        }
    }
    // `production.ERROR:` (Laravel) and `logger.WARN`: the part after the last dot.
    if let Some(dot) = t.iter().rposition(|&c| c == b'.') {
        if t[..dot]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'_')
            && dot > 0
        {
            t = &t[dot + 1..];
        }
    }
    let word_end = t
        .iter()
        .position(|c| !c.is_ascii_alphabetic())
        .unwrap_or(t.len());
    if word_end == 0 || word_end > 11 {
        return None;
    }
    let word = &t[..word_end];
    let next = t.get(word_end).copied().or(after);
    let closed = matches!(next, Some(b']' | b'>' | b')' | b'}'));
    let colon = next == Some(b':');
    if let Some(c) = next {
        if c.is_ascii_alphanumeric() || c == b'_' || c == b'-' || c == b'.' || c == b'/' {
            return None;
        }
    }
    let upper = word.iter().all(u8::is_ascii_uppercase);
    // Single letters only in brackets (`[E]`) — too ambiguous otherwise.
    if word.len() == 1 && !(opened && closed) {
        return None;
    }
    if !(upper || (opened && closed) || colon) {
        return None;
    }
    // Words that are levels only when shouted (LOG, DEFAULT) or never alone.
    let w = std::str::from_utf8(word).ok()?;
    if matches!(
        w.to_ascii_lowercase().as_str(),
        "log"
            | "default"
            | "fine"
            | "finer"
            | "finest"
            | "alert"
            | "t"
            | "d"
            | "i"
            | "w"
            | "e"
            | "f"
    ) && !(upper && (colon || closed || word.len() == 1))
    {
        return None;
    }
    Level::parse(w)
}

// ---------------------------------------------------------------------------
// Timestamps with nanoseconds

/// Parses `YYYY-MM-DD[T ]HH:MM:SS[.fraction][Z|±HH:MM|±HHMM]` into epoch
/// nanoseconds: RFC 3339 (CRI `time`, RFC3339Nano), Fluent Bit's `iso8601`
/// and `java_sql_timestamp` (no zone: UTC). Fractions past nanoseconds are
/// cut. `None` when the text is not such a time.
pub fn parse_timestamp_ns(s: &str) -> Option<i64> {
    let b = s.trim().as_bytes();
    if b.len() < 19 {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let d = b.get(r)?;
        if !d.iter().all(u8::is_ascii_digit) {
            return None;
        }
        Some(d.iter().fold(0i64, |a, c| a * 10 + i64::from(c - b'0')))
    };
    if b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, sec) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || sec > 60 {
        return None;
    }
    let mut i = 19;
    let mut frac_ns = 0i64;
    if b.get(i) == Some(&b'.') || b.get(i) == Some(&b',') {
        i += 1;
        let start = i;
        let mut scale = 100_000_000i64;
        while i < b.len() && b[i].is_ascii_digit() {
            frac_ns += i64::from(b[i] - b'0') * scale;
            scale /= 10;
            i += 1;
        }
        if i == start {
            return None;
        }
    }
    let offset_s = match b.get(i) {
        None => 0,
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(&c @ (b'+' | b'-')) => {
            let rest = &b[i + 1..];
            let (hh, mm) = match rest.len() {
                5 if rest[2] == b':' => (num(i + 1..i + 3)?, num(i + 4..i + 6)?),
                4 => (num(i + 1..i + 3)?, num(i + 3..i + 5)?),
                2 => (num(i + 1..i + 3)?, 0),
                _ => return None,
            };
            let off = (hh * 60 + mm) * 60;
            if c == b'+' {
                off
            } else {
                -off
            }
        }
        _ => return None,
    };
    let days = days_from_civil(y, mo, d);
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset_s;
    secs.checked_mul(1_000_000_000)?.checked_add(frac_ns)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Formats epoch nanoseconds as RFC 3339 UTC with nine fraction digits
/// (`2024-05-31T16:08:37.123456789Z`).
pub fn format_rfc3339_ns(ns: i64) -> String {
    let secs = ns.div_euclid(1_000_000_000);
    let frac = ns.rem_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{frac:09}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

// ---------------------------------------------------------------------------
// Line filters

/// The `contains` and `regex` filters of a log query, compiled once.
/// `contains` is a case-sensitive substring; `regex` is Rust regex syntax
/// (`(?i)` for case-insensitive). Both must match when both are given.
#[derive(Clone, Debug, Default)]
pub struct LineFilter {
    contains: Option<regex::bytes::Regex>,
    contains_text: Option<String>,
    regex: Option<regex::Regex>,
}

/// Largest compiled regex accepted from a query.
const MAX_REGEX_SIZE: usize = 1 << 20;

impl LineFilter {
    pub fn new(contains: Option<&str>, regex: Option<&str>) -> Result<Self> {
        let contains = contains.filter(|c| !c.is_empty());
        let compiled_contains = contains
            .map(|c| {
                regex::bytes::RegexBuilder::new(&regex::escape(c))
                    .size_limit(MAX_REGEX_SIZE)
                    .build()
                    .map_err(|e| Error::InvalidRegex {
                        label: "contains".into(),
                        pattern: c.to_string(),
                        reason: e.to_string(),
                    })
            })
            .transpose()?;
        let regex = regex
            .filter(|r| !r.is_empty())
            .map(|r| {
                regex::RegexBuilder::new(r)
                    .size_limit(MAX_REGEX_SIZE)
                    .build()
                    .map_err(|e| Error::InvalidRegex {
                        label: "regex".into(),
                        pattern: r.to_string(),
                        reason: e.to_string(),
                    })
            })
            .transpose()?;
        Ok(LineFilter {
            contains: compiled_contains,
            contains_text: contains.map(str::to_string),
            regex,
        })
    }

    /// True when no filter is set.
    pub fn is_empty(&self) -> bool {
        self.contains.is_none() && self.regex.is_none()
    }

    pub fn contains_text(&self) -> Option<&str> {
        self.contains_text.as_deref()
    }

    pub fn regex_text(&self) -> Option<&str> {
        self.regex.as_ref().map(regex::Regex::as_str)
    }

    pub fn matches(&self, line: &str) -> bool {
        self.contains
            .as_ref()
            .is_none_or(|c| c.is_match(line.as_bytes()))
            && self.regex.as_ref().is_none_or(|r| r.is_match(line))
    }

    /// Marks the lines that match, for lines stored back to back in `text`
    /// (line `i` is `text[bounds[i]..bounds[i + 1]]`). The `contains` part
    /// runs once over the whole buffer, which is much faster than per line
    /// when matches are rare.
    pub fn mark(&self, text: &[u8], bounds: &[usize], out: &mut Vec<bool>) {
        let n = bounds.len().saturating_sub(1);
        out.clear();
        match &self.contains {
            None => out.resize(n, true),
            Some(c) => {
                out.resize(n, false);
                let mut at = bounds.first().copied().unwrap_or(0);
                let end = bounds.last().copied().unwrap_or(0);
                while at < end {
                    let Some(m) = c.find_at(&text[..end], at) else {
                        break;
                    };
                    // The line holding the match start.
                    let i = bounds
                        .partition_point(|&b| b <= m.start())
                        .saturating_sub(1);
                    if i >= n {
                        break;
                    }
                    if m.end() <= bounds[i + 1] {
                        out[i] = true;
                        at = bounds[i + 1];
                    } else {
                        // Spans into the next line: not a match of line i.
                        at = m.start() + 1;
                    }
                }
            }
        }
        if let Some(r) = &self.regex {
            for (i, keep) in out.iter_mut().enumerate() {
                if *keep {
                    let line = &text[bounds[i]..bounds[i + 1]];
                    *keep = std::str::from_utf8(line).is_ok_and(|l| r.is_match(l));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_from_json_lines() {
        let cases = [
            (
                r#"{"level":"error","ts":"2024-05-31T16:08:38.004Z","msg":"upstream timeout"}"#,
                Some(Level::Error),
            ),
            (
                r#"{"ts":1, "severity" : "WARNING", "msg":"x"}"#,
                Some(Level::Warn),
            ),
            (r#"{"lvl":"dbug"}"#, None),
            (r#"{"lvl":"dbg"}"#, Some(Level::Debug)),
            (r#"{"level":30,"msg":"pino info"}"#, Some(Level::Info)),
            (r#"{"level":50,"msg":"pino error"}"#, Some(Level::Error)),
            (r#"{"log.level":"info","message":"ecs"}"#, Some(Level::Info)),
            (r#"{"levelname":"CRITICAL"}"#, Some(Level::Fatal)),
            // A "level" inside a string value is not the key.
            (r#"{"msg":"set \"level\": \"error\" in config"}"#, None),
            (r#"{"msg":"no level here"}"#, None),
        ];
        for (line, want) in cases {
            assert_eq!(extract_level(line), want, "{line}");
        }
    }

    #[test]
    fn levels_from_logfmt_klog_and_prefixes() {
        let cases = [
            (
                r#"time="2024-05-31T16:08:37Z" level=warning msg="disk almost full""#,
                Some(Level::Warn),
            ),
            (
                "ts=2024-05-31T16:08:37Z caller=main.go:12 level=error err=boom",
                Some(Level::Error),
            ),
            (r#"level="info" msg=ok"#, Some(Level::Info)),
            (
                "E0531 16:08:37.123456       1 reflector.go:138] failed to list",
                Some(Level::Error),
            ),
            (
                "I0531 16:08:37.123456       1 main.go:12] starting",
                Some(Level::Info),
            ),
            ("W0531 16:08:37.123456 1 x.go:1] careful", Some(Level::Warn)),
            ("ERROR something broke", Some(Level::Error)),
            (
                "2024-05-31 16:08:37,123 WARN  [main] o.a.k.Foo - slow",
                Some(Level::Warn),
            ),
            (
                "2024/05/31 16:08:37 [error] 7#7: *1 connect() failed",
                Some(Level::Error),
            ),
            (
                "[2024-05-31 16:08:37] production.ERROR: Undefined index",
                Some(Level::Error),
            ),
            ("WARN: deprecated flag", Some(Level::Warn)),
            ("Error: connection refused", Some(Level::Error)),
            ("ERROR:root:boom", Some(Level::Error)),
            (
                "2024-05-31T16:08:37.004Z\tINFO\tserver started",
                Some(Level::Info),
            ),
            (
                "[2024-05-31T16:08:37Z DEBUG my_crate] hello",
                Some(Level::Debug),
            ),
            ("<warn> something", Some(Level::Warn)),
            (
                "2024-05-31 16:08:37.123 UTC [1] LOG:  database system is ready",
                Some(Level::Info),
            ),
            (
                "2024-05-31 16:08:37.123 UTC [1] FATAL:  password authentication failed",
                Some(Level::Fatal),
            ),
            (
                "\u{1b}[32m INFO\u{1b}[0m kube_insight: started",
                Some(Level::Info),
            ),
            // Not levels.
            (
                "10.244.0.1 - - [31/May/2024:16:08:37 +0000] \"GET /healthz HTTP/1.1\" 200 2",
                None,
            ),
            ("no info available for this request", None),
            ("errors are counted below", None),
            ("information overload", None),
            ("the ERRORS table", None),
            ("", None),
            ("E", None),
        ];
        for (line, want) in cases {
            assert_eq!(extract_level(line), want, "{line:?}");
        }
    }

    #[test]
    fn level_codes_round_trip() {
        for l in Level::ALL {
            assert_eq!(Level::from_code(l.code()), Some(l));
            assert_eq!(Level::parse(l.as_str()), Some(l));
        }
        assert_eq!(Level::from_code(0), None);
        assert_eq!(Level::from_code(7), None);
    }

    #[test]
    fn timestamps_with_nanoseconds() {
        let base = 1_717_171_717_000_000_000i64; // 2024-05-31T16:08:37Z
        assert_eq!(
            parse_timestamp_ns("2024-05-31T16:08:37.123456789Z"),
            Some(base + 123_456_789)
        );
        assert_eq!(
            parse_timestamp_ns("2024-05-31T16:08:37.123456Z"),
            Some(base + 123_456_000)
        );
        assert_eq!(
            parse_timestamp_ns("2024-05-31 16:08:37.123456"),
            Some(base + 123_456_000)
        );
        assert_eq!(parse_timestamp_ns("2024-05-31T16:08:37Z"), Some(base));
        assert_eq!(
            parse_timestamp_ns("2024-05-31T18:08:37.5+02:00"),
            Some(base + 500_000_000)
        );
        assert_eq!(parse_timestamp_ns("2024-05-31T14:08:37-0200"), Some(base));
        assert_eq!(
            parse_timestamp_ns("2024-05-31T16:08:37.1234567891234Z"),
            Some(base + 123_456_789)
        );
        assert_eq!(
            parse_timestamp_ns("1969-12-31T23:59:59.5Z"),
            Some(-500_000_000)
        );
        for bad in [
            "",
            "2024-05-31",
            "2024-13-01T00:00:00Z",
            "2024-05-31T16:08:37Q",
            "yesterday at noon!!",
            "2024-05-31T16:08:37.",
        ] {
            assert_eq!(parse_timestamp_ns(bad), None, "{bad}");
        }
    }

    #[test]
    fn rfc3339_ns_round_trips() {
        for ns in [
            0i64,
            1_717_171_717_123_456_789,
            -500_000_000,
            951_782_400_000_000_001,
        ] {
            let s = format_rfc3339_ns(ns);
            assert_eq!(parse_timestamp_ns(&s), Some(ns), "{s}");
        }
        assert_eq!(
            format_rfc3339_ns(1_717_171_717_123_456_789),
            "2024-05-31T16:08:37.123456789Z"
        );
    }

    #[test]
    fn workloads_from_labels() {
        let l = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let w = workload_of(
            "frontend-7c9d8f6b5-x2k4q",
            &l(&[("app", "frontend"), ("pod-template-hash", "7c9d8f6b5")]),
        )
        .unwrap();
        assert_eq!(
            (w.kind.as_str(), w.name.as_str()),
            ("Deployment", "frontend")
        );
        let w = workload_of(
            "db-2",
            &l(&[
                ("statefulset.kubernetes.io/pod-name", "db-2"),
                ("controller-revision-hash", "db-5d"),
            ]),
        )
        .unwrap();
        assert_eq!((w.kind.as_str(), w.name.as_str()), ("StatefulSet", "db"));
        let w = workload_of(
            "fluent-bit-x7k2p",
            &l(&[
                ("controller-revision-hash", "6f"),
                ("pod-template-generation", "3"),
            ]),
        )
        .unwrap();
        assert_eq!(
            (w.kind.as_str(), w.name.as_str()),
            ("DaemonSet", "fluent-bit")
        );
        let w = workload_of(
            "backup-28612345-abcde",
            &l(&[("job-name", "backup-28612345")]),
        )
        .unwrap();
        assert_eq!((w.kind.as_str(), w.name.as_str()), ("CronJob", "backup"));
        let w = workload_of(
            "migrate-abcde",
            &l(&[("batch.kubernetes.io/job-name", "migrate")]),
        )
        .unwrap();
        assert_eq!((w.kind.as_str(), w.name.as_str()), ("Job", "migrate"));
        assert_eq!(workload_of("lonely", &l(&[("app", "x")])), None);
    }

    #[test]
    fn line_filter_contains_and_regex() {
        let f = LineFilter::new(Some("timeout"), None).unwrap();
        assert!(f.matches("upstream timeout after 5s"));
        assert!(!f.matches("upstream TIMEOUT"));
        let f = LineFilter::new(None, Some("(?i)time(out)?")).unwrap();
        assert!(f.matches("upstream TIMEOUT"));
        let f = LineFilter::new(Some("GET"), Some(r"\s5\d\d\s")).unwrap();
        assert!(f.matches("GET /x 503 1"));
        assert!(!f.matches("GET /x 200 1"));
        let e = LineFilter::new(None, Some("(")).unwrap_err().to_string();
        assert!(e.contains("\"(\"") && e.contains("regex"), "{e}");
        assert!(LineFilter::new(Some(""), Some("")).unwrap().is_empty());
    }

    #[test]
    fn line_filter_marks_lines_in_a_buffer_without_matching_across_lines() {
        let lines = ["abc", "def", "abcdef", "xyz", "ünïcødé ok"];
        let mut text = Vec::new();
        let mut bounds = vec![0];
        for l in lines {
            text.extend_from_slice(l.as_bytes());
            bounds.push(text.len());
        }
        let mut out = Vec::new();
        LineFilter::new(Some("cd"), None)
            .unwrap()
            .mark(&text, &bounds, &mut out);
        assert_eq!(
            out,
            vec![false, false, true, false, false],
            "\"abc\"+\"def\" must not match cd"
        );
        LineFilter::new(Some("ïcø"), None)
            .unwrap()
            .mark(&text, &bounds, &mut out);
        assert_eq!(out, vec![false, false, false, false, true]);
        LineFilter::new(None, Some("^(abc|xyz)$"))
            .unwrap()
            .mark(&text, &bounds, &mut out);
        assert_eq!(out, vec![true, false, false, true, false]);
        LineFilter::default().mark(&text, &bounds, &mut out);
        assert_eq!(out, vec![true; 5]);
    }

    #[test]
    fn truncation_keeps_char_boundaries() {
        let mut s = "aé".repeat(10);
        assert!(truncate_utf8(&mut s, 4));
        assert_eq!(s, "aéa");
        let mut s = "short".to_string();
        assert!(!truncate_utf8(&mut s, 10));
    }
}
