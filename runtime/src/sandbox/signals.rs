//! Docker's `--sig-proxy`: the signals kiln receives passed on to the sandbox's process 1.
//!
//! A process 1 gets no default signal handlers (the kernel's rule for a pid namespace's init):
//! one that does not handle SIGINT ignores Ctrl-C, and a user would be left with no way to stop
//! what they started from their terminal. So the second SIGINT kiln receives while the process
//! runs kills it (SIGKILL), as `docker compose` does on a second Ctrl-C; the first is passed on
//! as usual, for a process that handles it.

use std::sync::{
    Arc,
    atomic::{AtomicI32, Ordering},
};

/// Passes the signals kiln receives on to the sandbox's pid 1 while it runs. Dropped, it
/// closes the signal stream; its thread then ends by itself, unwaited: a join cost 0.1 ms of
/// every container's end, measured, and the thread holds nothing of the caller's (it only ever
/// signals the pid in `pid`, which the waiter sets to -1 before the drop).
pub(super) struct Forwarder {
    pub(super) pid: Arc<AtomicI32>,
    handle: signal_hook::iterator::Handle,
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
        let mut signals = signal_hook::iterator::Signals::new(which)?;
        let handle = signals.handle();
        let pid = Arc::new(AtomicI32::new(0));
        let target = pid.clone();
        std::thread::spawn(move || {
            let mut interrupts = 0;
            for mut sig in signals.forever() {
                // 0: not spawned yet; wait for it rather than lose the signal.
                let mut p = target.load(Ordering::SeqCst);
                while p == 0 {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                    p = target.load(Ordering::SeqCst);
                }
                if p > 0 && sig == SIGINT {
                    interrupts += 1;
                    if interrupts == 1 {
                        eprintln!("kiln: interrupt passed to the container (again to kill it)");
                    } else {
                        eprintln!("kiln: second interrupt: killing the container");
                        sig = signal_hook::consts::signal::SIGKILL;
                    }
                }
                if p > 0 {
                    // SAFETY: kill(2) with plain integers; `p` is our own child, not yet
                    // reaped (the waiter clears it right after wait returns).
                    unsafe { libc::kill(p, sig) };
                }
            }
        });
        Ok(Forwarder { pid, handle })
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.handle.close();
    }
}
