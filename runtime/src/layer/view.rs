//! The merged filesystem view of a stack of layers: which paths exist, what they are, and which
//! layer holds each file's content. Built by reading the layer tars in order and applying
//! whiteouts (`.wh.<name>` deletes a path and everything below it; `.wh..wh..opq` hides every
//! lower child of a directory). Nothing is written to disk.

use std::{
    collections::BTreeMap,
    io::{BufReader, Read},
    os::unix::ffi::OsStrExt,
    path::Path,
};

use bstr::{BStr, BString, ByteSlice};
use serde::{Deserialize, Serialize};

/// What a path is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeKind {
    Dir,
    File {
        size: u64,
    },
    Symlink {
        target: BString,
    },
    /// A hard link to another path of the same layer.
    Hardlink {
        target: BString,
    },
    /// A fifo or a device node: its tar type flag (`6` fifo, `3` char, `4` block).
    Other {
        typeflag: u8,
    },
}

/// One path of the merged view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: NodeKind,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    /// Index of the layer (in the stack) whose entry this is.
    pub layer: usize,
}

/// Problems reading a layer.
#[derive(Debug, thiserror::Error)]
#[error("layer {layer}: {message}")]
pub struct LayerError {
    pub layer: String,
    pub message: String,
}

/// The zstd frame magic number (RFC 8878).
pub const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// Opens a layer tar, transparently decompressing gzip (every member, as Go reads it) or
/// zstd (every frame).
pub fn open_layer(path: &Path) -> std::io::Result<Box<dyn Read>> {
    let mut f = std::fs::File::open(path)?;
    let mut magic = [0u8; 4];
    let mut n = 0;
    while n < 4 {
        match f.read(&mut magic[n..])? {
            0 => break,
            k => n += k,
        }
    }
    let f = std::fs::File::open(path)?;
    Ok(if n >= 2 && magic[..2] == [0x1f, 0x8b] {
        Box::new(flate2::read::MultiGzDecoder::new(BufReader::new(f)))
    } else if n == 4 && magic == ZSTD_MAGIC {
        Box::new(zstd::stream::read::Decoder::new(f)?)
    } else {
        Box::new(BufReader::new(f))
    })
}

/// A path as it appears in a layer, normalised: no leading `./` or `/`, no trailing `/`.
/// `None` for paths that would leave the root (`..`), which are never applied. Paths are bytes,
/// as the kernel and tar have them: a name that is not UTF-8 is kept as it is.
pub fn normalize(path: impl AsRef<[u8]>) -> Option<BString> {
    let path = path.as_ref();
    let mut out = BString::from(Vec::with_capacity(path.len()));
    for c in path.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return None,
            c => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(c);
            }
        }
    }
    Some(out)
}

/// A path of bytes as the host's filesystem calls take it (on Linux every byte string but NUL
/// is a path).
pub fn as_path(path: &[u8]) -> &Path {
    Path::new(std::ffi::OsStr::from_bytes(path))
}

/// One tar entry without its content: what a layer contributes to the view. A layer's entries
/// are kept in the store (its index), so a cached layer never has to be read again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawEntry {
    /// Normalised path (see [`normalize`]).
    pub path: BString,
    /// Tar type flag (`0` file, `1` hard link, `2` symlink, `5` directory, ...).
    pub typeflag: u8,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<BString>,
}

/// Reads a layer tar's entries (contents skipped). Entries that would leave the root are
/// dropped here, so they are never applied.
pub fn read_entries(reader: impl Read) -> std::io::Result<Vec<RawEntry>> {
    let mut ar = tar::Archive::new(reader);
    let mut out = Vec::new();
    for e in ar.entries()? {
        out.extend(RawEntry::of(&e?)?);
    }
    Ok(out)
}

impl RawEntry {
    /// The index entry of a tar entry; `None` for a path that would leave the root.
    pub fn of<R: Read>(e: &tar::Entry<'_, R>) -> std::io::Result<Option<RawEntry>> {
        let Some(path) = normalize(e.path_bytes()) else {
            return Ok(None);
        };
        let h = e.header();
        Ok(Some(RawEntry {
            path,
            typeflag: h.entry_type().as_byte(),
            mode: h.mode().unwrap_or(0o644) & 0o7777,
            uid: h.uid().unwrap_or(0) as u32,
            gid: h.gid().unwrap_or(0) as u32,
            mtime: h.mtime().unwrap_or(0) as i64,
            size: h.size().unwrap_or(0),
            link: e.link_name_bytes().map(|l| BString::from(l.into_owned())),
        }))
    }
}

/// The merged view.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct View {
    nodes: BTreeMap<BString, Node>,
}

impl View {
    pub fn get(&self, path: impl AsRef<[u8]>) -> Option<&Node> {
        normalize(path).and_then(|p| self.nodes.get(&p))
    }

