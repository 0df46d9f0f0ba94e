//! Rootless kiln's shared namespaces: one user namespace and one mount namespace per store,
//! held by a "pause" process that does nothing but keep them, which every rootless kiln
//! process of that store joins (podman keeps one the same way). Sharing them is what lets
//! containers of two `kiln run`s meet on one rootless user network: the bridge's network
//! namespace and every container's are owned by the same user namespace, so one netavark can
//! wire them together, and the files that keep namespaces (bind mounts) are seen by every kiln
//! process, as they are on the host for root.
//!
//! The pause process is named in `ROOT/pause.pid` (`PID START`, [`ProcessId`]), made under the
//! lock `ROOT/pause.lock` so two kiln processes starting at once make one. It ends by itself
//! once that file no longer names it (the store was removed, or a newer pause replaced it), and
//! holds the write end of a pipe at its fd 3 for its whole life: a process that must not
//! outlive it (the rootless network's slirp4netns) opens the read end through
//! `/proc/PID/fd/3` and sees end of file when it dies.

use std::{
    io,
    os::fd::{AsFd, AsRawFd, OwnedFd},
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
};

use crate::procid::ProcessId;

/// The file naming the store's pause process.
fn pid_file(home: &Path) -> PathBuf {
    home.join("pause.pid")
}

/// The descriptor of the pause's life pipe (its write end), in the pause process.
const LIFE_FD: i32 = 3;

/// How often the pause checks that its file still names it.
const CHECK_EVERY_SECS: u32 = 30;

fn parse(text: &str) -> Option<ProcessId> {
    let mut f = text.split_whitespace();
    Some(ProcessId {
        pid: f.next()?.parse().ok()?,
        start: f.next()?.parse().ok()?,
    })
}

/// The store's pause process, when it runs.
pub fn live(home: &Path) -> Option<ProcessId> {
    parse(&std::fs::read_to_string(pid_file(home)).ok()?).filter(ProcessId::alive)
}

/// The store's pause process when this process is in its user namespace (the namespaces a
/// rootless network is made in must be the ones every kiln process of the store shares).
pub fn joined(home: &Path) -> Option<ProcessId> {
    let p = live(home)?;
    let ino = |path: &str| {
        std::fs::metadata(path).ok().map(|m| {
            use std::os::unix::fs::MetadataExt;
            (m.dev(), m.ino())
        })
    };
    let theirs = ino(&format!("/proc/{}/ns/user", p.pid))?;
    (ino("/proc/self/ns/user")? == theirs && p.alive()).then_some(p)
}

/// The lock held while the pause is looked for and made. Creates the store directory (0700)
/// when missing.
pub fn lock(home: &Path) -> io::Result<std::fs::File> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(home)?;
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(home.join("pause.lock"))?;
    rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive)?;
    Ok(f)
}

/// Joins the user and mount namespaces of pause process `p`. Must be called while the process
/// is single-threaded (the kernel refuses setns(2) of a user namespace otherwise). The working
/// directory is kept (setns(2) of a mount namespace moves it to the namespace's root).
///
/// On an error after the user namespace was joined, the process is left in a mount namespace
/// of its own in it (unshared), a state as consistent as a namespace never shared.
pub fn join(p: ProcessId) -> io::Result<()> {
    let open = |ns: &str| std::fs::File::open(format!("/proc/{}/ns/{ns}", p.pid));
    let (user, mnt) = (open("user")?, open("mnt")?);
    let cwd = std::env::current_dir().ok();
    let cwd_fd = std::fs::File::open(".").ok();
    // The files were opened from the process checked; checked again now that they are open,
    // so they cannot belong to a newer process that took the pid.
    if !p.alive() {
        return Err(io::Error::other("the pause process ended"));
    }
    rustix::thread::move_into_link_name_space(
        user.as_fd(),
        Some(rustix::thread::LinkNameSpaceType::User),
    )?;
    let mnt_joined = rustix::thread::move_into_link_name_space(
        mnt.as_fd(),
        Some(rustix::thread::LinkNameSpaceType::Mount),
    );
    if let Err(e) = mnt_joined {
        // SAFETY: NEWNS on a single-threaded process; the fd table is not touched.
        unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNS) }?;
        return Err(e.into());
    }
    // The same path in the shared namespace (a copy of the host's, receiving its mounts);
    // else the directory itself, reached through the descriptor opened before.
    let back = cwd.map(std::env::set_current_dir);
    if !matches!(back, Some(Ok(()))) {
        if let Some(f) = cwd_fd {
            rustix::process::fchdir(&f)?;
        }
    }
    Ok(())
}

