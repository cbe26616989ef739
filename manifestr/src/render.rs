//! Rendering a chart's templates and checking every document they produce.

use std::path::{Component, Path, PathBuf};

use minijinja::syntax::SyntaxConfig;
use minijinja::value::Serde;
use minijinja::{AutoEscape, Environment, UndefinedBehavior};
use serde_norway::Value;

use crate::chart::Chart;
use crate::error::{Error, Result};

/// One rendered template: its name and the Kubernetes documents it produced.
#[derive(Debug, Clone)]
pub struct Rendered {
    /// Name shown to people, e.g. `agents/templates/fluent-bit.yaml`.
    pub template: String,
    /// Documents in order; templates that render nothing have none.
    pub documents: Vec<String>,
}

/// Renders every template of `chart` with `values`; `root` is where `file()` reads.
pub fn render_chart(chart: &Chart, values: &Value, root: &Path) -> Result<Vec<Rendered>> {
    let env = environment(chart, values, root)?;
    chart
        .templates
        .iter()
        .map(|name| {
            let template = env
                .get_template(name)
                .map_err(|e| template_error(chart, e))?;
            let text = template
                .render(minijinja::context! {})
                .map_err(|e| template_error(chart, e))?;
            let shown = chart.display(name);
            let documents = split_and_check(&shown, &text)?;
            Ok(Rendered {
                template: shown,
                documents,
            })
        })
        .collect()
}

fn environment(chart: &Chart, values: &Value, root: &Path) -> Result<Environment<'static>> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_debug(true);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    // Python's str/dict/list methods (`url.startswith(...)`, `d.items()`), as in Jinja2.
    env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
    let syntax = SyntaxConfig::builder()
        .trim_blocks(true)
        .lstrip_blocks(true)
        .keep_trailing_newline(true)
        .build()
        .map_err(|e| Error::TemplateNoLine {
            template: chart.display(""),
            message: e.to_string(),
        })?;
    env.set_syntax(syntax);
    let dirs = [chart.template_dir.clone(), chart.root.clone()];
    env.set_loader(move |name| load(&dirs, name));
    env.add_global("values", minijinja::Value::from(Serde(values.clone())));
    let chart_name = chart
        .display_prefix
        .trim_end_matches("templates/")
        .trim_end_matches('/');
    env.add_global(
        "chart",
        minijinja::context! { name => chart_name, path => chart.root.to_string_lossy() },
    );
    crate::functions::register(&mut env, root.to_path_buf());
    Ok(env)
}

/// Loads an included or imported template from `templates/`, then from the chart folder.
fn load(dirs: &[PathBuf], name: &str) -> std::result::Result<Option<String>, minijinja::Error> {
    let rel = Path::new(name);
    if rel
        .components()
        .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Ok(None);
    }
    for dir in dirs {
        let path = dir.join(rel);
        if path.is_file() {
            return std::fs::read_to_string(&path).map(Some).map_err(|e| {
                minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    format!("cannot read template `{}`", path.display()),
                )
                .with_source(e)
            });
        }
    }
    Ok(None)
}

