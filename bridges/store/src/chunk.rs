//! The Gorilla-style sample codec shared by every backend (the embedded
//! SQLite store today, Cassandra later). No storage code lives here.
//!
//! # Chunk format (version 1)
//!
//! ```text
//! byte 0      format version (1)
//! bytes 1..5  sample count, u32 big-endian (updated in place by the appender)
//! bits …      the sample stream, most significant bit first:
//!   sample 0  timestamp as a zig-zag varint (one byte at a time), value as 64 raw bits
//!   sample 1  timestamp delta as an unsigned varint, value XOR-encoded
//!   sample n  timestamp delta-of-delta in Prometheus' buckets, value XOR-encoded
//! ```
//!
//! Delta-of-delta buckets (exactly Prometheus' XOR chunk): `0` for 0;
//! `10` + 14 bits; `110` + 17 bits; `1110` + 20 bits; `1111` + 64 bits.
//!
//! XOR values (Gorilla): `0` when the value's bits equal the previous value's;
//! `10` + the meaningful bits when they fit in the previous leading/trailing
//! zero window; `11` + 5 bits of leading zeros + 6 bits of meaningful-bit
//! count (64 written as 0) + the meaningful bits otherwise.
//!
//! # Invariants
//! - Timestamps are strictly increasing inside a chunk; [`ChunkAppender::push`]
//!   refuses anything else, and the decoder reports a chunk that violates it as
//!   corrupt.
//! - Values round-trip bit for bit, every NaN payload included (Prometheus'
//!   stale marker `0x7ff0000000000002` stays a stale marker).
//! - Decoding never panics: truncated or garbage input is a [`ChunkError`].
//!
//! The module also holds the 5-minute rollup codec ([`rollup_5m`],
//! [`encode_rollups`], [`decode_rollups`]), computed when a chunk is sealed.

use std::fmt;

/// The format version written in byte 0.
pub const CHUNK_VERSION: u8 = 1;
/// Bytes before the bit stream: version + count.
pub const CHUNK_HEADER_LEN: usize = 5;

/// Why a chunk could not be encoded or decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkError {
    /// The input ended before the samples its header announces.
    Truncated { decoded: u32, expected: u32 },
    /// The input is not a chunk this build can read.
    Corrupt(String),
    /// A push whose timestamp is not after the last one.
    OutOfOrder { last_ms: i64, ts_ms: i64 },
    /// The chunk cannot hold more samples (u32 count, or a timestamp gap
    /// beyond i64).
    Full,
}

impl fmt::Display for ChunkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ChunkError::Truncated { decoded, expected } => write!(
                f,
                "chunk truncated: decoded {decoded} of {expected} samples before the data ended"
            ),
            ChunkError::Corrupt(why) => write!(f, "corrupt chunk: {why}"),
            ChunkError::OutOfOrder { last_ms, ts_ms } => write!(
                f,
                "sample timestamp {ts_ms} is not after the chunk's last timestamp {last_ms}"
            ),
            ChunkError::Full => write!(f, "chunk is full"),
        }
    }
}

impl std::error::Error for ChunkError {}

// ---------------------------------------------------------------------------
// Bit stream

/// Appends bits, most significant first. `free` is the number of unused
/// low bits in the last byte (0 when the last byte is full or there is none).
#[derive(Clone, Debug, Default)]
struct BitWriter {
    buf: Vec<u8>,
    free: u8,
}

impl BitWriter {
    /// Grows by about an eighth (never doubling): a head holds one appender
    /// per active series, and doubling would waste a third of that memory.
    #[inline]
    fn push_byte(&mut self, b: u8) {
        if self.buf.len() == self.buf.capacity() {
            let extra = (self.buf.len() / 8).clamp(16, 4096);
            self.buf.reserve_exact(extra);
        }
        self.buf.push(b);
    }

    #[inline]
    fn write_bit(&mut self, bit: bool) {
        if self.free == 0 {
            self.push_byte(0);
            self.free = 8;
        }
        self.free -= 1;
        if bit {
            if let Some(last) = self.buf.last_mut() {
                *last |= 1 << self.free;
            }
        }
    }

    /// Writes the low `n` bits of `v` (n ≤ 64), most significant first.
    #[inline]
    fn write_bits(&mut self, v: u64, mut n: u8) {
        debug_assert!(n <= 64);
        while n > 0 {
            if self.free == 0 {
                self.push_byte(0);
                self.free = 8;
            }
            let take = n.min(self.free);
            // The `take` bits of v just below bit position n.
            let shift = n - take;
            let mask = if take == 64 {
                u64::MAX
            } else {
                (1u64 << take) - 1
            };
            let bits = ((v >> shift) & mask) as u8;
            self.free -= take;
            if let Some(last) = self.buf.last_mut() {
                *last |= bits << self.free;
            }
            n -= take;
        }
    }

