//! Layers unpacked for overlayfs: threads of one process asking for the same layer at once (the
//! stages of one build) all get it, complete, in one shared directory.
#![allow(clippy::unwrap_used)] // a test fails by panicking

use std::{path::Path, sync::Barrier};

use kiln_runtime::{digest::Digest, oci::Manifest, store::Store};

#[test]
fn concurrent_unpacks_of_one_layer_in_one_process() {
    let st = tempfile::tempdir().unwrap();
    let store = Store::open(st.path()).unwrap();
    let base = concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata/base/busybox-oci");
    let manifest = store.load(Path::new(base)).unwrap()[0].manifest.clone();
    let (mf, cfg, _): (Manifest, _, _) = store.image(&manifest).unwrap();
    let blobs: Vec<Digest> = mf
        .layers
        .iter()
        .map(|l| Digest::parse(&l.digest).unwrap())
        .collect();
    let diffs: Vec<Digest> = cfg
        .rootfs
        .diff_ids
        .iter()
        .map(|d| Digest::parse(d).unwrap())
        .collect();
    let barrier = Barrier::new(6);
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..6)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    store.unpacked_layers(&blobs, &diffs)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let first = results[0].as_ref().unwrap().clone();
    for r in &results {
        assert_eq!(r.as_ref().unwrap(), &first);
    }
    assert!(first[0].join("bin/busybox").is_file());
    let left: Vec<_> = std::fs::read_dir(st.path().join("tmp")).unwrap().collect();
    assert!(left.is_empty(), "no unpack directory left behind: {left:?}");
}
