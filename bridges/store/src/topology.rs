//! The topology part of the store contract, and the binary codecs every
//! backend shares.
//!
//! # What is stored
//! - **Structure** (nodes and edges) as *keyframes* (the whole graph) plus
//!   *deltas* (what changed since the previous save). A save whose graph is
//!   unchanged writes no structure at all, so a quiet cluster costs almost
//!   nothing. A new keyframe is written when the deltas since the last one
//!   outweigh it, or after a count or age bound, so the graph at any T is
//!   one keyframe plus a bounded number of deltas, never a replay from the
//!   beginning.
//! - **Stats** (edge traffic, requests, errors, latency; node CPU, memory,
//!   restarts) at one-minute resolution: the first save of each minute is
//!   kept, values quantised to 1 % (relative) and encoded as differences
//!   from the previous minute, with a self-contained stats keyframe every
//!   [`STATS_CHAIN_MINUTES`] minutes (so stats at T decode at most that
//!   many rows).
//! - **Dependency changes**: every workload-level edge that appeared or was
//!   lost, with its time, for the `/api/v1/changes` timeline.
//!
//! # Reading at T
//! The structure at T is the state after the last save at or before T;
//! before the first retained keyframe it is `None`. Stats at T are those of
//! the last stored minute at or before T, if it is at most
//! [`STATS_MAX_AGE_MS`] old.

use crate::error::{Error, Result};
use async_trait::async_trait;
use kube_insight_core::topology::{
    Edge, EdgeStats, Graph, GraphDelta, Interner, Name, Node, NodeKind, NodeStats, Snapshot, Stats,
};
use kube_insight_core::TimeRange;
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;

/// Stats rows per chain: a stats keyframe at least every this many minutes.
pub const STATS_CHAIN_MINUTES: usize = 15;
/// Stats older than this before T are not "the stats of that moment".
pub const STATS_MAX_AGE_MS: i64 = 5 * 60_000;
pub const MINUTE_MS: i64 = 60_000;

/// What one save did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SaveOutcome {
    /// The structure differed from the previous save (a delta was written).
    pub structure_changed: bool,
    /// A structure keyframe was written.
    pub keyframe: bool,
    /// A stats row was written (the first save of a minute).
    pub stats_written: bool,
    /// Payload bytes written (structure, stats, dependency changes).
    pub bytes_written: u64,
    /// Dependency changes recorded.
    pub dependency_changes: u64,
}

/// The structure at a moment.
#[derive(Debug, Clone, PartialEq)]
pub struct GraphAt {
    pub graph: Arc<Graph>,
    /// When this version of the structure was saved (the last change ≤ T).
    pub version_ms: i64,
    /// The first and last saves of the cluster (coverage; T after `last_ms`
    /// means the graph may be stale).
    pub first_ms: i64,
    pub last_ms: i64,
}

/// The stats of a moment.
#[derive(Debug, Clone, PartialEq)]
pub struct StatsAt {
    pub stats: Arc<Stats>,
    /// The minute (epoch ms) these stats were saved in.
    pub minute_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DependencyChangeKind {
    Appeared,
    Lost,
}

impl DependencyChangeKind {
    pub fn name(self) -> &'static str {
        match self {
            DependencyChangeKind::Appeared => "dependency appeared",
            DependencyChangeKind::Lost => "dependency lost",
        }
    }
}

/// One record of the changes timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DependencyChange {
    pub cluster: String,
    pub at_ms: i64,
    pub kind: DependencyChangeKind,
    pub edge_id: String,
    pub source: String,
    pub target: String,
    pub directed: bool,
}

#[derive(Debug, Clone)]
pub struct DependencyQuery {
    pub cluster: Option<String>,
    pub range: TimeRange,
    /// More changes than this is [`Error::LimitExceeded`].
    pub limit: usize,
}

/// A cluster's saved coverage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopologyCluster {
    pub cluster: String,
    pub first_ms: i64,
    pub last_ms: i64,
}

/// What one topology maintenance pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TopologyMaintenance {
    pub rows_expired: u64,
}

#[async_trait]
pub trait TopologyStore: Send + Sync {
    /// Saves the snapshot of `cluster` at `at_ms`, durably before `Ok`.
    /// The first save of a cluster writes a keyframe; later saves write a
    /// delta only when the structure changed. Stats are kept for the first
    /// save of each minute. Saving again at the time of the last save is a
    /// no-op (a retry); saving before it is [`Error::InvalidQuery`].
    async fn save_snapshot(
        &self,
        cluster: &str,
        at_ms: i64,
        snapshot: Snapshot,
    ) -> Result<SaveOutcome>;

    /// The structure as it was at `at_ms`; `None` before the first retained save.
    async fn graph_at(&self, cluster: &str, at_ms: i64) -> Result<Option<GraphAt>>;

