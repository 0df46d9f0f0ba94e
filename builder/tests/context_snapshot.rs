//! The context snapshot on real directory trees.
#![allow(clippy::unwrap_used)] // a test fails by panicking

use bstr::ByteSlice;
use std::{fs, path::Path};

use kiln_builder::context::{
    ignore::Matcher,
    snapshot::{EntryKind, load_ignore, scan},
};
use kiln_runtime::{digest::Digest, store::Store};

fn write(root: &Path, rel: &str, data: &str) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, data).unwrap();
}

fn paths(s: &kiln_builder::context::snapshot::Snapshot) -> Vec<&str> {
    s.entries.iter().map(|e| e.path.to_str().unwrap()).collect()
}

#[test]
fn ignore_rules_apply_and_symlinks_are_not_followed() {
    let ctx = tempfile::tempdir().unwrap();
    let root = ctx.path();
    write(root, "app.py", "print(1)\n");
    write(root, "README.md", "docs");
    write(root, "notes.md", "private");
    write(root, "node_modules/a/index.js", "x");
    write(root, "build/out.bin", "bin");
    write(root, "build/keep/me.txt", "kept");
    std::os::unix::fs::symlink("/etc/passwd", root.join("passwd-link")).unwrap();
    write(
        root,
        ".dockerignore",
        "*.md\n!README.md\nnode_modules\nbuild\n!build/keep\n",
    );
    let m = load_ignore(root, None).unwrap();
    let snap = scan(root, &m, None).unwrap();
    assert_eq!(
        paths(&snap),
        vec![
            ".dockerignore",
            "README.md",
            "app.py",
            "build",
            "build/keep",
            "build/keep/me.txt",
            "passwd-link",
        ]
    );
    let link = snap
        .entries
        .iter()
        .find(|e| e.path == "passwd-link")
        .unwrap();
    assert_eq!(
        link.kind,
        EntryKind::Symlink {
            target: "/etc/passwd".into()
        },
        "a symlink is recorded as a link, its target never read"
    );
    let app = snap.entries.iter().find(|e| e.path == "app.py").unwrap();
    assert_eq!(
        app.kind,
        EntryKind::File {
            size: 9,
            digest: Digest::of(b"print(1)\n")
        }
    );
}

#[test]
fn digests_ignore_mtime_and_the_store_remembers_them() {
    let ctx = tempfile::tempdir().unwrap();
    let st = tempfile::tempdir().unwrap();
    let store = Store::open(st.path()).unwrap();
    let root = ctx.path();
    for i in 0..20 {
        write(root, &format!("src/f{i}.txt"), &format!("content {i}"));
    }
    let none = Matcher::default();
    let first = scan(root, &none, Some(&store)).unwrap();
    assert_eq!((first.stats.files, first.stats.hashed), (20, 20));

    // Unchanged files are not read again.
    let second = scan(root, &none, Some(&store)).unwrap();
    assert_eq!(second.stats.hashed, 0);
    assert_eq!(first.entries, second.entries);

    // Touching a file (same bytes, new mtime) changes its stamp, so it is re-read, and its
    // digest is unchanged: a touch is a cache hit downstream.
    let f0 = root.join("src/f0.txt");
    let later = std::time::SystemTime::now() + std::time::Duration::from_secs(3600);
    fs::File::options()
        .write(true)
        .open(&f0)
        .unwrap()
        .set_modified(later)
        .unwrap();
    let third = scan(root, &none, Some(&store)).unwrap();
    assert_eq!(third.stats.hashed, 1);
    let kinds = |s: &kiln_builder::context::snapshot::Snapshot| {
        s.entries.iter().map(|e| e.kind.clone()).collect::<Vec<_>>()
    };
    assert_eq!(kinds(&first), kinds(&third));

    // Changed content is seen.
    fs::write(&f0, "new content").unwrap();
    let fourth = scan(root, &none, Some(&store)).unwrap();
    let e = fourth
        .entries
        .iter()
        .find(|e| e.path == "src/f0.txt")
        .unwrap();
    assert_eq!(
        e.kind,
        EntryKind::File {
            size: 11,
            digest: Digest::of(b"new content")
        }
    );
}

#[test]
fn dockerfile_specific_ignore_file_takes_precedence() {
    let ctx = tempfile::tempdir().unwrap();
    let root = ctx.path();
    write(root, "a.txt", "a");
    write(root, "b.txt", "b");
    write(root, ".dockerignore", "a.txt\n");
    write(root, "build/Dockerfile", "FROM scratch\n");
    write(root, "build/Dockerfile.dockerignore", "b.txt\n");
    let m = load_ignore(root, Some(&root.join("build/Dockerfile"))).unwrap();
    assert!(m.excludes("b.txt") && !m.excludes("a.txt"));
    let m = load_ignore(root, Some(&root.join("other/Dockerfile"))).unwrap();
    assert!(m.excludes("a.txt") && !m.excludes("b.txt"));
    write(root, ".dockerignore", "x[\n");
    let err = load_ignore(root, None).unwrap_err().to_string();
    assert!(
        err.contains(".dockerignore") && err.contains("syntax error in pattern"),
        "{err}"
    );
}

#[test]
fn entries_come_in_byte_order_of_their_paths() {
    // Names that sort before `/` ('-', '.', ' ') beside directories of the same stem: a
    // depth-first walk by name would put `lib/x` before `lib.js`, byte order puts it after.
    let ctx = tempfile::tempdir().unwrap();
    let root = ctx.path();
    for p in [
        "lib/x",
        "lib.js",
        "lib-a/y",
        "lib a",
        "lib/z/deep",
        "lib0",
        "a/b/c",
        "a.b",
        "A",
    ] {
        write(root, p, p);
    }
    let st = tempfile::tempdir().unwrap();
    let store = Store::open(st.path()).unwrap();
    let snap = scan(root, &Matcher::default(), Some(&store)).unwrap();
    let got = paths(&snap);
    let mut sorted = got.clone();
    sorted.sort();
    assert_eq!(got, sorted);
    assert_eq!(got.len(), 14);
    // Found again by binary search, every one.
    for p in &got {
        assert_eq!(snap.find(p).map(|e| e.path.to_str().unwrap()), Some(*p));
    }
    assert_eq!(
        snap.below("lib")
            .iter()
            .map(|e| e.path.to_str().unwrap())
            .collect::<Vec<_>>(),
        ["lib/x", "lib/z", "lib/z/deep"]
    );

    // A removed file is forgotten, one left is still not read again.
    fs::remove_file(root.join("lib.js")).unwrap();
    let again = scan(root, &Matcher::default(), Some(&store)).unwrap();
    assert_eq!((again.stats.files, again.stats.hashed), (8, 0));
    write(root, "lib.js", "lib.js");
    // Written again with its old time: the rewrite may fall in the next second, and the
    // entries compared below carry their times.
    let old = snap.find("lib.js").unwrap().mtime;
    fs::File::options()
        .write(true)
        .open(root.join("lib.js"))
        .unwrap()
        .set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(old as u64))
        .unwrap();
    let back = scan(root, &Matcher::default(), Some(&store)).unwrap();
    assert_eq!(back.stats.hashed, 1);
    assert_eq!(back.entries, snap.entries);
}
