//! `kube_eventer`: kube-eventer's webhook sink on `POST /ingest/kube-eventer`,
//! an optional second source of Kubernetes events next to the watch
//! (`kube_watch`), de-duplicated against it by the store (by uid and count,
//! or for uid-less bodies by involved kind, reason, message and time).
//!
//! [`decode`] is pure and survives kube-eventer's quirks (FORMATS.md §2):
//! - the default template (`EventType`, `EventKind`, `EventReason`,
//!   `EventTime`, `EventMessage`) has no uid, a leading newline and tabs, and
//!   a Go `time.Time.String()` time in the process' zone
//!   (`2024-05-31 16:08:37 +0800 CST`);
//! - nothing is JSON-escaped: raw newlines, tabs and backslashes in a
//!   message make invalid JSON, which is repaired (every backslash is
//!   literal, since kube-eventer never escapes);
//! - the "full JSON" ConfigMap template and resmoio/kubernetes-event-exporter
//!   send a core/v1-shaped event (counts may be strings, a zero
//!   `firstTimestamp` is `0001-01-01T00:00:00Z`);
//! - kube-eventer appends its own sink parameters to the URL: ignored.

use crate::push::{PushError, PushOutcome, PushRequest, PushSource};
use async_trait::async_trait;
use kube_insight_core::event::{parse_event, EventOrigin, KubeEvent, ObjectRef};
use kube_insight_core::time::now_ms;
use kube_insight_store::events::EventStore;
use serde_json::Value;
use std::sync::Arc;
use thiserror::Error;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("kube-eventer body is empty")]
    Empty,
    #[error("kube-eventer body is not JSON even after repairing unescaped characters: {0}")]
    NotJson(String),
    #[error("kube-eventer body: {0}")]
    Invalid(String),
}

/// Decodes one webhook body (one event, or an array of events).
pub fn decode(
    body: &[u8],
    cluster: &str,
    now_ms: i64,
) -> Result<Vec<Result<KubeEvent, DecodeError>>, DecodeError> {
    let text = String::from_utf8_lossy(body);
    let text = text.trim_start_matches('\u{feff}').trim();
    if text.is_empty() {
        return Err(DecodeError::Empty);
    }
    let v: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(first) => serde_json::from_str(&repair(text))
            .map_err(|_| DecodeError::NotJson(first.to_string()))?,
    };
    let items = match v {
        Value::Array(a) => a,
        other => vec![other],
    };
    Ok(items
        .iter()
        .map(|item| one(item, cluster, now_ms))
        .collect())
}

fn one(v: &Value, cluster: &str, now: i64) -> Result<KubeEvent, DecodeError> {
    let Some(m) = v.as_object() else {
        return Err(DecodeError::Invalid("an event is not a JSON object".into()));
    };
    if m.contains_key("EventReason")
        || m.contains_key("EventType")
        || m.contains_key("EventMessage")
    {
        let g = |k: &str| m.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let t = g("EventTime");
        let at = if t.is_empty() {
            now
        } else {
            parse_go_time(&t)
                .ok_or_else(|| DecodeError::Invalid(format!("EventTime {t:?} is not a Go time")))?
        };
        let involved = ObjectRef {
            kind: g("EventKind"),
            namespace: g("EventNamespace"),
            name: g("EventObject"),
            ..Default::default()
        };
        let (reason, message) = (g("EventReason"), g("EventMessage"));
        if reason.is_empty() && message.is_empty() {
            return Err(DecodeError::Invalid(
                "EventReason and EventMessage are both empty".into(),
            ));
        }
        let uid = match g("EventUID") {
            u if !u.is_empty() => u,
            _ => KubeEvent::synthetic_uid(
                &involved.kind,
                &involved.namespace,
                &involved.name,
                &reason,
                &message,
            ),
        };
        return Ok(KubeEvent {
            cluster: cluster.to_string(),
            uid,
            namespace: involved.namespace.clone(),
            name: String::new(),
            reason,
            event_type: g("EventType"),
            message,
            involved,
            source_component: String::new(),
            source_host: String::new(),
            count: 1,
            first_ms: at,
            last_ms: at,
            resource_version: String::new(),
            origin: EventOrigin::KubeEventer,
        });
    }
    // core/v1 shaped (full template, event-exporter): metadata may be flat.
    let mut e = v.clone();
    if e.get("metadata").is_none() {
        let mut meta = serde_json::Map::new();
        for k in ["uid", "name", "namespace", "resourceVersion"] {
            if let Some(x) = e.get(k) {
                meta.insert(k.into(), x.clone());
            }
        }
        if let Some(o) = e.as_object_mut() {
            o.insert("metadata".into(), Value::Object(meta));
        }
    }
    parse_event(&e, cluster, EventOrigin::KubeEventer, now)
        .map_err(|err| DecodeError::Invalid(err.to_string()))
}