    /// The stats of the last stored minute at or before `at_ms` (at most
    /// [`STATS_MAX_AGE_MS`] old), 1 % resolution.
    async fn stats_at(&self, cluster: &str, at_ms: i64) -> Result<Option<StatsAt>>;

    /// Workload-level edges that appeared or were lost in `range`, by time
    /// then edge id.
    async fn dependency_changes(&self, query: &DependencyQuery) -> Result<Vec<DependencyChange>>;

    /// Clusters with saved topology, by name.
    async fn topology_clusters(&self) -> Result<Vec<TopologyCluster>>;

    /// Retention: deletes what is older than `now_ms - retention`, keeping
    /// what reconstruction of later moments needs.
    async fn maintain_topology(&self, now_ms: i64) -> Result<TopologyMaintenance>;

    /// Graph and stats at `at_ms` (stats empty when none are recent enough).
    async fn snapshot_at(
        &self,
        cluster: &str,
        at_ms: i64,
    ) -> Result<Option<(Snapshot, GraphAt, Option<StatsAt>)>> {
        let Some(g) = self.graph_at(cluster, at_ms).await? else {
            return Ok(None);
        };
        let st = self.stats_at(cluster, at_ms).await?;
        let snap = Snapshot {
            graph: (*g.graph).clone(),
            stats: st.as_ref().map(|s| (*s.stats).clone()).unwrap_or_default(),
        };
        Ok(Some((snap, g, st)))
    }
}

pub type DynTopologyStore = Arc<dyn TopologyStore>;

/// A save's place after the cluster's last save: `Ok(true)` is a retry of
/// it (a no-op), an older time is [`Error::InvalidQuery`]. Every backend's
/// `save_snapshot` starts here.
pub fn check_save_order(cluster: &str, last_save_ms: Option<i64>, at_ms: i64) -> Result<bool> {
    match last_save_ms {
        Some(last) if at_ms == last => Ok(true),
        Some(last) if at_ms < last => Err(Error::InvalidQuery(format!(
            "topology snapshot of cluster {cluster:?} at {at_ms} is older than the last saved one at {last}"
        ))),
        _ => Ok(false),
    }
}

/// The structure keyframes since the last one: (keyframe time, its bytes,
/// deltas after it, their bytes).
pub type KeyframeBook = (i64, u64, usize, u64);

/// The keyframe policy every backend follows: a structure change writes a
/// keyframe for the first save, after `max_deltas` deltas, when the deltas
/// since the last keyframe outweigh it, or when it is `max_age_ms` old.
pub fn needs_keyframe(
    book: Option<KeyframeBook>,
    delta_len: u64,
    at_ms: i64,
    max_deltas: usize,
    max_age_ms: i64,
) -> bool {
    match book {
        None => true,
        Some((kf_ms, kf_bytes, n, bytes)) => {
            n + 1 > max_deltas
                || bytes + delta_len > kf_bytes
                || at_ms.saturating_sub(kf_ms) >= max_age_ms
        }
    }
}

/// Stats are kept for the first save of each minute: `None` when this
/// minute already has its row, else whether the row starts a new chain (no
/// chain yet, a minute skipped, or the chain is `chain_minutes` long).
pub fn stats_row_due(
    prev: Option<&(i64, StatsChain)>,
    minute: i64,
    chain_minutes: usize,
) -> Option<bool> {
    match prev {
        Some((m, _)) if *m >= minute => None,
        None => Some(true),
        Some((m, chain)) => Some(minute - m != MINUTE_MS || chain.len >= chain_minutes.max(1)),
    }
}

/// The dependency changes a delta makes: workload-level edges added or
/// removed (an edge re-added with other attributes is no change).
pub fn dependency_changes_of(
    cluster: &str,
    at_ms: i64,
    before: &Graph,
    delta: &GraphDelta,
) -> Vec<DependencyChange> {
    let is_pod = |g: &Graph, id: &str| g.nodes.get(id).is_some_and(|n| n.kind == NodeKind::Pod);
    let added: std::collections::HashSet<&str> =
        delta.added_edges.iter().map(|e| e.id.as_str()).collect();
    let removed: std::collections::HashSet<&str> =
        delta.removed_edges.iter().map(Name::as_str).collect();
    let mut out = Vec::new();
    for id in &delta.removed_edges {
        if added.contains(id.as_str()) {
            continue;
        }
        if let Some(e) = before.edges.get(id.as_str()) {
            if is_pod(before, &e.source) || is_pod(before, &e.target) {
                continue;
            }
            out.push(change(cluster, at_ms, DependencyChangeKind::Lost, e));
        }
    }
    for e in &delta.added_edges {
        if removed.contains(e.id.as_str()) {
            continue;
        }
        let pod = |id: &str| {
            delta
                .added_nodes
                .iter()
                .any(|n| n.id == id && n.kind == NodeKind::Pod)
                || is_pod(before, id)
        };
        if pod(&e.source) || pod(&e.target) {
            continue;
        }
        out.push(change(cluster, at_ms, DependencyChangeKind::Appeared, e));
    }
    out.sort_by(|a, b| a.edge_id.cmp(&b.edge_id).then(a.kind.cmp(&b.kind)));
    out
}

