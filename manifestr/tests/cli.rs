//! CLI tests: run the real binary on the fixtures and snapshot stdout, stderr
//! and the exit code (insta_cmd), error cases included.

// Tests and benches may unwrap: a panic is a failing run with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use insta_cmd::{assert_cmd_snapshot, get_cargo_bin};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// `manifestr` run in the fixtures folder, with a stable environment.
fn manifestr(args: &[&str]) -> Command {
    let mut cmd = Command::new(get_cargo_bin("manifestr"));
    cmd.current_dir(fixtures())
        .env_remove("RUST_BACKTRACE")
        .env("COLUMNS", "100")
        .args(args);
    cmd
}

fn render_error(template: &str) -> Command {
    manifestr(&["render", &format!("errors/{template}")])
}

#[test]
fn help_teaches_the_tool() {
    assert_cmd_snapshot!(manifestr(&["--help"]));
}

#[test]
fn render_help_lists_options_and_exit_codes() {
    assert_cmd_snapshot!(manifestr(&["render", "--help"]));
}

#[test]
fn renders_a_chart_with_defaults() {
    assert_cmd_snapshot!(manifestr(&["render", "chart", "--root", "chart"]));
}

#[test]
fn layers_files_then_sets() {
    assert_cmd_snapshot!(manifestr(&[
        "values",
        "chart",
        "-f",
        "values/override.yaml",
        "-f",
        "values/second.yaml",
        "--set",
        "replicas=7",
        "--set",
        "debug=true",
        "--set",
        "ratio=0.5",
        "--set",
        "nothing=null",
        "--set",
        "version=1.2.3",
        "--set",
        r"annotations.prometheus\.io/scrape=true",
    ]));
}

#[test]
fn set_values_reach_the_templates_typed() {
    assert_cmd_snapshot!(manifestr(&[
        "render",
        "chart/templates/optional.yaml",
        "--set",
        "debug=true",
        "--set",
        "name=typed",
    ]));
}

#[test]
fn output_dir_writes_one_file_per_template() {
    let out = tempfile::tempdir().expect("tempdir");
    let dir = out.path().to_string_lossy().into_owned();
    let status = manifestr(&["render", "chart", "--root", "chart", "-o", &dir])
        .status()
        .expect("run manifestr");
    assert!(status.success());
    let mut written: Vec<String> = walk(out.path())
        .iter()
        .map(|p| {
            p.strip_prefix(out.path())
                .expect("inside")
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    written.sort();
    // optional.yaml renders no document, so it writes no file.
    assert_eq!(
        written,
        vec![
            "chart/templates/configmap.yaml",
            "chart/templates/dashboards.yaml",
            "chart/templates/deployment.yaml",
        ]
    );
    let stdout = manifestr(&["render", "chart", "--root", "chart"])
        .output()
        .expect("run manifestr")
        .stdout;
    let joined: String = ["configmap", "dashboards", "deployment"]
        .iter()
        .map(|t| {
            std::fs::read_to_string(out.path().join(format!("chart/templates/{t}.yaml")))
                .expect("written file")
        })
        .collect();
    assert_eq!(joined, String::from_utf8_lossy(&stdout));
}

#[test]
fn dashboards_are_embedded_unchanged_and_checksums_follow_content() {
    let out = manifestr(&["render", "chart", "--root", "chart"])
        .output()
        .expect("run");
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let original =
        std::fs::read_to_string(fixtures().join("chart/files/dash.json")).expect("fixture");
    let docs: Vec<serde_norway::Value> = serde_norway::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).expect("yaml"))
        .collect();
    let dashboards = docs
        .iter()
        .find(|d| d["metadata"]["name"] == "demo-dashboards")
        .expect("dashboards ConfigMap");
    assert_eq!(
        dashboards["data"]["dash.json"].as_str(),
        Some(original.as_str())
    );
    assert!(original.contains("{{pod}} / {{ namespace }}"));

    // The checksum annotation is the sha256 of the rendered ConfigMap, so a
    // changed value changes it.
    let checksum = |args: &[&str]| {
        let out = manifestr(args).output().expect("run");
        let text = String::from_utf8(out.stdout).expect("utf-8");
        text.lines()
            .find_map(|l| {
                l.trim()
                    .strip_prefix("checksum/config: ")
                    .map(str::to_string)
            })
            .expect("checksum annotation")
    };
    let base = checksum(&["render", "chart", "--root", "chart"]);
    assert_eq!(base.len(), 64);
    assert_eq!(
        base,
        checksum(&[
            "render",
            "chart",
            "--root",
            "chart",
            "--set",
            "image=other:1"
        ])
    );
    assert_ne!(
        base,
        checksum(&["render", "chart", "--root", "chart", "--set", "replicas=3"])
    );
}