    fn write_uvarint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.write_bits((v as u8 | 0x80) as u64, 8);
            v >>= 7;
        }
        self.write_bits(v, 8);
    }
}

/// Reads bits, most significant first; every read checks the bounds.
#[derive(Clone, Debug)]
struct BitReader<'a> {
    buf: &'a [u8],
    /// Position in bits from the start of `buf`.
    pos: usize,
}

impl<'a> BitReader<'a> {
    #[inline]
    fn read_bit(&mut self) -> Option<bool> {
        let byte = *self.buf.get(self.pos / 8)?;
        let bit = (byte >> (7 - (self.pos % 8))) & 1;
        self.pos += 1;
        Some(bit == 1)
    }

    /// Reads `n` bits (n ≤ 64) as the low bits of a u64.
    #[inline]
    fn read_bits(&mut self, mut n: u8) -> Option<u64> {
        if n > 64 || self.pos + n as usize > self.buf.len() * 8 {
            return None;
        }
        let mut out: u64 = 0;
        while n > 0 {
            let byte = self.buf[self.pos / 8];
            let used = (self.pos % 8) as u8;
            let avail = 8 - used;
            let take = n.min(avail);
            let bits = (byte << used) >> (8 - take);
            out = (out << take) | bits as u64;
            self.pos += take as usize;
            n -= take;
        }
        Some(out)
    }

    fn read_uvarint(&mut self) -> Option<u64> {
        let mut out: u64 = 0;
        for i in 0..10 {
            let b = self.read_bits(8)?;
            let shift = 7 * i;
            if i == 9 && b > 1 {
                return None; // overflows u64
            }
            out |= (b & 0x7f) << shift;
            if b < 0x80 {
                return Some(out);
            }
        }
        None
    }
}

#[inline]
fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

#[inline]
fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Delta-of-delta buckets: (control bits, control length, payload bits).
const DOD_BUCKETS: [(u64, u8, u8); 3] = [(0b10, 2, 14), (0b110, 3, 17), (0b1110, 4, 20)];

#[inline]
fn fits(dod: i64, nbits: u8) -> bool {
    let half = 1i64 << (nbits - 1);
    -(half - 1) <= dod && dod <= half
}

// ---------------------------------------------------------------------------
// Appender

/// An open chunk: appends samples with strictly increasing timestamps.
///
/// [`ChunkAppender::bytes`] is always a complete, decodable chunk (the count
/// in the header is kept current), so a head can be read or sealed without
/// copying or re-encoding it.
#[derive(Clone, Debug)]
pub struct ChunkAppender {
    w: BitWriter,
    count: u32,
    t: i64,
    t_delta: i64,
    v: u64,
    /// Leading zeros of the current XOR window; 0xff before the first window.
    leading: u8,
    trailing: u8,
}

impl Default for ChunkAppender {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkAppender {
    pub fn new() -> Self {
        let mut buf = Vec::with_capacity(16);
        buf.extend_from_slice(&[CHUNK_VERSION, 0, 0, 0, 0]);
        ChunkAppender {
            w: BitWriter { buf, free: 0 },
            count: 0,
            t: 0,
            t_delta: 0,
            v: 0,
            leading: 0xff,
            trailing: 0,
        }
    }

    /// Samples held.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The first timestamp pushed.
    pub fn first_ts(&self) -> Option<i64> {
        if self.count == 0 {
            return None;
        }
        self.iter().next().and_then(|s| s.ok()).map(|s| s.0)
    }

    /// Reserves room for `additional` more encoded bytes, exactly.
    pub fn reserve_exact(&mut self, additional: usize) {
        self.w.buf.reserve_exact(additional);
    }

    /// The last timestamp pushed.
    pub fn last_ts(&self) -> Option<i64> {
        (self.count > 0).then_some(self.t)
    }

    /// The last value pushed, bit-exact.
    pub fn last_value(&self) -> Option<f64> {
        (self.count > 0).then_some(f64::from_bits(self.v))
    }

    /// The encoded chunk, header included. No copy.
    pub fn bytes(&self) -> &[u8] {
        &self.w.buf
    }

    /// Heap bytes held (for memory accounting).
    pub fn heap_bytes(&self) -> usize {
        self.w.buf.capacity()
    }

    /// Releases spare capacity (when the chunk will not grow any more).
    pub fn shrink_to_fit(&mut self) {
        self.w.buf.shrink_to_fit();
    }

    /// Decodes the samples pushed so far.
    pub fn iter(&self) -> ChunkIter<'_> {
        ChunkIter::new(self.bytes())
    }

