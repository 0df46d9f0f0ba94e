//! Unpacking layers into overlay lower directories: contents and metadata, whiteouts, and hostile
//! layers that try to write outside the directory (they must not).
#![allow(clippy::unwrap_used)] // a test fails by panicking

use std::{collections::BTreeMap, os::unix::fs::MetadataExt, path::Path};

use kiln_builder::image::layer::{EntryMeta, LayerWriter};
use kiln_runtime::{
    layer::unpack::unpack_for_overlay,
    sandbox::overlay::{self, Overlay},
};

fn m(mode: u32, uid: u32) -> EntryMeta {
    EntryMeta {
        mode,
        uid,
        gid: uid,
        mtime: 1_600_000_000,
        xattrs: BTreeMap::new(),
    }
}

/// A raw tar entry (LayerWriter refuses hostile paths, so these are made by hand).
fn raw(
    b: &mut tar::Builder<Vec<u8>>,
    path: &str,
    kind: tar::EntryType,
    link: Option<&str>,
    data: &[u8],
) {
    let mut h = tar::Header::new_gnu();
    h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
    h.set_entry_type(kind);
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    if let Some(l) = link {
        h.set_link_name_literal(l).unwrap();
    }
    h.set_cksum();
    b.append(&h, data).unwrap();
}

#[test]
fn contents_metadata_and_whiteouts() {
    let mut w = LayerWriter::new(Vec::new(), None);
    w.dir("app", &m(0o750, 1000)).unwrap();
    let mut x = m(0o4755, 1000);
    x.xattrs.insert("user.kiln".into(), b"yes".to_vec());
    w.file("app/run", &x, 3, &b"abc"[..]).unwrap();
    w.hardlink("app/run2", "app/run", &m(0o4755, 1000)).unwrap();
    w.symlink("app/link", "/etc/passwd", &m(0o777, 0)).unwrap();
    w.whiteout("gone").unwrap();
    w.dir("cache", &m(0o755, 0)).unwrap();
    w.opaque("cache").unwrap();
    let (_, bytes) = w.finish().unwrap();
    let d = tempfile::tempdir().unwrap();
    unpack_for_overlay(bytes.as_slice(), d.path()).unwrap();
    let p = d.path();
    let run = std::fs::metadata(p.join("app/run")).unwrap();
    assert_eq!(
        run.mode() & 0o7777,
        0o4755,
        "setuid kept (chmod after chown)"
    );
    assert_eq!((run.uid(), run.gid()), (1000, 1000));
    assert_eq!(run.mtime(), 1_600_000_000);
    assert_eq!(std::fs::read(p.join("app/run")).unwrap(), b"abc");
    assert_eq!(
        std::fs::metadata(p.join("app/run2")).unwrap().ino(),
        run.ino(),
        "hard link"
    );
    assert_eq!(
        std::fs::read_link(p.join("app/link")).unwrap(),
        Path::new("/etc/passwd")
    );
    let app = std::fs::metadata(p.join("app")).unwrap();
    assert_eq!(
        (app.mode() & 0o7777, app.uid(), app.mtime()),
        (0o750, 1000, 1_600_000_000)
    );
    let mut buf = [0u8; 8];
    let n = rustix::fs::getxattr(p.join("app/run").as_path(), "user.kiln", &mut buf).unwrap();
    assert_eq!(&buf[..n], b"yes");
    // Whiteout: a 0/0 character device; opaque directory: the overlay xattr.
    let gone = std::fs::symlink_metadata(p.join("gone")).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_char_device(
        &gone.file_type()
    ));
    assert_eq!(gone.rdev(), 0);
    let n = rustix::fs::getxattr(
        p.join("cache").as_path(),
        "trusted.overlay.opaque",
        &mut buf,
    )
    .unwrap();
    assert_eq!(&buf[..n], b"y");
}

