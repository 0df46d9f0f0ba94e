//! `kiln cp`: files between a container's root and the host, both ways, running or not (an
//! ended container's root is mounted for the copy and unmounted after).
//!
//! The container's side is hostile ground: its paths are resolved inside its root with
//! `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)` (a symlink such as `/etc -> /host/etc`
//! resolves inside the root), and below that everything goes through directory descriptors
//! with `O_NOFOLLOW`: nothing is read or written through a link the container made, and
//! nothing lands outside the root (CVE-2018-15664, CVE-2019-14271 class). Symlinks are copied
//! as symlinks in both directions. As docker's: files copied in belong to root; files copied
//! out keep the container's owners when kiln runs as root.

use std::{
    ffi::OsStr,
    os::{
        fd::{AsFd, OwnedFd},
        unix::{ffi::OsStrExt, fs::MetadataExt},
    },
    path::Path,
};

use rustix::{
    fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags},
    io::Errno,
};

use super::ContainerError;
use crate::store::{ContainerState, Store};

const RESOLVE: ResolveFlags = ResolveFlags::IN_ROOT.union(ResolveFlags::NO_MAGICLINKS);

fn fail(what: impl std::fmt::Display, e: impl std::fmt::Display) -> ContainerError {
    ContainerError::Config(format!("{what}: {e}"))
}

/// Runs `f` on the container's merged root: its mount while it runs, else mounted for `f`.
fn with_root<T>(
    store: &Store,
    what: &str,
    f: impl FnOnce(&Path) -> Result<T, ContainerError>,
) -> Result<T, ContainerError> {
    let c = store
        .find_container(what)?
        .ok_or_else(|| ContainerError::Config(format!("no such container: {what}")))?;
    let dir = store.root().join("containers").join(&c.id);
    let rootfs = dir.join("rootfs");
    if matches!(c.state(), ContainerState::Running | ContainerState::Paused) {
        return f(&rootfs);
    }
    let (upper, mut lower) = super::changes::layers_of(store, &c.id, &c.image)?;
    // The root as the container saw it: with the mount points of /etc/hosts and resolv.conf
    // (empty, as docker's export has them).
    store.add_etc_stubs(&mut lower);
    let work = dir.join("work");
    for d in [&rootfs, &work, &upper] {
        std::fs::create_dir_all(d).map_err(|e| fail(d.display(), e))?;
    }
    if lower.is_empty() {
        let empty = dir.join("empty");
        std::fs::create_dir_all(&empty).map_err(|e| fail(empty.display(), e))?;
        lower.push(empty);
    }
    let ov = crate::sandbox::overlay::Overlay {
        lower: &lower,
        upper: &upper,
        work: &work,
    };
    crate::sandbox::overlay::mount(ov, &rootfs)?;
    let result = f(&rootfs);
    let unmounted = crate::sandbox::overlay::unmount(&rootfs);
    let finished = crate::sandbox::overlay::finish(ov, &rootfs);
    let out = result?;
    unmounted?;
    finished?;
    Ok(out)
}

/// Opens `path` (absolute in the container) inside `root`, following symlinks inside it.
fn open_in(root: &OwnedFd, path: &str, flags: OFlags) -> Result<OwnedFd, Errno> {
    let rel = path.trim_start_matches('/');
    let rel = if rel.is_empty() { "." } else { rel };
    rustix::fs::openat2(root, rel, flags | OFlags::CLOEXEC, Mode::empty(), RESOLVE)
}

fn open_root(rootfs: &Path) -> Result<OwnedFd, ContainerError> {
    rustix::fs::open(
        rootfs,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| fail(rootfs.display(), e))
}

/// The last component of a path, `None` for `/` or one ending in `/.` (the contents).
fn base_name(path: &str) -> Option<&str> {
    let trimmed = path.trim_end_matches('/');
    match trimmed.rsplit('/').next() {
        Some("" | ".") | None => None,
        Some(n) => Some(n),
    }
}

