//! Helpers shared by the runtime's integration tests.
#![allow(dead_code, clippy::unwrap_used)] // each test file uses a subset; a test fails by panicking

use std::path::Path;

use kiln_runtime::{digest::Digest, oci::Manifest, store::Store};

/// False (after saying why, loudly) where mounting cannot work; never under CI (root there).
pub fn can_mount(test: &str) -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{test}: CI must run as root"
    );
    eprintln!("skipped: {test}: namespaces and overlayfs need root");
    false
}

/// Loads the committed busybox base image into `store`; returns its layer blobs and diff_ids.
pub fn busybox_layers(store: &Store) -> (Vec<Digest>, Vec<Digest>) {
    let base = concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata/base/busybox-oci");
    let manifest = store.load(Path::new(base)).unwrap()[0].manifest;
    let (mf, cfg, _): (Manifest, _, _) = store.image(&manifest).unwrap();
    let blobs = mf
        .layers
        .iter()
        .map(|l| Digest::parse(&l.digest).unwrap())
        .collect();
    let diffs = cfg
        .rootfs
        .diff_ids
        .iter()
        .map(|d| Digest::parse(d).unwrap())
        .collect();
    (blobs, diffs)
}
