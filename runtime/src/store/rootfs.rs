//! `kiln build -o type=tar|local`: an image's flattened filesystem (layers merged, whiteouts
//! applied) as one tar, or written into a directory.
//!
//! Each layer is streamed once, keeping only the files whose final version it holds. Paths come
//! from the merged view, where nothing lies below a symlink, and a local destination must be
//! new or empty, so no write ever goes through a link.

use std::{
    collections::BTreeMap,
    io::Read,
    path::{Path, PathBuf},
};

use bstr::BString;

use super::{Store, StoreError, io_err};
use crate::{
    digest::Digest,
    layer::view::{NodeKind, View, as_path, normalize, open_layer},
};

impl Store {
    /// The merged view of an image and, for each regular file, a temporary copy of its content
    /// and its extended attributes.
    fn flatten(&self, manifest: &Digest, tmp: &Path) -> Result<(View, Files), StoreError> {
        let (m, _, _) = self.image(manifest)?;
        let blobs: Vec<Digest> = m
            .layers
            .iter()
            .map(|l| {
                Digest::parse(&l.digest).map_err(|e| StoreError::BadLayout {
                    path: self.blob_path(manifest),
                    reason: e.to_string(),
                })
            })
            .collect::<Result<_, _>>()?;
        let mut view = View::default();
        for (i, b) in blobs.iter().enumerate() {
            view.apply_entries(i, &self.layer_entries(b)?);
        }
        let mut want: BTreeMap<usize, BTreeMap<BString, ()>> = BTreeMap::new();
        for (path, node) in view.iter() {
            if matches!(node.kind, NodeKind::File { .. }) {
                want.entry(node.layer).or_default().insert(path.clone(), ());
            }
        }
        let mut files = BTreeMap::new();
        let mut n = 0usize;
        for (layer, paths) in want {
            let p = self.blob_path(&blobs[layer]);
            let mut ar = tar::Archive::new(open_layer(&p).map_err(io_err(&p))?);
            for e in ar.entries().map_err(io_err(&p))? {
                let mut e = e.map_err(io_err(&p))?;
                let Some(path) = normalize(e.path_bytes()) else {
                    continue;
                };
                if paths.contains_key(&path) && e.header().entry_type().is_file() {
                    n += 1;
                    let mut xattrs = Vec::new();
                    if let Ok(Some(exts)) = e.pax_extensions() {
                        for ext in exts.flatten() {
                            if let Ok(k) = ext.key() {
                                if k.starts_with("SCHILY.xattr.") {
                                    xattrs.push((k.to_string(), ext.value_bytes().to_vec()));
                                }
                            }
                        }
                    }
                    let dest = tmp.join(format!("f{n}"));
                    let mut f = std::fs::File::create(&dest).map_err(io_err(&dest))?;
                    std::io::copy(&mut e, &mut f).map_err(io_err(&dest))?;
                    files.insert(path, (dest, xattrs));
                }
            }
        }
        Ok((view, files))
    }

    /// Writes the image's filesystem as a tar (`type=tar`) or into a new/empty directory
    /// (`type=local`).
    pub fn export_rootfs(
        &self,
        manifest: &Digest,
        dest: &Path,
        as_dir: bool,
    ) -> Result<(), StoreError> {
        if self.read_index(manifest)?.is_some() {
            return self.export_platforms(manifest, dest, as_dir);
        }
        self.with_flattened(manifest, |view, files| {
            if as_dir {
                write_dir(view, files, dest)
            } else {
                let f = std::fs::File::create(dest).map_err(io_err(dest))?;
                let mut w = std::io::BufWriter::new(f);
                write_tar(view, files, &mut w, dest)?;
                std::io::Write::flush(&mut w).map_err(io_err(dest))
            }
        })
    }

    /// A multi-platform image's files, as BuildKit's local exporter writes them: one directory
    /// per platform under `dest`, named for it with `_` for `/` (`linux_arm64`). A tar of
    /// several platforms is refused, naming what to use.
    fn export_platforms(
        &self,
        index: &Digest,
        dest: &Path,
        as_dir: bool,
    ) -> Result<(), StoreError> {
        if !as_dir {
            return Err(StoreError::Destination {
                path: dest.to_path_buf(),
                reason: "a multi-platform image's files go to a directory (-o type=local, one \
                         subdirectory per platform) or its images to an OCI archive (-o \
                         type=oci)"
                    .into(),
            });
        }
        for (platform, manifest) in self.platforms_of(index)? {
            let sub = dest.join(platform.to_string().replace('/', "_"));
            std::fs::create_dir_all(&sub).map_err(io_err(&sub))?;
            self.export_rootfs(&manifest, &sub, true)?;
        }
        Ok(())
    }

    /// [`Store::export_rootfs`] as a tar written to `w` (`-o type=tar,dest=-`).
    pub fn export_rootfs_to(
        &self,
        manifest: &Digest,
        w: &mut dyn std::io::Write,
    ) -> Result<(), StoreError> {
        if self.read_index(manifest)?.is_some() {
            return self.export_platforms(manifest, Path::new("-"), false);
        }
        self.with_flattened(manifest, |view, files| {
            write_tar(view, files, w, Path::new("-"))?;
            w.flush().map_err(io_err(Path::new("-")))
        })
    }

