//! The command line: `manifestr render` and `manifestr values`.

use std::io::Write as _;
use std::path::{Component, Path, PathBuf};

use clap::{Args, Parser, Subcommand};

use crate::chart::Chart;
use crate::error::{Error, Result};
use crate::render::{render_chart, Rendered};
use crate::values::{layered, Overrides};

const ABOUT: &str = "Render Jinja2-templated Kubernetes manifests with layered values";

const LONG_ABOUT: &str = "\
Render Jinja2-templated Kubernetes manifests with layered values.

A chart is a folder with `values.yaml` (the documented defaults) and
`templates/`. Every `*.yaml`, `*.yml` and `*.j2` file under `templates/` is
rendered; files whose name starts with `_` are partials and macros, only
included (`{% include \"_x.j2\" %}`) or imported (`{% import \"_x.j2\" as x %}`).
A PATH may also be a single template file, or a chart packaged as `.tar.gz`
(`tar -czf servers.tar.gz -C manifests servers`).";

const AFTER_LONG_HELP: &str = "\
EXAMPLE:
  manifestr values manifests/servers -f manifests/servers/examples/production.yaml
  manifestr render manifests/agents -f my-values.yaml --set cluster=prod-eu-1 \\
    | kubectl apply -f -
  manifestr lint servers.tar.gz -f my-values.yaml

VALUES (layered like Helm, each layer deep-merged over the one before):
  1. the chart's values.yaml
  2. each -f FILE, in order
  3. each --set key.path=value, in order. `true`, `false`, numbers and `null`
     are typed as YAML types them; anything else is a string. Write `\\.` for a
     dot inside a key: --set 'podAnnotations.prometheus\\.io/scrape=true'
  Templates see them as `values`, and the chart as `chart.name`, `chart.path`.

TEMPLATES (Jinja2, as implemented by minijinja):
  Undefined variables are errors, which name the template, line and key.
  Python's string, list and dict methods work (`url.startswith(\"https\")`).
  Filters:  required(msg)  fails with msg if the value is missing, null or ''
            default(x)     x if the value is undefined (Jinja's own)
            to_yaml        block YAML, no trailing newline
            to_json(n?)    JSON, compact or indented by n
            indent(n)      Jinja's indent: every line but the first
            nindent(n)     a newline, then every non-blank line indented by n;
                           trailing newlines dropped, empty text gives nothing
            b64encode, b64decode, quote (a YAML/JSON double-quoted string),
            sha256 (hex digest of the text)
  Functions: file(path)    a file's text, unchanged (e.g. a Grafana dashboard:
                           its own {{...}} syntax is not evaluated)
             files(dir)    [{name, path, content}] of a folder's files, sorted
             render(name)  another template's output with the same values:
                           render(\"configmap.yaml\") | sha256 for a checksum
                           annotation that rolls pods when the ConfigMap changes
             fail(msg)     stop with msg
  file() and files() read paths relative to --root (default: the chart
  folder, so a chart renders the same from any directory), and refuse
  absolute paths and `..`.

OUTPUT:
  Multi-document YAML on stdout, each document headed by `# Source:
  <template>`, or with -o DIR one file per template at DIR/<chart>/templates/.
  Every document must parse as YAML and have apiVersion, kind and
  metadata.name, or nothing is printed. `lint` renders the same way, also
  refuses two objects of one kind, namespace and name, and prints a summary.

EXIT CODES:
  0  rendered and checked
  1  render or validation error: a template, a values file or a rendered
     document is wrong (the message names it)
  2  usage error: bad flag or arguments, bad --set, a PATH or -f file that
     does not exist";

/// Top-level command line.
#[derive(Debug, Parser)]
#[command(name = "manifestr", version, about = ABOUT, long_about = LONG_ABOUT, after_long_help = AFTER_LONG_HELP)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Render templates to multi-document YAML (stdout, or one file per template with -o)
    #[command(after_long_help = AFTER_LONG_HELP)]
    Render(RenderArgs),
    /// Print the merged values a chart will be rendered with
    #[command(after_long_help = AFTER_LONG_HELP)]
    Values(ValuesArgs),
    /// Render and validate (document shape, required keys, duplicate names); print a summary
    #[command(after_long_help = AFTER_LONG_HELP)]
    Lint(LintArgs),
}

#[derive(Debug, Args)]
pub struct ValueArgs {
    /// Values file deep-merged over the chart's values.yaml (repeatable, in order)
    #[arg(short = 'f', long = "values", value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// Set one value, after the files (repeatable): --set a.b=1
    #[arg(long = "set", value_name = "KEY.PATH=VALUE")]
    pub sets: Vec<String>,
}

