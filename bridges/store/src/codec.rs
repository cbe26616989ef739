//! Byte encodings shared by the backends: label sets (the SQLite `series`
//! table, the Cassandra series index) and sample triples in `head_wal` rows.

use crate::error::{Error, Result};
use kube_insight_core::{Label, Labels};

/// Format version of a `head_wal.data` blob (first byte, uncompressed).
pub const WAL_VERSION: u8 = 1;
/// zstd level for WAL rows: level 1 is the fast end; rows are short-lived.
const WAL_ZSTD_LEVEL: i32 = 1;

pub fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

pub fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// A cursor over bytes whose every read is bounds-checked.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8], what: &'static str) -> Self {
        Reader { buf, pos: 0, what }
    }

    fn corrupt(&self, why: &str) -> Error {
        Error::Corrupt(format!("{} at byte {}: {why}", self.what, self.pos))
    }

    pub fn uvarint(&mut self) -> Result<u64> {
        let mut out = 0u64;
        for i in 0..10 {
            let b = *self
                .buf
                .get(self.pos)
                .ok_or_else(|| self.corrupt("truncated varint"))?;
            self.pos += 1;
            if i == 9 && b > 1 {
                return Err(self.corrupt("varint overflows"));
            }
            out |= ((b & 0x7f) as u64) << (7 * i);
            if b < 0x80 {
                return Ok(out);
            }
        }
        Err(self.corrupt("varint too long"))
    }

    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| self.corrupt("truncated"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    pub fn u64_le(&mut self) -> Result<u64> {
        let b = self.bytes(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    pub fn str(&mut self) -> Result<&'a str> {
        let n = self.uvarint()?;
        let n = usize::try_from(n).map_err(|_| self.corrupt("length overflows"))?;
        let b = self.bytes(n)?;
        std::str::from_utf8(b).map_err(|_| self.corrupt("string is not utf-8"))
    }

    pub fn at_end(&self) -> bool {
        self.pos >= self.buf.len()
    }
}

/// `series.labels`: uvarint count, then (uvarint length, utf-8 bytes) for
/// each name and value, in label order.
pub fn encode_labels(labels: &Labels) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        1 + labels
            .iter()
            .map(|l| l.name.len() + l.value.len() + 2)
            .sum::<usize>(),
    );
    put_uvarint(&mut out, labels.len() as u64);
    for l in labels {
        put_uvarint(&mut out, l.name.len() as u64);
        out.extend_from_slice(l.name.as_bytes());
        put_uvarint(&mut out, l.value.len() as u64);
        out.extend_from_slice(l.value.as_bytes());
    }
    out
}

pub fn decode_labels(data: &[u8]) -> Result<Labels> {
    let mut r = Reader::new(data, "series labels");
    let n = r.uvarint()?;
    if n > data.len() as u64 {
        return Err(Error::Corrupt(format!(
            "series labels claim {n} pairs in {} bytes",
            data.len()
        )));
    }
    let mut v = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let name = r.str()?;
        let value = r.str()?;
        v.push(Label::new(name, value));
    }
    if !r.at_end() {
        return Err(Error::Corrupt("series labels have trailing bytes".into()));
    }
    Ok(Labels::from_sorted(v))
}

/// One accepted sample: (series id, timestamp, value).
pub type WalSample = (u32, i64, f64);

/// Largest uncompressed WAL row accepted when decoding (a corrupt length
/// must not allocate without bound).
const WAL_MAX_RAW: u64 = 1 << 30;

/// Encodes a WAL row from samples in any order (consecutive samples of one
/// series form a run). Byte 0 is [`WAL_VERSION`], then the uncompressed
/// length as a uvarint, then zstd of `uvarint runs, then per run:
/// zigzag(series id delta), uvarint n, then per sample zigzag(ts delta) and
/// the value's 8 bytes little-endian`. Timestamp deltas chain across runs,
/// so a scrape's samples (same timestamp) cost one byte of time each.
/// `zstd` is the writer's reusable compression context.
pub fn encode_wal(
    samples: &[WalSample],
    zstd: &mut zstd::bulk::Compressor<'static>,
) -> Result<Vec<u8>> {
    let mut runs: Vec<(u32, usize, usize)> = Vec::new(); // id, start, end
    for (i, s) in samples.iter().enumerate() {
        match runs.last_mut() {
            Some(r) if r.0 == s.0 => r.2 = i + 1,
            _ => runs.push((s.0, i, i + 1)),
        }
    }
    let mut raw = Vec::with_capacity(8 + runs.len() * 4 + samples.len() * 10);
    put_uvarint(&mut raw, runs.len() as u64);
    let mut prev_id = 0i64;
    let mut prev_ts = 0i64;
    for &(id, start, end) in &runs {
        put_uvarint(&mut raw, zigzag(id as i64 - prev_id));
        prev_id = id as i64;
        put_uvarint(&mut raw, (end - start) as u64);
        for &(_, t, v) in &samples[start..end] {
            put_uvarint(&mut raw, zigzag(t.wrapping_sub(prev_ts)));
            prev_ts = t;
            raw.extend_from_slice(&v.to_bits().to_le_bytes());
        }
    }
    let packed = zstd.compress(&raw)?;
    let mut out = Vec::with_capacity(packed.len() + 8);
    out.push(WAL_VERSION);
    put_uvarint(&mut out, raw.len() as u64);
    out.extend_from_slice(&packed);
    Ok(out)
}

