//! Mounts placed inside the new root by the child: each target opened component by component
//! with `openat2(RESOLVE_IN_ROOT)` and the detached tree moved onto that descriptor, never onto a
//! path. Also, for rootless kiln, the host's device nodes and /sys bound instead of made.

use std::{ffi::CString, os::fd::OwnedFd, path::Path};

use rustix::{
    fs::{FileType, Mode},
    io::Errno,
};

use super::process::SandboxError;

/// A detached mount (descriptor number) and where it goes: the target's components as
/// (prefix to open, name to create in its parent).
pub(super) struct Attach {
    pub(super) tree: i32,
    pub(super) steps: Vec<(CString, CString)>,
    pub(super) dir: bool,
    pub(super) only_over_file: bool,
}

/// Rootless: the host's device nodes and /sys as detached mounts (`/sys` read-only).
pub(super) struct HostBinds {
    pub(super) devs: Vec<Attach>,
    pub(super) sys: Attach,
    pub(super) _trees: Vec<super::mounts::Detached>,
}

pub(super) const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

pub(super) fn host_binds() -> Result<HostBinds, SandboxError> {
    let bad = |e: super::mounts::MountError| SandboxError::Setup {
        step: format!("{} {}", e.step, e.path),
        errno: e.errno,
    };
    let mut trees = Vec::new();
    let mut devs = Vec::new();
    for d in DEVICES {
        let host = format!("/dev/{d}");
        let Ok(tree) = super::mounts::bind(Path::new(&host)) else {
            continue; // no /dev/tty without a terminal on some hosts
        };
        devs.push(Attach {
            tree: tree.raw_fd(),
            steps: super::mounts::target_steps(&host).unwrap_or_default(),
            dir: false,
            only_over_file: false,
        });
        trees.push(tree);
    }
    let sys = super::mounts::bind(Path::new("/sys"))
        .and_then(super::mounts::Detached::read_only)
        .map_err(bad)?;
    let sys_attach = Attach {
        tree: sys.raw_fd(),
        steps: super::mounts::target_steps("/sys").unwrap_or_default(),
        dir: true,
        only_over_file: false,
    };
    trees.push(sys);
    Ok(HostBinds {
        devs,
        sys: sys_attach,
        _trees: trees,
    })
}
/// Opens the path whose components are `steps` inside the root, creating what is missing
/// (directories, and an empty file last when `dir` is false). Each component is opened with
/// `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)` from the root, so a symlink of the image
/// resolves inside the root and `/proc/self/fd/N` gives no way out (CVE-2024-21626); creation
/// is relative to the parent just opened, never through a path. `None` for no components (the
/// root), or when `only_over_file` and the last component exists as something else than a
/// regular file (a symlink is not followed then).
pub(super) fn open_creating(
    steps: &[(CString, CString)],
    dir: bool,
    only_over_file: bool,
) -> Result<Option<OwnedFd>, Errno> {
    use rustix::fs::{OFlags, ResolveFlags};
    if steps.is_empty() {
        return Ok(None);
    }
    let root = rustix::fs::open(
        c"/",
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let open = |path: &std::ffi::CStr| {
        rustix::fs::openat2(
            &root,
            path,
            OFlags::PATH | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        )
    };
    let mut parent = open(c"/")?;
    let last = steps.len() - 1;
    for (i, (prefix, name)) in steps.iter().enumerate() {
        let as_dir = i < last || dir;
        if i == last && only_over_file {
            match rustix::fs::statat(&parent, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile => {
                    return Ok(None);
                }
                Ok(_) | Err(Errno::NOENT) => {}
                Err(e) => return Err(e),
            }
        }
        parent = match open(prefix) {
            Ok(fd) => fd,
            Err(Errno::NOENT) => {
                let made = if as_dir {
                    rustix::fs::mkdirat(&parent, name, Mode::from_raw_mode(0o755))
                } else {
                    rustix::fs::openat(
                        &parent,
                        name,
                        OFlags::WRONLY
                            | OFlags::CREATE
                            | OFlags::EXCL
                            | OFlags::NOFOLLOW
                            | OFlags::CLOEXEC,
                        Mode::from_raw_mode(0o644),
                    )
                    .map(drop)
                };
                match made {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => return Err(e),
                }
                open(prefix)?
            }
            Err(e) => return Err(e),
        };
    }
    Ok(Some(parent))
}

/// Attaches one prepared mount in the child, onto the descriptor of its target opened by
/// [`open_creating`]: `move_mount` to the descriptor itself, so nothing can swap the path
/// between the check and the mount (CVE-2025-31133 class). Targets in /proc or /sys are
/// refused: a mount there could uncover or replace a masked path.
pub(super) fn attach(m: &Attach) -> Result<(), Errno> {
    attach_at(m.tree, &m.steps, (m.dir, m.only_over_file))
}

/// [`attach`] with the parts given separately (the child's own /proc has no `Attach`).
pub(super) fn attach_at(
    tree: i32,
    steps: &[(CString, CString)],
    (dir, only_over_file): (bool, bool),
) -> Result<(), Errno> {
    let Some(target) = open_creating(steps, dir, only_over_file)? else {
        return Ok(());
    };
    let fs = rustix::fs::fstatfs(&target)?;
    // PROC_SUPER_MAGIC and SYSFS_MAGIC.
    if matches!(fs.f_type, 0x9fa0 | 0x6265_6572) {
        return Err(Errno::PERM);
    }
    // SAFETY: `tree` is a descriptor opened before the fork (or by the child itself) and still
    // open here (close-on-exec; its owner outlives the spawn); it is only borrowed.
    let from = unsafe { std::os::fd::BorrowedFd::borrow_raw(tree) };
    rustix::mount::move_mount(
        from,
        c"",
        &target,
        c"",
        rustix::mount::MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH
            | rustix::mount::MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
    )
}
