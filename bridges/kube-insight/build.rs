//! Build script: the git commit `kube-insight --version` prints.
//!
//! `git rev-parse --short HEAD` when the source is a git checkout, else the
//! `KUBE_INSIGHT_GIT_COMMIT` variable (the Containerfile passes its REVISION
//! build argument: the build context has no `.git`), else `unknown`. It never
//! fails the build.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!text.is_empty()).then_some(text)
}

fn main() {
    println!("cargo:rerun-if-env-changed=KUBE_INSIGHT_GIT_COMMIT");
    // Rebuild when HEAD moves: HEAD itself and the branch it points to.
    for path in ["HEAD".to_string()]
        .into_iter()
        .chain(git(&["symbolic-ref", "-q", "HEAD"]))
        .chain(["packed-refs".to_string()])
    {
        if let Some(file) = git(&["rev-parse", "--git-path", &path]) {
            if std::path::Path::new(&file).exists() {
                println!("cargo:rerun-if-changed={file}");
            }
        }
    }
    let commit = git(&["rev-parse", "--short", "HEAD"])
        .or_else(|| {
            std::env::var("KUBE_INSIGHT_GIT_COMMIT")
                .ok()
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        })
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=KUBE_INSIGHT_BUILD_COMMIT={commit}");
}