    pub fn is_dir(&self, path: impl AsRef<[u8]>) -> bool {
        normalize(path).is_some_and(|p| {
            p.is_empty()
                || matches!(
                    self.nodes.get(&p),
                    Some(Node {
                        kind: NodeKind::Dir,
                        ..
                    })
                )
        })
    }

    pub fn iter(&self) -> impl Iterator<Item = (&BString, &Node)> {
        self.nodes.iter()
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Removes `path` and everything below it.
    fn remove_tree(&mut self, path: &[u8]) {
        self.nodes.remove(path.as_bstr());
        self.remove_children(path);
    }

    fn remove_children(&mut self, dir: &[u8]) {
        self.remove_children_with(&mut BString::default(), dir);
    }

    /// [`View::remove_children`] with a buffer of the caller's for the prefix: a layer of
    /// 30,000 files asks once per file, and almost never finds anything.
    fn remove_children_with(&mut self, prefix: &mut BString, dir: &[u8]) {
        use std::ops::Bound::{Included, Unbounded};
        prefix.clear();
        if !dir.is_empty() {
            prefix.extend_from_slice(dir);
            prefix.push(b'/');
        }
        let p: &BStr = prefix.as_bstr();
        let first = self
            .nodes
            .range::<BStr, _>((Included(p), Unbounded))
            .next()
            .is_some_and(|(k, _)| k.starts_with(p));
        if !first {
            return;
        }
        let doomed: Vec<BString> = self
            .nodes
            .range::<BStr, _>((Included(p), Unbounded))
            .take_while(|(k, _)| k.starts_with(p))
            .map(|(k, _)| k.clone())
            .collect();
        for k in doomed {
            self.nodes.remove(&k);
        }
    }

    /// Applies one layer (the `index`-th of the stack) read from `reader`.
    pub fn apply(&mut self, index: usize, reader: impl Read, name: &str) -> Result<(), LayerError> {
        let entries = read_entries(reader).map_err(|e| LayerError {
            layer: name.to_string(),
            message: e.to_string(),
        })?;
        self.apply_entries(index, &entries);
        Ok(())
    }

    /// Applies one layer's entries (the `index`-th layer of the stack).
    pub fn apply_entries(&mut self, index: usize, entries: &[RawEntry]) {
        // Opaque markers apply before the layer's own entries in that directory.
        for e in entries {
            if let Some(dir) = e.path.strip_suffix(b".wh..wh..opq") {
                self.remove_children(dir.trim_end_with(|c| c == '/'));
            }
        }
        let mut prefix = BString::default();
        for e in entries {
            let (dir, base): (&[u8], &[u8]) = match e.path.rfind_byte(b'/') {
                Some(i) => (&e.path[..i], &e.path[i + 1..]),
                None => (b"", &e.path),
            };
            if base == b".wh..wh..opq" {
                continue;
            }
            if let Some(victim) = base.strip_prefix(b".wh.") {
                let mut target = dir.to_vec();
                if !dir.is_empty() {
                    target.push(b'/');
                }
                target.extend_from_slice(victim);
                self.remove_tree(&target);
                continue;
            }
            let kind = match tar::EntryType::new(e.typeflag) {
                tar::EntryType::Directory => NodeKind::Dir,
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    NodeKind::File { size: e.size }
                }
                tar::EntryType::Symlink => NodeKind::Symlink {
                    target: e.link.clone().unwrap_or_default(),
                },
                tar::EntryType::Link => NodeKind::Hardlink {
                    target: e.link.as_ref().and_then(normalize).unwrap_or_default(),
                },
                t => NodeKind::Other {
                    typeflag: t.as_byte(),
                },
            };
            // A non-directory replaces a directory (and its contents) of a lower layer.
            if kind != NodeKind::Dir {
                self.remove_children_with(&mut prefix, &e.path);
            }
            self.nodes.insert(
                e.path.clone(),
                Node {
                    kind,
                    mode: e.mode,
                    uid: e.uid,
                    gid: e.gid,
                    mtime: e.mtime,
                    layer: index,
                },
            );
        }
    }

    /// Adds what a layer being built creates (a parent directory, a copied file...).
    pub fn insert(&mut self, path: impl AsRef<[u8]>, node: Node) {
        if let Some(p) = normalize(path) {
            if node.kind != NodeKind::Dir {
                self.remove_children(&p);
            }
            self.nodes.insert(p, node);
        }
    }
}

/// Reads the content of `path` from the layer tar that holds it (scanning that one layer).
pub fn read_file(layer: impl Read, path: impl AsRef<[u8]>) -> std::io::Result<Option<Vec<u8>>> {
    let Some(want) = normalize(path) else {
        return Ok(None);
    };
    let mut ar = tar::Archive::new(layer);
    for e in ar.entries()? {
        let mut e = e?;
        if normalize(e.path_bytes()).as_ref() == Some(&want) && e.header().entry_type().is_file() {
            let mut buf = Vec::new();
            e.read_to_end(&mut buf)?;
            return Ok(Some(buf));
        }
    }
    Ok(None)
}
