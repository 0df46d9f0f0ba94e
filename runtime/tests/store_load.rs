//! `Store::load` on the committed base image and on hostile layouts.
#![allow(clippy::unwrap_used)] // a test fails by panicking

use std::path::{Path, PathBuf};

use kiln_runtime::{digest::Digest, oci::Manifest, store::Store};

fn base() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/base/busybox-oci")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let dest = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).unwrap();
        }
    }
}

#[test]
fn loads_a_layout_directory_and_an_archive() {
    let st = tempfile::tempdir().unwrap();
    let store = Store::open(st.path()).unwrap();
    let loaded = store.load(&base()).unwrap();
    assert_eq!(loaded.len(), 1);
    assert_eq!(
        loaded[0].reference.as_deref(),
        Some("kiln.local/busybox:latest")
    );
    let m = store.resolve_tag("kiln.local/busybox").unwrap().unwrap();
    let manifest: Manifest = serde_json::from_slice(&store.read_blob(&m).unwrap()).unwrap();
    for d in std::iter::once(&manifest.config).chain(&manifest.layers) {
        assert!(store.has_blob(&Digest::parse(&d.digest).unwrap()));
    }

    // The same layout as a gzipped tar, into a fresh store.
    let work = tempfile::tempdir().unwrap();
    let archive = work.path().join("busybox.tar.gz");
    let status = std::process::Command::new("tar")
        .arg("-czf")
        .arg(&archive)
        .arg("-C")
        .arg(base())
        .arg(".")
        .status()
        .unwrap();
    assert!(status.success());
    let st2 = tempfile::tempdir().unwrap();
    let store2 = Store::open(st2.path()).unwrap();
    assert_eq!(store2.load(&archive).unwrap()[0].manifest, m);
    // The temporary extraction is gone.
    assert_eq!(
        std::fs::read_dir(st2.path().join("tmp")).unwrap().count(),
        0
    );
}

#[test]
fn hostile_layouts_are_refused() {
    let work = tempfile::tempdir().unwrap();
    // A digest that tries to name a path outside the layout.
    let evil = work.path().join("evil");
    copy_dir(&base(), &evil);
    let index = std::fs::read_to_string(evil.join("index.json")).unwrap();
    let digest = index
        .split("\"digest\":\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_string();
    std::fs::write(
        evil.join("index.json"),
        index.replace(&digest, "sha256:../../../../etc/passwd"),
    )
    .unwrap();
    let st = tempfile::tempdir().unwrap();
    let store = Store::open(st.path()).unwrap();
    let err = store.load(&evil).unwrap_err().to_string();
    assert!(err.contains("invalid digest"), "{err}");

    // A layer whose content does not match its descriptor.
    let tampered = work.path().join("tampered");
    copy_dir(&base(), &tampered);
    let m = Digest::parse(&digest).unwrap();
    let manifest: Manifest = serde_json::from_slice(
        &std::fs::read(tampered.join("blobs/sha256").join(m.hex())).unwrap(),
    )
    .unwrap();
    let layer = Digest::parse(&manifest.layers[0].digest).unwrap();
    std::fs::write(
        tampered.join("blobs/sha256").join(layer.hex()),
        b"not the layer",
    )
    .unwrap();
    let err = store.load(&tampered).unwrap_err().to_string();
    assert!(err.contains("the layout says"), "{err}");
    assert!(
        store.tags().unwrap().is_empty(),
        "nothing is tagged after a failed load"
    );
}

#[test]
fn loads_a_legacy_docker_archive() {
    // Build a pre-Docker-25 archive (manifest.json + <id>/layer.tar) from the testdata base.
    let st = tempfile::tempdir().unwrap();
    let store = Store::open(st.path()).unwrap();
    let m = store.load(&base()).unwrap()[0].manifest;
    let manifest: Manifest = serde_json::from_slice(&store.read_blob(&m).unwrap()).unwrap();
    let config = store
        .read_blob(&Digest::parse(&manifest.config.digest).unwrap())
        .unwrap();
    let gz = store
        .read_blob(&Digest::parse(&manifest.layers[0].digest).unwrap())
        .unwrap();
    let mut layer = Vec::new();
    std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(gz.as_slice()), &mut layer)
        .unwrap();
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("legacy");
    std::fs::create_dir_all(dir.join("l1")).unwrap();
    std::fs::write(dir.join("cfg.json"), &config).unwrap();
    std::fs::write(dir.join("l1/layer.tar"), &layer).unwrap();
    std::fs::write(
        dir.join("manifest.json"),
        r#"[{"Config":"cfg.json","RepoTags":["legacy/busybox:1"],"Layers":["l1/layer.tar"]}]"#,
    )
    .unwrap();
    let archive = work.path().join("legacy.tar");
    assert!(
        std::process::Command::new("tar")
            .arg("-cf")
            .arg(&archive)
            .arg("-C")
            .arg(&dir)
            .arg(".")
            .status()
            .unwrap()
            .success()
    );
    let fresh = tempfile::tempdir().unwrap();
    let store2 = Store::open(fresh.path()).unwrap();
    let loaded = store2.load(&archive).unwrap();
    assert_eq!(loaded[0].reference.as_deref(), Some("legacy/busybox:1"));
    // Same config, so the same image ID as the OCI original.
    let (_, _, cfg) = store2.image(&loaded[0].manifest).unwrap();
    assert_eq!(cfg.to_string(), manifest.config.digest);
    // A manifest.json path that leaves the archive is refused.
    std::fs::write(
        dir.join("manifest.json"),
        r#"[{"Config":"../../etc/passwd","RepoTags":["x:1"],"Layers":[]}]"#,
    )
    .unwrap();
    let err = store2.load(&dir).unwrap_err().to_string();
    assert!(err.contains("leaves the archive"), "{err}");
}
