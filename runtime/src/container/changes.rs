//! `kiln diff`: what a container changed in its root filesystem, read from its overlayfs upper
//! directory as docker reads its read-write layer: `A` added, `C` changed (a directory holding
//! a change is changed too), `D` deleted. The files kiln binds over for every container
//! (/etc/hosts, /etc/resolv.conf), when the image lacked them, are mount points, not changes.

use std::path::{Path, PathBuf};

use super::ContainerError;
use crate::{
    layer::{diff::Change, view::as_path},
    store::Store,
};

/// One change: `A`, `C` or `D`, and the absolute path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changed {
    pub kind: char,
    pub path: String,
}

/// The directories a container's root is made of: its upper directory and the image's
/// unpacked layers, top first.
pub fn layers_of(
    store: &Store,
    id: &str,
    image: &str,
) -> Result<(PathBuf, Vec<PathBuf>), ContainerError> {
    let upper = store.root().join("containers").join(id).join("upper");
    let manifest = store
        .resolve(image)?
        .ok_or_else(|| ContainerError::NoImage(image.to_string()))?;
    let (m, config, _) = store.image(&manifest)?;
    Ok((upper, super::lower_dirs(store, &m, &config, image)?))
}

/// A container's sizes as `docker ps --size` shows them: what it wrote (its upper directory,
/// counted as docker's `directory.Size` counts: every non-directory's size once per inode) and
/// what its image holds; zeros for what cannot be read.
pub fn sizes(store: &Store, id: &str, image: &str) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    let upper = store.root().join("containers").join(id).join("upper");
    let mut written = 0;
    let mut inodes = std::collections::BTreeSet::new();
    let mut stack = vec![upper];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(m) = e.path().symlink_metadata() else {
                continue;
            };
            if m.is_dir() {
                stack.push(e.path());
            } else if m.len() > 0 && inodes.insert((m.dev(), m.ino())) {
                written += m.len();
            }
        }
    }
    let image = store
        .resolve(image)
        .ok()
        .flatten()
        .and_then(|m| store.image(&m).ok())
        .and_then(|(m, _, _)| store.content_size(&m).ok())
        .unwrap_or(0);
    (written, image)
}

/// Whether `rel` is in the image below: the topmost layer that has an entry for it decides (a
/// whiteout there means deleted).
pub fn in_lower(lower: &[PathBuf], rel: &[u8]) -> bool {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    for dir in lower {
        if let Ok(md) = std::fs::symlink_metadata(dir.join(as_path(rel))) {
            return !(md.file_type().is_char_device() && md.rdev() == 0);
        }
    }
    false
}

/// A stub kiln made to bind a generated file over (the image lacked it): no change.
pub fn is_stub(upper: &Path, lower: &[PathBuf], rel: &[u8]) -> bool {
    crate::sandbox::etc::BOUND
        .iter()
        .any(|b| b.as_bytes() == rel)
        && !in_lower(lower, rel)
        && std::fs::symlink_metadata(upper.join(as_path(rel)))
            .is_ok_and(|m| m.is_file() && m.len() == 0)
}

/// `kiln diff CONTAINER`: its changes, sorted by path.
pub fn diff(store: &Store, what: &str) -> Result<Vec<Changed>, ContainerError> {
    let c = store
        .find_container(what)?
        .ok_or_else(|| ContainerError::Config(format!("no such container: {what}")))?;
    let (upper, lower) = layers_of(store, &c.id, &c.image)?;
    let mut out = Vec::new();
    crate::layer::diff::walk_upper(&upper, &mut |change| {
        let (rel, deleted) = match &change {
            Change::Whiteout(p) => (p.clone(), true),
            Change::Opaque(_) => return Ok(()),
            Change::Dir(p, _)
            | Change::File(p, ..)
            | Change::Symlink(p, ..)
            | Change::Hardlink(p, ..)
            | Change::Special(p, ..) => (p.clone(), false),
        };
        if is_stub(&upper, &lower, &rel) {
            return Ok(());
        }
        let kind = if deleted {
            'D'
        } else if in_lower(&lower, &rel) {
            'C'
        } else {
            'A'
        };
        out.push(Changed {
            kind,
            path: format!("/{rel}"),
        });
        Ok(())
    })
    .map_err(|e| ContainerError::Config(format!("reading the changes of {}: {e}", c.name)))?;
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}
