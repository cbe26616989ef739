//! The cassandra backend's settings: the `cassandra://` URL's parameters
//! plus `KUBE_INSIGHT_CASSANDRA_*` (through [`kube_insight_store::CassandraAuth`]).

use kube_insight_store::error::{Error, Result};
use kube_insight_store::CassandraAuth;
use scylla::statement::Consistency;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

/// Keyspace replication, applied by `schema apply` only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replication {
    /// `replication=simple:N`: SimpleStrategy, for one node or one rack.
    Simple(u32),
    /// `replication=dc1:3,dc2:3`: NetworkTopologyStrategy per data centre.
    Network(Vec<(String, u32)>),
}

impl Replication {
    /// The CQL map literal of `CREATE KEYSPACE … WITH replication = …`.
    pub fn cql(&self) -> String {
        match self {
            Replication::Simple(n) => {
                format!("{{'class': 'SimpleStrategy', 'replication_factor': {n}}}")
            }
            Replication::Network(dcs) => {
                let mut s = String::from("{'class': 'NetworkTopologyStrategy'");
                for (dc, n) in dcs {
                    s.push_str(&format!(", '{dc}': {n}"));
                }
                s.push('}');
                s
            }
        }
    }
}

/// Which retry policy statements use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryMode {
    /// The driver's default policy: retries idempotent statements on
    /// timeouts and unavailable replicas (ours are all idempotent).
    Default,
    /// Never retry in the driver; the push endpoints answer 503 and the
    /// sender retries.
    Never,
}

/// Everything needed to connect.
#[derive(Debug, Clone)]
pub struct CassandraConfig {
    pub hosts: Vec<String>,
    pub keyspace: String,
    /// The local data centre: load balancing prefers it and never fails over.
    pub dc: Option<String>,
    pub consistency: Consistency,
    pub replication: Replication,
    /// Client-side timeout of one request (`request_timeout=10s`).
    pub request_timeout: Duration,
    pub connect_timeout: Duration,
    /// Requests in flight per kube-insight process (`max_in_flight=256`);
    /// more waits, then the write is answered "overloaded" (503).
    pub max_in_flight: usize,
    /// How long a write waits for an in-flight slot before it is refused.
    pub enqueue_timeout: Duration,
    pub retry: RetryMode,
    /// Addresses the nodes broadcast, mapped to addresses this process
    /// reaches them at (`address_map=10.0.0.5:9042=203.0.113.7:9042,…`):
    /// for nodes behind NAT or per-node load balancers.
    pub address_map: HashMap<SocketAddr, SocketAddr>,
    pub auth: CassandraAuth,
}

const PARAMS: &str = "dc, consistency, replication, request_timeout, connect_timeout, max_in_flight, enqueue_timeout, retry, address_map";