/// A compression context for [`encode_wal`].
pub fn wal_compressor() -> Result<zstd::bulk::Compressor<'static>> {
    Ok(zstd::bulk::Compressor::new(WAL_ZSTD_LEVEL)?)
}

/// Decodes [`encode_wal`] output, in the order encoded.
pub fn decode_wal(data: &[u8]) -> Result<Vec<WalSample>> {
    match data.first() {
        Some(&WAL_VERSION) => {}
        Some(v) => {
            return Err(Error::Corrupt(format!(
                "head_wal row has unknown format version {v}"
            )))
        }
        None => return Err(Error::Corrupt("empty head_wal row".into())),
    }
    let mut hdr = Reader::new(&data[1..], "head_wal row header");
    let raw_len = hdr.uvarint()?;
    if raw_len > WAL_MAX_RAW {
        return Err(Error::Corrupt(format!(
            "head_wal row claims {raw_len} uncompressed bytes"
        )));
    }
    let raw = zstd::bulk::decompress(&data[1 + hdr.pos..], raw_len as usize)
        .map_err(|e| Error::Corrupt(format!("head_wal row does not decompress: {e}")))?;
    if raw.len() as u64 != raw_len {
        return Err(Error::Corrupt(format!(
            "head_wal row decompressed to {} bytes, not {raw_len}",
            raw.len()
        )));
    }
    let mut r = Reader::new(&raw, "head_wal row");
    let nruns = r.uvarint()?;
    if nruns > raw.len() as u64 {
        return Err(Error::Corrupt(format!(
            "head_wal row claims {nruns} runs in {} bytes",
            raw.len()
        )));
    }
    // Each sample takes at least 9 bytes.
    let mut out = Vec::with_capacity(raw.len() / 9);
    let mut prev_id = 0i64;
    let mut prev_ts = 0i64;
    for _ in 0..nruns {
        let id = prev_id.wrapping_add(unzigzag(r.uvarint()?));
        let series_id = u32::try_from(id)
            .map_err(|_| Error::Corrupt(format!("head_wal row has series id {id}")))?;
        prev_id = id;
        let n = r.uvarint()?;
        if n > raw.len() as u64 {
            return Err(Error::Corrupt(format!(
                "head_wal run claims {n} samples in {} bytes",
                raw.len()
            )));
        }
        for _ in 0..n {
            let t = prev_ts.wrapping_add(unzigzag(r.uvarint()?));
            prev_ts = t;
            out.push((series_id, t, f64::from_bits(r.u64_le()?)));
        }
    }
    if !r.at_end() {
        return Err(Error::Corrupt("head_wal row has trailing bytes".into()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_insight_core::STALE_NAN;

    #[test]
    fn labels_round_trip() {
        let l = Labels::from_pairs([("__name__", "up"), ("job", "a=\"b\"}"), ("ü", "∞")]);
        assert_eq!(decode_labels(&encode_labels(&l)).unwrap(), l);
        let enc = encode_labels(&l);
        for cut in 0..enc.len() {
            assert!(decode_labels(&enc[..cut]).is_err());
        }
    }

    #[test]
    fn wal_round_trips_bit_exact_and_rejects_garbage() {
        let samples: Vec<WalSample> = vec![
            (7, 1_717_171_712_345, STALE_NAN),
            (7, 1_717_171_727_345, -0.0),
            (3, -5, f64::from_bits(0x7ff8_dead_beef_0001)),
            (7, 1_717_171_742_345, 1.0),
        ];
        let enc = encode_wal(&samples, &mut wal_compressor().unwrap()).unwrap();
        let back = decode_wal(&enc).unwrap();
        assert_eq!(back.len(), samples.len());
        for (a, b) in samples.iter().zip(&back) {
            assert_eq!((a.0, a.1), (b.0, b.1));
            assert_eq!(a.2.to_bits(), b.2.to_bits());
        }
        assert!(decode_wal(&[]).is_err());
        assert!(decode_wal(&[9, 1, 2]).is_err());
        assert!(decode_wal(&enc[..enc.len() - 3]).is_err());
    }
}
