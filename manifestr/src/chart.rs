//! A chart: a folder with `values.yaml` (the defaults) and `templates/`.
//!
//! Every `*.yaml`, `*.yml` and `*.j2` file under `templates/` is rendered,
//! except those whose name starts with `_` (partials and macros, only
//! included or imported) and hidden ones. A single template file is a chart
//! of one template whose defaults are the `values.yaml` beside it, or beside
//! its `templates/` folder.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// A chart found on disk.
#[derive(Debug, Clone)]
pub struct Chart {
    /// The chart folder: where `values.yaml` lives.
    pub root: PathBuf,
    /// Where template names are resolved (`templates/`, or the file's folder).
    pub template_dir: PathBuf,
    /// The chart's default values file, if it has one.
    pub values_file: Option<PathBuf>,
    /// Templates to render, as names relative to `template_dir`, sorted.
    pub templates: Vec<String>,
    /// Prefix for names shown to people (`agents/templates/`).
    pub display_prefix: String,
    /// The folder a packaged chart (`.tar.gz`) was unpacked into, removed
    /// when the last clone of the chart is dropped.
    pub unpacked: Option<std::sync::Arc<tempfile::TempDir>>,
}

const TEMPLATE_EXTENSIONS: [&str; 3] = ["yaml", "yml", "j2"];

impl Chart {
    /// Finds the chart at `path`: a chart folder, a chart packaged as
    /// `.tar.gz`/`.tgz`, or one template file.
    pub fn open(path: &Path) -> Result<Chart> {
        if !path.exists() {
            return Err(Error::PathNotFound {
                path: path.to_path_buf(),
            });
        }
        if crate::package::is_package(path) {
            let (temp, root) = crate::package::unpack(path)?;
            let mut chart = Self::open_dir(&root)?;
            chart.unpacked = Some(std::sync::Arc::new(temp));
            return Ok(chart);
        }
        if path.is_dir() {
            Self::open_dir(path)
        } else {
            Self::open_file(path)
        }
    }

    fn open_dir(root: &Path) -> Result<Chart> {
        let template_dir = root.join("templates");
        let mut templates = Vec::new();
        if template_dir.is_dir() {
            collect(&template_dir, "", &mut templates)?;
        }
        if templates.is_empty() {
            return Err(Error::NoTemplates {
                chart: root.to_path_buf(),
            });
        }
        templates.sort();
        let name = root
            .canonicalize()
            .ok()
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .unwrap_or_else(|| "chart".into());
        Ok(Chart {
            root: root.to_path_buf(),
            template_dir,
            values_file: existing(root.join("values.yaml")),
            templates,
            display_prefix: format!("{name}/templates/"),
            unpacked: None,
        })
    }

    fn open_file(file: &Path) -> Result<Chart> {
        let template_dir = match file.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let root = if template_dir.file_name().is_some_and(|n| n == "templates") {
            template_dir
                .parent()
                .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
        } else {
            template_dir.clone()
        };
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let shown = template_dir.to_string_lossy();
        Ok(Chart {
            values_file: existing(root.join("values.yaml")),
            root,
            display_prefix: if shown == "." {
                String::new()
            } else {
                format!("{shown}/")
            },
            template_dir,
            templates: vec![name],
            unpacked: None,
        })
    }

    /// The name of a template as shown to people.
    pub fn display(&self, name: &str) -> String {
        format!("{}{name}", self.display_prefix)
    }
}

fn existing(path: PathBuf) -> Option<PathBuf> {
    path.is_file().then_some(path)
}

fn collect(dir: &Path, prefix: &str, out: &mut Vec<String>) -> Result<()> {
    let read_err = |source| Error::Read {
        path: dir.to_path_buf(),
        source,
    };
    for entry in std::fs::read_dir(dir).map_err(read_err)? {
        let entry = entry.map_err(read_err)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || name.starts_with('_') {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            collect(&path, &format!("{prefix}{name}/"), out)?;
        } else if path
            .extension()
            .is_some_and(|e| TEMPLATE_EXTENSIONS.iter().any(|x| e == *x))
        {
            out.push(format!("{prefix}{name}"));
        }
    }
    Ok(())
}
