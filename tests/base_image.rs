//! The committed base image (`testdata/base/busybox-oci`) is what its script builds, and the
//! standard OCI tools accept it.
#![allow(clippy::unwrap_used)] // a test fails by panicking

mod common;
use common::have;

use std::{path::Path, process::Command};

fn layout() -> &'static Path {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/base/busybox-oci"
    ))
}

#[test]
fn script_reproduces_the_committed_layout() {
    if !Path::new("/bin/busybox").exists() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "busybox-static is not installed, and CI must run this test"
        );
        eprintln!(
            "skipped: script_reproduces_the_committed_layout: /bin/busybox missing (apt-get install busybox-static)"
        );
        return;
    }
    reproduces(&[], layout());
}

/// The arm64 layout, from Debian's arm64 package: `.ci/run` downloads it (`apt-get download
/// busybox-static:arm64`) into `target/fixtures/`.
#[test]
fn script_reproduces_the_committed_arm64_layout() {
    let debs = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/target/fixtures"));
    let deb = std::fs::read_dir(debs).ok().and_then(|d| {
        d.flatten()
            .map(|e| e.path())
            .find(|p| p.to_string_lossy().ends_with("_arm64.deb"))
    });
    let Some(deb) = deb.filter(|_| Path::new("/bin/busybox").exists()) else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "the arm64 busybox-static package is not in target/fixtures, and CI must run this test"
        );
        eprintln!(
            "skipped: script_reproduces_the_committed_arm64_layout: no busybox-static arm64 package in target/fixtures (see .ci/run)"
        );
        return;
    };
    let x = tempfile::tempdir().unwrap();
    let st = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(x.path())
        .status()
        .unwrap();
    assert!(st.success());
    let busybox = x.path().join("bin/busybox");
    reproduces(
        &[
            "--arch",
            "arm64",
            "--busybox",
            busybox.to_str().unwrap(),
            "--applets-from",
            "/bin/busybox",
        ],
        Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/testdata/base/busybox-arm64-oci"
        )),
    );
}

/// The script run with `args` writes exactly the committed `committed` layout.
fn reproduces(args: &[&str], committed: &Path) {
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("oci");
    let st = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/testdata/base/build-busybox.py"
        ))
        .args(args)
        .arg("--out")
        .arg(&dir)
        .status()
        .unwrap();
    assert!(st.success());
    for f in ["index.json", "oci-layout"] {
        assert_eq!(
            std::fs::read(dir.join(f)).unwrap(),
            std::fs::read(committed.join(f)).unwrap(),
            "{f} differs: rebuild with `python3 testdata/base/build-busybox.py {}` and commit",
            args.join(" ")
        );
    }
    let mut built: Vec<_> = std::fs::read_dir(dir.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let mut committed: Vec<_> = std::fs::read_dir(committed.join("blobs/sha256"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    built.sort();
    committed.sort();
    assert_eq!(built, committed);
}

#[test]
fn oci_tools_accept_the_base_image() {
    let reference = "kiln.local/busybox:latest";
    if have("skopeo", "oci_tools_accept_the_base_image") {
        let out = Command::new("skopeo")
            .arg("inspect")
            .arg(format!("oci:{}:{reference}", layout().display()))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["Architecture"], "amd64");
    }
    if have("oci-image-tool", "oci_tools_accept_the_base_image") {
        let out = Command::new("oci-image-tool")
            .args([
                "validate",
                "--type",
                "image",
                "--ref",
                &format!("name={reference}"),
            ])
            .arg(layout())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && text.contains("Validation succeeded"),
            "{text}"
        );
    }
    if have("umoci", "oci_tools_accept_the_base_image") {
        let dir = tempfile::tempdir().unwrap();
        let bundle = dir.path().join("bundle");
        let out = Command::new("umoci")
            .args(["unpack", "--rootless", "--image"])
            .arg(format!("{}:{reference}", layout().display()))
            .arg(&bundle)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let echo = Command::new(bundle.join("rootfs/bin/busybox"))
            .args(["echo", "ok"])
            .output()
            .unwrap();
        assert_eq!(echo.stdout, b"ok\n");
    }
}
