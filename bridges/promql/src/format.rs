//! `/api/v1/format_query`: promql-parser's prettifier, adjusted to print
//! exactly what Prometheus 2.42's prettifier prints.

use crate::engine::parse;
use crate::eval::Result;
use promql_parser::parser::Expr;

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
}
