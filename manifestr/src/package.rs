//! Charts packaged as `.tar.gz` (or `.tgz`): unpacked into a temporary folder
//! that lives as long as the [`Chart`](crate::chart::Chart) made from it.
//!
//! Package a chart with `tar -czf servers.tar.gz -C manifests servers`: the
//! archive holds one top folder (the chart), or the chart's files at its root.
//! Only regular files and folders are unpacked, never outside the folder
//! (`..` and absolute paths are refused), and the unpacked size is bounded.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Largest unpacked chart: dashboards and templates are text, far below this.
pub const MAX_UNPACKED_BYTES: u64 = 64 * 1024 * 1024;
/// Most entries an archive may hold.
pub const MAX_ENTRIES: usize = 10_000;

/// Whether `path` names a packaged chart.
pub fn is_package(path: &Path) -> bool {
    let name = path.to_string_lossy();
    path.is_file() && (name.ends_with(".tar.gz") || name.ends_with(".tgz"))
}

/// The chart name of a package: `servers.tar.gz` → `servers`.
fn stem(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let name = name
        .strip_suffix(".tar.gz")
        .or_else(|| name.strip_suffix(".tgz"))
        .unwrap_or(&name);
    if name.is_empty() {
        "chart".into()
    } else {
        name.to_string()
    }
}

/// Unpacks `archive`; returns the temporary folder and the chart folder in it.
pub fn unpack(archive: &Path) -> Result<(tempfile::TempDir, PathBuf)> {
    let bad = |message: String| Error::Package {
        path: archive.to_path_buf(),
        message,
    };
    let file = std::fs::File::open(archive).map_err(|source| Error::Read {
        path: archive.to_path_buf(),
        source,
    })?;
    let temp = tempfile::Builder::new()
        .prefix("manifestr-")
        .tempdir()
        .map_err(|source| Error::Write {
            path: std::env::temp_dir(),
            source,
        })?;
    // Unpacked under a folder named like the archive, so a chart packed
    // without a top folder still has its name.
    let into = temp.path().join(stem(archive));
    std::fs::create_dir(&into).map_err(|source| Error::Write {
        path: into.clone(),
        source,
    })?;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(file));
    let mut total: u64 = 0;
    let entries = tar
        .entries()
        .map_err(|e| bad(format!("not a gzip-compressed tar archive: {e}")))?;
    for (n, entry) in entries.enumerate() {
        if n >= MAX_ENTRIES {
            return Err(bad(format!("more than {MAX_ENTRIES} entries")));
        }
        let mut entry =
            entry.map_err(|e| bad(format!("not a gzip-compressed tar archive: {e}")))?;
        let name = entry.path().map_or_else(
            |_| "<non-UTF-8 name>".to_string(),
            |p| p.display().to_string(),
        );
        let kind = entry.header().entry_type();
        if !(kind.is_file() || kind.is_dir()) {
            if kind.is_pax_global_extensions() || kind.is_pax_local_extensions() {
                continue;
            }
            return Err(bad(format!(
                "entry `{name}` is not a regular file or folder (links are refused)"
            )));
        }
        total = total.saturating_add(entry.header().size().unwrap_or(u64::MAX));
        if total > MAX_UNPACKED_BYTES {
            return Err(bad(format!(
                "unpacks to more than {MAX_UNPACKED_BYTES} bytes"
            )));
        }
        let inside = entry
            .unpack_in(&into)
            .map_err(|e| bad(format!("cannot unpack `{name}`: {e}")))?;
        if !inside {
            return Err(bad(format!(
                "entry `{name}` would be written outside the chart folder"
            )));
        }
    }
    let root = chart_root(&into);
    Ok((temp, root))
}

/// The unpacked folder itself when it holds `templates/`, else its single
/// sub-folder (the usual `tar -C manifests servers` layout).
fn chart_root(into: &Path) -> PathBuf {
    if into.join("templates").is_dir() {
        return into.to_path_buf();
    }
    let dirs: Vec<PathBuf> = std::fs::read_dir(into)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    match dirs.as_slice() {
        [only] => only.clone(),
        _ => into.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_come_from_the_archive() {
        assert_eq!(stem(Path::new("a/servers.tar.gz")), "servers");
        assert_eq!(stem(Path::new("agents.tgz")), "agents");
    }
}
