//! One process in fresh namespaces: pid, mount, uts, ipc and, for
//! `Network::None`, network; `pivot_root` into an already mounted root filesystem; fresh /proc,
//! a minimal /dev, read-only /sys, Docker's masked and read-only /proc paths, Docker's default
//! capabilities, hostname, user and working directory; then `execve`.
//!
//! How: a dedicated thread unshares its pid namespace for children and starts the child
//! ([`super::spawn`]: a clone that shares kiln's memory until its exec, as posix_spawn's does;
//! a fork for `--init`); the child (pid 1 of the new namespace) sets the sandbox up and execs.
//! The thread then waits, so the child's parent-death signal (SIGKILL) is tied to a thread that
//! lives exactly as long as the child: if kiln dies, the sandbox dies, and when pid 1 exits the
//! kernel kills every other process in its namespace.
//!
//! The child runs between clone and exec in a multi-threaded program, so it only makes raw
//! system calls with C strings prepared before: no allocation, no lock. Each step writes its
//! number to a close-on-exec pipe first; when a step fails, the child hands back its errno and
//! the parent reads which step it was, so a failure comes back as "pivot_root: Operation not
//! permitted" or "exec /bin/nope: No such file or directory", never as exit status 127.

use std::{
    ffi::CString,
    io::Read,
    os::fd::OwnedFd,
    os::unix::process::ExitStatusExt,
    path::{Path, PathBuf},
    process::ExitStatus,
};

use rustix::{io::Errno, thread::UnshareFlags};

pub use super::mounts::Mount;
pub use super::spawn::Stdio;
use super::{
    attach::{Attach, host_binds},
    child::{Extra, STEPS, child_setup},
    identity::gid_of,
    signals::Forwarder,
};

pub use super::identity::DEFAULT_CAPS;

/// PATH when the image sets none (Docker's default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Network namespace choice.
#[derive(Debug, Clone)]
pub enum Network {
    /// A fresh network namespace: loopback only.
    None,
    /// The host's network namespace.
    Host,
    /// The network namespace kept at this path ([`crate::network::netns`]), set up before.
    Join(PathBuf),
    /// [`Network::None`]'s namespace made beforehand ([`fresh_network`]), loopback up.
    Fresh(std::sync::Arc<std::os::fd::OwnedFd>),
}

/// A new network namespace with its loopback up, for [`Network::Fresh`]: made ahead, on a
/// thread a container's start has anyway, it is off the child's path, where it was the
/// costliest step (about 0.4 ms of the child's 1.6 ms, measured). The calling thread is left
/// in the namespace: a thread of its own, which ends after.
pub fn fresh_network() -> Result<std::os::fd::OwnedFd, Errno> {
    // SAFETY: NEWNET does not touch the file descriptor table (the hazard of `unshare_unsafe`
    // is CLONE_FILES); it moves this thread alone, as documented above.
    unsafe { rustix::thread::unshare_unsafe(UnshareFlags::NEWNET) }?;
    super::child::loopback_up()?;
    rustix::fs::open(
        "/proc/thread-self/ns/net",
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
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
    /// Capabilities, seccomp (docker's refused system calls fail with EPERM,
    /// [`super::seccomp`]), no_new_privs, masked paths, resource limits: docker's defaults
    /// unless changed.
    pub privileges: super::identity::Privileges,
    /// The size of /dev/shm (`--shm-size`; docker's 64 MiB by default).
    pub shm_size: Option<u64>,
    /// `--init`: process 1 is a small init that runs the command ([`super::init`]).
    pub init: bool,
    /// `-t`: the child's end of [`super::pty::channel`]. The process gets a terminal of the
    /// container's own as stdio, and its master is sent on this socket.
    pub tty: Option<std::sync::Arc<std::os::fd::OwnedFd>>,
}

/// Why the sandbox could not run the process; names the step.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("{}", setup_message(step, *errno))]
    Setup { step: String, errno: Errno },
    #[error("{0}")]
    Invalid(String),
}

/// A failed setup step as kiln reports it; the command itself failing to start reads as runc's
/// (`exec: "app": executable file not found in $PATH`), which docker users search for.
fn setup_message(step: &str, errno: Errno) -> String {
    let Some(program) = step.strip_prefix("exec ") else {
        return format!("{step}: {errno}");
    };
    match errno {
        Errno::NOENT if !program.contains('/') => {
            format!("exec: {program:?}: executable file not found in $PATH")
        }
        Errno::NOENT => format!("exec: {program:?}: stat {program}: no such file or directory"),
        Errno::ACCESS => format!("exec: {program:?}: permission denied"),
        e => format!("exec: {program:?}: {e}"),
    }
}

/// Runs `spec` with the given stdio and waits for it.
pub fn run(
    spec: &Spec,
    stdin: Stdio,
    stdout: Stdio,
    stderr: Stdio,
) -> Result<ExitStatus, SandboxError> {
    run_with(spec, stdin, stdout, stderr, &mut |_| {})
}

