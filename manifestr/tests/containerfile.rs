//! The image, checked without Docker: the `Containerfile` at the repository
//! root copies only what exists (and what `.containerignore` keeps), builds
//! with the exact `cargo build` line `.ci/run` runs natively, is labelled with
//! the workspace version, and the manifests pin the image of that version.

// Tests and benches may unwrap: a panic is a failing run with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

const IMAGE: &str = "ghcr.io/kube-insight/kube-insight";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("manifestr sits in the repository")
        .to_path_buf()
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
}

/// A `key = "value"` of the root Cargo.toml's `[workspace.package]`.
fn workspace_package(key: &str) -> String {
    let toml = read("Cargo.toml");
    let mut in_section = false;
    for line in toml.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_section = line == "[workspace.package]";
            continue;
        }
        if let Some(rest) = line.strip_prefix(key).map(str::trim_start) {
            if in_section && rest.starts_with('=') {
                return rest[1..].trim().trim_matches('"').to_string();
            }
        }
    }
    panic!("Cargo.toml has no [workspace.package] {key}");
}

/// The Containerfile's instructions, continuation lines joined, comments dropped.
fn instructions() -> Vec<String> {
    let text = read("Containerfile");
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head.trim_end());
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                if !current.trim().is_empty() {
                    out.push(std::mem::take(&mut current).trim().to_string());
                }
                current.clear();
            }
        }
    }
    out
}

/// `ARG NAME=default` of the Containerfile (the first one).
fn arg_default(name: &str) -> String {
    instructions()
        .iter()
        .find_map(|i| {
            i.strip_prefix("ARG ")
                .and_then(|a| a.strip_prefix(name))
                .and_then(|a| a.strip_prefix('='))
                .map(str::to_string)
        })
        .unwrap_or_else(|| panic!("Containerfile has no `ARG {name}=default`"))
}

fn ignored() -> Vec<String> {
    read(".containerignore")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

#[test]
fn every_copy_source_exists_and_is_in_the_build_context() {
    let ignore = ignored();
    let mut checked = 0;
    for instruction in instructions() {
        let Some(args) = instruction.strip_prefix("COPY ") else {
            continue;
        };
        let words: Vec<&str> = args.split_whitespace().collect();
        if words.iter().any(|w| w.starts_with("--from=")) {
            continue;
        }
        let paths: Vec<&str> = words
            .iter()
            .copied()
            .filter(|w| !w.starts_with("--"))
            .collect();
        let (dest, sources) = paths.split_last().expect("COPY has a destination");
        assert!(!sources.is_empty(), "COPY without source: {instruction}");
        assert!(!dest.is_empty());
        for source in sources {
            assert!(
                repo().join(source).exists(),
                "Containerfile copies `{source}`, which is not in the repository: {instruction}"
            );
            let top = source.trim_start_matches("./").split('/').next().unwrap();
            assert!(
                !ignore.iter().any(|pattern| pattern == top),
                "`{source}` is excluded by .containerignore"
            );
            checked += 1;
        }
    }
    assert!(checked >= 4, "the build stage copies the workspace");
    for must in [".git", "target"] {
        assert!(
            ignore.iter().any(|p| p == must),
            ".containerignore keeps `{must}` out of the build context"
        );
    }
}

#[test]
fn the_build_stage_runs_the_command_ci_runs_natively() {
    let build: Vec<String> = instructions()
        .iter()
        .filter(|i| i.starts_with("RUN "))
        .flat_map(|i| {
            i.split("&&")
                .filter_map(|part| part.find("cargo build").map(|at| part[at..].trim()))
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect();
    assert_eq!(
        build.len(),
        1,
        "one cargo build in the Containerfile: {build:?}"
    );
    let command = &build[0];
    for flag in ["--release", "--locked", "-p kube-insight", "-p manifestr"] {
        assert!(command.contains(flag), "`{command}` lacks `{flag}`");
    }
    let ci = read(".ci/run");
    assert!(
        ci.lines().any(|l| l.trim() == command),
        ".ci/run does not run the image's build command `{command}` on a line of its own"
    );
}

#[test]
fn toolchain_and_labels_follow_the_workspace() {
    let version = workspace_package("version");
    assert_eq!(
        arg_default("VERSION"),
        version,
        "ARG VERSION follows Cargo.toml"
    );
    let numbers = |v: &str| -> Vec<u32> { v.split('.').map(|n| n.parse().unwrap()).collect() };
    let rust = arg_default("RUST_VERSION");
    assert!(
        numbers(&rust) >= numbers(&workspace_package("rust-version")),
        "the build image's Rust {rust} is older than the workspace's rust-version"
    );
    let all = instructions();
    let labels: String = all
        .iter()
        .filter(|i| i.starts_with("LABEL "))
        .cloned()
        .collect();
    for label in [
        "org.opencontainers.image.version=\"${VERSION}\"",
        "org.opencontainers.image.revision=\"${REVISION}\"",
        "org.opencontainers.image.source=",
        "org.opencontainers.image.licenses=",
        "org.opencontainers.image.title=",
    ] {
        assert!(labels.contains(label), "LABEL lacks {label}");
    }
    let last_from = all
        .iter()
        .rposition(|i| i.starts_with("FROM "))
        .expect("FROM");
    let runtime = &all[last_from..];
    assert!(
        runtime[0].contains("distroless") && runtime[0].contains("nonroot"),
        "the runtime stage is distroless nonroot: {}",
        runtime[0]
    );
    assert!(
        runtime.iter().any(|i| i == "USER 65532:65532"),
        "the runtime runs as the UID the manifests' pod securityContext sets"
    );
    assert!(
        runtime
            .iter()
            .any(|i| i.starts_with("ENTRYPOINT") && i.contains("kube-insight")),
        "ENTRYPOINT kube-insight"
    );
    assert!(
        runtime.iter().any(|i| i.contains("manifestr")),
        "manifestr ships in the same image"
    );
}

/// Every mention of the image under manifests/ (values, examples, rendered
/// files) and in the README is pinned to the workspace version.
#[test]
fn manifests_pin_the_image_of_the_workspace_version() {
    let want = format!("{IMAGE}:{}", workspace_package("version"));
    let mut files = vec![repo().join("README.md")];
    let mut stack = vec![repo().join("manifests")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path
                .extension()
                .is_some_and(|e| e == "yaml" || e == "j2" || e == "md")
            {
                files.push(path);
            }
        }
    }
    let mut found = 0;
    let mut wrong = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for (at, _) in text.match_indices(IMAGE) {
            let rest = &text[at..];
            let end = rest
                .find(|c: char| c.is_whitespace() || c == '"' || c == '\'' || c == '`')
                .unwrap_or(rest.len());
            let image = &rest[..end];
            found += 1;
            if image != want {
                wrong.push(format!("{}: {image}", file.display()));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "images not pinned to {want}:\n  {}",
        wrong.join("\n  ")
    );
    let rendered = read("manifests/rendered/servers/default.yaml");
    assert!(
        rendered.contains(&format!("image: {want}")),
        "the servers chart renders {want}"
    );
    assert!(found >= 3, "the image is named in values and renderings");
}
