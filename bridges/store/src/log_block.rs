//! The log block codec and the read path every backend shares: a block
//! holds records of one stream (sorted by time) as a meta frame (time
//! deltas, flags, lengths) and a text frame, each raw or zstd; pages are
//! assembled newest first from candidate blocks with a heap, loading a
//! block only when its newest record could be next.

use crate::error::{Error, Result};
use crate::logs::{LogCursor, LogPage, LogQuery, LogRatePoint, LogRateQuery, LogRow};
use futures::stream::{FuturesOrdered, StreamExt};
use kube_insight_core::log::{LogRecord, LogStreamKey, StdStream};
use kube_insight_core::{Level, TimeRange};
use std::cmp::{Ordering as CmpOrdering, Reverse};
use std::collections::{BTreeMap, BinaryHeap};
use std::future::Future;

/// Level slots in a block's counts: 0 = no level, then [`Level::code`].
pub const LEVEL_SLOTS: usize = 7;

pub const BLOCK_VERSION: u8 = 1;
pub const CODEC_RAW: u8 = 0;
pub const CODEC_ZSTD: u8 = 1;
/// A frame larger than this when decompressed is corrupt.
pub const MAX_FRAME_BYTES: usize = 1 << 30;

pub const FLAG_STDERR: u8 = 1;
pub const FLAG_PARTIAL: u8 = 2;
pub const FLAG_TRUNCATED: u8 = 4;
pub const LEVEL_SHIFT: u8 = 3;

/// One record as the codec sees it.
#[derive(Clone, Copy)]
pub struct RecView<'a> {
    pub ts: i64,
    pub flags: u8,
    pub line: &'a [u8],
    pub fields: Option<&'a [u8]>,
}

impl<'a> RecView<'a> {
    pub fn of(r: &'a LogRecord) -> Self {
        let mut flags = r.level.map_or(0, Level::code) << LEVEL_SHIFT;
        if r.stream == StdStream::Stderr {
            flags |= FLAG_STDERR;
        }
        if r.partial {
            flags |= FLAG_PARTIAL;
        }
        if r.truncated {
            flags |= FLAG_TRUNCATED;
        }
        RecView {
            ts: r.timestamp_ns,
            flags,
            line: r.line.as_bytes(),
            fields: r.fields.as_deref().map(str::as_bytes),
        }
    }
}

pub fn level_slot(flags: u8) -> usize {
    usize::from((flags >> LEVEL_SHIFT) & 7).min(LEVEL_SLOTS - 1)
}

#[derive(Debug, Default)]
pub struct BlockStats {
    pub min_ns: i64,
    pub max_ns: i64,
    pub count: usize,
    pub raw_bytes: usize,
    pub levels: [u32; LEVEL_SLOTS],
}

impl BlockStats {
    pub fn levels_blob(&self) -> Vec<u8> {
        self.levels.iter().flat_map(|c| c.to_le_bytes()).collect()
    }
}

pub fn levels_from_blob(b: &[u8]) -> [u32; LEVEL_SLOTS] {
    let mut out = [0u32; LEVEL_SLOTS];
    for (o, c) in out.iter_mut().zip(b.chunks_exact(4)) {
        *o = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
    }
    out
}

pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub fn get_varint(b: &[u8], at: &mut usize) -> Result<u64> {
    let mut v = 0u64;
    let mut shift = 0;
    loop {
        let byte = *b
            .get(*at)
            .ok_or_else(|| corrupt("varint runs past the end"))?;
        *at += 1;
        v |= u64::from(byte & 0x7f) << shift;
        if byte < 0x80 {
            return Ok(v);
        }
        shift += 7;
        if shift > 63 {
            return Err(corrupt("varint too long"));
        }
    }
}

pub fn corrupt(what: &str) -> Error {
    Error::Corrupt(format!("log block: {what}"))
}

