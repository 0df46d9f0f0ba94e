//! What a COPY can select: the build context's files, a stage's or image's files (with
//! their owners and hard links), symlinked sources followed inside their root, and the stage
//! files fetched from their layers before writing.

use super::*;

/// One path a COPY may select, from the context or from another stage.
#[derive(Debug, Clone)]
pub(crate) struct SrcEntry {
    pub path: BString,
    pub kind: SrcKind,
    pub mode: u32,
    pub mtime: i64,
    /// The owner it keeps without `--chown`: a stage's or image's file keeps its own (as in
    /// BuildKit); a context file has none and becomes 0:0.
    pub owner: Option<(u32, u32)>,
    /// Files with the same link identity are one file under several names (a context file's
    /// device and inode, a stage file's first name); a directory copy keeps them linked.
    pub link: Option<BString>,
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
    Symlink(BString),
}

pub(crate) fn context_entries(snap: &crate::context::snapshot::Snapshot) -> Vec<SrcEntry> {
    snap.entries
        .iter()
        .filter_map(|e| context_entry(snap, e))
        .collect()
}

/// The context entries a copy of `picks` reads: the links each pick's path follows, what it
/// ends at and everything below that, in path order. A `COPY package.json ./` of a large
/// context converts one entry, not all of them.
pub(super) fn context_entries_for(
    snap: &crate::context::snapshot::Snapshot,
    picks: &[(BString, Option<BString>)],
) -> Vec<SrcEntry> {
    if picks.iter().any(|(p, _)| p.is_empty()) {
        return context_entries(snap);
    }
    let index_of = |p: &[u8]| {
        snap.entries
            .binary_search_by(|e| e.path.as_slice().cmp(p))
            .ok()
    };
    let mut wanted: Vec<usize> = Vec::new();
    for (named, _) in picks {
        let visited = std::cell::RefCell::new(Vec::new());
        let resolved = follow_source(
            |p: &[u8]| {
                visited.borrow_mut().extend(index_of(p));
                context_link(snap, p)
            },
            named,
        );
        wanted.extend(visited.into_inner());
        wanted.extend(index_of(&resolved));
        let below = snap.below(&resolved);
        if let Some(first) = below.first().and_then(|e| index_of(&e.path)) {
            wanted.extend(first..first + below.len());
        }
    }
    wanted.sort_unstable();
    wanted.dedup();
    wanted
        .into_iter()
        .filter_map(|i| context_entry(snap, &snap.entries[i]))
        .collect()
}

/// The target of the context's symlink at `path`, if that is one.
pub(super) fn context_link<'s>(
    snap: &'s crate::context::snapshot::Snapshot,
    path: &[u8],
) -> Option<&'s [u8]> {
    match &snap.find(path)?.kind {
        EntryKind::Symlink { target } => Some(target),
        _ => None,
    }
}

/// One context entry as a copy source (`None` for sockets, fifos and devices, which are not
/// copied: BuildKit skips sockets too).
fn context_entry(
    snap: &crate::context::snapshot::Snapshot,
    e: &crate::context::snapshot::Entry,
) -> Option<SrcEntry> {
    let (kind, fingerprint) = match &e.kind {
        EntryKind::Dir => (SrcKind::Dir, format!("dir {:o}", e.mode)),
        EntryKind::File { size, digest } => (
            SrcKind::File {
                size: *size,
                host: snap.root.join(as_path(&e.path)),
                xattrs: e.xattrs.clone(),
            },
            format!("file {:o} {digest}", e.mode),
        ),
        EntryKind::Symlink { target } => (
            SrcKind::Symlink(target.clone()),
            format!("link {}", fsutil::key_text(target)),
        ),
        EntryKind::Other => return None,
    };
    Some(SrcEntry {
        path: e.path.clone(),
        kind,
        mode: e.mode,
        mtime: e.mtime,
        owner: None,
        link: e.inode.map(|(dev, ino)| format!("{dev}:{ino}").into()),
        fingerprint,
    })
}

