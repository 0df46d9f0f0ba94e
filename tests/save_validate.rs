//! Images kiln builds leave the store as OCI layouts that skopeo, umoci and oci-image-tool
//! accept, and load back unchanged.
#![allow(clippy::unwrap_used)] // a test fails by panicking

mod common;
use common::{BASE, have, kiln};

use std::process::Command;

const CTX: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/testdata/build/copy-basics/ctx"
);

#[test]
fn built_images_pass_the_oci_tools_and_round_trip() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    assert_eq!(kiln(r, &["load", "-i", BASE]).0, 0);
    let (code, id, err) = kiln(r, &["build", "-q", "-t", "app:1", CTX]);
    assert_eq!(code, 0, "{err}");
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("layout");
    let tarball = work.path().join("image.tar");
    assert_eq!(
        kiln(r, &["save", "-o", &format!("{}/", dir.display()), "app:1"]).0,
        0
    );
    assert_eq!(
        kiln(
            r,
            &[
                "save",
                "-o",
                tarball.to_str().unwrap(),
                "app:1",
                "kiln.local/busybox"
            ]
        )
        .0,
        0
    );

    // Docker's manifest.json sits beside the OCI index (docker save since Docker 25).
    let docker: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    assert_eq!(docker[0]["RepoTags"], serde_json::json!(["app:1"]));
    for l in docker[0]["Layers"].as_array().unwrap() {
        assert!(dir.join(l.as_str().unwrap()).is_file());
    }

    if have("skopeo", "save_validate") {
        let out = Command::new("skopeo")
            .arg("inspect")
            .arg(format!("oci:{}:app:1", dir.display()))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["Labels"]["version"], "1.0");
        assert_eq!(v["Layers"].as_array().unwrap().len(), 6);
    }
    if have("oci-image-tool", "save_validate") {
        let out = Command::new("oci-image-tool")
            .args(["validate", "--type", "image", "--ref", "name=app:1"])
            .arg(&dir)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && text.contains("Validation succeeded"),
            "{text}"
        );
    }
    if have("umoci", "save_validate") {
        let bundle = work.path().join("bundle");
        let out = Command::new("umoci")
            .args(["unpack", "--rootless", "--image"])
            .arg(format!("{}:app:1", dir.display()))
            .arg(&bundle)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let rootfs = bundle.join("rootfs");
        assert_eq!(
            std::fs::read_to_string(rootfs.join("etc/motd")).unwrap(),
            "hello kiln test\n"
        );
        assert!(rootfs.join("srv/app/src/sub/b.txt").is_file());
        assert!(rootfs.join("bin/busybox").is_file(), "base layer present");
    }

    // The archive loads into a fresh store with the same image ID; busybox keeps its digest.
    let fresh = tempfile::tempdir().unwrap();
    let (code, out, err) = kiln(fresh.path(), &["load", "-i", tarball.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("kiln.local/busybox:latest (sha256:88ca2ffc7f1b09e60e0b57e78745fb6dc78ffcd2846ef03fbc185373748138e0)"), "{out}");
    let (_, ids, _) = kiln(fresh.path(), &["images", "-q"]);
    assert!(
        ids.lines()
            .any(|l| id.trim().trim_start_matches("sha256:").starts_with(l)),
        "{ids} vs {id}"
    );
}
