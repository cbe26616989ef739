//! Bearer tokens for the push endpoints. A push is accepted only with a listed
//! token, and the cluster is taken from the token, never from the payload.
//! The API's tokens file (a token → the clusters it may read) shares the
//! file syntax and its parser ([`parse_token_lines`]).

use axum::http::HeaderMap;
use kube_insight_core::ClusterScope;
use std::path::Path;
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("missing bearer token: send `Authorization: Bearer <token>`")]
    Missing,
    #[error("unknown bearer token")]
    Unknown,
    #[error("tokens file {path}: line {line}: {reason}")]
    File {
        path: String,
        line: usize,
        reason: String,
    },
    #[error("tokens file {path}: {reason}")]
    Read { path: String, reason: String },
}

/// Token → cluster. With no tokens configured, every push is accepted as the
/// default cluster (allowed only on loopback or with
/// `KUBE_INSIGHT_INSECURE_NO_AUTH=true`; the server checks that).
#[derive(Clone, Default)]
pub struct TokenMap {
    entries: Vec<(Vec<u8>, String)>,
    default_cluster: String,
}

impl std::fmt::Debug for TokenMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print tokens.
        f.debug_struct("TokenMap")
            .field("tokens", &self.entries.len())
            .field("clusters", &self.clusters())
            .field("default_cluster", &self.default_cluster)
            .finish()
    }
}

impl TokenMap {
    /// No tokens: every push is the default cluster's.
    pub fn open(default_cluster: impl Into<String>) -> Self {
        TokenMap {
            entries: Vec::new(),
            default_cluster: default_cluster.into(),
        }
    }

    pub fn insert(&mut self, token: impl Into<String>, cluster: impl Into<String>) {
        self.entries
            .push((token.into().into_bytes(), cluster.into()));
    }

    pub fn is_open(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn clusters(&self) -> Vec<String> {
        let mut c: Vec<String> = self.entries.iter().map(|(_, c)| c.clone()).collect();
        c.sort();
        c.dedup();
        c
    }

    /// Parses a tokens file: one `token cluster-name` per line; `#` comments
    /// and blank lines ignored.
    pub fn parse_file_contents(
        path: &str,
        text: &str,
        default_cluster: &str,
    ) -> Result<Self, AuthError> {
        let mut m = TokenMap::open(default_cluster);
        let lines = parse_token_lines(path, text, "token cluster-name", |cluster| {
            if valid_cluster_name(cluster) {
                Ok(cluster.to_string())
            } else {
                Err("cluster name must be letters, digits, '-', '_' or '.'".into())
            }
        })?;
        for (token, cluster) in lines {
            m.insert(token, cluster);
        }
        Ok(m)
    }

    pub fn load_file(path: &Path, default_cluster: &str) -> Result<Self, AuthError> {
        let text = std::fs::read_to_string(path).map_err(|e| AuthError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Self::parse_file_contents(&path.display().to_string(), &text, default_cluster)
    }

    /// The cluster a request may write as.
    pub fn cluster_for(&self, headers: &HeaderMap) -> Result<String, AuthError> {
        if self.entries.is_empty() {
            return Ok(self.default_cluster.clone());
        }
        let token = bearer(headers).ok_or(AuthError::Missing)?;
        self.cluster_for_token(token)
    }

    pub fn cluster_for_token(&self, token: &str) -> Result<String, AuthError> {
        // Compare against every entry in constant time per entry.
        let mut found: Option<&str> = None;
        for (t, c) in &self.entries {
            if ct_eq(t, token.as_bytes()) {
                found = Some(c);
            }
        }
        found.map(str::to_string).ok_or(AuthError::Unknown)
    }
}

/// The shared parser of tokens files: one `token value` per line, `#`
/// comments and blank lines ignored; each token at least 16 characters and
/// listed once; `value` checked by `parse_value` (its error names what is
/// wrong with it). `expected` names the line's form for messages. A file
/// without tokens is an error.
pub fn parse_token_lines<T>(
    path: &str,
    text: &str,
    expected: &str,
    parse_value: impl Fn(&str) -> Result<T, String>,
) -> Result<Vec<(String, T)>, AuthError> {
    let mut out: Vec<(String, T)> = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = |reason: &str| AuthError::File {
            path: path.to_string(),
            line: i + 1,
            reason: reason.to_string(),
        };
        let mut parts = line.split_whitespace();
        let (Some(token), Some(value), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad(&format!("expected `{expected}`")));
        };
        if token.len() < 16 {
            return Err(bad(
                "token is shorter than 16 characters; generate one with `openssl rand -hex 32`",
            ));
        }
        let value = parse_value(value).map_err(|r| bad(&r))?;
        if out.iter().any(|(t, _)| t == token) {
            return Err(bad("token listed twice"));
        }
        out.push((token.to_string(), value));
    }
    if out.is_empty() {
        return Err(AuthError::Read {
            path: path.to_string(),
            reason: "no tokens in the file".into(),
        });
    }
    Ok(out)
}

