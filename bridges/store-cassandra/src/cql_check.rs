//! Tests without a server: every CQL statement of the backend checked
//! against the schema of `schema.rs` and the rules Cassandra 4.0 applies
//! when it prepares a statement (the ones a mock never enforces).
//!
//! - every table and column exists; no name is a reserved keyword;
//! - a `WHERE` restricts the whole partition key by equality and a prefix of
//!   the clustering key, a range only on the last restricted column (else
//!   Cassandra asks for `ALLOW FILTERING`, which the backend never uses);
//! - `ORDER BY` names clustering columns in their declared order, all in
//!   the declared or all in the reverse direction;
//! - `TTL()` and `WRITETIME()` only of regular columns;
//! - an `UPDATE` names one whole row and sets no key column; an `INSERT`
//!   gives the whole primary key;
//! - `USING TTL` / `USING TIMESTAMP` only where the statement allows them
//!   (no timestamp on a conditional statement);
//! - nothing Cassandra 4.0 lacks or that needs a scan: `ALLOW FILTERING`,
//!   `IN`, `LIKE`, `GROUP BY`, `PER PARTITION`, `BATCH`, counters.
//!
//! [`signature`] answers a statement's bind types and returned types, so a
//! module's test can pin what its code binds and reads.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers: a panic is a failing test

use super::schema::TABLES;
use std::collections::HashMap;

/// A table's columns and key.
pub struct Cols {
    pub types: HashMap<String, String>,
    pub partition: Vec<String>,
    pub clustering: Vec<String>,
}

/// The types the schema may use (all of them map onto plain Rust types:
/// String, i32, i64, Vec<u8>, bool).
const TYPES: &[&str] = &["text", "int", "bigint", "blob", "boolean"];

/// `schema_meta`, created by its own statement in `schema.rs`.
fn schema_meta() -> Cols {
    Cols {
        types: [("name", "text"), ("version", "int"), ("owner", "text")]
            .into_iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect(),
        partition: vec!["name".into()],
        clustering: Vec::new(),
    }
}

/// The columns and key of a table of the schema.
pub fn table(name: &str) -> Cols {
    if name == "schema_meta" {
        return schema_meta();
    }
    let t = TABLES
        .iter()
        .find(|t| t.name == name)
        .unwrap_or_else(|| panic!("no table {name}"));
    let (cols, key) = t.body.split_once("PRIMARY KEY").unwrap();
    let types = cols
        .split(',')
        .filter_map(|c| {
            let mut w = c.split_whitespace();
            Some((w.next()?.to_string(), w.next()?.to_string()))
        })
        .collect();
    let key = key.trim().trim_start_matches('(').trim_end_matches(')');
    // `(a, b), c, d` or `a, b` (no clustering key).
    let (part, rest) = key.split_once(')').unwrap_or((key, ""));
    let split = |s: &str| {
        s.split(',')
            .map(|c| c.trim().to_string())
            .filter(|c| !c.is_empty())
            .collect::<Vec<_>>()
    };
    Cols {
        types,
        partition: split(part),
        clustering: split(rest),
    }
}

/// A literal or a bind marker: the bind type when it is a marker.
fn operand(v: &str, ty: &str, cql: &str) -> Option<String> {
    let v = v.trim();
    if v == "?" {
        return Some(ty.to_string());
    }
    let literal = (v.starts_with('\'') && v.ends_with('\'') && v.len() >= 2)
        || v.parse::<i64>().is_ok()
        || v == "true"
        || v == "false";
    assert!(
        literal,
        "{cql}: {v:?} is neither a bind marker nor a literal"
    );
    None
}

