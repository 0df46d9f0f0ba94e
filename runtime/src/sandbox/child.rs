//! The sandbox's process 1 between fork and exec, in its new namespaces: the cgroup, a session,
//! private mounts, `pivot_root`, /proc, /dev, /sys, Docker's masks, the caller's mounts, the
//! hostname; then [`super::identity::take_identity`]. Async-signal-safe throughout: raw system
//! calls on data prepared before the fork ([`super::process::run`]).

use std::ffi::CString;

use rustix::{
    fs::{CWD, FileType, Mode},
    io::Errno,
    mount::{MountFlags, MountPropagationFlags, UnmountFlags},
    thread::UnshareFlags,
};

use super::attach::{Attach, attach, attach_at};

/// Docker's masked /proc paths (hidden behind /dev/null or an empty read-only tmpfs).
const MASKED: [&std::ffi::CStr; 10] = [
    c"/proc/asound",
    c"/proc/acpi",
    c"/proc/kcore",
    c"/proc/keys",
    c"/proc/latency_stats",
    c"/proc/timer_list",
    c"/proc/timer_stats",
    c"/proc/sched_debug",
    c"/proc/scsi",
    c"/sys/firmware",
];

/// Docker's read-only /proc paths.
const READ_ONLY: [&std::ffi::CStr; 5] = [
    c"/proc/bus",
    c"/proc/fs",
    c"/proc/irq",
    c"/proc/sys",
    c"/proc/sysrq-trigger",
];

/// The steps, in order; the child reports each by its index.
pub(super) const STEPS: [&str; 22] = [
    "unshare namespaces",
    "make mounts private",
    "pivot_root",
    "mount /proc",
    "mount /dev",
    "create /dev nodes",
    "mount /sys",
    "mask /proc paths",
    "set hostname",
    "working directory",
    "drop capabilities",
    "set groups",
    "set user",
    "exec",
    "remount the root read-only or nodev",
    "join the cgroup",
    "install the seccomp filter",
    "die with kiln",
    "open the terminal",
    "start the init",
    "join the network namespace",
    "bring up loopback",
];

/// A file for /dev/pipes: its path there and its content.
pub(super) type Pipe = (CString, Vec<u8>);

/// What the child sets up besides the basics, all prepared before the fork.
pub(super) struct Extra<'a> {
    pub(super) pipes: &'a [Pipe],
    pub(super) mounts: &'a [Attach],
    pub(super) read_only: bool,
    /// The root is remounted `nodev` (no devices cgroup could be had).
    pub(super) nodev: bool,
    /// Capabilities, seccomp filter, no_new_privs and resource limits.
    pub(super) grant: super::identity::Grant<'a>,
    /// `--privileged`: no masked paths, /sys writable.
    pub(super) privileged: bool,
    /// The options of /dev/shm's tmpfs (`--shm-size`).
    pub(super) shm: &'a std::ffi::CStr,
    pub(super) cgroups: &'a [i32],
    /// A pidfd of kiln itself (see [`child_setup`]).
    pub(super) kiln: i32,
    /// `/proc` split for [`open_creating`].
    pub(super) proc_steps: &'a [(CString, CString)],
    /// Rootless: the host's device nodes and /sys, bound instead of made (a user namespace
    /// may neither create devices nor mount sysfs for the host's network).
    pub(super) host: Option<(&'a [Attach], &'a Attach)>,
    /// The socket the terminal's master goes back on (`-t`), or -1.
    pub(super) tty: i32,
    /// `--init`: fork once more, the command below a small init, shown as this.
    pub(super) init: Option<&'a super::init::Title>,
    /// A network namespace to join (set up before the fork), or -1.
    pub(super) netns: i32,
    /// Whether that namespace's loopback is still down (one netavark set up, or one kept for
    /// a container on no network), not up already ([`super::process::Network::Fresh`]).
    pub(super) loopback_down: bool,
}

/// Sets `lo` up in the network namespace just made: a namespace of its own has loopback only,
/// and up, as runc makes it for docker's `--network none` and BuildKit's `RUN --network=none`
/// (a server listening on 127.0.0.1 there works). Raw system calls on the stack only.
pub(super) fn loopback_up() -> Result<(), Errno> {
    // SAFETY: socket(2) with constant arguments; the descriptor is closed below on every path.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(Errno::from_raw_os_error(
            std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
        ));
    }
    // SAFETY: ifreq is plain old data; all zeroes is a valid value of it.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *d = *s as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS then SIOCSIFFLAGS read and write `req`, an ifreq this frame owns,
    // whose name is NUL-terminated; the flags member is the one these requests use.
    let r = unsafe {
        if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) < 0 {
            -1
        } else {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            libc::ioctl(fd, libc::SIOCSIFFLAGS, &req)
        }
    };
    let err = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
    // SAFETY: `fd` is the socket made above, closed once.
    unsafe { libc::close(fd) };
    if r < 0 {
        return Err(Errno::from_raw_os_error(err));
    }
    Ok(())
}

