//! Label matchers, with Prometheus' semantics: regexes are fully anchored, and
//! an absent label matches as the empty string.

use crate::error::{Error, Result};
use crate::labels::Labels;
use regex::Regex;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MatchOp {
    Equal,
    NotEqual,
    RegexMatch,
    RegexNoMatch,
}

#[derive(Clone, Debug)]
pub struct Matcher {
    pub name: String,
    pub op: MatchOp,
    pub value: String,
    regex: Option<Regex>,
}

impl PartialEq for Matcher {
    fn eq(&self, o: &Self) -> bool {
        self.name == o.name && self.op == o.op && self.value == o.value
    }
}

impl Matcher {
    /// Builds a matcher; a regex is compiled anchored (`^(?s:…)$`) as Prometheus does.
    pub fn new(op: MatchOp, name: impl Into<String>, value: impl Into<String>) -> Result<Self> {
        let name = name.into();
        let value = value.into();
        let regex = match op {
            MatchOp::RegexMatch | MatchOp::RegexNoMatch => Some(
                Regex::new(&format!("^(?s:{value})$")).map_err(|e| Error::InvalidRegex {
                    label: name.clone(),
                    pattern: value.clone(),
                    reason: e.to_string(),
                })?,
            ),
            _ => None,
        };
        Ok(Matcher {
            name,
            op,
            value,
            regex,
        })
    }

    pub fn eq(name: impl Into<String>, value: impl Into<String>) -> Self {
        Matcher {
            name: name.into(),
            op: MatchOp::Equal,
            value: value.into(),
            regex: None,
        }
    }

    /// Whether a label value (empty when absent) matches.
    pub fn matches_value(&self, v: &str) -> bool {
        match self.op {
            MatchOp::Equal => v == self.value,
            MatchOp::NotEqual => v != self.value,
            MatchOp::RegexMatch => self.regex.as_ref().is_some_and(|r| r.is_match(v)),
            MatchOp::RegexNoMatch => !self.regex.as_ref().is_some_and(|r| r.is_match(v)),
        }
    }

    pub fn matches(&self, labels: &Labels) -> bool {
        self.matches_value(labels.get(&self.name).unwrap_or(""))
    }

    /// True when this matcher also matches series that lack the label
    /// (so it cannot narrow a lookup by itself).
    pub fn matches_empty(&self) -> bool {
        self.matches_value("")
    }
}

/// True when every matcher matches.
pub fn matches_all(matchers: &[Matcher], labels: &Labels) -> bool {
    matchers.iter().all(|m| m.matches(labels))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_matcher_semantics() {
        let l = Labels::from_pairs([("__name__", "up"), ("job", "node")]);
        assert!(Matcher::eq("job", "node").matches(&l));
        assert!(Matcher::new(MatchOp::NotEqual, "job", "x")
            .unwrap()
            .matches(&l));
        // Anchored: "no" must not match "node".
        assert!(!Matcher::new(MatchOp::RegexMatch, "job", "no")
            .unwrap()
            .matches(&l));
        assert!(Matcher::new(MatchOp::RegexMatch, "job", "no.*")
            .unwrap()
            .matches(&l));
        assert!(Matcher::new(MatchOp::RegexNoMatch, "job", "x|y")
            .unwrap()
            .matches(&l));
        // Absent label is "".
        assert!(Matcher::eq("missing", "").matches(&l));
        assert!(Matcher::new(MatchOp::RegexMatch, "missing", ".*")
            .unwrap()
            .matches_empty());
        assert!(!Matcher::new(MatchOp::RegexMatch, "missing", ".+")
            .unwrap()
            .matches(&l));
    }

    #[test]
    fn bad_regex_names_the_label_and_pattern() {
        let e = Matcher::new(MatchOp::RegexMatch, "pod", "(").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("\"pod\"") && msg.contains("\"(\""), "{msg}");
    }
}
