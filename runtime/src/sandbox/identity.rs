//! Who the sandboxed process is, set last before its exec (shared by a container's process 1
//! and by `kiln exec`): descriptors, working directory, seccomp filter, capabilities, groups and
//! ids, and the parent-death signal again after the change of ids.

use std::ffi::CString;

use rustix::{fs::Mode, io::Errno, thread::CapabilitySet};

use super::attach::open_creating;

/// Docker's default capability set (moby `oci/caps/defaults.go`, REFERENCE §5).
pub const DEFAULT_CAPS: CapabilitySet = CapabilitySet::CHOWN
    .union(CapabilitySet::DAC_OVERRIDE)
    .union(CapabilitySet::FSETID)
    .union(CapabilitySet::FOWNER)
    .union(CapabilitySet::MKNOD)
    .union(CapabilitySet::NET_RAW)
    .union(CapabilitySet::SETGID)
    .union(CapabilitySet::SETUID)
    .union(CapabilitySet::SETFCAP)
    .union(CapabilitySet::SETPCAP)
    .union(CapabilitySet::NET_BIND_SERVICE)
    .union(CapabilitySet::SYS_CHROOT)
    .union(CapabilitySet::KILL)
    .union(CapabilitySet::AUDIT_WRITE);

/// The last phase of every sandboxed process, a container's process 1 as a process `kiln exec`
/// starts in it: no descriptor of kiln's left open past the exec, the working directory
/// resolved inside the root, the seccomp filter, the capabilities, then the groups and ids; and
/// the parent-death signal set again after the change of ids (which clears it).
pub(super) fn take_identity(
    step: &dyn Fn(u8),
    cwd: &[(CString, CString)],
    filter: &[super::seccomp::Insn],
    caps: CapabilitySet,
    (uid, gid, groups): (u32, u32, &[rustix::fs::Gid]),
    set_groups: bool,
    kiln: i32,
) -> Result<(), Errno> {
    let mut watch = [libc::pollfd {
        fd: kiln,
        events: libc::POLLIN,
        revents: 0,
    }];
    step(9);
    // Every descriptor kiln holds (store files, other builds' pipes, rayon workers' directory
    // handles) is marked close-on-exec, so none reaches the process. They stay open until the
    // exec only because std's own error pipe must; the working directory below cannot be
    // reached through them. close_range(2) marks without allocating.
    // SAFETY: a plain system call with integer arguments; it changes flags, not memory.
    let marked = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if marked != 0 {
        return Err(Errno::from_raw_os_error(
            std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
        ));
    }
    // The working directory is resolved inside the new root with magic links refused: a
    // `WORKDIR /proc/self/fd/N` naming a descriptor inherited from kiln cannot put the process's
    // cwd on the host (CVE-2024-21626, runc's "Leaky Vessels").
    // A missing directory is created (as root, like docker and runc).
    let wd = match open_creating(cwd, true, false)? {
        Some(wd) => wd,
        None => rustix::fs::open(
            c"/",
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
            Mode::empty(),
        )?,
    };
    rustix::process::fchdir(&wd)?;
    drop(wd);
    step(16);
    // While CAP_SYS_ADMIN is still held, so no_new_privs can stay off (setuid programs work in
    // RUN, as in BuildKit); nothing after this point makes a refused call.
    super::seccomp::install(filter)?;
    step(10);
    // The bounding set first (needs CAP_SETPCAP, still held), then the process's own sets.
    for bit in 0..64u32 {
        let cap = CapabilitySet::from_bits_retain(1u64 << bit);
        if !caps.contains(cap) {
            // EINVAL: a capability this kernel does not have.
            match rustix::thread::remove_capability_from_bounding_set(cap) {
                Ok(()) | Err(Errno::INVAL) => {}
                Err(e) => return Err(e),
            }
        }
    }
    let set = caps;
    let sets = rustix::thread::CapabilitySets {
        effective: set,
        permitted: set,
        inheritable: CapabilitySet::empty(),
    };
    rustix::thread::set_capabilities(None, sets)?;
    step(11);
    // Rootless with only root mapped, setgroups(2) is denied; there is nothing to set then.
    if set_groups {
        rustix::thread::set_thread_groups(groups)?;
    }
    rustix::thread::set_thread_res_gid(gid_of(gid), gid_of(gid), gid_of(gid))?;
    step(12);
    // Leaving uid 0 clears the permitted and effective sets (no keep-caps), as in Docker.
    let u = rustix::fs::Uid::from_raw(uid);
    rustix::thread::set_thread_res_uid(u, u, u)?;
    // A change of credentials clears the parent-death signal: set it again, or a container
    // running as another user would outlive its `kiln run` (and so `kiln rm -f`), reparented
    // to the host's init. Then check, as at the start, that kiln did not die meanwhile.
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
    // SAFETY: poll(2) on one pollfd this frame owns, with no timeout; > 0: it is readable.
    if unsafe { libc::poll(watch.as_mut_ptr(), 1, 0) } > 0 {
        return Err(Errno::SRCH);
    }
    step(13);
    Ok(())
}

pub(super) fn gid_of(g: u32) -> rustix::fs::Gid {
    rustix::fs::Gid::from_raw(g)
}