    /// Runs `write` on the flattened image, its files copied into a directory of `tmp/` that
    /// goes afterwards.
    fn with_flattened(
        &self,
        manifest: &Digest,
        write: impl FnOnce(&View, &Files) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let tmp = self
            .root
            .join("tmp")
            .join(format!("rootfs-{}", std::process::id()));
        std::fs::create_dir_all(&tmp).map_err(io_err(&tmp))?;
        let result = self
            .flatten(manifest, &tmp)
            .and_then(|(view, files)| write(&view, &files));
        let _ = std::fs::remove_dir_all(&tmp);
        result
    }
}

/// Each regular file of a flattened image: a temporary copy of its content, and its extended
/// attributes as PAX records (`SCHILY.xattr.NAME`).
type Files = BTreeMap<BString, (PathBuf, Vec<(String, Vec<u8>)>)>;

/// The flattened image as one tar on `w` (`dest` names it in errors).
fn write_tar(
    view: &View,
    files: &Files,
    w: &mut dyn std::io::Write,
    dest: &Path,
) -> Result<(), StoreError> {
    let mut tar = tar::Builder::new(w);
    for (path, node) in view.iter() {
        let mut h = tar::Header::new_gnu();
        h.set_mode(node.mode);
        h.set_uid(u64::from(node.uid));
        h.set_gid(u64::from(node.gid));
        h.set_mtime(node.mtime.max(0) as u64);
        let io = io_err(dest);
        match &node.kind {
            NodeKind::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                let mut dir = path.to_vec();
                dir.push(b'/');
                tar.append_data(&mut h, as_path(&dir), std::io::empty())
                    .map_err(io)?;
            }
            NodeKind::File { .. } => {
                let Some((src, xattrs)) = files.get(path) else {
                    continue;
                };
                if !xattrs.is_empty() {
                    tar.append_pax_extensions(
                        xattrs.iter().map(|(k, v)| (k.as_str(), v.as_slice())),
                    )
                    .map_err(io_err(dest))?;
                }
                let mut f = std::fs::File::open(src).map_err(io_err(src))?;
                let size = f.metadata().map_err(io_err(src))?.len();
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(size);
                tar.append_data(&mut h, as_path(path), (&mut f).take(size))
                    .map_err(io)?;
            }
            NodeKind::Symlink { target } => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                tar.append_link(&mut h, as_path(path), as_path(target))
                    .map_err(io)?;
            }
            NodeKind::Hardlink { target } => {
                h.set_entry_type(tar::EntryType::Link);
                h.set_size(0);
                tar.append_link(&mut h, as_path(path), as_path(target))
                    .map_err(io)?;
            }
            // A fifo is written as it is; device nodes (their numbers are not in the index)
            // are left out of an export.
            NodeKind::Other { typeflag: b'6' } => {
                h.set_entry_type(tar::EntryType::Fifo);
                h.set_size(0);
                tar.append_data(&mut h, as_path(path), std::io::empty())
                    .map_err(io)?;
            }
            NodeKind::Other { .. } => {}
        }
    }
    tar.into_inner()
        .map_err(io_err(dest))?
        .flush()
        .map_err(io_err(dest))
}

fn write_dir(view: &View, files: &Files, dest: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::PermissionsExt;
    if dest.exists()
        && std::fs::read_dir(dest)
            .map_err(io_err(dest))?
            .next()
            .is_some()
    {
        return Err(StoreError::Destination {
            path: dest.to_path_buf(),
            reason: "not empty: type=local writes into a new or empty directory".into(),
        });
    }
    std::fs::create_dir_all(dest).map_err(io_err(dest))?;
    let mut dirs = Vec::new();
    for (path, node) in view.iter() {
        let target = dest.join(as_path(path));
        match &node.kind {
            NodeKind::Dir => {
                std::fs::create_dir_all(&target).map_err(io_err(&target))?;
                dirs.push((target, node.mode));
            }
            NodeKind::File { .. } => {
                let Some((src, _)) = files.get(path) else {
                    continue;
                };
                std::fs::copy(src, &target).map_err(io_err(&target))?;
                std::fs::set_permissions(&target, std::fs::Permissions::from_mode(node.mode))
                    .map_err(io_err(&target))?;
            }
            NodeKind::Symlink { target: t } => {
                std::os::unix::fs::symlink(as_path(t), &target).map_err(io_err(&target))?;
            }
            NodeKind::Hardlink { target: t } => {
                std::fs::hard_link(dest.join(as_path(t)), &target).map_err(io_err(&target))?;
            }
            NodeKind::Other { .. } => {}
        }
    }
    // Directory modes last, so a read-only directory does not stop its own contents.
    for (d, mode) in dirs.into_iter().rev() {
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(mode)).map_err(io_err(&d))?;
    }
    Ok(())
}
