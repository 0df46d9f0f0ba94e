//! `kiln run --init`: a small init as the container's process 1, as docker's `tini`. It starts
//! the command as its child, passes on every signal it gets, reaps every orphan, and exits
//! with the command's code (128 + N for a signal), so a command never written to be process 1
//! gets default signal handling (Ctrl-C and `kiln stop` end it) and leaves no zombies.
//!
//! The init is the sandbox's own child, forked once more at the very end of its setup (after
//! it took the container's identity): the new process execs the command, the old one stays as
//! process 1 and never execs. Nothing of it needs a file in the container (a static init
//! binary would; kiln's own is dynamically linked), and it is made non-dumpable, so the
//! container's processes cannot open its `/proc/1/exe` (kiln's binary on the host), its memory
//! or its descriptors (CVE-2019-5736's way in); it holds no descriptor but stdio. Raw system
//! calls only: this runs in the forked child of a multi-threaded program.

use rustix::io::Errno;

/// The signals passed on to the command (every one a process may handle; SIGCHLD is the
/// init's own).
const FORWARDED: [i32; 13] = [
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGTERM,
    libc::SIGALRM,
    libc::SIGCONT,
    libc::SIGWINCH,
    libc::SIGTSTP,
    libc::SIGTTIN,
    libc::SIGTTOU,
    libc::SIGPWR,
];

/// The init's command line as the container's `ps` shows it (`/sbin/kiln-init -- CMD...`, as
/// docker's `/sbin/docker-init -- CMD...`), written over kiln's own (which names host paths)
/// in the init's copy of the memory that holds it.
#[derive(Debug, Clone)]
pub(super) struct Title {
    /// Where the kernel reads `/proc/PID/cmdline` from (arg_start), and how many bytes.
    start: usize,
    len: usize,
    text: Vec<u8>,
}

impl Title {
    /// Prepared in kiln, before the fork: this process's argument area (`/proc/self/stat`
    /// fields 48 and 49) and the new text, NUL-separated, cut to fit.
    pub(super) fn prepare(args: &[String]) -> Option<Title> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // Fields after the command name (which may hold spaces), counted from field 3.
        let rest = &stat[stat.rfind(')')? + 2..];
        let fields: Vec<&str> = rest.split(' ').collect();
        let start: usize = fields.get(48 - 3)?.parse().ok()?;
        let end: usize = fields.get(49 - 3)?.parse().ok()?;
        let len = end.checked_sub(start)?;
        let mut text = Vec::new();
        for a in ["/sbin/kiln-init", "--"]
            .into_iter()
            .chain(args.iter().map(String::as_str))
        {
            text.extend_from_slice(a.as_bytes());
            text.push(0);
        }
        text.truncate(len.saturating_sub(1));
        Some(Title { start, len, text })
    }

    /// In the init, after the fork: the area rewritten, the rest zeroed.
    fn write(&self) {
        // SAFETY: [start, start + len) is this process's argument area as the kernel reported
        // it for kiln, which this forked process has a private copy of; nothing in it reads
        // the area again (std copied the arguments it needs at startup, and the init never
        // calls into std's argument functions).
        unsafe {
            let area = self.start as *mut u8;
            std::ptr::copy_nonoverlapping(self.text.as_ptr(), area, self.text.len());
            std::ptr::write_bytes(area.add(self.text.len()), 0, self.len - self.text.len());
        }
    }
}

/// Forks: returns in the new process, which goes on to exec the command; the calling process
/// becomes the init and never returns.
pub(super) fn fork_init(title: Option<&Title>) -> Result<(), Errno> {
    // SAFETY (every call below): plain system calls with integers and with a sigset_t and
    // siginfo_t of this frame.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in FORWARDED {
            libc::sigaddset(&mut set, s);
        }
        libc::sigaddset(&mut set, libc::SIGCHLD);
        // Blocked before the fork, so none is lost in between; the command gets the mask the
        // sandbox had back before it execs.
        let mut old: libc::sigset_t = std::mem::zeroed();
        if libc::sigprocmask(libc::SIG_BLOCK, &set, &mut old) != 0 {
            return Err(Errno::from_raw_os_error(
                std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
            ));
        }
        let child = libc::fork();
        if child < 0 {
            return Err(Errno::from_raw_os_error(
                std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
            ));
        }
        if child == 0 {
            libc::sigprocmask(libc::SIG_SETMASK, &old, std::ptr::null_mut());
            return Ok(());
        }
        // The init. Every descriptor but stdio closed: std's exec-error pipe among them (the
        // spawn waits for its end, which the command's exec brings), kiln's report pipe, and
        // any other that could lead out of the container.
        libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
        libc::prctl(libc::PR_SET_NAME, c"kiln-init".as_ptr());
        if let Some(t) = title {
            t.write();
        }
        loop {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            let sig = libc::sigwaitinfo(&set, &mut info);
            if sig < 0 {
                continue; // EINTR
            }
            if sig != libc::SIGCHLD {
                libc::kill(child, sig);
                continue;
            }
            // Reap everything that ended: orphans as well as the command.
            loop {
                let mut status = 0;
                let reaped = libc::waitpid(-1, &mut status, libc::WNOHANG);
                if reaped <= 0 {
                    break;
                }
                if reaped == child {
                    let code = if libc::WIFEXITED(status) {
                        libc::WEXITSTATUS(status)
                    } else if libc::WIFSIGNALED(status) {
                        128 + libc::WTERMSIG(status)
                    } else {
                        1
                    };
                    libc::_exit(code);
                }
            }
        }
    }
}
