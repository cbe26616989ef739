//! Log line templates: a line with its variable parts masked, so "a new
//! kind of error" is a template never seen in the baseline. Pure.
//!
//! Masked, in this order: quoted strings (`"…"`, `'…'`) → `"<*>"`;
//! UUIDs, hex runs of 8+ characters (with or without `0x`) and tokens that
//! mix letters and digits (pod names, request ids) → `<id>`; numbers
//! (integers, decimals, with units such as `ms` or `%`) → `<n>`; IP
//! addresses and ports become `<n>.<n>.<n>.<n>:<n>`. Runs of whitespace
//! are one space. Templates are at most [`MAX_TEMPLATE`] bytes.

/// Longest template kept (longer lines are cut at a character boundary).
pub const MAX_TEMPLATE: usize = 200;

/// The template of one line.
pub fn template(line: &str) -> String {
    let mut out = String::with_capacity(line.len().min(MAX_TEMPLATE + 8));
    let mut chars = line.char_indices().peekable();
    let mut last_space = true;
    while let Some((_, c)) = chars.next() {
        if out.len() >= MAX_TEMPLATE {
            break;
        }
        if c == '"' || c == '\'' {
            // Quoted string: skip to the closing quote (or the end).
            for (_, d) in chars.by_ref() {
                if d == c {
                    break;
                }
            }
            out.push(c);
            out.push_str("<*>");
            out.push(c);
            last_space = false;
            continue;
        }
        if c.is_whitespace() {
            if !last_space {
                out.push(' ');
            }
            last_space = true;
            continue;
        }
        last_space = false;
        if c.is_ascii_alphanumeric() {
            let mut token = String::new();
            token.push(c);
            while let Some(&(_, d)) = chars.peek() {
                if d.is_ascii_alphanumeric() || d == '-' || d == '_' {
                    token.push(d);
                    chars.next();
                } else {
                    break;
                }
            }
            out.push_str(&mask_token(&token));
            continue;
        }
        out.push(c);
    }
    out.trim_end().to_string()
}

fn mask_token(t: &str) -> String {
    let digits = t.bytes().filter(u8::is_ascii_digit).count();
    if digits == 0 {
        return t.to_string();
    }
    let is_hex = |s: &str| s.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    let body = t.strip_prefix("0x").unwrap_or(t);
    if (body.len() >= 8 && is_hex(body)) || t.starts_with("0x") {
        return "<id>".to_string();
    }
    // A number, maybe with a unit: 12, 12ms, 3s, 500MB.
    let num_end = t.bytes().take_while(u8::is_ascii_digit).count();
    if num_end > 0
        && t[num_end..].bytes().all(|b| b.is_ascii_alphabetic())
        && t.len() - num_end <= 3
    {
        return format!("<n>{}", &t[num_end..]);
    }
    "<id>".to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_the_variable_parts() {
        assert_eq!(
            template("GET /api/orders/12345 took 532ms status=500"),
            "GET /api/orders/<n> took <n>ms status=<n>"
        );
        assert_eq!(
            template(r#"connection to "db-0.shop:5432" refused after 3 retries"#),
            r#"connection to "<*>" refused after <n> retries"#
        );
        assert_eq!(
            template("request 7f3a9c2e1b4d failed on pod checkout-7d9f8-abc12"),
            "request <id> failed on pod <id>"
        );
        assert_eq!(
            template("dial tcp 10.0.3.7:6379: i/o timeout"),
            "dial tcp <n>.<n>.<n>.<n>:<n>: i/o timeout"
        );
        assert_eq!(
            template("trace 3fa85f64-5717-4562-b3fc-2c963f66afa6   done"),
            "trace <id> done"
        );
        assert_eq!(template("ptr 0x7ffd"), "ptr <id>");
    }

    #[test]
    fn same_kind_same_template() {
        assert_eq!(
            template("payment 991 declined: card 'x' expired"),
            template("payment 12 declined: card 'other' expired")
        );
        assert_ne!(
            template("payment 1 declined"),
            template("payment 1 timed out")
        );
    }

    #[test]
    fn bounded() {
        let long = "word ".repeat(500);
        assert!(template(&long).len() <= MAX_TEMPLATE + 8);
        assert_eq!(template(""), "");
    }
}
