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

#[test]
fn layers_are_unpacked_under_a_top_of_hierarchy_directory() {
    let st = tempfile::tempdir().unwrap();
    let flags = |p: &std::path::Path| {
        let fd = rustix::fs::open(
            p,
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY,
            rustix::fs::Mode::empty(),
        )
        .unwrap();
        rustix::fs::ioctl_getflags(&fd)
    };
    // Only filesystems with inode flags (ext2/3/4 and a few others) have it.
    if flags(st.path()).is_err() {
        eprintln!("skipped: the temporary directory's filesystem has no inode flags");
        return;
    }
    Store::open(st.path()).unwrap();
    let tmp = flags(&st.path().join("tmp")).unwrap();
    assert!(tmp.contains(rustix::fs::IFlags::TOPDIR), "{tmp:?}");
    // Opened again: the flags are kept as they are.
    Store::open(st.path()).unwrap();
    assert_eq!(flags(&st.path().join("tmp")).unwrap(), tmp);
}
