//! A process named so that it cannot be mistaken for another: its pid plus its start time
//! (`/proc/PID/stat` field 22, clock ticks since boot). A pid alone is reused by the kernel
//! once its process is gone, so `kiln rm -f` could kill whatever process now has it; a pid and
//! start time name one process for the life of the machine. Signals go through a pidfd opened
//! and then checked, so the process signalled is the one checked.

use rustix::process::{Pid, PidfdFlags, Signal};

/// One process: pid and start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessId {
    pub pid: i32,
    pub start: u64,
}

/// The start time of process `pid`, when it exists and has not exited (a zombie waiting for
/// its parent has).
fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state ppid ...`: comm may hold spaces and parentheses, so fields are counted
    // after the last `)`; there, field 3 of the whole line (state) is the 1st, 22 the 20th.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    if matches!(fields.next(), Some("Z" | "X")) {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

impl ProcessId {
    /// This process.
    pub fn current() -> Option<ProcessId> {
        ProcessId::of(i32::try_from(std::process::id()).ok()?)
    }

    /// The process that has `pid` now, if any.
    pub fn of(pid: i32) -> Option<ProcessId> {
        Some(ProcessId {
            pid,
            start: start_time(pid)?,
        })
    }

    /// Whether this very process still runs (not another one that got its pid).
    pub fn alive(&self) -> bool {
        start_time(self.pid) == Some(self.start)
    }

    /// Sends `signal` to this process if it still runs; false when it does not.
    pub fn signal(&self, signal: Signal) -> bool {
        let Some(pid) = Pid::from_raw(self.pid) else {
            return false;
        };
        // The pidfd first, then the check: if the process checked is the one the pidfd holds,
        // the signal cannot reach a newer process with the same pid.
        let Ok(fd) = rustix::process::pidfd_open(pid, PidfdFlags::empty()) else {
            return false;
        };
        self.alive() && rustix::process::pidfd_send_signal(&fd, signal).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reused_pid_is_another_process() {
        let me = ProcessId::current().unwrap();
        assert!(me.alive());
        let other = ProcessId {
            start: me.start + 1,
            ..me
        };
        assert!(!other.alive(), "same pid, other start time");
        assert!(!other.signal(Signal::KILL), "nothing is signalled");
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let id = ProcessId::of(i32::try_from(child.id()).unwrap()).unwrap();
        assert!(id.signal(Signal::KILL));
        assert!(!child.wait().unwrap().success());
    }
}
