//! `KUBE_INSIGHT_STORE` URLs.

use crate::error::{Error, Result};
use std::path::PathBuf;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// `sqlite:///abs/path.db`, `sqlite://./rel/path.db` or `sqlite://rel.db`.
    Sqlite { path: PathBuf },
    /// `cassandra://host1:9042,host2:9042/keyspace?dc=DC&consistency=local_quorum`.
    Cassandra {
        hosts: Vec<String>,
        keyspace: String,
        params: Vec<(String, String)>,
    },
}

impl StoreUrl {
    pub fn parse(url: &str) -> Result<StoreUrl> {
        let bad = |reason: &str| Error::InvalidUrl {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        if let Some(rest) = url.strip_prefix("sqlite://") {
            if rest.is_empty() {
                return Err(bad("no file path: use sqlite:///var/lib/kube-insight/insight.db or sqlite://./data/insight.db"));
            }
            if rest.contains('?') {
                return Err(bad("sqlite urls take no parameters"));
            }
            return Ok(StoreUrl::Sqlite {
                path: PathBuf::from(rest),
            });
        }
        if let Some(rest) = url.strip_prefix("cassandra://") {
            let (hostpart, tail) = rest
                .split_once('/')
                .ok_or_else(|| bad("no keyspace: use cassandra://host:9042/keyspace"))?;
            let (keyspace, query) = tail.split_once('?').unwrap_or((tail, ""));
            let hosts: Vec<String> = hostpart
                .split(',')
                .map(str::trim)
                .filter(|h| !h.is_empty())
                .map(|h| {
                    if h.contains(':') {
                        h.to_string()
                    } else {
                        format!("{h}:9042")
                    }
                })
                .collect();
            if hosts.is_empty() {
                return Err(bad(
                    "no hosts: use cassandra://host1:9042,host2:9042/keyspace",
                ));
            }
            if keyspace.is_empty()
                || !keyspace
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                return Err(bad("the keyspace must be letters, digits and underscores"));
            }
            let mut params = Vec::new();
            for kv in query.split('&').filter(|s| !s.is_empty()) {
                let (k, v) = kv
                    .split_once('=')
                    .ok_or_else(|| bad(&format!("parameter {kv:?} has no value")))?;
                params.push((k.to_string(), v.to_string()));
            }
            return Ok(StoreUrl::Cassandra {
                hosts,
                keyspace: keyspace.to_string(),
                params,
            });
        }
        Err(bad(
            "unknown scheme: use sqlite://PATH or cassandra://HOSTS/KEYSPACE",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_paths() {
        assert_eq!(
            StoreUrl::parse("sqlite://./data/insight.db").unwrap(),
            StoreUrl::Sqlite {
                path: "./data/insight.db".into()
            }
        );
        assert_eq!(
            StoreUrl::parse("sqlite:///var/lib/x.db").unwrap(),
            StoreUrl::Sqlite {
                path: "/var/lib/x.db".into()
            }
        );
        assert!(StoreUrl::parse("sqlite://").is_err());
    }

    #[test]
    fn cassandra_urls() {
        let u = StoreUrl::parse("cassandra://a:9042,b/ks?dc=eu&consistency=local_quorum").unwrap();
        assert_eq!(
            u,
            StoreUrl::Cassandra {
                hosts: vec!["a:9042".into(), "b:9042".into()],
                keyspace: "ks".into(),
                params: vec![
                    ("dc".into(), "eu".into()),
                    ("consistency".into(), "local_quorum".into())
                ],
            }
        );
        for bad in [
            "cassandra://a:9042",
            "cassandra:///ks",
            "cassandra://a/k-s",
            "cassandra://a/ks?dc",
            "mysql://x",
        ] {
            let e = StoreUrl::parse(bad).unwrap_err().to_string();
            assert!(e.contains(bad), "{e}");
        }
    }
}