#[test]
fn hostile_paths_stay_inside() {
    // A canary outside the target directory that every trick below aims at.
    let outer = tempfile::tempdir().unwrap();
    let target = outer.path().join("layer");
    std::fs::create_dir(&target).unwrap();
    let canary = outer.path().join("canary");
    std::fs::write(&canary, "untouched").unwrap();
    let canary_s = canary.to_str().unwrap().to_string();

    let mut b = tar::Builder::new(Vec::new());
    // `..` components stop at the root.
    raw(
        &mut b,
        "../../canary",
        tar::EntryType::Regular,
        None,
        b"dotdot",
    );
    // An absolute symlink, then a write through it: resolved inside the directory.
    raw(&mut b, "root-link", tar::EntryType::Symlink, Some("/"), b"");
    let through = format!(
        "root-link{}",
        canary_s
            .trim_start_matches('/')
            .rsplit_once('/')
            .map(|(d, _)| format!("/{d}"))
            .unwrap_or_default()
    );
    raw(
        &mut b,
        &format!("{through}/canary"),
        tar::EntryType::Regular,
        None,
        b"through-symlink",
    );
    // A relative symlink climbing up, then a write through it.
    raw(
        &mut b,
        "up",
        tar::EntryType::Symlink,
        Some("../../../../.."),
        b"",
    );
    raw(&mut b, "up/canary", tar::EntryType::Regular, None, b"up");
    // A symlink to the canary, then a regular file of the same name: the link is replaced.
    raw(
        &mut b,
        "victim",
        tar::EntryType::Symlink,
        Some(&canary_s),
        b"",
    );
    raw(&mut b, "victim", tar::EntryType::Regular, None, b"replaced");
    let bytes = b.into_inner().unwrap();
    unpack_for_overlay(bytes.as_slice(), &target).unwrap();

    assert_eq!(std::fs::read_to_string(&canary).unwrap(), "untouched");
    assert_eq!(
        std::fs::read_to_string(target.join("canary")).unwrap(),
        "up",
        "`..` and `up/` land inside"
    );
    assert_eq!(
        std::fs::read_to_string(target.join(format!(
            "{}/canary",
            through.trim_start_matches("root-link/")
        )))
        .unwrap(),
        "through-symlink"
    );
    assert_eq!(
        std::fs::read_to_string(target.join("victim")).unwrap(),
        "replaced"
    );
    assert!(
        std::fs::symlink_metadata(target.join("victim"))
            .unwrap()
            .is_file()
    );
}

#[test]
fn a_hard_link_cannot_reach_a_host_file() {
    let outer = tempfile::tempdir().unwrap();
    let target = outer.path().join("layer");
    std::fs::create_dir(&target).unwrap();
    let canary = outer.path().join("canary");
    std::fs::write(&canary, "host").unwrap();
    let before = std::fs::metadata(&canary).unwrap().nlink();
    for link in [
        canary.to_str().unwrap().to_string(),
        "../canary".to_string(),
    ] {
        let mut b = tar::Builder::new(Vec::new());
        raw(&mut b, "stolen", tar::EntryType::Link, Some(&link), b"");
        let bytes = b.into_inner().unwrap();
        let e = unpack_for_overlay(bytes.as_slice(), &target).unwrap_err();
        assert!(e.to_string().contains("hard link"), "{e}");
    }
    assert_eq!(
        std::fs::metadata(&canary).unwrap().nlink(),
        before,
        "no link to the host file"
    );
    assert!(!target.join("stolen").exists());
}

