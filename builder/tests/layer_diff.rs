//! The layer of a RUN step is the diff of its overlayfs upper directory: changes made through a
//! real overlay mount (new, changed, deleted and replaced paths, a fifo, hard links, a symlink)
//! come out as the right entries, and the lower layer plus the new layer give exactly the tree
//! the mount showed.
#![allow(clippy::unwrap_used)] // a test fails by panicking

use std::{
    collections::BTreeMap,
    os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt},
    path::Path,
};

use kiln_builder::image::layer::{EntryMeta, LayerWriter};
use kiln_runtime::layer::{
    unpack::unpack_for_overlay,
    view::{View, read_entries},
};
use kiln_runtime::sandbox::overlay::{self, Overlay};

fn m(mode: u32) -> EntryMeta {
    EntryMeta {
        mode,
        mtime: 1_600_000_000,
        ..EntryMeta::default()
    }
}

/// Path → (kind letter, mode) of every entry under `root`, not following links.
fn listing(root: &Path) -> BTreeMap<String, (char, u32)> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, (char, u32)>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let md = std::fs::symlink_metadata(e.path()).unwrap();
            let rel = e.path().strip_prefix(root).unwrap().display().to_string();
            let ft = md.file_type();
            let kind = if ft.is_dir() {
                'd'
            } else if ft.is_symlink() {
                'l'
            } else if ft.is_fifo() {
                'p'
            } else {
                'f'
            };
            out.insert(rel, (kind, md.mode() & 0o7777));
            if ft.is_dir() {
                walk(root, &e.path(), out);
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

fn view_listing(v: &View) -> BTreeMap<String, (char, u32)> {
    use kiln_runtime::layer::view::NodeKind;
    v.iter()
        .map(|(p, n)| {
            let kind = match n.kind {
                NodeKind::Dir => 'd',
                NodeKind::Symlink { .. } => 'l',
                NodeKind::Other { .. } => 'p',
                _ => 'f',
            };
            (p.to_string(), (kind, n.mode))
        })
        .collect()
}

#[test]
fn upper_dir_of_a_real_overlay_becomes_the_layer() {
    // The lower layer.
    let mut w = LayerWriter::new(Vec::new(), None);
    for d in ["bin", "cache", "cache/sub", "etc"] {
        w.dir(d, &m(0o755)).unwrap();
    }
    w.file("bin/old", &m(0o755), 3, &b"old"[..]).unwrap();
    w.file("bin/keep", &m(0o755), 4, &b"keep"[..]).unwrap();
    w.file("cache/a", &m(0o644), 1, &b"a"[..]).unwrap();
    w.file("cache/sub/b", &m(0o644), 1, &b"b"[..]).unwrap();
    w.file("etc/conf", &m(0o644), 2, &b"v1"[..]).unwrap();
    let (_, lower_tar) = w.finish().unwrap();

    let work = tempfile::tempdir().unwrap();
    let [lower, upper, wdir, mnt] = ["lower", "upper", "work", "mnt"].map(|n| {
        let p = work.path().join(n);
        std::fs::create_dir(&p).unwrap();
        p
    });
    unpack_for_overlay(lower_tar.as_slice(), &lower).unwrap();
    let ov = Overlay {
        lower: std::slice::from_ref(&lower),
        upper: &upper,
        work: &wdir,
    };
    if let Err(e) = overlay::mount(ov, &mnt) {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "overlay mount failed under CI: {e}"
        );
        eprintln!(
            "skipped: upper_dir_of_a_real_overlay_becomes_the_layer: cannot mount overlayfs here: {e}"
        );
        return;
    }
    // What a RUN step might do.
    let changes = || -> std::io::Result<BTreeMap<String, (char, u32)>> {
        std::fs::write(mnt.join("new.txt"), "new")?;
        std::fs::set_permissions(mnt.join("new.txt"), std::fs::Permissions::from_mode(0o4750))?;
        std::fs::write(mnt.join("etc/conf"), "v2")?; // copy-up
        std::fs::remove_file(mnt.join("bin/old"))?; // whiteout
        std::fs::remove_dir_all(mnt.join("cache"))?; // replaced: opaque
        std::fs::create_dir(mnt.join("cache"))?;
        std::fs::write(mnt.join("cache/fresh"), "f")?;
        std::fs::create_dir(mnt.join("run"))?;
        rustix::fs::mknodat(
            rustix::fs::CWD,
            mnt.join("run/fifo"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )?;
        std::fs::write(mnt.join("run/a"), "same")?;
        std::fs::hard_link(mnt.join("run/a"), mnt.join("run/b"))?;
        std::os::unix::fs::symlink("/etc/passwd", mnt.join("run/link"))?;
        Ok(listing(&mnt))
    };
    let merged = changes();
    overlay::unmount(&mnt).unwrap();
    let merged = merged.unwrap();

    let mut w = LayerWriter::new(Vec::new(), None);
    w.append_upper(&upper).unwrap();
    let (info, layer) = w.finish().unwrap();
    let got: Vec<(String, char)> = info
        .entries
        .iter()
        .map(|e| (e.path.to_string(), e.typeflag as char))
        .collect();
    let want: Vec<(String, char)> = [
        ("bin", '5'),
        ("bin/.wh.old", '0'),
        ("cache", '5'),
        ("cache/.wh..wh..opq", '0'),
        ("cache/fresh", '0'),
        ("etc", '5'),
        ("etc/conf", '0'),
        ("new.txt", '0'),
        ("run", '5'),
        ("run/a", '0'),
        ("run/b", '1'),
        ("run/fifo", '6'),
        ("run/link", '2'),
    ]
    .iter()
    .map(|(p, t)| (p.to_string(), *t))
    .collect();
    assert_eq!(got, want, "entries of the diff layer");
    let link = info.entries.iter().find(|e| e.path == "run/b").unwrap();
    assert_eq!(
        link.link.as_ref().map(ToString::to_string).as_deref(),
        Some("run/a")
    );
    let new = info.entries.iter().find(|e| e.path == "new.txt").unwrap();
    assert_eq!(new.mode, 0o4750, "setuid bit kept");
    // Contents travel too.
    let raw = read_entries(layer.as_slice()).unwrap();
    assert_eq!(raw.len(), want.len());
    assert_eq!(
        kiln_runtime::layer::view::read_file(layer.as_slice(), "etc/conf")
            .unwrap()
            .as_deref(),
        Some(&b"v2"[..])
    );

    // Lower + diff = what the mount showed.
    let mut v = View::default();
    v.apply(0, lower_tar.as_slice(), "lower").unwrap();
    v.apply(1, layer.as_slice(), "diff").unwrap();
    assert_eq!(view_listing(&v), merged);

    // The same upper directory gives the same bytes.
    let mut again = LayerWriter::new(Vec::new(), None);
    again.append_upper(&upper).unwrap();
    assert_eq!(again.finish().unwrap().0.diff_id, info.diff_id);
}

#[test]
fn overlay_redirect_markers_are_refused() {
    let d = tempfile::tempdir().unwrap();
    std::fs::create_dir(d.path().join("moved")).unwrap();
    if let Err(e) = rustix::fs::setxattr(
        d.path().join("moved"),
        "trusted.overlay.redirect",
        b"/orig",
        rustix::fs::XattrFlags::empty(),
    ) {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "cannot set trusted xattrs under CI: {e}"
        );
        eprintln!("skipped: overlay_redirect_markers_are_refused: trusted xattrs: {e}");
        return;
    }
    let mut w = LayerWriter::new(Vec::new(), None);
    let e = w.append_upper(d.path()).unwrap_err();
    assert_eq!(e.path, "moved");
    assert!(e.message.contains("redirect_dir=off"), "{e}");
}
