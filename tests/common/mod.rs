//! Helpers shared by the end-to-end tests of the `kiln` binary.
#![allow(dead_code, clippy::unwrap_used)] // each test file uses a subset; a test fails by panicking

pub mod hostile;
pub mod podman;
pub mod registry;

use std::{path::Path, process::Command};

/// The committed busybox base image (an OCI layout).
pub const BASE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/base/busybox-oci");

/// `kiln --root ROOT ARGS...`, to be run.
pub fn kiln_cmd(root: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln"));
    cmd.arg("--root").arg(root).args(args);
    cmd
}

/// A build context holding only `dockerfile` as its Dockerfile.
pub fn context(dockerfile: &str) -> tempfile::TempDir {
    let ctx = tempfile::tempdir().unwrap();
    std::fs::write(ctx.path().join("Dockerfile"), dockerfile).unwrap();
    ctx
}

/// Runs `kiln --root ROOT ARGS...`: (exit code, stdout, stderr).
pub fn kiln(root: &Path, args: &[&str]) -> (i32, String, String) {
    let out = kiln_cmd(root, args).output().unwrap();
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
    have_with(tool, &[&["--version"], &["--help"]], test)
}

/// [`have`] for a tool that answers none of `--version` and `--help` with success: it can run
/// when one of `probes` (argument lists) succeeds.
pub fn have_with(tool: &str, probes: &[&[&str]], test: &str) -> bool {
    let ok = probes.iter().any(|a| {
        Command::new(tool)
            .args(*a)
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

pub fn blob(root: &Path, digest: &str) -> Vec<u8> {
    std::fs::read(
        root.join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:")),
    )
    .unwrap()
}

/// (path, mode, uid, gid, file content) of a layer entry.
pub type Entry = (String, u32, u64, u64, Option<String>);

/// Every entry of every layer the build added.
pub fn added_layers(root: &Path, manifest: &str) -> Vec<Vec<Entry>> {
    let m: serde_json::Value = serde_json::from_slice(&blob(root, manifest)).unwrap();
    m["layers"].as_array().unwrap()[1..]
        .iter()
        .map(|l| {
            let data = blob(root, l["digest"].as_str().unwrap());
            let mut ar = tar::Archive::new(data.as_slice());
            ar.entries()
                .unwrap()
                .map(|e| {
                    let mut e = e.unwrap();
                    let h = e.header().clone();
                    let mut bytes = Vec::new();
                    let content = if h.entry_type().is_file() {
                        std::io::Read::read_to_end(&mut e, &mut bytes).unwrap();
                        Some(String::from_utf8_lossy(&bytes).into_owned())
                    } else {
                        None
                    };
                    (
                        e.path()
                            .unwrap()
                            .to_string_lossy()
                            .trim_end_matches('/')
                            .to_string(),
                        h.mode().unwrap(),
                        h.uid().unwrap(),
                        h.gid().unwrap(),
                        content,
                    )
                })
                .collect()
        })
        .collect()
}

/// (path, file content) of every entry of every layer the build tagged `tag` added, by layer.
pub fn layer_files(root: &Path, tag: &str) -> Vec<Vec<(String, Option<String>)>> {
    added_layers(root, &manifest_of(root, tag))
        .into_iter()
        .map(|l| l.into_iter().map(|e| (e.0, e.4)).collect())
        .collect()
}

pub fn manifest_of(root: &Path, tag: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .arg("--root")
        .arg(root)
        .args(["tag", tag, "probe-tag"])
        .output()
        .unwrap();
    assert!(out.status.success());
    // The manifest digest is printed by build; read it back from the store's tag instead.
    let store = kiln_runtime::store::Store::open(root).unwrap();
    store.resolve_tag("probe-tag").unwrap().unwrap().to_string()
}

/// False (after saying why, loudly) where the sandbox cannot run (namespaces and overlayfs need
/// root); never under CI, which runs as root.
pub fn can_sandbox(test: &str) -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test}: CI must run as root"
    );
    eprintln!("skipped: {test}: the sandbox needs root (namespaces, overlayfs)");
    false
}

/// The cgroup directories kiln process `pid` made (v1 controllers and the v2 tree).
pub fn cgroups_of(pid: u32) -> Vec<std::path::PathBuf> {
    let mut found = Vec::new();
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let mut places = vec![
        std::path::PathBuf::from("/sys/fs/cgroup/kiln"),
        std::path::PathBuf::from("/sys/fs/cgroup/unified/kiln"),
    ];
    for line in own.lines() {
        let parts: Vec<&str> = line.splitn(3, ':').collect();
        if parts.len() == 3 && !parts[1].is_empty() && !parts[1].starts_with("name=") {
            places.push(
                std::path::Path::new("/sys/fs/cgroup")
                    .join(parts[1])
                    .join(parts[2].trim_start_matches('/')),
            );
        }
    }
    for dir in places {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            // `PID.START-NAME`: the maker's pid and start time.
            if name.starts_with(&format!("kiln-{pid}.")) || name.starts_with(&format!("{pid}.")) {
                found.push(e.path());
            }
        }
    }
    found
}

/// [`kiln`], also returning the process id (to find what it left behind).
pub fn kiln_pid(root: &Path, args: &[&str]) -> (i32, String, u32) {
    let child = kiln_cmd(root, args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.code().unwrap_or(-1), err, pid)
}