pub(super) fn stage_entries(src: &StageState) -> Result<Vec<SrcEntry>, BuildError> {
    let view = src.view()?;
    // Files other names link to.
    let hard_linked: BTreeSet<&[u8]> = view
        .iter()
        .filter_map(|(_, n)| match &n.kind {
            NodeKind::Hardlink { target } => Some(target.as_slice()),
            _ => None,
        })
        .collect();
    Ok(view
        .iter()
        .filter_map(|(path, n)| {
            let (kind, fp) = match &n.kind {
                NodeKind::Dir => (SrcKind::Dir, format!("dir {:o}", n.mode)),
                NodeKind::File { size } => (
                    SrcKind::StageFile { size: *size },
                    format!("file {:o} {size} {}", n.mode, n.layer),
                ),
                NodeKind::Hardlink { target } => match view.get(target).map(|t| &t.kind) {
                    Some(NodeKind::File { size }) => (
                        SrcKind::StageFile { size: *size },
                        format!("file {:o} {size} {}", n.mode, n.layer),
                    ),
                    _ => return None,
                },
                NodeKind::Symlink { target } => (
                    SrcKind::Symlink(target.clone()),
                    format!("link {}", fsutil::key_text(target)),
                ),
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
                        hard_linked.contains(path.as_slice()).then(|| path.clone())
                    }
                    _ => None,
                },
                fingerprint: format!("{fp} {}:{}", n.uid, n.gid),
            })
        })
        .collect())
}

/// The path `path` names once symlinks are followed (each relative to its directory, an
/// absolute one from the root, `..` never above it; at most 40): itself when it is no link.
/// `link_at` gives the target of the symlink at a path, `None` where there is none.
pub(super) fn follow_source<'a>(
    link_at: impl Fn(&[u8]) -> Option<&'a [u8]>,
    path: &[u8],
) -> BString {
    let mut p = BString::from(path);
    for _ in 0..40 {
        let Some(t) = link_at(&p) else {
            return p;
        };
        let joined = if t.starts_with(b"/") {
            t.to_vec()
        } else {
            match p.rfind_byte(b'/') {
                Some(i) => [&p[..=i], t].concat(),
                None => t.to_vec(),
            }
        };
        // Cleaned and kept inside the root, as any context source path.
        p = context_path(&joined);
    }
    p
}

/// The entry at `path` among `entries` sorted by path.
pub(super) fn entry_at<'e>(entries: &'e [SrcEntry], path: &[u8]) -> Option<&'e SrcEntry> {
    crate::context::snapshot::find_sorted(entries, path, |e| &e.path)
}

/// The entries below directory `dir` (`""`: all) among `entries` sorted by path.
pub(super) fn entries_below<'e>(entries: &'e [SrcEntry], dir: &[u8]) -> &'e [SrcEntry] {
    crate::context::snapshot::below_sorted(entries, dir, |e| &e.path)
}

/// Extracts `paths` (files of `src`) into `dir`, streaming each layer that holds one once.
pub(super) fn extract_stage_files(
    ctx: &Ctx<'_>,
    src: &StageState,
    paths: &BTreeSet<BString>,
    dir: &std::path::Path,
) -> Result<BTreeMap<BString, std::path::PathBuf>, BuildError> {
    // Per layer: the path holding the content → every wanted name of it (a file and its hard
    // links are one content).
    let mut by_layer: BTreeMap<usize, BTreeMap<BString, Vec<BString>>> = BTreeMap::new();
    for p in paths {
        // A hard link's content is its target's.
        let (real, layer) = match src.view()?.get(p) {
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
        ctx.store.ensure_blob(&blob)?;
        let reader = open_layer(&ctx.store.blob_path(&blob))
            .map_err(|e| BuildError::Other(e.to_string()))?;
        let mut ar = tar::Archive::new(reader);
        let io = |e: std::io::Error| {
            BuildError::Other(format!("reading layer {}: {e}", l.descriptor.digest))
        };
        for e in ar.entries().map_err(io)? {
            let mut e = e.map_err(io)?;
            let Some(norm) = kiln_runtime::layer::view::normalize(e.path_bytes()) else {
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