/// What `render` and `lint` render: the charts, their values, the file root.
#[derive(Debug, Args)]
pub struct ChartArgs {
    /// Chart folders (values.yaml + templates/), packaged charts (.tar.gz) or template files
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
    #[command(flatten)]
    pub values: ValueArgs,
    /// Folder that file() and files() read from (default: each chart's folder)
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct RenderArgs {
    #[command(flatten)]
    pub chart: ChartArgs,
    /// Write one file per template under DIR instead of printing to stdout
    #[arg(short = 'o', long = "output-dir", value_name = "DIR")]
    pub output_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct LintArgs {
    #[command(flatten)]
    pub chart: ChartArgs,
}

#[derive(Debug, Args)]
pub struct ValuesArgs {
    /// Chart folder (or template file) whose values.yaml is the first layer
    #[arg(value_name = "PATH")]
    pub path: PathBuf,
    #[command(flatten)]
    pub values: ValueArgs,
}

impl ValueArgs {
    fn overrides(&self) -> Overrides {
        Overrides {
            files: self.files.clone(),
            sets: self.sets.clone(),
        }
    }
}

/// Runs a parsed command line.
pub fn run(cli: &Cli) -> Result<()> {
    match &cli.command {
        Command::Render(args) => render(args),
        Command::Values(args) => values(args),
        Command::Lint(args) => lint(args),
    }
}

/// Renders every path; `file()` reads from `root`, or from each chart's folder.
fn render_all(args: &ChartArgs) -> Result<Vec<Rendered>> {
    let overrides = args.values.overrides();
    let mut rendered = Vec::new();
    for path in &args.paths {
        let chart = Chart::open(path)?;
        let values = layered(chart.values_file.as_deref(), &overrides)?;
        let root = args.root.as_deref().unwrap_or(&chart.root);
        rendered.extend(render_chart(&chart, &values, root)?);
    }
    Ok(rendered)
}

fn render(args: &RenderArgs) -> Result<()> {
    let rendered = render_all(&args.chart)?;
    match &args.output_dir {
        None => write_stdout(&stream(&rendered)),
        Some(dir) => write_dir(dir, &rendered),
    }
}

fn lint(args: &LintArgs) -> Result<()> {
    let rendered = render_all(&args.chart)?;
    let kinds = crate::lint::check_unique(&rendered)?;
    let objects: usize = kinds.values().sum();
    let templates = rendered.iter().filter(|r| !r.documents.is_empty()).count();
    let kinds: Vec<String> = kinds.iter().map(|(k, n)| format!("{n} {k}")).collect();
    write_stdout(&format!(
        "ok: {objects} objects from {templates} templates ({})\n",
        kinds.join(", ")
    ))
}

fn values(args: &ValuesArgs) -> Result<()> {
    let chart = Chart::open(&args.path)?;
    let values = layered(chart.values_file.as_deref(), &args.values.overrides())?;
    let text = serde_norway::to_string(&values).map_err(Error::Serialize)?;
    write_stdout(&text)
}

/// The multi-document text of some rendered templates.
pub fn stream(rendered: &[Rendered]) -> String {
    let mut out = String::new();
    for r in rendered {
        for doc in &r.documents {
            out.push_str("---\n# Source: ");
            out.push_str(&r.template);
            out.push('\n');
            out.push_str(doc);
            out.push('\n');
        }
    }
    out
}

fn write_stdout(text: &str) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(|source| Error::Write {
            path: PathBuf::from("<stdout>"),
            source,
        })
}

fn write_dir(dir: &Path, rendered: &[Rendered]) -> Result<()> {
    for r in rendered.iter().filter(|r| !r.documents.is_empty()) {
        let rel: PathBuf = Path::new(&r.template)
            .components()
            .filter(|c| matches!(c, Component::Normal(_)))
            .collect();
        let path = dir.join(rel);
        let write_err = |source| Error::Write {
            path: path.clone(),
            source,
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(write_err)?;
        }
        std::fs::write(&path, stream(std::slice::from_ref(r))).map_err(write_err)?;
    }
    Ok(())
}

/// An error and its causes, as printed on stderr.
pub fn report(err: &Error) -> String {
    let mut out = format!("error: {err}");
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        out.push_str(&format!("\n  caused by: {cause}"));
        source = cause.source();
    }
    out
}
