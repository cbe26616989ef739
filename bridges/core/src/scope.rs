//! Which clusters a reader may see: the scope of an API token
//! (`KUBE_INSIGHT_API_TOKENS_FILE`). Pure: the API enforces it.

use crate::matcher::{MatchOp, Matcher};
use std::collections::BTreeSet;

/// The clusters a token may read.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ClusterScope {
    /// Every cluster (`token *`, or the single `KUBE_INSIGHT_API_TOKEN`).
    #[default]
    All,
    /// Only these clusters (never empty when built by a parser).
    Only(BTreeSet<String>),
}

impl ClusterScope {
    pub fn only<I, S>(clusters: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ClusterScope::Only(clusters.into_iter().map(Into::into).collect())
    }

    pub fn is_all(&self) -> bool {
        matches!(self, ClusterScope::All)
    }

    pub fn allows(&self, cluster: &str) -> bool {
        match self {
            ClusterScope::All => true,
            ClusterScope::Only(set) => set.contains(cluster),
        }
    }

    /// The allowed clusters; `None` for every cluster.
    pub fn clusters(&self) -> Option<&BTreeSet<String>> {
        match self {
            ClusterScope::All => None,
            ClusterScope::Only(set) => Some(set),
        }
    }

    /// The one cluster of a single-cluster scope.
    pub fn single(&self) -> Option<&str> {
        match self.clusters() {
            Some(set) if set.len() == 1 => set.iter().next().map(String::as_str),
            _ => None,
        }
    }

    /// A matcher that keeps series of the allowed clusters only (`None` for
    /// every cluster): `cluster="a"`, or `cluster=~"a|b"` with each name
    /// escaped. An empty scope matches no series.
    pub fn matcher(&self) -> Option<Matcher> {
        let set = self.clusters()?;
        if let Some(one) = self.single() {
            return Some(Matcher::eq("cluster", one));
        }
        let alternatives: Vec<String> = set.iter().map(|c| regex::escape(c)).collect();
        // An empty alternation would match the empty cluster; `\b\B` never matches.
        let pattern = if alternatives.is_empty() {
            r"\b\B".to_string()
        } else {
            alternatives.join("|")
        };
        Matcher::new(MatchOp::RegexMatch, "cluster", pattern).ok()
    }

    /// The allowed clusters as `a, b` for messages.
    pub fn describe(&self) -> String {
        match self.clusters() {
            None => "every cluster".to_string(),
            Some(set) => set.iter().cloned().collect::<Vec<_>>().join(", "),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::labels::Labels;

    fn series(cluster: &str) -> Labels {
        Labels::from_pairs([("__name__", "up"), ("cluster", cluster)])
    }

    #[test]
    fn the_matcher_keeps_the_allowed_clusters_only() {
        assert!(ClusterScope::All.matcher().is_none());
        let one = ClusterScope::only(["prod"]).matcher().unwrap();
        assert_eq!(one.op, MatchOp::Equal);
        assert!(one.matches(&series("prod")) && !one.matches(&series("dev")));
        let two = ClusterScope::only(["a.b", "c"]).matcher().unwrap();
        assert!(two.matches(&series("a.b")) && two.matches(&series("c")));
        // The dot is escaped: `a.b` does not match `axb`.
        assert!(!two.matches(&series("axb")) && !two.matches(&series("a.bc")));
        let none = ClusterScope::only(Vec::<String>::new()).matcher().unwrap();
        assert!(!none.matches(&series("")) && !none.matches(&series("a")));
    }

    #[test]
    fn allows_and_describes() {
        let s = ClusterScope::only(["b", "a"]);
        assert!(s.allows("a") && !s.allows("c"));
        assert_eq!(s.describe(), "a, b");
        assert_eq!(s.single(), None);
        assert_eq!(ClusterScope::only(["x"]).single(), Some("x"));
        assert!(ClusterScope::All.allows("anything"));
    }
}
