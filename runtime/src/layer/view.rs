//! The merged filesystem view of a stack of layers: which paths exist, what they are, and which
//! layer holds each file's content. Built by reading the layer tars in order and applying
//! whiteouts (`.wh.<name>` deletes a path and everything below it; `.wh..wh..opq` hides every
//! lower child of a directory). Nothing is written to disk.

use std::{
    collections::BTreeMap,
    io::{BufReader, Read},
    path::Path,
};

/// What a path is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeKind {
    Dir,
    File {
        size: u64,
    },
    Symlink {
        target: String,
    },
    /// A hard link to another path of the same layer.
    Hardlink {
        target: String,
    },
    Other,
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

/// Opens a layer tar, transparently un-gzipping it.
pub fn open_layer(path: &Path) -> std::io::Result<Box<dyn Read>> {
    let mut f = std::fs::File::open(path)?;
    let mut magic = [0u8; 2];
    let n = f.read(&mut magic)?;
    let f = std::fs::File::open(path)?;
    Ok(if n == 2 && magic == [0x1f, 0x8b] {
        Box::new(flate2::read::GzDecoder::new(BufReader::new(f)))
    } else {
        Box::new(BufReader::new(f))
    })
}

/// A path as it appears in a layer, normalised: no leading `./` or `/`, no trailing `/`.
/// `None` for paths that would leave the root (`..`), which are never applied.
pub fn normalize(path: &str) -> Option<String> {
    let mut parts = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => return None,
            c => parts.push(c),
        }
    }
    Some(parts.join("/"))
}

/// The merged view.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct View {
    nodes: BTreeMap<String, Node>,
}

impl View {
    pub fn get(&self, path: &str) -> Option<&Node> {
        normalize(path).and_then(|p| self.nodes.get(&p))
    }

    pub fn is_dir(&self, path: &str) -> bool {
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

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Node)> {
        self.nodes.iter()
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Removes `path` and everything below it.
    fn remove_tree(&mut self, path: &str) {
        self.nodes.remove(path);
        self.remove_children(path);
    }

    fn remove_children(&mut self, dir: &str) {
        let prefix = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        let doomed: Vec<String> = self
            .nodes
            .range(prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&prefix))
            .map(|(k, _)| k.clone())
            .collect();
        for k in doomed {
            self.nodes.remove(&k);
        }
    }

    /// Applies one layer (the `index`-th of the stack) read from `reader`.
    pub fn apply(&mut self, index: usize, reader: impl Read, name: &str) -> Result<(), LayerError> {
        let err = |m: String| LayerError {
            layer: name.to_string(),
            message: m,
        };
        let mut ar = tar::Archive::new(reader);
        // Opaque markers apply before the layer's own entries in that directory.
        let mut entries = Vec::new();
        for e in ar.entries().map_err(|e| err(e.to_string()))? {
            let e = e.map_err(|e| err(e.to_string()))?;
            let raw = e
                .path()
                .map_err(|e| err(e.to_string()))?
                .to_string_lossy()
                .to_string();
            let Some(path) = normalize(&raw) else {
                // `..` entries are refused when unpacking (issue 4); here they are skipped.
                continue;
            };
            let h = e.header();
            let link = e
                .link_name()
                .ok()
                .flatten()
                .map(|l| l.to_string_lossy().to_string());
            entries.push((
                path,
                h.entry_type(),
                h.mode().unwrap_or(0o644),
                h.uid().unwrap_or(0) as u32,
                h.gid().unwrap_or(0) as u32,
                h.mtime().unwrap_or(0) as i64,
                h.size().unwrap_or(0),
                link,
            ));
        }
        for (path, ..) in &entries {
            if let Some(dir) = path.strip_suffix(".wh..wh..opq") {
                self.remove_children(dir.trim_end_matches('/'));
            }
        }
        for (path, ty, mode, uid, gid, mtime, size, link) in entries {
            let (dir, base) = match path.rsplit_once('/') {
                Some((d, b)) => (d.to_string(), b),
                None => (String::new(), path.as_str()),
            };
            if base == ".wh..wh..opq" {
                continue;
            }
            if let Some(victim) = base.strip_prefix(".wh.") {
                let target = if dir.is_empty() {
                    victim.to_string()
                } else {
                    format!("{dir}/{victim}")
                };
                self.remove_tree(&target);
                continue;
            }
            let kind = match ty {
                tar::EntryType::Directory => NodeKind::Dir,
                tar::EntryType::Regular | tar::EntryType::Continuous => NodeKind::File { size },
                tar::EntryType::Symlink => NodeKind::Symlink {
                    target: link.unwrap_or_default(),
                },
                tar::EntryType::Link => NodeKind::Hardlink {
                    target: link.and_then(|l| normalize(&l)).unwrap_or_default(),
                },
                _ => NodeKind::Other,
            };
            // A non-directory replaces a directory (and its contents) of a lower layer.
            if kind != NodeKind::Dir {
                self.remove_children(&path);
            }
            self.nodes.insert(
                path,
                Node {
                    kind,
                    mode: mode & 0o7777,
                    uid,
                    gid,
                    mtime,
                    layer: index,
                },
            );
        }
        Ok(())
    }

    /// Adds what a layer being built creates (a parent directory, a copied file...).
    pub fn insert(&mut self, path: &str, node: Node) {
        if let Some(p) = normalize(path) {
            if node.kind != NodeKind::Dir {
                self.remove_children(&p);
            }
            self.nodes.insert(p, node);
        }
    }
}

/// Reads the content of `path` from the layer tar that holds it (scanning that one layer).
pub fn read_file(layer: impl Read, path: &str) -> std::io::Result<Option<Vec<u8>>> {
    let Some(want) = normalize(path) else {
        return Ok(None);
    };
    let mut ar = tar::Archive::new(layer);
    for e in ar.entries()? {
        let mut e = e?;
        let p = e.path()?.to_string_lossy().to_string();
        if normalize(&p).as_deref() == Some(want.as_str()) && e.header().entry_type().is_file() {
            let mut buf = Vec::new();
            e.read_to_end(&mut buf)?;
            return Ok(Some(buf));
        }
    }
    Ok(None)
}