fn change(cluster: &str, at_ms: i64, kind: DependencyChangeKind, e: &Edge) -> DependencyChange {
    DependencyChange {
        cluster: cluster.to_string(),
        at_ms,
        kind,
        edge_id: e.id.to_string(),
        source: e.source.to_string(),
        target: e.target.to_string(),
        directed: e.directed,
    }
}

// ---------------------------------------------------------------------------
// Binary codecs (shared by every backend)
//
// Decoding is pure (bytes in, model out); the strings of a decoded keyframe
// are shared [`Name`]s: a namespace, kind or workload id is stored once and
// every edge points at its endpoints' ids.

const FORMAT_VERSION: u64 = 1;
const RAW: u8 = 0;
const ZSTD: u8 = 1;
/// Frames larger than this are zstd-compressed.
const COMPRESS_ABOVE: usize = 128;
/// A decoded frame larger than this is corrupt (bounds decompression).
const MAX_DECODED: usize = 1 << 30;

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s.as_bytes());
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], what: &'static str) -> Self {
        Reader { buf, pos: 0, what }
    }

    fn bad(&self, why: &str) -> Error {
        Error::Corrupt(format!(
            "topology {} at byte {}: {why}",
            self.what, self.pos
        ))
    }

    fn u8(&mut self) -> Result<u8> {
        let b = *self
            .buf
            .get(self.pos)
            .ok_or_else(|| self.bad("truncated"))?;
        self.pos += 1;
        Ok(b)
    }

    #[inline]
    fn varint(&mut self) -> Result<u64> {
        // Most values of a stats row are small differences: one byte.
        if let Some(&b) = self.buf.get(self.pos) {
            if b < 0x80 {
                self.pos += 1;
                return Ok(u64::from(b));
            }
        }
        self.varint_long()
    }

    #[inline(never)]
    fn varint_long(&mut self) -> Result<u64> {
        let mut v = 0u64;
        let mut shift = 0u32;
        loop {
            let Some(&b) = self.buf.get(self.pos) else {
                return Err(self.bad("truncated"));
            };
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
            shift += 7;
            if shift >= 64 {
                return Err(self.bad("varint too long"));
            }
        }
    }

    fn len(&mut self) -> Result<usize> {
        let n = self.varint()? as usize;
        if n > self
            .buf
            .len()
            .saturating_sub(self.pos)
            .saturating_mul(8)
            .max(16)
        {
            return Err(self.bad("count larger than the frame"));
        }
        Ok(n)
    }

    /// A string borrowed from the frame.
    fn str_ref(&mut self) -> Result<&'a str> {
        let n = self.varint()? as usize;
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.buf.len())
            .ok_or_else(|| self.bad("string past the end"))?;
        let s = std::str::from_utf8(&self.buf[self.pos..end])
            .map_err(|_| self.bad("string is not utf-8"))?;
        self.pos = end;
        Ok(s)
    }

    fn name(&mut self, names: &mut Interner) -> Result<Name> {
        let s = self.str_ref()?;
        Ok(names.intern(s))
    }
}

fn seal(raw: Vec<u8>) -> Vec<u8> {
    if raw.len() > COMPRESS_ABOVE {
        if let Ok(z) = zstd::bulk::compress(&raw, 3) {
            if z.len() < raw.len() {
                let mut out = Vec::with_capacity(z.len() + 1);
                out.push(ZSTD);
                out.extend_from_slice(&z);
                return out;
            }
        }
    }
    let mut out = Vec::with_capacity(raw.len() + 1);
    out.push(RAW);
    out.extend_from_slice(&raw);
    out
}

