//! Test oracle: the views, cap and diff written the plain way (a tree
//! lookup per element, an adjacency map of strings), as they were before
//! the views learnt to walk sorted maps together and number the groups.
//! The property tests in `tests.rs` check that the fast versions give the
//! same answers, bit for bit, on random graphs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;

fn group_id(n: &Node, g: Group) -> Option<&str> {
    match (g, n.kind) {
        (_, NodeKind::Outside | NodeKind::Others) => Some(&n.id),
        (Group::Namespace, _) => Some(&n.namespace),
        (Group::Workload, NodeKind::Pod) => n.parent.as_deref(),
        _ => Some(&n.id),
    }
}

pub fn group_parts(graph: &Graph, stats: &Stats, g: Group) -> Snapshot {
    let mut out = Snapshot::default();
    let mut map: HashMap<&str, &str> = HashMap::new();
    for n in graph.nodes.values() {
        let Some(gid) = group_id(n, g) else { continue };
        map.insert(&n.id, gid);
        let is_self = gid == n.id.as_str();
        if !is_self && n.kind == NodeKind::Pod {
            continue;
        }
        if !out.graph.nodes.contains_key(gid) {
            let node = match (g, n.kind) {
                (Group::Namespace, NodeKind::Workload | NodeKind::Pod | NodeKind::Namespace) => {
                    Node::namespace_group(&n.namespace)
                }
                _ => n.clone(),
            };
            out.graph.nodes.insert(gid.into(), node);
        }
        if let Some(st) = stats.nodes.get(n.id.as_str()) {
            match out.stats.nodes.get_mut(gid) {
                Some(x) => merge_node_stats(x, st),
                None => {
                    let mut x = NodeStats::default();
                    merge_node_stats(&mut x, st);
                    out.stats.nodes.insert(gid.into(), x);
                }
            }
        }
    }
    let mut ids: HashMap<(&str, &str, bool), String> = HashMap::new();
    for e in graph.edges.values() {
        let (Some(&s), Some(&t)) = (map.get(e.source.as_str()), map.get(e.target.as_str())) else {
            continue;
        };
        if s == t || !out.graph.nodes.contains_key(s) || !out.graph.nodes.contains_key(t) {
            continue;
        }
        let (s, t) = if e.directed || s <= t { (s, t) } else { (t, s) };
        let id = ids
            .entry((s, t, e.directed))
            .or_insert_with(|| edge_id(s, t, e.directed));
        match out.graph.edges.get_mut(id.as_str()) {
            Some(x) => {
                x.flow |= e.flow;
                x.requests |= e.requests;
            }
            None => {
                let ne = if s == e.source.as_str() && t == e.target.as_str() {
                    e.clone()
                } else {
                    Edge::new(s, t, e.directed, e.flow, e.requests)
                };
                out.graph.add_edge(ne);
            }
        }
        if let Some(st) = stats.edges.get(e.id.as_str()) {
            match out.stats.edges.get_mut(id.as_str()) {
                Some(x) => merge_edge_stats(x, st),
                None => {
                    let mut x = EdgeStats::default();
                    merge_edge_stats(&mut x, st);
                    out.stats.edges.insert(id.as_str().into(), x);
                }
            }
        }
    }
    if g == Group::Pod {
        for n in graph.nodes.values().filter(|n| n.kind == NodeKind::Pod) {
            if let Some(p) = &n.parent {
                if out.graph.nodes.contains_key(p) {
                    out.graph.add_edge(Edge::new(p, &n.id, true, false, false));
                }
            }
        }
    }
    out
}

fn subgraph_parts(graph: &Graph, stats: &Stats, keep: impl Fn(&str) -> bool) -> Snapshot {
    let mut out = Snapshot::default();
    for (id, n) in &graph.nodes {
        if keep(id) {
            out.graph.add_node(n.clone());
            if let Some(st) = stats.nodes.get(id) {
                out.stats.nodes.insert(id.clone(), *st);
            }
        }
    }
    for e in graph.edges.values() {
        if keep(&e.source) && keep(&e.target) {
            out.graph.add_edge(e.clone());
            if let Some(st) = stats.edges.get(&e.id) {
                out.stats.edges.insert(e.id.clone(), *st);
            }
        }
    }
    out
}

