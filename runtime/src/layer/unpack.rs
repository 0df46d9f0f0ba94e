//! Unpacking a layer into a directory that serves as an overlayfs lower layer (each
//! layer unpacked once, keyed by ChainID, shared by builds and containers).
//!
//! Safety (REFERENCE §5.3, DESIGN.md "Security stance"): every path is resolved inside the
//! target directory with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`, so `..`
//! components, absolute symlinks and symlinked parents all stay inside it (the directory acts
//! as `/` for resolution); hard links may only point at paths inside it; an existing entry is
//! unlinked before a new one is created with `O_EXCL | O_NOFOLLOW`, so nothing is ever written
//! through a link. This is the class of bugs behind CVE-2018-15664-style tar breakouts.
//!
//! Whiteouts become what overlayfs reads: `.wh.<name>` a 0/0 character device named `<name>`,
//! `.wh..wh..opq` the `trusted.overlay.opaque=y` xattr on its directory.

use std::{
    io::Read,
    os::fd::{AsFd, OwnedFd},
    path::Path,
};

use rustix::{
    fs::{
        AtFlags, FileType, Gid, Mode, OFlags, ResolveFlags, Timespec, Timestamps, Uid, XattrFlags,
    },
    io::Errno,
};

/// Why a layer could not be unpacked; names the entry at fault.
#[derive(Debug, thiserror::Error)]
#[error("{entry}: {message}")]
pub struct UnpackError {
    pub entry: String,
    pub message: String,
}

fn err(entry: &str, message: impl std::fmt::Display) -> UnpackError {
    UnpackError {
        entry: entry.to_string(),
        message: message.to_string(),
    }
}

/// Lexically cleans an entry path inside the root: `..` stops at the root (as in a chroot).
fn components(path: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c.to_string()),
        }
    }
    out
}

const RESOLVE: ResolveFlags = ResolveFlags::IN_ROOT.union(ResolveFlags::NO_MAGICLINKS);

/// Opens directory `comps` (relative to `root`, resolved inside it), creating missing ones.
fn open_dir(root: &OwnedFd, comps: &[String], entry: &str) -> Result<OwnedFd, UnpackError> {
    let dir_flags = OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC;
    let mut fd = rustix::fs::openat2(root, ".", dir_flags, Mode::empty(), RESOLVE)
        .map_err(|e| err(entry, e))?;
    for i in 0..comps.len() {
        let prefix = comps[..=i].join("/");
        fd = match rustix::fs::openat2(root, &prefix, dir_flags, Mode::empty(), RESOLVE) {
            Ok(next) => next,
            Err(Errno::NOENT) => {
                // Created in the directory resolved so far, by name: no link is followed.
                match rustix::fs::mkdirat(&fd, comps[i].as_str(), Mode::from_raw_mode(0o755)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => return Err(err(entry, format!("creating {prefix}: {e}"))),
                }
                rustix::fs::openat2(root, &prefix, dir_flags, Mode::empty(), RESOLVE)
                    .map_err(|e| err(entry, format!("opening {prefix}: {e}")))?
            }
            Err(e) => {
                return Err(err(
                    entry,
                    format!("{prefix} is not a usable directory: {e}"),
                ));
            }
        };
    }
    Ok(fd)
}

/// Removes `name` in `dir` unless it is a directory (which a directory entry merges into).
fn clear(dir: &OwnedFd, name: &str, keep_dir: bool, entry: &str) -> Result<(), UnpackError> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(err(entry, e)),
        Ok(st) => {
            let is_dir = FileType::from_raw_mode(st.st_mode) == FileType::Directory;
            if is_dir && keep_dir {
                return Ok(());
            }
            let flags = if is_dir {
                AtFlags::REMOVEDIR
            } else {
                AtFlags::empty()
            };
            rustix::fs::unlinkat(dir, name, flags)
                .map_err(|e| err(entry, format!("replacing the existing entry: {e}")))
        }
    }
}

