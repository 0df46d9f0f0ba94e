//! Starting the sandbox's process: its stdio, the search of its program in `PATH`, and the
//! process itself, made without copying kiln.
//!
//! A fork copied kiln's page tables and made every page of kiln copy-on-write (each of its
//! threads then faulted on its next write), and the exec threw that copy away again: about
//! 1 ms of a 9 ms `kiln run --rm IMAGE true`, measured (0.4-0.5 ms from the fork to the child's
//! first step, 0.5 ms from the exec to kiln hearing of it), and more the bigger kiln's memory
//! (a build's). So the child is made as the C library's `posix_spawn` makes it: `clone(2)` with
//! `CLONE_VM | CLONE_VFORK`. It runs on a stack of its own inside kiln's memory while the thread
//! that made it is held by the kernel until the child execs or exits.
//!
//! The rules for the child are those of any code between fork and exec, and stricter, because
//! the memory it runs in is kiln's own: it allocates nothing, takes no lock and writes no Rust
//! state (system calls through rustix, or the C library's thin wrappers, on data prepared before
//! the clone). Signals are blocked across the clone, and the child sets every signal kiln
//! handles back to the default before it unblocks them, so no handler of kiln's ever runs in
//! it. The one thing it writes is its own failure, in [`Shared::failed`], which kiln reads once
//! the clone returns.
//!
//! `--init` keeps a fork: its process 1 stays kiln's code for the container's life, which a
//! process sharing kiln's memory must not ([`super::init`]).

use std::{
    ffi::{CString, c_char, c_int, c_void},
    os::fd::{AsRawFd, OwnedFd, RawFd},
    sync::atomic::{AtomicI32, Ordering},
};

use rustix::io::Errno;

/// One of the process's stdin, stdout and stderr.
#[derive(Debug)]
pub enum Stdio {
    /// kiln's own.
    Inherit,
    /// /dev/null.
    Null,
    /// This descriptor.
    Fd(OwnedFd),
}

impl Stdio {
    pub fn inherit() -> Stdio {
        Stdio::Inherit
    }

    pub fn null() -> Stdio {
        Stdio::Null
    }
}

impl From<OwnedFd> for Stdio {
    fn from(fd: OwnedFd) -> Stdio {
        Stdio::Fd(fd)
    }
}

impl From<std::fs::File> for Stdio {
    fn from(f: std::fs::File) -> Stdio {
        Stdio::Fd(f.into())
    }
}

impl From<std::io::PipeReader> for Stdio {
    fn from(p: std::io::PipeReader) -> Stdio {
        Stdio::Fd(p.into())
    }
}

impl From<std::io::PipeWriter> for Stdio {
    fn from(p: std::io::PipeWriter) -> Stdio {
        Stdio::Fd(p.into())
    }
}

impl From<Stdio> for std::process::Stdio {
    fn from(s: Stdio) -> std::process::Stdio {
        match s {
            Stdio::Inherit => std::process::Stdio::inherit(),
            Stdio::Null => std::process::Stdio::null(),
            Stdio::Fd(fd) => fd.into(),
        }
    }
}

/// The program, its arguments and its environment as execve(2) takes them, and the paths
/// the program is tried at: itself when it has a `/`, else in each directory of the
/// environment's `PATH` (docker's default when it has none), as runc looks it up.
pub(super) struct Program {
    paths: Vec<CString>,
    _argv: Vec<CString>,
    _env: Vec<CString>,
    argv: Vec<*const c_char>,
    envp: Vec<*const c_char>,
}

// SAFETY: the raw pointers point into the `CString`s the value owns, which never move or
// change while it lives; nothing else is shared.
unsafe impl Send for Program {}
// SAFETY: as above; the pointers are only read.
unsafe impl Sync for Program {}