pub fn put_frame(
    out: &mut Vec<u8>,
    raw: &[u8],
    zstd: Option<&mut zstd::bulk::Compressor<'static>>,
) {
    if let Some(c) = zstd {
        if let Ok(z) = c.compress(raw) {
            if z.len() < raw.len() {
                out.push(CODEC_ZSTD);
                put_varint(out, raw.len() as u64);
                put_varint(out, z.len() as u64);
                out.extend_from_slice(&z);
                return;
            }
        }
    }
    out.push(CODEC_RAW);
    put_varint(out, raw.len() as u64);
    put_varint(out, raw.len() as u64);
    out.extend_from_slice(raw);
}

pub fn get_frame<'a>(b: &'a [u8], at: &mut usize) -> Result<std::borrow::Cow<'a, [u8]>> {
    let codec = *b.get(*at).ok_or_else(|| corrupt("missing frame"))?;
    *at += 1;
    let raw_len = get_varint(b, at)? as usize;
    let len = get_varint(b, at)? as usize;
    let end = at
        .checked_add(len)
        .filter(|&e| e <= b.len())
        .ok_or_else(|| corrupt("frame runs past the end"))?;
    let stored = &b[*at..end];
    *at = end;
    match codec {
        CODEC_RAW => Ok(std::borrow::Cow::Borrowed(stored)),
        CODEC_ZSTD => {
            if raw_len > MAX_FRAME_BYTES {
                return Err(corrupt("frame too large"));
            }
            let out = zstd::bulk::decompress(stored, raw_len)
                .map_err(|e| corrupt(&format!("zstd: {e}")))?;
            if out.len() != raw_len {
                return Err(corrupt("frame length mismatch"));
            }
            Ok(std::borrow::Cow::Owned(out))
        }
        _ => Err(corrupt("unknown frame codec")),
    }
}

