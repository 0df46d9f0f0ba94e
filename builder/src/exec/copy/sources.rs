//! What a COPY can select: the build context's files, a stage's or image's files (with
//! their owners and hard links), symlinked sources followed inside their root, and the stage
//! files fetched from their layers before writing.

use super::*;

/// One path a COPY may select, from the context or from another stage.
#[derive(Debug, Clone)]
pub(crate) struct SrcEntry {
    pub path: String,
    pub kind: SrcKind,
    pub mode: u32,
    pub mtime: i64,
    /// The owner it keeps without `--chown`: a stage's or image's file keeps its own (as in
    /// BuildKit); a context file has none and becomes 0:0.
    pub owner: Option<(u32, u32)>,
    /// Files with the same link identity are one file under several names (a context file's
    /// device and inode, a stage file's first name); a directory copy keeps them linked.
    pub link: Option<String>,
    /// What the cache key sees (kind, mode, owner and content digest or size).
    pub fingerprint: String,
}

#[derive(Debug, Clone)]
pub(crate) enum SrcKind {
    Dir,
    File {
        size: u64,
        host: std::path::PathBuf,
        /// A context file's extended attributes (from the snapshot).
        xattrs: kiln_runtime::store::Xattrs,
    },
    /// A file inside another stage's layers, fetched before writing.
    StageFile {
        size: u64,
    },
    Symlink(String),
}

pub(crate) fn context_entries(snap: &crate::context::snapshot::Snapshot) -> Vec<SrcEntry> {
    snap.entries
        .iter()
        .filter_map(|e| {
            let (kind, fingerprint) = match &e.kind {
                EntryKind::Dir => (SrcKind::Dir, format!("dir {:o}", e.mode)),
                EntryKind::File { size, digest } => (
                    SrcKind::File {
                        size: *size,
                        host: snap.root.join(&e.path),
                        xattrs: e.xattrs.clone(),
                    },
                    format!("file {:o} {digest}", e.mode),
                ),
                EntryKind::Symlink { target } => {
                    (SrcKind::Symlink(target.clone()), format!("link {target}"))
                }
                // Sockets, fifos and devices are not copied (BuildKit skips sockets too).
                EntryKind::Other => return None,
            };
            Some(SrcEntry {
                path: e.path.clone(),
                kind,
                mode: e.mode,
                mtime: e.mtime,
                owner: None,
                link: e.inode.map(|(dev, ino)| format!("{dev}:{ino}")),
                fingerprint,
            })
        })
        .collect()
}

pub(super) fn stage_entries(src: &StageState) -> Vec<SrcEntry> {
    // Files other names link to.
    let hard_linked: BTreeSet<&str> = src
        .view
        .iter()
        .filter_map(|(_, n)| match &n.kind {
            NodeKind::Hardlink { target } => Some(target.as_str()),
            _ => None,
        })
        .collect();
    src.view
        .iter()
        .filter_map(|(path, n)| {
            let (kind, fp) = match &n.kind {
                NodeKind::Dir => (SrcKind::Dir, format!("dir {:o}", n.mode)),
                NodeKind::File { size } => (
                    SrcKind::StageFile { size: *size },
                    format!("file {:o} {size} {}", n.mode, n.layer),
                ),
                NodeKind::Hardlink { target } => match src.view.get(target).map(|t| &t.kind) {
                    Some(NodeKind::File { size }) => (
                        SrcKind::StageFile { size: *size },
                        format!("file {:o} {size} {}", n.mode, n.layer),
                    ),
                    _ => return None,
                },
                NodeKind::Symlink { target } => {
                    (SrcKind::Symlink(target.clone()), format!("link {target}"))
                }
                NodeKind::Other { .. } => return None,
            };
            Some(SrcEntry {
                path: path.clone(),
                kind,
                mode: n.mode,
                mtime: n.mtime,
                owner: Some((n.uid, n.gid)),
                link: match &n.kind {
                    NodeKind::Hardlink { target } => Some(target.clone()),
                    NodeKind::File { .. } => {
                        hard_linked.contains(path.as_str()).then(|| path.clone())
                    }
                    _ => None,
                },
                fingerprint: format!("{fp} {}:{}", n.uid, n.gid),
            })
        })
        .collect()
}

/// The path `path` names once symlinks are followed (each relative to its directory, an
/// absolute one from the root, `..` never above it; at most 40): itself when it is no link.
pub(super) fn follow_source(by_path: &BTreeMap<&str, &SrcEntry>, path: &str) -> String {
    let mut p = path.to_string();
    for _ in 0..40 {
        let Some(SrcKind::Symlink(t)) = by_path.get(p.as_str()).map(|e| &e.kind) else {
            return p;
        };
        let joined = if t.starts_with('/') {
            t.clone()
        } else {
            match p.rsplit_once('/') {
                Some((dir, _)) => format!("{dir}/{t}"),
                None => t.clone(),
            }
        };
        // Cleaned and kept inside the root, as any context source path.
        p = context_path(&joined);
    }
    p
}

/// Extracts `paths` (files of `src`) into `dir`, streaming each layer that holds one once.
pub(super) fn extract_stage_files(
    ctx: &Ctx<'_>,
    src: &StageState,
    paths: &BTreeSet<String>,
    dir: &std::path::Path,
) -> Result<BTreeMap<String, std::path::PathBuf>, BuildError> {
    // Per layer: the path holding the content → every wanted name of it (a file and its hard
    // links are one content).
    let mut by_layer: BTreeMap<usize, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    for p in paths {
        // A hard link's content is its target's.
        let (real, layer) = match src.view.get(p) {
            Some(Node {
                kind: NodeKind::Hardlink { target },
                layer,
                ..
            }) => (target.clone(), *layer),
            Some(n) => (p.clone(), n.layer),
            None => continue,
        };
        by_layer
            .entry(layer)
            .or_default()
            .entry(real)
            .or_default()
            .push(p.clone());
    }
    let mut out = BTreeMap::new();
    let mut n = 0usize;
    for (layer, wanted) in by_layer {
        let l = &src.layers[layer];
        let blob =
            Digest::parse(&l.descriptor.digest).map_err(|e| BuildError::Other(e.to_string()))?;
        let reader = open_layer(&ctx.store.blob_path(&blob))
            .map_err(|e| BuildError::Other(e.to_string()))?;
        let mut ar = tar::Archive::new(reader);
        let io = |e: std::io::Error| {
            BuildError::Other(format!("reading layer {}: {e}", l.descriptor.digest))
        };
        for e in ar.entries().map_err(io)? {
            let mut e = e.map_err(io)?;
            let raw = e.path().map_err(io)?.to_string_lossy().to_string();
            let Some(norm) = kiln_runtime::layer::view::normalize(&raw) else {
                continue;
            };
            if let Some(names) = wanted.get(&norm) {
                if e.header().entry_type().is_file() {
                    n += 1;
                    let host = dir.join(format!("f{n}"));
                    let mut f = std::fs::File::create(&host).map_err(io)?;
                    std::io::copy(&mut e, &mut f).map_err(io)?;
                    for name in names {
                        out.insert(name.clone(), host.clone());
                    }
                }
            }
        }
    }
    Ok(out)
}
