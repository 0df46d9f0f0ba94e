//! The merged view of layer stacks written by `LayerWriter`, and of the busybox base image.
#![allow(clippy::unwrap_used)] // a test fails by panicking

use bstr::ByteSlice;
use std::collections::BTreeMap;

use kiln_builder::image::layer::{EntryMeta, LayerWriter};
use kiln_runtime::{
    digest::Digest,
    layer::view::{NodeKind, View, open_layer, read_file},
    oci::Manifest,
    store::Store,
};

fn m(mode: u32) -> EntryMeta {
    EntryMeta {
        mode,
        uid: 0,
        gid: 0,
        mtime: 1,
        xattrs: BTreeMap::new(),
    }
}

fn layer(build: impl FnOnce(&mut LayerWriter<Vec<u8>>)) -> Vec<u8> {
    let mut w = LayerWriter::new(Vec::new(), None);
    build(&mut w);
    w.finish().unwrap().1
}

#[test]
fn whiteouts_opaque_dirs_and_replacements() {
    let l0 = layer(|w| {
        w.dir("etc", &m(0o755)).unwrap();
        w.file("etc/a.conf", &m(0o644), 1, &b"a"[..]).unwrap();
        w.file("etc/b.conf", &m(0o644), 1, &b"b"[..]).unwrap();
        w.dir("data", &m(0o755)).unwrap();
        w.dir("data/sub", &m(0o755)).unwrap();
        w.file("data/sub/x", &m(0o644), 1, &b"x"[..]).unwrap();
        w.dir("cache", &m(0o755)).unwrap();
        w.file("cache/old", &m(0o644), 1, &b"o"[..]).unwrap();
    });
    let l1 = layer(|w| {
        w.whiteout("etc/a.conf").unwrap();
        w.whiteout("data").unwrap();
        w.dir("cache", &m(0o700)).unwrap();
        w.opaque("cache").unwrap();
        w.file("cache/new", &m(0o600), 1, &b"n"[..]).unwrap();
        w.file("etc/b.conf", &m(0o600), 2, &b"bb"[..]).unwrap();
    });
    let l2 = layer(|w| {
        // A file where a directory was: the directory's contents go with it.
        w.file("cache", &m(0o644), 0, &b""[..]).unwrap();
    });
    let mut v = View::default();
    v.apply(0, l0.as_slice(), "l0").unwrap();
    v.apply(1, l1.as_slice(), "l1").unwrap();
    let paths: Vec<&str> = v.iter().map(|(p, _)| p.to_str().unwrap()).collect();
    assert_eq!(paths, vec!["cache", "cache/new", "etc", "etc/b.conf"]);
    assert_eq!(v.get("etc/b.conf").unwrap().layer, 1);
    assert_eq!(v.get("/cache").unwrap().mode, 0o700);
    assert!(v.is_dir("cache") && v.is_dir("/") && !v.is_dir("etc/b.conf"));
    v.apply(2, l2.as_slice(), "l2").unwrap();
    let paths: Vec<&str> = v.iter().map(|(p, _)| p.to_str().unwrap()).collect();
    assert_eq!(paths, vec!["cache", "etc", "etc/b.conf"]);
    assert_eq!(v.get("cache").unwrap().kind, NodeKind::File { size: 0 });
}

#[test]
fn escaping_entries_are_never_applied() {
    // A hand-made tar with `../` in a name (LayerWriter refuses to write one).
    let mut h = tar::Header::new_ustar();
    h.as_old_mut().name[..12].copy_from_slice(b"../etc/evil\0");
    h.set_size(1);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    let mut b = tar::Builder::new(Vec::new());
    b.append(&h, &b"x"[..]).unwrap();
    let bytes = b.into_inner().unwrap();
    let mut v = View::default();
    v.apply(0, bytes.as_slice(), "evil").unwrap();
    assert!(v.is_empty());
}

#[test]
fn busybox_base_view_and_file_reads() {
    let st = tempfile::tempdir().unwrap();
    let store = Store::open(st.path()).unwrap();
    let base = concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata/base/busybox-oci");
    let d = store.load(std::path::Path::new(base)).unwrap()[0].manifest;
    let manifest: Manifest = serde_json::from_slice(&store.read_blob(&d).unwrap()).unwrap();
    let layer_path = store.blob_path(&Digest::parse(&manifest.layers[0].digest).unwrap());
    let mut v = View::default();
    v.apply(0, open_layer(&layer_path).unwrap(), "busybox")
        .unwrap();
    assert_eq!(
        v.get("bin/sh").unwrap().kind,
        NodeKind::Symlink {
            target: "/bin/busybox".into()
        }
    );
    assert_eq!(v.get("tmp").unwrap().mode, 0o1777);
    let passwd = read_file(open_layer(&layer_path).unwrap(), "/etc/passwd")
        .unwrap()
        .unwrap();
    assert!(
        String::from_utf8(passwd)
            .unwrap()
            .contains("builder:x:1000:1000")
    );
}

#[test]
fn layer_index_answers_without_reading_the_tar_again() {
    let st = tempfile::tempdir().unwrap();
    let store = Store::open(st.path()).unwrap();
    let bytes = layer(|w| {
        w.dir("etc", &m(0o755)).unwrap();
        w.file("etc/x", &m(0o600), 1, &b"x"[..]).unwrap();
        w.whiteout("old").unwrap();
    });
    let blob = store.put_blob(&bytes).unwrap();
    let first = store.layer_entries(&blob).unwrap();
    assert_eq!(
        first
            .iter()
            .map(|e| e.path.to_str().unwrap())
            .collect::<Vec<_>>(),
        ["etc", "etc/x", ".wh.old"]
    );
    // The tar is gone: the entries still come back, from the index.
    std::fs::remove_file(store.blob_path(&blob)).unwrap();
    assert_eq!(store.layer_entries(&blob).unwrap(), first);
    // Applying the index gives the same view as applying the tar.
    let (mut a, mut b) = (View::default(), View::default());
    a.apply(0, bytes.as_slice(), "tar").unwrap();
    b.apply_entries(0, &first);
    assert_eq!(a, b);
}