/// Encodes records (sorted by time) into a block.
pub fn encode_block(
    recs: &[RecView<'_>],
    zstd: Option<&mut zstd::bulk::Compressor<'static>>,
) -> (Vec<u8>, BlockStats) {
    let mut st = BlockStats {
        min_ns: recs.first().map_or(0, |r| r.ts),
        max_ns: recs.last().map_or(0, |r| r.ts),
        count: recs.len(),
        ..Default::default()
    };
    let mut meta = Vec::with_capacity(recs.len() * 5);
    let text_len: usize = recs
        .iter()
        .map(|r| r.line.len() + r.fields.map_or(0, <[u8]>::len))
        .sum();
    let mut text = Vec::with_capacity(text_len);
    let mut prev = st.min_ns;
    for r in recs {
        let delta = r.ts.wrapping_sub(prev);
        prev = r.ts;
        put_varint(&mut meta, ((delta << 1) ^ (delta >> 63)) as u64);
        meta.push(r.flags);
        put_varint(&mut meta, r.line.len() as u64);
        put_varint(&mut meta, r.fields.map_or(0, |f| f.len() as u64 + 1));
        text.extend_from_slice(r.line);
        st.levels[level_slot(r.flags)] += 1;
        st.min_ns = st.min_ns.min(r.ts);
        st.max_ns = st.max_ns.max(r.ts);
    }
    for r in recs {
        if let Some(f) = r.fields {
            text.extend_from_slice(f);
        }
    }
    st.raw_bytes = text.len();
    let mut out = Vec::with_capacity(meta.len() + text.len() / 3 + 32);
    out.push(BLOCK_VERSION);
    put_varint(&mut out, recs.len() as u64);
    put_varint(&mut out, st.min_ns as u64);
    match zstd {
        Some(z) => {
            put_frame(&mut out, &meta, Some(&mut *z));
            put_frame(&mut out, &text, Some(z));
        }
        None => {
            put_frame(&mut out, &meta, None);
            put_frame(&mut out, &text, None);
        }
    }
    (out, st)
}

/// A decoded block: columns, and the text with line `i` at
/// `text[line_bounds[i]..line_bounds[i + 1]]`.
#[derive(Default)]
pub struct Block {
    pub ts: Vec<i64>,
    pub flags: Vec<u8>,
    pub line_bounds: Vec<usize>,
    /// Fields of record `i`, as a range of `text`.
    pub fields: Vec<Option<(usize, usize)>>,
    pub text: Vec<u8>,
}

/// Decodes a block; the text frame only when `with_text`.
pub fn decode_block(data: &[u8], with_text: bool) -> Result<Block> {
    if data.first() != Some(&BLOCK_VERSION) {
        return Err(corrupt("unknown block version"));
    }
    let mut at = 1;
    let n = get_varint(data, &mut at)? as usize;
    let base = get_varint(data, &mut at)? as i64;
    if n > MAX_FRAME_BYTES / 4 {
        return Err(corrupt("record count too large"));
    }
    let meta = get_frame(data, &mut at)?;
    let mut b = Block {
        ts: Vec::with_capacity(n),
        flags: Vec::with_capacity(n),
        line_bounds: Vec::with_capacity(n + 1),
        fields: Vec::with_capacity(n),
        text: Vec::new(),
    };
    let mut m = 0;
    let mut prev = base;
    let mut line_at = 0usize;
    let mut field_lens = Vec::with_capacity(n);
    b.line_bounds.push(0);
    for _ in 0..n {
        let z = get_varint(&meta, &mut m)?;
        let delta = ((z >> 1) as i64) ^ -((z & 1) as i64);
        prev = prev.wrapping_add(delta);
        b.ts.push(prev);
        b.flags
            .push(*meta.get(m).ok_or_else(|| corrupt("flags past the end"))?);
        m += 1;
        line_at += get_varint(&meta, &mut m)? as usize;
        b.line_bounds.push(line_at);
        field_lens.push(get_varint(&meta, &mut m)? as usize);
    }
    if with_text {
        b.text = get_frame(data, &mut at)?.into_owned();
        let mut f_at = line_at;
        for fl in field_lens {
            if fl == 0 {
                b.fields.push(None);
            } else {
                b.fields.push(Some((f_at, f_at + fl - 1)));
                f_at += fl - 1;
            }
        }
        if f_at != b.text.len() {
            return Err(corrupt("text length does not match the record lengths"));
        }
    }
    Ok(b)
}

impl Block {
    pub fn view(&self, i: usize) -> RecView<'_> {
        RecView {
            ts: self.ts[i],
            flags: self.flags[i],
            line: &self.text[self.line_bounds[i]..self.line_bounds[i + 1]],
            fields: self.fields[i].map(|(a, b)| &self.text[a..b]),
        }
    }

    pub fn record(&self, i: usize) -> LogRecord {
        let v = self.view(i);
        LogRecord {
            timestamp_ns: v.ts,
            stream: if v.flags & FLAG_STDERR != 0 {
                StdStream::Stderr
            } else {
                StdStream::Stdout
            },
            line: String::from_utf8_lossy(v.line).into_owned(),
            partial: v.flags & FLAG_PARTIAL != 0,
            truncated: v.flags & FLAG_TRUNCATED != 0,
            level: Level::from_code((v.flags >> LEVEL_SHIFT) & 7),
            fields: v.fields.map(|f| String::from_utf8_lossy(f).into_owned()),
        }
    }
}

// ---------------------------------------------------------------------------
// Read path

/// A stream a read covers.
pub struct ReadStream {
    pub hash: u64,
    pub key: LogStreamKey,
    pub workload: Option<String>,
}

/// A block that may hold matching records; `id` is the backend's key.
pub struct Candidate<I> {
    pub id: I,
    /// Index into the read's streams.
    pub stream: usize,
    /// Orders blocks of one stream by write (for equal timestamps).
    pub first_seq: i64,
    pub max_ns: i64,
    pub raw_bytes: usize,
}

/// Whether a block's level counts have a record the mask keeps.
pub fn has_levels(levels_blob: &[u8], mask: &[bool; LEVEL_SLOTS]) -> bool {
    let counts = levels_from_blob(levels_blob);
    counts.iter().zip(mask).any(|(&c, &m)| m && c > 0)
}

