//! SSH agent forwarding for `RUN --mount=type=ssh` (`kiln build --ssh`): a socket in the
//! sandbox's own directory, owned by the step's user with the mount's mode, whose every
//! connection is relayed to the host's agent socket. The step never sees the host socket's path,
//! owner or permissions, and the relay ends with the step.

use std::{
    os::unix::net::{UnixListener, UnixStream},
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
};

/// A running relay; dropping it stops accepting and removes the socket.
#[derive(Debug)]
pub struct AgentRelay {
    socket: PathBuf,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl AgentRelay {
    /// Listens on `socket` (which must not exist), owned by `uid:gid` with `mode`, and relays
    /// each connection to `upstream`.
    pub fn start(
        socket: &Path,
        upstream: &Path,
        (uid, gid, mode): (u32, u32, u32),
    ) -> std::io::Result<AgentRelay> {
        // Checked once up front, so a wrong --ssh path fails the step with its name rather
        // than as an agent that refuses every request.
        UnixStream::connect(upstream).map_err(|e| {
            std::io::Error::new(e.kind(), format!("ssh agent {}: {e}", upstream.display()))
        })?;
        let listener = UnixListener::bind(socket)?;
        std::os::unix::fs::chown(socket, Some(uid), Some(gid))?;
        std::fs::set_permissions(
            socket,
            std::os::unix::fs::PermissionsExt::from_mode(mode & 0o777),
        )?;
        let stop = Arc::new(AtomicBool::new(false));
        let upstream = upstream.to_path_buf();
        let flag = stop.clone();
        let accept = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(inner) = conn else { continue };
                let Ok(outer) = UnixStream::connect(&upstream) else {
                    continue;
                };
                relay(inner, outer);
            }
        });
        Ok(AgentRelay {
            socket: socket.to_path_buf(),
            stop,
            accept: Some(accept),
        })
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }
}

/// Copies both ways until either side closes (each direction on its own thread).
fn relay(a: UnixStream, b: UnixStream) {
    let (Ok(a2), Ok(b2)) = (a.try_clone(), b.try_clone()) else {
        return;
    };
    let pump = |mut from: UnixStream, mut to: UnixStream| {
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut from, &mut to);
            let _ = to.shutdown(std::net::Shutdown::Write);
        })
    };
    pump(a, b2);
    pump(b, a2);
}

impl Drop for AgentRelay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop, which then sees the flag.
        let _ = UnixStream::connect(&self.socket);
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.socket);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn relays_both_ways_and_stops() {
        let dir = tempfile::tempdir().unwrap();
        let up_path = dir.path().join("agent");
        let upstream = UnixListener::bind(&up_path).unwrap();
        // An "agent" that answers each request with its bytes reversed.
        let agent = std::thread::spawn(move || {
            // The first connection is the relay's own check.
            let _ = upstream.accept().unwrap();
            let (mut c, _) = upstream.accept().unwrap();
            let mut buf = [0u8; 5];
            c.read_exact(&mut buf).unwrap();
            buf.reverse();
            c.write_all(&buf).unwrap();
        });
        let sock = dir.path().join("relay");
        let me = (
            rustix::process::getuid().as_raw(),
            rustix::process::getgid().as_raw(),
        );
        let relay = AgentRelay::start(&sock, &up_path, (me.0, me.1, 0o600)).unwrap();
        let mode = std::fs::metadata(&sock).unwrap();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode.permissions()) & 0o777,
            0o600
        );
        let mut c = UnixStream::connect(relay.socket()).unwrap();
        c.write_all(b"hello").unwrap();
        let mut back = [0u8; 5];
        c.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"olleh");
        agent.join().unwrap();
        drop(relay);
        assert!(!sock.exists(), "the socket is removed when the relay stops");
    }

    #[test]
    fn a_dead_upstream_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let err = AgentRelay::start(
            &dir.path().join("relay"),
            &dir.path().join("nope"),
            (0, 0, 0o600),
        )
        .unwrap_err();
        assert!(err.to_string().contains("ssh agent"), "{err}");
        assert!(err.to_string().contains("nope"), "{err}");
    }
}
