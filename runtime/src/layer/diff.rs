//! The changes a RUN step made, read from its overlayfs upper directory: the
//! upper directory holds exactly what changed, so no walk of the whole filesystem is needed.
//! Overlay markers become OCI whiteouts: a 0/0 character device is a deleted path
//! (`.wh.<name>`), a directory with `trusted.overlay.opaque=y` hides every lower child
//! (`.wh..wh..opq`).
//!
//! The walk is deterministic (names sorted bytewise; in each directory the whiteouts come first,
//! then the opaque marker's directory contents) so the same upper directory always gives the same
//! layer. Files linked more than once inside the upper directory become one file and hard links
//! to it.
//!
//! Safety: the walk runs after every process of the sandbox is dead (the pid namespace is gone),
//! so nothing changes the tree under it; it never follows a symlink (`symlink_metadata`,
//! `O_NOFOLLOW` on open), so a link planted by the container cannot make kiln read a host file.
//! Upper directories written with `redirect_dir` or `metacopy` hold references into the lower
//! layers instead of data; kiln mounts with both off and refuses such markers here.

use bstr::{BString, ByteSlice};
use std::{
    collections::BTreeMap,
    fs::{self, File},
    io,
    os::unix::{
        ffi::OsStringExt,
        fs::{FileTypeExt, MetadataExt, OpenOptionsExt},
    },
    path::Path,
};

/// Why an upper directory could not be read; names the path at fault.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct DiffError {
    pub path: String,
    pub message: String,
}

fn err(path: &[u8], message: impl std::fmt::Display) -> DiffError {
    DiffError {
        path: if path.is_empty() {
            "/".into()
        } else {
            path.to_str_lossy().into_owned()
        },
        message: message.to_string(),
    }
}

/// Metadata of one changed entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Meta {
    /// Permission and special bits.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Seconds since the epoch.
    pub mtime: i64,
    /// Extended attributes other than overlayfs' own.
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

/// Kinds of special files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Special {
    Fifo,
    Char { major: u32, minor: u32 },
    Block { major: u32, minor: u32 },
}

/// One change, with its path relative to the root (no leading `/`). Paths and link targets are
/// bytes: a name that is not UTF-8 goes into the layer as it is.
#[derive(Debug)]
pub enum Change {
    Dir(BString, Meta),
    /// A regular file; `File` is open on it for reading.
    File(BString, Meta, u64, File),
    Symlink(BString, BString, Meta),
    /// A second name for a file reported earlier (the second field).
    Hardlink(BString, BString, Meta),
    Special(BString, Special, Meta),
    /// The path was deleted.
    Whiteout(BString),
    /// Every lower-layer child of this directory is hidden.
    Opaque(BString),
}

const OVERLAY_PREFIX: &str = "trusted.overlay.";

/// The extended attributes of a host file (a build context's), as a COPY carries them into a
/// layer: every one but the SELinux label (the host's, meaningless in an image, as docker drops
/// it) and overlayfs' own. Best effort: a filesystem without xattrs gives none.
pub fn host_xattrs(path: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut names = vec![0u8; 1024];
    let n = loop {
        match rustix::fs::llistxattr(path, &mut names) {
            Ok(n) => break n,
            Err(rustix::io::Errno::RANGE) => names.resize(names.len() * 4, 0),
            Err(_) => return out,
        }
    };
    for name in names[..n].split(|b| *b == 0).filter(|s| !s.is_empty()) {
        let name = String::from_utf8_lossy(name).into_owned();
        if name == "security.selinux" || name.starts_with(OVERLAY_PREFIX) {
            continue;
        }
        let mut value = vec![0u8; 256];
        loop {
            match rustix::fs::lgetxattr(path, name.as_str(), &mut value) {
                Ok(len) => {
                    value.truncate(len);
                    out.insert(name, value);
                    break;
                }
                Err(rustix::io::Errno::RANGE) => value.resize(value.len() * 4, 0),
                Err(_) => break,
            }
        }
    }
    out
}

fn xattrs(path: &Path, rel: &[u8]) -> Result<BTreeMap<String, Vec<u8>>, DiffError> {
    let mut out = BTreeMap::new();
    let mut names = vec![0u8; 1024];
    let n = loop {
        match rustix::fs::llistxattr(path, &mut names) {
            Ok(n) => break n,
            Err(rustix::io::Errno::RANGE) => names.resize(names.len() * 4, 0),
            Err(rustix::io::Errno::NOTSUP) => return Ok(out),
            Err(e) => return Err(err(rel, format!("list xattrs: {e}"))),
        }
    };
    for name in names[..n].split(|b| *b == 0).filter(|s| !s.is_empty()) {
        let name = String::from_utf8_lossy(name).into_owned();
        if name.starts_with(OVERLAY_PREFIX) {
            if name == "trusted.overlay.redirect" || name == "trusted.overlay.metacopy" {
                return Err(err(
                    rel,
                    format!("overlay marker {name} (mount with redirect_dir=off,metacopy=off)"),
                ));
            }
            continue;
        }
        let mut value = vec![0u8; 256];
        let len = loop {
            match rustix::fs::lgetxattr(path, name.as_str(), &mut value) {
                Ok(len) => break len,
                Err(rustix::io::Errno::RANGE) => value.resize(value.len() * 4, 0),
                Err(e) => return Err(err(rel, format!("xattr {name}: {e}"))),
            }
        };
        value.truncate(len);
        out.insert(name, value);
    }
    Ok(out)
}