#[test]
fn renders_several_charts_in_one_stream() {
    let out = manifestr(&[
        "render",
        "chart",
        "chart/templates/configmap.yaml",
        "--root",
        "chart",
    ])
    .output()
    .expect("run");
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).expect("utf-8");
    assert_eq!(
        text.matches("# Source: chart/templates/configmap.yaml")
            .count(),
        2
    );
}

// ---- errors: exit code 1 (render or validation) ----

#[test]
fn undefined_variable_names_template_line_and_key() {
    assert_cmd_snapshot!(render_error("undefined.yaml"));
}

#[test]
fn syntax_error_shows_the_source() {
    assert_cmd_snapshot!(render_error("syntax.yaml"));
}

#[test]
fn required_value_fails_with_its_message() {
    assert_cmd_snapshot!(render_error("required.yaml"));
}

#[test]
fn fail_stops_rendering() {
    assert_cmd_snapshot!(render_error("fail.yaml"));
}

#[test]
fn invalid_yaml_output_names_the_template() {
    assert_cmd_snapshot!(render_error("bad-yaml.yaml"));
}

#[test]
fn document_without_kind_is_rejected() {
    assert_cmd_snapshot!(render_error("no-kind.yaml"));
}

#[test]
fn document_without_name_is_rejected() {
    assert_cmd_snapshot!(render_error("no-name.yaml"));
}

#[test]
fn document_without_api_version_is_rejected() {
    assert_cmd_snapshot!(render_error("no-api-version.yaml"));
}

#[test]
fn document_that_is_not_a_mapping_is_rejected() {
    assert_cmd_snapshot!(render_error("not-mapping.yaml"));
}

#[test]
fn missing_embedded_file_is_an_error() {
    assert_cmd_snapshot!(render_error("missing-file.yaml"));
}

#[test]
fn embedded_file_cannot_escape_the_root() {
    assert_cmd_snapshot!(render_error("escape.yaml"));
}

#[test]
fn missing_include_is_an_error() {
    assert_cmd_snapshot!(render_error("missing-include.yaml"));
}

#[test]
fn templates_rendering_each_other_in_a_loop_stop() {
    assert_cmd_snapshot!(render_error("render-loop.yaml"));
}

#[test]
fn values_file_that_is_not_a_mapping_is_rejected() {
    assert_cmd_snapshot!(manifestr(&[
        "values",
        "chart",
        "-f",
        "values/not-mapping.yaml"
    ]));
}

#[test]
fn values_file_with_invalid_yaml_is_rejected() {
    assert_cmd_snapshot!(manifestr(&["render", "chart", "-f", "values/invalid.yaml"]));
}

#[test]
fn chart_without_templates_is_rejected() {
    assert_cmd_snapshot!(manifestr(&["render", "empty-chart"]));
}

// ---- errors: exit code 2 (usage) ----

#[test]
fn set_through_a_scalar_is_a_usage_error() {
    assert_cmd_snapshot!(manifestr(&["values", "chart", "--set", "name.first=x"]));
}

