//! `kiln exec`: a process started inside a running container. It joins the namespaces of the
//! container's process 1 (entered through a pidfd, so never those of another process that got
//! its pid), its cgroups, and takes exactly the identity a container's process 1 takes
//! ([`super::identity::take_identity`]): no descriptor of kiln's, the working directory
//! resolved inside the root, the seccomp filter, Docker's capabilities, then groups and ids.
//!
//! What it guards against, as runc does: the process is made non-dumpable before it enters the
//! container, so nothing in the container can open `/proc/PID/exe` (kiln's binary) or its
//! descriptors before the exec (CVE-2019-5736, CVE-2016-9962); every descriptor of kiln's is
//! close-on-exec and the working directory is opened inside the root, with magic links refused
//! (CVE-2024-21626).

use std::{
    ffi::CString,
    os::{fd::AsRawFd, unix::process::CommandExt},
    process::{Command, ExitStatus, Stdio},
};

use rustix::{io::Errno, thread::ThreadNameSpaceType};

use super::process::SandboxError;
use crate::procid::ProcessId;

/// What to start in a container.
#[derive(Debug, Clone)]
pub struct ExecSpec {
    /// The container's process 1.
    pub init: ProcessId,
    /// argv; `args[0]` without a `/` is looked up in `PATH` of `env`.
    pub args: Vec<String>,
    pub env: Vec<String>,
    /// Absolute, inside the container.
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    /// Killed (SIGKILL) when it runs longer (a health check's timeout).
    pub timeout: Option<std::time::Duration>,
    /// The container's own (`--cap-add`, `--security-opt`, `--ulimit`...).
    pub privileges: super::identity::Privileges,
    /// `-t`: the child's end of [`super::pty::channel`]; the process gets a terminal made in
    /// the container's devpts, its master sent back on this socket.
    pub tty: Option<std::sync::Arc<std::os::fd::OwnedFd>>,
}

fn setup_err(step: &str) -> impl FnOnce(Errno) -> SandboxError + '_ {
    move |errno| SandboxError::Setup {
        step: step.into(),
        errno,
    }
}

/// The namespaces of `pid` that are not this process's own (those to enter).
fn namespaces_of(pid: i32) -> (ThreadNameSpaceType, bool) {
    let ino = |p: String| {
        std::fs::metadata(p)
            .ok()
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
    };
    let differs =
        |name: &str| ino(format!("/proc/{pid}/ns/{name}")) != ino(format!("/proc/self/ns/{name}"));
    let mut flags = ThreadNameSpaceType::empty();
    for (name, flag) in [
        ("mnt", ThreadNameSpaceType::MOUNT),
        ("uts", ThreadNameSpaceType::HOST_NAME_AND_NIS_DOMAIN_NAME),
        ("ipc", ThreadNameSpaceType::INTER_PROCESS_COMMUNICATION),
        ("net", ThreadNameSpaceType::NETWORK),
        ("cgroup", ThreadNameSpaceType::CONTROL_GROUP),
    ] {
        if differs(name) {
            flags |= flag;
        }
    }
    (flags, differs("pid"))
}

