//! The content digest of one source a COPY names in the build context, as BuildKit's
//! `contenthash` checksums a source: for a file, its mode, content and extended attributes; for
//! a directory, the same for every path below it (names, kinds, modes, contents, link targets,
//! which names are one file). It is computed from the snapshot in one pass, reading no file and
//! allocating nothing per entry, so a context COPY's cache key costs one digest per source
//! instead of one cache input per copied file, and an unchanged 30,000-file `COPY . .` is
//! keyed without planning its layer. What never enters it, as in the per-file inputs: mtimes,
//! owners (a context file is copied as 0:0 or `--chown`), sockets and devices (never copied).

use std::collections::BTreeMap;

use kiln_runtime::digest::Digest;
use sha2::{Digest as _, Sha256};

use crate::context::snapshot::{Entry, EntryKind, Snapshot};

fn put(h: &mut Sha256, bytes: &[u8]) {
    h.update((bytes.len() as u64).to_le_bytes());
    h.update(bytes);
}

/// One entry as a copy writes it; `linked`: the earlier name of the same file in this source.
fn put_entry(h: &mut Sha256, e: &Entry, linked: Option<&[u8]>) {
    match (&e.kind, linked) {
        (EntryKind::File { .. }, Some(first)) => {
            h.update(b"h");
            put(h, first);
        }
        (EntryKind::File { digest, .. }, None) => {
            h.update(b"f");
            h.update(e.mode.to_le_bytes());
            h.update(digest.to_bytes());
        }
        (EntryKind::Dir, _) => {
            h.update(b"d");
            h.update(e.mode.to_le_bytes());
        }
        (EntryKind::Symlink { target }, _) => {
            h.update(b"l");
            put(h, target);
        }
        (EntryKind::Other, _) => return,
    }
    h.update((e.xattrs.len() as u64).to_le_bytes());
    for (k, v) in &e.xattrs {
        put(h, k.as_bytes());
        put(h, v);
    }
}

/// The digest of the context source at `path` (`""`: the whole context), or `None` when no
/// such entry exists. A symlink is digested as a link: the caller passes the path it follows.
pub(crate) fn context_source(snap: &Snapshot, path: impl AsRef<[u8]>) -> Option<Digest> {
    let path = path.as_ref();
    let mut h = Sha256::new();
    h.update(b"kiln.context-source.v1");
    if !path.is_empty() {
        let e = snap.find(path)?;
        if e.kind != EntryKind::Dir {
            put_entry(&mut h, e, None);
            return Some(Digest::from_sha256(h));
        }
    }
    let below = snap.below(path);
    let strip = if path.is_empty() { 0 } else { path.len() + 1 };
    // Names of one file (same device and inode) stay one file: later names are links to the
    // first, by its name in the source.
    let mut first_name: BTreeMap<(u64, u64), &[u8]> = BTreeMap::new();
    // Sockets, fifos and devices are never copied: not even their names count.
    let copied = below.iter().filter(|e| e.kind != EntryKind::Other);
    h.update((copied.clone().count() as u64).to_le_bytes());
    for e in copied {
        let rel = &e.path[strip..];
        let linked = match e.inode {
            Some(id) => match first_name.get(&id) {
                Some(first) => Some(*first),
                None => {
                    first_name.insert(id, rel);
                    None
                }
            },
            None => None,
        };
        put(&mut h, rel);
        put_entry(&mut h, e, linked);
    }
    Some(Digest::from_sha256(h))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::snapshot::ScanStats;

    fn file(path: &str, content: &[u8], mode: u32) -> Entry {
        Entry {
            path: path.into(),
            kind: EntryKind::File {
                size: content.len() as u64,
                digest: Digest::of(content),
            },
            mode,
            uid: 1000,
            gid: 1000,
            mtime: 1,
            inode: None,
            xattrs: Vec::new(),
        }
    }

    fn dir(path: &str) -> Entry {
        Entry {
            kind: EntryKind::Dir,
            mode: 0o755,
            ..file(path, b"", 0)
        }
    }

    fn snap(mut entries: Vec<Entry>) -> Snapshot {
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        Snapshot {
            root: "/ctx".into(),
            entries,
            stats: ScanStats::default(),
        }
    }

    fn base() -> Vec<Entry> {
        vec![
            file("package.json", b"{}", 0o644),
            dir("src"),
            file("src/a.js", b"a", 0o644),
            dir("src/lib"),
            file("src/lib/b.js", b"b", 0o644),
            file("src-old", b"x", 0o644),
        ]
    }

    #[test]
    fn what_a_copy_writes_changes_the_digest_and_nothing_else_does() {
        let s = snap(base());
        let all = context_source(&s, "").unwrap();
        let src = context_source(&s, "src").unwrap();
        assert_eq!(context_source(&s, "missing"), None);
        // A sibling whose name shares the prefix is not below `src`.
        let mut e = base();
        e[5] = file("src-old", b"changed", 0o644);
        let s2 = snap(e);
        assert_eq!(context_source(&s2, "src").unwrap(), src);
        assert_ne!(context_source(&s2, "").unwrap(), all);
        // Content, mode, a new file, a rename, xattrs: each changes it.
        let changed = |f: &dyn Fn(&mut Vec<Entry>)| {
            let mut e = base();
            f(&mut e);
            context_source(&snap(e), "src").unwrap()
        };
        assert_ne!(changed(&|e| e[2] = file("src/a.js", b"A", 0o644)), src);
        assert_ne!(changed(&|e| e[2].mode = 0o755), src);
        assert_ne!(changed(&|e| e.push(file("src/c.js", b"", 0o644))), src);
        assert_ne!(changed(&|e| e[2].path = "src/z.js".into()), src);
        assert_ne!(
            changed(&|e| e[2].xattrs = vec![("user.k".into(), b"v".to_vec())]),
            src
        );
        // A socket is never copied: its presence changes nothing.
        assert_eq!(
            changed(&|e| e.push(Entry {
                kind: EntryKind::Other,
                ..file("src/sock", b"", 0o755)
            })),
            src
        );
        // Owner and mtime are not what a context copy writes.
        assert_eq!(
            changed(&|e| {
                e[2].mtime = 99;
                e[2].uid = 0;
            }),
            src
        );
        // A single file: its own digest, the same under any directory.
        let pkg = context_source(&s, "package.json").unwrap();
        let mut moved = file("package.json", b"{}", 0o644);
        moved.mtime = 5;
        assert_eq!(
            context_source(&snap(vec![moved]), "package.json").unwrap(),
            pkg
        );
    }

    #[test]
    fn hard_links_are_one_file_by_their_first_name() {
        let linked = |second: &str| {
            let mut a = file("d/a", b"same", 0o644);
            a.inode = Some((1, 7));
            let mut b = file(second, b"same", 0o644);
            b.inode = Some((1, 7));
            context_source(&snap(vec![dir("d"), a, b]), "d").unwrap()
        };
        let unlinked = context_source(
            &snap(vec![
                dir("d"),
                file("d/a", b"same", 0o644),
                file("d/b", b"same", 0o644),
            ]),
            "d",
        )
        .unwrap();
        assert_ne!(linked("d/b"), unlinked);
        assert_ne!(linked("d/b"), linked("d/c"));
    }
}