/// Gives the container's processes the machine's transparent huge page setting back. kiln turns
/// THP off for itself (`PR_SET_THP_DISABLE`, in `src/main.rs`: its own runs are short), and the
/// kernel keeps that flag across fork and exec: without this, every RUN step and container
/// would run without huge pages, which made a Go compiler in a RUN step a third slower. A
/// kernel without the flag leaves nothing to undo, so the result is ignored.
pub(super) fn restore_transparent_huge_pages() {
    // SAFETY: prctl(2) with integer arguments only; it changes this process's memory policy
    // and touches no memory of it. Async-signal-safe.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 0, 0, 0, 0);
    }
}

/// Everything between fork and exec, in the child. Async-signal-safe: raw system calls only.
#[allow(clippy::too_many_arguments)]
pub(super) fn child_setup(
    step: &dyn Fn(u8),
    ns: UnshareFlags,
    rootfs: &std::ffi::CStr,
    cwd: &[(CString, CString)],
    hostname: &[u8],
    (uid, gid, groups): (u32, u32, &[rustix::fs::Gid]),
    extra: Extra<'_>,
) -> Result<(), Errno> {
    let Extra {
        pipes,
        mounts,
        read_only,
        nodev,
        grant,
        privileged,
        shm,
        cgroups,
        kiln,
        proc_steps,
        host,
        tty,
        init,
        netns,
        loopback_down,
    } = extra;
    use rustix::mount::{mount, mount_bind, mount_change, mount_remount, unmount};
    step(17);
    // First, so that kiln's death takes this process along from here on; then make sure kiln
    // did not die before that (its pidfd turns readable when it exits). Without the check, a
    // kiln killed during the fork would leave a container running with nobody to stop it.
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
    restore_transparent_huge_pages();
    let mut watch = [libc::pollfd {
        fd: kiln,
        events: libc::POLLIN,
        revents: 0,
    }];
    // SAFETY: poll(2) on one pollfd this frame owns, with no timeout; > 0: it is readable.
    if unsafe { libc::poll(watch.as_mut_ptr(), 1, 0) } > 0 {
        return Err(Errno::SRCH);
    }
    step(15);
    for fd in cgroups {
        // SAFETY: a descriptor opened before the fork, kept open by the spec during the spawn.
        let procs = unsafe { std::os::fd::BorrowedFd::borrow_raw(*fd) };
        // "0" is the writing process itself, so everything it starts is counted.
        rustix::io::write(procs, b"0")?;
    }
    if netns >= 0 {
        step(20);
        // SAFETY: a descriptor opened before the fork, kept open by the caller during the
        // spawn. setns(2) with CLONE_NEWNET checked: a descriptor of another kind is refused.
        let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(netns) };
        rustix::thread::move_into_link_name_space(
            fd,
            Some(rustix::thread::LinkNameSpaceType::Network),
        )?;
        // netavark brings loopback up; a namespace kept for a container on no network yet
        // (every one disconnected) has it down until here.
        if loopback_down {
            step(21);
            loopback_up()?;
        }
    }
    step(0);
    // A session of its own: a terminal's Ctrl-C reaches kiln only, which forwards it (kiln
    // run) or dies and takes the sandbox with it (a build); never both at once.
    rustix::process::setsid()?;
    // SAFETY: no CLONE_FILES; this process is single-threaded after fork.
    unsafe { rustix::thread::unshare_unsafe(ns) }?;
    if ns.contains(UnshareFlags::NEWNET) {
        step(21);
        loopback_up()?;
    }
    step(1);
    // Private propagation first, so nothing mounted below reaches the host's mount table.
    mount_change(
        c"/",
        MountPropagationFlags::PRIVATE | MountPropagationFlags::REC,
    )?;
    step(3);
    // /proc is made now, detached, and attached after the root switch: in a user namespace
    // (rootless) the kernel only lets a proc filesystem be made while another one is fully
    // visible in the mount namespace, which stops being true once the old root is detached.
    // It belongs to this process's new pid namespace already.
    let procfs = {
        use rustix::mount::{FsMountFlags, FsOpenFlags, MountAttrFlags};
        let fs = rustix::mount::fsopen(c"proc", FsOpenFlags::FSOPEN_CLOEXEC)?;
        rustix::mount::fsconfig_create(&fs)?;
        rustix::mount::fsmount(
            &fs,
            FsMountFlags::FSMOUNT_CLOEXEC,
            MountAttrFlags::MOUNT_ATTR_NOSUID
                | MountAttrFlags::MOUNT_ATTR_NODEV
                | MountAttrFlags::MOUNT_ATTR_NOEXEC,
        )?
    };
    // Rootless: a sysfs of the container's own network namespace, made now for the same
    // reason as /proc (the host's /sys is fully visible until the old root goes). The kernel
    // allows it only when kiln's user namespace owns the network namespace joined above (the
    // container's own); on the host's network it refuses, and the host's /sys is bound below.
    // Its /sys/class/net then lists the container's interfaces, not the host's.
    let own_sysfs = match host {
        Some(_) => {
            use rustix::mount::{FsMountFlags, FsOpenFlags, MountAttrFlags};
            let mut attrs = MountAttrFlags::MOUNT_ATTR_NOSUID
                | MountAttrFlags::MOUNT_ATTR_NODEV
                | MountAttrFlags::MOUNT_ATTR_NOEXEC;
            if !privileged {
                attrs |= MountAttrFlags::MOUNT_ATTR_RDONLY;
            }
            rustix::mount::fsopen(c"sysfs", FsOpenFlags::FSOPEN_CLOEXEC)
                .and_then(|fs| {
                    rustix::mount::fsconfig_create(&fs)?;
                    rustix::mount::fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, attrs)
                })
                .ok()
        }
        None => None,
    };
    step(2);
    // pivot_root before any other mount: every later path resolves inside the new root, so a
    // hostile image's `/proc -> /etc` symlink cannot redirect a mount onto a host path
    // (CVE-2019-19921 class). The old root is detached so no host path stays reachable.
    rustix::process::chdir(rootfs)?;
    rustix::process::pivot_root(c".", c".")?;
    unmount(c".", UnmountFlags::DETACH)?;
    rustix::process::chdir(c"/")?;
    let dir = |p: &std::ffi::CStr| match rustix::fs::mkdirat(CWD, p, Mode::from_raw_mode(0o755)) {
        Ok(()) | Err(Errno::EXIST) => Ok(()),
        Err(e) => Err(e),
    };
    let nosuid_nodev_noexec = MountFlags::NOSUID | MountFlags::NODEV | MountFlags::NOEXEC;
    step(3);
    attach_at(
        std::os::fd::AsRawFd::as_raw_fd(&procfs),
        proc_steps,
        (true, false),
    )?;
    drop(procfs);
    step(4);
    dir(c"/dev")?;
    mount(
        c"tmpfs",
        c"/dev",
        c"tmpfs",
        MountFlags::NOSUID | MountFlags::STRICTATIME,
        Some(c"mode=755,size=65536k"),
    )?;
    step(5);
    rustix::process::umask(Mode::empty());
    match host {
        // Before anything uses /dev/null (the masks below).
        Some((devs, _)) => {
            for d in devs {
                attach(d)?;
            }
        }
        None => {
            for (name, major, minor) in [
                (c"/dev/null", 1, 3),
                (c"/dev/zero", 1, 5),
                (c"/dev/full", 1, 7),
                (c"/dev/random", 1, 8),
                (c"/dev/urandom", 1, 9),
                (c"/dev/tty", 5, 0),
            ] {
                rustix::fs::mknodat(
                    CWD,
                    name,
                    FileType::CharacterDevice,
                    Mode::from_raw_mode(0o666),
                    rustix::fs::makedev(major, minor),
                )?;
            }
        }
    }
    for d in [c"/dev/pts", c"/dev/shm", c"/dev/mqueue"] {
        dir(d)?;
    }
    // New terminals belong to group tty (5), as runc and BuildKit mount it; where gid 5 is not
    // mapped (a rootless user namespace without it) the kernel refuses the option (EINVAL),
    // and the terminals are the creator's group instead.
    let devpts = |opts: &std::ffi::CStr| {
        mount(
            c"devpts",
            c"/dev/pts",
            c"devpts",
            MountFlags::NOSUID | MountFlags::NOEXEC,
            Some(opts),
        )
    };
    devpts(c"newinstance,ptmxmode=0666,mode=0620,gid=5")
        .or_else(|_| devpts(c"newinstance,ptmxmode=0666,mode=0620"))?;
    mount(
        c"shm",
        c"/dev/shm",
        c"tmpfs",
        nosuid_nodev_noexec,
        Some(shm),
    )?;
    mount(
        c"mqueue",
        c"/dev/mqueue",
        c"mqueue",
        nosuid_nodev_noexec,
        None,
    )?;
    for (link, target) in [
        (c"/dev/ptmx", c"pts/ptmx"),
        (c"/dev/fd", c"/proc/self/fd"),
        (c"/dev/stdin", c"/proc/self/fd/0"),
        (c"/dev/stdout", c"/proc/self/fd/1"),
        (c"/dev/stderr", c"/proc/self/fd/2"),
    ] {
        rustix::fs::symlinkat(target, CWD, link)?;
    }
    if tty >= 0 {
        step(18);
        super::pty::open_in_child(tty, uid)?;
    }
    if !pipes.is_empty() {
        dir(c"/dev/pipes")?;
        for (path, data) in pipes {
            let f = rustix::fs::open(
                path.as_c_str(),
                rustix::fs::OFlags::WRONLY
                    | rustix::fs::OFlags::CREATE
                    | rustix::fs::OFlags::EXCL
                    | rustix::fs::OFlags::NOFOLLOW
                    | rustix::fs::OFlags::CLOEXEC,
                Mode::from_raw_mode(0o755),
            )?;
            let mut rest = data.as_slice();
            while !rest.is_empty() {
                let n = rustix::io::write(&f, rest)?;
                rest = &rest[n..];
            }
        }
    }
    rustix::process::umask(Mode::from_raw_mode(0o022));
    step(6);
    dir(c"/sys")?;
    let sys_flags = if privileged {
        nosuid_nodev_noexec
    } else {
        nosuid_nodev_noexec | MountFlags::RDONLY
    };
    match host {
        // Rootless: the sysfs made before the root switch, else the host's /sys, bound.
        Some((_, sys)) => match &own_sysfs {
            Some(fs) => attach_at(
                std::os::fd::AsRawFd::as_raw_fd(fs),
                &sys.steps,
                (sys.dir, sys.only_over_file),
            )?,
            None => attach(sys)?,
        },
        None => mount(c"sysfs", c"/sys", c"sysfs", sys_flags, None)?,
    }
    step(7);
    // `--privileged`: nothing masked, nothing made read-only, as docker's.
    let (masked, read_only_paths): (&[&std::ffi::CStr], &[&std::ffi::CStr]) = if privileged {
        (&[], &[])
    } else {
        (&MASKED, &READ_ONLY)
    };
    for p in masked.iter().copied() {
        // A directory is hidden under an empty read-only tmpfs, anything else behind /dev/null.
        // Looked at first rather than learnt from a failed bind: the kernel's failure path of
        // a bind over a directory waits for an RCU grace period (0.4-0.7 ms each, measured,
        // for /proc/acpi and /sys/firmware); a stat takes microseconds. statat takes the
        // C string as it is: no allocation between fork and exec.
        let is_dir = match rustix::fs::statat(CWD, p, rustix::fs::AtFlags::empty()) {
            Ok(st) => FileType::from_raw_mode(st.st_mode) == FileType::Directory,
            Err(Errno::NOENT) => continue,
            Err(e) => return Err(e),
        };
        let hidden = if is_dir {
            mount(c"tmpfs", p, c"tmpfs", MountFlags::RDONLY, None)
        } else {
            mount_bind(c"/dev/null", p)
        };
        match hidden {
            Ok(()) | Err(Errno::NOENT) => {}
            Err(e) => return Err(e),
        }
    }
    for p in read_only_paths.iter().copied() {
        match mount_bind(p, p) {
            Ok(()) => mount_remount(
                p,
                MountFlags::BIND | MountFlags::RDONLY | nosuid_nodev_noexec,
                c"",
            )?,
            Err(Errno::NOENT) => {}
            Err(e) => return Err(e),
        }
    }
    for (i, m) in mounts.iter().enumerate() {
        // Step numbers past the named ones stand for "mount <target>".
        step(u8::try_from(STEPS.len() + i).unwrap_or(u8::MAX));
        attach(m)?;
    }
    if read_only || nodev {
        step(14);
        // Only the root's own mount: /proc, /dev, /sys and the mounts above keep their modes.
        let mut flags = MountFlags::BIND;
        if read_only {
            flags |= MountFlags::RDONLY;
        }
        if nodev {
            flags |= MountFlags::NODEV;
        }
        mount_remount(c"/", flags, c"")?;
    }
    step(8);
    rustix::system::sethostname(hostname)?;
    super::identity::take_identity(
        step,
        cwd,
        &grant,
        (uid, gid, groups),
        super::identity::needs_set_groups(super::userns::setgroups_denied(), gid, groups),
        kiln,
    )?;
    if let Some(title) = init {
        step(19);
        super::init::fork_init(Some(title))?;
        // The command's process, from here to its exec.
        step(13);
    }
    Ok(())
}