fn is_opaque(path: &Path) -> bool {
    let mut v = [0u8; 4];
    matches!(
        rustix::fs::lgetxattr(path, "trusted.overlay.opaque", &mut v),
        Ok(1) if v[0] == b'y'
    )
}

fn meta_of(md: &fs::Metadata, path: &Path, rel: &[u8]) -> Result<Meta, DiffError> {
    Ok(Meta {
        mode: md.mode() & 0o7777,
        uid: md.uid(),
        gid: md.gid(),
        mtime: md.mtime(),
        xattrs: xattrs(path, rel)?,
    })
}

/// Walks `upper` and reports every change to `visit`, parents before children.
pub fn walk_upper(
    upper: &Path,
    visit: &mut dyn FnMut(Change) -> io::Result<()>,
) -> Result<(), DiffError> {
    let mut links = BTreeMap::new();
    walk_dir(upper, b"", visit, &mut links)
}

fn walk_dir(
    dir: &Path,
    rel: &[u8],
    visit: &mut dyn FnMut(Change) -> io::Result<()>,
    links: &mut BTreeMap<(u64, u64), BString>,
) -> Result<(), DiffError> {
    let mut names = Vec::new();
    for e in fs::read_dir(dir).map_err(|e| err(rel, format!("read directory: {e}")))? {
        let e = e.map_err(|e| err(rel, format!("read directory: {e}")))?;
        let name = e.file_name().into_vec();
        let md = e
            .metadata()
            .map_err(|x| err(&join(rel, &name), format!("stat: {x}")))?;
        names.push((name, md));
    }
    names.sort_by(|a, b| a.0.cmp(&b.0));
    let is_whiteout = |md: &fs::Metadata| md.file_type().is_char_device() && md.rdev() == 0;
    let sent = |r: io::Result<()>, p: &[u8]| r.map_err(|e| err(p, e));
    // Whiteouts first, so a reader applying entries in order never deletes a new sibling.
    for (name, _) in names.iter().filter(|(_, md)| is_whiteout(md)) {
        let p = join(rel, name);
        sent(visit(Change::Whiteout(p.clone())), &p)?;
    }
    for (name, md) in names.iter().filter(|(_, md)| !is_whiteout(md)) {
        let p = join(rel, name);
        let full = dir.join(crate::layer::view::as_path(name));
        let meta = meta_of(md, &full, &p)?;
        let ft = md.file_type();
        if ft.is_dir() {
            sent(visit(Change::Dir(p.clone(), meta)), &p)?;
            if is_opaque(&full) {
                sent(visit(Change::Opaque(p.clone())), &p)?;
            }
            walk_dir(&full, &p, visit, links)?;
        } else if ft.is_symlink() {
            let target = fs::read_link(&full).map_err(|e| err(&p, format!("readlink: {e}")))?;
            let target = BString::from(target.into_os_string().into_vec());
            sent(visit(Change::Symlink(p.clone(), target, meta)), &p)?;
        } else if ft.is_file() {
            if md.nlink() > 1 {
                if let Some(first) = links.get(&(md.dev(), md.ino())) {
                    sent(visit(Change::Hardlink(p.clone(), first.clone(), meta)), &p)?;
                    continue;
                }
                links.insert((md.dev(), md.ino()), p.clone());
            }
            let f = fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc_nofollow())
                .open(&full)
                .map_err(|e| err(&p, format!("open: {e}")))?;
            sent(visit(Change::File(p.clone(), meta, md.len(), f)), &p)?;
        } else {
            let (major, minor) = (rustix::fs::major(md.rdev()), rustix::fs::minor(md.rdev()));
            let kind = if ft.is_fifo() {
                Special::Fifo
            } else if ft.is_char_device() {
                Special::Char { major, minor }
            } else if ft.is_block_device() {
                Special::Block { major, minor }
            } else {
                // Sockets are not archived (as tar and BuildKit do).
                continue;
            };
            sent(visit(Change::Special(p.clone(), kind, meta)), &p)?;
        }
    }
    Ok(())
}

fn libc_nofollow() -> i32 {
    rustix::fs::OFlags::NOFOLLOW.bits() as i32
}

fn join(rel: &[u8], name: &[u8]) -> BString {
    let mut p = Vec::with_capacity(rel.len() + 1 + name.len());
    if !rel.is_empty() {
        p.extend_from_slice(rel);
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p.into()
}