    /// Appends one sample. The timestamp must be after the last one.
    pub fn push(&mut self, ts: i64, v: f64) -> Result<(), ChunkError> {
        let vb = v.to_bits();
        match self.count {
            0 => {
                self.w.write_uvarint(zigzag(ts));
                self.w.write_bits(vb, 64);
                self.t = ts;
                self.v = vb;
            }
            n => {
                if ts <= self.t {
                    return Err(ChunkError::OutOfOrder {
                        last_ms: self.t,
                        ts_ms: ts,
                    });
                }
                if n == u32::MAX {
                    return Err(ChunkError::Full);
                }
                let delta = ts.checked_sub(self.t).ok_or(ChunkError::Full)?;
                if n == 1 {
                    self.w.write_uvarint(delta as u64);
                } else {
                    let dod = delta - self.t_delta; // both positive: cannot overflow
                    self.write_dod(dod);
                }
                self.write_xor(vb);
                self.t = ts;
                self.t_delta = delta;
                self.v = vb;
            }
        }
        self.count += 1;
        self.w.buf[1..5].copy_from_slice(&self.count.to_be_bytes());
        Ok(())
    }

    #[inline]
    fn write_dod(&mut self, dod: i64) {
        if dod == 0 {
            self.w.write_bit(false);
            return;
        }
        for (ctl, ctl_len, nbits) in DOD_BUCKETS {
            if fits(dod, nbits) {
                self.w.write_bits(ctl, ctl_len);
                self.w.write_bits(dod as u64, nbits);
                return;
            }
        }
        self.w.write_bits(0b1111, 4);
        self.w.write_bits(dod as u64, 64);
    }

    #[inline]
    fn write_xor(&mut self, vb: u64) {
        let delta = vb ^ self.v;
        if delta == 0 {
            self.w.write_bit(false);
            return;
        }
        self.w.write_bit(true);
        let mut leading = delta.leading_zeros() as u8;
        let trailing = delta.trailing_zeros() as u8;
        if leading >= 32 {
            leading = 31; // 5 bits
        }
        if self.leading != 0xff && leading >= self.leading && trailing >= self.trailing {
            self.w.write_bit(false);
            let sig = 64 - self.leading - self.trailing;
            self.w.write_bits(delta >> self.trailing, sig);
        } else {
            self.leading = leading;
            self.trailing = trailing;
            self.w.write_bit(true);
            self.w.write_bits(leading as u64, 5);
            let sig = 64 - leading - trailing;
            // 64 meaningful bits are written as 0 (6 bits hold 0..=63).
            self.w.write_bits((sig & 63) as u64, 6);
            self.w.write_bits(delta >> trailing, sig);
        }
    }
}

// ---------------------------------------------------------------------------
// Decoder

/// Decodes a chunk sample by sample. Yields `Err` once on bad input, then ends.
#[derive(Clone, Debug)]
pub struct ChunkIter<'a> {
    r: BitReader<'a>,
    expected: u32,
    read: u32,
    t: i64,
    t_delta: i64,
    v: u64,
    leading: u8,
    trailing: u8,
    failed: bool,
}