/// `USING TTL x AND TIMESTAMP y` (either order, either alone): bind types.
fn using(clause: &str, cql: &str) -> Vec<String> {
    let mut binds = Vec::new();
    let mut seen = Vec::new();
    for part in clause.split(" AND ") {
        let w: Vec<&str> = part.split_whitespace().collect();
        assert_eq!(w.len(), 2, "{cql}: USING {part}");
        let ty = match w[0] {
            "TTL" => "int",
            "TIMESTAMP" => "bigint",
            other => panic!("{cql}: USING {other}"),
        };
        assert!(!seen.contains(&w[0]), "{cql}: USING {} twice", w[0]);
        seen.push(w[0]);
        binds.extend(operand(w[1], ty, cql));
    }
    binds
}

/// (bind types, returned types) of a statement, after checking it against
/// the schema and Cassandra 4.0's rules (module docs). Panics on a
/// violation.
pub fn signature(cql: &str) -> (Vec<String>, Vec<String>) {
    for banned in [
        "ALLOW FILTERING",
        " IN ",
        " IN(",
        " LIKE ",
        "GROUP BY",
        "PER PARTITION",
        "BATCH",
        "DISTINCT",
        " * ",
        "counter",
        "  ",
    ] {
        assert!(!cql.contains(banned), "{cql}: {banned:?}");
    }
    let words: Vec<&str> = cql.split_whitespace().collect();
    let verb = words[0];
    let table_name = match verb {
        "INSERT" => words[2],
        "UPDATE" => words[1],
        "SELECT" | "DELETE" => {
            let i = words.iter().position(|w| *w == "FROM").unwrap();
            words[i + 1]
        }
        other => panic!("{cql}: verb {other}"),
    };
    let t = table(table_name);
    let ty = |c: &str| -> String {
        t.types
            .get(c)
            .unwrap_or_else(|| panic!("{cql}: no column {c} in {table_name}"))
            .clone()
    };
    let is_key = |c: &str| t.partition.iter().chain(&t.clustering).any(|k| k == c);
    let mut binds = Vec::new();
    let mut returns = Vec::new();
    let mut where_part = "";
    let mut conditional = false;
    let mut timestamp = false;
    match verb {
        "INSERT" => {
            let open = cql.find('(').unwrap();
            let close = cql.find(')').unwrap();
            let cols: Vec<&str> = cql[open + 1..close].split(',').map(str::trim).collect();
            for k in t.partition.iter().chain(&t.clustering) {
                assert!(cols.contains(&k.as_str()), "{cql}: key column {k} missing");
            }
            let rest = cql[close + 1..].trim_start();
            let rest = rest
                .strip_prefix("VALUES (")
                .unwrap_or_else(|| panic!("{cql}: no VALUES"));
            let (values, tail) = rest.split_once(')').unwrap();
            let values: Vec<&str> = values.split(',').collect();
            assert_eq!(values.len(), cols.len(), "{cql}: values");
            for (c, v) in cols.iter().zip(&values) {
                binds.extend(operand(v, &ty(c), cql));
            }
            let mut tail = tail.trim();
            if let Some(t) = tail.strip_prefix("IF NOT EXISTS") {
                conditional = true;
                tail = t.trim();
            }
            if let Some(u) = tail.strip_prefix("USING ") {
                timestamp = u.contains("TIMESTAMP");
                binds.extend(using(u, cql));
            } else {
                assert!(tail.is_empty(), "{cql}: {tail:?} after VALUES");
            }
        }
        "SELECT" => {
            let from = cql.find(" FROM ").unwrap();
            for item in cql["SELECT ".len()..from].split(',').map(str::trim) {
                let func = |prefix: &str| {
                    item.strip_prefix(prefix)
                        .map(|c| c.trim_end_matches(')').to_string())
                };
                if let Some(c) = func("TTL(") {
                    ty(&c);
                    assert!(!is_key(&c), "{cql}: TTL() of key column {c}");
                    returns.push("int".to_string());
                } else if let Some(c) = func("WRITETIME(") {
                    ty(&c);
                    assert!(!is_key(&c), "{cql}: WRITETIME() of key column {c}");
                    returns.push("bigint".to_string());
                } else {
                    returns.push(ty(item));
                }
            }
            where_part = cql
                .split_once(" WHERE ")
                .unwrap_or_else(|| panic!("{cql}: no WHERE (a scan)"))
                .1;
        }
        "DELETE" => {
            let head = cql.split_once(" WHERE ").unwrap().0;
            assert!(
                head.starts_with(&format!("DELETE FROM {table_name}")),
                "{cql}: deletes columns (only whole rows or partitions)"
            );
            if let Some(u) = head.split_once(" USING ").map(|x| x.1) {
                assert!(u.starts_with("TIMESTAMP "), "{cql}: DELETE USING {u}");
                timestamp = true;
                binds.extend(using(u, cql));
            }
            where_part = cql.split_once(" WHERE ").unwrap().1;
        }
        "UPDATE" => {
            let (head, w) = cql.split_once(" WHERE ").unwrap();
            let (target, set) = head.split_once(" SET ").unwrap();
            if let Some(u) = target.split_once(" USING ").map(|x| x.1) {
                timestamp = u.contains("TIMESTAMP");
                binds.extend(using(u, cql));
            }
            for a in set.split(',') {
                let (c, v) = a.split_once('=').unwrap();
                let c = c.trim();
                assert!(!is_key(c), "{cql}: sets key column {c}");
                binds.extend(operand(v, &ty(c), cql));
            }
            where_part = w;
        }
        _ => unreachable!(),
    }
    if verb != "INSERT" {
        // WHERE … [IF …] [ORDER BY …] [LIMIT …]
        let (mut conds, mut limit) = match where_part.split_once(" LIMIT ") {
            Some((c, l)) => (c, Some(l.trim())),
            None => (where_part, None),
        };
        let mut order = None;
        if let Some((c, o)) = conds.split_once(" ORDER BY ") {
            assert_eq!(verb, "SELECT", "{cql}: ORDER BY");
            conds = c;
            order = Some(o);
        }
        let mut condition = None;
        if let Some((c, i)) = conds.split_once(" IF ") {
            assert!(verb == "DELETE" || verb == "UPDATE", "{cql}: IF");
            conds = c;
            condition = Some(i);
        }
        let mut eq = Vec::new();
        let mut ranged: Option<String> = None;
        for c in conds.split(" AND ") {
            let parts: Vec<&str> = c.split_whitespace().collect();
            assert_eq!(parts.len(), 3, "{cql}: {c}");
            binds.extend(operand(parts[2], &ty(parts[0]), cql));
            assert!(is_key(parts[0]), "{cql}: restricts regular column {c}");
            match parts[1] {
                "=" => {
                    assert!(ranged.is_none(), "{cql}: equality after a range");
                    assert!(!eq.contains(&parts[0].to_string()), "{cql}: {c} twice");
                    eq.push(parts[0].to_string());
                }
                ">=" | "<=" | "<" | ">" => {
                    assert!(
                        !t.partition.contains(&parts[0].to_string()),
                        "{cql}: a range on partition key column {} (a token scan)",
                        parts[0]
                    );
                    if let Some(r) = &ranged {
                        assert_eq!(r, parts[0], "{cql}: two ranged columns");
                    }
                    ranged = Some(parts[0].to_string());
                }
                op => panic!("{cql}: operator {op}"),
            }
        }
        for k in &t.partition {
            assert!(
                eq.contains(k),
                "{cql}: partition key column {k} not restricted by equality"
            );
        }
        let mut restricted: Vec<String> = eq
            .iter()
            .filter(|c| !t.partition.contains(c))
            .cloned()
            .collect();
        restricted.extend(ranged.clone());
        assert!(restricted.len() <= t.clustering.len(), "{cql}");
        assert_eq!(
            restricted,
            t.clustering[..restricted.len()].to_vec(),
            "{cql}: clustering restrictions must be a prefix, in order"
        );
        if verb == "UPDATE" || condition.is_some() {
            assert_eq!(
                restricted.len(),
                t.clustering.len(),
                "{cql}: must name one whole row"
            );
            assert!(ranged.is_none(), "{cql}: a range names no row");
        }
        if let Some(i) = condition {
            conditional = true;
            for c in i.split(" AND ") {
                let parts: Vec<&str> = c.split_whitespace().collect();
                assert_eq!(parts.len(), 3, "{cql}: IF {c}");
                assert_eq!(parts[1], "=", "{cql}: IF {c}");
                assert!(!is_key(parts[0]), "{cql}: IF on key column {c}");
                binds.extend(operand(parts[2], &ty(parts[0]), cql));
            }
        }
        if let Some(o) = order {
            // Clustering columns in declared order, one direction for all
            // of them relative to the declaration (every table is declared
            // ascending).
            let mut dirs = Vec::new();
            for (i, item) in o.split(',').enumerate() {
                let w: Vec<&str> = item.split_whitespace().collect();
                assert!(!w.is_empty() && w.len() <= 2, "{cql}: ORDER BY {item}");
                assert_eq!(
                    t.clustering.get(i).map(String::as_str),
                    Some(w[0]),
                    "{cql}: ORDER BY must follow the clustering key's order"
                );
                dirs.push(w.get(1).copied().unwrap_or("ASC"));
                assert!(matches!(dirs[i], "ASC" | "DESC"), "{cql}: ORDER BY {item}");
            }
            assert!(
                dirs.iter().all(|d| *d == dirs[0]),
                "{cql}: ORDER BY mixes directions"
            );
        }
        if let Some(l) = limit.take() {
            if l == "?" {
                binds.push("int".to_string());
            } else {
                let n: i64 = l.parse().unwrap_or_else(|_| panic!("{cql}: LIMIT {l:?}"));
                assert!(n > 0, "{cql}: LIMIT {n}");
            }
        }
    }
    assert!(
        !(conditional && timestamp),
        "{cql}: Cassandra refuses a custom timestamp on a conditional statement"
    );
    assert_eq!(binds.len(), cql.matches('?').count(), "{cql}: bind markers");
    (binds, returns)
}

