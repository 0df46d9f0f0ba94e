//! Helpers shared by the runtime's integration tests.
#![allow(dead_code, clippy::unwrap_used)] // each test file uses a subset; a test fails by panicking

use std::path::Path;

use kiln_runtime::{
    digest::Digest,
    oci::Manifest,
    sandbox::{
        cgroup::{Cgroup, Limits},
        overlay::{self, Overlay},
        process::{Spec, Stdio, exit_code, run},
    },
    store::Store,
};

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

/// A busybox root filesystem mounted from the store; unmounted when dropped.
pub struct Root {
    pub dir: tempfile::TempDir,
    _store: tempfile::TempDir,
}

impl Root {
    pub fn new(test: &str) -> Option<Root> {
        if !can_mount(test) {
            return None;
        }
        let st = tempfile::tempdir().unwrap();
        let store = Store::open(st.path()).unwrap();
        let (blobs, diffs) = busybox_layers(&store);
        let lower = store.unpacked_layers(&blobs, &diffs).unwrap();
        let dir = tempfile::tempdir().unwrap();
        for d in ["upper", "work", "mnt"] {
            std::fs::create_dir(dir.path().join(d)).unwrap();
        }
        let (upper, work) = (dir.path().join("upper"), dir.path().join("work"));
        let ov = Overlay {
            lower: &lower,
            upper: &upper,
            work: &work,
        };
        overlay::mount(ov, &dir.path().join("mnt")).unwrap();
        Some(Root { dir, _store: st })
    }

    pub fn mnt(&self) -> std::path::PathBuf {
        self.dir.path().join("mnt")
    }

    /// Runs `sh -c script`; returns (exit code, stdout + stderr).
    pub fn sh(&self, script: &str, edit: impl FnOnce(&mut Spec)) -> (i32, String) {
        let mut spec = Spec::new(&self.mnt(), vec!["sh".into(), "-c".into(), script.into()]);
        // A cgroup of its own, as every caller gives (the device allow-list).
        let name = self
            .dir
            .path()
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned();
        spec.cgroup = Cgroup::create(&name, &Limits::default()).0;
        edit(&mut spec);
        let out = tempfile::tempfile().unwrap();
        let status = run(
            &spec,
            Stdio::null(),
            Stdio::from(out.try_clone().unwrap()),
            Stdio::from(out.try_clone().unwrap()),
        )
        .unwrap();
        let mut text = String::new();
        use std::io::{Read, Seek};
        let mut out = out;
        out.rewind().unwrap();
        out.read_to_string(&mut text).unwrap();
        (exit_code(status), text)
    }
}

impl Drop for Root {
    fn drop(&mut self) {
        let _ = overlay::unmount(&self.mnt());
    }
}