impl<'a> ChunkIter<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        let mut it = ChunkIter {
            r: BitReader { buf: data, pos: 0 },
            expected: 0,
            read: 0,
            t: 0,
            t_delta: 0,
            v: 0,
            leading: 0xff,
            trailing: 0,
            failed: false,
        };
        if data.len() >= CHUNK_HEADER_LEN {
            it.expected = u32::from_be_bytes([data[1], data[2], data[3], data[4]]);
            it.r.pos = CHUNK_HEADER_LEN * 8;
        }
        it
    }

    /// The sample count the header announces (0 for input too short to have one).
    pub fn expected_len(&self) -> u32 {
        self.expected
    }

    fn header_error(&self) -> Option<ChunkError> {
        let data = self.r.buf;
        if data.len() < CHUNK_HEADER_LEN {
            return Some(ChunkError::Corrupt(format!(
                "{} bytes is shorter than the {CHUNK_HEADER_LEN}-byte header",
                data.len()
            )));
        }
        if data[0] != CHUNK_VERSION {
            return Some(ChunkError::Corrupt(format!(
                "unknown chunk format version {}",
                data[0]
            )));
        }
        None
    }

    fn truncated(&self) -> ChunkError {
        ChunkError::Truncated {
            decoded: self.read,
            expected: self.expected,
        }
    }

    fn next_sample(&mut self) -> Result<(i64, f64), ChunkError> {
        if self.read == 0 {
            if let Some(e) = self.header_error() {
                return Err(e);
            }
            let ts = unzigzag(self.r.read_uvarint().ok_or_else(|| self.truncated())?);
            let v = self.r.read_bits(64).ok_or_else(|| self.truncated())?;
            self.t = ts;
            self.v = v;
        } else {
            let delta = if self.read == 1 {
                let d = self.r.read_uvarint().ok_or_else(|| self.truncated())?;
                i64::try_from(d)
                    .map_err(|_| ChunkError::Corrupt(format!("timestamp delta {d} overflows")))?
            } else {
                let dod = self.read_dod()?;
                self.t_delta.checked_add(dod).ok_or_else(|| {
                    ChunkError::Corrupt("timestamp delta-of-delta overflows".into())
                })?
            };
            if delta <= 0 {
                return Err(ChunkError::Corrupt(format!(
                    "timestamps not increasing (delta {delta} after sample {})",
                    self.read
                )));
            }
            let ts = self
                .t
                .checked_add(delta)
                .ok_or_else(|| ChunkError::Corrupt("timestamp overflows".into()))?;
            self.read_xor()?;
            self.t = ts;
            self.t_delta = delta;
        }
        self.read += 1;
        Ok((self.t, f64::from_bits(self.v)))
    }

    fn read_dod(&mut self) -> Result<i64, ChunkError> {
        // Up to four control bits.
        let mut ctl = 0u8;
        for _ in 0..4 {
            let bit = self.r.read_bit().ok_or_else(|| self.truncated())?;
            if !bit {
                break;
            }
            ctl += 1;
        }
        let nbits: u8 = match ctl {
            0 => return Ok(0),
            1 => 14,
            2 => 17,
            3 => 20,
            _ => 64,
        };
        let bits = self.r.read_bits(nbits).ok_or_else(|| self.truncated())?;
        if nbits == 64 {
            return Ok(bits as i64);
        }
        // Prometheus' sign rule: values above 2^(n-1) are negative.
        let half = 1u64 << (nbits - 1);
        Ok(if bits > half {
            bits as i64 - (1i64 << nbits)
        } else {
            bits as i64
        })
    }

    fn read_xor(&mut self) -> Result<(), ChunkError> {
        if !self.r.read_bit().ok_or_else(|| self.truncated())? {
            return Ok(()); // same value
        }
        let new_window = self.r.read_bit().ok_or_else(|| self.truncated())?;
        if new_window {
            let leading = self.r.read_bits(5).ok_or_else(|| self.truncated())? as u8;
            let mut sig = self.r.read_bits(6).ok_or_else(|| self.truncated())? as u8;
            if sig == 0 {
                sig = 64;
            }
            if leading as u16 + sig as u16 > 64 {
                return Err(ChunkError::Corrupt(format!(
                    "xor window of {leading} leading zeros and {sig} bits exceeds 64 bits"
                )));
            }
            self.leading = leading;
            self.trailing = 64 - leading - sig;
        } else if self.leading == 0xff {
            return Err(ChunkError::Corrupt(
                "xor value reuses a window before any was set".into(),
            ));
        }
        let sig = 64 - self.leading - self.trailing;
        let bits = self.r.read_bits(sig).ok_or_else(|| self.truncated())?;
        let delta = if self.trailing >= 64 {
            0
        } else {
            bits << self.trailing
        };
        if delta == 0 {
            // The encoder writes a `0` bit for an unchanged value, never an
            // all-zero window.
            return Err(ChunkError::Corrupt("xor value with no bits set".into()));
        }
        self.v ^= delta;
        Ok(())
    }
}

impl Iterator for ChunkIter<'_> {
    type Item = Result<(i64, f64), ChunkError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        if self.read >= self.expected {
            if self.read == 0 {
                if let Some(e) = self.header_error() {
                    self.failed = true;
                    return Some(Err(e));
                }
            }
            return None;
        }
        match self.next_sample() {
            Ok(s) => Some(Ok(s)),
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}

/// Decodes a whole chunk into `(timestamp_ms, value)` pairs.
pub fn decode(data: &[u8]) -> Result<Vec<(i64, f64)>, ChunkError> {
    let it = ChunkIter::new(data);
    // Every sample after the first takes at least 2 bits: cap the
    // allocation by what the input can hold, not by the header's claim.
    let bound = 1 + data.len().saturating_mul(4);
    let mut out = Vec::with_capacity((it.expected_len() as usize).min(bound));
    for s in it {
        out.push(s?);
    }
    Ok(out)
}

/// Encodes samples with strictly increasing timestamps into a chunk.
pub fn encode(samples: impl IntoIterator<Item = (i64, f64)>) -> Result<Vec<u8>, ChunkError> {
    let mut app = ChunkAppender::new();
    for (t, v) in samples {
        app.push(t, v)?;
    }
    app.shrink_to_fit();
    Ok(app.w.buf)
}

