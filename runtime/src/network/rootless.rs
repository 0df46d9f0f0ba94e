//! Rootless user networks, as rootless podman makes them: their bridges live in one network
//! namespace per store (`ROOT/net/netns`), made in the store's shared user namespace
//! ([`crate::sandbox::pause`]) and carried out to the host by one slirp4netns. netavark runs
//! inside it, as it runs in the host's namespace for root: it makes each network's bridge there
//! and a veth pair into each container's namespace, with that namespace's own NAT and port
//! rules, and starts aardvark-dns there on each network's gateway. A published port is a socket
//! slirp4netns opens on the host, forwarded to the same port of the namespace's `tap0` address,
//! where netavark's rule sends it on to the container.
//!
//! The namespace and its slirp4netns live as long as the store's pause process (slirp4netns
//! watches the pause's life pipe), not just while a container uses them: the next container
//! needs no new slirp4netns.

use std::path::{Path, PathBuf};

use super::{NetworkError, io_err, netns, slirp};
use crate::procid::ProcessId;

/// Where a rootless store keeps its network state: the registry of addresses and ports, the
/// namespace and its slirp4netns. The store's own directory, since the namespace is the
/// store's (`dir` is a container's directory, `ROOT/containers/ID`).
pub fn registry_of(dir: &Path) -> PathBuf {
    dir.parent()
        .and_then(Path::parent)
        .unwrap_or(Path::new("."))
        .join("net")
}

/// The namespace's slirp4netns, as recorded for the next kiln process.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct State {
    pid: i32,
    start: u64,
    api: PathBuf,
}

const STATE: &str = "slirp.json";

impl State {
    /// The record in registry `reg`, if any.
    fn read(reg: &Path) -> Option<State> {
        serde_json::from_slice(&std::fs::read(reg.join(STATE)).ok()?).ok()
    }

    /// The slirp4netns it names, as one process (pid and start time).
    fn process(&self) -> ProcessId {
        ProcessId {
            pid: self.pid,
            start: self.start,
        }
    }
}

/// The network namespace rootless bridges are in, and slirp4netns's API socket (for port
/// forwards): made and connected when missing. The caller holds the registry lock of `reg`.
pub fn ensure(reg: &Path) -> Result<(PathBuf, PathBuf), NetworkError> {
    if !slirp::usable() {
        return Err(NetworkError::NoSlirp);
    }
    let home = reg.parent().unwrap_or(Path::new("."));
    let pause = crate::sandbox::pause::joined(home).ok_or(NetworkError::Rootless)?;
    let ns = reg.join("netns");
    let state_file = reg.join(STATE);
    if let Some(s) = State::read(reg) {
        if netns::exists(&ns) && s.process().alive() {
            return Ok((ns, s.api));
        }
        // A namespace whose slirp4netns ended has no way out: both made again.
        slirp::stop((s.pid, s.start));
    }
    netns::remove(&ns);
    netns::create(&ns).map_err(io_err(&ns))?;
    let life = crate::sandbox::pause::life(pause).map_err(io_err(home))?;
    let api = slirp::api_path(reg, "netns");
    let (pid, start) = match slirp::start_detached(&ns, &api, &reg.join("slirp.log"), life) {
        Ok(id) => id,
        Err(e) => {
            netns::remove(&ns);
            return Err(e);
        }
    };
    let state = State {
        pid,
        start,
        api: api.clone(),
    };
    let bytes = serde_json::to_vec(&state).map_err(std::io::Error::other);
    bytes
        .and_then(|b| std::fs::write(&state_file, b))
        .map_err(io_err(&state_file))?;
    Ok((ns, api))
}

/// slirp4netns's API socket of the store's namespace, when it runs.
pub fn api(reg: &Path) -> Option<PathBuf> {
    State::read(reg)
        .filter(|s| s.process().alive())
        .map(|s| s.api)
}
