//! `manifestr lint`: the checks every rendering gets (each document parses,
//! is a mapping with `apiVersion`, `kind` and `metadata.name`: see
//! [`render::split_and_check`](crate::render::split_and_check)), plus one
//! across documents: no two objects share a kind, namespace and name.

use std::collections::BTreeMap;

use serde_norway::Value;

use crate::error::{Error, Result};
use crate::render::Rendered;

/// What identifies an object to the API server: group, kind, namespace, name.
fn identity(doc: &Value) -> (String, String, String, String) {
    let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
    let api_version = text(&doc["apiVersion"]);
    let group = api_version
        .rsplit_once('/')
        .map_or(String::new(), |(g, _)| g.to_string());
    (
        group,
        text(&doc["kind"]),
        text(&doc["metadata"]["namespace"]),
        text(&doc["metadata"]["name"]),
    )
}

/// Checks that no object is rendered twice; returns how many objects of
/// each kind there are.
pub fn check_unique(rendered: &[Rendered]) -> Result<BTreeMap<String, usize>> {
    let mut seen: BTreeMap<(String, String, String, String), String> = BTreeMap::new();
    let mut kinds = BTreeMap::<String, usize>::new();
    for r in rendered {
        for doc in &r.documents {
            // Every document already parsed in split_and_check.
            let Ok(value) = serde_norway::from_str::<Value>(doc) else {
                continue;
            };
            let id = identity(&value);
            *kinds.entry(id.1.clone()).or_default() += 1;
            if let Some(first) = seen.get(&id) {
                let (_, kind, namespace, name) = id;
                return Err(Error::Duplicate {
                    kind,
                    name: if namespace.is_empty() {
                        name
                    } else {
                        format!("{namespace}/{name}")
                    },
                    first: first.clone(),
                    second: r.template.clone(),
                });
            }
            seen.insert(id, r.template.clone());
        }
    }
    Ok(kinds)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered(template: &str, docs: &[&str]) -> Rendered {
        Rendered {
            template: template.into(),
            documents: docs.iter().map(|d| d.to_string()).collect(),
        }
    }

    #[test]
    fn the_same_name_is_allowed_across_kinds_and_namespaces_only() {
        let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, namespace: a}";
        let cm_b = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, namespace: b}";
        let svc = "apiVersion: v1\nkind: Service\nmetadata: {name: x, namespace: a}";
        let ok = [rendered("one", &[cm, cm_b, svc])];
        let kinds = check_unique(&ok).expect("unique");
        assert_eq!(kinds.values().sum::<usize>(), 3);
        let dup = [rendered("one", &[cm]), rendered("two", &[cm])];
        let err = check_unique(&dup).expect_err("duplicate").to_string();
        assert_eq!(
            err,
            "ConfigMap `a/x` is rendered twice: by `one` and by `two` (names must be unique per kind and namespace)"
        );
    }
}