thread_local! {
    /// One decompression context per thread, reused by every frame (creating
    /// one per frame costs more than decoding a small delta).
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { RefCell::new(None) };
    /// The decompressed bytes of the frame being decoded, reused (a stats
    /// keyframe of a large cluster is megabytes: a fresh buffer per frame
    /// is page faults).
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// A scratch buffer bigger than this is not kept for the next frame.
const SCRATCH_KEEP: usize = 64 << 20;

/// Calls `decode` on the frame's payload (decompressed if it is).
fn with_unsealed<T>(
    data: &[u8],
    what: &'static str,
    decode: impl FnOnce(&[u8]) -> Result<T>,
) -> Result<T> {
    let corrupt = |why: String| Error::Corrupt(format!("topology {what}: {why}"));
    match data.first() {
        Some(&RAW) => decode(&data[1..]),
        Some(&ZSTD) => {
            let body = &data[1..];
            // Frames written by `seal` carry their size: reserve exactly it.
            let size = match zstd::zstd_safe::get_frame_content_size(body) {
                Ok(Some(n)) if n <= MAX_DECODED as u64 => n as usize,
                Ok(Some(n)) => {
                    return Err(corrupt(format!("zstd frame of {n} bytes is too large")))
                }
                Ok(None) => MAX_DECODED,
                Err(_) => return Err(corrupt("zstd: not a zstd frame".into())),
            };
            // Taken, not borrowed: a nested decode gets a fresh buffer.
            let mut buf = SCRATCH.with(|s| s.take());
            buf.clear();
            buf.reserve(size.max(1));
            let unpacked = DECOMPRESSOR.with(|cell| {
                let mut cell = cell.borrow_mut();
                if cell.is_none() {
                    *cell = Some(zstd::bulk::Decompressor::new()?);
                }
                match cell.as_mut() {
                    Some(d) => d.decompress_to_buffer(body, &mut buf),
                    None => Err(std::io::Error::other("no decompressor")),
                }
            });
            let out = match unpacked {
                Ok(_) => decode(&buf),
                Err(e) => Err(corrupt(format!("zstd: {e}"))),
            };
            if buf.capacity() <= SCRATCH_KEEP {
                SCRATCH.with(|s| s.replace(buf));
            }
            out
        }
        _ => Err(corrupt("unknown frame type".into())),
    }
}

fn put_node(out: &mut Vec<u8>, n: &Node) {
    put_str(out, &n.id);
    out.push(n.kind.code());
    put_str(out, &n.namespace);
    put_str(out, &n.name);
    put_str(out, &n.workload_kind);
    put_str(out, n.parent.as_deref().unwrap_or(""));
}

fn get_node(r: &mut Reader<'_>, names: &mut Interner) -> Result<Node> {
    let id = r.str_ref()?;
    let code = r.u8()?;
    let kind = NodeKind::from_code(code).ok_or_else(|| r.bad("unknown node kind"))?;
    // Workload ids are shared with their pods' `parent`; pod ids and names
    // are unique, not worth a lookup.
    let id = if kind == NodeKind::Pod {
        Name::from(id)
    } else {
        names.intern(id)
    };
    let namespace = r.name(names)?;
    let name = match kind {
        NodeKind::Pod => Name::from(r.str_ref()?),
        _ => r.name(names)?,
    };
    let workload_kind = r.name(names)?;
    let parent = r.str_ref()?;
    Ok(Node {
        id,
        kind,
        namespace,
        name,
        workload_kind,
        parent: (!parent.is_empty()).then(|| names.intern(parent)),
    })
}

fn edge_flags(e: &Edge) -> u8 {
    u8::from(e.directed) | (u8::from(e.flow) << 1) | (u8::from(e.requests) << 2)
}

fn put_edge(out: &mut Vec<u8>, e: &Edge, index: &HashMap<&str, usize>) {
    for end in [&e.source, &e.target] {
        match index.get(end.as_str()) {
            Some(i) => put_varint(out, *i as u64 + 1),
            None => {
                put_varint(out, 0);
                put_str(out, end);
            }
        }
    }
    out.push(edge_flags(e));
}

fn get_edge(r: &mut Reader<'_>, nodes: &[Name], names: &mut Interner) -> Result<Edge> {
    let mut ends: [Option<Name>; 2] = [None, None];
    for end in &mut ends {
        let i = r.varint()? as usize;
        *end = Some(if i == 0 {
            r.name(names)?
        } else {
            nodes
                .get(i - 1)
                .cloned()
                .ok_or_else(|| r.bad("edge names an unknown node"))?
        });
    }
    let f = r.u8()?;
    let [Some(s), Some(t)] = ends else {
        return Err(r.bad("edge without both ends"));
    };
    Ok(Edge::between(&s, &t, f & 1 != 0, f & 2 != 0, f & 4 != 0))
}

/// A whole graph (a keyframe).
pub fn encode_graph(g: &Graph) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 * (g.nodes.len() + g.edges.len()) + 16);
    put_varint(&mut out, FORMAT_VERSION);
    put_varint(&mut out, g.nodes.len() as u64);
    let mut index: HashMap<&str, usize> = HashMap::with_capacity(g.nodes.len());
    for (i, n) in g.nodes.values().enumerate() {
        put_node(&mut out, n);
        index.insert(&n.id, i);
    }
    put_varint(&mut out, g.edges.len() as u64);
    for e in g.edges.values() {
        put_edge(&mut out, e, &index);
    }
    seal(out)
}

pub fn decode_graph(data: &[u8]) -> Result<Graph> {
    with_unsealed(data, "keyframe", decode_graph_raw)
}