impl Program {
    /// `None` when an argument or variable holds a NUL byte (the caller checked).
    pub(super) fn new(args: &[String], env: &[String]) -> Option<Program> {
        let program = args.first()?;
        let path = env
            .iter()
            .find_map(|kv| kv.strip_prefix("PATH="))
            .unwrap_or(super::process::DEFAULT_PATH);
        let paths = if program.contains('/') {
            vec![CString::new(program.as_str()).ok()?]
        } else {
            // An empty entry is the working directory, as in a shell.
            path.split(':')
                .map(|d| CString::new(format!("{}/{program}", if d.is_empty() { "." } else { d })))
                .collect::<Result<_, _>>()
                .ok()?
        };
        let owned = |v: &[String]| -> Option<Vec<CString>> {
            v.iter().map(|s| CString::new(s.as_str()).ok()).collect()
        };
        let (argv_owned, env_owned) = (owned(args)?, owned(env)?);
        let ptrs = |v: &[CString]| -> Vec<*const c_char> {
            v.iter()
                .map(|s| s.as_ptr())
                .chain([std::ptr::null()])
                .collect()
        };
        Some(Program {
            argv: ptrs(&argv_owned),
            envp: ptrs(&env_owned),
            paths,
            _argv: argv_owned,
            _env: env_owned,
        })
    }

    /// Execs the program; returns only when it could not, with execvp(3)'s error: a path that
    /// exists but may not be run (EACCES) is reported over the ones that do not exist.
    /// Async-signal-safe, allocation-free: for the child.
    pub(super) fn exec(&self) -> Errno {
        let mut denied = false;
        let mut last = Errno::NOENT;
        for p in &self.paths {
            // SAFETY: execve(2) with NUL-terminated strings and NULL-terminated arrays of
            // them, all owned by `self`; it returns only on failure.
            unsafe { libc::execve(p.as_ptr(), self.argv.as_ptr(), self.envp.as_ptr()) };
            last = Errno::from_raw_os_error(
                std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
            );
            match last {
                Errno::ACCESS => denied = true,
                Errno::NOENT | Errno::NOTDIR | Errno::STALE | Errno::NODEV | Errno::TIMEDOUT => {}
                e => return e,
            }
        }
        if denied { Errno::ACCESS } else { last }
    }
}

/// What the parent and the child share through the clone.
struct Shared<'a> {
    setup: &'a mut (dyn FnMut() -> Errno + Send),
    stdio: [Option<RawFd>; 3],
    /// The child's errno when it could not exec; 0 while it has not failed.
    failed: AtomicI32,
}

/// The child's stack: its frames are those of the setup ([`super::child`]), which keeps
/// everything in prepared buffers; NORESERVE, so only what it touches is ever memory.
const STACK: usize = 1 << 20;

/// Starts the process that runs `setup` then execs (`setup` returns only with the reason it
/// could not), with `stdio` as its stdin, stdout and stderr; its pid once it has exec'd.
/// `fork`: a forked copy of kiln instead of a process sharing its memory (`--init`).
pub(super) fn start(
    stdio: [Stdio; 3],
    fork: bool,
    mut setup: impl FnMut() -> Errno + Send + Sync + 'static,
) -> Result<u32, Errno> {
    if fork {
        return start_forked(stdio, setup);
    }
    let null = match stdio.iter().any(|s| matches!(s, Stdio::Null)) {
        true => Some(rustix::fs::open(
            "/dev/null",
            rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )?),
        false => None,
    };
    let raw = |s: &Stdio| match s {
        Stdio::Inherit => None,
        Stdio::Null => null.as_ref().map(AsRawFd::as_raw_fd),
        Stdio::Fd(fd) => Some(fd.as_raw_fd()),
    };
    let mut shared = Shared {
        stdio: [raw(&stdio[0]), raw(&stdio[1]), raw(&stdio[2])],
        setup: &mut setup,
        failed: AtomicI32::new(0),
    };
    // SAFETY: an anonymous private mapping of fresh memory, unmapped below once the child no
    // longer runs on it; its lowest page is made a guard.
    let stack = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            STACK,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if stack == libc::MAP_FAILED {
        return Err(last_errno());
    }
    // SAFETY: the first page of the mapping made above.
    unsafe { libc::mprotect(stack, 4096, libc::PROT_NONE) };
    let huge_pages = HugePages::for_child();
    // Every signal blocked across the clone: the child starts with them blocked and sets their
    // handlers back to the default before it unblocks them.
    // SAFETY: sigset_t is plain data, filled by sigfillset; pthread_sigmask changes this
    // thread's mask and is restored below.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
    }
    // SAFETY: CLONE_VM | CLONE_VFORK: the child runs `child_main` on the stack above, in this
    // memory, and this thread is held until it execs or exits, so `shared`, `setup` and the
    // stack outlive its use of them. The stack grows down from the mapping's end (16-byte
    // aligned). The child's rules are the module's.
    let pid = unsafe {
        libc::clone(
            child_main,
            stack.cast::<u8>().add(STACK).cast::<c_void>(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            std::ptr::from_mut(&mut shared).cast::<c_void>(),
        )
    };
    let cloned = if pid < 0 { Err(last_errno()) } else { Ok(pid) };
    drop(huge_pages);
    // SAFETY: as above: the mask saved before the clone, and the mapping the child no longer
    // uses (it has exec'd or exited).
    unsafe {
        libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
        libc::munmap(stack, STACK);
    }
    let pid = cloned?;
    match shared.failed.load(Ordering::SeqCst) {
        0 => Ok(pid.unsigned_abs()),
        errno => {
            let _ = wait(pid.unsigned_abs());
            Err(Errno::from_raw_os_error(errno))
        }
    }
}

