//! Rootless networking through slirp4netns (Debian's `slirp4netns`, what rootless podman
//! uses): a user-mode TCP/IP stack that gives the container's namespace a `tap0` interface
//! (10.0.2.100/24, gateway 10.0.2.2, name server 10.0.2.3) and carries its traffic through
//! ordinary sockets of the user's, so no privilege is needed. Published ports are sockets that
//! slirp4netns opens on the host (`add_hostfwd` on its API socket) and forwards inside.
//!
//! slirp4netns lives as long as the process that started it holds the write end of its exit
//! pipe (`--exit-fd`): the container's monitor, or a foreground `kiln run`. A killed monitor
//! takes it along; nothing is left on the host to tear down.

use std::{
    io::{Read, Write},
    net::Ipv4Addr,
    os::fd::{AsRawFd, OwnedFd},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use super::{NetworkError, ports::Published};

/// The container's address, its gateway (the host as slirp4netns shows it) and its name
/// server (slirp4netns forwards to the host's), on slirp4netns's default network.
pub const ADDRESS: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 100);
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
pub const NAMESERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 3);
pub const PREFIX: u8 = 24;

/// Where slirp4netns is: `$KILN_SLIRP4NETNS`, else on `PATH`.
pub fn binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("KILN_SLIRP4NETNS").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("slirp4netns"))
            .find(|p| p.is_file())
    })
}

/// Whether rootless networking can be had: slirp4netns installed and the TUN device open to
/// this user (Debian's udev makes `/dev/net/tun` 0666; a container host without udev may not).
pub fn usable() -> bool {
    binary().is_some()
        && rustix::fs::access(
            "/dev/net/tun",
            rustix::fs::Access::READ_OK | rustix::fs::Access::WRITE_OK,
        )
        .is_ok()
}

/// A running slirp4netns: it ends when this is dropped (its exit pipe closes, and it is
/// waited for), or when the process holding this ends.
#[derive(Debug)]
pub struct Slirp {
    /// The write end of `--exit-fd`.
    exit: Option<OwnedFd>,
    child: std::process::Child,
    /// Its pid and start time ([`crate::procid::ProcessId`]), for a teardown by another
    /// process.
    pub id: (i32, u64),
    api: PathBuf,
}

impl Slirp {
    /// The API socket's path, for [`forward`].
    pub fn api(&self) -> &Path {
        &self.api
    }
}

impl Drop for Slirp {
    fn drop(&mut self) {
        // Its exit pipe closed: slirp4netns ends at once; reaped here, not left a zombie.
        drop(self.exit.take());
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.api);
    }
}

/// Ends the slirp4netns another process started (`kiln rm -f` of a container whose monitor
/// was killed: it normally ends with that monitor already).
pub fn stop((pid, start): (i32, u64)) {
    let id = crate::procid::ProcessId { pid, start };
    id.signal(rustix::process::Signal::TERM);
}

fn backend(message: impl std::fmt::Display) -> NetworkError {
    NetworkError::Backend {
        verb: "slirp4netns".into(),
        message: message.to_string(),
    }
}

/// Where slirp4netns's API socket goes: `dir/slirp.sock`, or in the temporary directory
/// when that path is too long for a socket (107 bytes), named by the user and `tag`.
pub fn api_path(dir: &Path, tag: &str) -> PathBuf {
    let api = dir.join("slirp.sock");
    if api.as_os_str().len() <= 100 {
        return api;
    }
    std::env::temp_dir().join(format!(
        "kiln-slirp-{}-{}.sock",
        rustix::process::getuid().as_raw(),
        &tag[..12.min(tag.len())]
    ))
}

/// Starts slirp4netns on the namespace bound at `netns` (made in kiln's own user namespace),
/// its API socket at `api` and what it says at `log`; returns once `tap0` is configured. It
/// ends with the returned [`Slirp`].
pub fn start(netns: &Path, api: &Path, log: &Path) -> Result<Slirp, NetworkError> {
    let (exit_r, exit_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| backend(format!("pipe: {e}")))?;
    let (child, id) = spawn(netns, api, log, exit_r, false)?;
    Ok(Slirp {
        exit: Some(exit_w),
        child,
        id,
        api: api.to_path_buf(),
    })
}

/// [`start`] for a slirp4netns no kiln process holds: in a session of its own, it ends when
/// `exit` (a pipe's read end) reaches end of file. Its pid and start time.
pub fn start_detached(
    netns: &Path,
    api: &Path,
    log: &Path,
    exit: OwnedFd,
) -> Result<(i32, u64), NetworkError> {
    // Not waited for: it outlives this process (a zombie until then if it ends first).
    spawn(netns, api, log, exit, true).map(|(_, id)| id)
}