fn decode_graph_raw(raw: &[u8]) -> Result<Graph> {
    let mut r = Reader::new(raw, "keyframe");
    if r.varint()? != FORMAT_VERSION {
        return Err(r.bad("unknown format version"));
    }
    let mut names = Interner::new();
    let n = r.len()?;
    let mut nodes = Vec::with_capacity(n);
    for _ in 0..n {
        nodes.push(get_node(&mut r, &mut names)?);
    }
    let ids: Vec<Name> = nodes.iter().map(|n| n.id.clone()).collect();
    let m = r.len()?;
    let mut edges = Vec::with_capacity(m);
    for _ in 0..m {
        edges.push(get_edge(&mut r, &ids, &mut names)?);
    }
    // Written in key order: collecting is a linear bulk build (and a later
    // duplicate replaces an earlier one, as inserting would).
    Ok(Graph {
        nodes: nodes.into_iter().map(|n| (n.id.clone(), n)).collect(),
        edges: edges.into_iter().map(|e| (e.id.clone(), e)).collect(),
    })
}

pub fn encode_delta(d: &GraphDelta) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 * d.len() + 16);
    put_varint(&mut out, FORMAT_VERSION);
    put_varint(&mut out, d.removed_nodes.len() as u64);
    for id in &d.removed_nodes {
        put_str(&mut out, id);
    }
    put_varint(&mut out, d.added_nodes.len() as u64);
    for n in &d.added_nodes {
        put_node(&mut out, n);
    }
    put_varint(&mut out, d.removed_edges.len() as u64);
    for id in &d.removed_edges {
        put_str(&mut out, id);
    }
    put_varint(&mut out, d.added_edges.len() as u64);
    let index = HashMap::new();
    for e in &d.added_edges {
        put_edge(&mut out, e, &index);
    }
    seal(out)
}

pub fn decode_delta(data: &[u8]) -> Result<GraphDelta> {
    decode_delta_with(data, &mut Interner::new())
}

/// [`decode_delta`] sharing strings through `names` (a reconstruction
/// decodes hundreds of deltas that name the same namespaces and kinds).
pub fn decode_delta_with(data: &[u8], names: &mut Interner) -> Result<GraphDelta> {
    with_unsealed(data, "delta", |raw| decode_delta_raw(raw, names))
}

fn decode_delta_raw(raw: &[u8], names: &mut Interner) -> Result<GraphDelta> {
    let mut r = Reader::new(raw, "delta");
    if r.varint()? != FORMAT_VERSION {
        return Err(r.bad("unknown format version"));
    }
    let mut d = GraphDelta::default();
    for _ in 0..r.len()? {
        d.removed_nodes.push(Name::from(r.str_ref()?));
    }
    for _ in 0..r.len()? {
        d.added_nodes.push(get_node(&mut r, names)?);
    }
    for _ in 0..r.len()? {
        d.removed_edges.push(Name::from(r.str_ref()?));
    }
    for _ in 0..r.len()? {
        d.added_edges.push(get_edge(&mut r, &[], names)?);
    }
    Ok(d)
}

// --- stats -----------------------------------------------------------------

#[derive(Clone, Copy)]
enum Quant {
    /// 1 % relative steps of `v × scale`.
    Log(f64),
    /// Absolute steps of `1 / scale`.
    Linear(f64),
}

const NODE_Q: [Quant; NodeStats::FIELDS] = [
    Quant::Log(1000.0),      // cpu cores → millicores
    Quant::Log(1.0),         // memory bytes
    Quant::Linear(1.0),      // restarts
    Quant::Log(1000.0),      // requests/s
    Quant::Linear(10_000.0), // error ratio, 0.01 %
];
const EDGE_Q: [Quant; EdgeStats::FIELDS] = [
    Quant::Log(1.0),         // bytes/s
    Quant::Log(1000.0),      // requests/s
    Quant::Linear(10_000.0), // error ratio
    Quant::Log(10.0),        // p50 ms (0.1 ms)
    Quant::Log(10.0),
    Quant::Log(10.0),
];

const LN_STEP: f64 = 0.009_950_330_853_168_083; // ln(1.01)

/// 0 is "unknown"; otherwise the quantised value + 1.
fn quantize(q: Quant, v: Option<f64>) -> i64 {
    match v {
        Some(x) if x.is_finite() => {
            let x = x.max(0.0);
            let n = match q {
                Quant::Log(s) => ((x * s).ln_1p() / LN_STEP).round(),
                Quant::Linear(s) => (x * s).round(),
            };
            (n.min(1e15) as i64) + 1
        }
        _ => 0,
    }
}