/// kiln runs without transparent huge pages (`PR_SET_THP_DISABLE`, set in `main`), a flag of
/// the memory, which an exec passes on; the container must get the machine's setting, and a
/// forked child turned the flag off in its own copy (`child::restore_transparent_huge_pages`).
/// A child sharing kiln's memory would turn it off for kiln too, and spawns overlap (a build's
/// RUN steps): so the flag is off while any child is between clone and exec, and kiln's own
/// again once none is. Held by the parent across its clone.
struct HugePages;

/// Children between clone and exec, and kiln's own flag saved when the first of them started.
static IN_FLIGHT: std::sync::Mutex<(u32, c_int)> = std::sync::Mutex::new((0, 0));

impl HugePages {
    fn for_child() -> HugePages {
        let mut g = IN_FLIGHT
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if g.0 == 0 {
            // SAFETY: prctl(2) with integer arguments only; -1 (an old kernel) is kept as 0.
            g.1 = unsafe { libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0) }.max(0);
            if g.1 != 0 {
                // SAFETY: as above.
                unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 0, 0, 0, 0) };
            }
        }
        g.0 += 1;
        HugePages
    }
}

impl Drop for HugePages {
    fn drop(&mut self) {
        let mut g = IN_FLIGHT
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        g.0 -= 1;
        if g.0 == 0 && g.1 != 0 {
            // SAFETY: prctl(2) with integer arguments only.
            unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, g.1, 0, 0, 0) };
        }
    }
}

/// The child, in kiln's memory: signals back to their defaults and unblocked (as std gives a
/// child), its stdio, then the setup and exec. Exits 127 with its errno in `failed` when the
/// exec did not happen.
extern "C" fn child_main(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the `Shared` of `start`, alive while the parent is held.
    let shared = unsafe { &mut *arg.cast::<Shared<'_>>() };
    let errno = (|| {
        reset_signals();
        for (target, fd) in shared.stdio.iter().enumerate() {
            let Some(fd) = *fd else { continue };
            // SAFETY: descriptors the parent keeps open across the clone.
            let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
            let r = match target {
                _ if fd.as_raw_fd() == target as RawFd => {
                    // Already in place: only made to survive the exec.
                    rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty())
                }
                0 => rustix::stdio::dup2_stdin(fd),
                1 => rustix::stdio::dup2_stdout(fd),
                _ => rustix::stdio::dup2_stderr(fd),
            };
            if let Err(e) = r {
                return e;
            }
        }
        (shared.setup)()
    })();
    shared
        .failed
        .store(errno.raw_os_error().max(1), Ordering::SeqCst);
    // SAFETY: _exit(2) ends this process (its own thread group) at once.
    unsafe { libc::_exit(127) }
}