#[test]
fn set_without_equals_is_a_usage_error() {
    assert_cmd_snapshot!(manifestr(&["render", "chart", "--set", "replicas"]));
}

#[test]
fn missing_path_is_a_usage_error() {
    assert_cmd_snapshot!(manifestr(&["render", "no-such-chart"]));
}

#[test]
fn missing_values_file_is_a_usage_error() {
    assert_cmd_snapshot!(manifestr(&["render", "chart", "-f", "values/nope.yaml"]));
}

#[test]
fn render_without_path_is_a_usage_error() {
    assert_cmd_snapshot!(manifestr(&["render"]));
}

#[test]
fn unknown_flag_is_a_usage_error() {
    assert_cmd_snapshot!(manifestr(&["render", "chart", "--frobnicate"]));
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read dir") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn lint_summarises_a_valid_chart() {
    assert_cmd_snapshot!(manifestr(&["lint", "chart", "--set", "debug=true"]));
}

#[test]
fn lint_refuses_an_object_rendered_twice() {
    assert_cmd_snapshot!(manifestr(&["lint", "duplicate"]));
}

/// The chart packed as `tar -czf chart.tar.gz -C fixtures chart` would.
fn pack(dir: &Path, chart: &Path, top: Option<&str>) -> PathBuf {
    let path = dir.join("chart.tar.gz");
    let file = std::fs::File::create(&path).expect("create archive");
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    tar.append_dir_all(top.unwrap_or("."), chart)
        .expect("pack chart");
    tar.into_inner()
        .expect("finish tar")
        .finish()
        .expect("finish gzip");
    path
}

/// From a folder outside the repository, a chart renders the same by its
/// path and packaged as `.tar.gz` (with or without a top folder): `file()`
/// reads inside the chart.
#[test]
fn renders_from_any_directory_and_from_a_package() {
    let elsewhere = tempfile::tempdir().expect("tempdir");
    let chart = fixtures().join("chart");
    let run = |args: &[&str]| {
        let out = Command::new(get_cargo_bin("manifestr"))
            .current_dir(elsewhere.path())
            .args(args)
            .output()
            .expect("run manifestr");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    };
    let want = String::from_utf8(
        manifestr(&["render", "chart", "--root", "chart"])
            .output()
            .expect("run manifestr")
            .stdout,
    )
    .expect("utf-8");
    assert!(want.contains("single: "), "the fixture embeds a file");
    assert_eq!(run(&["render", &chart.to_string_lossy()]), want);
    for top in [Some("chart"), None] {
        let package = pack(elsewhere.path(), &chart, top);
        assert_eq!(
            run(&["render", &package.to_string_lossy()]),
            want,
            "packaged with top folder {top:?}"
        );
        assert!(run(&["lint", &package.to_string_lossy()]).starts_with("ok: "));
    }
}

#[test]
fn a_package_that_is_not_a_gzip_tar_is_rejected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("broken.tar.gz");
    std::fs::write(&path, "not an archive").expect("write");
    let out = manifestr(&["render", &path.to_string_lossy()])
        .output()
        .expect("run manifestr");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("broken.tar.gz") && err.contains("not a gzip-compressed tar archive"),
        "{err}"
    );
}

#[test]
fn a_package_with_a_link_is_rejected() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("linked.tgz");
    let gz = flate2::write::GzEncoder::new(
        std::fs::File::create(&path).expect("create"),
        flate2::Compression::default(),
    );
    let mut tar = tar::Builder::new(gz);
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Symlink);
    header.set_size(0);
    tar.append_link(&mut header, "chart/values.yaml", "/etc/passwd")
        .expect("append link");
    tar.into_inner().expect("tar").finish().expect("gzip");
    let out = manifestr(&["render", &path.to_string_lossy()])
        .output()
        .expect("run manifestr");
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("links are refused") && err.contains("chart/values.yaml"),
        "{err}"
    );
}