/// Parses an API tokens file (`KUBE_INSIGHT_API_TOKENS_FILE`): one
/// `token cluster[,cluster…]` or `token *` per line, in the ingest tokens
/// file's syntax ([`parse_token_lines`]). A token reads only its clusters;
/// `*` reads every cluster.
pub fn parse_api_tokens(path: &str, text: &str) -> Result<Vec<(String, ClusterScope)>, AuthError> {
    parse_token_lines(path, text, "token cluster[,cluster...]` or `token *", |v| {
        if v == "*" {
            return Ok(ClusterScope::All);
        }
        let clusters: Vec<&str> = v.split(',').collect();
        if let Some(bad) = clusters.iter().find(|c| !valid_cluster_name(c)) {
            return Err(format!(
                "cluster name {bad:?} must be letters, digits, '-', '_' or '.' (clusters separated by ',' without spaces, or `*` for every cluster)"
            ));
        }
        Ok(ClusterScope::only(clusters))
    })
}

/// Reads and parses an API tokens file ([`parse_api_tokens`]).
pub fn load_api_tokens(path: &Path) -> Result<Vec<(String, ClusterScope)>, AuthError> {
    let text = std::fs::read_to_string(path).map_err(|e| AuthError::Read {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    parse_api_tokens(&path.display().to_string(), &text)
}

/// The token of an `Authorization: Bearer …` header.
pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = v.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Constant-time byte comparison (length leaks, content does not).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub fn valid_cluster_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("authorization", HeaderValue::from_str(auth).unwrap());
        h
    }

    #[test]
    fn token_file_maps_tokens_to_clusters() {
        let m = TokenMap::parse_file_contents(
            "t",
            "# comment\n0123456789abcdef0 prod-eu\n\nfedcba98765432100 staging\n",
            "default",
        )
        .unwrap();
        assert_eq!(
            m.cluster_for(&headers("Bearer 0123456789abcdef0")).unwrap(),
            "prod-eu"
        );
        assert_eq!(
            m.cluster_for(&headers("bearer fedcba98765432100")).unwrap(),
            "staging"
        );
        assert_eq!(
            m.cluster_for(&headers("Bearer nope")),
            Err(AuthError::Unknown)
        );
        assert_eq!(m.cluster_for(&HeaderMap::new()), Err(AuthError::Missing));
        assert_eq!(
            m.cluster_for(&headers("Basic abc")),
            Err(AuthError::Missing)
        );
    }

    #[test]
    fn token_file_errors_name_the_line() {
        let e = TokenMap::parse_file_contents("/etc/t", "short c\n", "d").unwrap_err();
        assert!(
            e.to_string().starts_with("tokens file /etc/t: line 1:"),
            "{e}"
        );
        let e = TokenMap::parse_file_contents("/etc/t", "0123456789abcdef0\n", "d").unwrap_err();
        assert!(
            e.to_string().contains("expected `token cluster-name`"),
            "{e}"
        );
        let e = TokenMap::parse_file_contents("/etc/t", "0123456789abcdef0 bad/name\n", "d")
            .unwrap_err();
        assert!(e.to_string().contains("cluster name"), "{e}");
        assert!(TokenMap::parse_file_contents("/etc/t", "# only comments\n", "d").is_err());
    }

    #[test]
    fn api_tokens_file_maps_tokens_to_cluster_scopes() {
        let t = parse_api_tokens(
            "/etc/api",
            "# readers\n0123456789abcdef0 prod-eu,prod-us\n\nfedcba98765432100 *\naaaaaaaaaaaaaaaa1 dev\n",
        )
        .unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!(t[0].1, ClusterScope::only(["prod-eu", "prod-us"]));
        assert_eq!(t[1].1, ClusterScope::All);
        assert_eq!(t[2].1, ClusterScope::only(["dev"]));
        let e = parse_api_tokens("/etc/api", "0123456789abcdef0 a, b\n").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("tokens file /etc/api: line 1: expected"),
            "{e}"
        );
        let e = parse_api_tokens("/etc/api", "0123456789abcdef0 a,,b\n").unwrap_err();
        assert!(e.to_string().contains("cluster name \"\""), "{e}");
        let e = parse_api_tokens("/etc/api", "short *\n").unwrap_err();
        assert!(e.to_string().contains("shorter than 16"), "{e}");
        let e =
            parse_api_tokens("/etc/api", "0123456789abcdef0 a\n0123456789abcdef0 b\n").unwrap_err();
        assert!(e.to_string().contains("line 2: token listed twice"), "{e}");
        assert!(parse_api_tokens("/etc/api", "\n# none\n").is_err());
    }

    #[test]
    fn open_map_uses_the_default_cluster() {
        let m = TokenMap::open("default");
        assert_eq!(m.cluster_for(&HeaderMap::new()).unwrap(), "default");
        assert!(format!("{m:?}").contains("tokens: 0"));
    }
}
