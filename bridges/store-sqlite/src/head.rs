//! The in-memory head: every known series (labels interned, inverted index)
//! and, per series, the open chunk windows that are not yet compacted into
//! SQLite.
//!
//! Invariants:
//! - Only the writer thread mutates the head, and only after the SQLite
//!   transaction that makes the change durable has committed. Readers take
//!   the read lock and copy out what they need.
//! - A series id is never reused (`series.id` is `AUTOINCREMENT`), so an id
//!   that resolves here always names the same label set.
//! - A window `[start, start + window)` is aligned to a multiple of the chunk
//!   window. Inside a window, the appender holds an increasing run and `ooo`
//!   holds the (rare) samples that arrived behind it, sorted; no timestamp is
//!   held twice, in the window or in `compacted` (timestamps already in the
//!   SQLite chunk of a window that had been compacted when it reopened).
//! - Every sample in the head is also in a committed `head_wal` row.

use super::hash::FastMap;
use super::symbols::{Sym, Symbols};
use kube_insight_core::{Label, Labels, MatchOp, Matcher};
use kube_insight_store::chunk::ChunkAppender;
use std::borrow::Cow;

/// A series' identity in the head: xxh3-128 over `name 0xff value 0xff …`.
/// At 128 bits a collision among even billions of series is far less likely
/// than a memory error, so the head compares keys, not label strings.
pub(crate) fn series_key(labels: &Labels) -> u128 {
    thread_local! {
        static BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    }
    BUF.with(|b| {
        let mut buf = b.borrow_mut();
        buf.clear();
        for l in labels {
            buf.extend_from_slice(l.name.as_bytes());
            buf.push(0xff);
            buf.extend_from_slice(l.value.as_bytes());
            buf.push(0xff);
        }
        let k = xxhash_rust::xxh3::xxh3_128(&buf);
        if buf.capacity() > 1 << 16 {
            *buf = Vec::new();
        }
        k
    })
}

/// Label names with an inverted index (name=value → sorted series ids).
/// Matchers on other labels are checked series by series on the candidates.
pub(crate) const INDEXED_LABELS: &[&str] = &[
    "__name__",
    "cluster",
    "namespace",
    "pod",
    "container",
    "job",
    "instance",
    "node",
    "service",
];

/// One open chunk window of one series.
pub(crate) struct HeadWindow {
    pub start_ms: i64,
    pub app: ChunkAppender,
    /// The rare parts, boxed to keep the common window small (72 bytes).
    extra: Option<Box<WindowExtra>>,
}

#[derive(Default)]
struct WindowExtra {
    /// Samples behind the appender's last timestamp, sorted.
    ooo: Vec<(i64, f64)>,
    /// Set when the window had already been compacted when this head window
    /// opened (a late sample): the timestamps of that chunk, for dedup. The
    /// next maintenance pass merges the window into the chunk.
    compacted: Option<Box<[i64]>>,
}

impl HeadWindow {
    pub(crate) fn new(start_ms: i64, compacted: Option<Box<[i64]>>) -> Self {
        HeadWindow {
            start_ms,
            app: ChunkAppender::new(),
            extra: compacted.map(|c| {
                Box::new(WindowExtra {
                    ooo: Vec::new(),
                    compacted: Some(c),
                })
            }),
        }
    }

    /// Out-of-order samples, sorted.
    pub(crate) fn ooo(&self) -> &[(i64, f64)] {
        self.extra.as_ref().map_or(&[], |e| &e.ooo)
    }

    /// Whether the window reopened after compaction (merge at maintenance).
    pub(crate) fn is_late(&self) -> bool {
        self.extra.as_ref().is_some_and(|e| e.compacted.is_some())
    }

    pub(crate) fn len(&self) -> usize {
        self.app.len() + self.ooo().len()
    }

    /// Heap bytes held (approximate).
    pub(crate) fn heap_bytes(&self) -> usize {
        self.app.heap_bytes()
            + self.extra.as_ref().map_or(0, |e| {
                std::mem::size_of::<WindowExtra>()
                    + e.ooo.capacity() * 16
                    + e.compacted.as_ref().map_or(0, |c| c.len() * 8)
            })
    }