pub fn view_parts(graph: &Graph, stats: &Stats, opts: &ViewOptions) -> Result<View, TopologyError> {
    let filtered;
    let (graph, stats) = match opts.namespace.as_deref() {
        Some(ns) => {
            let inside: BTreeSet<&str> = graph
                .nodes
                .values()
                .filter(|n| n.namespace == ns)
                .map(|n| n.id.as_str())
                .collect();
            let mut keep: BTreeSet<&str> = inside.clone();
            for e in graph.edges.values() {
                if inside.contains(e.source.as_str()) || inside.contains(e.target.as_str()) {
                    keep.insert(&e.source);
                    keep.insert(&e.target);
                }
            }
            filtered = subgraph_parts(graph, stats, |id| keep.contains(id));
            (&filtered.graph, &filtered.stats)
        }
        None => (graph, stats),
    };
    let workloads = graph
        .nodes
        .values()
        .filter(|n| n.kind != NodeKind::Pod)
        .count();
    let g = opts.group.unwrap_or(
        if opts.namespace.is_none() && opts.focus.is_none() && workloads > opts.max_nodes {
            Group::Namespace
        } else {
            Group::Workload
        },
    );
    let (grouped, focus_id, order) = match opts.focus.as_deref() {
        None => (group_parts(graph, stats, g), None, Vec::new()),
        Some(f) => {
            let mut gid: HashMap<&str, &str> = HashMap::new();
            let mut names: HashMap<&str, Vec<&str>> = HashMap::new();
            for n in graph.nodes.values() {
                if let Some(x) = group_id(n, g) {
                    gid.insert(&n.id, x);
                    if x == n.id.as_str()
                        || (g == Group::Namespace
                            && n.kind != NodeKind::Outside
                            && n.kind != NodeKind::Others)
                    {
                        let name = if x == n.id.as_str() {
                            n.name.as_str()
                        } else {
                            x
                        };
                        let v = names.entry(name).or_default();
                        if !v.contains(&x) {
                            v.push(x);
                        }
                    }
                }
            }
            let mut adj: HashMap<&str, Vec<&str>> = HashMap::new();
            for e in graph.edges.values() {
                if let (Some(&a), Some(&b)) =
                    (gid.get(e.source.as_str()), gid.get(e.target.as_str()))
                {
                    if a != b {
                        adj.entry(a).or_default().push(b);
                        adj.entry(b).or_default().push(a);
                    }
                }
            }
            if g == Group::Pod {
                for n in graph.nodes.values().filter(|n| n.kind == NodeKind::Pod) {
                    if let Some(p) = n.parent.as_deref().filter(|p| graph.nodes.contains_key(*p)) {
                        adj.entry(p).or_default().push(&n.id);
                        adj.entry(&n.id).or_default().push(p);
                    }
                }
            }
            let known: BTreeSet<&str> = gid.values().copied().collect();
            let id: &str = if known.contains(f) {
                known.get(f).copied().unwrap_or(f)
            } else {
                match names.get(f).map(Vec::as_slice) {
                    None | Some([]) => {
                        return Err(TopologyError::FocusNotFound {
                            focus: f.to_string(),
                        })
                    }
                    Some([one]) => one,
                    Some(many) => {
                        return Err(TopologyError::FocusAmbiguous {
                            focus: f.to_string(),
                            candidates: many.iter().take(5).copied().collect::<Vec<_>>().join(", "),
                        })
                    }
                }
            };
            let mut seen: BTreeSet<&str> = BTreeSet::from([id]);
            let mut order: Vec<String> = Vec::new();
            let mut queue = VecDeque::from([(id, 0usize)]);
            while let Some((n, d)) = queue.pop_front() {
                order.push(n.to_string());
                if d >= opts.depth.min(MAX_DEPTH) {
                    continue;
                }
                for &m in adj.get(n).map(Vec::as_slice).unwrap_or(&[]) {
                    if seen.insert(m) {
                        queue.push_back((m, d + 1));
                    }
                }
            }
            let sub = subgraph_parts(graph, stats, |x| {
                gid.get(x).is_some_and(|g| seen.contains(g))
            });
            let mut grouped = group_parts(&sub.graph, &sub.stats, g);
            if g == Group::Pod {
                let keep: BTreeSet<String> = seen.iter().map(|s| s.to_string()).collect();
                grouped = subgraph_parts(&grouped.graph, &grouped.stats, |x| keep.contains(x));
            }
            (grouped, Some(id.to_string()), order)
        }
    };
    let (capped, folded) = cap(grouped, opts.max_nodes.clamp(2, MAX_NODES_LIMIT), &order);
    Ok(View {
        snapshot: capped,
        group: g,
        folded,
        focus: focus_id,
    })
}