/// `exp_m1(n × ln 1.01)` for the first steps of the log scale (9,000 steps
/// span 0 to 10^39: every realistic value), so decoding a minute of a large
/// cluster is lookups, not hundreds of thousands of `exp_m1` calls.
const LOG_TABLE_STEPS: usize = 9_000;

fn log_step(n: usize) -> f64 {
    static TABLE: std::sync::OnceLock<Vec<f64>> = std::sync::OnceLock::new();
    let t = TABLE.get_or_init(|| {
        (0..LOG_TABLE_STEPS)
            .map(|i| (i as f64 * LN_STEP).exp_m1())
            .collect()
    });
    match t.get(n) {
        Some(v) => *v,
        None => (n as f64 * LN_STEP).exp_m1(),
    }
}

fn dequantize(q: Quant, n: i64) -> Option<f64> {
    if n <= 0 {
        return None;
    }
    let n = n - 1;
    Some(match q {
        Quant::Log(s) => log_step(usize::try_from(n).unwrap_or(usize::MAX)) / s,
        Quant::Linear(s) => n as f64 / s,
    })
}

/// One entity table (nodes or edges) of a stats chain: a dictionary that
/// only grows within a chain, and the quantised values of the latest minute
/// (flat: `fields` per entity; `present[i]` false when entity i had no row).
#[derive(Debug, Clone, Default)]
pub struct StatsTable {
    pub dict: Vec<Name>,
    pub index: HashMap<Name, usize>,
    pub present: Vec<bool>,
    pub values: Vec<i64>,
}

impl StatsTable {
    fn slot(&mut self, id: &Name, fields: usize) -> usize {
        if self.index.len() < self.dict.len() {
            // A decoded chain (readers never look ids up): index it now.
            self.index = self
                .dict
                .iter()
                .enumerate()
                .map(|(i, d)| (d.clone(), i))
                .collect();
        }
        if let Some(i) = self.index.get(id) {
            return *i;
        }
        self.dict.push(id.clone());
        self.present.push(false);
        self.values.extend(std::iter::repeat_n(0, fields));
        self.index.insert(id.clone(), self.dict.len() - 1);
        self.dict.len() - 1
    }
}

/// The state of a stats chain after its latest row (a writer keeps it to
/// encode the next minute as differences).
#[derive(Debug, Clone, Default)]
pub struct StatsChain {
    pub nodes: StatsTable,
    pub edges: StatsTable,
    pub len: usize,
}

fn encode_table<'a, const F: usize>(
    out: &mut Vec<u8>,
    table: &mut StatsTable,
    current: impl Iterator<Item = (&'a Name, [i64; F])>,
    keyframe: bool,
) {
    let before = if keyframe { 0 } else { table.dict.len() };
    let mut cur_present = vec![false; table.dict.len()];
    let mut cur = vec![0i64; table.dict.len() * F];
    for (id, v) in current {
        let i = table.slot(id, F);
        if i >= cur_present.len() {
            cur_present.resize(i + 1, false);
            cur.resize((i + 1) * F, 0);
        }
        cur_present[i] = true;
        cur[i * F..(i + 1) * F].copy_from_slice(&v);
    }
    cur_present.resize(table.dict.len(), false);
    cur.resize(table.dict.len() * F, 0);
    put_varint(out, (table.dict.len() - before) as u64);
    for id in &table.dict[before..] {
        put_str(out, id);
    }
    for i in 0..table.dict.len() {
        if !cur_present[i] {
            out.push(0);
            continue;
        }
        let c = &cur[i * F..(i + 1) * F];
        let had = !keyframe && table.present.get(i).copied().unwrap_or(false);
        let p = if had {
            &table.values[i * F..(i + 1) * F]
        } else {
            &[0i64; F][..]
        };
        if had && c == p {
            out.push(1);
            continue;
        }
        out.push(2);
        for k in 0..F {
            put_varint(out, zigzag(c[k] - p[k]));
        }
    }
    table.present = cur_present;
    table.values = cur;
}

fn decode_table(
    r: &mut Reader<'_>,
    table: &mut StatsTable,
    fields: usize,
    keyframe: bool,
) -> Result<()> {
    if keyframe {
        *table = StatsTable::default();
    }
    let added = r.len()?;
    table.dict.reserve(added);
    table.present.reserve(added);
    table.values.reserve(added.saturating_mul(fields));
    for _ in 0..added {
        // Readers only append: no id index to maintain.
        table.dict.push(Name::from(r.str_ref()?));
        table.present.push(false);
        table.values.extend(std::iter::repeat_n(0, fields));
    }
    if table.present.len() != table.dict.len() || table.values.len() != table.dict.len() * fields {
        return Err(r.bad("stats chain state does not match its dictionary"));
    }
    for (present, vals) in table
        .present
        .iter_mut()
        .zip(table.values.chunks_exact_mut(fields))
    {
        match r.u8()? {
            0 => *present = false,
            1 => {
                if !*present {
                    return Err(r.bad("unchanged value without a previous one"));
                }
            }
            2 => {
                let had = *present;
                for slot in vals.iter_mut() {
                    let d = unzigzag(r.varint()?);
                    *slot = if had { slot.saturating_add(d) } else { d };
                }
                *present = true;
            }
            _ => return Err(r.bad("unknown value tag")),
        }
    }
    Ok(())
}