    /// Whether `ts` is already held by the window (or its compacted chunk).
    pub(crate) fn contains(&self, ts: i64) -> bool {
        if let Some(c) = self.extra.as_ref().and_then(|e| e.compacted.as_ref()) {
            if c.binary_search(&ts).is_ok() {
                return true;
            }
        }
        match self.app.last_ts() {
            None => return false,
            Some(last) if ts > last => return false,
            Some(last) if ts == last => return true,
            Some(_) => {}
        }
        if self.ooo().binary_search_by_key(&ts, |s| s.0).is_ok() {
            return true;
        }
        for s in self.app.iter() {
            match s {
                Ok((t, _)) if t == ts => return true,
                Ok((t, _)) if t > ts => return false,
                Ok(_) => {}
                Err(_) => return false,
            }
        }
        false
    }

    fn push_ooo(&mut self, ts: i64, v: f64) {
        let ooo = &mut self.extra.get_or_insert_with(Box::default).ooo;
        let pos = ooo.partition_point(|s| s.0 < ts);
        ooo.insert(pos, (ts, v));
    }

    /// Adds a sample the window does not hold yet.
    pub(crate) fn insert(&mut self, ts: i64, v: f64) {
        match self.app.last_ts() {
            Some(last) if ts <= last => self.push_ooo(ts, v),
            _ => {
                // Cannot fail: ts is after the last timestamp, and a window
                // holds far fewer than u32::MAX samples.
                if self.app.push(ts, v).is_err() {
                    self.push_ooo(ts, v);
                }
            }
        }
    }

    /// All samples, sorted by timestamp.
    pub(crate) fn samples(&self) -> Vec<(i64, f64)> {
        let mut out: Vec<(i64, f64)> = Vec::with_capacity(self.len());
        out.extend(self.app.iter().map_while(|s| s.ok()));
        if !self.ooo().is_empty() {
            out.extend_from_slice(self.ooo());
            out.sort_by_key(|s| s.0);
        }
        out
    }
}

/// A known series.
pub(crate) struct MemSeries {
    /// `[name, value, name, value, …]` in label order (sorted by name).
    pub labels: Box<[Sym]>,
    /// The cluster the series was written for (the batch's cluster).
    pub cluster: Sym,
    /// Smallest and largest timestamps ever stored.
    pub first_ms: i64,
    pub last_ms: i64,
    /// Open windows, sorted by start.
    pub windows: Vec<HeadWindow>,
    /// Writer clock of the last write that gave it samples (the series cap
    /// counts the series written within the head grace).
    pub last_write_ms: i64,
}

impl MemSeries {
    pub(crate) fn overlaps(&self, start_ms: i64, end_ms: i64) -> bool {
        self.first_ms <= end_ms && self.last_ms >= start_ms
    }

    pub(crate) fn window(&self, start_ms: i64) -> Option<&HeadWindow> {
        self.windows.iter().rev().find(|w| w.start_ms == start_ms)
    }

    /// The value of a label by symbol ("" when absent).
    pub(crate) fn label<'a>(&self, syms: &'a Symbols, name: Option<Sym>) -> &'a str {
        let Some(name) = name else { return "" };
        for p in self.labels.chunks_exact(2) {
            if p[0] == name {
                return syms.resolve(p[1]);
            }
        }
        ""
    }
}

/// Where a sample stands against what is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Presence {
    /// Already stored: a duplicate.
    Present,
    /// Not stored.
    Absent,
    /// Its window is not in the head but was compacted: look in the chunk.
    CheckChunk { window_start: i64 },
}

/// The in-memory head and series index. See the module doc for invariants.
pub(crate) struct Head {
    pub syms: Symbols,
    pub series: FastMap<u32, MemSeries>,
    /// Every series id, sorted.
    all_ids: Vec<u32>,
    by_key: FastMap<u128, u32>,
    /// name symbol → value symbol → sorted series ids, for [`INDEXED_LABELS`].
    postings: FastMap<Sym, FastMap<Sym, Vec<u32>>>,
    /// Series with at least one open window, per cluster symbol.
    pub active: FastMap<Sym, u64>,
    /// Samples held in open windows.
    pub head_samples: u64,
    /// The next series id to hand out.
    pub next_id: u32,
    /// Every window that ends at or before this is compacted (or was never
    /// written): a sample below it with no open window is a late sample.
    pub compacted_until: i64,
    /// The chunk window width in ms.
    pub window_ms: i64,
}