/// [`run`], and `started` is called with the process's host pid once it runs (its exec
/// succeeded), on the calling thread while the process runs: a container records its pid
/// there, and a detached container's monitor tells `kiln run -d` it started. (The calling
/// thread only waits meanwhile; a thread of its own for this cost 0.1 ms of every start.)
pub fn run_with(
    spec: &Spec,
    stdin: Stdio,
    stdout: Stdio,
    stderr: Stdio,
    started: &mut dyn FnMut(u32),
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
    let caps = spec.privileges.cap_set(devices_controlled);
    let host = if super::userns::rootless() {
        Some(host_binds()?)
    } else {
        None
    };
    let cgroup_fds = spec.cgroup.fds();
    let (no_new_privs, privileged) = (spec.privileges.no_new_privs, spec.privileges.privileged);
    let rlimits = spec.privileges.rlimits.clone();
    let title = if spec.init {
        Some(super::init::Title::prepare(&spec.args).ok_or_else(|| {
            SandboxError::Invalid("--init: cannot read this process's argument area".into())
        })?)
    } else {
        None
    };
    let shm = cstr(
        &format!(
            "mode=1777,size={}k",
            spec.shm_size.unwrap_or(64 << 20).div_ceil(1024)
        ),
        "shm size",
    )?;
    let proc_steps = super::mounts::target_steps("/proc").unwrap_or_default();
    let filter = if !spec.privileges.unconfined {
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
    if matches!(spec.network, Network::None) {
        ns |= UnshareFlags::NEWNET;
    }
    // Opened before the fork (close-on-exec): the child joins it first.
    let netns = match &spec.network {
        Network::Join(path) => Some(
            rustix::fs::open(
                path,
                rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )
            .map_err(|errno| SandboxError::Setup {
                step: format!("open the network namespace {}", path.display()),
                errno,
            })?,
        ),
        _ => None,
    };
    let (netns_fd, loopback_down) = match &spec.network {
        Network::Fresh(fd) => (std::os::fd::AsRawFd::as_raw_fd(fd.as_ref()), false),
        _ => (
            netns.as_ref().map_or(-1, std::os::fd::AsRawFd::as_raw_fd),
            true,
        ),
    };
    let exec = super::spawn::Program::new(&spec.args, &spec.env)
        .ok_or_else(|| SandboxError::Invalid("a NUL byte in the command".into()))?;
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
    let tty = spec
        .tty
        .as_ref()
        .map_or(-1, |s| std::os::fd::AsRawFd::as_raw_fd(s.as_ref()));
    let setup = move || -> Errno {
        let step = |n: u8| {
            let _ = rustix::io::write(&report_w, &[n]);
        };
        let ids = (uid, gid, groups.as_slice());
        let extra = Extra {
            pipes: &pipes,
            mounts: &mounts,
            read_only,
            nodev: !devices_controlled,
            grant: super::identity::Grant {
                filter: &filter,
                caps,
                no_new_privs,
                rlimits: &rlimits,
            },
            privileged,
            shm: &shm,
            cgroups: &cgroup_fds,
            kiln: kiln_fd,
            proc_steps: &proc_steps,
            host: host.as_ref().map(|h| (h.devs.as_slice(), &h.sys)),
            tty,
            init: title.as_ref(),
            netns: netns_fd,
            loopback_down,
        };
        match child_setup(&step, ns, &rootfs, &cwd, &hostname, ids, extra) {
            Ok(()) => exec.exec(),
            Err(e) => e,
        }
    };
    let fork = spec.init;
    let program = program.clone();
    let mut forward = if spec.forward_signals {
        // With a terminal, a change of window size reaches the container through it.
        Some(
            Forwarder::start(spec.tty.is_none()).map_err(|e| SandboxError::Setup {
                step: "forward signals".into(),
                errno: errno_of(&e),
            })?,
        )
    } else {
        None
    };
    let stop = forward.as_ref().map(Forwarder::stopper);
    let (started_tx, started_rx) = std::sync::mpsc::channel::<(u32, Option<OwnedFd>)>();
    let waited = std::thread::scope(|s| {
        let sandbox = s.spawn(move || -> Result<ExitStatus, (Errno, bool)> {
            // Dropped on every way out of this thread: the calling thread's forwarding ends.
            let _stop = stop;
            // Only this thread's future children enter the new pid namespace. The thread
            // creates no threads afterwards (the kernel would refuse), it only forks and waits.
            // SAFETY: NEWPID does not touch the file descriptor table (the hazard of
            // `unshare_unsafe` is CLONE_FILES).
            unsafe { rustix::thread::unshare_unsafe(UnshareFlags::NEWPID) }
                .map_err(|e| (e, true))?;
            // Returns once the process has exec'd; `setup`, which holds the report pipe's
            // write end, is gone by then.
            let child = super::spawn::start([stdin, stdout, stderr], fork, setup)
                .map_err(|e| (e, false))?;
            // Opened here, where the process cannot have been reaped yet (this thread reaps
            // it): signals are passed on through it ([`Forwarder::serve`]).
            let pidfd = i32::try_from(child)
                .ok()
                .and_then(rustix::process::Pid::from_raw)
                .and_then(|p| {
                    rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()).ok()
                });
            let _ = started_tx.send((child, pidfd));
            // The last sender: the calling thread stops waiting for a pid.
            drop(started_tx);
            super::spawn::wait(child).map_err(|e| (e, false))
        });
        // Nothing comes when the process never ran (the sender is dropped with the thread).
        if let Ok((pid, pidfd)) = started_rx.recv() {
            started(pid);
            if let (Some(f), Some(fd)) = (&mut forward, &pidfd) {
                f.serve(std::os::fd::AsFd::as_fd(fd));
            }
        }
        sandbox.join()
    });
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
            tty: None,
            init: false,
            cgroup: super::cgroup::Join::default(),
            privileges: super::identity::Privileges::default(),
            shm_size: None,
        }
    }
}
