//! Printing a parsed query: `/api/v1/format_query` (promql-parser's
//! prettifier, adjusted to print exactly what Prometheus 2.42's prints) and
//! `/api/v1/parse_query` (the syntax tree as Prometheus' translateAST writes it).

use crate::engine::parse;
use crate::eval::{offset_ms, system_time_ms, Result};
use promql_parser::label::{MatchOp, Matchers};
use promql_parser::parser::value::ValueType;
use promql_parser::parser::{
    AtModifier, Expr, LabelModifier, VectorMatchCardinality, VectorSelector,
};
use serde_json::{json, Value};

/// The query parsed and printed back as Prometheus 2.42 lays it out:
/// number literals in Go's `%g` form (`1.7e+09`), and a subquery that fits
/// on one line inside a split expression left unindented, as Prometheus'
/// `SubqueryExpr.Pretty` does.
pub fn format_query(query: &str) -> Result<String> {
    let pretty = parse(query)?.prettify();
    let lines: Vec<String> = pretty
        .lines()
        .map(|line| {
            let line = go_numbers(line);
            let body = line.trim_start();
            if body.len() != line.len() && is_subquery(body.trim_end_matches(',')) {
                body.to_string()
            } else {
                line
            }
        })
        .collect();
    Ok(lines.join("\n"))
}

/// `/api/v1/parse_query` (Prometheus ≥ 2.45, for PromLens-style tools): the
/// syntax tree as JSON, in the shape of Prometheus' translateAST.
pub fn parse_query(query: &str) -> Result<Value> {
    Ok(ast_json(&parse(query)?))
}

fn value_type(t: &ValueType) -> &'static str {
    match t {
        ValueType::Vector => "vector",
        ValueType::Matrix => "matrix",
        ValueType::Scalar => "scalar",
        ValueType::String => "string",
    }
}

fn matchers_json(name: &Option<String>, m: &Matchers) -> Value {
    let mut out: Vec<Value> = m
        .matchers
        .iter()
        .map(|m| {
            let op = match m.op {
                MatchOp::Equal => "=",
                MatchOp::NotEqual => "!=",
                MatchOp::Re(_) => "=~",
                MatchOp::NotRe(_) => "!~",
            };
            json!({"name": m.name, "value": m.value, "type": op})
        })
        .collect();
    // Prometheus' parser appends the metric name's matcher.
    if let Some(n) = name {
        out.push(json!({"name": "__name__", "value": n, "type": "="}));
    }
    Value::Array(out)
}

/// (timestamp ms, startOrEnd) of an `@` modifier.
fn at_json(at: &Option<AtModifier>) -> (Value, Value) {
    match at {
        None => (Value::Null, Value::Null),
        Some(AtModifier::Start) => (Value::Null, json!("start")),
        Some(AtModifier::End) => (Value::Null, json!("end")),
        Some(AtModifier::At(t)) => (json!(system_time_ms(t)), Value::Null),
    }
}

fn selector_json(kind: &str, vs: &VectorSelector, range_ms: Option<i64>) -> Value {
    let (ts, soe) = at_json(&vs.at);
    let mut v = json!({
        "type": kind,
        "name": vs.name.clone().unwrap_or_default(),
        "offset": offset_ms(&vs.offset),
        "matchers": matchers_json(&vs.name, &vs.matchers),
        "timestamp": ts,
        "startOrEnd": soe,
    });
    if let Some(r) = range_ms {
        v["range"] = json!(r);
    }
    v
}

fn labels_json(m: &Option<LabelModifier>) -> (Vec<String>, bool) {
    match m {
        Some(LabelModifier::Include(l)) => (l.labels.clone(), true),
        Some(LabelModifier::Exclude(l)) => (l.labels.clone(), false),
        None => (Vec::new(), false),
    }
}