impl Head {
    pub(crate) fn new(window_ms: i64) -> Self {
        let mut syms = Symbols::default();
        let mut postings = FastMap::default();
        for name in INDEXED_LABELS {
            // Held forever: one extra reference each.
            postings.insert(syms.intern(name), FastMap::default());
        }
        Head {
            syms,
            series: FastMap::default(),
            all_ids: Vec::new(),
            by_key: FastMap::default(),
            postings,
            active: FastMap::default(),
            head_samples: 0,
            next_id: 1,
            compacted_until: i64::MIN,
            window_ms: window_ms.max(1),
        }
    }

    pub(crate) fn window_start(&self, ts: i64) -> i64 {
        ts.div_euclid(self.window_ms) * self.window_ms
    }

    pub(crate) fn len(&self) -> usize {
        self.series.len()
    }

    /// Approximate heap bytes held by the head: series, windows, index and
    /// symbols (allocator overhead not included).
    pub(crate) fn heap_bytes(&self) -> usize {
        use std::mem::size_of;
        let map_entry = |k: usize, v: usize| k + v + 1;
        let mut n = self.series.capacity() * map_entry(4, size_of::<MemSeries>())
            + self.by_key.capacity() * map_entry(16, 4)
            + self.all_ids.capacity() * 4
            + self.syms.heap_bytes();
        for s in self.series.values() {
            n += s.labels.len() * 4 + s.windows.capacity() * size_of::<HeadWindow>();
            n += s.windows.iter().map(HeadWindow::heap_bytes).sum::<usize>();
        }
        for values in self.postings.values() {
            n += values.capacity() * map_entry(4, size_of::<Vec<u32>>());
            n += values.values().map(|v| v.capacity() * 4).sum::<usize>();
        }
        n
    }

    /// Sorted ids of every series.
    pub(crate) fn all_ids(&self) -> &[u32] {
        &self.all_ids
    }

    /// The id of the series with this [`series_key`].
    pub(crate) fn lookup(&self, key: u128) -> Option<u32> {
        self.by_key.get(&key).copied()
    }

    /// Adds a series (the caller made it durable first).
    pub(crate) fn insert_series(
        &mut self,
        id: u32,
        cluster: &str,
        labels: &Labels,
        key: u128,
        first_ms: i64,
        last_ms: i64,
    ) {
        if self.series.contains_key(&id) {
            return;
        }
        let mut syms = Vec::with_capacity(labels.len() * 2);
        for l in labels {
            let n = self.syms.intern(&l.name);
            let v = self.syms.intern(&l.value);
            syms.push(n);
            syms.push(v);
            if let Some(values) = self.postings.get_mut(&n) {
                let list = values.entry(v).or_default();
                match list.last() {
                    Some(&last) if last > id => {
                        if let Err(pos) = list.binary_search(&id) {
                            list.insert(pos, id);
                        }
                    }
                    _ => list.push(id),
                }
            }
        }
        let cluster = self.syms.intern(cluster);
        self.by_key.insert(key, id);
        match self.all_ids.last() {
            Some(&last) if last > id => {
                if let Err(pos) = self.all_ids.binary_search(&id) {
                    self.all_ids.insert(pos, id);
                }
            }
            _ => self.all_ids.push(id),
        }
        self.next_id = self.next_id.max(id.saturating_add(1));
        self.series.insert(
            id,
            MemSeries {
                labels: syms.into_boxed_slice(),
                cluster,
                first_ms,
                last_ms,
                windows: Vec::new(),
                last_write_ms: i64::MIN,
            },
        );
    }

    /// Records a write of series `id` at writer time `now_ms`.
    pub(crate) fn touch(&mut self, id: u32, now_ms: i64) {
        if let Some(s) = self.series.get_mut(&id) {
            s.last_write_ms = s.last_write_ms.max(now_ms);
        }
    }

    /// Marks every series with an open window as written at `now_ms` (after
    /// a WAL replay: when they were written before is not known).
    pub(crate) fn touch_open(&mut self, now_ms: i64) {
        for s in self.series.values_mut() {
            if !s.windows.is_empty() {
                s.last_write_ms = s.last_write_ms.max(now_ms);
            }
        }
    }

