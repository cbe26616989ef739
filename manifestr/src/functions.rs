//! Filters and functions that manifestr adds to the template language.
//!
//! Filters: `required(msg)`, `to_yaml`, `to_json(indent=None)`, `nindent(width)`,
//! `b64encode`, `b64decode`, `quote`, `sha256` (`default` and `indent` are
//! Jinja's own). Functions: `file(path)`, `files(dir)`, `render(template)`,
//! `fail(msg)`.

use std::cell::Cell;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use base64::Engine as _;
use minijinja::value::{Serde, Value};
use minijinja::{Environment, ErrorKind, State};
use sha2::Digest as _;

type FnResult = Result<Value, minijinja::Error>;

/// How deep `render()` may nest before it is taken to be a loop.
const MAX_RENDER_DEPTH: usize = 16;

thread_local! {
    static RENDER_DEPTH: Cell<usize> = const { Cell::new(0) };
}

/// Registers every filter and function. `root` is the folder `file()` and
/// `files()` read from.
pub fn register(env: &mut Environment<'static>, root: PathBuf) {
    env.add_filter("required", required);
    env.add_filter("to_yaml", to_yaml);
    env.add_filter("to_json", to_json);
    env.add_filter("nindent", nindent);
    env.add_filter("b64encode", b64encode);
    env.add_filter("b64decode", b64decode);
    env.add_filter("quote", quote);
    env.add_filter("sha256", sha256);
    env.add_function("fail", fail);
    env.add_function("render", render);
    let root = Arc::new(root);
    let file_root = Arc::clone(&root);
    env.add_function("file", move |path: &str| file(&file_root, path));
    env.add_function("files", move |dir: &str| files(&root, dir));
}

fn invalid(msg: impl Into<String>) -> minijinja::Error {
    minijinja::Error::new(ErrorKind::InvalidOperation, msg.into())
}

/// The string form of a value; undefined is an error, so a typo never
/// becomes an empty string.
fn text(filter: &str, value: &Value) -> Result<String, minijinja::Error> {
    if value.is_undefined() {
        return Err(minijinja::Error::new(
            ErrorKind::UndefinedError,
            format!("`{filter}` was given an undefined value"),
        ));
    }
    Ok(match value.as_str() {
        Some(s) => s.to_string(),
        None => value.to_string(),
    })
}

/// `value | required("message")`: fails with the message when the value is
/// undefined, none or an empty string.
fn required(value: Value, message: Option<&str>) -> FnResult {
    let missing = value.is_undefined() || value.is_none() || value.as_str() == Some("");
    if missing {
        return Err(invalid(message.unwrap_or("a required value is missing")));
    }
    Ok(value)
}

/// `value | to_yaml`: block YAML without a trailing newline; combine with `nindent`.
fn to_yaml(value: Value) -> FnResult {
    if value.is_undefined() {
        return Err(invalid("`to_yaml` was given an undefined value"));
    }
    let yaml = serde_norway::to_string(&value)
        .map_err(|e| invalid(format!("`to_yaml` cannot serialize the value: {e}")))?;
    Ok(Value::from(yaml.trim_end_matches('\n').to_string()))
}

/// `value | to_json` or `value | to_json(2)`: JSON, compact or indented.
fn to_json(value: Value, indent: Option<usize>) -> FnResult {
    if value.is_undefined() {
        return Err(invalid("`to_json` was given an undefined value"));
    }
    let json: serde_json::Value = serde_json::to_value(&value)
        .map_err(|e| invalid(format!("`to_json` cannot serialize the value: {e}")))?;
    let out = match indent {
        None => serde_json::to_string(&json),
        Some(width) => {
            let pad = " ".repeat(width);
            let mut buf = Vec::new();
            let formatter = serde_json::ser::PrettyFormatter::with_indent(pad.as_bytes());
            let mut ser = serde_json::Serializer::with_formatter(&mut buf, formatter);
            serde::Serialize::serialize(&json, &mut ser)
                .map(|()| String::from_utf8_lossy(&buf).into_owned())
        }
    }
    .map_err(|e| invalid(format!("`to_json` cannot serialize the value: {e}")))?;
    Ok(Value::from(out))
}

/// `text | nindent(n)`: a newline, then the text without its trailing
/// newlines, every non-blank line indented by `n` spaces. Empty text gives
/// nothing, so an empty optional block leaves no blank line.
fn nindent(value: Value, width: usize) -> FnResult {
    let text = text("nindent", &value)?;
    let text = text.trim_end_matches(['\n', '\r']);
    if text.trim().is_empty() {
        return Ok(Value::from(""));
    }
    let pad = " ".repeat(width);
    let mut out = String::with_capacity(text.len() + 16);
    for line in text.split('\n') {
        out.push('\n');
        if !line.trim().is_empty() {
            out.push_str(&pad);
            out.push_str(line);
        }
    }
    Ok(Value::from(out))
}

fn b64encode(value: Value) -> FnResult {
    let text = text("b64encode", &value)?;
    Ok(Value::from(
        base64::engine::general_purpose::STANDARD.encode(text),
    ))
}

fn b64decode(value: Value) -> FnResult {
    let text = text("b64decode", &value)?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|e| invalid(format!("`b64decode`: not base64: {e}")))?;
    String::from_utf8(bytes)
        .map(Value::from)
        .map_err(|_| invalid("`b64decode`: the decoded bytes are not UTF-8"))
}

/// `value | quote`: a double-quoted string that is valid in YAML and JSON.
fn quote(value: Value) -> FnResult {
    let text = text("quote", &value)?;
    serde_json::to_string(&text)
        .map(Value::from)
        .map_err(|e| invalid(format!("`quote`: {e}")))
}