impl CassandraConfig {
    /// Builds the settings from a parsed `cassandra://` URL. `url` is only
    /// used to name the input in errors.
    pub fn from_url(
        url: &str,
        hosts: Vec<String>,
        keyspace: String,
        params: &[(String, String)],
        auth: CassandraAuth,
    ) -> Result<CassandraConfig> {
        let bad = |reason: String| Error::InvalidUrl {
            url: url.to_string(),
            reason,
        };
        if let Some(why) = keyspace_problem(&keyspace) {
            return Err(bad(format!("keyspace {keyspace:?} {why}")));
        }
        let mut c = CassandraConfig {
            hosts,
            keyspace,
            dc: None,
            consistency: Consistency::LocalQuorum,
            replication: Replication::Simple(1),
            request_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            max_in_flight: 256,
            enqueue_timeout: Duration::from_secs(2),
            retry: RetryMode::Default,
            address_map: HashMap::new(),
            auth,
        };
        let duration = |k: &str, v: &str| {
            kube_insight_core::time::parse_duration(v)
                .ok()
                .filter(|d| !d.is_zero())
                .ok_or_else(|| {
                    bad(format!(
                        "parameter {k}={v:?} is not a duration (use e.g. 10s or 500ms)"
                    ))
                })
        };
        for (k, v) in params {
            match k.as_str() {
                "dc" => {
                    if v.is_empty() {
                        return Err(bad("parameter dc is empty".into()));
                    }
                    c.dc = Some(v.clone());
                }
                "consistency" => c.consistency = consistency(v).ok_or_else(|| {
                    bad(format!("parameter consistency={v:?} is not one of one, local_one, quorum, local_quorum, each_quorum, all"))
                })?,
                "replication" => c.replication = replication(v).ok_or_else(|| {
                    bad(format!("parameter replication={v:?} is neither simple:N nor DC:N[,DC:N…] (e.g. replication=dc1:3)"))
                })?,
                "request_timeout" => c.request_timeout = duration(k, v)?,
                "connect_timeout" => c.connect_timeout = duration(k, v)?,
                "enqueue_timeout" => c.enqueue_timeout = duration(k, v)?,
                "max_in_flight" => {
                    c.max_in_flight = v
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=65_536).contains(n))
                        .ok_or_else(|| {
                            bad(format!("parameter max_in_flight={v:?} must be 1 to 65536"))
                        })?
                }
                "retry" => {
                    c.retry = match v.as_str() {
                        "default" => RetryMode::Default,
                        "never" => RetryMode::Never,
                        _ => {
                            return Err(bad(format!(
                                "parameter retry={v:?} is neither default nor never"
                            )))
                        }
                    }
                }
                "address_map" => {
                    for pair in v.split(',').filter(|p| !p.is_empty()) {
                        let parsed = pair.split_once('=').and_then(|(from, to)| {
                            Some((from.trim().parse().ok()?, to.trim().parse().ok()?))
                        });
                        let Some((from, to)) = parsed else {
                            return Err(bad(format!(
                                "parameter address_map entry {pair:?} is not BROADCAST_IP:PORT=REACHABLE_IP:PORT (e.g. 10.0.0.5:9042=203.0.113.7:9042)"
                            )));
                        };
                        c.address_map.insert(from, to);
                    }
                }
                other => {
                    return Err(bad(format!(
                        "unknown parameter {other:?}; known: {PARAMS}"
                    )))
                }
            }
        }
        if matches!(
            c.consistency,
            Consistency::LocalQuorum | Consistency::LocalOne
        ) && matches!(c.replication, Replication::Network(_))
            && c.dc.is_none()
        {
            return Err(bad(
                "local consistency with NetworkTopologyStrategy needs the local data centre: add dc=NAME".into(),
            ));
        }
        if c.auth.username.is_some() != c.auth.password.is_some() {
            return Err(bad(
                "set both KUBE_INSIGHT_CASSANDRA_USERNAME and KUBE_INSIGHT_CASSANDRA_PASSWORD, or neither".into(),
            ));
        }
        Ok(c)
    }
}

/// CQL's reserved keywords in Cassandra 4.0 (`cql3/ReservedKeywords.java`):
/// unquoted, none of them can name a keyspace.
const RESERVED: &str =
    "ADD ALLOW ALTER AND APPLY ASC AUTHORIZE BATCH BEGIN BY COLUMNFAMILY CREATE \
     DEFAULT DELETE DESC DESCRIBE DROP ENTRIES EXECUTE FROM FULL GRANT IF IN INDEX \
     INFINITY INSERT INTO IS KEYSPACE LIMIT MATERIALIZED MBEAN MBEANS MODIFY NAN \
     NORECURSIVE NOT NULL OF ON OR ORDER PRIMARY RENAME REPLACE REVOKE SCHEMA SELECT \
     SET TABLE TO TOKEN TRUNCATE UNLOGGED UNSET UPDATE USE USING VIEW WHERE WITH";

/// Whether `name` is one of [`RESERVED`] (in any case): unquoted, it can
/// name no keyspace, table or column.
pub(crate) fn is_reserved(name: &str) -> bool {
    RESERVED
        .split_whitespace()
        .any(|r| r.eq_ignore_ascii_case(name))
}

/// Why Cassandra would refuse `keyspace` as an unquoted name (the store
/// never quotes it), if it would: an identifier starts with a letter
/// (`Lexer.g` IDENT), holds letters, digits and underscores, is at most 48
/// characters (`SchemaConstants.NAME_LENGTH`) and is not a reserved word.
fn keyspace_problem(keyspace: &str) -> Option<&'static str> {
    if !keyspace.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return Some("must start with a letter");
    }
    if !keyspace
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Some("must be letters, digits and underscores");
    }
    if keyspace.len() > 48 {
        return Some("is longer than the 48 characters cassandra allows");
    }
    if is_reserved(keyspace) {
        return Some("is a reserved CQL keyword");
    }
    None
}

fn consistency(v: &str) -> Option<Consistency> {
    Some(match v.to_ascii_lowercase().as_str() {
        "one" => Consistency::One,
        "local_one" => Consistency::LocalOne,
        "quorum" => Consistency::Quorum,
        "local_quorum" => Consistency::LocalQuorum,
        "each_quorum" => Consistency::EachQuorum,
        "all" => Consistency::All,
        _ => return None,
    })
}