fn set_owner_mode_time(
    dir: &OwnedFd,
    name: &str,
    h: &tar::Header,
    symlink: bool,
    entry: &str,
) -> Result<(), UnpackError> {
    let uid = h.uid().unwrap_or(0) as u32;
    let gid = h.gid().unwrap_or(0) as u32;
    // Rootless without a subordinate range only root exists: other owners become root.
    let id = |n: u32| {
        if crate::sandbox::userns::mapped(n) {
            n
        } else {
            0
        }
    };
    let (uid, gid) = (id(uid), id(gid));
    rustix::fs::chownat(
        dir,
        name,
        Some(Uid::from_raw(uid)),
        Some(Gid::from_raw(gid)),
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(|e| err(entry, format!("chown: {e}")))?;
    if !symlink {
        // After chown, which clears setuid/setgid bits.
        rustix::fs::chmodat(
            dir,
            name,
            Mode::from_raw_mode(h.mode().unwrap_or(0o644) & 0o7777),
            AtFlags::empty(),
        )
        .map_err(|e| err(entry, format!("chmod: {e}")))?;
    }
    let t = Timespec {
        tv_sec: h.mtime().unwrap_or(0) as i64,
        tv_nsec: 0,
    };
    rustix::fs::utimensat(
        dir,
        name,
        &Timestamps {
            last_access: t,
            last_modification: t,
        },
        AtFlags::SYMLINK_NOFOLLOW,
    )
    .map_err(|e| err(entry, format!("utimensat: {e}")))
}

/// Unpacks the layer tar `reader` into `dir` (which must exist) in overlayfs lower-layer form.
pub fn unpack_for_overlay(reader: impl Read, dir: &Path) -> Result<(), UnpackError> {
    unpack_indexed(reader, dir).map(drop)
}

/// [`unpack_for_overlay`], also returning the layer's index (its entries, as
/// [`crate::layer::view::read_entries`] gives them), so a pulled layer is read once.
pub fn unpack_indexed(
    reader: impl Read,
    dir: &Path,
) -> Result<Vec<crate::layer::view::RawEntry>, UnpackError> {
    let root = rustix::fs::open(
        dir,
        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| err(&dir.display().to_string(), e))?;
    unpack_into(reader, &root, true)
}

/// Unpacks a plain tar (`kiln cp - CONTAINER:DIR`) into the directory `root` (a descriptor, so
/// that the caller resolved it inside a container's root), every entry resolved inside it as a
/// layer's. A `.wh.` name is refused: only layers have whiteouts.
pub fn unpack_plain(reader: impl Read, root: &OwnedFd) -> Result<(), UnpackError> {
    unpack_into(reader, root, false).map(drop)
}

fn unpack_into(
    reader: impl Read,
    root: &OwnedFd,
    layer: bool,
) -> Result<Vec<crate::layer::view::RawEntry>, UnpackError> {
    let mut index = Vec::new();
    let mut ar = tar::Archive::new(reader);
    // Directory times are set last: creating entries inside a directory changes its mtime.
    let mut dir_times: Vec<(Vec<String>, tar::Header)> = Vec::new();
    for e in ar.entries().map_err(|e| err("layer", e))? {
        let mut e = e.map_err(|e| err("layer", e))?;
        index.extend(crate::layer::view::RawEntry::of(&e).map_err(|x| err("layer", x))?);
        let raw = e
            .path()
            .map_err(|x| err("layer", x))?
            .to_string_lossy()
            .to_string();
        let comps = components(&raw);
        let Some((name, parent)) = comps.split_last() else {
            continue;
        };
        let h = e.header().clone();
        if !layer && name.starts_with(".wh.") {
            return Err(err(
                &raw,
                "a name starting with .wh. is a whiteout in a layer",
            ));
        }
        let pdir = open_dir(root, parent, &raw)?;
        if name == ".wh..wh..opq" {
            rustix::fs::fsetxattr(&pdir, "trusted.overlay.opaque", b"y", XattrFlags::empty())
                .map_err(|x| err(&raw, format!("opaque xattr: {x}")))?;
            continue;
        }
        if let Some(victim) = name.strip_prefix(".wh.") {
            clear(&pdir, victim, false, &raw)?;
            rustix::fs::mknodat(
                &pdir,
                victim,
                FileType::CharacterDevice,
                Mode::empty(),
                rustix::fs::makedev(0, 0),
            )
            .map_err(|x| err(&raw, format!("whiteout: {x}")))?;
            continue;
        }
        let mode = Mode::from_raw_mode(h.mode().unwrap_or(0o644) & 0o7777);
        match h.entry_type() {
            tar::EntryType::Directory => {
                clear(&pdir, name, true, &raw)?;
                match rustix::fs::mkdirat(&pdir, name.as_str(), mode) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(x) => return Err(err(&raw, x)),
                }
                dir_times.push((comps.clone(), h.clone()));
                continue;
            }
            t if t.is_file() => {
                clear(&pdir, name, false, &raw)?;
                let fd = rustix::fs::openat(
                    &pdir,
                    name.as_str(),
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(|x| err(&raw, x))?;
                let mut file = std::fs::File::from(fd);
                std::io::copy(&mut e, &mut file).map_err(|x| err(&raw, x))?;
                if let Ok(Some(exts)) = e.pax_extensions() {
                    for ext in exts.flatten() {
                        if let Ok(key) = ext.key() {
                            if let Some(attr) = key.strip_prefix("SCHILY.xattr.") {
                                rustix::fs::fsetxattr(
                                    file.as_fd(),
                                    attr,
                                    ext.value_bytes(),
                                    XattrFlags::empty(),
                                )
                                .map_err(|x| err(&raw, format!("xattr {attr}: {x}")))?;
                            }
                        }
                    }
                }
            }
            tar::EntryType::Symlink => {
                clear(&pdir, name, false, &raw)?;
                let target = e
                    .link_name()
                    .map_err(|x| err(&raw, x))?
                    .map(|l| l.to_string_lossy().to_string())
                    .unwrap_or_default();
                // Stored as written: an absolute target is resolved inside the rootfs when used.
                rustix::fs::symlinkat(target.as_str(), &pdir, name.as_str())
                    .map_err(|x| err(&raw, x))?;
                set_owner_mode_time(&pdir, name, &h, true, &raw)?;
                continue;
            }
            tar::EntryType::Link => {
                let target = e
                    .link_name()
                    .map_err(|x| err(&raw, x))?
                    .map(|l| l.to_string_lossy().to_string())
                    .unwrap_or_default();
                let tcomps = components(&target);
                let Some((tname, tparent)) = tcomps.split_last() else {
                    return Err(err(&raw, "hard link with an empty target"));
                };
                // The target's directory is resolved inside the root; linkat does not follow a
                // symlink at the target itself, so a link can never reach a host file.
                let tdir = rustix::fs::openat2(
                    root,
                    if tparent.is_empty() {
                        ".".to_string()
                    } else {
                        tparent.join("/")
                    },
                    OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
                    Mode::empty(),
                    RESOLVE,
                )
                .map_err(|x| err(&raw, format!("hard link target {target}: {x}")))?;
                clear(&pdir, name, false, &raw)?;
                rustix::fs::linkat(
                    &tdir,
                    tname.as_str(),
                    &pdir,
                    name.as_str(),
                    AtFlags::empty(),
                )
                .map_err(|x| err(&raw, format!("hard link to {target}: {x}")))?;
                continue;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                clear(&pdir, name, false, &raw)?;
                let ft = match h.entry_type() {
                    tar::EntryType::Char => FileType::CharacterDevice,
                    tar::EntryType::Block => FileType::BlockDevice,
                    _ => FileType::Fifo,
                };
                let dev = rustix::fs::makedev(
                    h.device_major().ok().flatten().unwrap_or(0),
                    h.device_minor().ok().flatten().unwrap_or(0),
                );
                rustix::fs::mknodat(&pdir, name.as_str(), ft, mode, dev)
                    .map_err(|x| err(&raw, x))?;
            }
            // Sockets and unknown types are not part of a filesystem layer.
            _ => continue,
        }
        set_owner_mode_time(&pdir, name, &h, false, &raw)?;
    }
    for (comps, h) in dir_times.iter().rev() {
        let Some((name, parent)) = comps.split_last() else {
            continue;
        };
        let pdir = open_dir(root, parent, name)?;
        set_owner_mode_time(&pdir, name, h, false, name)?;
    }
    Ok(index)
}