fn ast_json(e: &Expr) -> Value {
    match e {
        Expr::Aggregate(a) => {
            let (grouping, by) = labels_json(&a.modifier);
            json!({
                "type": "aggregation",
                "op": a.op.to_string(),
                "expr": ast_json(&a.expr),
                "param": a.param.as_deref().map_or(Value::Null, ast_json),
                "grouping": grouping,
                "without": a.modifier.is_some() && !by,
            })
        }
        Expr::Binary(b) => {
            let both_vectors =
                b.lhs.value_type() == ValueType::Vector && b.rhs.value_type() == ValueType::Vector;
            let matching = match (&b.modifier, both_vectors) {
                (_, false) => Value::Null,
                (m, true) => {
                    let card = m.as_ref().map(|m| &m.card);
                    let set_op = crate::eval::is_set_operator(b.op.id());
                    let (card_s, include) = match card {
                        Some(VectorMatchCardinality::ManyToOne(l)) => {
                            ("many-to-one", l.labels.clone())
                        }
                        Some(VectorMatchCardinality::OneToMany(l)) => {
                            ("one-to-many", l.labels.clone())
                        }
                        Some(VectorMatchCardinality::ManyToMany) => ("many-to-many", Vec::new()),
                        _ if set_op => ("many-to-many", Vec::new()),
                        _ => ("one-to-one", Vec::new()),
                    };
                    let (labels, on) = labels_json(&m.as_ref().and_then(|m| m.matching.clone()));
                    json!({"card": card_s, "labels": labels, "on": on, "include": include})
                }
            };
            json!({
                "type": "binaryExpr",
                "op": b.op.to_string(),
                "lhs": ast_json(&b.lhs),
                "rhs": ast_json(&b.rhs),
                "matching": matching,
                "bool": b.modifier.as_ref().is_some_and(|m| m.return_bool),
            })
        }
        Expr::Call(c) => json!({
            "type": "call",
            "func": {
                "name": c.func.name,
                "argTypes": c.func.arg_types.iter().map(value_type).collect::<Vec<_>>(),
                "variadic": c.func.variadic,
                "returnType": value_type(&c.func.return_type),
            },
            "args": c.args.args.iter().map(|a| ast_json(a)).collect::<Vec<_>>(),
        }),
        Expr::MatrixSelector(ms) => {
            selector_json("matrixSelector", &ms.vs, Some(ms.range.as_millis() as i64))
        }
        Expr::VectorSelector(vs) => selector_json("vectorSelector", vs, None),
        Expr::Subquery(sq) => {
            let (ts, soe) = at_json(&sq.at);
            json!({
                "type": "subquery",
                "expr": ast_json(&sq.expr),
                "range": sq.range.as_millis() as i64,
                "offset": offset_ms(&sq.offset),
                "step": sq.step.map_or(0, |d| d.as_millis() as i64),
                "timestamp": ts,
                "startOrEnd": soe,
            })
        }
        Expr::NumberLiteral(n) => {
            json!({"type": "numberLiteral", "val": crate::functions::format_float_f(n.val)})
        }
        Expr::StringLiteral(s) => json!({"type": "stringLiteral", "val": s.val}),
        Expr::Paren(p) => json!({"type": "parenExpr", "expr": ast_json(&p.expr)}),
        Expr::Unary(u) => json!({"type": "unaryExpr", "op": "-", "expr": ast_json(&u.expr)}),
        Expr::Extension(_) => json!({"type": "extension"}),
    }
}

/// Whether a printed line holds a whole subquery (and nothing else).
fn is_subquery(s: &str) -> bool {
    (s.contains(':') && s.contains(']')) && matches!(parse(s), Ok(Expr::Subquery(_)))
}

/// Rewrites the number literals of a printed line in Go's `%g` form,
/// leaving strings, identifiers, durations and `@` timestamps alone.
fn go_numbers(line: &str) -> String {
    let b = line.as_bytes();
    let mut out = String::with_capacity(line.len() + 8);
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c == b'"' || c == b'\'' || c == b'`' {
            let start = i;
            i += 1;
            while i < b.len() && b[i] != c {
                if b[i] == b'\\' && c != b'`' {
                    i += 1;
                }
                i += 1;
            }
            i = (i + 1).min(b.len());
            out.push_str(&line[start..i]);
        } else if c.is_ascii_alphabetic() || c == b'_' || c == b':' {
            let start = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_' || b[i] == b':') {
                i += 1;
            }
            out.push_str(&line[start..i]);
        } else if c.is_ascii_digit() || (c == b'.' && b.get(i + 1).is_some_and(u8::is_ascii_digit))
        {
            let start = i;
            while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.') {
                i += 1;
            }
            if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
                let j = i + 1 + usize::from(matches!(b.get(i + 1), Some(b'+' | b'-')));
                if b.get(j).is_some_and(u8::is_ascii_digit) {
                    i = j;
                    while i < b.len() && b[i].is_ascii_digit() {
                        i += 1;
                    }
                }
            }
            if i < b.len() && b[i].is_ascii_alphanumeric() {
                // A duration (`5m`, `1h30m`) or a hexadecimal literal.
                while i < b.len() && b[i].is_ascii_alphanumeric() {
                    i += 1;
                }
                out.push_str(&line[start..i]);
                continue;
            }
            let tok = &line[start..i];
            match tok.parse::<f64>() {
                Ok(v) if !out.trim_end().ends_with('@') => out.push_str(&go_g(v)),
                _ => out.push_str(tok),
            }
        } else {
            let ch = line[i..].chars().next().unwrap_or(' ');
            out.push(ch);
            i += ch.len_utf8();
        }
    }
    out
}

