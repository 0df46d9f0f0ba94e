//! Mounts a sandbox gets besides its root: `RUN --mount` (bind, cache, tmpfs, secret, ssh),
//! `kiln run -v`, and the generated /etc files.
//!
//! Each is prepared in kiln's own mount namespace as a *detached* mount (a descriptor from
//! `open_tree(OPEN_TREE_CLONE)` or `fsmount`), so every host path is resolved before the sandbox
//! exists. The child attaches them with `move_mount` after `pivot_root`, onto a target it
//! resolves inside the new root ([`super::process`]): no host path is looked up after the root
//! switch, and no symlink of the image can point a mount at the host.

use std::{
    ffi::CString,
    os::fd::{AsFd, AsRawFd, OwnedFd},
    path::{Path, PathBuf},
    sync::Arc,
};

use rustix::{
    fs::{CWD, Mode, OFlags, ResolveFlags},
    io::Errno,
    mount::{
        FsMountFlags, FsOpenFlags, MountAttrFlags, OpenTreeFlags, fsconfig_create,
        fsconfig_set_string, fsmount, fsopen, open_tree,
    },
};

/// A mount that could not be prepared; names the path and the step.
#[derive(Debug, thiserror::Error)]
#[error("{step} {path}: {errno}")]
pub struct MountError {
    pub step: &'static str,
    pub path: String,
    pub errno: Errno,
}

fn fail(step: &'static str, path: impl std::fmt::Display) -> impl FnOnce(Errno) -> MountError {
    let path = path.to_string();
    move |errno| MountError { step, path, errno }
}

/// A detached mount: a directory or a single file, not attached anywhere yet.
#[derive(Debug, Clone)]
pub struct Detached {
    tree: Arc<OwnedFd>,
    dir: bool,
}

/// A detached mount and where it goes in the sandbox.
#[derive(Debug, Clone)]
pub struct Mount {
    /// Absolute path inside the root; missing directories (and a missing file for a file mount)
    /// are created there, resolved inside the root.
    pub target: String,
    pub source: Detached,
    /// Only over a regular file or a missing path: a target that is a symlink or a directory is
    /// left alone (the generated /etc files: an image may manage its own).
    pub only_over_file: bool,
}

impl Detached {
    pub fn is_dir(&self) -> bool {
        self.dir
    }

    pub(crate) fn raw_fd(&self) -> i32 {
        self.tree.as_raw_fd()
    }

    /// Where it goes: a mount for [`super::process::Spec::mounts`].
    pub fn at(self, target: &str) -> Mount {
        Mount {
            target: target.to_string(),
            source: self,
            only_over_file: false,
        }
    }

    fn new(fd: OwnedFd, path: &str) -> Result<Detached, MountError> {
        let st = rustix::fs::fstat(&fd).map_err(fail("stat", path))?;
        let dir =
            rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory;
        Ok(Detached {
            tree: Arc::new(fd),
            dir,
        })
    }

    /// Makes the whole tree read-only (`mount_setattr(MOUNT_ATTR_RDONLY, AT_RECURSIVE)`).
    pub fn read_only(self) -> Result<Detached, MountError> {
        #[repr(C)]
        struct MountAttr {
            attr_set: u64,
            attr_clr: u64,
            propagation: u64,
            userns_fd: u64,
        }
        let attr = MountAttr {
            attr_set: u64::from(MountAttrFlags::MOUNT_ATTR_RDONLY.bits()),
            attr_clr: 0,
            propagation: 0,
            userns_fd: 0,
        };
        // SAFETY: mount_setattr(2) reads `size_of::<MountAttr>()` bytes from `&attr`, a live
        // struct laid out as the kernel's `struct mount_attr`; the path is a static C string and
        // the descriptor is owned by `self`.
        let r = unsafe {
            libc::syscall(
                libc::SYS_mount_setattr,
                self.tree.as_raw_fd(),
                c"".as_ptr(),
                libc::AT_EMPTY_PATH | libc::AT_RECURSIVE,
                &attr as *const MountAttr,
                std::mem::size_of::<MountAttr>(),
            )
        };
        if r != 0 {
            let errno = Errno::from_raw_os_error(
                std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
            );
            return Err(MountError {
                step: "make read-only",
                path: "mount".into(),
                errno,
            });
        }
        Ok(self)
    }
}

/// A copy of the host path `source` (and every mount below it), for `kiln run -v` and the /etc
/// files. The caller chose the host path; it is not confined.
pub fn bind(source: &Path) -> Result<Detached, MountError> {
    let fd = open_tree(
        CWD,
        source,
        OpenTreeFlags::OPEN_TREE_CLONE
            | OpenTreeFlags::OPEN_TREE_CLOEXEC
            | OpenTreeFlags::AT_RECURSIVE,
    )
    .map_err(fail("bind", source.display()))?;
    Detached::new(fd, &source.display().to_string())
}

/// A copy of `sub` inside the directory tree `root`, resolved as if `root` were `/` (symlinks,
/// `..` and absolute paths stay inside it; magic links refused): what `RUN --mount=type=bind,
/// source=...` sees of a context or a stage.
pub fn bind_in(root: &Path, sub: &str) -> Result<Detached, MountError> {
    let what = format!("{sub} in {}", root.display());
    let at = open_in(root, sub)?;
    let fd = open_tree(
        &at,
        "",
        OpenTreeFlags::OPEN_TREE_CLONE
            | OpenTreeFlags::OPEN_TREE_CLOEXEC
            | OpenTreeFlags::AT_RECURSIVE
            | OpenTreeFlags::AT_EMPTY_PATH,
    )
    .map_err(fail("bind", &what))?;
    Detached::new(fd, &what)
}

