//! Build information for `aml-auth-proxy --version`: target triple, rustc version, profile and git commit.
//!
//! It never fails the build. The commit comes from `AML_AUTH_PROXY_GIT_COMMIT` when set (the container build
//! passes it as a build argument, since `.git` is not in the image's build context), else from
//! `git rev-parse --short=12 HEAD`; without either it is left out.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=AML_AUTH_PROXY_GIT_COMMIT");

    let target = std::env::var("TARGET").unwrap_or_default();
    let profile = std::env::var("PROFILE").unwrap_or_default();
    let rustc = std::env::var_os("RUSTC")
        .and_then(|rustc| output(Command::new(rustc).arg("--version")))
        .unwrap_or_default();
    let commit = std::env::var("AML_AUTH_PROXY_GIT_COMMIT")
        .ok()
        .map(|c| c.trim().to_owned())
        .filter(|c| !c.is_empty())
        .or_else(|| git_commit(&manifest_dir))
        .filter(|c| is_commit(c))
        .unwrap_or_default();

    println!("cargo:rustc-env=AML_AUTH_PROXY_BUILD_TARGET={target}");
    println!("cargo:rustc-env=AML_AUTH_PROXY_BUILD_PROFILE={profile}");
    println!("cargo:rustc-env=AML_AUTH_PROXY_BUILD_RUSTC={rustc}");
    println!("cargo:rustc-env=AML_AUTH_PROXY_BUILD_COMMIT={commit}");
}

/// The short commit of `HEAD`, and rebuild instructions for when it moves (only for files that exist: cargo
/// would otherwise rerun this script on every build).
fn git_commit(dir: &Path) -> Option<String> {
    let git = |args: &[&str]| output(Command::new("git").arg("-C").arg(dir).args(args));
    let commit = git(&["rev-parse", "--short=12", "HEAD"])?;
    let mut watched = vec![git(&["rev-parse", "--git-path", "HEAD"])];
    if let Some(head_ref) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watched.push(git(&["rev-parse", "--git-path", &head_ref]));
        watched.push(git(&["rev-parse", "--git-path", "packed-refs"]));
    }
    for path in watched.into_iter().flatten() {
        let path = dir.join(path);
        if path.exists() {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
    Some(commit)
}

/// The first line of a successful command's stdout, if not empty.
fn output(command: &mut Command) -> Option<String> {
    let out = command.output().ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?;
    let line = text.lines().next()?.trim().to_owned();
    (!line.is_empty()).then_some(line)
}

/// 7 to 40 hex digits: anything else (a stray build argument) is not shown as a commit.
fn is_commit(text: &str) -> bool {
    (7..=40).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_hexdigit())
}
