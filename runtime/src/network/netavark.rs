//! netavark, podman's network backend (Debian's `netavark` package), driven through its JSON
//! interface: `netavark setup NETNS` creates the bridge when it is missing, a veth pair into
//! the namespace with the address kiln chose, the NAT (masquerade) rules and the port
//! forwarding (iptables DNAT, loopback included); `teardown` undoes exactly that, and removes
//! the bridge with its last container. kiln chooses addresses and ports itself, as podman does.

use std::{
    collections::BTreeMap,
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use serde::{Deserialize, Serialize};

use super::{NetworkError, ports::Published};

/// Where netavark is looked for: `$KILN_NETAVARK`, podman's places, then `PATH`.
pub fn binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("KILN_NETAVARK").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let known = [
        "/usr/lib/podman/netavark",
        "/usr/libexec/podman/netavark",
        "/usr/local/libexec/podman/netavark",
        "/usr/local/lib/podman/netavark",
    ];
    known
        .iter()
        .map(PathBuf::from)
        .chain(
            std::env::var_os("PATH")
                .map(|p| {
                    std::env::split_paths(&p)
                        .map(|d| d.join("netavark"))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default(),
        )
        .find(|p| p.is_file())
}

/// A network as netavark takes it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NetworkInfo {
    pub name: String,
    pub id: String,
    pub driver: String,
    pub network_interface: String,
    pub subnets: Vec<Subnet>,
    pub ipv6_enabled: bool,
    pub internal: bool,
    pub dns_enabled: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Subnet {
    pub subnet: String,
    pub gateway: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct PerNetwork {
    static_ips: Vec<String>,
    interface_name: String,
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    aliases: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    static_mac: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct PortMapping {
    host_ip: String,
    container_port: u16,
    host_port: u16,
    range: u16,
    protocol: String,
}

/// What `setup` and `teardown` read: one container on one network (a container on several
/// networks is set up one network at a time, each on an interface of its own). Empty for a
/// network netavark does not make (rootless, [`super::slirp`]).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Request {
    container_id: String,
    container_name: String,
    port_mappings: Vec<PortMapping>,
    networks: BTreeMap<String, PerNetwork>,
    network_info: BTreeMap<String, NetworkInfo>,
}

impl Request {
    pub fn new(
        (id, name): (&str, &str),
        network: &NetworkInfo,
        (ip, mac): (std::net::Ipv4Addr, Option<&str>),
        ports: &[Published],
        (aliases, interface): (&[String], &str),
    ) -> Request {
        Request {
            container_id: id.to_string(),
            container_name: name.to_string(),
            port_mappings: ports
                .iter()
                .map(|p| PortMapping {
                    // netavark's "every address" is the empty string.
                    host_ip: if p.host_ip.is_unspecified() {
                        String::new()
                    } else {
                        p.host_ip.to_string()
                    },
                    container_port: p.container_port,
                    host_port: p.host_port,
                    range: p.range,
                    protocol: p.protocol.clone(),
                })
                .collect(),
            networks: BTreeMap::from([(
                network.name.clone(),
                PerNetwork {
                    static_ips: vec![ip.to_string()],
                    interface_name: interface.into(),
                    aliases: aliases.to_vec(),
                    static_mac: mac.map(str::to_string),
                },
            )]),
            network_info: BTreeMap::from([(network.name.clone(), network.clone())]),
        }
    }
}

impl Request {
    /// The container's interface this request sets up (`eth0`, `eth1`, ...).
    pub fn interface(&self) -> &str {
        self.networks
            .values()
            .next()
            .map_or("", |n| n.interface_name.as_str())
    }

    /// The names the container answers to on the network (its aliases).
    pub fn aliases(&self) -> &[String] {
        self.networks.values().next().map_or(&[], |n| &n.aliases)
    }
}

/// What `setup` reports of the container's interface on a network.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Interface {
    pub mac_address: String,
}

#[derive(Debug, Clone, Deserialize)]
struct Status {
    #[serde(default)]
    interfaces: BTreeMap<String, Interface>,
}

/// Runs netavark's `verb` on container namespace `netns`. With `host`, netavark runs in that
/// namespace instead of the host's (rootless kiln's bridges are in a namespace of the store's).
fn call(
    verb: &str,
    netns: &Path,
    config: &Path,
    request: &Request,
    host: Option<&Path>,
) -> Result<Vec<u8>, NetworkError> {
    let bin = binary().ok_or(NetworkError::NoNetavark)?;
    let input = serde_json::to_vec(request).map_err(|e| NetworkError::Backend {
        verb: verb.into(),
        message: e.to_string(),
    })?;
    let mut cmd = Command::new(&bin);
    cmd.arg("--config")
        .arg(config)
        .arg(verb)
        .arg(netns)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let host_ns = host
        .map(std::fs::File::open)
        .transpose()
        .map_err(|e| NetworkError::Backend {
            verb: verb.into(),
            message: format!("{}: {e}", host.unwrap_or(Path::new("")).display()),
        })?;
    if let Some(f) = &host_ns {
        let fd = std::os::fd::AsRawFd::as_raw_fd(f);
        // SAFETY: setns(2) between fork and exec is async-signal-safe; `fd` is open in the
        // parent (held by `host_ns` until spawn returns) and so in the child. Only the child's
        // network namespace changes.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
                if libc::setns(fd, libc::CLONE_NEWNET) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let mut child = cmd.spawn().map_err(|e| NetworkError::Backend {
        verb: verb.into(),
        message: format!("{}: {e}", bin.display()),
    })?;
    if let Some(mut i) = child.stdin.take() {
        let _ = i.write_all(&input);
    }
    let out = child
        .wait_with_output()
        .map_err(|e| NetworkError::Backend {
            verb: verb.into(),
            message: e.to_string(),
        })?;
    if !out.status.success() {
        // netavark reports as {"error": "..."} on stdout or as text on stderr.
        let said = serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&out.stderr).trim().to_string());
        return Err(NetworkError::Backend {
            verb: verb.into(),
            message: said,
        });
    }
    Ok(out.stdout)
}

/// Sets the container's network up in `netns`; its interface's MAC address. `host`: the
/// namespace netavark works in, when not the host's.
pub fn setup(
    netns: &Path,
    config: &Path,
    request: &Request,
    host: Option<&Path>,
) -> Result<Interface, NetworkError> {
    let out = call("setup", netns, config, request, host)?;
    let status: BTreeMap<String, Status> =
        serde_json::from_slice(&out).map_err(|e| NetworkError::Backend {
            verb: "setup".into(),
            message: format!("unreadable answer: {e}"),
        })?;
    Ok(status
        .into_values()
        .next()
        .and_then(|s| s.interfaces.into_values().next())
        .unwrap_or_default())
}

/// Undoes [`setup`] (rules, veth, the bridge with its last container).
pub fn teardown(
    netns: &Path,
    config: &Path,
    request: &Request,
    host: Option<&Path>,
) -> Result<(), NetworkError> {
    call("teardown", netns, config, request, host).map(drop)
}
