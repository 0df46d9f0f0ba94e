//! One process in fresh namespaces (REFERENCE §5): pid, mount, uts, ipc and, for
//! `Network::None`, network; `pivot_root` into an already mounted root filesystem; fresh /proc,
//! a minimal /dev, read-only /sys, Docker's masked and read-only /proc paths, Docker's default
//! capabilities, hostname, user and working directory; then `execve`.
//!
//! How: a dedicated thread unshares its pid namespace for children and forks; the child (pid 1
//! of the new namespace) sets the sandbox up in std's `pre_exec` hook and execs. The thread then
//! waits, so the child's parent-death signal (SIGKILL) is tied to a thread that lives exactly as
//! long as the child: if kiln dies, the sandbox dies, and when pid 1 exits the kernel kills every
//! other process in its namespace.
//!
//! The child runs between fork and exec in a multi-threaded program, so it only makes raw system
//! calls with C strings prepared before the fork: no allocation, no lock. Each step writes its
//! number to a close-on-exec pipe first; when a step fails, std hands back its errno and the
//! parent reads which step it was, so a failure comes back as "pivot_root: Operation not
//! permitted" or "exec /bin/nope: No such file or directory", never as exit status 127.

use std::{
    ffi::CString,
    io::Read,
    os::fd::OwnedFd,
    os::unix::process::{CommandExt, ExitStatusExt},
    path::{Path, PathBuf},
    process::{Command, ExitStatus, Stdio},
    sync::{
        Arc,
        atomic::{AtomicI32, Ordering},
    },
};

use rustix::{
    fs::{CWD, FileType, Mode},
    io::Errno,
    mount::{MountFlags, MountPropagationFlags, UnmountFlags},
    thread::{CapabilitySet, UnshareFlags},
};

pub use super::mounts::Mount;

/// PATH when the image sets none (Docker's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Network namespace choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    /// A fresh network namespace: loopback only.
    None,
    /// The host's network namespace.
    Host,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct Spec {
    /// The root filesystem, already mounted (see [`super::overlay`]).
    pub rootfs: PathBuf,
    /// argv; `args[0]` without a `/` is looked up in `PATH` of `env`.
    pub args: Vec<String>,
    /// `KEY=value` strings: the whole environment.
    pub env: Vec<String>,
    /// Absolute working directory inside the root.
    pub cwd: String,
    pub hostname: String,
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
    pub network: Network,
    /// Files created in the sandbox's own /dev tmpfs as `/dev/pipes/<name>`, mode 0755 (a RUN
    /// heredoc with a `#!` line is run from there, as BuildKit does); never in the root.
    pub pipes: Vec<(String, Vec<u8>)>,
    /// Mounts attached after the root switch, parents before children (RUN --mount, `-v`,
    /// the generated /etc files). Missing targets are created in the root (the caller drops
    /// such stubs from a layer).
    pub mounts: Vec<Mount>,
    /// The root filesystem itself is made read-only (`kiln run --read-only`).
    pub read_only: bool,
    /// Signals kiln receives (INT, TERM, HUP, QUIT, USR1, USR2, WINCH) are passed on to the
    /// process (`kiln run`, as docker's `--sig-proxy`); otherwise they act on kiln, and the
    /// sandbox dies with it.
    pub forward_signals: bool,
    /// The cgroups the process joins first ([`super::cgroup::Cgroup::create`]).
    pub cgroup: super::cgroup::Join,
    /// Docker's refused system calls fail with EPERM ([`super::seccomp`]); on by default.
    pub seccomp: bool,
    /// Told the process's host pid once it runs (its exec succeeded): what a detached
    /// container's monitor waits for before `kiln run -d` returns.
    pub started: Option<std::sync::mpsc::Sender<u32>>,
}

/// Why the sandbox could not run the process; names the step.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("{step}: {errno}")]
    Setup { step: String, errno: Errno },
    #[error("{0}")]
    Invalid(String),
}

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
const STEPS: [&str; 18] = [
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
];

