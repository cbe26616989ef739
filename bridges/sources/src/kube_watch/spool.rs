//! The push agent's spool: an ordered, bounded, on-disk queue of records
//! (one record: one JSON [`super::ingest::WatchBatch`]) between the watch and
//! the sender ([`super::remote`]).
//!
//! A directory of segment files `seg-<20 digits>.spool`, oldest first, and an
//! `ack` file naming the position of the first record not yet delivered
//! (`<segment> <offset>`, replaced by write + fsync + rename). A record is
//! `len: u32 LE`, `xxh3-64(payload): u64 LE`, `payload`. An append is
//! fsynced before it returns; segments wholly before the ack are deleted.
//! At open, each segment is decoded ([`decode`], pure): a torn tail (a crash
//! mid-append, never acknowledged to the watch) is cut off; a corrupt record
//! ends its segment (logged, the rest of it skipped).
//!
//! The bound is the bytes of all segment files: an append that would pass it
//! is refused ([`SpoolError::Full`]) and the caller pushes back.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use thiserror::Error;
use xxhash_rust::xxh3::xxh3_64;

/// Bytes of a record's header.
pub const HEADER: usize = 12;
/// Largest payload a record may hold.
pub const MAX_RECORD: usize = 256 << 20;

#[derive(Debug, Error)]
pub enum SpoolError {
    #[error("push spool {dir}: full ({used} of {limit} bytes); the insight is not taking writes, the watch resumes from its last point")]
    Full { dir: String, used: u64, limit: u64 },
    #[error("push spool {dir}: a record of {len} bytes is larger than the spool bound of {limit} bytes; raise KUBE_INSIGHT_EVENTS_SPOOL_BYTES")]
    TooLarge { dir: String, len: u64, limit: u64 },
    #[error("push spool {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Encodes one record.
pub fn encode(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(
        &u32::try_from(payload.len())
            .unwrap_or(u32::MAX)
            .to_le_bytes(),
    );
    out.extend_from_slice(&xxh3_64(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// What [`decode`] found after the last whole record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tail {
    /// The buffer ends at a record boundary.
    Clean,
    /// A record cut short (an append that never finished).
    Torn,
    /// A record whose checksum or length is wrong.
    Corrupt(String),
}

/// The records of a segment's bytes: (start, end) of each payload, the
/// length of the valid prefix, and what follows it.
pub fn decode(buf: &[u8]) -> (Vec<(usize, usize)>, usize, Tail) {
    let mut out = Vec::new();
    let mut at = 0usize;
    loop {
        if at == buf.len() {
            return (out, at, Tail::Clean);
        }
        let Some(head) = buf.get(at..at + HEADER) else {
            return (out, at, Tail::Torn);
        };
        let mut len4 = [0u8; 4];
        len4.copy_from_slice(&head[..4]);
        let mut sum8 = [0u8; 8];
        sum8.copy_from_slice(&head[4..HEADER]);
        let len = u32::from_le_bytes(len4) as usize;
        if len > MAX_RECORD {
            return (
                out,
                at,
                Tail::Corrupt(format!(
                    "record at byte {at}: length {len} over the maximum"
                )),
            );
        }
        let start = at + HEADER;
        let Some(payload) = buf.get(start..start + len) else {
            return (out, at, Tail::Torn);
        };
        if xxh3_64(payload) != u64::from_le_bytes(sum8) {
            return (
                out,
                at,
                Tail::Corrupt(format!("record at byte {at}: checksum mismatch")),
            );
        }
        out.push((start, start + len));
        at = start + len;
    }
}

/// A position in the spool: (segment, byte offset).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    pub segment: u64,
    pub offset: u64,
}

#[derive(Debug)]
struct Segment {
    seq: u64,
    /// Valid bytes (what was decoded, plus appends).
    len: u64,
}

/// The spool (blocking IO; callers run it off the async threads).
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    limit: u64,
    segment_bytes: u64,
    segments: VecDeque<Segment>,
    writer: File,
    /// The first record not delivered.
    read: Pos,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError::Io {
        path: path.display().to_string(),
        source,
    }
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("seg-{seq:020}.spool"))
}