pub fn cap(snap: Snapshot, max: usize, first: &[String]) -> (Snapshot, usize) {
    if snap.graph.nodes.len() <= max {
        return (snap, 0);
    }
    let mut weight: HashMap<&str, f64> = HashMap::new();
    for e in snap.graph.edges.values() {
        let st = snap.stats.edges.get(&e.id).copied().unwrap_or_default();
        let w = 1.0
            + st.bytes_per_s.unwrap_or(0.0).max(0.0).ln_1p()
            + st.requests_per_s.unwrap_or(0.0).max(0.0).ln_1p();
        *weight.entry(&e.source).or_default() += w;
        *weight.entry(&e.target).or_default() += w;
    }
    let mut rank: Vec<&str> = snap.graph.nodes.keys().map(Name::as_str).collect();
    rank.sort_by(|a, b| {
        let (wa, wb) = (
            weight.get(a).copied().unwrap_or(0.0),
            weight.get(b).copied().unwrap_or(0.0),
        );
        wb.total_cmp(&wa).then_with(|| a.cmp(b))
    });
    let mut keep: BTreeSet<String> = BTreeSet::new();
    for id in first.iter().map(String::as_str).chain(rank) {
        if keep.len() >= max - 1 {
            break;
        }
        if snap.graph.nodes.contains_key(id) {
            keep.insert(id.to_string());
        }
    }
    let folded = snap.graph.nodes.len() - keep.len();
    let mut out = subgraph_parts(&snap.graph, &snap.stats, |x| keep.contains(x));
    out.graph.add_node(Node {
        id: OTHERS_ID.into(),
        kind: NodeKind::Others,
        namespace: Name::default(),
        name: format!("{folded} others").into(),
        workload_kind: Name::default(),
        parent: None,
    });
    let mut others_stats = NodeStats::default();
    for (id, st) in &snap.stats.nodes {
        if !keep.contains(id.as_str()) {
            merge_node_stats(&mut others_stats, st);
        }
    }
    if !others_stats.is_empty() {
        out.stats.nodes.insert(OTHERS_ID.into(), others_stats);
    }
    for e in snap.graph.edges.values() {
        let (ks, kt) = (
            keep.contains(e.source.as_str()),
            keep.contains(e.target.as_str()),
        );
        if ks == kt {
            continue;
        }
        let (s, t) = if ks {
            (e.source.as_str(), OTHERS_ID)
        } else {
            (OTHERS_ID, e.target.as_str())
        };
        let ne = Edge::new(s, t, e.directed, e.flow, e.requests);
        if let Some(st) = snap.stats.edges.get(&e.id) {
            merge_edge_stats(out.stats.edges.entry(ne.id.clone()).or_default(), st);
        }
        match out.graph.edges.get_mut(&ne.id) {
            Some(x) => {
                x.flow |= ne.flow;
                x.requests |= ne.requests;
            }
            None => out.graph.add_edge(ne),
        }
    }
    (out, folded)
}

pub fn diff(before: &Snapshot, after: &Snapshot, opts: &DiffOptions) -> Diff {
    let mut d = Diff::default();
    for (id, n) in &after.graph.nodes {
        if !before.graph.nodes.contains_key(id) {
            d.added_nodes.push(n.clone());
        }
    }
    for (id, n) in &before.graph.nodes {
        if !after.graph.nodes.contains_key(id) {
            d.removed_nodes.push(n.clone());
        }
    }
    for (id, e) in &after.graph.edges {
        match before.graph.edges.get(id) {
            None => d.added_edges.push(e.clone()),
            Some(_) => {
                let a = before.stats.edges.get(id).copied().unwrap_or_default();
                let b = after.stats.edges.get(id).copied().unwrap_or_default();
                let mut why = Vec::new();
                if (a.bytes_per_s.is_some() || b.bytes_per_s.is_some())
                    && moved(
                        a.bytes_per_s,
                        b.bytes_per_s,
                        opts.min_bytes_per_s,
                        opts.factor,
                    )
                {
                    why.push("traffic");
                }
                if (a.error_ratio.is_some() || b.error_ratio.is_some())
                    && moved(
                        a.error_ratio,
                        b.error_ratio,
                        opts.min_error_ratio,
                        opts.factor,
                    )
                {
                    why.push("error_ratio");
                }
                if !why.is_empty() {
                    d.changed_edges.push(EdgeChange {
                        edge: e.clone(),
                        before: a,
                        after: b,
                        reason: why.join(","),
                    });
                }
            }
        }
    }
    for (id, e) in &before.graph.edges {
        if !after.graph.edges.contains_key(id) {
            d.removed_edges.push(e.clone());
        }
    }
    d
}

pub fn delta_to(a: &Graph, next: &Graph) -> GraphDelta {
    let mut d = GraphDelta::default();
    for (id, n) in &a.nodes {
        match next.nodes.get(id) {
            Some(m) if m == n => {}
            _ => d.removed_nodes.push(id.clone()),
        }
    }
    for (id, n) in &next.nodes {
        match a.nodes.get(id) {
            Some(m) if m == n => {}
            _ => d.added_nodes.push(n.clone()),
        }
    }
    for (id, e) in &a.edges {
        match next.edges.get(id) {
            Some(f) if f == e => {}
            _ => d.removed_edges.push(id.clone()),
        }
    }
    for (id, e) in &next.edges {
        match a.edges.get(id) {
            Some(f) if f == e => {}
            _ => d.added_edges.push(e.clone()),
        }
    }
    d
}
