//! A container's network while it runs: `container:NAME`'s namespace joined, or its networks
//! set up (the first with its published ports, then those `network connect` added), or a
//! namespace of its own on no network; its /etc/hosts and resolv.conf; and all of it torn
//! down when it ends.

use std::path::{Path, PathBuf};

use super::{ContainerError, RunOptions, join_connected, network_def, networks};
use crate::{
    network::{self, Attached, Mode},
    oci::ImageConfig,
    sandbox::process::Network,
    store::Store,
};

/// What a container holds on the network while it runs.
pub(super) struct Net {
    /// `container:NAME`: that running container's namespace (by its process 1) and directory.
    shared: Option<(PathBuf, PathBuf)>,
    /// The first network it joined (its ports are published there).
    attached: Option<Attached>,
    /// On no network (each one disconnected): a namespace of its own all the same, kept by its
    /// file, that `network connect` adds networks to while it runs.
    own_netns: Option<PathBuf>,
    /// Rootless, on the default network that could not be had: the host's, as before
    /// rootless networking existed.
    host_instead: bool,
}

impl Net {
    /// Sets up the network of container `id` (its directory `dir`) in network mode `mode`.
    /// On an error nothing is left set up.
    pub(super) fn set_up(
        store: &Store,
        opts: &RunOptions,
        config: &ImageConfig,
        (dir, id): (&Path, &str),
        mode: &Mode,
        warn: &dyn Fn(&str),
    ) -> Result<Net, ContainerError> {
        let mut net = Net {
            shared: None,
            attached: None,
            own_netns: None,
            host_instead: false,
        };
        match mode {
            Mode::Container(n) => net.shared = Some(shared_with(store, n)?),
            Mode::Bridge | Mode::User(_) => {
                let joins = networks::joined(opts, mode);
                match joins.first() {
                    Some(first) => {
                        let def = network_def(store, &first.network)?;
                        let name = store
                            .find_container(id)?
                            .map_or_else(|| id.to_string(), |c| c.name);
                        let ports = published(opts, config)?;
                        // Resolved by its name on a user network, and by its aliases and short
                        // id, as docker's embedded DNS resolves them.
                        let mut aliases = first.aliases.clone();
                        aliases.push(id[..12.min(id.len())].to_string());
                        let endpoint = network::Endpoint {
                            aliases: &aliases,
                            ip: first.ip,
                            mac: opts.mac.as_deref(),
                        };
                        let joined = network::attach(dir, (id, &name), &def, &ports, endpoint)
                            .map_err(ContainerError::from)
                            .and_then(|a| {
                                // Then the networks `network connect` added, each on its
                                // interface.
                                for more in &joins[1..] {
                                    join_connected(store, dir, (id, &name), more)?;
                                }
                                Ok(a)
                            });
                        match joined {
                            Ok(a) => net.attached = Some(a),
                            // Rootless on the default network, nothing published: a machine
                            // whose slirp4netns cannot run still runs containers, on the
                            // host's network, and says so.
                            Err(e)
                                if crate::sandbox::userns::rootless()
                                    && opts.network.is_none()
                                    && ports.is_empty() =>
                            {
                                network::detach(dir);
                                warn(&format!(
                                    "no network of its own ({e}): the container uses the host's"
                                ));
                                net.host_instead = true;
                            }
                            Err(e) => {
                                network::detach(dir);
                                return Err(e);
                            }
                        }
                    }
                    None => {
                        let path = dir.join("netns");
                        network::detach(dir);
                        network::netns::create(&path).map_err(|source| ContainerError::Io {
                            path: path.clone(),
                            source,
                        })?;
                        net.own_netns = Some(path);
                    }
                }
            }
            Mode::None | Mode::Host => {}
        }
        Ok(net)
    }

    /// The sandbox's network for it.
    pub(super) fn sandbox_network(&self, mode: &Mode) -> Network {
        if self.host_instead {
            return Network::Host;
        }
        match (&self.attached, &self.own_netns, &self.shared, mode) {
            (Some(a), ..) => Network::Join(a.netns.clone()),
            (None, Some(own), ..) => Network::Join(own.clone()),
            (None, None, Some((netns, _)), _) => Network::Join(netns.clone()),
            // `--network none`: loopback only.
            (None, None, None, Mode::None | Mode::Bridge | Mode::User(_)) => Network::None,
            (None, None, None, _) => Network::Host,
        }
    }

