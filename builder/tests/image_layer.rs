//! Layer tars: read back field by field, byte-identical across runs, readable by GNU tar.
#![allow(clippy::unwrap_used)] // a test fails by panicking

use std::{collections::BTreeMap, io::Read};

use kiln_builder::image::layer::{EntryMeta, LayerInfo, LayerWriter};

fn meta(mode: u32, uid: u32, mtime: i64) -> EntryMeta {
    EntryMeta {
        mode,
        uid,
        gid: uid,
        mtime,
        xattrs: BTreeMap::new(),
    }
}

const LONG: &str = "very/deep/directory/structure/that/goes/on/and/on/beyond/the/ustar/name/limit/of/one/hundred/bytes/file.txt";

fn sample(epoch: Option<i64>) -> (LayerInfo, Vec<u8>) {
    let mut w = LayerWriter::new(Vec::new(), epoch);
    w.dir("app", &meta(0o755, 0, 1_700_000_000)).unwrap();
    w.opaque("app").unwrap();
    let mut m = meta(0o4755, 3_000_000, 1_700_000_123);
    m.xattrs.insert("user.b".into(), b"2".to_vec());
    m.xattrs
        .insert("security.capability".into(), vec![1, 0, 0, 2]);
    w.file("app/run.sh", &m, 11, &b"echo hello\n"[..]).unwrap();
    w.hardlink(
        "app/run-again.sh",
        "app/run.sh",
        &meta(0o4755, 0, 1_700_000_123),
    )
    .unwrap();
    w.symlink("app/link", "/etc/passwd", &meta(0o777, 0, 1_700_000_000))
        .unwrap();
    w.file(LONG, &meta(0o644, 1000, 1_800_000_000), 3, &b"abc"[..])
        .unwrap();
    w.whiteout("etc/old.conf").unwrap();
    w.finish().unwrap()
}

#[test]
fn entries_read_back_exactly() {
    let (info, bytes) = sample(None);
    assert_eq!(info.size, bytes.len() as u64);
    let mut ar = tar::Archive::new(bytes.as_slice());
    let mut seen = Vec::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let path = e.path().unwrap().to_string_lossy().to_string();
        let h = e.header().clone();
        // No user or group names, ever.
        assert_eq!(h.username().unwrap(), Some(""), "{path}");
        assert_eq!(h.groupname().unwrap(), Some(""), "{path}");
        let xattrs: Vec<(String, Vec<u8>)> = e
            .pax_extensions()
            .unwrap()
            .into_iter()
            .flatten()
            .map(|p| p.unwrap())
            .filter(|p| p.key().unwrap().starts_with("SCHILY.xattr."))
            .map(|p| (p.key().unwrap().to_string(), p.value_bytes().to_vec()))
            .collect();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        seen.push((
            path.clone(),
            h.entry_type(),
            h.mode().unwrap(),
            h.mtime().unwrap(),
        ));
        match path.as_str() {
            "app/run.sh" => {
                assert_eq!(data, b"echo hello\n");
                // Keys in order; a uid beyond ustar's 7 octal digits travels in PAX.
                assert_eq!(
                    xattrs,
                    vec![
                        ("SCHILY.xattr.security.capability".into(), vec![1, 0, 0, 2]),
                        ("SCHILY.xattr.user.b".into(), b"2".to_vec()),
                    ]
                );
            }
            "app/run-again.sh" => {
                assert_eq!(h.link_name().unwrap().unwrap().to_str(), Some("app/run.sh"));
            }
            "app/link" => {
                assert_eq!(
                    h.link_name().unwrap().unwrap().to_str(),
                    Some("/etc/passwd")
                );
            }
            p if p == LONG => assert_eq!(data, b"abc"),
            _ => assert!(data.is_empty(), "{path}"),
        }
    }
    let names: Vec<&str> = seen.iter().map(|s| s.0.as_str()).collect();
    assert_eq!(
        names,
        vec![
            "app/",
            "app/.wh..wh..opq",
            "app/run.sh",
            "app/run-again.sh",
            "app/link",
            LONG,
            "etc/.wh.old.conf",
        ]
    );
    let by_name = |n: &str| seen.iter().find(|s| s.0 == n).unwrap().clone();
    assert_eq!(by_name("app/run.sh").1, tar::EntryType::Regular);
    assert_eq!(by_name("app/run.sh").2, 0o4755);
    assert_eq!(by_name("app/run-again.sh").1, tar::EntryType::Link);
    assert_eq!(by_name("app/link").1, tar::EntryType::Symlink);
    assert_eq!(by_name("etc/.wh.old.conf").3, 0, "whiteouts have mtime 0");
    assert_eq!(by_name("app/").3, 1_700_000_000);
}

#[test]
fn same_input_same_bytes_and_pinned_digest() {
    let (a, bytes_a) = sample(None);
    let (b, bytes_b) = sample(None);
    assert_eq!(bytes_a, bytes_b);
    assert_eq!(a, b);
    // Pinned: any change to header layout changes every image digest,
    // so it must be deliberate. Update this literal only together with a note on why.
    assert_eq!(
        a.diff_id.to_string(),
        "sha256:d4ffb9e5577a6f73865ad2c181fe46978de2b848427e1e6c03006039f65ec0f1"
    );
}

#[test]
fn source_date_epoch_clamps_newer_times_only() {
    let (_, bytes) = sample(Some(1_750_000_000));
    let mut ar = tar::Archive::new(bytes.as_slice());
    for e in ar.entries().unwrap() {
        let e = e.unwrap();
        let path = e.path().unwrap().to_string_lossy().to_string();
        let mtime = e.header().mtime().unwrap();
        if path == LONG {
            assert_eq!(mtime, 1_750_000_000, "newer than the epoch: clamped");
        }
        if path == "app/" {
            assert_eq!(mtime, 1_700_000_000, "older than the epoch: kept");
        }
    }
}

#[test]
fn gnu_tar_reads_it() {
    let Ok(out) = std::process::Command::new("tar").arg("--version").output() else {
        eprintln!("skipped: gnu_tar_reads_it: no `tar` on this machine");
        return;
    };
    assert!(out.status.success());
    let dir = tempfile::tempdir().unwrap();
    let (_, bytes) = sample(None);
    let path = dir.path().join("layer.tar");
    std::fs::write(&path, &bytes).unwrap();
    let out = std::process::Command::new("tar")
        .args(["--numeric-owner", "--xattrs", "-tvf"])
        .arg(&path)
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(listing.contains(LONG), "{listing}");
    assert!(
        listing.contains("3000000/3000000"),
        "large uid via PAX: {listing}"
    );
    assert!(listing.contains("app/link -> /etc/passwd"), "{listing}");
    assert!(
        listing.contains("app/run-again.sh link to app/run.sh"),
        "{listing}"
    );
}

#[test]
fn unsafe_or_inconsistent_entries_are_refused() {
    let mut w = LayerWriter::new(Vec::new(), None);
    for bad in ["../escape", "/abs", "a/../b", "", "a//b", "./a"] {
        assert!(w.dir(bad, &meta(0o755, 0, 0)).is_err(), "{bad:?}");
    }
    w.file("a", &meta(0o644, 0, 0), 1, &b"x"[..]).unwrap();
    assert!(
        w.file("a", &meta(0o644, 0, 0), 1, &b"x"[..]).is_err(),
        "duplicate"
    );
    assert!(w.hardlink("b", "missing", &meta(0o644, 0, 0)).is_err());
    assert!(
        w.file("c", &meta(0o644, 0, 0), 5, &b"xy"[..]).is_err(),
        "short data"
    );
}