/// The CQL statements of a module's source (its string literals that
/// start with a statement verb), test code excluded. A literal built with
/// `format!` (it holds `{`) is left out.
pub fn statements_in(source: &str) -> Vec<String> {
    let code = source.split("#[cfg(test)]").next().unwrap_or(source);
    let mut out = Vec::new();
    let mut chars = code.char_indices().peekable();
    while let Some((_, c)) = chars.next() {
        match c {
            // Skip comments: a doc line may quote a statement.
            '/' if chars.peek().map(|x| x.1) == Some('/') => {
                for (_, c) in chars.by_ref() {
                    if c == '\n' {
                        break;
                    }
                }
            }
            // A char literal such as '"' (a lifetime has no closing quote
            // right after one character).
            '\'' => {
                let rest: String = code[chars.peek().map_or(code.len(), |x| x.0)..]
                    .chars()
                    .take(3)
                    .collect();
                let close = if rest.starts_with('\\') { 2 } else { 1 };
                if rest.chars().nth(close) == Some('\'') {
                    for _ in 0..=close {
                        chars.next();
                    }
                }
            }
            '"' => {
                let mut lit = String::new();
                while let Some((_, c)) = chars.next() {
                    match c {
                        '"' => break,
                        '\\' => match chars.next().map(|x| x.1) {
                            // Line continuation: the newline and the
                            // indentation after it vanish.
                            Some('\n') => {
                                while chars.peek().is_some_and(|x| x.1.is_whitespace()) {
                                    chars.next();
                                }
                            }
                            Some('n') => lit.push('\n'),
                            Some(o) => lit.push(o),
                            None => {}
                        },
                        o => lit.push(o),
                    }
                }
                // A whole statement, not a verb or a name in a message.
                let is_statement = match lit.split_whitespace().next().unwrap_or("") {
                    "SELECT" | "DELETE" => lit.contains(" FROM ") && lit.contains(" WHERE "),
                    "INSERT" => lit.contains(" VALUES "),
                    "UPDATE" => lit.contains(" SET ") && lit.contains(" WHERE "),
                    _ => false,
                };
                if is_statement && !lit.contains('{') {
                    out.push(lit);
                }
            }
            _ => {}
        }
    }
    out
}