fn quantized<const F: usize>(vals: [Option<f64>; F], q: &[Quant; F]) -> [i64; F] {
    let mut out = [0i64; F];
    for k in 0..F {
        out[k] = quantize(q[k], vals[k]);
    }
    out
}

/// Encodes one minute's stats onto `chain` (as a keyframe when asked, which
/// resets the chain), returning the row's bytes.
pub fn encode_stats(chain: &mut StatsChain, stats: &Stats, keyframe: bool) -> Vec<u8> {
    if keyframe {
        *chain = StatsChain::default();
    }
    let mut out = Vec::with_capacity(8 * (stats.nodes.len() + stats.edges.len()) + 16);
    put_varint(&mut out, FORMAT_VERSION);
    out.push(u8::from(keyframe));
    let nodes = stats
        .nodes
        .iter()
        .map(|(id, s)| (id, quantized(s.to_array(), &NODE_Q)));
    encode_table(&mut out, &mut chain.nodes, nodes, keyframe);
    let edges = stats
        .edges
        .iter()
        .map(|(id, s)| (id, quantized(s.to_array(), &EDGE_Q)));
    encode_table(&mut out, &mut chain.edges, edges, keyframe);
    chain.len = if keyframe { 1 } else { chain.len + 1 };
    seal(out)
}

/// Applies one stats row to `chain`; returns whether it was a keyframe.
pub fn decode_stats_into(chain: &mut StatsChain, data: &[u8]) -> Result<bool> {
    with_unsealed(data, "stats", |raw| decode_stats_raw(chain, raw))
}

fn decode_stats_raw(chain: &mut StatsChain, raw: &[u8]) -> Result<bool> {
    let mut r = Reader::new(raw, "stats");
    if r.varint()? != FORMAT_VERSION {
        return Err(r.bad("unknown format version"));
    }
    let keyframe = r.u8()? == 1;
    decode_table(&mut r, &mut chain.nodes, NodeStats::FIELDS, keyframe)?;
    decode_table(&mut r, &mut chain.edges, EdgeStats::FIELDS, keyframe)?;
    chain.len = if keyframe { 1 } else { chain.len + 1 };
    Ok(keyframe)
}

/// The stats a chain holds after its latest row.
pub fn chain_stats(chain: &StatsChain) -> Stats {
    Stats {
        nodes: table_stats(&chain.nodes, &NODE_Q, NodeStats::from_array),
        edges: table_stats(&chain.edges, &EDGE_Q, EdgeStats::from_array),
    }
}

