//! Docker's `--sig-proxy`: the signals kiln receives passed on to the sandbox's process 1.
//!
//! A process 1 gets no default signal handlers (the kernel's rule for a pid namespace's init):
//! one that does not handle SIGINT ignores Ctrl-C, and a user would be left with no way to stop
//! what they started from their terminal. So the second SIGINT kiln receives while the process
//! runs kills it (SIGKILL), as `docker compose` does on a second Ctrl-C; the first is passed on
//! as usual, for a process that handles it.
//!
//! The thread that started the process passes them on while it waits ([`Forwarder::serve`]),
//! until the thread that reaps the process says it is gone ([`Stop`]), and through a pidfd: a
//! signal can never reach a process that got the pid after the container's was reaped (with a
//! pid, the forwarder and the reaper raced for it). One thread fewer per container, too.

use std::os::fd::{AsRawFd, BorrowedFd};

/// The signals kiln receives, caught from [`Forwarder::start`] on and held until
/// [`Forwarder::serve`] passes them on.
pub(super) struct Forwarder {
    signals: signal_hook::iterator::Signals,
}

/// Ends [`Forwarder::serve`] when dropped.
pub(super) struct Stop(signal_hook::iterator::Handle);

impl Drop for Stop {
    fn drop(&mut self) {
        self.0.close();
    }
}

impl Forwarder {
    /// `winch`: SIGWINCH is passed on too (not with a terminal, whose size carries it).
    pub(super) fn start(winch: bool) -> std::io::Result<Forwarder> {
        use signal_hook::consts::signal::{
            SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2, SIGWINCH,
        };
        let mut which = vec![SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2];
        if winch {
            which.push(SIGWINCH);
        }
        Ok(Forwarder {
            signals: signal_hook::iterator::Signals::new(which)?,
        })
    }

    /// What ends [`Forwarder::serve`], for the thread that reaps the process.
    pub(super) fn stopper(&self) -> Stop {
        Stop(self.signals.handle())
    }

    /// Passes every signal caught, the ones before this call first, to the process `pidfd`
    /// names, until its [`Stop`] is dropped. Through the pidfd, a signal can never reach
    /// another process that got the pid once this one was reaped.
    pub(super) fn serve(&mut self, pidfd: BorrowedFd<'_>) {
        let mut interrupts = 0;
        for mut sig in self.signals.forever() {
            if sig == signal_hook::consts::signal::SIGINT {
                interrupts += 1;
                if interrupts == 1 {
                    eprintln!("kiln: interrupt passed to the container (again to kill it)");
                } else {
                    eprintln!("kiln: second interrupt: killing the container");
                    sig = signal_hook::consts::signal::SIGKILL;
                }
            }
            // SAFETY: pidfd_send_signal(2) with a descriptor this frame borrows, a plain
            // signal number and no siginfo. A process already gone makes it fail (ESRCH),
            // which is ignored: its end is on its way to the reaping thread.
            unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    pidfd.as_raw_fd(),
                    sig,
                    std::ptr::null::<libc::siginfo_t>(),
                    0,
                );
            }
        }
    }
}