/// Runs `spec` with the given stdio and waits for it.
pub fn run(
    spec: &Spec,
    stdin: Stdio,
    stdout: Stdio,
    stderr: Stdio,
) -> Result<ExitStatus, SandboxError> {
    let Some(program) = spec.args.first() else {
        return Err(SandboxError::Invalid("no command to run".into()));
    };
    let cstr = |s: &str, what: &str| {
        CString::new(s).map_err(|_| SandboxError::Invalid(format!("{what} {s:?} has a NUL byte")))
    };
    let rootfs = cstr(&spec.rootfs.display().to_string(), "root filesystem")?;
    // exec(2) takes C strings: a NUL byte would otherwise fail the spawn obscurely.
    for (i, a) in spec.args.iter().enumerate() {
        if a.contains('\0') {
            return Err(SandboxError::Invalid(format!(
                "argument {i} of the command has a NUL byte"
            )));
        }
    }
    for kv in &spec.env {
        if kv.contains('\0') {
            let k = kv.split_once('=').map_or(kv.as_str(), |(k, _)| k);
            return Err(SandboxError::Invalid(format!(
                "environment variable {:?} has a NUL byte",
                k.replace('\0', "\\0")
            )));
        }
    }
    cstr(&spec.cwd, "working directory")?;
    if !spec.cwd.starts_with('/') {
        return Err(SandboxError::Invalid(format!(
            "working directory {:?} is not absolute",
            spec.cwd
        )));
    }
    // Cleaned as docker cleans `-w` (`..` climbs, never above `/`); `/` has no components.
    let cwd = super::mounts::target_steps(&clean_absolute(&spec.cwd)).unwrap_or_default();
    let hostname = spec.hostname.clone().into_bytes();
    // Every mount is a detached tree already (prepared before the fork, see `super::mounts`);
    // here each target is split into the components the child creates and opens one by one.
    let mut order: Vec<&Mount> = spec.mounts.iter().collect();
    order.sort_by_key(|m| m.target.split('/').filter(|p| !p.is_empty()).count());
    let mut mounts = Vec::new();
    for m in &order {
        let steps = super::mounts::target_steps(&m.target).ok_or_else(|| {
            SandboxError::Invalid(format!(
                "mount target {:?} must be an absolute path below / without ..",
                m.target
            ))
        })?;
        mounts.push(Attach {
            tree: m.source.raw_fd(),
            steps,
            dir: m.source.is_dir(),
            only_over_file: m.only_over_file,
        });
    }
    let mount_names: Vec<String> = order.iter().map(|m| m.target.clone()).collect();
    let read_only = spec.read_only;
    // Without a devices cgroup, device nodes are kept from working another way: no mknod, and
    // a `nodev` root (rootless needs neither: the kernel refuses devices on a user namespace's
    // mounts and mknod in it).
    let devices_controlled = spec.cgroup.devices_controlled() || super::userns::rootless();
    let caps = if devices_controlled {
        DEFAULT_CAPS
    } else {
        DEFAULT_CAPS.difference(CapabilitySet::MKNOD)
    };
    let host = if super::userns::rootless() {
        Some(host_binds()?)
    } else {
        None
    };
    let cgroup_fds = spec.cgroup.fds();
    let proc_steps = super::mounts::target_steps("/proc").unwrap_or_default();
    let filter = if spec.seccomp {
        super::seccomp::program()
    } else {
        Vec::new()
    };
    let mut pipes = Vec::new();
    for (name, data) in &spec.pipes {
        if name.is_empty() || name.contains('/') {
            return Err(SandboxError::Invalid(format!(
                "bad /dev/pipes name {name:?}"
            )));
        }
        pipes.push((
            cstr(&format!("/dev/pipes/{name}"), "pipe name")?,
            data.clone(),
        ));
    }
    let (uid, gid) = (spec.uid, spec.gid);
    if let Some(id) = [uid, gid]
        .into_iter()
        .chain(spec.groups.iter().copied())
        .find(|id| !super::userns::mapped(*id))
    {
        return Err(SandboxError::Invalid(format!(
            "id {id} does not exist in rootless kiln's user namespace: only root is mapped \
             without a range for this user in /etc/subuid and /etc/subgid (and newuidmap, \
             Debian's uidmap package)"
        )));
    }
    let groups: Vec<rustix::fs::Gid> = spec.groups.iter().map(|g| gid_of(*g)).collect();
    let mut ns = UnshareFlags::NEWNS | UnshareFlags::NEWUTS | UnshareFlags::NEWIPC;
    if spec.network == Network::None {
        ns |= UnshareFlags::NEWNET;
    }
    let mut cmd = Command::new(program);
    cmd.args(&spec.args[1..])
        .env_clear()
        .stdin(stdin)
        .stdout(stdout)
        .stderr(stderr);
    for kv in &spec.env {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        cmd.env(k, v);
    }
    let (report_r, report_w) =
        rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(|errno| {
            SandboxError::Setup {
                step: "pipe".into(),
                errno,
            }
        })?;
    // Close-on-exec, as pidfd_open makes every pidfd.
    let kiln_pidfd = rustix::process::pidfd_open(
        rustix::process::getpid(),
        rustix::process::PidfdFlags::empty(),
    )
    .map_err(|errno| SandboxError::Setup {
        step: "pidfd_open".into(),
        errno,
    })?;
    let kiln_fd = std::os::fd::AsRawFd::as_raw_fd(&kiln_pidfd);
    let setup = move || -> std::io::Result<()> {
        let step = |n: u8| {
            let _ = rustix::io::write(&report_w, &[n]);
        };
        let ids = (uid, gid, groups.as_slice());
        let extra = Extra {
            pipes: &pipes,
            mounts: &mounts,
            read_only,
            nodev: !devices_controlled,
            caps,
            cgroups: &cgroup_fds,
            kiln: kiln_fd,
            filter: &filter,
            proc_steps: &proc_steps,
            host: host.as_ref().map(|h| (h.devs.as_slice(), &h.sys)),
        };
        child_setup(&step, ns, &rootfs, &cwd, &hostname, ids, extra)
            .map_err(|e| std::io::Error::from_raw_os_error(e.raw_os_error()))
    };
    // SAFETY: `setup` only makes raw system calls on data prepared before the fork (no
    // allocation, no locks), which is what `pre_exec` requires in a multi-threaded program.
    unsafe {
        cmd.pre_exec(setup);
    }
    let program = program.clone();
    let forward = if spec.forward_signals {
        Some(Forwarder::start().map_err(|e| SandboxError::Setup {
            step: "forward signals".into(),
            errno: errno_of(&e),
        })?)
    } else {
        None
    };
    let pid = forward.as_ref().map(|f| f.pid.clone());
    let started = spec.started.clone();
    let waited = std::thread::scope(|s| {
        s.spawn(move || -> Result<ExitStatus, (Errno, bool)> {
            // Only this thread's future children enter the new pid namespace. The thread
            // creates no threads afterwards (the kernel would refuse), it only forks and waits.
            // SAFETY: NEWPID does not touch the file descriptor table (the hazard of
            // `unshare_unsafe` is CLONE_FILES).
            unsafe { rustix::thread::unshare_unsafe(UnshareFlags::NEWPID) }
                .map_err(|e| (e, true))?;
            let spawned = cmd.spawn();
            drop(cmd); // closes the parent's copy of the report pipe's write end
            // The forwarder holds a signal that came before this point until the pid is known
            // (the process may already be running its own handlers); -1: nothing to signal.
            let id = spawned
                .as_ref()
                .map_or(-1, |c| i32::try_from(c.id()).unwrap_or(-1));
            if let Some(p) = &pid {
                p.store(id, Ordering::SeqCst);
            }
            let mut child = spawned.map_err(|e| (errno_of(&e), false))?;
            if let Some(tx) = &started {
                let _ = tx.send(child.id());
            }
            let status = child.wait().map_err(|e| (errno_of(&e), false));
            if let Some(p) = &pid {
                p.store(-1, Ordering::SeqCst);
            }
            status
        })
        .join()
    });
    if let Some(f) = &forward {
        // Also when the spawn never happened: the forwarder must not wait for a pid.
        f.pid.store(-1, Ordering::SeqCst);
    }
    drop(forward);
    let mut reports = Vec::new();
    let _ = std::fs::File::from(report_r).read_to_end(&mut reports);
    match waited {
        Ok(Ok(status)) => Ok(status),
        Ok(Err((errno, true))) => Err(SandboxError::Setup {
            step: "unshare pid namespace".into(),
            errno,
        }),
        Ok(Err((errno, false))) => {
            let last = reports.last().map_or(0, |n| usize::from(*n));
            let step = match STEPS.get(last) {
                Some(&"exec") => format!("exec {program}"),
                Some(s) => s.to_string(),
                None => match mount_names.get(last - STEPS.len()) {
                    Some(t) => format!("mount {t}"),
                    None => "spawn".into(),
                },
            };
            Err(SandboxError::Setup { step, errno })
        }
        Err(_) => Err(SandboxError::Invalid("sandbox thread panicked".into())),
    }
}