/// Reads the sample count from a chunk header without decoding.
pub fn sample_count(data: &[u8]) -> Result<u32, ChunkError> {
    if data.len() < CHUNK_HEADER_LEN || data[0] != CHUNK_VERSION {
        return Err(ChunkError::Corrupt("bad chunk header".into()));
    }
    Ok(u32::from_be_bytes([data[1], data[2], data[3], data[4]]))
}

// ---------------------------------------------------------------------------
// 5-minute rollups

pub use kube_insight_core::rollup::{rollup_5m, RollupBucket, ROLLUP_STEP_MS};

/// Format version of an encoded rollup blob.
pub const ROLLUP_VERSION: u8 = 1;

/// Encodes rollup buckets. Per bucket, in one bit stream: the step from the
/// previous bucket (`0` for the next one, else `1` and a varint), the count
/// (`0` when unchanged, else `1` and a varint), then each value as the XOR
/// residual against a prediction made from values already written:
///
/// | field    | predicted by                                      |
/// |----------|---------------------------------------------------|
/// | last     | the previous bucket's last                        |
/// | max      | this bucket's last (exact for counters)           |
/// | min      | the previous bucket's last (this max for the 1st) |
/// | sum      | last × count (exact for constants)                |
/// | increase | last − previous last (exact for counters), else last − min |
///
/// A residual is `0` when zero, else Gorilla's leading/trailing-zero window
/// (reused per field when it fits). Constant series cost about a byte per
/// bucket, counters a few.
pub fn encode_rollups(buckets: &[RollupBucket]) -> Vec<u8> {
    let mut w = BitWriter::default();
    w.write_bits(ROLLUP_VERSION as u64, 8);
    w.write_uvarint(buckets.len() as u64);
    let Some(first) = buckets.first() else {
        return w.buf;
    };
    w.write_uvarint(zigzag(first.start_ms));
    let mut st = [Residual::default(); 5];
    let mut prev: Option<&RollupBucket> = None;
    for b in buckets {
        if let Some(p) = prev {
            let steps = ((b.start_ms - p.start_ms) / ROLLUP_STEP_MS) as u64;
            if steps == 1 {
                w.write_bit(false);
            } else {
                w.write_bit(true);
                w.write_uvarint(steps);
            }
        }
        if prev.is_some_and(|p| p.count == b.count) {
            w.write_bit(false);
        } else {
            w.write_bit(true);
            w.write_uvarint(b.count as u64);
        }
        let pred = predictions(prev, b.last, b.min, b.count);
        let vals = [b.last, b.max, b.min, b.sum, b.increase];
        for (i, v) in vals.iter().enumerate() {
            let p = match i {
                0 => pred.last,
                1 => b.last,
                2 => pred.min.unwrap_or(b.max),
                3 => pred.sum,
                _ => pred.increase,
            };
            st[i].write(&mut w, v.to_bits() ^ p.to_bits());
        }
        prev = Some(b);
    }
    w.buf
}

struct Predictions {
    last: f64,
    min: Option<f64>,
    sum: f64,
    increase: f64,
}

/// The predictions for a bucket, from the previous bucket and this bucket's
/// already-coded `last` and `min` (identical on both sides: plain f64 ops).
fn predictions(prev: Option<&RollupBucket>, last: f64, min: f64, count: u32) -> Predictions {
    Predictions {
        last: prev.map_or(0.0, |p| p.last),
        min: prev.map(|p| p.last),
        sum: last * count as f64,
        increase: match prev {
            Some(p) if last >= p.last => last - p.last,
            _ => last - min,
        },
    }
}