/// Go's `strconv.FormatFloat(v, 'g', -1, 64)`: the shortest digits, in
/// exponent form when the exponent is below -4 or at least 6 (`1e+06`,
/// `123456`).
pub(crate) fn go_g(v: f64) -> String {
    if !v.is_finite() {
        return crate::result::format_value(v);
    }
    if v == 0.0 {
        return if v.is_sign_negative() { "-0" } else { "0" }.into();
    }
    let e = format!("{v:e}");
    let (mant, exp) = e.split_once('e').unwrap_or((&e, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if !(-4..6).contains(&exp) {
        let (sign, digits) = if exp < 0 { ('-', -exp) } else { ('+', exp) };
        format!("{mant}e{sign}{digits:02}")
    } else {
        format!("{v}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_print_like_go() {
        assert_eq!(go_g(1_700_000_000.0), "1.7e+09");
        assert_eq!(go_g(951_782_400.0), "9.517824e+08");
        assert_eq!(go_g(123_456.0), "123456");
        assert_eq!(go_g(1e30), "1e+30");
        assert_eq!(go_g(0.0001), "0.0001");
        assert_eq!(go_g(0.00001), "1e-05");
        assert_eq!(go_g(0.95), "0.95");
        assert_eq!(
            go_numbers(r#"x{a="1000000"}[5m] offset 1h30m @ 1700003000.000 > 100000000"#),
            r#"x{a="1000000"}[5m] offset 1h30m @ 1700003000.000 > 1e+08"#
        );
    }

    #[test]
    fn parse_query_is_prometheus_translate_ast() {
        let v = parse_query(r#"sum by (job) (rate(up{job="a"}[5m] offset 1m)) / on (job) group_left (x) b > bool 1"#).unwrap();
        assert_eq!(v["type"], "binaryExpr");
        assert_eq!(v["op"], ">");
        assert_eq!(v["bool"], true);
        assert_eq!(v["matching"], Value::Null, "a scalar side has no matching");
        let div = &v["lhs"];
        assert_eq!(div["op"], "/");
        assert_eq!(
            div["matching"],
            json!({"card": "many-to-one", "labels": ["job"], "on": true, "include": ["x"]})
        );
        let sum = &div["lhs"];
        assert_eq!(sum["type"], "aggregation");
        assert_eq!(sum["op"], "sum");
        assert_eq!(sum["grouping"], json!(["job"]));
        assert_eq!(sum["without"], false);
        let call = &sum["expr"];
        assert_eq!(call["func"]["name"], "rate");
        assert_eq!(call["func"]["argTypes"], json!(["matrix"]));
        assert_eq!(call["func"]["returnType"], "vector");
        let ms = &call["args"][0];
        assert_eq!(ms["type"], "matrixSelector");
        assert_eq!(ms["range"], 300_000);
        assert_eq!(ms["offset"], 60_000);
        assert_eq!(
            ms["matchers"],
            json!([{"name": "job", "value": "a", "type": "="}, {"name": "__name__", "value": "up", "type": "="}])
        );
        let sq = parse_query("max_over_time(x[10m:1m] @ end())").unwrap();
        assert_eq!(sq["args"][0]["type"], "subquery");
        assert_eq!(sq["args"][0]["step"], 60_000);
        assert_eq!(sq["args"][0]["startOrEnd"], "end");
        assert_eq!(
            parse_query("a or b").unwrap()["matching"]["card"],
            "many-to-many"
        );
        // Prometheus' parser folds the minus into a number literal.
        assert_eq!(
            parse_query("-1.5").unwrap(),
            json!({"type": "numberLiteral", "val": "-1.5"})
        );
        assert_eq!(parse_query("-up").unwrap()["type"], "unaryExpr");
    }
}