/// An `O_PATH` descriptor of `sub` inside the directory tree `root`, resolved as if `root` were
/// `/` (symlinks, `..` and absolute paths stay inside it; magic links refused).
pub fn open_in(root: &Path, sub: &str) -> Result<OwnedFd, MountError> {
    let what = format!("{sub} in {}", root.display());
    let dir = rustix::fs::open(
        root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(fail("open", root.display()))?;
    let rel = sub.trim_start_matches('/');
    let rel = if rel.is_empty() { "." } else { rel };
    rustix::fs::openat2(
        &dir,
        rel,
        OFlags::PATH | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    )
    .map_err(fail("open", &what))
}

/// A fresh tmpfs (`RUN --mount=type=tmpfs`): `size` bytes at most (the kernel's default, half
/// of RAM, when `None`), root directory mode 1777 unless `mode` says otherwise.
pub fn tmpfs(size: Option<u64>, mode: Option<u32>) -> Result<Detached, MountError> {
    let fs = fsopen("tmpfs", FsOpenFlags::FSOPEN_CLOEXEC).map_err(fail("fsopen", "tmpfs"))?;
    if let Some(size) = size {
        fsconfig_set_string(fs.as_fd(), "size", size.to_string()).map_err(fail("size", size))?;
    }
    let mode = format!("{:o}", mode.unwrap_or(0o1777));
    fsconfig_set_string(fs.as_fd(), "mode", &mode).map_err(fail("mode", &mode))?;
    fsconfig_create(fs.as_fd()).map_err(fail("create", "tmpfs"))?;
    let fd = fsmount(
        fs.as_fd(),
        FsMountFlags::FSMOUNT_CLOEXEC,
        MountAttrFlags::MOUNT_ATTR_NOSUID | MountAttrFlags::MOUNT_ATTR_NODEV,
    )
    .map_err(fail("fsmount", "tmpfs"))?;
    Detached::new(fd, "tmpfs")
}

/// One file kept in memory only (a secret): its name, content, mode and owner.
#[derive(Debug, Clone)]
pub struct MemFile {
    pub name: String,
    pub data: Vec<u8>,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// Writes `files` into a fresh tmpfs and returns one detached file mount each. The tmpfs is
/// attached on the empty directory `scratch` only while the files are written and cloned, then
/// detached again: the content is never on disk, and once the sandbox is gone nothing refers to
/// it. `scratch` must be private to the caller (under the store's `tmp/`, mode 0700).
pub fn memory_files(scratch: &Path, files: &[MemFile]) -> Result<Vec<Detached>, MountError> {
    // Room for every file whole (a page more each), never less than 1 MiB.
    let room: usize = files.iter().map(|f| f.data.len() + 4096).sum();
    let fs = tmpfs(Some(room.max(1 << 20) as u64), Some(0o700))?;
    rustix::mount::move_mount(
        fs.tree.as_fd(),
        "",
        CWD,
        scratch,
        rustix::mount::MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(fail("attach", scratch.display()))?;
    let out = (|| {
        let mut out = Vec::new();
        for f in files {
            if f.name.is_empty() || f.name.contains('/') || f.name.starts_with('.') {
                return Err(MountError {
                    step: "name",
                    path: f.name.clone(),
                    errno: Errno::INVAL,
                });
            }
            let path: PathBuf = scratch.join(&f.name);
            let file = rustix::fs::open(
                &path,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            )
            .map_err(fail("create", path.display()))?;
            let mut rest = f.data.as_slice();
            while !rest.is_empty() {
                let n = rustix::io::write(&file, rest).map_err(fail("write", path.display()))?;
                rest = &rest[n..];
            }
            rustix::fs::fchown(
                &file,
                Some(rustix::fs::Uid::from_raw(f.uid)),
                Some(rustix::fs::Gid::from_raw(f.gid)),
            )
            .map_err(fail("chown", path.display()))?;
            rustix::fs::fchmod(&file, Mode::from_raw_mode(f.mode & 0o7777))
                .map_err(fail("chmod", path.display()))?;
            drop(file);
            out.push(bind(&path)?);
        }
        Ok(out)
    })();
    let detached = rustix::mount::unmount(scratch, rustix::mount::UnmountFlags::DETACH)
        .map_err(fail("detach", scratch.display()));
    let out = out?;
    detached?;
    Ok(out)
}

/// The path components of an absolute target, each as the prefix to open (`/a`, `/a/b`) and the
/// name to create in its parent (`a`, `b`). `None` for `/` or a path with `..` or a NUL byte.
pub(crate) fn target_steps(target: &str) -> Option<Vec<(CString, CString)>> {
    let rel = crate::layer::view::normalize(target)?;
    if rel.is_empty() {
        return None;
    }
    let mut out = Vec::new();
    let mut prefix = Vec::new();
    for part in rel.split(|&b| b == b'/') {
        prefix.push(b'/');
        prefix.extend_from_slice(part);
        out.push((CString::new(prefix.clone()).ok()?, CString::new(part).ok()?));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_steps_split_and_refuse_climbing() {
        let s = target_steps("/run//secrets/./tok").unwrap();
        let prefixes: Vec<&str> = s.iter().map(|(p, _)| p.to_str().unwrap()).collect();
        let names: Vec<&str> = s.iter().map(|(_, n)| n.to_str().unwrap()).collect();
        assert_eq!(prefixes, ["/run", "/run/secrets", "/run/secrets/tok"]);
        assert_eq!(names, ["run", "secrets", "tok"]);
        assert!(target_steps("/").is_none());
        assert!(target_steps("/a/../etc").is_none());
        assert!(target_steps("/a\0b").is_none());
    }
}