#[test]
fn overlay_of_unpacked_layers_applies_whiteouts() {
    use kiln_runtime::{digest::Digest, oci::Manifest, store::Store};
    let st = tempfile::tempdir().unwrap();
    let store = Store::open(st.path()).unwrap();
    let base = concat!(env!("CARGO_MANIFEST_DIR"), "/../testdata/base/busybox-oci");
    let manifest = store.load(Path::new(base)).unwrap()[0].manifest;
    let (mf, cfg, _): (Manifest, _, _) = store.image(&manifest).unwrap();
    let base_blob = Digest::parse(&mf.layers[0].digest).unwrap();
    let base_diff = Digest::parse(&cfg.rootfs.diff_ids[0]).unwrap();
    // A second layer: delete /bin/ls (a whiteout), add /etc/motd.
    let mut w = LayerWriter::new(Vec::new(), None);
    w.whiteout("bin/ls").unwrap();
    w.dir("etc", &m(0o755, 0)).unwrap();
    w.file("etc/motd", &m(0o644, 0), 3, &b"hi\n"[..]).unwrap();
    let (info, bytes) = w.finish().unwrap();
    let top = store.put_blob(&bytes).unwrap();
    let dirs = store
        .unpacked_layers(&[base_blob, top], &[base_diff, info.diff_id])
        .unwrap();
    assert_eq!(dirs.len(), 2);
    // Unpacked once: asking again gives the same directories without unpacking.
    let again = store
        .unpacked_layers(&[base_blob, top], &[base_diff, info.diff_id])
        .unwrap();
    assert_eq!(dirs, again);

    let work = tempfile::tempdir().unwrap();
    let (upper, wdir, mnt) = (
        work.path().join("upper"),
        work.path().join("work"),
        work.path().join("mnt"),
    );
    for d in [&upper, &wdir, &mnt] {
        std::fs::create_dir(d).unwrap();
    }
    let ov = Overlay {
        lower: &dirs,
        upper: &upper,
        work: &wdir,
    };
    if let Err(e) = overlay::mount(ov, &mnt) {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "overlay mount failed under CI: {e}"
        );
        eprintln!(
            "skipped: overlay_of_unpacked_layers_applies_whiteouts: cannot mount overlayfs here: {e}"
        );
        return;
    }
    let seen = (
        mnt.join("bin/busybox").exists(),
        std::fs::symlink_metadata(mnt.join("bin/ls")).is_ok(),
        std::fs::read_to_string(mnt.join("etc/motd")).ok(),
        mnt.join("etc/passwd").exists(),
    );
    overlay::unmount(&mnt).unwrap();
    assert_eq!(
        seen,
        (true, false, Some("hi\n".to_string()), true),
        "(busybox, ls, motd, passwd)"
    );
}