/// Starts `spec` in its container with the given stdio and waits for it.
pub fn exec(
    spec: &ExecSpec,
    stdin: Stdio,
    stdout: Stdio,
    stderr: Stdio,
) -> Result<ExitStatus, SandboxError> {
    let Some(program) = spec.args.first() else {
        return Err(SandboxError::Invalid("no command to run".into()));
    };
    if spec.args.iter().chain(&spec.env).any(|a| a.contains('\0')) {
        return Err(SandboxError::Invalid(
            "the command or environment has a NUL byte".into(),
        ));
    }
    if !spec.cwd.starts_with('/') {
        return Err(SandboxError::Invalid(format!(
            "working directory {:?} is not absolute",
            spec.cwd
        )));
    }
    let init = rustix::process::Pid::from_raw(spec.init.pid)
        .ok_or_else(|| SandboxError::Invalid("the container is not running".into()))?;
    let pidfd = rustix::process::pidfd_open(init, rustix::process::PidfdFlags::empty())
        .map_err(setup_err("pidfd_open"))?;
    // Opened, then checked: the pidfd names the container's process 1, not a later one.
    if !spec.init.alive() {
        return Err(SandboxError::Invalid("the container is not running".into()));
    }
    let (flags, pid_ns) = namespaces_of(spec.init.pid);
    let (cgroups, devices) = super::cgroup::join_of(spec.init.pid);
    let cgroup_fds: Vec<i32> = cgroups.iter().map(AsRawFd::as_raw_fd).collect();
    let caps = spec
        .privileges
        .cap_set(devices || super::userns::rootless());
    let cwd =
        super::mounts::target_steps(&super::process::clean_absolute(&spec.cwd)).unwrap_or_default();
    let cwd: Vec<(CString, CString)> = cwd;
    let filter = if spec.privileges.unconfined {
        Vec::new()
    } else {
        super::seccomp::program()
    };
    let (no_new_privs, rlimits) = (
        spec.privileges.no_new_privs,
        spec.privileges.rlimits.clone(),
    );
    let tty = spec.tty.as_ref().map_or(-1, |s| s.as_raw_fd());
    let groups: Vec<rustix::fs::Gid> = spec
        .groups
        .iter()
        .map(|g| rustix::fs::Gid::from_raw(*g))
        .collect();
    let (uid, gid) = (spec.uid, spec.gid);
    let kiln_pidfd = rustix::process::pidfd_open(
        rustix::process::getpid(),
        rustix::process::PidfdFlags::empty(),
    )
    .map_err(setup_err("pidfd_open"))?;
    let kiln_fd = kiln_pidfd.as_raw_fd();
    let target = pidfd.as_raw_fd();
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
    let setup = move || -> std::io::Result<()> {
        let run = || -> Result<(), Errno> {
            // Before anything of the container can see this process: not dumpable, so its
            // /proc entries (exe, fd) stay root's and closed to the container.
            rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)?;
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
            super::child::restore_transparent_huge_pages();
            for fd in &cgroup_fds {
                // SAFETY: descriptors opened before the fork and kept open by `cgroups`, which
                // outlives the spawn.
                let procs = unsafe { std::os::fd::BorrowedFd::borrow_raw(*fd) };
                rustix::io::write(procs, b"0")?;
            }
            // SAFETY: the pidfd is owned by the parent frame, open for the whole spawn.
            let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(target) };
            // Entering the mount namespace sets this process's root and working directory to
            // the container's root.
            rustix::thread::move_into_thread_name_spaces(fd, flags)?;
            if tty >= 0 {
                // A session of its own, whose controlling terminal is the new one.
                rustix::process::setsid()?;
                super::pty::open_in_child(tty, uid)?;
            }
            super::identity::take_identity(
                &|_| {},
                &cwd,
                &super::identity::Grant {
                    filter: &filter,
                    caps,
                    no_new_privs,
                    rlimits: &rlimits,
                },
                (uid, gid, &groups),
                super::identity::needs_set_groups(super::userns::setgroups_denied(), gid, &groups),
                kiln_fd,
            )
        };
        run().map_err(|e| std::io::Error::from_raw_os_error(e.raw_os_error()))
    };
    // SAFETY: `setup` makes raw system calls on data prepared before the fork (no allocation,
    // no locks), which is what `pre_exec` requires in a multi-threaded program.
    unsafe {
        cmd.pre_exec(setup);
    }
    let status = std::thread::scope(|s| {
        s.spawn(|| -> Result<ExitStatus, (String, Errno)> {
            if pid_ns {
                // Only this thread's future children enter the container's pid namespace; the
                // thread only forks and waits afterwards.
                // SAFETY: the pidfd is open (owned by the enclosing frame).
                let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(target) };
                rustix::thread::move_into_thread_name_spaces(fd, ThreadNameSpaceType::PROCESS_ID)
                    .map_err(|e| ("enter pid namespace".to_string(), e))?;
            }
            let mut child = cmd.spawn().map_err(|e| {
                let errno = Errno::from_raw_os_error(e.raw_os_error().unwrap_or(0));
                (format!("exec {program}"), errno)
            })?;
            let wait_err = |e: std::io::Error| {
                (
                    "wait".to_string(),
                    Errno::from_raw_os_error(e.raw_os_error().unwrap_or(0)),
                )
            };
            if let Some(limit) = spec.timeout {
                let t0 = std::time::Instant::now();
                loop {
                    if let Some(status) = child.try_wait().map_err(wait_err)? {
                        return Ok(status);
                    }
                    if t0.elapsed() >= limit {
                        let _ = child.kill();
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
            }
            child.wait().map_err(wait_err)
        })
        .join()
    });
    drop(cgroups);
    drop(pidfd);
    match status {
        Ok(Ok(s)) => Ok(s),
        Ok(Err((step, errno))) => Err(SandboxError::Setup { step, errno }),
        Err(_) => Err(SandboxError::Invalid("exec thread panicked".into())),
    }
}
