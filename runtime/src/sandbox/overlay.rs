//! The sandbox's root filesystem: an overlayfs of the unpacked parent layers (top first) with a
//! fresh writable upper directory.
//!
//! Mounted with the new mount API (`fsopen`, one `fsconfig lowerdir+` per layer, `fsmount`,
//! `move_mount`) so any number of layers works whatever their path lengths: the legacy
//! `mount(2)` option string is limited to one page, which deep images exceed, and cannot carry
//! `:` or `,` in a path. On kernels without `lowerdir+` (before 6.8) kiln falls back to
//! `mount(2)` and says which limit was hit when the string does not fit.
//!
//! [`mount_scratch`] adds overlayfs' `volatile` for an upper that no one needs after a crash (a
//! RUN step's, read into a layer blob after the unmount; a `kiln run --rm` container's): the
//! unmount then skips syncing the upper's filesystem (0.25-0.6 ms against 0.035 ms here) and an
//! fsync inside returns at once, as podman does for `--rm`. The kernel refuses to mount such an
//! upper again while its marker (`work/work/incompat/volatile`) is there; kiln removes the
//! marker when it does (a `--rm` container started again after its monitor was killed).
//!
//! `redirect_dir=off` and `metacopy=off`: with either on, the upper directory would hold
//! references into lower layers instead of data, and the layer diff
//! ([`crate::layer::diff`]) would be wrong; it refuses such markers.

use std::{ffi::CString, os::fd::AsFd, path::Path};

use rustix::{
    io::Errno,
    mount::{
        FsMountFlags, FsOpenFlags, MountAttrFlags, MountFlags, MoveMountFlags, UnmountFlags,
        fsconfig_create, fsconfig_set_string, fsmount, fsopen, move_mount,
    },
};

/// Why the overlay could not be mounted; names the mount point and the step that failed.
#[derive(Debug, thiserror::Error)]
#[error("mount overlay on {target}: {step}: {errno}")]
pub struct MountError {
    pub target: String,
    pub step: String,
    pub errno: Errno,
}

/// The directories of one overlay mount.
#[derive(Debug, Clone, Copy)]
pub struct Overlay<'a> {
    /// Unpacked layers, top first (as [`crate::store::Store::unpacked_layers`] returns them).
    pub lower: &'a [std::path::PathBuf],
    pub upper: &'a Path,
    /// overlayfs' work directory: empty, on the same filesystem as `upper`.
    pub work: &'a Path,
}

const PAGE: usize = 4096;

/// Use the copy fallback even where overlayfs works (`KILN_ROOTFS=copy`, for tests and for
/// filesystems where overlayfs misbehaves without failing).
static FORCE_COPY: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Makes every later [`mount`] use the copy fallback ([`super::copyroot`]).
pub fn force_copy(on: bool) {
    FORCE_COPY.store(on, std::sync::atomic::Ordering::SeqCst);
}

/// Where the copy fallback keeps its snapshot: the overlay work directory, unused then.
const SNAPSHOT: &str = "kiln-copyroot-snapshot";

/// Mounts `ov` on `target`: overlayfs, or where it cannot be mounted, a copy of the layers
/// ([`super::copyroot`]); call [`finish`] after [`unmount`] before reading `ov.upper`.
pub fn mount(ov: Overlay<'_>, target: &Path) -> Result<(), MountError> {
    mount_with(ov, target, false)
}

/// [`mount`] for an upper that is thrown away or read once after the unmount (see the module's
/// doc): `volatile` where the kernel has it (5.10 and later), a plain mount elsewhere.
pub fn mount_scratch(ov: Overlay<'_>, target: &Path) -> Result<(), MountError> {
    mount_with(ov, target, true)
}

fn mount_with(ov: Overlay<'_>, target: &Path, volatile: bool) -> Result<(), MountError> {
    if ov.lower.is_empty() {
        return Err(MountError {
            target: target.display().to_string(),
            step: "no lower layer".into(),
            errno: Errno::INVAL,
        });
    }
    if FORCE_COPY.load(std::sync::atomic::Ordering::SeqCst) {
        return mount_copy(ov, target);
    }
    match mount_overlay(ov, target, volatile) {
        Ok(()) => Ok(()),
        // A scratch upper mounted before (a `--rm` container started again after its monitor
        // was killed): the kernel refuses `volatile` until its marker is gone.
        Err(e) if volatile && e.errno == Errno::INVAL && clear_volatile_marker(ov.work) => {
            mount_overlay(ov, target, true).or_else(|_| mount_copy(ov, target))
        }
        // A path that is not there is an error of the caller's, not overlayfs': the copy
        // would fail the same way, with less to say.
        Err(e) if matches!(e.errno, Errno::NOENT | Errno::NOTDIR) => Err(e),
        // No overlayfs, or one that refuses these directories: the copy.
        Err(_) => mount_copy(ov, target),
    }
}

/// Removes the marker a `volatile` mount leaves in its work directory; whether there was one.
fn clear_volatile_marker(work: &Path) -> bool {
    let incompat = work.join("work/incompat");
    let found = std::fs::remove_dir_all(incompat.join("volatile")).is_ok();
    let _ = std::fs::remove_dir(&incompat);
    found
}

fn io_fail(target: &Path, step: &str) -> impl FnOnce(std::io::Error) -> MountError {
    let target = target.display().to_string();
    let step = step.to_string();
    move |e| MountError {
        target,
        step,
        errno: Errno::from_io_error(&e).unwrap_or(Errno::IO),
    }
}