/// Inclusive nanosecond bounds of a millisecond range.
pub fn ns_bounds(r: &TimeRange) -> (i64, i64) {
    (
        r.start_ms.saturating_mul(1_000_000),
        r.end_ms.saturating_mul(1_000_000).saturating_add(999_999),
    )
}

pub fn level_mask(levels: &[Option<Level>]) -> [bool; LEVEL_SLOTS] {
    if levels.is_empty() {
        return [true; LEVEL_SLOTS];
    }
    let mut m = [false; LEVEL_SLOTS];
    for l in levels {
        m[usize::from(l.map_or(0, Level::code))] = true;
    }
    m
}

/// The nanosecond bounds a page reads (the cursor lowers the top), `None`
/// when nothing can match.
pub fn page_bounds(q: &LogQuery) -> Option<(i64, i64)> {
    let (lo, mut hi) = ns_bounds(&q.range);
    if let Some(c) = q.cursor {
        hi = hi.min(c.timestamp_ns);
    }
    (lo <= hi).then_some((lo, hi))
}

/// A row waiting in the merge heap; the greatest is returned first.
struct Pending {
    ts: i64,
    stream_hash: u64,
    first_seq: i64,
    idx: usize,
    stream: usize,
    record: LogRecord,
}

impl Pending {
    fn key(&self) -> (i64, Reverse<u64>, i64, usize) {
        (self.ts, Reverse(self.stream_hash), self.first_seq, self.idx)
    }
}

impl PartialEq for Pending {
    fn eq(&self, o: &Self) -> bool {
        self.key() == o.key()
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, o: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(o))
    }
}
impl Ord for Pending {
    fn cmp(&self, o: &Self) -> CmpOrdering {
        self.key().cmp(&o.key())
    }
}

/// One page, newest first, from the candidate blocks of `streams`.
///
/// Blocks are read in the order the page consumes them, with up to
/// `prefetch` loads in flight ahead of it (1: one at a time, for a local
/// database; a networked one passes more, so a `contains` over many blocks
/// waits for one round trip per `prefetch` blocks, not per block). At most
/// `prefetch - 1` blocks are read beyond what the page needed.
pub async fn page<I, F, Fut>(
    streams: &[ReadStream],
    mut cands: Vec<Candidate<I>>,
    q: &LogQuery,
    prefetch: usize,
    mut load: F,
) -> Result<LogPage>
where
    F: FnMut(&Candidate<I>, bool) -> Fut,
    Fut: Future<Output = Result<Block>>,
{
    let limit = q.limit.max(1);
    let Some((lo, hi)) = page_bounds(q) else {
        return Ok(LogPage::default());
    };
    let mask = level_mask(&q.levels);
    cands.sort_by_key(|c| Reverse(c.max_ns));
    // The (time, stream) pair of the cursor: rows after it in the order.
    let cursor_pair = q.cursor.map(|c| (c.timestamp_ns, Reverse(c.stream_hash)));
    let mut skip_left = q.cursor.map_or(0, |c| c.skip);
    let mut heap: BinaryHeap<Pending> = BinaryHeap::new();
    let mut marks = Vec::new();
    let mut scanned = 0usize;
    let mut next = 0usize;
    let mut rows = Vec::with_capacity(limit.min(10_000));
    let mut last: Option<(i64, u64)> = None;
    let mut run: u32 = 0;
    let mut blocks = Prefetch::new(prefetch);
    loop {
        while next < cands.len() && heap.peek().is_none_or(|top| top.ts <= cands[next].max_ns) {
            blocks.fill(&cands, next, true, &mut load);
            let c = &cands[next];
            next += 1;
            scanned = scanned.saturating_add(c.raw_bytes);
            if scanned > q.max_scan_bytes {
                return Err(Error::LimitExceeded {
                    what: "log bytes scanned",
                    limit: q.max_scan_bytes,
                });
            }
            let b = blocks.next().await?;
            q.filter.mark(&b.text, &b.line_bounds, &mut marks);
            let hash = streams[c.stream].hash;
            for i in 0..b.ts.len() {
                let ts = b.ts[i];
                if ts < lo || ts > hi || !marks[i] || !mask[level_slot(b.flags[i])] {
                    continue;
                }
                if cursor_pair.is_some_and(|cp| (ts, Reverse(hash)) > cp) {
                    continue;
                }
                heap.push(Pending {
                    ts,
                    stream_hash: hash,
                    first_seq: c.first_seq,
                    idx: i,
                    stream: c.stream,
                    record: b.record(i),
                });
            }
        }
        let Some(p) = heap.pop() else {
            break;
        };
        let pair = (p.ts, Reverse(p.stream_hash));
        if skip_left > 0 && Some(pair) == cursor_pair {
            skip_left -= 1;
            continue;
        }
        if last == Some((p.ts, p.stream_hash)) {
            run += 1;
        } else {
            last = Some((p.ts, p.stream_hash));
            run = 1;
        }
        let st = &streams[p.stream];
        rows.push(LogRow {
            key: st.key.clone(),
            workload: st.workload.clone(),
            record: p.record,
        });
        if rows.len() >= limit {
            break;
        }
    }
    let more = rows.len() >= limit && (!heap.is_empty() || next < cands.len());
    let next_cursor = match (more, last) {
        (true, Some((ts, hash))) => {
            let carried = match q.cursor {
                Some(c) if c.timestamp_ns == ts && c.stream_hash == hash => c.skip,
                _ => 0,
            };
            Some(LogCursor {
                timestamp_ns: ts,
                stream_hash: hash,
                skip: carried + run,
            })
        }
        _ => None,
    };
    Ok(LogPage {
        rows,
        next_cursor,
        scanned_bytes: scanned as u64,
    })
}