/// Decodes [`encode_rollups`] output.
pub fn decode_rollups(data: &[u8]) -> Result<Vec<RollupBucket>, ChunkError> {
    let mut r = BitReader { buf: data, pos: 0 };
    let short = || ChunkError::Corrupt("rollup blob truncated".into());
    let version = r.read_bits(8).ok_or_else(short)?;
    if version != ROLLUP_VERSION as u64 {
        return Err(ChunkError::Corrupt(format!(
            "unknown rollup format version {version}"
        )));
    }
    let n = r.read_uvarint().ok_or_else(short)?;
    if n == 0 {
        return Ok(Vec::new());
    }
    if n > data.len() as u64 * 8 {
        return Err(ChunkError::Corrupt(format!(
            "rollup blob claims {n} buckets in {} bytes",
            data.len()
        )));
    }
    let mut t = unzigzag(r.read_uvarint().ok_or_else(short)?);
    let mut st = [Residual::default(); 5];
    let mut out: Vec<RollupBucket> = Vec::with_capacity(n as usize);
    for i in 0..n {
        if i > 0 {
            let steps = if r.read_bit().ok_or_else(short)? {
                r.read_uvarint().ok_or_else(short)?
            } else {
                1
            };
            t = i64::try_from(steps)
                .ok()
                .and_then(|s| s.checked_mul(ROLLUP_STEP_MS))
                .and_then(|d| t.checked_add(d))
                .ok_or_else(|| ChunkError::Corrupt("rollup bucket time overflows".into()))?;
        }
        let count = if r.read_bit().ok_or_else(short)? {
            u32::try_from(r.read_uvarint().ok_or_else(short)?)
                .map_err(|_| ChunkError::Corrupt("rollup count overflows".into()))?
        } else {
            out.last().map_or(0, |p| p.count)
        };
        let prev = out.last();
        let prev_last = prev.map_or(0.0, |p| p.last);
        let last = f64::from_bits(st[0].read(&mut r)? ^ prev_last.to_bits());
        let max = f64::from_bits(st[1].read(&mut r)? ^ last.to_bits());
        let min_pred = prev.map_or(max, |p| p.last);
        let min = f64::from_bits(st[2].read(&mut r)? ^ min_pred.to_bits());
        let pred = predictions(prev, last, min, count);
        let sum = f64::from_bits(st[3].read(&mut r)? ^ pred.sum.to_bits());
        let increase = f64::from_bits(st[4].read(&mut r)? ^ pred.increase.to_bits());
        out.push(RollupBucket {
            start_ms: t,
            count,
            min,
            max,
            sum,
            last,
            increase,
        });
    }
    Ok(out)
}

/// A residual coder: `0` for zero, else a Gorilla leading/trailing window.
#[derive(Default, Clone, Copy)]
struct Residual {
    window: bool,
    leading: u8,
    trailing: u8,
}

impl Residual {
    fn write(&mut self, w: &mut BitWriter, r: u64) {
        if r == 0 {
            w.write_bit(false);
            return;
        }
        w.write_bit(true);
        let leading = (r.leading_zeros() as u8).min(31);
        let trailing = r.trailing_zeros() as u8;
        if self.window && leading >= self.leading && trailing >= self.trailing {
            w.write_bit(false);
            w.write_bits(r >> self.trailing, 64 - self.leading - self.trailing);
        } else {
            self.window = true;
            self.leading = leading;
            self.trailing = trailing;
            w.write_bit(true);
            w.write_bits(leading as u64, 5);
            let sig = 64 - leading - trailing;
            w.write_bits((sig & 63) as u64, 6);
            w.write_bits(r >> trailing, sig);
        }
    }

