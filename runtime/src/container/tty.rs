//! `kiln run -t`: the container's terminal (made inside it, [`crate::sandbox::pty`]) joined to
//! the user's: the user's terminal in raw mode while the container runs (restored on every way
//! out that runs code: return, error, panic), keystrokes copied in (Ctrl-C is a byte the
//! container's terminal turns into SIGINT for its foreground job), output copied out, and each
//! change of the window's size passed on (the kernel then sends SIGWINCH inside).

use std::{
    io::{Read, Write},
    os::fd::OwnedFd,
};

/// Told a terminal's master once it is made.
pub type Share = Box<dyn FnOnce(&OwnedFd) + Send>;

/// Where a container's terminal is joined to.
pub struct Terminal {
    /// Copied to the terminal (`-i`); `None`: nothing is typed.
    pub input: Option<OwnedFd>,
    /// Gets the terminal's output (docker's one stream with `-t`).
    pub output: Box<dyn Write + Send>,
    /// The user's terminal typed on (`-i`): in raw mode while the container runs.
    pub user: Option<OwnedFd>,
    /// The terminal whose size the container's follows (the one its output goes to).
    pub size: Option<OwnedFd>,
    /// Told the terminal's master once it is made (a monitor hands it to `kiln attach`).
    pub share: Option<Share>,
}

impl std::fmt::Debug for Terminal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Terminal")
            .field("input", &self.input)
            .field("user", &self.user)
            .field("size", &self.size)
            .finish_non_exhaustive()
    }
}

/// The user's terminal in raw mode until dropped (restored as it was).
#[derive(Debug)]
pub struct RawMode {
    fd: OwnedFd,
    saved: rustix::termios::Termios,
}

impl RawMode {
    /// Raw mode on `fd`; `None` when it is no terminal.
    pub fn enter(fd: &OwnedFd) -> Option<RawMode> {
        let fd = fd.try_clone().ok()?;
        let saved = rustix::termios::tcgetattr(&fd).ok()?;
        let mut raw = saved.clone();
        raw.make_raw();
        rustix::termios::tcsetattr(&fd, rustix::termios::OptionalActions::Now, &raw).ok()?;
        Some(RawMode { fd, saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = rustix::termios::tcsetattr(
            &self.fd,
            rustix::termios::OptionalActions::Now,
            &self.saved,
        );
    }
}

/// The user's terminal without echo until dropped (restored as it was): a password typed at a
/// prompt is not shown.
#[derive(Debug)]
pub struct NoEcho {
    fd: OwnedFd,
    saved: rustix::termios::Termios,
}

impl NoEcho {
    /// Echo off on `fd`; `None` when it is no terminal.
    pub fn enter(fd: &OwnedFd) -> Option<NoEcho> {
        let fd = fd.try_clone().ok()?;
        let saved = rustix::termios::tcgetattr(&fd).ok()?;
        let mut quiet = saved.clone();
        quiet.local_modes -= rustix::termios::LocalModes::ECHO;
        rustix::termios::tcsetattr(&fd, rustix::termios::OptionalActions::Now, &quiet).ok()?;
        Some(NoEcho { fd, saved })
    }
}

impl Drop for NoEcho {
    fn drop(&mut self) {
        let _ = rustix::termios::tcsetattr(
            &self.fd,
            rustix::termios::OptionalActions::Now,
            &self.saved,
        );
    }
}

/// Copies the size of `from` (the user's terminal) to `to` (the container's).
fn copy_size(from: &OwnedFd, to: &OwnedFd) {
    if let Ok(size) = rustix::termios::tcgetwinsize(from) {
        let _ = rustix::termios::tcsetwinsize(to, size);
    }
}

/// Joins `master` to `term` until the container's side of the terminal is closed (its
/// processes are gone); returns once all of its output is written.
pub fn relay(master: OwnedFd, term: Terminal) {
    let Terminal {
        input,
        mut output,
        user,
        size,
        share,
    } = term;
    if let Some(share) = share {
        share(&master);
    }
    let _raw = user.as_ref().and_then(RawMode::enter);
    let winch = size.as_ref().and_then(|u| {
        copy_size(u, &master);
        let mut signals =
            signal_hook::iterator::Signals::new([signal_hook::consts::SIGWINCH]).ok()?;
        let handle = signals.handle();
        let (from, to) = (u.try_clone().ok()?, master.try_clone().ok()?);
        let t = std::thread::spawn(move || {
            for _ in signals.forever() {
                copy_size(&from, &to);
            }
        });
        Some((handle, t))
    });
    if let (Some(input), Ok(to)) = (input, master.try_clone()) {
        // Not joined: a read of the user's terminal cannot be interrupted, and the copy ends
        // with kiln (or at the end of the input).
        std::thread::spawn(move || {
            let mut from = std::fs::File::from(input);
            let mut to = std::fs::File::from(to);
            let mut buf = [0u8; 4096];
            while let Ok(n) = from.read(&mut buf) {
                if n == 0 || to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        });
    }
    let mut from = std::fs::File::from(master);
    let mut buf = [0u8; 16384];
    loop {
        match from.read(&mut buf) {
            // EIO: every descriptor of the container's side is closed.
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if output.write_all(&buf[..n]).is_err() {
                    break;
                }
                let _ = output.flush();
            }
        }
    }
    if let Some((handle, t)) = winch {
        handle.close();
        let _ = t.join();
    }
}

/// A container process's stdio, split for its spawn: the three the child gets (none of them
/// with a terminal, which replaces them in the child), and with a terminal the child's end of
/// the socket its master comes back on (for the spec) and kiln's side (for [`serve`]).
pub(crate) struct Split {
    pub stdio: (super::Stdio, super::Stdio, super::Stdio),
    pub child_end: Option<std::sync::Arc<OwnedFd>>,
    pub ours: Option<(OwnedFd, Terminal)>,
}

pub(crate) fn split(io: super::Io) -> Result<Split, super::ContainerError> {
    use super::Stdio;
    match io {
        super::Io::Pipes(i, o, e) => Ok(Split {
            stdio: (i, o, e),
            child_end: None,
            ours: None,
        }),
        super::Io::Terminal(t) => {
            let (ours, theirs) = crate::sandbox::pty::channel().map_err(|e| {
                super::ContainerError::Config(format!("cannot make a terminal socket: {e}"))
            })?;
            Ok(Split {
                stdio: (Stdio::null(), Stdio::null(), Stdio::null()),
                child_end: Some(std::sync::Arc::new(theirs)),
                ours: Some((ours, t)),
            })
        }
    }
}

/// Waits for the terminal's master on `ours` and joins it to `t` until the container's side
/// closes. Nothing comes when the process failed before its terminal was made: the socket
/// closes once the child's end in the spec is dropped.
pub(crate) fn serve(ours: OwnedFd, t: Terminal) {
    if let Ok(master) = crate::sandbox::pty::receive(&ours) {
        relay(master, t);
    }
}