#[test]
fn files_equal_to_the_donors_are_linked_and_nothing_else_is() {
    use kiln_runtime::layer::unpack::unpack_with_donor;
    let layer = |files: &[(&str, &[u8], u32, i64)]| {
        let mut w = LayerWriter::new(Vec::new(), None);
        w.dir("app", &m(0o755, 0)).unwrap();
        w.dir("app/sub", &m(0o755, 0)).unwrap();
        for (path, data, mode, mtime) in files {
            let meta = EntryMeta {
                mtime: *mtime,
                ..m(*mode, 0)
            };
            w.file(path, &meta, data.len() as u64, *data).unwrap();
        }
        w.finish().unwrap().1
    };
    let t = 1_600_000_000;
    let before = layer(&[
        ("app/same", b"same", 0o644, t),
        ("app/edited", b"old", 0o644, t),
        ("app/sub/chmod", b"x", 0o644, t),
        ("app/sub/touched", b"y", 0o644, t),
        ("app/sub/linkme", b"z", 0o644, t),
    ]);
    let donor = tempfile::tempdir().unwrap();
    let made = unpack_with_donor(before.as_slice(), donor.path(), None, true).unwrap();
    let sha = |b: &[u8]| -> [u8; 32] {
        sha2::Digest::finalize(<sha2::Sha256 as sha2::Digest>::new_with_prefix(b)).into()
    };
    assert_eq!(
        made.files,
        vec![
            ("app/edited".into(), sha(b"old")),
            ("app/same".into(), sha(b"same")),
            ("app/sub/chmod".into(), sha(b"x")),
            ("app/sub/linkme".into(), sha(b"z")),
            ("app/sub/touched".into(), sha(b"y")),
        ]
    );
    // The donor's own hostile shape: a symlink where the new layer has a file, and a
    // directory replaced by a link that leads out of it. Neither may be followed.
    let outside = tempfile::tempdir().unwrap();
    // The host file has the hostile entry's bytes, mode, owner and time: only resolving inside
    // the donor keeps it out.
    let escape = outside.path().join("escape");
    std::fs::write(&escape, b"escape").unwrap();
    std::fs::set_permissions(&escape, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&escape)
        .unwrap()
        .set_modified(std::time::UNIX_EPOCH)
        .unwrap();
    std::fs::remove_file(donor.path().join("app/sub/linkme")).unwrap();
    std::os::unix::fs::symlink("../same", donor.path().join("app/sub/linkme")).unwrap();
    std::fs::create_dir(donor.path().join("real")).unwrap();
    std::os::unix::fs::symlink(outside.path(), donor.path().join("out")).unwrap();

    let after = layer(&[
        ("app/same", b"same", 0o644, t),
        ("app/edited", b"new", 0o644, t),
        ("app/sub/chmod", b"x", 0o600, t),
        ("app/sub/touched", b"y", 0o644, t + 1),
        ("app/sub/linkme", b"z", 0o644, t),
    ]);
    let mut hostile = tar::Builder::new(Vec::new());
    raw(
        &mut hostile,
        "out/escape",
        tar::EntryType::Regular,
        None,
        b"escape",
    );
    let hostile = hostile.into_inner().unwrap();

    let linked_dir = tempfile::tempdir().unwrap();
    let u = unpack_with_donor(
        after.as_slice(),
        linked_dir.path(),
        Some((donor.path(), made.files.clone())),
        false,
    )
    .unwrap();
    assert_eq!(
        u.linked, 1,
        "only app/same is the donor's, byte for byte and in metadata"
    );
    let plain = tempfile::tempdir().unwrap();
    unpack_for_overlay(after.as_slice(), plain.path()).unwrap();
    for f in [
        "app/same",
        "app/edited",
        "app/sub/chmod",
        "app/sub/touched",
        "app/sub/linkme",
    ] {
        let (a, b) = (linked_dir.path().join(f), plain.path().join(f));
        assert_eq!(
            std::fs::read(&a).unwrap(),
            std::fs::read(&b).unwrap(),
            "{f}"
        );
        let (ma, mb) = (
            std::fs::symlink_metadata(&a).unwrap(),
            std::fs::symlink_metadata(&b).unwrap(),
        );
        assert!(ma.is_file(), "{f}");
        assert_eq!(
            (ma.mode(), ma.uid(), ma.mtime()),
            (mb.mode(), mb.uid(), mb.mtime()),
            "{f}"
        );
    }
    let ino = |p: &Path| std::fs::metadata(p).unwrap().ino();
    assert_eq!(
        ino(&linked_dir.path().join("app/same")),
        ino(&donor.path().join("app/same"))
    );
    assert_ne!(
        ino(&linked_dir.path().join("app/edited")),
        ino(&donor.path().join("app/edited"))
    );

    // A donor path through its own link to the host is resolved inside the donor: the host
    // file is never linked in, though its bytes, metadata and the donor's digests all match.
    let h = tempfile::tempdir().unwrap();
    let listed = vec![("out/escape".into(), sha(b"escape"))];
    let u = unpack_with_donor(
        hostile.as_slice(),
        h.path(),
        Some((donor.path(), listed)),
        false,
    )
    .unwrap();
    assert_eq!(u.linked, 0);
    assert_ne!(
        ino(&h.path().join("out/escape")),
        ino(&outside.path().join("escape"))
    );
}