    /// Series of `cluster` in the head that were written at or after
    /// `since_ms` (the ones the series cap counts). A scan of every series.
    pub(crate) fn live_in(&self, cluster: &str, since_ms: i64) -> u64 {
        let Some(c) = self.syms.get(cluster) else {
            return 0;
        };
        self.series
            .values()
            .filter(|s| s.cluster == c && !s.windows.is_empty() && s.last_write_ms >= since_ms)
            .count() as u64
    }

    /// [`Head::live_in`] for every cluster.
    pub(crate) fn live_by_cluster(&self, since_ms: i64) -> Vec<(String, u64)> {
        let mut by: FastMap<Sym, u64> = FastMap::default();
        for s in self.series.values() {
            if !s.windows.is_empty() && s.last_write_ms >= since_ms {
                *by.entry(s.cluster).or_insert(0) += 1;
            }
        }
        let mut out: Vec<(String, u64)> = by
            .into_iter()
            .map(|(c, n)| (self.syms.resolve(c).to_string(), n))
            .collect();
        out.sort();
        out
    }

    /// Removes a series and everything it holds (retention).
    pub(crate) fn remove_series(&mut self, id: u32) {
        let Some(s) = self.series.remove(&id) else {
            return;
        };
        // Before the symbols are released.
        let key = series_key(&self.labels_of(&s));
        if self.by_key.get(&key) == Some(&id) {
            self.by_key.remove(&key);
        }
        for p in s.labels.chunks_exact(2) {
            if let Some(values) = self.postings.get_mut(&p[0]) {
                if let Some(list) = values.get_mut(&p[1]) {
                    if let Ok(pos) = list.binary_search(&id) {
                        list.remove(pos);
                    }
                    if list.is_empty() {
                        values.remove(&p[1]);
                    }
                }
            }
            self.syms.release(p[0]);
            self.syms.release(p[1]);
        }
        if let Ok(pos) = self.all_ids.binary_search(&id) {
            self.all_ids.remove(pos);
        }
        if !s.windows.is_empty() {
            if let Some(a) = self.active.get_mut(&s.cluster) {
                *a = a.saturating_sub(1);
            }
            self.head_samples = self
                .head_samples
                .saturating_sub(s.windows.iter().map(|w| w.len() as u64).sum());
        }
        self.syms.release(s.cluster);
    }

    /// The label set of a series.
    pub(crate) fn labels_of(&self, s: &MemSeries) -> Labels {
        Labels::from_sorted(
            s.labels
                .chunks_exact(2)
                .map(|p| Label::new(self.syms.resolve(p[0]), self.syms.resolve(p[1])))
                .collect(),
        )
    }

    /// Active series of a cluster (by name).
    pub(crate) fn active_in(&self, cluster: &str) -> u64 {
        self.syms
            .get(cluster)
            .and_then(|c| self.active.get(&c))
            .copied()
            .unwrap_or(0)
    }

    /// Where `ts` of series `id` stands (see [`Presence`]).
    pub(crate) fn presence(&self, id: u32, ts: i64) -> Presence {
        let ws = self.window_start(ts);
        if let Some(s) = self.series.get(&id) {
            if let Some(w) = s.window(ws) {
                return if w.contains(ts) {
                    Presence::Present
                } else {
                    Presence::Absent
                };
            }
        }
        if ws.saturating_add(self.window_ms) <= self.compacted_until {
            Presence::CheckChunk { window_start: ws }
        } else {
            Presence::Absent
        }
    }

    /// Adds one sample the head does not hold (tests).
    #[cfg(test)]
    pub(crate) fn insert_sample(&mut self, id: u32, ts: i64, v: f64) {
        self.add_samples(id, &[(ts, v)], false, |_| Box::default());
    }

