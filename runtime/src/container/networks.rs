//! `kiln network connect` and `disconnect`: a container's networks changed after it was
//! created. The change is kept in its options (the networks it joins at each start) and, while
//! it runs, made in its network namespace at once, as docker does.

use super::{Connected, ContainerError, RunOptions};
use crate::{network, store::Store};

/// What `network connect` asks for the container on the network.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// `--alias`.
    pub aliases: Vec<String>,
    /// `--ip`.
    pub ip: Option<std::net::Ipv4Addr>,
}

/// The container `what` names, its directory and its options.
fn open(
    store: &Store,
    what: &str,
) -> Result<(crate::store::Container, std::path::PathBuf, RunOptions), ContainerError> {
    let c = store
        .find_container(what)?
        .ok_or_else(|| ContainerError::Config(format!("no such container: {what}")))?;
    let dir = store.root().join("containers").join(&c.id);
    let opts = super::kept_options(store, &c.id).ok_or_else(|| {
        ContainerError::Config(format!(
            "container {what} keeps no options (it was started with --rm)"
        ))
    })?;
    Ok((c, dir, opts))
}

/// The networks a container with network mode `mode` (as [`super::network_mode`] resolved
/// it) joins when it starts: those `network connect`/`disconnect` left, else the one
/// `--network` names.
pub fn joined(opts: &RunOptions, mode: &network::Mode) -> Vec<Connected> {
    if let Some(list) = &opts.networks {
        return list.clone();
    }
    let name = match mode {
        network::Mode::Bridge => network::BRIDGE.to_string(),
        network::Mode::User(n) => n.clone(),
        _ => return Vec::new(),
    };
    vec![Connected {
        network: name,
        aliases: opts.network_aliases.clone(),
        ip: opts.ip,
    }]
}

/// docker's `Networks` of `ps`: the networks a container is (or would be) on, comma-separated.
pub fn shown(opts: &RunOptions) -> String {
    use network::Mode;
    match super::network_mode(opts) {
        Ok(Mode::Host) => "host".into(),
        Ok(Mode::None) => "none".into(),
        Ok(Mode::Container(n)) => format!("container:{n}"),
        Ok(mode) => joined(opts, &mode)
            .into_iter()
            .map(|j| j.network)
            .collect::<Vec<_>>()
            .join(","),
        Err(_) => String::new(),
    }
}

/// The networks a container's options put it on, refused for the modes docker refuses
/// `network connect`/`disconnect` on.
fn changeable(opts: &RunOptions) -> Result<Vec<Connected>, ContainerError> {
    use network::Mode;
    let mode = super::network_mode(opts)?;
    match mode {
        Mode::Bridge | Mode::User(_) => Ok(joined(opts, &mode)),
        Mode::Host | Mode::Container(_) => Err(ContainerError::Config(
            "container sharing network namespace with another container or host cannot be \
             connected to any other network"
                .into(),
        )),
        Mode::None => Err(ContainerError::Config(
            "container cannot be connected to multiple networks with one of the networks in \
             private (none) mode"
                .into(),
        )),
    }
}

fn host_or_none(name: &str) -> Result<(), ContainerError> {
    if matches!(name, "host" | "none") {
        return Err(ContainerError::Config(
            "container cannot be disconnected from host network or connected to host network"
                .into(),
        ));
    }
    Ok(())
}

/// The index in `list` of the network with id `id`.
fn position(store: &Store, list: &[Connected], id: &str) -> Option<usize> {
    list.iter().position(|m| {
        super::network_def(store, &m.network)
            .map(|d| d.id == id)
            .unwrap_or(false)
    })
}

/// `kiln network connect NETWORK CONTAINER`.
pub fn connect(
    store: &Store,
    network_name: &str,
    what: &str,
    asked: &ConnectOptions,
) -> Result<(), ContainerError> {
    host_or_none(network_name)?;
    let def = super::network_def(store, network_name)?;
    let (c, dir, mut opts) = open(store, what)?;
    let mut list = changeable(&opts)?;
    if position(store, &list, &def.id).is_some() {
        return Err(ContainerError::Config(format!(
            "endpoint with name {} already exists in network {}",
            c.name, def.name
        )));
    }
    let more = Connected {
        network: def.name.clone(),
        aliases: asked.aliases.clone(),
        ip: asked.ip,
    };
    list.push(more.clone());
    let before = opts.clone();
    opts.networks = Some(list);
    super::keep_options(&dir, &opts, &c.id, &opts.volumes)?;
    if c.state().is_live() && network::netns::exists(&dir.join("netns")) {
        if let Err(e) = super::join_connected(store, &dir, (&c.id, &c.name), &more) {
            super::keep_options(&dir, &before, &c.id, &before.volumes)?;
            return Err(e);
        }
        if def.dns {
            add_resolver(&dir, def.gateway)?;
        }
    }
    Ok(())
}

/// `kiln network disconnect NETWORK CONTAINER`. A container taken off every network keeps a
/// namespace of its own with loopback only, as docker's.
pub fn disconnect(store: &Store, network_name: &str, what: &str) -> Result<(), ContainerError> {
    host_or_none(network_name)?;
    let def = super::network_def(store, network_name)?;
    let (c, dir, mut opts) = open(store, what)?;
    let mut list = changeable(&opts)?;
    let Some(k) = position(store, &list, &def.id) else {
        return Err(ContainerError::Config(format!(
            "container {} is not connected to network {}",
            c.id, def.name
        )));
    };
    list.remove(k);
    opts.networks = Some(list);
    super::keep_options(&dir, &opts, &c.id, &opts.volumes)?;
    network::disconnect(&dir, &def.id)?;
    Ok(())
}

/// Puts the name server of a network just joined into a running container's resolv.conf
/// (the file bound over its own, rewritten in place so the container sees it), first: names of
/// the new network resolve, and the rest are forwarded to the host's servers, as before.
fn add_resolver(dir: &std::path::Path, server: std::net::Ipv4Addr) -> Result<(), ContainerError> {
    let path = dir.join("resolv.conf");
    let io = |source| ContainerError::Io {
        path: path.clone(),
        source,
    };
    let text = std::fs::read_to_string(&path).map_err(io)?;
    let line = format!("nameserver {server}");
    if text.lines().any(|l| l.trim() == line) {
        return Ok(());
    }
    let servers: Vec<&str> = text
        .lines()
        .filter(|l| l.split_whitespace().next() == Some("nameserver"))
        .collect();
    let others: Vec<&str> = text
        .lines()
        .filter(|l| l.split_whitespace().next() != Some("nameserver"))
        .collect();
    let mut out = String::new();
    for l in [&line.as_str()].into_iter().chain(&servers).chain(&others) {
        out.push_str(l);
        out.push('\n');
    }
    // Truncated and written, not replaced: the bind mount holds the file's inode.
    std::fs::write(&path, out).map_err(io)
}