/// `kiln cp [-a] CONTAINER:SRC DEST`. Without `archive`, as docker's `cp` without `-a`: the
/// copies belong to whoever runs kiln, and setuid and setgid bits are dropped (a container
/// must not plant a setuid-root program on the host). With it, owners and every mode bit are
/// kept (owners only when kiln runs as root).
pub fn copy_out(
    store: &Store,
    what: &str,
    src: &str,
    dest: &Path,
    archive: bool,
) -> Result<(), ContainerError> {
    with_root(store, what, |rootfs| {
        let root = open_root(rootfs)?;
        let from =
            open_in(&root, src, OFlags::PATH).map_err(|e| fail(format!("{what}:{src}"), e))?;
        let st = rustix::fs::fstat(&from).map_err(|e| fail(src, e))?;
        let is_dir = FileType::from_raw_mode(st.st_mode) == FileType::Directory;
        // docker's rules: into an existing directory under the source's name; otherwise the
        // destination is the copy itself.
        let target = match (std::fs::metadata(dest), base_name(src)) {
            (Ok(m), Some(name)) if m.is_dir() => dest.join(name),
            (Ok(m), None) if m.is_dir() => dest.to_path_buf(),
            _ if dest.as_os_str().as_bytes().ends_with(b"/") && !dest.exists() => {
                return Err(fail(dest.display(), "no such directory"));
            }
            _ => dest.to_path_buf(),
        };
        if is_dir {
            let d = open_in(&root, src, OFlags::RDONLY | OFlags::DIRECTORY)
                .map_err(|e| fail(src, e))?;
            walk_open_dir(&d, b"", src, &mut to_host(&target, archive))
        } else {
            // The entry itself, from its parent (a symlink stays one).
            let (parent, name) = match src.trim_end_matches('/').rsplit_once('/') {
                Some((p, n)) => (if p.is_empty() { "/" } else { p }, n),
                None => ("/", src),
            };
            let pdir = open_in(&root, parent, OFlags::RDONLY | OFlags::DIRECTORY)
                .map_err(|e| fail(parent, e))?;
            walk_entry(
                &pdir,
                OsStr::new(name),
                b"",
                src,
                &mut to_host(&target, archive),
            )
        }
    })
}

/// What the walk of the container's side finds, each read through descriptors opened with
/// `O_NOFOLLOW` below the starting point.
enum Found {
    /// A directory, before its contents ...
    Dir,
    /// ... and after them.
    DirEnd,
    Symlink(Vec<u8>),
    File(std::fs::File),
}

type Visit<'v> = dyn FnMut(&[u8], &rustix::fs::Stat, Found) -> Result<(), ContainerError> + 'v;

/// Walks the directory `dir` itself (`rel`, as the visitor names it) and everything below.
fn walk_open_dir(
    dir: &OwnedFd,
    rel: &[u8],
    shown: &str,
    visit: &mut Visit<'_>,
) -> Result<(), ContainerError> {
    let st = rustix::fs::fstat(dir).map_err(|e| fail(shown, e))?;
    visit(rel, &st, Found::Dir)?;
    for e in rustix::fs::Dir::read_from(dir).map_err(|e| fail(shown, e))? {
        let e = e.map_err(|e| fail(shown, e))?;
        let name = OsStr::from_bytes(e.file_name().to_bytes());
        if name == "." || name == ".." {
            continue;
        }
        // Names are bytes: one that is not UTF-8 is copied as it is.
        let mut below = rel.to_vec();
        if !below.is_empty() {
            below.push(b'/');
        }
        below.extend_from_slice(name.as_bytes());
        walk_entry(dir, name, &below, shown, visit)?;
    }
    visit(rel, &st, Found::DirEnd)
}