/// Passes the signals kiln receives on to the sandbox's pid 1 while it runs.
struct Forwarder {
    pid: Arc<AtomicI32>,
    handle: signal_hook::iterator::Handle,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Forwarder {
    fn start() -> std::io::Result<Forwarder> {
        use signal_hook::consts::signal::{
            SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2, SIGWINCH,
        };
        let mut signals = signal_hook::iterator::Signals::new([
            SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH,
        ])?;
        let handle = signals.handle();
        let pid = Arc::new(AtomicI32::new(0));
        let target = pid.clone();
        let thread = std::thread::spawn(move || {
            for sig in signals.forever() {
                // 0: not spawned yet; wait for it rather than lose the signal.
                let mut p = target.load(Ordering::SeqCst);
                while p == 0 {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                    p = target.load(Ordering::SeqCst);
                }
                if p > 0 {
                    // SAFETY: kill(2) with plain integers; `p` is our own child, not yet
                    // reaped (the waiter clears it right after wait returns).
                    unsafe { libc::kill(p, sig) };
                }
            }
        });
        Ok(Forwarder {
            pid,
            handle,
            thread: Some(thread),
        })
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.handle.close();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `filepath.Clean` of an absolute path: `.` and empty parts dropped, `..` removes the part
/// before it and stops at `/`.
pub(super) fn clean_absolute(path: &str) -> String {
    let mut parts = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

/// The exit code as the shell reports it: the code, or 128 + the signal.
pub fn exit_code(status: ExitStatus) -> i32 {
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1)
}

fn errno_of(e: &std::io::Error) -> Errno {
    Errno::from_io_error(e).unwrap_or(Errno::IO)
}

fn gid_of(g: u32) -> rustix::fs::Gid {
    rustix::fs::Gid::from_raw(g)
}

/// A file for /dev/pipes: its path there and its content.
type Pipe = (CString, Vec<u8>);
/// A detached mount (descriptor number) and where it goes: the target's components as
/// (prefix to open, name to create in its parent).
struct Attach {
    tree: i32,
    steps: Vec<(CString, CString)>,
    dir: bool,
    only_over_file: bool,
}

/// What the child sets up besides the basics, all prepared before the fork.
struct Extra<'a> {
    pipes: &'a [Pipe],
    mounts: &'a [Attach],
    read_only: bool,
    /// The root is remounted `nodev` (no devices cgroup could be had).
    nodev: bool,
    /// The bounding, permitted and effective capabilities.
    caps: CapabilitySet,
    cgroups: &'a [i32],
    /// A pidfd of kiln itself (see [`child_setup`]).
    kiln: i32,
    filter: &'a [super::seccomp::Insn],
    /// `/proc` split for [`open_creating`].
    proc_steps: &'a [(CString, CString)],
    /// Rootless: the host's device nodes and /sys, bound instead of made (a user namespace
    /// may neither create devices nor mount sysfs for the host's network).
    host: Option<(&'a [Attach], &'a Attach)>,
}

/// Rootless: the host's device nodes and /sys as detached mounts (`/sys` read-only).
struct HostBinds {
    devs: Vec<Attach>,
    sys: Attach,
    _trees: Vec<super::mounts::Detached>,
}

const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

fn host_binds() -> Result<HostBinds, SandboxError> {
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

/// Everything between fork and exec, in the child. Async-signal-safe: raw system calls only.
#[allow(clippy::too_many_arguments)]
fn child_setup(
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
        caps,
        cgroups,
        kiln,
        filter,
        proc_steps,
        host,
    } = extra;
    use rustix::mount::{mount, mount_bind, mount_change, mount_remount, unmount};
    step(17);
    // First, so that kiln's death takes this process along from here on; then make sure kiln
    // did not die before that (its pidfd turns readable when it exits). Without the check, a
    // kiln killed during the fork would leave a container running with nobody to stop it.
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
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
    step(0);
    // A session of its own: a terminal's Ctrl-C reaches kiln only, which forwards it (kiln
    // run) or dies and takes the sandbox with it (a build); never both at once.
    rustix::process::setsid()?;
    // SAFETY: no CLONE_FILES; this process is single-threaded after fork.
    unsafe { rustix::thread::unshare_unsafe(ns) }?;
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
    mount(
        c"devpts",
        c"/dev/pts",
        c"devpts",
        MountFlags::NOSUID | MountFlags::NOEXEC,
        Some(c"newinstance,ptmxmode=0666,mode=0620"),
    )?;
    mount(
        c"shm",
        c"/dev/shm",
        c"tmpfs",
        nosuid_nodev_noexec,
        Some(c"mode=1777,size=65536k"),
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
    match host {
        Some((_, sys)) => attach(sys)?,
        None => mount(
            c"sysfs",
            c"/sys",
            c"sysfs",
            nosuid_nodev_noexec | MountFlags::RDONLY,
            None,
        )?,
    }
    step(7);
    for p in MASKED {
        match mount_bind(c"/dev/null", p) {
            Ok(()) | Err(Errno::NOENT) => {}
            // A directory: hide it under an empty read-only tmpfs.
            Err(Errno::NOTDIR) => mount(c"tmpfs", p, c"tmpfs", MountFlags::RDONLY, None)?,
            Err(e) => return Err(e),
        }
    }
    for p in READ_ONLY {
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
    take_identity(
        step,
        cwd,
        filter,
        caps,
        (uid, gid, groups),
        host.is_none() || !groups.is_empty(),
        kiln,
    )
}

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

/// Opens the path whose components are `steps` inside the root, creating what is missing
/// (directories, and an empty file last when `dir` is false). Each component is opened with
/// `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)` from the root, so a symlink of the image
/// resolves inside the root and `/proc/self/fd/N` gives no way out (CVE-2024-21626); creation
/// is relative to the parent just opened, never through a path. `None` for no components (the
/// root), or when `only_over_file` and the last component exists as something else than a
/// regular file (a symlink is not followed then).
fn open_creating(
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
fn attach(m: &Attach) -> Result<(), Errno> {
    attach_at(m.tree, &m.steps, (m.dir, m.only_over_file))
}

/// [`attach`] with the parts given separately (the child's own /proc has no `Attach`).
fn attach_at(
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

impl Spec {
    /// A spec with Docker's defaults: root, `/`, hostname `kiln`, no network.
    pub fn new(rootfs: &Path, args: Vec<String>) -> Spec {
        Spec {
            rootfs: rootfs.to_path_buf(),
            args,
            env: vec![format!("PATH={DEFAULT_PATH}")],
            cwd: "/".into(),
            hostname: "kiln".into(),
            uid: 0,
            gid: 0,
            groups: Vec::new(),
            network: Network::None,
            pipes: Vec::new(),
            mounts: Vec::new(),
            read_only: false,
            forward_signals: false,
            started: None,
            cgroup: super::cgroup::Join::default(),
            seccomp: true,
        }
    }
}
