//! How the sandbox's process is made (`sandbox::spawn`: a clone sharing kiln's memory until its
//! exec), in a test binary of its own: it changes process-wide settings (signal handlers, the
//! transparent huge page flag) that the spawns of other tests running at once would race.
#![allow(clippy::unwrap_used)] // a test fails by panicking

mod common;
use common::Root;

/// The bits of a signal set line of /proc/PID/status (`SigIgn:\t0000000000001000`).
fn signal_set(status: &str, field: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
        .unwrap_or_else(|| panic!("no {field} in:\n{status}"))
}

extern "C" fn ignore_usr1(_: libc::c_int) {}

/// The process is made sharing kiln's memory until its exec (`sandbox::spawn`), yet it starts
/// as a forked one did: nothing blocked, kiln's handlers gone, SIGPIPE (which kiln ignores) at
/// its default and what else kiln ignores still ignored. And kiln is left as it was: its
/// handlers, the calling thread's mask and its own transparent huge page setting, which the
/// child turns back on for the container in the memory they share.
#[test]
fn the_process_starts_clean_and_leaves_kiln_as_it_was() {
    let Some(root) = Root::new("the_process_starts_clean_and_leaves_kiln_as_it_was") else {
        return;
    };
    let bit = |sig: libc::c_int| 1u64 << (sig - 1);
    // SAFETY: integer arguments; a handler that does nothing; sets this test thread's mask
    // (the sandbox's thread inherits it). Undone at the end.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
        libc::signal(libc::SIGUSR1, ignore_usr1 as *const () as usize);
        libc::signal(libc::SIGHUP, libc::SIG_IGN);
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGUSR2);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    let ours = std::fs::read_to_string("/proc/thread-self/status").unwrap();
    let (code, out) = root.sh("exec cat /proc/self/status", |_| {});
    assert_eq!(code, 0, "{out}");
    assert_eq!(signal_set(&out, "SigBlk:"), 0, "nothing blocked:\n{out}");
    assert_eq!(signal_set(&out, "SigCgt:"), 0, "no handler:\n{out}");
    let ignored = signal_set(&out, "SigIgn:");
    assert_eq!(
        ignored,
        signal_set(&ours, "SigIgn:") & !bit(libc::SIGPIPE),
        "kiln's ignored signals but SIGPIPE:\n{out}"
    );
    assert_ne!(ignored & bit(libc::SIGHUP), 0);
    // kiln as it was.
    // SAFETY: queries only, into values this frame owns; then the test's changes undone.
    unsafe {
        assert_eq!(
            libc::prctl(libc::PR_GET_THP_DISABLE, 0, 0, 0, 0),
            1,
            "THP still off"
        );
        let mut now: libc::sigaction = std::mem::zeroed();
        libc::sigaction(libc::SIGUSR1, std::ptr::null(), &mut now);
        assert_eq!(
            now.sa_sigaction, ignore_usr1 as *const () as usize,
            "kiln's handler kept"
        );
        let mut mask: libc::sigset_t = std::mem::zeroed();
        libc::pthread_sigmask(libc::SIG_SETMASK, std::ptr::null(), &mut mask);
        assert_eq!(
            libc::sigismember(&mask, libc::SIGUSR2),
            1,
            "the thread's mask kept"
        );
        assert_eq!(libc::sigismember(&mask, libc::SIGINT), 0, "and no more");
        libc::pthread_sigmask(libc::SIG_UNBLOCK, &mask, std::ptr::null_mut());
        libc::signal(libc::SIGUSR1, libc::SIG_DFL);
        libc::signal(libc::SIGHUP, libc::SIG_DFL);
    }
}