fn replication(v: &str) -> Option<Replication> {
    let n = |s: &str| s.parse::<u32>().ok().filter(|n| (1..=9).contains(n));
    if let Some(rf) = v.strip_prefix("simple:") {
        return n(rf).map(Replication::Simple);
    }
    let mut dcs = Vec::new();
    for part in v.split(',') {
        let (dc, rf) = part.split_once(':')?;
        let ok = !dc.is_empty()
            && dc
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.');
        if !ok {
            return None;
        }
        dcs.push((dc.to_string(), n(rf)?));
    }
    (!dcs.is_empty()).then_some(Replication::Network(dcs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(params: &[(&str, &str)]) -> Result<CassandraConfig> {
        let p: Vec<(String, String)> = params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        CassandraConfig::from_url(
            "cassandra://h/ks",
            vec!["h:9042".into()],
            "ks".into(),
            &p,
            CassandraAuth::default(),
        )
    }

    #[test]
    fn defaults_suit_one_node() {
        let c = cfg(&[]).unwrap();
        assert_eq!(c.consistency, Consistency::LocalQuorum);
        assert_eq!(c.replication, Replication::Simple(1));
        assert_eq!(
            c.replication.cql(),
            "{'class': 'SimpleStrategy', 'replication_factor': 1}"
        );
        assert_eq!(c.max_in_flight, 256);
        assert_eq!(c.request_timeout, Duration::from_secs(10));
    }

    #[test]
    fn every_parameter() {
        let c = cfg(&[
            ("dc", "eu-west"),
            ("consistency", "QUORUM"),
            ("replication", "eu-west:3,us_east:2"),
            ("request_timeout", "3s"),
            ("connect_timeout", "500ms"),
            ("enqueue_timeout", "1s"),
            ("max_in_flight", "64"),
            ("retry", "never"),
            (
                "address_map",
                "10.0.0.5:9042=127.0.0.1:19042,[fd00::1]:9042=[::1]:9042",
            ),
        ])
        .unwrap();
        assert_eq!(c.address_map.len(), 2);
        assert_eq!(
            c.address_map[&"10.0.0.5:9042".parse().unwrap()],
            "127.0.0.1:19042".parse().unwrap()
        );
        assert_eq!(c.dc.as_deref(), Some("eu-west"));
        assert_eq!(c.consistency, Consistency::Quorum);
        assert_eq!(
            c.replication.cql(),
            "{'class': 'NetworkTopologyStrategy', 'eu-west': 3, 'us_east': 2}"
        );
        assert_eq!(c.request_timeout, Duration::from_secs(3));
        assert_eq!(c.connect_timeout, Duration::from_millis(500));
        assert_eq!(c.max_in_flight, 64);
        assert_eq!(c.retry, RetryMode::Never);
    }

    #[test]
    fn every_error_names_the_parameter() {
        for (k, v) in [
            ("consistency", "two"),
            ("replication", "simple:0"),
            ("replication", "dc1"),
            ("replication", "dc'1:3"),
            ("request_timeout", "soon"),
            ("request_timeout", "0s"),
            ("max_in_flight", "0"),
            ("retry", "always"),
            ("address_map", "10.0.0.5:9042"),
            ("address_map", "cass-0:9042=127.0.0.1:9042"),
            ("dc", ""),
            ("colour", "blue"),
        ] {
            let e = cfg(&[(k, v)]).unwrap_err().to_string();
            assert!(e.contains(k), "{k}={v}: {e}");
            assert!(e.contains("cassandra://h/ks"), "{e}");
        }
        let e = cfg(&[("replication", "dc1:3")]).unwrap_err().to_string();
        assert!(e.contains("dc=NAME"), "{e}");
        let auth = CassandraAuth {
            username: Some("u".into()),
            ..Default::default()
        };
        let e = CassandraConfig::from_url("cassandra://h/ks", vec![], "ks".into(), &[], auth)
            .unwrap_err()
            .to_string();
        assert!(e.contains("KUBE_INSIGHT_CASSANDRA_PASSWORD"), "{e}");
    }

    #[test]
    fn keyspaces_cassandra_refuses_are_refused_here() {
        let open = |ks: &str| {
            CassandraConfig::from_url(
                "cassandra://h/x",
                vec!["h:9042".into()],
                ks.into(),
                &[],
                CassandraAuth::default(),
            )
        };
        for (ks, why) in [
            ("1metrics", "start with a letter"),
            ("_ki", "start with a letter"),
            ("", "start with a letter"),
            ("k-i", "letters, digits and underscores"),
            (&"k".repeat(49), "48 characters"),
            ("table", "reserved"),
            ("Select", "reserved"),
        ] {
            let e = open(ks).unwrap_err().to_string();
            assert!(
                e.contains(why) && e.contains(&format!("{ks:?}")),
                "{ks}: {e}"
            );
        }
        for ks in [
            "ki",
            "Kube_Insight_1",
            "cluster",
            "metrics",
            &"k".repeat(48),
        ] {
            assert!(open(ks).is_ok(), "{ks}");
        }
    }
}