/// A layer whose names are not UTF-8, written as docker's Go archive/tar writes them (a PAX
/// `path` record of raw bytes) and as GNU tar does (raw bytes in the header): unpacked under
/// those very bytes, a link to such a name made, a whiteout of one applied, and the layer's
/// index and view name them as bytes (no U+FFFD anywhere).
#[test]
fn names_that_are_not_utf8_unpack_as_bytes() {
    use std::{ffi::OsStr, os::unix::ffi::OsStrExt};
    let put = |field: &mut [u8], name: &[u8]| field[..name.len()].copy_from_slice(name);
    let mut b = tar::Builder::new(Vec::new());
    b.append_pax_extensions([("path", &b"caf\xe9-pax"[..])])
        .unwrap();
    raw(
        &mut b,
        "cafe-pax-fallback",
        tar::EntryType::Regular,
        None,
        b"pax",
    );
    let mut h = tar::Header::new_gnu();
    put(&mut h.as_old_mut().name, b"d\xff/plain");
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_size(5);
    h.set_cksum();
    b.append(&h, &b"plain"[..]).unwrap();
    let mut h = tar::Header::new_gnu();
    put(&mut h.as_old_mut().name, b"link");
    put(&mut h.as_old_mut().linkname, b"caf\xe9-pax");
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_mode(0o777);
    h.set_size(0);
    h.set_cksum();
    b.append(&h, std::io::empty()).unwrap();
    let mut h = tar::Header::new_gnu();
    put(&mut h.as_old_mut().name, b"hard");
    put(&mut h.as_old_mut().linkname, b"d\xff/plain");
    h.set_entry_type(tar::EntryType::Link);
    h.set_size(0);
    h.set_cksum();
    b.append(&h, std::io::empty()).unwrap();
    let mut h = tar::Header::new_gnu();
    put(&mut h.as_old_mut().name, b".wh.o\xfed");
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(0);
    h.set_cksum();
    b.append(&h, std::io::empty()).unwrap();
    let bytes = b.into_inner().unwrap();

    let d = tempfile::tempdir().unwrap();
    let index = kiln_runtime::layer::unpack::unpack_indexed(bytes.as_slice(), d.path()).unwrap();
    let at = |n: &[u8]| d.path().join(OsStr::from_bytes(n));
    assert_eq!(std::fs::read(at(b"caf\xe9-pax")).unwrap(), b"pax");
    assert_eq!(std::fs::read(at(b"d\xff/plain")).unwrap(), b"plain");
    assert_eq!(
        std::fs::read_link(at(b"link"))
            .unwrap()
            .as_os_str()
            .as_bytes(),
        b"caf\xe9-pax"
    );
    assert_eq!(
        std::fs::metadata(at(b"hard")).unwrap().ino(),
        std::fs::metadata(at(b"d\xff/plain")).unwrap().ino()
    );
    let wh = std::fs::symlink_metadata(at(b"o\xfed")).unwrap();
    assert_eq!(wh.rdev(), 0, "the whiteout, a 0/0 character device");
    let paths: Vec<&[u8]> = index.iter().map(|e| e.path.as_slice()).collect();
    assert_eq!(
        paths,
        [
            &b"caf\xe9-pax"[..],
            b"d\xff/plain",
            b"link",
            b"hard",
            b".wh.o\xfed"
        ]
    );
    let mut view = kiln_runtime::layer::view::View::default();
    view.apply_entries(0, &index);
    assert!(view.get(b"d\xff/plain").is_some());
    assert!(matches!(
        &view.get("link").unwrap().kind,
        kiln_runtime::layer::view::NodeKind::Symlink { target } if target.as_slice() == b"caf\xe9-pax"
    ));
    // No name was made UTF-8 on the way (U+FFFD is EF BF BD).
    assert!(
        index
            .iter()
            .all(|e| !e.path.windows(3).any(|w| w == "\u{FFFD}".as_bytes()))
    );
}
