//! Layers unpacked for overlayfs: threads of one process asking for the same layer at once (the
//! stages of one build) all get it, complete, in one shared directory.
#![allow(clippy::unwrap_used)] // a test fails by panicking

mod common;
use common::busybox_layers;

use std::sync::Barrier;

use kiln_runtime::store::Store;

#[test]
fn concurrent_unpacks_of_one_layer_in_one_process() {
    let st = tempfile::tempdir().unwrap();
    let store = Store::open(st.path()).unwrap();
    let (blobs, diffs) = busybox_layers(&store);
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