/// Escapes what kube-eventer's template leaves raw inside JSON strings:
/// control characters and backslashes (all literal: it never escapes).
pub fn repair(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 16);
    let mut in_str = false;
    for c in text.chars() {
        if !in_str {
            if c == '"' {
                in_str = true;
            }
            out.push(c);
            continue;
        }
        match c {
            '"' => {
                in_str = false;
                out.push('"');
            }
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// Parses Go's `time.Time.String()`: `2024-05-31 16:08:37 +0000 UTC`,
/// `2024-05-31 16:08:37.123 +0800 CST`, optionally ` m=+0.001`; RFC 3339
/// is accepted too.
pub fn parse_go_time(s: &str) -> Option<i64> {
    let s = s.trim();
    let s = s.split(" m=").next().unwrap_or(s);
    if let Ok(t) = kube_insight_core::parse_time_ms(s) {
        if !s.contains(' ') {
            return Some(t);
        }
    }
    let mut it = s.split_whitespace();
    let (date, time, off) = (it.next()?, it.next()?, it.next()?);
    let b = off.as_bytes();
    if b.len() != 5
        || !(b[0] == b'+' || b[0] == b'-')
        || !off[1..].bytes().all(|x| x.is_ascii_digit())
    {
        return None;
    }
    let rfc = format!("{date}T{time}{}:{}", &off[..3], &off[3..]);
    let rfc = if &off[1..] == "0000" {
        format!("{date}T{time}Z")
    } else {
        rfc
    };
    kube_insight_core::parse_time_ms(&rfc).ok()
}

/// The push source.
pub struct KubeEventerSource {
    store: Arc<dyn EventStore>,
}

impl KubeEventerSource {
    pub fn new(store: Arc<dyn EventStore>) -> Self {
        KubeEventerSource { store }
    }
}

#[async_trait]
impl PushSource for KubeEventerSource {
    fn name(&self) -> &'static str {
        "kube_eventer"
    }
    fn target(&self) -> &'static str {
        "events"
    }
    fn path(&self) -> &'static str {
        "/ingest/kube-eventer"
    }

    async fn ingest(&self, req: PushRequest) -> Result<PushOutcome, PushError> {
        let items = decode(&req.body, &req.cluster, now_ms())
            .map_err(|e| PushError::BadRequest(e.to_string()))?;
        let mut events = Vec::new();
        let mut bad = 0u64;
        let mut note = None;
        for (i, r) in items.into_iter().enumerate() {
            match r {
                Ok(e) => events.push(e),
                Err(e) => {
                    bad += 1;
                    note.get_or_insert_with(|| format!("event {i}: {e}"));
                }
            }
        }
        if events.is_empty() && bad > 0 {
            return Err(PushError::BadRequest(note.unwrap_or_default()));
        }
        let n = events.len() as u64;
        let out = self.store.write_events(events).await?;
        tracing::debug!(cluster = %req.cluster, created = out.events_created, occurrences = out.occurrences_written,
            duplicates = out.duplicates, matched_watch = out.matched_watch, "kube-eventer events stored");
        Ok(PushOutcome {
            accepted: n,
            rejected: if bad > 0 {
                vec![("invalid_event", bad)]
            } else {
                Vec::new()
            },
            note,
            refuse: None,
            json: None,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(format!(
            "{}/../../../shared/fixtures/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
        .unwrap()
    }

    #[test]
    fn default_body_fixture() {
        let evs = decode(&fixture("kube-eventer-webhook-body.json"), "prod", 0).unwrap();
        let e = evs[0].as_ref().unwrap();
        assert_eq!(
            (
                e.event_type.as_str(),
                e.involved.kind.as_str(),
                e.reason.as_str()
            ),
            ("Warning", "Pod", "BackOff")
        );
        assert_eq!(e.last_ms, 1_717_171_717_000);
        assert!(e.is_synthetic());
        assert_eq!(e.origin, EventOrigin::KubeEventer);
    }

    #[test]
    fn custom_full_and_event_exporter_fixtures_keep_the_uid() {
        for f in [
            "kube-eventer-webhook-body-custom-full.json",
            "event-exporter-webhook-body.json",
        ] {
            let evs = decode(&fixture(f), "prod", 0).unwrap();
            let e = evs[0].as_ref().unwrap();
            assert_eq!(e.uid, "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d", "{f}");
            assert_eq!(e.count, 7, "{f}");
            assert_eq!(e.first_ms, 1_717_171_082_000, "{f}");
            assert_eq!(e.last_ms, 1_717_171_717_000, "{f}");
            assert_eq!(e.involved.name, "api-5f6d7c8b9-qwz7p", "{f}");
        }
    }

    #[test]
    fn unescaped_template_quirks() {
        let body = "\n{\n\t\"EventType\": \"Warning\",\n\t\"EventKind\": \"Pod\",\n\t\"EventReason\": \"Failed\",\n\t\"EventTime\": \"2024-05-31 18:08:37 +0800 CST\",\n\t\"EventMessage\": \"exec C:\\new\\path failed:\n\tline two\"\n}";
        let evs = decode(body.as_bytes(), "prod", 0).unwrap();
        let e = evs[0].as_ref().unwrap();
        assert_eq!(e.message, "exec C:\\new\\path failed:\n\tline two");
        assert_eq!(e.last_ms, 1_717_150_117_000);
        assert_eq!(
            parse_go_time("2024-05-31 16:08:37.5 +0000 UTC m=+0.000000001"),
            Some(1_717_171_717_500)
        );
        assert_eq!(
            parse_go_time("2024-05-31T16:08:37Z"),
            Some(1_717_171_717_000)
        );
        assert_eq!(parse_go_time("yesterday"), None);
        // Counts as strings (event-exporter layouts), zero first timestamps.
        let b = br#"{"uid":"u1","reason":"R","message":"m","count":"3","firstTimestamp":"0001-01-01T00:00:00Z","lastTimestamp":"2024-05-31T16:08:37Z","involvedObject":{"kind":"Node","name":"n1"}}"#;
        let e = decode(b, "prod", 0).unwrap().remove(0).unwrap();
        assert_eq!(
            (e.count, e.first_ms, e.last_ms),
            (3, 1_717_171_717_000, 1_717_171_717_000)
        );
        assert_eq!(decode(b"  ", "p", 0), Err(DecodeError::Empty));
        assert!(matches!(
            decode(b"{not json", "p", 0),
            Err(DecodeError::NotJson(_))
        ));
        let mixed = decode(
            br#"[{"EventReason":"A","EventTime":"bad time"},{"EventReason":"B"}]"#,
            "p",
            5,
        )
        .unwrap();
        assert!(mixed[0].is_err() && mixed[1].is_ok());
        assert_eq!(mixed[1].as_ref().unwrap().last_ms, 5);
    }
}