/// Checks a rate query's step and point count.
pub fn check_rate(q: &LogRateQuery) -> Result<()> {
    if q.step_ms <= 0 {
        return Err(Error::InvalidQuery(format!(
            "log rate step {} ms: must be positive",
            q.step_ms
        )));
    }
    let buckets = (q.range.end_ms.div_euclid(q.step_ms) - q.range.start_ms.div_euclid(q.step_ms))
        .saturating_add(1);
    if buckets > q.max_points as i64 {
        return Err(Error::LimitExceeded {
            what: "log rate points",
            limit: q.max_points,
        });
    }
    Ok(())
}

/// Block loads in flight ahead of the candidate being consumed, in
/// candidate order.
struct Prefetch<Fut: Future> {
    depth: usize,
    /// Candidates whose load has started.
    issued: usize,
    loading: FuturesOrdered<Fut>,
}

impl<Fut: Future<Output = Result<Block>>> Prefetch<Fut> {
    fn new(depth: usize) -> Self {
        Prefetch {
            depth: depth.max(1),
            issued: 0,
            loading: FuturesOrdered::new(),
        }
    }

    /// Starts loads up to `depth` candidates from `next` (the one consumed next).
    fn fill<I, F>(&mut self, cands: &[Candidate<I>], next: usize, with_text: bool, load: &mut F)
    where
        F: FnMut(&Candidate<I>, bool) -> Fut,
    {
        while self.issued < cands.len() && self.issued < next + self.depth {
            self.loading.push_back(load(&cands[self.issued], with_text));
            self.issued += 1;
        }
    }

    /// The block of the next candidate.
    async fn next(&mut self) -> Result<Block> {
        match self.loading.next().await {
            Some(b) => b,
            None => Err(Error::Corrupt(
                "log block prefetch: no load in flight for the next candidate".into(),
            )),
        }
    }
}