impl Spool {
    /// Opens (or creates) the spool in `dir`, bounded by `limit` bytes;
    /// returns it and the number of records not yet delivered.
    pub fn open(dir: &Path, limit: u64) -> Result<(Spool, u64), SpoolError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let mut seqs: Vec<u64> = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io(dir))? {
            let entry = entry.map_err(io(dir))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if let Some(n) = name
                .strip_prefix("seg-")
                .and_then(|r| r.strip_suffix(".spool"))
                .and_then(|n| n.parse::<u64>().ok())
            {
                seqs.push(n);
            }
        }
        seqs.sort_unstable();
        let ack = read_ack(dir);
        let mut segments = VecDeque::new();
        let mut pending = 0u64;
        let mut read = Pos {
            segment: seqs.first().copied().unwrap_or(0),
            offset: 0,
        };
        // An ack naming a deleted segment (delivered, then removed) leaves
        // the read position at the oldest file.
        if let Some(a) = ack.filter(|a| seqs.contains(&a.segment)) {
            read = a;
        }
        let last = seqs.last().copied();
        for seq in seqs {
            let path = segment_path(dir, seq);
            if seq < read.segment {
                // Delivered (the ack is past it): deleted at the next ack.
                let len = std::fs::metadata(&path).map_err(io(&path))?.len();
                segments.push_back(Segment { seq, len });
                continue;
            }
            let bytes = std::fs::read(&path).map_err(io(&path))?;
            let (records, valid, tail) = decode(&bytes);
            match &tail {
                Tail::Clean => {}
                Tail::Torn => {
                    tracing::warn!(path = %path.display(), valid_bytes = valid, "push spool: a record cut short (crash during an append) removed")
                }
                Tail::Corrupt(why) => {
                    tracing::error!(path = %path.display(), valid_bytes = valid, reason = %why, "push spool: corrupt record; the rest of the segment is skipped")
                }
            }
            if valid as u64 != bytes.len() as u64 && Some(seq) == last {
                let f = OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io(&path))?;
                f.set_len(valid as u64).map_err(io(&path))?;
                f.sync_all().map_err(io(&path))?;
            }
            let from = if seq == read.segment { read.offset } else { 0 };
            pending += records
                .iter()
                .filter(|(s, _)| (*s - HEADER) as u64 >= from)
                .count() as u64;
            segments.push_back(Segment {
                seq,
                len: valid as u64,
            });
        }
        if segments.is_empty() {
            let path = segment_path(dir, 0);
            File::create(&path).map_err(io(&path))?;
            segments.push_back(Segment { seq: 0, len: 0 });
        }
        let tail_seq = segments.back().map_or(0, |s| s.seq);
        let path = segment_path(dir, tail_seq);
        let writer = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        let spool = Spool {
            dir: dir.to_path_buf(),
            limit,
            segment_bytes: (limit / 16).clamp(1 << 16, 16 << 20),
            segments,
            writer,
            read,
        };
        Ok((spool, pending))
    }

    /// Bytes of all segment files.
    pub fn bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.len).sum()
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends one record, durably (fsync) before it returns.
    pub fn append(&mut self, payload: &[u8]) -> Result<(), SpoolError> {
        let rec = encode(payload);
        let len = rec.len() as u64;
        if len > self.limit || payload.len() > MAX_RECORD {
            return Err(SpoolError::TooLarge {
                dir: self.dir.display().to_string(),
                len,
                limit: self.limit,
            });
        }
        if self.bytes() + len > self.limit {
            return Err(SpoolError::Full {
                dir: self.dir.display().to_string(),
                used: self.bytes(),
                limit: self.limit,
            });
        }
        let tail = self.segments.back().map_or(0, |s| s.len);
        if tail > 0 && tail + len > self.segment_bytes {
            let seq = self.segments.back().map_or(0, |s| s.seq + 1);
            let path = segment_path(&self.dir, seq);
            self.writer = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .map_err(io(&path))?;
            self.segments.push_back(Segment { seq, len: 0 });
        }
        let seq = self.segments.back().map_or(0, |s| s.seq);
        let path = segment_path(&self.dir, seq);
        self.writer.write_all(&rec).map_err(io(&path))?;
        self.writer.sync_data().map_err(io(&path))?;
        if let Some(s) = self.segments.back_mut() {
            s.len += len;
        }
        Ok(())
    }

    /// Undelivered records from the read position, in order, up to
    /// `max_bytes` of payload (at least one record if any): each with the
    /// position after it.
    pub fn peek(&self, max_bytes: usize) -> Result<Vec<(Vec<u8>, Pos)>, SpoolError> {
        let mut out = Vec::new();
        let mut total = 0usize;
        for seg in self.segments.iter().filter(|s| s.seq >= self.read.segment) {
            let from = if seg.seq == self.read.segment {
                self.read.offset
            } else {
                0
            };
            if from >= seg.len {
                continue;
            }
            let path = segment_path(&self.dir, seg.seq);
            let mut f = File::open(&path).map_err(io(&path))?;
            f.seek(SeekFrom::Start(from)).map_err(io(&path))?;
            let mut buf = Vec::new();
            f.take(seg.len - from)
                .read_to_end(&mut buf)
                .map_err(io(&path))?;
            let (records, _, _) = decode(&buf);
            for (s, e) in records {
                if !out.is_empty() && total + (e - s) > max_bytes {
                    return Ok(out);
                }
                total += e - s;
                out.push((
                    buf[s..e].to_vec(),
                    Pos {
                        segment: seg.seq,
                        offset: from + e as u64,
                    },
                ));
            }
        }
        Ok(out)
    }

    /// Marks everything before `to` delivered: persists the ack, deletes
    /// the segments wholly before it. Returns the bytes freed.
    pub fn ack(&mut self, to: Pos) -> Result<u64, SpoolError> {
        if to <= self.read {
            return Ok(0);
        }
        let tmp = self.dir.join("ack.tmp");
        let dst = self.dir.join("ack");
        {
            let mut f = File::create(&tmp).map_err(io(&tmp))?;
            writeln!(f, "{} {}", to.segment, to.offset).map_err(io(&tmp))?;
            f.sync_all().map_err(io(&tmp))?;
        }
        std::fs::rename(&tmp, &dst).map_err(io(&dst))?;
        self.read = to;
        let mut freed = 0;
        while self.segments.len() > 1 && self.segments.front().is_some_and(|s| s.seq < to.segment) {
            if let Some(s) = self.segments.pop_front() {
                let path = segment_path(&self.dir, s.seq);
                std::fs::remove_file(&path).map_err(io(&path))?;
                freed += s.len;
            }
        }
        // The write segment wholly delivered: start it over.
        if self.segments.len() == 1 {
            if let Some(s) = self.segments.front_mut() {
                if to.segment == s.seq && to.offset >= s.len && s.len >= self.segment_bytes {
                    let path = segment_path(&self.dir, s.seq);
                    let next = s.seq + 1;
                    let new_path = segment_path(&self.dir, next);
                    self.writer = OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&new_path)
                        .map_err(io(&new_path))?;
                    freed += s.len;
                    *s = Segment { seq: next, len: 0 };
                    std::fs::remove_file(&path).map_err(io(&path))?;
                }
            }
        }
        Ok(freed)
    }
}