/// Every signal kiln handles (its forwarder's, std's stack overflow guard) back to the
/// default, and SIGPIPE, which kiln ignores, as std does for a child; the others kiln ignores
/// stay ignored. Then the mask emptied. For the child of `start`.
fn reset_signals() {
    for sig in 1..=64 {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: sigaction(2) on this process's own table (a copy of kiln's: no
        // CLONE_SIGHAND), with structs this frame owns. The C library refuses its reserved
        // signals, which are skipped.
        unsafe {
            let mut now: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut now) != 0 {
                continue;
            }
            let handled = now.sa_sigaction != libc::SIG_DFL && now.sa_sigaction != libc::SIG_IGN;
            if handled || (sig == libc::SIGPIPE && now.sa_sigaction == libc::SIG_IGN) {
                let mut dfl: libc::sigaction = std::mem::zeroed();
                dfl.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(sig, &dfl, std::ptr::null_mut());
            }
        }
    }
    // SAFETY: an empty mask for this thread; sigset_t is plain data.
    unsafe {
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::pthread_sigmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
    }
}

/// `start` for `--init`: a fork, through std (which blocks nothing and reports a failed child
/// through a pipe of its own).
fn start_forked(
    [i, o, e]: [Stdio; 3],
    mut setup: impl FnMut() -> Errno + Send + Sync + 'static,
) -> Result<u32, Errno> {
    use std::os::unix::process::CommandExt as _;
    // The setup execs by itself: std's program is never run.
    let mut cmd = std::process::Command::new("/");
    cmd.stdin(i).stdout(o).stderr(e);
    // SAFETY: the setup only makes raw system calls on data prepared before the fork (no
    // allocation, no locks), which is what `pre_exec` requires in a multi-threaded program.
    unsafe {
        cmd.pre_exec(move || Err(std::io::Error::from_raw_os_error(setup().raw_os_error())));
    }
    let child = cmd
        .spawn()
        .map_err(|e| Errno::from_io_error(&e).unwrap_or(Errno::IO))?;
    Ok(child.id())
}

/// Waits for the process `pid` started by [`start`] to end; its wait status.
pub(super) fn wait(pid: u32) -> Result<std::process::ExitStatus, Errno> {
    use std::os::unix::process::ExitStatusExt as _;
    let pid = i32::try_from(pid).map_err(|_| Errno::SRCH)?;
    loop {
        let mut status = 0;
        // SAFETY: waitpid(2) for our own child, with an int this frame owns.
        if unsafe { libc::waitpid(pid, &mut status, 0) } == pid {
            return Ok(std::process::ExitStatus::from_raw(status));
        }
        match last_errno() {
            Errno::INTR => continue,
            e => return Err(e),
        }
    }
}

fn last_errno() -> Errno {
    Errno::from_io_error(&std::io::Error::last_os_error()).unwrap_or(Errno::IO)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_program_without_a_slash_is_looked_for_in_path() {
        let p = Program::new(
            &["sh".into(), "-c".into()],
            &["A=1".into(), "PATH=/bin::/usr/bin".into()],
        )
        .unwrap();
        let paths: Vec<_> = p.paths.iter().map(|c| c.to_str().unwrap()).collect();
        assert_eq!(paths, ["/bin/sh", "./sh", "/usr/bin/sh"]);
        assert_eq!(p.argv.len(), 3);
        assert!(p.argv[2].is_null() && p.envp[2].is_null());
        let p = Program::new(&["./run.sh".into()], &[]).unwrap();
        assert_eq!(p.paths, [CString::new("./run.sh").unwrap()]);
        let p = Program::new(&["true".into()], &[]).unwrap();
        assert_eq!(p.paths[0].to_str().unwrap(), "/usr/local/sbin/true");
        assert!(Program::new(&["a\0b".into()], &[]).is_none());
    }
}