    fn read(&mut self, r: &mut BitReader<'_>) -> Result<u64, ChunkError> {
        let short = || ChunkError::Corrupt("rollup blob truncated".into());
        if !r.read_bit().ok_or_else(short)? {
            return Ok(0);
        }
        if r.read_bit().ok_or_else(short)? {
            let leading = r.read_bits(5).ok_or_else(short)? as u8;
            let mut sig = r.read_bits(6).ok_or_else(short)? as u8;
            if sig == 0 {
                sig = 64;
            }
            if leading as u16 + sig as u16 > 64 {
                return Err(ChunkError::Corrupt(
                    "rollup residual window exceeds 64 bits".into(),
                ));
            }
            self.window = true;
            self.leading = leading;
            self.trailing = 64 - leading - sig;
        } else if !self.window {
            return Err(ChunkError::Corrupt(
                "rollup residual reuses a window before any was set".into(),
            ));
        }
        let sig = 64 - self.leading - self.trailing;
        let bits = r.read_bits(sig).ok_or_else(short)?;
        Ok(if self.trailing >= 64 {
            0
        } else {
            bits << self.trailing
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_insight_core::STALE_NAN_BITS;

    /// xorshift64*: deterministic randomness without a dependency.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n.max(1)
        }
    }

    fn roundtrip(samples: &[(i64, f64)]) -> Vec<u8> {
        let mut app = ChunkAppender::new();
        for &(t, v) in samples {
            app.push(t, v).unwrap();
        }
        assert_eq!(app.len(), samples.len());
        let back = decode(app.bytes()).unwrap();
        assert_eq!(back.len(), samples.len());
        for (a, b) in samples.iter().zip(&back) {
            assert_eq!(a.0, b.0);
            assert_eq!(a.1.to_bits(), b.1.to_bits(), "value at {}", a.0);
        }
        app.bytes().to_vec()
    }

    #[test]
    fn empty_chunk_decodes_to_nothing() {
        let app = ChunkAppender::new();
        assert_eq!(app.bytes().len(), CHUNK_HEADER_LEN);
        assert_eq!(decode(app.bytes()).unwrap(), vec![]);
        assert_eq!(app.last_ts(), None);
    }

    #[test]
    fn special_values_round_trip_bit_exact() {
        let specials = [
            f64::from_bits(STALE_NAN_BITS),
            f64::NAN,
            f64::from_bits(0x7ff8_0000_dead_beef),
            f64::from_bits(0xfff0_0000_0000_0001),
            f64::INFINITY,
            f64::NEG_INFINITY,
            0.0,
            -0.0,
            f64::MIN_POSITIVE,
            f64::from_bits(1), // smallest subnormal
            f64::MAX,
            f64::MIN,
            1.0,
            1.0,
            f64::from_bits(STALE_NAN_BITS),
            12345.678,
        ];
        let samples: Vec<(i64, f64)> = specials
            .iter()
            .enumerate()
            .map(|(i, &v)| (1_717_171_712_345 + i as i64 * 15_000, v))
            .collect();
        roundtrip(&samples);
    }

    #[test]
    fn extreme_timestamps_and_every_dod_bucket() {
        let mut ts = vec![i64::MIN / 2, i64::MIN / 2 + 1, -5, 0, 7];
        // Gaps hitting each bucket edge, both signs of dod.
        let mut t = 1_000_000i64;
        for delta in [
            1i64,
            1,
            8192,
            8193,
            1,
            65_536,
            65_537,
            1,
            524_288,
            524_289,
            1,
            1 << 40,
            1,
            15_000,
            15_000,
            15_001,
            14_999,
        ] {
            t += delta;
            ts.push(t);
        }
        ts.push(i64::MAX - 1);
        ts.push(i64::MAX);
        let samples: Vec<(i64, f64)> = ts.iter().map(|&t| (t, t as f64)).collect();
        roundtrip(&samples);
    }

    #[test]
    fn random_values_and_gaps_round_trip() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        for round in 0..200 {
            let n = rng.below(600) as usize + 1;
            let mut t = rng.next() as i64 >> 20;
            let mut samples = Vec::with_capacity(n);
            let mut v = 0.0f64;
            for _ in 0..n {
                t += 1 + rng.below(if round % 3 == 0 { 100_000 } else { 30 }) as i64;
                v = match rng.below(5) {
                    0 => f64::from_bits(rng.next()),
                    1 => v,
                    2 => v + 1.0,
                    3 => (rng.below(1000) as f64) / 7.0,
                    _ => f64::from_bits(STALE_NAN_BITS),
                };
                samples.push((t, v));
            }
            roundtrip(&samples);
        }
    }

    #[test]
    fn out_of_order_push_is_refused_and_harmless() {
        let mut app = ChunkAppender::new();
        app.push(10, 1.0).unwrap();
        app.push(20, 2.0).unwrap();
        assert_eq!(
            app.push(20, 3.0),
            Err(ChunkError::OutOfOrder {
                last_ms: 20,
                ts_ms: 20
            })
        );
        assert!(app.push(5, 3.0).is_err());
        app.push(30, 3.0).unwrap();
        assert_eq!(
            decode(app.bytes()).unwrap(),
            vec![(10, 1.0), (20, 2.0), (30, 3.0)]
        );
    }

    #[test]
    fn regular_scrapes_compress_like_prometheus() {
        // 2 h of 15 s scrapes. Prometheus aligns timestamps within 2 ms of the
        // interval (`--scrape.timestamp-tolerance`), so most deltas are exact;
        // one scrape in ten here still carries a few ms of jitter.
        let mut rng = Rng(42);
        let n = 480;
        let base = 1_717_171_200_000i64;
        let mut counter = 1_000_000.0f64;
        let mut gauge = 187_695_104.0f64;
        let mut counter_s = Vec::new();
        let mut gauge_s = Vec::new();
        let mut const_s = Vec::new();
        for i in 0..n {
            let jitter = if rng.below(10) == 0 {
                3 + rng.below(20) as i64
            } else {
                0
            };
            let t = base + i * 15_000 + jitter;
            counter += (rng.below(50) * 1024) as f64;
            if rng.below(4) == 0 {
                gauge += ((rng.below(64) as f64) - 32.0) * 4096.0;
            }
            counter_s.push((t, counter));
            gauge_s.push((t, gauge));
            const_s.push((t, 1.0));
        }
        let c = roundtrip(&counter_s).len() as f64 / n as f64;
        let g = roundtrip(&gauge_s).len() as f64 / n as f64;
        let k = roundtrip(&const_s).len() as f64 / n as f64;
        eprintln!("bytes/sample: counter {c:.2} gauge {g:.2} constant {k:.2}");
        assert!(k < 1.0, "constant {k}");
        assert!(g < 2.0, "gauge {g}");
        assert!(c < 3.5, "counter {c}");
        assert!((c + g + k) / 3.0 < 2.0, "mean {}", (c + g + k) / 3.0);
    }