/// Reads of Cassandra's own tables, which the schema does not describe.
fn system(cql: &str) -> bool {
    cql.contains(" FROM system.") || cql.contains(" FROM system_schema.")
}

#[test]
fn every_statement_of_the_backend_passes() {
    let sources = [
        ("lib.rs", include_str!("lib.rs")),
        ("schema.rs", include_str!("schema.rs")),
        ("metrics/mod.rs", include_str!("metrics/mod.rs")),
        ("metrics/write.rs", include_str!("metrics/write.rs")),
        ("metrics/plan.rs", include_str!("metrics/plan.rs")),
        ("logs.rs", include_str!("logs.rs")),
        ("events/mod.rs", include_str!("events/mod.rs")),
        ("events/write.rs", include_str!("events/write.rs")),
        ("events/read.rs", include_str!("events/read.rs")),
        ("events/maintain.rs", include_str!("events/maintain.rs")),
        ("topology.rs", include_str!("topology.rs")),
    ];
    let mut n = 0;
    for (file, src) in sources {
        for cql in statements_in(src) {
            if system(&cql) {
                continue;
            }
            let r = std::panic::catch_unwind(|| signature(&cql));
            assert!(r.is_ok(), "{file}: {cql}");
            n += 1;
        }
    }
    // The scan found the statements (a broken scanner passes nothing).
    assert!(n > 100, "only {n} statements found");
}