fn read_ack(dir: &Path) -> Option<Pos> {
    let text = std::fs::read_to_string(dir.join("ack")).ok()?;
    let mut it = text.split_whitespace();
    let segment = it.next()?.parse().ok()?;
    let offset = it.next()?.parse().ok()?;
    Some(Pos { segment, offset })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn records_round_trip() {
        let mut buf = encode(b"one");
        buf.extend(encode(b""));
        buf.extend(encode(b"three"));
        let (recs, valid, tail) = decode(&buf);
        assert_eq!(tail, Tail::Clean);
        assert_eq!(valid, buf.len());
        let got: Vec<&[u8]> = recs.iter().map(|(s, e)| &buf[*s..*e]).collect();
        assert_eq!(got, vec![&b"one"[..], b"", b"three"]);
    }

    #[test]
    fn torn_and_corrupt_tails_are_found() {
        let mut buf = encode(b"one");
        let whole = buf.len();
        buf.extend(&encode(b"two")[..7]);
        let (recs, valid, tail) = decode(&buf);
        assert_eq!((recs.len(), valid, tail), (1, whole, Tail::Torn));
        let mut buf = encode(b"one");
        let mut bad = encode(b"two");
        let n = bad.len();
        bad[n - 1] ^= 1;
        buf.extend(bad);
        buf.extend(encode(b"three"));
        let (recs, valid, tail) = decode(&buf);
        assert_eq!((recs.len(), valid), (1, whole));
        assert!(matches!(tail, Tail::Corrupt(m) if m.contains("checksum")));
        // A length over the maximum.
        let mut buf = vec![0xff; HEADER];
        buf.extend(b"x");
        assert!(matches!(decode(&buf).2, Tail::Corrupt(_)));
    }

    #[test]
    fn spool_is_ordered_bounded_and_resumes() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, pending) = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(pending, 0);
        // Segments of 64 KiB: 100 records of 2 KiB span several.
        let rec = |i: usize| format!("{i:04}{}", "x".repeat(2_000)).into_bytes();
        for i in 0..100 {
            s.append(&rec(i)).unwrap();
        }
        assert!(s.segments.len() > 2);
        let first = s.peek(10_000).unwrap();
        assert_eq!(first.len(), 4);
        assert_eq!(&first[0].0[..4], b"0000");
        s.ack(first[3].1).unwrap();
        // Reopened: the rest, in order, none twice.
        drop(s);
        let (mut s, pending) = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(pending, 96);
        let mut got = Vec::new();
        loop {
            let b = s.peek(50_000).unwrap();
            let Some(last) = b.last().map(|r| r.1) else {
                break;
            };
            got.extend(
                b.into_iter()
                    .map(|r| String::from_utf8(r.0[..4].to_vec()).unwrap()),
            );
            s.ack(last).unwrap();
        }
        let want: Vec<String> = (4..100).map(|i| format!("{i:04}")).collect();
        assert_eq!(got, want);
        // Delivered segments are gone; the bound holds.
        assert!(s.bytes() < 70_000, "{}", s.bytes());
        let big = vec![b'y'; 600_000];
        s.append(&big).unwrap();
        assert!(matches!(s.append(&big), Err(SpoolError::Full { .. })));
        assert!(matches!(
            s.append(&vec![0u8; 2 << 20]),
            Err(SpoolError::TooLarge { .. })
        ));
        let (_s, pending) = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(pending, 1);
    }

    #[test]
    fn a_torn_append_is_cut_off_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let (mut s, _) = Spool::open(dir.path(), 1 << 20).unwrap();
        s.append(b"kept").unwrap();
        drop(s);
        let path = segment_path(dir.path(), 0);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&encode(b"torn")[..9]).unwrap();
        drop(f);
        let (mut s, pending) = Spool::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(pending, 1);
        s.append(b"after").unwrap();
        let got: Vec<Vec<u8>> = s.peek(1 << 20).unwrap().into_iter().map(|r| r.0).collect();
        assert_eq!(got, vec![b"kept".to_vec(), b"after".to_vec()]);
    }
}