/// Lines per step and level over the candidate blocks, read with up to
/// `prefetch` loads in flight (see [`page`]).
pub async fn rate<I, F, Fut>(
    cands: Vec<Candidate<I>>,
    q: &LogRateQuery,
    prefetch: usize,
    mut load: F,
) -> Result<Vec<LogRatePoint>>
where
    F: FnMut(&Candidate<I>, bool) -> Fut,
    Fut: Future<Output = Result<Block>>,
{
    check_rate(q)?;
    let (lo, hi) = ns_bounds(&q.range);
    let mask = level_mask(&q.levels);
    let with_text = !q.filter.is_empty();
    let mut counts: BTreeMap<(i64, u8), u64> = BTreeMap::new();
    let mut scanned = 0usize;
    let mut marks = Vec::new();
    let mut blocks = Prefetch::new(prefetch);
    for (n, c) in cands.iter().enumerate() {
        blocks.fill(&cands, n, with_text, &mut load);
        let b = blocks.next().await?;
        // Without a text filter only the small meta frame is read.
        scanned = scanned.saturating_add(if with_text {
            c.raw_bytes
        } else {
            b.ts.len() * 8
        });
        if scanned > q.max_scan_bytes {
            return Err(Error::LimitExceeded {
                what: "log bytes scanned",
                limit: q.max_scan_bytes,
            });
        }
        if with_text {
            q.filter.mark(&b.text, &b.line_bounds, &mut marks);
        }
        for (i, &ts) in b.ts.iter().enumerate() {
            let slot = level_slot(b.flags[i]);
            if ts < lo || ts > hi || !mask[slot] || (with_text && !marks[i]) {
                continue;
            }
            let bucket = ts.div_euclid(1_000_000).div_euclid(q.step_ms) * q.step_ms;
            *counts.entry((bucket, slot as u8)).or_default() += 1;
        }
    }
    Ok(counts
        .into_iter()
        .map(|((t, slot), count)| LogRatePoint {
            timestamp_ms: t,
            level: Level::from_code(slot),
            count,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::logs::LogSelector;

    fn rec(ts: i64, line: &str, level: Option<Level>, fields: Option<&str>) -> LogRecord {
        LogRecord {
            timestamp_ns: ts,
            stream: if ts % 2 == 0 {
                StdStream::Stdout
            } else {
                StdStream::Stderr
            },
            line: line.to_string(),
            partial: ts % 3 == 0,
            truncated: ts % 5 == 0,
            level,
            fields: fields.map(str::to_string),
        }
    }

    #[test]
    fn block_codec_round_trips_every_field_raw_and_compressed() {
        let recs = vec![
            rec(-5, "", None, None),
            rec(0, "ünïcødé ✓", Some(Level::Error), Some(r#"{"a":1}"#)),
            rec(
                1_717_171_717_123_456_789,
                "x".repeat(5000).as_str(),
                Some(Level::Fatal),
                Some(""),
            ),
            rec(1_717_171_717_123_456_790, "last", Some(Level::Trace), None),
        ];
        let views: Vec<RecView<'_>> = recs.iter().map(RecView::of).collect();
        let mut z = zstd::bulk::Compressor::new(3).unwrap();
        for zstd in [false, true] {
            let (data, st) = if zstd {
                encode_block(&views, Some(&mut z))
            } else {
                encode_block(&views, None)
            };
            assert_eq!(
                (st.min_ns, st.max_ns, st.count),
                (-5, 1_717_171_717_123_456_790, 4)
            );
            assert_eq!(st.levels, [1, 1, 0, 0, 0, 1, 1]);
            let b = decode_block(&data, true).unwrap();
            let back: Vec<LogRecord> = (0..b.ts.len()).map(|i| b.record(i)).collect();
            assert_eq!(back, recs);
            let meta_only = decode_block(&data, false).unwrap();
            assert_eq!(meta_only.ts, b.ts);
            if zstd {
                assert!(data.len() < 1000, "5000 x's compress: {}", data.len());
            }
        }
    }

    #[test]
    fn corrupt_blocks_are_errors_not_panics() {
        let recs = [
            rec(1, "hello", None, None),
            rec(2, "world", None, Some("{}")),
        ];
        let views: Vec<RecView<'_>> = recs.iter().map(RecView::of).collect();
        let (data, _) = encode_block(&views, None);
        for cut in 0..data.len() {
            assert!(decode_block(&data[..cut], true).is_err(), "cut at {cut}");
        }
        let mut bad = data.clone();
        bad[0] = 9;
        assert!(decode_block(&bad, true).is_err());
    }

    /// 40 blocks of one stream, 10 records each, 1 s apart (newest last).
    fn blocks() -> Vec<Vec<u8>> {
        (0..40)
            .map(|b| {
                let recs: Vec<LogRecord> = (0..10)
                    .map(|i| {
                        let ts = (b * 10 + i) * 1_000_000_000;
                        rec(ts, &format!("line {b}-{i}"), None, None)
                    })
                    .collect();
                let views: Vec<RecView<'_>> = recs.iter().map(RecView::of).collect();
                encode_block(&views, None).0
            })
            .collect()
    }

    fn cands(data: &[Vec<u8>]) -> Vec<Candidate<usize>> {
        (0..data.len())
            .map(|b| Candidate {
                id: b,
                stream: 0,
                first_seq: b as i64,
                max_ns: (b as i64 * 10 + 9) * 1_000_000_000,
                raw_bytes: data[b].len(),
            })
            .collect()
    }

    #[test]
    fn prefetching_reads_the_same_page_and_at_most_depth_more_blocks() {
        let data = blocks();
        let streams = [ReadStream {
            hash: 7,
            key: LogStreamKey::new("c", "ns", "pod", "app"),
            workload: None,
        }];
        let range = TimeRange::new(0, 400_000).unwrap();
        for (limit, contains) in [(5, ""), (25, ""), (3, "line 2-"), (1000, "")] {
            let mut q = LogQuery::new(LogSelector::default(), range);
            q.limit = limit;
            if !contains.is_empty() {
                q.filter = kube_insight_core::log::LineFilter::new(Some(contains), None).unwrap();
            }
            let mut pages: Vec<(usize, Option<LogCursor>, usize, Vec<String>)> = Vec::new();
            for depth in [1, 4, 16] {
                let loads = std::cell::Cell::new(0usize);
                let page = futures::executor::block_on(page(
                    &streams,
                    cands(&data),
                    &q,
                    depth,
                    |c, text| {
                        loads.set(loads.get() + 1);
                        std::future::ready(decode_block(&data[c.id], text))
                    },
                ))
                .unwrap();
                let rows = page.rows.iter().map(|r| r.record.line.clone()).collect();
                pages.push((page.rows.len(), page.next_cursor, loads.get(), rows));
            }
            let (n1, cur1, loads1, rows1) = pages[0].clone();
            assert!(n1 > 0, "limit {limit} {contains:?}");
            for (n, cur, loads, rows) in &pages[1..] {
                assert_eq!(
                    (*n, *cur, rows),
                    (n1, cur1, &rows1),
                    "limit {limit} {contains:?}"
                );
                assert!(*loads <= (loads1 + 15).min(40), "{loads} loads vs {loads1}");
            }
        }
    }

    #[test]
    fn prefetching_rates_count_the_same() {
        let data = blocks();
        let q = LogRateQuery {
            selector: LogSelector::default(),
            range: TimeRange::new(0, 400_000).unwrap(),
            filter: kube_insight_core::log::LineFilter::default(),
            levels: vec![],
            step_ms: 60_000,
            max_scan_bytes: usize::MAX,
            max_points: 1_000,
        };
        let run = |depth| {
            futures::executor::block_on(rate(cands(&data), &q, depth, |c, text| {
                std::future::ready(decode_block(&data[c.id], text))
            }))
            .unwrap()
        };
        let one = run(1);
        assert_eq!(one.iter().map(|p| p.count).sum::<u64>(), 400);
        assert_eq!(run(8), one);
    }
}