/// Starts the pause process of `home` in the current user and mount namespaces (just made by
/// this process, which must be single-threaded) and records it. The pause shares nothing with
/// kiln but those: its descriptors are closed (so it holds no pipe a caller waits on, and not
/// the lock), it has a session of its own, and its working directory is `/`.
pub fn spawn(home: &Path) -> io::Result<ProcessId> {
    let file = pid_file(home);
    let (life_r, life_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    // Allocated before the fork: the child only makes system calls.
    let file_c = std::ffi::CString::new(file.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::other("a store path with a NUL byte"))?;
    // SAFETY: the process is single-threaded (kiln has only parsed its arguments), so the
    // child is a whole copy whose locks (the allocator's) no other thread held at the fork; the
    // child runs only `pause_main`, which never returns.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        pause_main(life_w.as_raw_fd(), &file_c);
    }
    drop(life_w);
    drop(life_r);
    let p = ProcessId::of(pid)
        .ok_or_else(|| io::Error::other("the pause process ended as it started"))?;
    let tmp = home.join("pause.pid.tmp");
    std::fs::write(&tmp, format!("{} {}\n", p.pid, p.start))?;
    std::fs::rename(&tmp, &file)?;
    Ok(p)
}

/// The pause process: keeps the namespaces it is in until its file no longer names it. It
/// becomes a fresh `kiln-pause FILE` ([`serve`]) so that `ps` shows what it is and it holds none
/// of kiln's memory; where kiln's binary cannot be run again (replaced since), it waits as it is.
fn pause_main(life: i32, file: &std::ffi::CStr) -> ! {
    // SAFETY: system calls on descriptors and memory this process owns (the file name is its
    // own copy); it ends with execv(2) or _exit(2), so no destructor or atexit handler of the
    // copied kiln runs twice.
    unsafe {
        libc::setsid();
        // Its life pipe moved up out of the way, every other descriptor closed, the standard
        // ones on /dev/null, the pipe put at LIFE_FD.
        let high = libc::fcntl(life, libc::F_DUPFD, 10);
        if high < 0 {
            libc::_exit(1);
        }
        libc::syscall(libc::SYS_close_range, 0u32, (high - 1) as u32, 0u32);
        libc::syscall(libc::SYS_close_range, (high + 1) as u32, u32::MAX, 0u32);
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null != 0 || libc::dup2(0, 1) < 0 || libc::dup2(0, 2) < 0 {
            libc::_exit(1);
        }
        if libc::dup2(high, LIFE_FD) < 0 {
            libc::_exit(1);
        }
        libc::close(high);
        libc::chdir(c"/".as_ptr());
        let argv = [c"kiln-pause".as_ptr(), file.as_ptr(), std::ptr::null()];
        libc::execv(c"/proc/self/exe".as_ptr(), argv.as_ptr());
        libc::prctl(libc::PR_SET_NAME, c"kiln-pause".as_ptr(), 0, 0, 0);
    }
    serve(Path::new(std::ffi::OsStr::from_bytes(file.to_bytes())))
}

/// What `kiln-pause FILE` does (kiln's `main` calls it when started under that name): waits,
/// checking every [`CHECK_EVERY_SECS`] that `FILE` still names it, and ends when not.
pub fn serve(file: &Path) -> ! {
    for s in [libc::SIGINT, libc::SIGHUP, libc::SIGPIPE, libc::SIGQUIT] {
        // SAFETY: setting the disposition of a signal to ignored; no handler runs.
        unsafe {
            libc::signal(s, libc::SIG_IGN);
        }
    }
    let me = std::process::id() as i32;
    loop {
        std::thread::sleep(std::time::Duration::from_secs(CHECK_EVERY_SECS.into()));
        let named = std::fs::read(file).is_ok_and(|t| names(&t, me));
        if !named {
            std::process::exit(0);
        }
    }
}

/// Whether a pause file's text names pid `me` (its first word).
fn names(text: &[u8], me: i32) -> bool {
    let first = text
        .split(|b| b.is_ascii_whitespace())
        .next()
        .unwrap_or_default();
    first == me.to_string().as_bytes()
}

/// A read end of the pause's life pipe: at end of file once the pause has ended.
pub fn life(p: ProcessId) -> io::Result<OwnedFd> {
    let path = format!("/proc/{}/fd/{LIFE_FD}", p.pid);
    let f = std::fs::File::open(path)?;
    if !p.alive() {
        return Err(io::Error::other("the pause process ended"));
    }
    Ok(f.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pause_file_names_one_process() {
        assert_eq!(
            parse("12 345\n"),
            Some(ProcessId {
                pid: 12,
                start: 345
            })
        );
        assert_eq!(parse("12"), None);
        assert_eq!(parse("x 1"), None);
        assert!(names(b"12 345\n", 12));
        assert!(!names(b"123 345\n", 12));
        assert!(!names(b"", 12));
    }
}