    #[test]
    fn truncations_and_garbage_never_panic() {
        let mut rng = Rng(7);
        let mut samples = Vec::new();
        let mut t = 1_717_171_200_000i64;
        for i in 0..300 {
            t += 15_000 + (rng.below(5) as i64) - 2;
            let v = if i % 50 == 49 {
                f64::from_bits(STALE_NAN_BITS)
            } else {
                (rng.below(10_000) as f64) * 0.25
            };
            samples.push((t, v));
        }
        let good = encode(samples.iter().copied()).unwrap();
        // Every truncation reports an error (the header still claims 300).
        for cut in 0..good.len() {
            let r = decode(&good[..cut]);
            assert!(r.is_err(), "cut at {cut} decoded");
        }
        // Random bit flips and garbage: Ok or Err, never a panic, and Ok
        // output always has increasing timestamps.
        for _ in 0..3000 {
            let mut bad = good.clone();
            match rng.below(3) {
                0 => {
                    let i = rng.below(bad.len() as u64) as usize;
                    bad[i] ^= 1 << rng.below(8);
                }
                1 => {
                    let n = rng.below(64) as usize;
                    bad = (0..n).map(|_| rng.next() as u8).collect();
                    if !bad.is_empty() && rng.below(2) == 0 {
                        bad[0] = CHUNK_VERSION;
                    }
                }
                _ => {
                    let i = rng.below(bad.len() as u64) as usize;
                    for b in &mut bad[i..] {
                        *b = rng.next() as u8;
                    }
                }
            }
            if let Ok(s) = decode(&bad) {
                assert!(s.windows(2).all(|w| w[0].0 < w[1].0));
            }
            let _ = decode_rollups(&bad);
            let _ = sample_count(&bad);
        }
        assert!(matches!(
            decode(&[9, 0, 0, 0, 1]),
            Err(ChunkError::Corrupt(_))
        ));
        assert!(matches!(decode(&[1, 0]), Err(ChunkError::Corrupt(_))));
        let e = decode(&good[..good.len() / 2]).unwrap_err().to_string();
        assert!(e.contains("truncated"), "{e}");
    }

    #[test]
    fn rollups_round_trip_bit_for_bit() {
        let base = 1_717_171_200_000i64; // a multiple of 5 min
                                         // A counter with a reset, then a stale marker; what the buckets hold
                                         // is tested in kube_insight_core::rollup, the codec here.
        let mut s: Vec<(i64, f64)> = (0..60)
            .map(|i| (base + i * 15_000, ((i * 10) % 450) as f64))
            .collect();
        s.push((base + 60 * 15_000, f64::from_bits(STALE_NAN_BITS)));
        let r = rollup_5m(&s);
        assert_eq!(r.len(), 3);
        let enc = encode_rollups(&r);
        assert_eq!(decode_rollups(&enc).unwrap(), r);
        assert_eq!(decode_rollups(&encode_rollups(&[])).unwrap(), vec![]);
        assert!(decode_rollups(&enc[..enc.len() - 1]).is_err());
        // A constant series costs about a byte per bucket.
        let flat: Vec<(i64, f64)> = (0..480).map(|i| (base + i * 15_000, 1.0)).collect();
        let enc = encode_rollups(&rollup_5m(&flat));
        assert!(
            enc.len() < 40,
            "{} bytes for 24 constant buckets",
            enc.len()
        );
        // Random values, gaps and NaNs round-trip bit for bit.
        let mut rng = Rng(99);
        for _ in 0..200 {
            let mut t = base;
            let s: Vec<(i64, f64)> = (0..rng.below(500))
                .map(|_| {
                    t += 1 + rng.below(400_000) as i64;
                    let v = match rng.below(4) {
                        0 => f64::from_bits(rng.next()),
                        1 => (rng.below(100) as f64) * 0.5,
                        _ => t as f64,
                    };
                    (t, v)
                })
                .collect();
            let r = rollup_5m(&s);
            let back = decode_rollups(&encode_rollups(&r)).unwrap();
            assert_eq!(back.len(), r.len());
            for (a, b) in r.iter().zip(&back) {
                assert_eq!((a.start_ms, a.count), (b.start_ms, b.count));
                for (x, y) in [
                    (a.min, b.min),
                    (a.max, b.max),
                    (a.sum, b.sum),
                    (a.last, b.last),
                    (a.increase, b.increase),
                ] {
                    assert_eq!(x.to_bits(), y.to_bits());
                }
            }
        }
    }
}