/// Walks entry `name` of directory `parent` (a symlink is reported, never followed).
/// Devices, fifos and sockets are left out (kiln makes no device node on the host from a
/// container's say-so).
fn walk_entry(
    parent: &OwnedFd,
    name: &OsStr,
    rel: &[u8],
    shown: &str,
    visit: &mut Visit<'_>,
) -> Result<(), ContainerError> {
    let st =
        rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW).map_err(|e| fail(shown, e))?;
    let open = |flags: OFlags| {
        rustix::fs::openat(
            parent,
            name,
            flags | OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| fail(shown, e))
    };
    match FileType::from_raw_mode(st.st_mode) {
        FileType::Directory => walk_open_dir(&open(OFlags::DIRECTORY)?, rel, shown, visit),
        FileType::Symlink => {
            let link =
                rustix::fs::readlinkat(parent, name, Vec::new()).map_err(|e| fail(shown, e))?;
            visit(rel, &st, Found::Symlink(link.into_bytes()))
        }
        FileType::RegularFile => visit(
            rel,
            &st,
            Found::File(std::fs::File::from(open(OFlags::empty())?)),
        ),
        _ => Ok(()),
    }
}

/// Writes what the walk finds under `target` on the host (`rel` empty: `target` itself).
fn to_host(
    target: &Path,
    archive: bool,
) -> impl FnMut(&[u8], &rustix::fs::Stat, Found) -> Result<(), ContainerError> + '_ {
    move |rel, st, found| {
        let t = if rel.is_empty() {
            target.to_path_buf()
        } else {
            target.join(OsStr::from_bytes(rel))
        };
        let host = |e: std::io::Error| fail(t.display(), e);
        match found {
            Found::Dir => match std::fs::create_dir(&t) {
                Err(e) if !(e.kind() == std::io::ErrorKind::AlreadyExists && t.is_dir()) => {
                    Err(host(e))
                }
                _ => Ok(()),
            },
            // The mode last: a read-only directory is filled first.
            Found::DirEnd => set_meta(&t, st, archive),
            Found::Symlink(link) => {
                let _ = std::fs::remove_file(&t);
                std::os::unix::fs::symlink(OsStr::from_bytes(&link), &t).map_err(host)?;
                if archive && rustix::process::geteuid().is_root() {
                    let _ = std::os::unix::fs::lchown(&t, Some(st.st_uid), Some(st.st_gid));
                }
                Ok(())
            }
            Found::File(mut f) => {
                let _ = std::fs::remove_file(&t);
                let mut out = std::fs::File::create(&t).map_err(host)?;
                std::io::copy(&mut f, &mut out).map_err(host)?;
                set_meta(&t, st, archive)
            }
        }
    }
}

fn set_meta(target: &Path, st: &rustix::fs::Stat, archive: bool) -> Result<(), ContainerError> {
    use std::os::unix::fs::PermissionsExt;
    // Owners only with `archive`, as root (another user cannot give files away), then the
    // mode (a chown clears setuid bits); without `archive`, never setuid or setgid.
    let mode = if archive {
        if rustix::process::geteuid().is_root() {
            let _ = std::os::unix::fs::lchown(target, Some(st.st_uid), Some(st.st_gid));
        }
        st.st_mode & 0o7777
    } else {
        st.st_mode & 0o1777
    };
    std::fs::set_permissions(target, std::fs::Permissions::from_mode(mode))
        .map_err(|e| fail(target.display(), e))
}

/// Seeds the empty directory `dest` (a new volume) with what the root filesystem `rootfs` has
/// at `target` (resolved inside it): the directory's owner and mode, and its contents with
/// their owners and modes, as docker's copy-up. Nothing there, or no directory: nothing done.
pub(crate) fn seed(rootfs: &Path, target: &str, dest: &Path) -> Result<(), ContainerError> {
    let root = open_root(rootfs)?;
    let Ok(dir) = open_in(&root, target, OFlags::RDONLY | OFlags::DIRECTORY) else {
        return Ok(());
    };
    walk_open_dir(&dir, b"", target, &mut to_host(dest, true))
}