/// Turns a minijinja error into one that names the template, the line and
/// shows the source around it.
fn template_error(chart: &Chart, err: minijinja::Error) -> Error {
    let mut message = match err.detail() {
        Some(detail) => format!("{}: {detail}", err.kind()),
        None => err.kind().to_string(),
    };
    let mut source = std::error::Error::source(&err);
    while let Some(cause) = source {
        message.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    let template = err
        .name()
        .map_or_else(|| chart.display(""), |n| chart.display(n));
    match (err.line(), err.template_source()) {
        (Some(line), Some(src)) if line > 0 => Error::Template {
            template,
            line,
            message,
            excerpt: excerpt(src, line, err.range()),
        },
        _ => Error::TemplateNoLine { template, message },
    }
}

/// Up to two lines either side of `line` (1-based), numbered, with carets
/// under the faulty span when it starts on that line.
pub fn excerpt(source: &str, line: usize, range: Option<std::ops::Range<usize>>) -> String {
    let lines: Vec<&str> = source.split('\n').collect();
    let first = line.saturating_sub(3);
    let last = (line + 2).min(lines.len());
    let width = last.to_string().len();
    let line_start: usize = lines.iter().take(line - 1).map(|l| l.len() + 1).sum();
    let mut out = String::new();
    for (idx, text) in lines.iter().enumerate().take(last).skip(first) {
        let number = idx + 1;
        let marker = if number == line { '>' } else { ' ' };
        out.push_str(format!("{marker} {number:>width$} | {text}").trim_end());
        out.push('\n');
        if number != line {
            continue;
        }
        if let Some(r) = range
            .as_ref()
            .filter(|r| r.start >= line_start && r.start <= line_start + text.len())
        {
            let col = text[..r.start - line_start].chars().count();
            let len = text[r.start - line_start..]
                .chars()
                .count()
                .min(r.end.saturating_sub(r.start))
                .max(1);
            out.push_str(&format!(
                "  {:width$} | {}{}\n",
                "",
                " ".repeat(col),
                "^".repeat(len)
            ));
        }
    }
    out.trim_end_matches('\n').to_string()
}

/// Splits rendered text at `---` lines, drops empty documents, and checks
/// that each is YAML with `apiVersion`, `kind` and `metadata.name`.
pub fn split_and_check(template: &str, text: &str) -> Result<Vec<String>> {
    let mut documents = Vec::new();
    let mut index = 0;
    for (start_line, chunk) in split_documents(text) {
        let value: Value = match serde_norway::from_str(&chunk) {
            Ok(v) => v,
            Err(e) => {
                index += 1;
                let at = e
                    .location()
                    .map_or(start_line, |l| start_line + l.line() - 1);
                return Err(Error::DocumentSyntax {
                    template: template.into(),
                    index,
                    line: at,
                    message: e.to_string(),
                });
            }
        };
        if value.is_null() {
            continue;
        }
        index += 1;
        if let Some(problem) = check_object(&value) {
            return Err(Error::DocumentInvalid {
                template: template.into(),
                index,
                line: start_line,
                problem,
            });
        }
        documents.push(trim_blank_lines(&chunk));
    }
    Ok(documents)
}

/// `(first line number, text)` of each `---`-separated chunk.
fn split_documents(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut start = 1;
    for (idx, line) in text.split('\n').enumerate() {
        let is_separator = line == "---"
            || line.strip_prefix("--- ").is_some_and(|rest| {
                let rest = rest.trim_start();
                rest.is_empty() || rest.starts_with('#')
            });
        if is_separator {
            out.push((start, std::mem::take(&mut current)));
            start = idx + 2;
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    out.push((start, current));
    out
}

fn trim_blank_lines(chunk: &str) -> String {
    let lines: Vec<&str> = chunk.lines().collect();
    let first = lines.iter().position(|l| !l.trim().is_empty()).unwrap_or(0);
    let last = lines
        .iter()
        .rposition(|l| !l.trim().is_empty())
        .map_or(0, |i| i + 1);
    lines[first..last.max(first)].join("\n")
}

fn check_object(value: &Value) -> Option<String> {
    let Value::Mapping(map) = value else {
        return Some(format!(
            "a Kubernetes object must be a mapping, found {}",
            crate::values::type_name(value)
        ));
    };
    let text_field = |v: Option<&Value>| {
        v.and_then(Value::as_str)
            .filter(|s| !s.trim().is_empty())
            .is_some()
    };
    if !text_field(map.get("apiVersion")) {
        return Some("missing `apiVersion` (a non-empty string)".into());
    }
    if !text_field(map.get("kind")) {
        return Some("missing `kind` (a non-empty string)".into());
    }
    if !text_field(map.get("metadata").and_then(|m| m.get("name"))) {
        return Some("missing `metadata.name` (a non-empty string)".into());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_at_separator_lines_only() {
        let text = "---\na: 1\n--- # two\nb: |\n  ---\n  x\n---\n# only a comment\n";
        let chunks = split_documents(text);
        let starts: Vec<usize> = chunks.iter().map(|(l, _)| *l).collect();
        assert_eq!(starts, vec![1, 2, 4, 8]);
        assert_eq!(chunks[2].1, "b: |\n  ---\n  x\n");
    }

    #[test]
    fn checks_required_fields_and_skips_empty_documents() {
        let ok = "---\n# c\n---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\n";
        assert_eq!(split_and_check("t", ok).expect("valid").len(), 1);
        let missing = "apiVersion: v1\nkind: ConfigMap\nmetadata: {}\n";
        let err = split_and_check("t", missing).expect_err("no name");
        assert!(err.to_string().contains("metadata.name"), "{err}");
        let list = "- a\n";
        assert!(split_and_check("t", list)
            .expect_err("not a map")
            .to_string()
            .contains("mapping"));
    }

    #[test]
    fn excerpt_marks_the_span() {
        let src = "a\nb\nname: {{ x }}\nd\ne\nf";
        let start = src.find("x }}").expect("x");
        let out = excerpt(src, 3, Some(start..start + 1));
        assert_eq!(
            out,
            "  1 | a\n  2 | b\n> 3 | name: {{ x }}\n    |          ^\n  4 | d\n  5 | e"
        );
    }
}