fn table_stats<T, const F: usize>(
    t: &StatsTable,
    q: &[Quant; F],
    make: impl Fn(&[Option<f64>]) -> T,
) -> std::collections::BTreeMap<Name, T> {
    let mut out: Vec<(Name, T)> = Vec::with_capacity(t.dict.len());
    let mut vals = [None; F];
    for (i, id) in t.dict.iter().enumerate() {
        if !t.present.get(i).copied().unwrap_or(false) {
            continue;
        }
        let Some(row) = t.values.get(i * F..(i + 1) * F) else {
            continue;
        };
        for k in 0..F {
            vals[k] = dequantize(q[k], row[k]);
        }
        out.push((id.clone(), make(&vals)));
    }
    // A chain's dictionary is its keyframe's ids in key order, then the ids
    // each later minute added: collecting sorts those runs and builds the
    // tree in one pass.
    out.into_iter().collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn save_policies_shared_by_the_backends() {
        assert!(!check_save_order("c", None, 5).unwrap());
        assert!(check_save_order("c", Some(5), 5).unwrap(), "a retry");
        assert!(!check_save_order("c", Some(5), 6).unwrap());
        let e = check_save_order("c", Some(5), 4).unwrap_err().to_string();
        assert!(e.contains("older than"), "{e}");

        assert!(needs_keyframe(None, 10, 0, 8, 100), "the first save");
        let book = Some((0, 1_000, 2, 500));
        assert!(!needs_keyframe(book, 100, 50, 8, 100));
        assert!(
            needs_keyframe(book, 600, 50, 8, 100),
            "deltas outweigh the keyframe"
        );
        assert!(needs_keyframe(book, 100, 100, 8, 100), "too old");
        assert!(
            needs_keyframe(Some((0, 1_000, 8, 0)), 1, 1, 8, 100),
            "too many deltas"
        );

        let chain = |len| StatsChain {
            len,
            ..Default::default()
        };
        assert_eq!(stats_row_due(None, MINUTE_MS, 15), Some(true));
        assert_eq!(
            stats_row_due(Some(&(MINUTE_MS, chain(1))), MINUTE_MS, 15),
            None
        );
        assert_eq!(
            stats_row_due(Some(&(0, chain(3))), MINUTE_MS, 15),
            Some(false)
        );
        assert_eq!(
            stats_row_due(Some(&(0, chain(15))), MINUTE_MS, 15),
            Some(true)
        );
        assert_eq!(
            stats_row_due(Some(&(0, chain(3))), 3 * MINUTE_MS, 15),
            Some(true),
            "a skipped minute"
        );
    }

    fn graph(n: usize) -> Graph {
        let mut g = Graph::default();
        for i in 0..n {
            g.add_node(Node::workload("ns", &format!("w{i}"), "Deployment"));
            g.add_node(Node::pod(
                "ns",
                &format!("w{i}"),
                "Deployment",
                &format!("w{i}-abc"),
            ));
        }
        g.add_node(Node::outside());
        for i in 1..n {
            g.add_edge(Edge::new(
                &format!("ns/w{}", i - 1),
                &format!("ns/w{i}"),
                i % 2 == 0,
                true,
                i % 2 == 0,
            ));
        }
        g.add_edge(Edge::new("outside", "ns/w0", false, true, false));
        g
    }

    #[test]
    fn graphs_and_deltas_round_trip() {
        let a = graph(50);
        assert_eq!(decode_graph(&encode_graph(&a)).unwrap(), a);
        let mut b = graph(60);
        b.edges.remove("ns/w3--ns/w4");
        b.nodes.get_mut("ns/w7").unwrap().workload_kind = "StatefulSet".into();
        let d = a.delta_to(&b);
        let d2 = decode_delta(&encode_delta(&d)).unwrap();
        assert_eq!(d2, d);
        let mut c = a.clone();
        c.apply(&d2);
        assert_eq!(c, b);
        assert!(decode_graph(&[9, 1, 2]).is_err());
        assert!(decode_delta(&[0, 1, 200]).is_err());
        assert!(decode_graph(&[]).is_err());
    }

    #[test]
    fn stats_round_trip_within_one_percent_and_unchanged_minutes_are_tiny() {
        let mut s = Stats::default();
        for i in 0..500 {
            s.edges.insert(
                format!("e{i}").into(),
                EdgeStats {
                    bytes_per_s: Some(1000.0 * i as f64),
                    requests_per_s: (i % 3 == 0).then_some(0.5 * i as f64),
                    error_ratio: (i % 3 == 0).then_some(0.0123),
                    p50_ms: Some(3.2),
                    p95_ms: None,
                    p99_ms: Some(250.0),
                },
            );
            s.nodes.insert(
                format!("n{i}").into(),
                NodeStats {
                    cpu_cores: Some(0.25),
                    memory_bytes: Some(1.5e8),
                    restarts: Some(2.0),
                    requests_per_s: None,
                    error_ratio: None,
                },
            );
        }
        let mut w = StatsChain::default();
        let key = encode_stats(&mut w, &s, true);
        let same = encode_stats(&mut w, &s, false);
        assert!(
            same.len() < key.len() / 20,
            "{} vs {}",
            same.len(),
            key.len()
        );
        let mut s2 = s.clone();
        s2.edges.remove("e7");
        s2.edges.insert(
            "new".into(),
            EdgeStats {
                bytes_per_s: Some(5.0),
                ..Default::default()
            },
        );
        let next = encode_stats(&mut w, &s2, false);
        let mut r = StatsChain::default();
        assert!(decode_stats_into(&mut r, &key).unwrap());
        let got = chain_stats(&r);
        let close = |a: Option<f64>, b: Option<f64>| match (a, b) {
            (Some(a), Some(b)) => (a - b).abs() <= 0.006 * b.abs() + 1e-4,
            (None, None) => true,
            _ => false,
        };
        for (id, e) in &s.edges {
            let g = got.edges[id];
            for (x, y) in g.to_array().iter().zip(e.to_array()) {
                assert!(close(*x, y), "{id}: {x:?} vs {y:?}");
            }
        }
        assert!(!decode_stats_into(&mut r, &same).unwrap());
        assert!(!decode_stats_into(&mut r, &next).unwrap());
        let got = chain_stats(&r);
        assert!(!got.edges.contains_key("e7"));
        assert!(close(got.edges["new"].bytes_per_s, Some(5.0)));
        assert_eq!(got.nodes.len(), 500);
        assert!(close(got.nodes["n3"].cpu_cores, Some(0.25)));
        assert_eq!(got.nodes["n3"].restarts, Some(2.0));
    }
}