/// `kiln cp SRC CONTAINER:DEST`.
pub fn copy_in(store: &Store, what: &str, src: &Path, dest: &str) -> Result<(), ContainerError> {
    let md = std::fs::symlink_metadata(src).map_err(|e| fail(src.display(), e))?;
    with_root(store, what, |rootfs| {
        let root = open_root(rootfs)?;
        let src_name = src
            .file_name()
            .filter(|_| !src.as_os_str().as_bytes().ends_with(b"/."))
            .map(OsStr::to_owned);
        // Into an existing directory under the source's name; else the destination is the
        // copy, made in its parent.
        let existing = open_in(&root, dest, OFlags::RDONLY | OFlags::DIRECTORY);
        let (parent, name) = match (existing, &src_name) {
            (Ok(dir), Some(n)) => (dir, n.clone()),
            (Ok(dir), None) if md.is_dir() => {
                return copy_dir_contents_in(src, &dir, dest);
            }
            _ => {
                let trimmed = dest.trim_end_matches('/');
                let (p, n) = match trimmed.rsplit_once('/') {
                    Some((p, n)) => (if p.is_empty() { "/" } else { p }, n),
                    None => ("/", trimmed),
                };
                if n.is_empty() {
                    return Err(fail(format!("{what}:{dest}"), "no name to copy to"));
                }
                let pdir = open_in(&root, p, OFlags::RDONLY | OFlags::DIRECTORY)
                    .map_err(|e| fail(format!("{what}:{p}"), e))?;
                (pdir, n.into())
            }
        };
        copy_entry_in(src, &parent, &name, dest)
    })
}

fn copy_dir_contents_in(src: &Path, dir: &OwnedFd, shown: &str) -> Result<(), ContainerError> {
    for e in std::fs::read_dir(src).map_err(|e| fail(src.display(), e))? {
        let e = e.map_err(|e| fail(src.display(), e))?;
        let shown = format!(
            "{}/{}",
            shown.trim_end_matches('/'),
            e.file_name().to_string_lossy()
        );
        copy_entry_in(&e.path(), dir, &e.file_name(), &shown)?;
    }
    Ok(())
}

/// Copies host `src` to `name` in the container's directory `parent`: created anew (what was
/// there removed first, never written through), owned by root.
fn copy_entry_in(
    src: &Path,
    parent: &OwnedFd,
    name: &OsStr,
    shown: &str,
) -> Result<(), ContainerError> {
    let md = std::fs::symlink_metadata(src).map_err(|e| fail(src.display(), e))?;
    let mode = Mode::from_raw_mode(md.mode() & 0o7777);
    let replace = |as_dir: bool| -> Result<(), ContainerError> {
        match rustix::fs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) if as_dir && FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
                Ok(())
            }
            Ok(st) => {
                let flags = if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                    AtFlags::REMOVEDIR
                } else {
                    AtFlags::empty()
                };
                rustix::fs::unlinkat(parent, name, flags).map_err(|e| fail(shown, e))
            }
            Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(fail(shown, e)),
        }
    };
    let owned = |fd: &dyn AsFd| {
        let _ = rustix::fs::fchown(fd, Some(rustix::fs::Uid::ROOT), Some(rustix::fs::Gid::ROOT));
    };
    let ft = md.file_type();
    if ft.is_dir() {
        replace(true)?;
        match rustix::fs::mkdirat(parent, name, mode) {
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(fail(shown, e)),
        }
        let d = rustix::fs::openat(
            parent,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| fail(shown, e))?;
        owned(&d);
        rustix::fs::fchmod(&d, mode).map_err(|e| fail(shown, e))?;
        copy_dir_contents_in(src, &d, shown)
    } else if ft.is_symlink() {
        replace(false)?;
        let target = std::fs::read_link(src).map_err(|e| fail(src.display(), e))?;
        rustix::fs::symlinkat(target.as_os_str(), parent, name).map_err(|e| fail(shown, e))?;
        let _ = rustix::fs::chownat(
            parent,
            name,
            Some(rustix::fs::Uid::ROOT),
            Some(rustix::fs::Gid::ROOT),
            AtFlags::SYMLINK_NOFOLLOW,
        );
        Ok(())
    } else if ft.is_file() {
        replace(false)?;
        let fd = rustix::fs::openat(
            parent,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| fail(shown, e))?;
        let mut out = std::fs::File::from(fd);
        let mut input = std::fs::File::open(src).map_err(|e| fail(src.display(), e))?;
        std::io::copy(&mut input, &mut out).map_err(|e| fail(shown, e))?;
        owned(&out);
        rustix::fs::fchmod(&out, mode).map_err(|e| fail(shown, e))
    } else {
        Err(fail(
            src.display(),
            "only files, directories and symlinks can be copied",
        ))
    }
}

