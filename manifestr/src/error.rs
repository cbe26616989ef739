//! The one error type of manifestr, and the exit code each error maps to.

use std::path::PathBuf;

/// Result alias used across the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Exit code: everything rendered and validated.
pub const EXIT_OK: u8 = 0;
/// Exit code: a template, a values file or a rendered document is wrong.
pub const EXIT_RENDER: u8 = 1;
/// Exit code: the command line is wrong (bad flag, bad `--set`, missing path).
pub const EXIT_USAGE: u8 = 2;

/// Everything that can go wrong while loading values, rendering or writing.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("path `{}` does not exist", path.display())]
    PathNotFound { path: PathBuf },

    #[error("`{}` has no templates (expected `*.yaml`, `*.yml` or `*.j2` files in `{}`)", chart.display(), chart.join("templates").display())]
    NoTemplates { chart: PathBuf },

    #[error("cannot read `{}`", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot write `{}`", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("values file `{}` is not valid YAML", path.display())]
    ValuesSyntax {
        path: PathBuf,
        #[source]
        source: serde_norway::Error,
    },

    #[error("values file `{}` must contain a mapping at the top level, found {found}", path.display())]
    ValuesNotMapping { path: PathBuf, found: &'static str },

    #[error("invalid `--set {arg}`: expected `key.path=value`")]
    SetSyntax { arg: String },

    #[error("invalid `--set {arg}`: `{prefix}` is {found}, not a mapping, so `{key}` cannot be set inside it")]
    SetThroughScalar {
        arg: String,
        prefix: String,
        key: String,
        found: &'static str,
    },

    #[error("template `{template}` line {line}: {message}\n{excerpt}")]
    Template {
        template: String,
        line: usize,
        message: String,
        excerpt: String,
    },

    #[error("template `{template}`: {message}")]
    TemplateNoLine { template: String, message: String },

    #[error("template `{template}` document {index} (line {line}) is not valid YAML: {message}")]
    DocumentSyntax {
        template: String,
        index: usize,
        line: usize,
        message: String,
    },

    #[error("template `{template}` document {index} (line {line}): {problem}")]
    DocumentInvalid {
        template: String,
        index: usize,
        line: usize,
        problem: String,
    },

    #[error("chart package `{}`: {message}", path.display())]
    Package { path: PathBuf, message: String },

    #[error("{kind} `{name}` is rendered twice: by `{first}` and by `{second}` (names must be unique per kind and namespace)")]
    Duplicate {
        kind: String,
        name: String,
        first: String,
        second: String,
    },

    #[error("cannot serialize values")]
    Serialize(#[source] serde_norway::Error),
}

impl Error {
    /// The process exit code for this error (see `manifestr --help`).
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::PathNotFound { .. }
            | Error::SetSyntax { .. }
            | Error::SetThroughScalar { .. } => EXIT_USAGE,
            _ => EXIT_RENDER,
        }
    }
}