    /// Adds samples of one series, made durable by the caller. With `dedup`
    /// (WAL replay), samples the head or a compacted chunk already holds are
    /// skipped and counted; without it the caller has checked. `compacted`
    /// returns the chunk timestamps of a window that is opened late (after
    /// it was compacted). Returns (added, duplicates).
    pub(crate) fn add_samples(
        &mut self,
        id: u32,
        samples: &[(i64, f64)],
        dedup: bool,
        mut compacted: impl FnMut(i64) -> Box<[i64]>,
    ) -> (u64, u64) {
        let window_ms = self.window_ms;
        let until = self.compacted_until;
        let Some(s) = self.series.get_mut(&id) else {
            return (0, 0);
        };
        let was_inactive = s.windows.is_empty();
        let (mut added, mut dups) = (0u64, 0u64);
        // Chunk timestamps loaded for a late window not opened yet.
        let mut loaded: Option<(i64, Box<[i64]>)> = None;
        for &(ts, v) in samples {
            let ws = ts.div_euclid(window_ms) * window_ms;
            let idx = match s.windows.iter().rposition(|w| w.start_ms == ws) {
                Some(i) => {
                    if dedup && s.windows[i].contains(ts) {
                        dups += 1;
                        continue;
                    }
                    i
                }
                None => {
                    let c = if ws.saturating_add(window_ms) <= until {
                        let c = match loaded.take() {
                            Some((lws, c)) if lws == ws => c,
                            _ => compacted(ws),
                        };
                        if dedup && c.binary_search(&ts).is_ok() {
                            dups += 1;
                            loaded = Some((ws, c));
                            continue;
                        }
                        Some(c)
                    } else {
                        None
                    };
                    let pos = s.windows.partition_point(|w| w.start_ms < ws);
                    let w = HeadWindow::new(ws, c);
                    // The window before is done growing: give its spare
                    // capacity back. The new window grows by an eighth at a
                    // time (no reservation of a whole window's bytes: in the
                    // grace after a window ends, that doubled the head).
                    if pos > 0 && pos == s.windows.len() {
                        s.windows[pos - 1].app.shrink_to_fit();
                    }
                    s.windows.reserve_exact(1); // usually 1–2 windows: no spare
                    s.windows.insert(pos, w);
                    pos
                }
            };
            s.windows[idx].insert(ts, v);
            added += 1;
            s.first_ms = s.first_ms.min(ts);
            s.last_ms = s.last_ms.max(ts);
        }
        self.head_samples += added;
        if was_inactive && !s.windows.is_empty() {
            *self.active.entry(s.cluster).or_insert(0) += 1;
        }
        (added, dups)
    }

    /// Removes a window that was compacted into SQLite.
    pub(crate) fn remove_window(&mut self, id: u32, start_ms: i64) {
        let Some(s) = self.series.get_mut(&id) else {
            return;
        };
        let Some(i) = s.windows.iter().position(|w| w.start_ms == start_ms) else {
            return;
        };
        let w = s.windows.remove(i);
        self.head_samples = self.head_samples.saturating_sub(w.len() as u64);
        if s.windows.is_empty() {
            s.windows = Vec::new(); // release the allocation
            if let Some(a) = self.active.get_mut(&s.cluster) {
                *a = a.saturating_sub(1);
            }
        }
    }