/// The fallback: the layers copied into `target`, bound onto itself (`pivot_root` needs a mount
/// point), and a snapshot kept to find the changes afterwards.
fn mount_copy(ov: Overlay<'_>, target: &Path) -> Result<(), MountError> {
    super::copyroot::populate(ov.lower, target).map_err(io_fail(target, "copy the layers"))?;
    super::copyroot::snapshot(target)
        .and_then(|s| s.save(&ov.work.join(SNAPSHOT)))
        .map_err(io_fail(target, "snapshot"))?;
    rustix::mount::mount_bind(target, target).map_err(|errno| MountError {
        target: target.display().to_string(),
        step: "bind".into(),
        errno,
    })
}

/// After [`unmount`]: where the copy fallback was used, writes the changes into `ov.upper` in
/// overlayfs' format; with overlayfs nothing is left to do.
pub fn finish(ov: Overlay<'_>, target: &Path) -> Result<(), MountError> {
    let snap = ov.work.join(SNAPSHOT);
    if !snap.exists() {
        return Ok(());
    }
    let before = super::copyroot::Snapshot::load(&snap).map_err(io_fail(target, "snapshot"))?;
    super::copyroot::changes(target, &before, ov.upper)
        .map_err(io_fail(target, "find the changes"))?;
    std::fs::remove_file(&snap).map_err(io_fail(target, "snapshot"))
}

fn mount_overlay(ov: Overlay<'_>, target: &Path, volatile: bool) -> Result<(), MountError> {
    let fail = |step: String, errno| MountError {
        target: target.display().to_string(),
        step,
        errno,
    };
    match mount_new_api(ov, target, volatile) {
        Ok(()) => Ok(()),
        // Kernels before 5.2 (no fsopen) or 6.8 (no lowerdir+): the legacy call, and without
        // `volatile` if that is what the kernel refused (before 5.10).
        Err((step, Errno::NOSYS | Errno::INVAL))
            if step.starts_with("lowerdir+") || step == "fsopen" =>
        {
            match mount_legacy(ov, target, volatile) {
                Err((_, Errno::INVAL)) if volatile => mount_legacy(ov, target, false),
                r => r,
            }
            .map_err(|(s, e)| fail(s, e))
        }
        Err((step, e)) => Err(fail(step, e)),
    }
}

fn mount_new_api(ov: Overlay<'_>, target: &Path, volatile: bool) -> Result<(), (String, Errno)> {
    let fs = fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC).map_err(|e| ("fsopen".into(), e))?;
    for l in ov.lower {
        fsconfig_set_string(fs.as_fd(), "lowerdir+", l)
            .map_err(|e| (format!("lowerdir+ {}", l.display()), e))?;
    }
    let set = |k: &str, v: &Path| {
        fsconfig_set_string(fs.as_fd(), k, v).map_err(|e| (format!("{k} {}", v.display()), e))
    };
    set("upperdir", ov.upper)?;
    set("workdir", ov.work)?;
    set("redirect_dir", Path::new("off"))?;
    set("metacopy", Path::new("off"))?;
    if volatile {
        // A kernel that does not know the option refuses it here (EINVAL): a plain mount.
        let _ = rustix::mount::fsconfig_set_flag(fs.as_fd(), "volatile");
    }
    fsconfig_create(fs.as_fd()).map_err(|e| ("create".into(), e))?;
    let mnt = fsmount(
        fs.as_fd(),
        FsMountFlags::FSMOUNT_CLOEXEC,
        MountAttrFlags::empty(),
    )
    .map_err(|e| ("fsmount".into(), e))?;
    move_mount(
        mnt.as_fd(),
        "",
        rustix::fs::CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(|e| ("move_mount".into(), e))
}

fn mount_legacy(ov: Overlay<'_>, target: &Path, volatile: bool) -> Result<(), (String, Errno)> {
    let mut lower = Vec::new();
    for l in ov.lower {
        let s = l.display().to_string();
        if s.contains([':', ',', '\\']) {
            return Err((
                format!("lower layer path {s:?} has ':', ',' or '\\'"),
                Errno::INVAL,
            ));
        }
        lower.push(s);
    }
    let opts = format!(
        "lowerdir={},upperdir={},workdir={},redirect_dir=off,metacopy=off{}",
        lower.join(":"),
        ov.upper.display(),
        ov.work.display(),
        if volatile { ",volatile" } else { "" }
    );
    if opts.len() >= PAGE {
        return Err((
            format!(
                "{} layers need {} bytes of mount options, over one page (this kernel has no lowerdir+)",
                ov.lower.len(),
                opts.len()
            ),
            Errno::TOOBIG,
        ));
    }
    let data = CString::new(opts).map_err(|_| ("options with a NUL byte".into(), Errno::INVAL))?;
    rustix::mount::mount(
        "overlay",
        target,
        "overlay",
        MountFlags::empty(),
        data.as_c_str(),
    )
    .map_err(|e| ("mount(2)".into(), e))
}

/// Unmounts `target` (lazily: a process still inside keeps it alive but it leaves the tree).
pub fn unmount(target: &Path) -> Result<(), MountError> {
    rustix::mount::unmount(target, UnmountFlags::DETACH).map_err(|errno| MountError {
        target: target.display().to_string(),
        step: "umount".into(),
        errno,
    })
}

/// Unmounts every mount stacked on `target` (a killed monitor's overlay, and one mounted over
/// it since); returns how many. Ends at the first failure: EINVAL once nothing is mounted.
pub fn unmount_all(target: &Path) -> usize {
    // Bounded: a mount point holds at most as many mounts as anyone made, never endless.
    (0..1024)
        .take_while(|_| rustix::mount::unmount(target, UnmountFlags::DETACH).is_ok())
        .count()
}