fn spawn(
    netns: &Path,
    api: &Path,
    log: &Path,
    exit_r: OwnedFd,
    detached: bool,
) -> Result<(std::process::Child, (i32, u64)), NetworkError> {
    let bin = binary().ok_or_else(|| {
        backend("rootless networking needs slirp4netns (Debian's slirp4netns package)")
    })?;
    let _ = std::fs::remove_file(api);
    // Both pipes are close-on-exec on kiln's side; the child gets its ends at 3 and 4.
    let (ready_r, ready_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| backend(format!("pipe: {e}")))?;
    let mut cmd = Command::new(&bin);
    cmd.args([
        "--configure",
        "--mtu=65520",
        "--disable-host-loopback",
        "--netns-type=path",
        "--ready-fd=3",
        "--exit-fd=4",
    ])
    .arg("--api-socket")
    .arg(api)
    .arg(netns)
    .arg("tap0")
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(std::fs::File::create(log).map_err(|e| backend(format!("{}: {e}", log.display())))?);
    if detached {
        // Outliving this process, it keeps no directory of the caller's busy.
        cmd.current_dir("/");
    }
    let (ready_raw, exit_raw) = (ready_w.as_raw_fd(), exit_r.as_raw_fd());
    // SAFETY: between fork and exec only setsid(2), fcntl(2), dup2(2) and close(2) run, which
    // are async-signal-safe; the descriptors are open in the parent (owned above) and so in
    // the child. Each is first copied above 9, so that putting one at 3 never overwrites the
    // other when it is 3 or 4 already, and the copies at 3 and 4 carry no close-on-exec flag.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
            if detached && libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Both copied up before either is placed: placing one must not overwrite the other.
            let high = [
                libc::fcntl(ready_raw, libc::F_DUPFD, 10),
                libc::fcntl(exit_raw, libc::F_DUPFD, 10),
            ];
            for (fd, to) in high.into_iter().zip([3, 4]) {
                if fd < 0 || libc::dup2(fd, to) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                libc::close(fd);
            }
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| backend(format!("{}: {e}", bin.display())))?;
    drop(ready_w);
    drop(exit_r);
    // "1" on the ready pipe once configured; end of file if it failed first.
    let mut ready = std::fs::File::from(ready_r);
    let mut byte = [0u8; 1];
    let configured = matches!(ready.read(&mut byte), Ok(1));
    if !configured {
        let _ = child.kill();
        let _ = child.wait();
        let said = std::fs::read_to_string(log).unwrap_or_default();
        return Err(backend(format!(
            "it ended before the network was up: {}",
            said.trim()
        )));
    }
    let pid = i32::try_from(child.id()).unwrap_or(0);
    let start = crate::procid::ProcessId::of(pid).map_or(0, |p| p.start);
    Ok((child, (pid, start)))
}

/// One request to slirp4netns's API: its answer.
fn ask(api: &Path, request: &serde_json::Value) -> Result<serde_json::Value, NetworkError> {
    let mut s = std::os::unix::net::UnixStream::connect(api)
        .map_err(|e| backend(format!("{}: {e}", api.display())))?;
    s.write_all(request.to_string().as_bytes())
        .and_then(|()| s.shutdown(std::net::Shutdown::Write))
        .map_err(|e| backend(format!("{}: {e}", api.display())))?;
    let mut reply = String::new();
    s.read_to_string(&mut reply)
        .map_err(|e| backend(format!("{}: {e}", api.display())))?;
    serde_json::from_str(&reply).map_err(|_| backend(format!("unreadable answer {reply:?}")))
}

/// Removes the forwards with these ids (what [`forward`] returned); gone ones are no error.
pub fn unforward(api: &Path, ids: &[u64]) {
    for id in ids {
        let request = serde_json::json!({
            "execute": "remove_hostfwd",
            "arguments": { "id": id }
        });
        let _ = ask(api, &request);
    }
}

/// Forwards host port(s) of `p` to the container through slirp4netns's API; a port that
/// cannot be bound on the host is docker's "port is already allocated". The forwards' ids, for
/// [`unforward`].
pub fn forward(api: &Path, p: &Published) -> Result<Vec<u64>, NetworkError> {
    let mut ids = Vec::new();
    for k in 0..p.range {
        let host_port = p.host_port.saturating_add(k);
        let request = serde_json::json!({
            "execute": "add_hostfwd",
            "arguments": {
                "proto": p.protocol,
                "host_addr": p.host_ip.to_string(),
                "host_port": host_port,
                "guest_addr": ADDRESS.to_string(),
                "guest_port": p.container_port.saturating_add(k),
            }
        });
        let v = match ask(api, &request) {
            Ok(v) => v,
            Err(e) => {
                unforward(api, &ids);
                return Err(e);
            }
        };
        if v.get("error").is_some() {
            unforward(api, &ids);
            return Err(NetworkError::Ports(format!(
                "Bind for {}:{host_port} failed: port is already allocated",
                p.host_ip
            )));
        }
        ids.extend(v.pointer("/return/id").and_then(serde_json::Value::as_u64));
    }
    Ok(ids)
}