    /// The container's /etc/hosts and resolv.conf, bound over the image's: those of the
    /// container whose network it shares, or its own.
    pub(super) fn etc_mounts(
        &self,
        dir: &Path,
        opts: &RunOptions,
        hostname: &str,
    ) -> Result<Vec<crate::sandbox::mounts::Mount>, ContainerError> {
        match &self.shared {
            Some((_, other)) => Ok(crate::sandbox::etc::write_container_files(
                dir,
                &std::fs::read_to_string(other.join("hosts")).unwrap_or_default(),
                &std::fs::read_to_string(other.join("resolv.conf")).unwrap_or_default(),
            )?),
            None => etc_files(dir, opts, hostname, self.attached.as_ref()),
        }
    }

    /// Tears down what it set up (nothing for the host's network or another container's).
    pub(super) fn tear_down(&self, dir: &Path) {
        // (Nothing was set up for `host_instead`.)
        if self.attached.is_some() || self.own_netns.is_some() {
            network::detach(dir);
        }
    }
}

/// `container:NAME`: the network namespace of that running container's process 1, and its
/// directory (its /etc files are shared too).
fn shared_with(store: &Store, n: &str) -> Result<(PathBuf, PathBuf), ContainerError> {
    let c = store
        .find_container(n)?
        .ok_or_else(|| ContainerError::Config(format!("no such container: {n}")))?;
    let init = store
        .container_init(&c.id)?
        .filter(|_| c.state().is_live())
        .ok_or_else(|| {
            ContainerError::Config(format!(
                "cannot join network of a non running container: {n}"
            ))
        })?;
    Ok((
        PathBuf::from(format!("/proc/{}/ns/net", init.pid)),
        store.root().join("containers").join(&c.id),
    ))
}

/// The ports to publish: `-p`'s, and with `-P` every port the image EXPOSEs.
fn published(
    opts: &RunOptions,
    config: &ImageConfig,
) -> Result<Vec<network::ports::Published>, ContainerError> {
    let mut ports = opts.publish.clone();
    if opts.publish_all {
        let exposed: Vec<String> = config.config.exposed_ports.keys().cloned().collect();
        ports.extend(network::ports::exposed(&exposed).map_err(ContainerError::Config)?);
    }
    Ok(ports)
}

/// The container's /etc/hosts and /etc/resolv.conf (written in its directory, bound over the
/// image's): docker's lines, its address on a network, `--add-host`, and the name servers of
/// its network or `--dns`.
fn etc_files(
    dir: &std::path::Path,
    opts: &RunOptions,
    hostname: &str,
    attached: Option<&crate::network::Attached>,
) -> Result<Vec<crate::sandbox::mounts::Mount>, ContainerError> {
    let mut hosts = crate::network::hosts_file(hostname, attached.map(|a| a.ip));
    for h in &opts.add_hosts {
        let (name, ip) = h
            .split_once(':')
            .or_else(|| h.split_once('='))
            .unwrap_or((h, ""));
        // The host, as the container reaches it: its network's gateway (on the host's own
        // network, its loopback). Rootless, the gateway is slirp4netns's (10.0.2.2, the host's
        // loopback, which kiln keeps closed with `--disable-host-loopback`) or a bridge in the
        // store's namespace, not the host; one of the host's own addresses is reached through
        // slirp4netns's NAT instead, as rootless podman does.
        let ip = match (ip, attached) {
            ("host-gateway", Some(a)) if a.slirp.is_some() || a.host_netns.is_some() => {
                crate::network::host_address()
                    .map_or_else(|| a.def.gateway.to_string(), |ip| ip.to_string())
            }
            ("host-gateway", Some(a)) => a.def.gateway.to_string(),
            ("host-gateway", None) => "127.0.0.1".to_string(),
            (ip, _) => ip.to_string(),
        };
        hosts.push_str(&format!("{ip}\t{name}\n"));
    }
    let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    // The name servers of every network it is on that resolves names.
    let resolvers: Vec<std::net::Ipv4Addr> = crate::network::attachments(dir)
        .iter()
        .filter_map(crate::network::Attached::name_server)
        .collect();
    let resolv = crate::sandbox::etc::resolv_text(&host, attached.is_some(), &resolvers);
    Ok(crate::sandbox::etc::write_container_files(
        dir,
        &hosts,
        &opts.dns.apply(&resolv),
    )?)
}
