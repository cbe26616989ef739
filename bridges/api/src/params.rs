//! Query parameters shared by every endpoint: time ranges and limits.
//!
//! Selector parameters (`cluster`, `namespace`, `workload`, `pod`,
//! `container`, `kind`, `name`, `reason`, `type`, `focus`) given as `All`
//! are the same as leaving them out: that is what a Grafana variable set to
//! "All" renders with `${var:text}`, so a dashboard can pass its variables
//! unconditionally. Kubernetes names are lowercase, so `All` never names a
//! real object.

use kube_insight_core::{parse_time_ms, time::now_ms, TimeRange};
use std::collections::HashMap;

/// Parameters as a multimap (repeated keys such as `match[]` keep every value).
#[derive(Debug, Default, Clone)]
pub struct Params(pub HashMap<String, Vec<String>>);

/// The value of a selector parameter that means "no filter" (Grafana's
/// `${var:text}` of a variable set to All).
pub const ALL: &str = "All";

/// Parameters for which [`ALL`] means "no filter".
pub const SELECTORS: &[&str] = &[
    "cluster",
    "namespace",
    "workload",
    "pod",
    "container",
    "kind",
    "name",
    "reason",
    "type",
    "focus",
];

impl Params {
    pub fn parse(query: Option<&str>, body: Option<&[u8]>) -> Params {
        let mut m: HashMap<String, Vec<String>> = HashMap::new();
        for src in [query.map(str::as_bytes), body].into_iter().flatten() {
            for (k, v) in form_urlencoded_pairs(src) {
                m.entry(k).or_default().push(v);
            }
        }
        Params(m)
    }

    /// The last value of `k`; `None` when absent or empty, or when `k` is a
    /// selector ([`SELECTORS`]) given as [`ALL`].
    pub fn get(&self, k: &str) -> Option<&str> {
        self.0
            .get(k)
            .and_then(|v| v.last())
            .map(String::as_str)
            .filter(|s| !s.is_empty())
            .filter(|s| *s != ALL || !SELECTORS.contains(&k))
    }

    pub fn all(&self, k: &str) -> &[String] {
        self.0.get(k).map(Vec::as_slice).unwrap_or(&[])
    }

    /// `from`/`to` (or `start`/`end`) as a range; defaults to the last hour.
    /// Times are RFC 3339, epoch seconds or epoch milliseconds.
    pub fn range(&self, from_key: &str, to_key: &str) -> Result<TimeRange, String> {
        let end = match self.get(to_key) {
            Some(s) => parse_time_ms(s).map_err(|e| format!("parameter {to_key}: {e}"))?,
            None => now_ms(),
        };
        let start = match self.get(from_key) {
            Some(s) => parse_time_ms(s).map_err(|e| format!("parameter {from_key}: {e}"))?,
            None => end - 3_600_000,
        };
        TimeRange::new(start, end).map_err(|e| format!("parameters {from_key}/{to_key}: {e}"))
    }

    pub fn usize_or(&self, k: &str, default: usize, max: usize) -> Result<usize, String> {
        match self.get(k) {
            None => Ok(default),
            Some(s) => match s.parse::<usize>() {
                Ok(0) => Ok(default),
                Ok(n) => Ok(n.min(max)),
                Err(_) => Err(format!(
                    "parameter {k}: {s:?} is not a non-negative integer"
                )),
            },
        }
    }
}

/// `application/x-www-form-urlencoded` pairs.
fn form_urlencoded_pairs(src: &[u8]) -> Vec<(String, String)> {
    src.split(|&b| b == b'&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = match p.iter().position(|&b| b == b'=') {
                Some(i) => (&p[..i], &p[i + 1..]),
                None => (p, &b""[..]),
            };
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &[u8]) -> String {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < s.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(s[i + 1]), hex(s[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_repeated_keys_and_escapes() {
        let p = Params::parse(
            Some("match%5B%5D=up&match[]=%7Bjob%3D%22x%22%7D&q=a+b&t=%"),
            None,
        );
        assert_eq!(
            p.all("match[]"),
            &["up".to_string(), "{job=\"x\"}".to_string()]
        );
        assert_eq!(p.get("q"), Some("a b"));
        assert_eq!(p.get("t"), Some("%"));
    }

    #[test]
    fn all_is_no_filter_for_selectors_only() {
        let p = Params::parse(
            Some("namespace=All&pod=All&workload=api&contains=All&cluster="),
            None,
        );
        assert_eq!(p.get("namespace"), None);
        assert_eq!(p.get("pod"), None);
        assert_eq!(p.get("workload"), Some("api"));
        assert_eq!(p.get("cluster"), None);
        // Not a selector: a search for the word is kept.
        assert_eq!(p.get("contains"), Some("All"));
        // Lowercase is a name like any other.
        let p = Params::parse(Some("namespace=all"), None);
        assert_eq!(p.get("namespace"), Some("all"));
    }

    #[test]
    fn body_params_join_query_params() {
        let p = Params::parse(Some("a=1"), Some(b"b=2&a=3"));
        assert_eq!(p.all("a"), &["1".to_string(), "3".to_string()]);
        assert_eq!(p.get("b"), Some("2"));
    }

    #[test]
    fn ranges_accept_every_time_form_and_name_bad_ones() {
        let p = Params::parse(Some("from=1717171717000&to=2024-05-31T16:08:38Z"), None);
        let r = p.range("from", "to").unwrap();
        assert_eq!(
            (r.start_ms, r.end_ms),
            (1_717_171_717_000, 1_717_171_718_000)
        );
        let p = Params::parse(Some("from=later"), None);
        assert!(p
            .range("from", "to")
            .unwrap_err()
            .contains("parameter from"));
        let p = Params::parse(Some("from=20&to=10"), None);
        assert!(p.range("from", "to").is_err());
    }
}