#[test]
fn the_scanner_finds_statements_and_skips_the_rest() {
    let src = r#"
        // "SELECT nope FROM nowhere" in a comment
        const A: &str = "SELECT fp FROM metrics_series WHERE cluster = ? AND day = ? AND metric = ?";
        const B: &str =
            "UPDATE topo_clusters SET seen_ms = ? \
             WHERE shard = 0 AND cluster = ?";
        let c = '"';
        let f = format!("DROP KEYSPACE {ks}");
        let g = format!("INSERT INTO t (a) VALUES ({x})");
        let s = "SELECT";
        let e = map_err("INSERT INTO schema_meta", e);
        #[cfg(test)]
        const T: &str = "SELECT x FROM y";
    "#;
    assert_eq!(
        statements_in(src),
        [
            "SELECT fp FROM metrics_series WHERE cluster = ? AND day = ? AND metric = ?",
            "UPDATE topo_clusters SET seen_ms = ? WHERE shard = 0 AND cluster = ?",
        ]
    );
}

#[test]
fn the_checker_refuses_what_cassandra_refuses() {
    for bad in [
        // An unknown column, an unknown table.
        "SELECT nope FROM event_keys WHERE cluster = ? AND uid = ?",
        "SELECT uid FROM nowhere WHERE cluster = ?",
        // A partition key column unrestricted (would need ALLOW FILTERING).
        "SELECT cnt FROM event_keys WHERE cluster = ?",
        // A range on a partition key column.
        "SELECT metric FROM metrics_names WHERE cluster = ? AND day >= ?",
        // A regular column restricted.
        "SELECT cnt FROM event_keys WHERE cluster = ? AND uid = ? AND cnt = ? AND at_ms = ? AND cnt = ?",
        "SELECT seq FROM object_versions WHERE cluster = ? AND uid = ? AND rv = ?",
        // Clustering restrictions not a prefix.
        "SELECT uid FROM event_occurrences WHERE cluster = ? AND day = ? AND uid = ?",
        // Equality after a range.
        "SELECT uid FROM event_occurrences WHERE cluster = ? AND day = ? AND at_ms >= ? AND uid = ?",
        // ORDER BY not on the first clustering column, mixed directions.
        "SELECT t_ms FROM topo_changes WHERE cluster = ? AND day = ? ORDER BY source DESC",
        "SELECT t_ms FROM topo_changes WHERE cluster = ? AND day = ? ORDER BY t_ms DESC, source ASC",
        // TTL() or WRITETIME() of a key column.
        "SELECT TTL(uid) FROM object_latest WHERE cluster = ? AND resource = ? AND shard = ?",
        "SELECT WRITETIME(seq) FROM object_versions WHERE cluster = ? AND uid = ?",
        // An insert without its whole key; an update of part of a row.
        "INSERT INTO object_names (cluster, object) VALUES (?, ?)",
        "UPDATE object_latest USING TTL ? SET rv = ? WHERE cluster = ? AND resource = ? AND shard = ?",
        "UPDATE object_latest SET uid = ? WHERE cluster = ? AND resource = ? AND shard = ? AND uid = ?",
        // Deleting columns, a timestamp on a conditional statement.
        "DELETE rv FROM object_latest WHERE cluster = ? AND resource = ? AND shard = ? AND uid = ?",
        "INSERT INTO schema_meta (name, owner) VALUES ('lock', ?) IF NOT EXISTS USING TIMESTAMP ?",
        // Scans and features the backend never uses.
        "SELECT uid FROM event_keys WHERE cluster = ? AND uid IN ?",
        "SELECT uid FROM event_keys WHERE cluster = ? AND uid = ? ALLOW FILTERING",
        "SELECT * FROM event_keys WHERE cluster = ? AND uid = ?",
        // Bind markers that do not add up, a bad USING.
        "INSERT INTO object_names (cluster, object, uid) VALUES (?, ?)",
        "INSERT INTO object_names (cluster, object, uid) VALUES (?, ?, ?) USING TTL",
    ] {
        let r = std::panic::catch_unwind(|| signature(bad));
        assert!(r.is_err(), "accepted: {bad}");
    }
    // And accepts what it does.
    let (b, r) = signature(
        "UPDATE metrics_series USING TTL ? AND TIMESTAMP ? SET first_ms = ? WHERE cluster = ? AND day = ? AND metric = ? AND fp = ?",
    );
    assert_eq!(
        b,
        ["int", "bigint", "bigint", "text", "int", "text", "bigint"]
    );
    assert!(r.is_empty());
    let (b, r) = signature(
        "SELECT minute_ms, keyframe FROM topo_stats WHERE cluster = ? AND day = ? AND minute_ms <= ? ORDER BY minute_ms DESC LIMIT 64",
    );
    assert_eq!((b.len(), r), (3, vec!["bigint".into(), "boolean".into()]));
}

#[test]
fn names_are_not_reserved_and_types_are_plain() {
    let mut names: Vec<(String, String)> = Vec::new();
    for t in TABLES {
        names.push((t.name.to_string(), "table".into()));
        let cols = table(t.name);
        for (c, ty) in &cols.types {
            assert!(TYPES.contains(&ty.as_str()), "{}.{c}: type {ty}", t.name);
            names.push((c.clone(), t.name.to_string()));
        }
        for k in cols.partition.iter().chain(&cols.clustering) {
            assert!(cols.types.contains_key(k), "{}: key {k} undeclared", t.name);
        }
        // Every table in one form: `((partition), clustering…)`.
        assert!(t.body.contains("PRIMARY KEY (("), "{}", t.name);
    }
    for (c, _) in schema_meta().types {
        names.push((c, "schema_meta".into()));
    }
    for (name, of) in names {
        assert!(
            !super::config::is_reserved(&name),
            "{of}: {name} is a reserved CQL keyword"
        );
        assert!(
            name.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                && name.starts_with(|c: char| c.is_ascii_lowercase()),
            "{of}: {name} is not a plain lowercase identifier"
        );
    }
}
