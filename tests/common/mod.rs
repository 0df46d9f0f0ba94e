//! Helpers shared by the end-to-end tests of the `kiln` binary.
#![allow(dead_code, clippy::unwrap_used)] // each test file uses a subset; a test fails by panicking

use std::{path::Path, process::Command};

/// The committed busybox base image (an OCI layout).
pub const BASE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/base/busybox-oci");

/// Runs `kiln --root ROOT ARGS...`: (exit code, stdout, stderr).
pub fn kiln(root: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("--root")
        .arg(root)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A fresh store holding the base image.
pub fn store_with_base() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let (code, _, err) = kiln(root.path(), &["load", "-i", BASE]);
    assert_eq!(code, 0, "{err}");
    root
}

/// Whether `tool` can run. A missing tool skips loudly on a developer machine; under CI (which
/// installs it in `.ci/run`) it is a failure, never a silent pass.
pub fn have(tool: &str, test: &str) -> bool {
    let ok = ["--version", "--help"].iter().any(|a| {
        Command::new(tool)
            .arg(a)
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if !ok {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{test}: `{tool}` is not installed, and CI must run this test (.ci/run installs it)"
        );
        eprintln!("skipped: {test}: `{tool}` is not installed");
    }
    ok
}
