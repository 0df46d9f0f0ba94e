//! Network namespaces kept by a file, as `ip netns` keeps them: made before the container
//! starts (the network is set up in it first, and the container's process joins it), and
//! still there when every process in it has died, so a killed container's network is torn down
//! from it later.

use std::{io, path::Path};

/// Makes a new network namespace and binds it over `path` (created empty).
pub fn create(path: &Path) -> io::Result<()> {
    std::fs::File::create(path)?;
    let target = path.to_path_buf();
    // On a thread of its own: unshare(CLONE_NEWNET) moves only the calling thread, which ends
    // right after; the bind mount keeps the namespace alive.
    let made = std::thread::spawn(move || -> io::Result<()> {
        // SAFETY: CLONE_NEWNET only, on a thread that shares nothing it could break: no
        // CLONE_FILES or CLONE_FS, whose unsharing would leave other threads' views stale.
        unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNET) }?;
        let tid = rustix::thread::gettid().as_raw_nonzero();
        let own = format!("/proc/self/task/{tid}/ns/net");
        rustix::mount::mount_bind(own.as_str(), &target)?;
        Ok(())
    })
    .join()
    .map_err(|_| io::Error::other("the thread making the network namespace failed"))?;
    if made.is_err() {
        let _ = std::fs::remove_file(path);
    }
    made
}

/// Whether a namespace is bound at `path` (a file that is only a leftover is not one).
pub fn exists(path: &Path) -> bool {
    rustix::fs::statfs(path).is_ok_and(|s| s.f_type as u64 == NSFS_MAGIC)
}

/// The filesystem type of a namespace file (`NSFS_MAGIC` in linux/magic.h).
const NSFS_MAGIC: u64 = 0x6e73_6673;

/// Unbinds and removes the namespace file at `path` (the namespace goes once nothing else
/// holds it). Missing: nothing to do.
pub fn remove(path: &Path) {
    // Detached: a process still inside keeps its namespace, the file goes anyway.
    let _ = rustix::mount::unmount(path, rustix::mount::UnmountFlags::DETACH);
    let _ = std::fs::remove_file(path);
}