    /// Sorted ids of the series matching every matcher (data range not
    /// considered). Indexed labels narrow the candidates; every matcher is
    /// then checked on each candidate.
    pub(crate) fn match_ids(&self, matchers: &[Matcher]) -> Vec<u32> {
        let mut lists: Vec<Cow<'_, [u32]>> = Vec::new();
        for m in matchers {
            if m.matches_empty() {
                continue; // also matches series without the label
            }
            let Some(name) = self.syms.get(&m.name) else {
                return Vec::new(); // no series has this label at all
            };
            let Some(values) = self.postings.get(&name) else {
                continue; // not indexed: checked per candidate
            };
            match m.op {
                MatchOp::Equal => match self.syms.get(&m.value).and_then(|v| values.get(&v)) {
                    Some(ids) => lists.push(Cow::Borrowed(ids)),
                    None => return Vec::new(),
                },
                _ => {
                    let mut u: Vec<u32> = values
                        .iter()
                        .filter(|(v, _)| m.matches_value(self.syms.resolve(**v)))
                        .flat_map(|(_, ids)| ids.iter().copied())
                        .collect();
                    u.sort_unstable();
                    u.dedup();
                    lists.push(Cow::Owned(u));
                }
            }
        }
        lists.sort_by_key(|l| l.len());
        let candidates: Vec<u32> = match lists.split_first() {
            None => self.all_ids.clone(),
            Some((first, rest)) => first
                .iter()
                .copied()
                .filter(|id| rest.iter().all(|l| l.binary_search(id).is_ok()))
                .collect(),
        };
        let compiled: Vec<(Option<Sym>, &Matcher)> = matchers
            .iter()
            .map(|m| (self.syms.get(&m.name), m))
            .collect();
        candidates
            .into_iter()
            .filter(|id| {
                self.series.get(id).is_some_and(|s| {
                    compiled
                        .iter()
                        .all(|(n, m)| m.matches_value(s.label(&self.syms, *n)))
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(pairs: &[(&str, &str)]) -> Labels {
        Labels::from_pairs(pairs.iter().copied())
    }

    #[test]
    fn lookup_insert_remove() {
        let mut h = Head::new(7_200_000);
        let a = l(&[("__name__", "up"), ("job", "a")]);
        let b = l(&[("__name__", "up"), ("job", "b")]);
        assert_ne!(series_key(&a), series_key(&b));
        assert_ne!(
            series_key(&l(&[("ab", "c")])),
            series_key(&l(&[("a", "bc")]))
        );
        h.insert_series(1, "c1", &a, series_key(&a), 0, 0);
        h.insert_series(2, "c1", &b, series_key(&b), 0, 0);
        assert_eq!(h.lookup(series_key(&a)), Some(1));
        assert_eq!(h.lookup(series_key(&b)), Some(2));
        h.remove_series(1);
        assert_eq!(h.lookup(series_key(&a)), None);
        assert_eq!(h.lookup(series_key(&b)), Some(2));
        assert_eq!(h.all_ids(), &[2]);
        assert_eq!(h.labels_of(&h.series[&2]), b);
        assert_eq!(h.next_id, 3);
        assert_eq!(h.syms.get("a"), None, "released symbols are freed");
    }

    #[test]
    fn matching_uses_postings_and_checks_every_matcher() {
        let mut h = Head::new(7_200_000);
        h.insert_series(
            1,
            "c",
            &l(&[("__name__", "x"), ("pod", "a"), ("zone", "1")]),
            1,
            0,
            0,
        );
        let x = l(&[("__name__", "x"), ("pod", "b")]);
        h.insert_series(2, "c", &x, series_key(&x), 0, 0);
        let x = l(&[("__name__", "y"), ("pod", "a")]);
        h.insert_series(3, "c", &x, series_key(&x), 0, 0);
        let eq = |n: &str, v: &str| Matcher::eq(n, v);
        let re = |op, n: &str, v: &str| Matcher::new(op, n, v).unwrap();
        assert_eq!(h.match_ids(&[eq("__name__", "x")]), vec![1, 2]);
        assert_eq!(h.match_ids(&[eq("__name__", "x"), eq("pod", "a")]), vec![1]);
        assert_eq!(
            h.match_ids(&[re(MatchOp::RegexMatch, "pod", "a|b")]),
            vec![1, 2, 3]
        );
        assert_eq!(h.match_ids(&[re(MatchOp::NotEqual, "pod", "a")]), vec![2]);
        assert_eq!(h.match_ids(&[eq("zone", "1")]), vec![1]);
        assert_eq!(h.match_ids(&[eq("zone", "")]), vec![2, 3]);
        assert_eq!(h.match_ids(&[eq("nope", "1")]), Vec::<u32>::new());
        assert_eq!(h.match_ids(&[]), vec![1, 2, 3]);
    }

    #[test]
    fn windows_dedup_and_order() {
        let mut h = Head::new(1000);
        let x = l(&[("__name__", "x")]);
        h.insert_series(1, "c", &x, series_key(&x), 500, 500);
        for ts in [500, 700, 600, 1500] {
            assert_eq!(h.presence(1, ts), Presence::Absent);
            h.insert_sample(1, ts, ts as f64);
            assert_eq!(h.presence(1, ts), Presence::Present);
        }
        let s = &h.series[&1];
        assert_eq!(s.windows.len(), 2);
        assert_eq!(
            s.windows[0].samples(),
            vec![(500, 500.0), (600, 600.0), (700, 700.0)]
        );
        assert_eq!(h.head_samples, 4);
        assert_eq!(h.active_in("c"), 1);
        h.compacted_until = 1000;
        h.remove_window(1, 0);
        assert_eq!(h.presence(1, 600), Presence::CheckChunk { window_start: 0 });
        h.remove_window(1, 1000);
        assert_eq!(h.active_in("c"), 0);
        assert_eq!(h.head_samples, 0);
    }
}
