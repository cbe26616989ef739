//! Values: the chart's `values.yaml`, then each `-f` file deep-merged in
//! order, then each `--set key.path=value`.

use std::path::Path;

use serde_norway::{Mapping, Value};

use crate::error::{Error, Result};

/// The values layers given on the command line, applied after the chart's defaults.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `-f FILE`, merged in order.
    pub files: Vec<std::path::PathBuf>,
    /// `--set key.path=value`, applied in order after the files.
    pub sets: Vec<String>,
}

/// Merges the chart defaults (if the chart has a `values.yaml`) with the overrides.
pub fn layered(chart_values: Option<&Path>, overrides: &Overrides) -> Result<Value> {
    let mut values = Value::Mapping(Mapping::new());
    if let Some(path) = chart_values {
        merge(&mut values, load_file(path)?);
    }
    for path in &overrides.files {
        if !path.exists() {
            return Err(Error::PathNotFound { path: path.clone() });
        }
        merge(&mut values, load_file(path)?);
    }
    for arg in &overrides.sets {
        apply_set(&mut values, arg)?;
    }
    Ok(values)
}

/// Reads one values file. An empty file is an empty mapping.
pub fn load_file(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let value: Value = serde_norway::from_str(&text).map_err(|source| Error::ValuesSyntax {
        path: path.to_path_buf(),
        source,
    })?;
    match value {
        Value::Null => Ok(Value::Mapping(Mapping::new())),
        Value::Mapping(_) => Ok(value),
        other => Err(Error::ValuesNotMapping {
            path: path.to_path_buf(),
            found: type_name(&other),
        }),
    }
}

/// Deep-merges `overlay` into `base`: mappings merge key by key, anything
/// else (scalars, sequences, null) replaces what was there.
pub fn merge(base: &mut Value, overlay: Value) {
    match (base, overlay) {
        (Value::Mapping(base), Value::Mapping(overlay)) => {
            for (key, value) in overlay {
                match base.get_mut(&key) {
                    Some(existing) => merge(existing, value),
                    None => {
                        base.insert(key, value);
                    }
                }
            }
        }
        (base, overlay) => *base = overlay,
    }
}

/// Applies one `key.path=value`. `\.` escapes a dot inside a key.
pub fn apply_set(values: &mut Value, arg: &str) -> Result<()> {
    let Some((path, raw)) = arg.split_once('=') else {
        return Err(Error::SetSyntax { arg: arg.into() });
    };
    let keys = split_path(path).ok_or_else(|| Error::SetSyntax { arg: arg.into() })?;
    let typed = typed_scalar(raw);
    let mut node = values;
    for (depth, key) in keys.iter().enumerate() {
        let is_last = depth + 1 == keys.len();
        let Value::Mapping(map) = node else {
            return Err(Error::SetThroughScalar {
                arg: arg.into(),
                prefix: keys[..depth].join("."),
                key: key.clone(),
                found: type_name(node),
            });
        };
        let key = Value::String(key.clone());
        if is_last {
            map.insert(key, typed);
            return Ok(());
        }
        node = map
            .entry(key)
            .or_insert_with(|| Value::Mapping(Mapping::new()));
    }
    Ok(())
}

/// Splits `a.b\.c.d` into `["a", "b.c", "d"]`; `None` for an empty key.
fn split_path(path: &str) -> Option<Vec<String>> {
    let mut keys = Vec::new();
    let mut current = String::new();
    let mut chars = path.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.peek() == Some(&'.') => {
                current.push('.');
                chars.next();
            }
            '.' => keys.push(std::mem::take(&mut current)),
            c => current.push(c),
        }
    }
    keys.push(current);
    if keys.iter().any(|k| k.trim().is_empty()) {
        return None;
    }
    Some(keys)
}

/// Types a `--set` value as YAML would: `true`, `false`, numbers and `null`
/// (`~`, empty is an empty string) are typed; everything else is a string.
fn typed_scalar(raw: &str) -> Value {
    if raw.is_empty() {
        return Value::String(String::new());
    }
    match serde_norway::from_str::<Value>(raw) {
        Ok(v @ (Value::Null | Value::Bool(_) | Value::Number(_))) => v,
        _ => Value::String(raw.to_string()),
    }
}

/// A short name of a YAML value's type, for error messages.
pub fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a sequence",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(s: &str) -> Value {
        serde_norway::from_str(s).expect("test yaml")
    }

    #[test]
    fn merge_is_deep_and_replaces_non_mappings() {
        let mut base = yaml("a: {b: 1, c: [1, 2]}\nd: x\n");
        merge(&mut base, yaml("a: {c: [3], e: true}\nd: null\n"));
        assert_eq!(base, yaml("a: {b: 1, c: [3], e: true}\nd: null\n"));
    }

    #[test]
    fn set_types_scalars_like_yaml() {
        let mut v = yaml("{}");
        for arg in [
            "a.t=true",
            "a.f=false",
            "a.i=42",
            "a.x=1.5",
            "a.n=null",
            "a.s=hello",
            "a.e=",
            "a.v=1.2.3",
            "a.m=k: v",
        ] {
            apply_set(&mut v, arg).expect("valid set");
        }
        assert_eq!(
            v,
            yaml("a: {t: true, f: false, i: 42, x: 1.5, n: null, s: hello, e: '', v: '1.2.3', m: 'k: v'}")
        );
    }

    #[test]
    fn set_escapes_dots_in_keys() {
        let mut v = yaml("{}");
        apply_set(&mut v, r"ann.prometheus\.io/scrape=true").expect("valid set");
        assert_eq!(v, yaml("ann: {'prometheus.io/scrape': true}"));
    }

    #[test]
    fn set_rejects_bad_syntax_and_scalars_in_the_way() {
        let mut v = yaml("a: 1");
        assert!(matches!(
            apply_set(&mut v, "novalue"),
            Err(Error::SetSyntax { .. })
        ));
        assert!(matches!(
            apply_set(&mut v, "a..b=1"),
            Err(Error::SetSyntax { .. })
        ));
        match apply_set(&mut v, "a.b=1") {
            Err(Error::SetThroughScalar { prefix, key, .. }) => {
                assert_eq!((prefix.as_str(), key.as_str()), ("a", "b"));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}