/// `text | sha256`: the lowercase hex sha256 of the string.
fn sha256(value: Value) -> FnResult {
    let text = text("sha256", &value)?;
    let digest = sha2::Sha256::digest(text.as_bytes());
    Ok(Value::from(
        digest
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>(),
    ))
}

/// `fail("message")`: stops rendering with the message.
fn fail(message: &str) -> FnResult {
    Err(invalid(message.to_string()))
}

/// `render("other.yaml")`: the output of another template, rendered with the
/// same values. `render("configmap.yaml") | sha256` makes a checksum annotation.
fn render(state: &State, name: &str) -> FnResult {
    let depth = RENDER_DEPTH.with(Cell::get);
    if depth >= MAX_RENDER_DEPTH {
        return Err(invalid(format!(
            "`render(\"{name}\")` nests deeper than {MAX_RENDER_DEPTH} levels; templates render each other in a loop"
        )));
    }
    RENDER_DEPTH.with(|d| d.set(depth + 1));
    let result = state
        .env()
        .get_template(name)
        .and_then(|t| t.render(minijinja::context! {}));
    RENDER_DEPTH.with(|d| d.set(depth));
    result.map(Value::from)
}

/// Joins a repository-relative path to the root, refusing absolute paths and `..`.
fn resolve(root: &Path, func: &str, rel: &str) -> Result<PathBuf, minijinja::Error> {
    let path = Path::new(rel);
    let escapes = path
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir));
    if rel.is_empty() || escapes {
        return Err(invalid(format!(
            "`{func}(\"{rel}\")`: the path must be relative to the root and must not contain `..`"
        )));
    }
    Ok(root.join(path))
}

/// `file("grafana/dashboards/x.json")`: a file's content, unchanged.
fn file(root: &Path, rel: &str) -> FnResult {
    let path = resolve(root, "file", rel)?;
    std::fs::read_to_string(&path)
        .map(Value::from)
        .map_err(|e| {
            invalid(format!(
                "`file(\"{rel}\")`: cannot read `{}`: {e}",
                path.display()
            ))
        })
}

#[derive(serde::Serialize)]
struct FileEntry {
    name: String,
    path: String,
    content: String,
}

/// `files("grafana/dashboards")`: the regular files of a folder (not hidden
/// ones, not sub-folders), sorted by name, as `{name, path, content}`.
fn files(root: &Path, rel: &str) -> FnResult {
    let dir = resolve(root, "files", rel)?;
    let read_err = |e: std::io::Error| {
        invalid(format!(
            "`files(\"{rel}\")`: cannot read `{}`: {e}",
            dir.display()
        ))
    };
    let mut entries = Vec::new();
    for entry in std::fs::read_dir(&dir).map_err(read_err)? {
        let entry = entry.map_err(read_err)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !entry.file_type().map_err(read_err)?.is_file() {
            continue;
        }
        let content = std::fs::read_to_string(entry.path()).map_err(read_err)?;
        let path = format!("{}/{name}", rel.trim_end_matches('/'));
        entries.push(FileEntry {
            name,
            path,
            content,
        });
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(Value::from(Serde(entries)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Environment<'static> {
        let mut env = Environment::new();
        env.set_undefined_behavior(minijinja::UndefinedBehavior::Strict);
        register(&mut env, PathBuf::from("."));
        env
    }

    fn eval(src: &str) -> Result<String, minijinja::Error> {
        let env = env();
        env.render_str(src, minijinja::context! { v => Value::from(Serde(serde_json::json!({"a": {"b": [1, "x"]}, "e": "", "n": null}))) })
    }

    #[test]
    fn filters_produce_expected_text() {
        assert_eq!(eval("{{ v.a | to_json }}").expect("ok"), r#"{"b":[1,"x"]}"#);
        assert_eq!(eval("{{ v.a | to_yaml }}").expect("ok"), "b:\n- 1\n- x");
        assert_eq!(
            eval("x:{{ v.a | to_yaml | nindent(2) }}").expect("ok"),
            "x:\n  b:\n  - 1\n  - x"
        );
        assert_eq!(
            eval("{{ 'a\n\nb\n' | nindent(2) }}").expect("ok"),
            "\n  a\n\n  b"
        );
        assert_eq!(eval("[{{ '\n' | nindent(2) }}]").expect("ok"), "[]");
        assert_eq!(eval("{{ 'hi' | b64encode }}").expect("ok"), "aGk=");
        assert_eq!(eval("{{ 'aGk=' | b64decode }}").expect("ok"), "hi");
        assert_eq!(eval("{{ 8080 | quote }}").expect("ok"), "\"8080\"");
        assert_eq!(eval("{{ 'a\"b' | quote }}").expect("ok"), r#""a\"b""#);
        assert_eq!(
            eval("{{ 'abc' | sha256 }}").expect("ok"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn required_rejects_missing_none_and_empty() {
        for expr in ["v.missing", "v.n", "v.e"] {
            let err = eval(&format!("{{{{ {expr} | required('set it') }}}}")).expect_err(expr);
            assert_eq!(err.detail(), Some("set it"), "{expr}");
        }
        assert_eq!(eval("{{ v.a.b[1] | required('x') }}").expect("ok"), "x");
    }

    #[test]
    fn file_paths_cannot_escape_the_root() {
        for path in ["../etc/passwd", "/etc/passwd", ""] {
            let err = eval(&format!("{{{{ file('{path}') }}}}")).expect_err(path);
            assert!(err.to_string().contains("must be relative"), "{err}");
        }
    }
}