/// `kiln cp CONTAINER:SRC -`: a tar of SRC on `out`, its entries named from SRC's last
/// component, read by the same walk as [`copy_out`].
pub fn copy_out_tar(
    store: &Store,
    what: &str,
    src: &str,
    out: impl std::io::Write,
) -> Result<(), ContainerError> {
    with_root(store, what, |rootfs| {
        let root = open_root(rootfs)?;
        let trimmed = src.trim_end_matches('/');
        let (parent, name) = match trimmed.rsplit_once('/') {
            Some((p, n)) => (if p.is_empty() { "/" } else { p }, n),
            None => ("/", trimmed),
        };
        let mut tar = tar::Builder::new(out);
        if name.is_empty() || name == "." {
            // The root, or a directory's contents: entries named from inside it.
            let d = open_in(&root, trimmed, OFlags::RDONLY | OFlags::DIRECTORY)
                .map_err(|e| fail(format!("{what}:{src}"), e))?;
            walk_open_dir(&d, b"", src, &mut to_tar(&mut tar))?;
        } else {
            let pdir = open_in(&root, parent, OFlags::RDONLY | OFlags::DIRECTORY)
                .map_err(|e| fail(format!("{what}:{src}"), e))?;
            walk_entry(
                &pdir,
                OsStr::new(name),
                name.as_bytes(),
                src,
                &mut to_tar(&mut tar),
            )?;
        }
        tar.finish().map_err(|e| fail("writing the archive", e))
    })
}

/// Appends what the walk finds to `tar`, named by `rel` (the starting directory itself, `rel`
/// empty, has no entry).
fn to_tar<W: std::io::Write>(
    tar: &mut tar::Builder<W>,
) -> impl FnMut(&[u8], &rustix::fs::Stat, Found) -> Result<(), ContainerError> + '_ {
    move |rel, st, found| {
        let io = |e: std::io::Error| fail("writing the archive", e);
        let name = Path::new(OsStr::from_bytes(rel));
        if rel.is_empty() {
            return Ok(());
        }
        let mut h = tar::Header::new_gnu();
        h.set_mode(st.st_mode & 0o7777);
        h.set_uid(u64::from(st.st_uid));
        h.set_gid(u64::from(st.st_gid));
        h.set_mtime(u64::try_from(st.st_mtime).unwrap_or(0));
        h.set_size(0);
        match found {
            Found::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                let mut dir = rel.to_vec();
                dir.push(b'/');
                tar.append_data(&mut h, OsStr::from_bytes(&dir), std::io::empty())
                    .map_err(io)
            }
            Found::DirEnd => Ok(()),
            Found::Symlink(link) => {
                h.set_entry_type(tar::EntryType::Symlink);
                tar.append_link(&mut h, name, OsStr::from_bytes(&link))
                    .map_err(io)
            }
            Found::File(f) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(st.st_size as u64);
                tar.append_data(&mut h, name, f).map_err(io)
            }
        }
    }
}

/// `kiln cp - CONTAINER:DIR`: the tar on `input` unpacked into the directory DIR (resolved
/// inside the container's root), each entry resolved inside it as a layer's are.
pub fn copy_in_tar(
    store: &Store,
    what: &str,
    input: impl std::io::Read,
    dest: &str,
) -> Result<(), ContainerError> {
    with_root(store, what, |rootfs| {
        let root = open_root(rootfs)?;
        let dir = open_in(&root, dest, OFlags::RDONLY | OFlags::DIRECTORY).map_err(|e| {
            fail(
                format!("{what}:{dest}"),
                format!("{e} (the destination of an archive must be a directory)"),
            )
        })?;
        crate::layer::unpack::unpack_plain(input, &dir)
            .map_err(|e| fail(format!("{what}:{dest}"), e))
    })
}
