//! Container networking, docker's default `bridge` network: each container in a network
//! namespace of its own on the `kiln0` bridge, with an address of 10.90.0.0/16, outbound
//! traffic masqueraded, and `-p` ports forwarded from the host (its loopback too).
//!
//! The plumbing (bridge, veth, iptables rules) is netavark's ([`netavark`]); kiln chooses the
//! addresses and host ports and keeps what it chose machine-wide under `/run/kiln/net` (a
//! tmpfs: nothing outlives a reboot), one file per address or port naming the namespace that
//! holds it, so stores side by side never hand out the same one, and an entry whose namespace
//! is gone (a killed kiln) is free again. The namespace is kept by a file in the container's
//! directory ([`netns`]), so a container whose monitor was killed is torn down later from it.

pub mod netavark;
pub mod netns;
pub mod ports;

use std::{
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
};

use ports::Published;

/// A container's network, as `--network` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Mode {
    /// A namespace of its own with loopback only.
    None,
    /// The host's namespace.
    Host,
    /// docker's default: the `bridge` network.
    Bridge,
}

/// Why a container's network could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error(
        "bridge networking needs netavark (Debian's netavark package), which was not found; \
         install it, or run with --network host"
    )]
    NoNetavark,
    #[error("bridge networking needs root: run with --network host or none")]
    Rootless,
    #[error("netavark {verb}: {message}")]
    Backend { verb: String, message: String },
    #[error("{0}")]
    Ports(String),
    #[error("no free address left in {0}")]
    Exhausted(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> NetworkError + '_ {
    move |source| NetworkError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// docker's name of the default network.
pub const BRIDGE: &str = "bridge";
/// The default network's subnet, gateway (the bridge's own address) and prefix length.
const SUBNET: (Ipv4Addr, u8) = (Ipv4Addr::new(10, 90, 0, 0), 16);
const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 90, 0, 1);
/// The bridge interface on the host.
pub const INTERFACE: &str = "kiln0";

/// The default network as netavark takes it.
fn bridge_info() -> netavark::NetworkInfo {
    netavark::NetworkInfo {
        name: "kiln".into(),
        id: crate::digest::Digest::of(b"kiln bridge network")
            .hex()
            .to_string(),
        driver: "bridge".into(),
        network_interface: INTERFACE.into(),
        subnets: vec![netavark::Subnet {
            subnet: format!("{}/{}", SUBNET.0, SUBNET.1),
            gateway: GATEWAY.to_string(),
        }],
        ipv6_enabled: false,
        internal: false,
        dns_enabled: false,
    }
}

/// The id docker shows for the default network (`NetworkID`).
pub fn bridge_id() -> String {
    bridge_info().id
}

/// Where kiln records, machine-wide, the addresses and ports its containers hold.
fn registry() -> PathBuf {
    std::env::var_os("KILN_NET_DIR")
        .filter(|d| !d.is_empty())
        .map_or_else(|| PathBuf::from("/run/kiln/net"), PathBuf::from)
}

/// What a running container holds on the network: kept as `network.json` in its directory
/// (what `inspect`, `ps` and `port` show, and what tears it down).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Attached {
    pub network: String,
    pub ip: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    pub mac: String,
    pub ports: Vec<Published>,
    /// The namespace's file.
    pub netns: PathBuf,
    /// What netavark was given (teardown gives it the same).
    pub request: netavark::Request,
}

/// The file in a container's directory that says what it holds.
const STATE: &str = "network.json";

/// What container directory `dir` holds on the network now, if anything.
pub fn attached(dir: &Path) -> Option<Attached> {
    std::fs::read(dir.join(STATE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
}

/// The registry lock: choosing an address or a port and recording it is one step.
struct Lock(#[allow(dead_code)] std::fs::File);

fn lock(dir: &Path) -> Result<Lock, NetworkError> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let path = dir.join("lock");
    let f = std::fs::File::create(&path).map_err(io_err(&path))?;
    rustix::fs::flock(&f, rustix::fs::FlockOperation::LockExclusive)
        .map_err(|e| io_err(&path)(e.into()))?;
    Ok(Lock(f))
}

/// Whether registry entry `entry` is held: it names a namespace that still exists.
fn held(entry: &Path) -> bool {
    std::fs::read(entry)
        .ok()
        .is_some_and(|owner| netns::exists(Path::new(std::ffi::OsStr::from_bytes(&owner))))
}

use std::os::unix::ffi::OsStrExt;

fn port_entry(dir: &Path, ip: IpAddr, port: u16, proto: &str) -> PathBuf {
    dir.join(format!("port-{proto}-{ip}-{port}"))
}

/// Sets up `ports` and an address on the default bridge for container `id` (its directory
/// `dir`), in a new namespace the container's process then joins ([`Attached::netns`]).
pub fn attach(
    dir: &Path,
    (id, name): (&str, &str),
    ports: &[Published],
) -> Result<Attached, NetworkError> {
    if crate::sandbox::userns::rootless() {
        return Err(NetworkError::Rootless);
    }
    if netavark::binary().is_none() {
        return Err(NetworkError::NoNetavark);
    }
    // What a killed monitor left first.
    detach(dir);
    let reg = registry();
    let netns_path = dir.join("netns");
    let owner = netns_path.as_os_str().as_bytes().to_vec();
    let mut chosen = ports.to_vec();
    // Held through netavark's setup too: netavark 1.4 takes no lock of its own, and a teardown
    // of the network's last container removes the chains a concurrent setup appends to.
    let guard = lock(&reg)?;
    let (ip, entries) = {
        // Entries whose namespace is gone (a kiln killed before it could release them) go.
        for e in std::fs::read_dir(&reg).map_err(io_err(&reg))?.flatten() {
            let n = e.file_name();
            let n = n.as_bytes();
            if (n.starts_with(b"ip-") || n.starts_with(b"port-")) && !held(&e.path()) {
                let _ = std::fs::remove_file(e.path());
            }
        }
        let taken = |ip: IpAddr, port: u16, proto: &str| {
            // The same port on every address conflicts with it on one, and the reverse.
            let any = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
            held(&port_entry(&reg, ip, port, proto))
                || held(&port_entry(&reg, any, port, proto))
                || (ip.is_unspecified() && any_port_held(&reg, port, proto))
        };
        ports::choose_ports(&mut chosen, &taken).map_err(NetworkError::Ports)?;
        let hosts = (1u32 << (32 - SUBNET.1)) - 2;
        let base = u32::from(SUBNET.0);
        let ip = (2..=hosts)
            .map(|k| Ipv4Addr::from(base + k))
            .find(|ip| !held(&reg.join(format!("ip-{ip}"))))
            .ok_or_else(|| NetworkError::Exhausted(format!("{}/{}", SUBNET.0, SUBNET.1)))?;
        let mut entries = vec![reg.join(format!("ip-{ip}"))];
        for p in &chosen {
            for k in 0..p.range {
                entries.push(port_entry(
                    &reg,
                    p.host_ip,
                    p.host_port.saturating_add(k),
                    &p.protocol,
                ));
            }
        }
        for e in &entries {
            std::fs::write(e, &owner).map_err(io_err(e))?;
        }
        // Held from here on: the namespace exists before the lock goes.
        if let Err(e) = netns::create(&netns_path) {
            release(&entries, &owner);
            return Err(io_err(&netns_path)(e));
        }
        (ip, entries)
    };
    let info = bridge_info();
    let request = netavark::Request::new((id, name), &info, ip, &chosen);
    let config = reg.join("netavark");
    match netavark::setup(&netns_path, &config, &request) {
        Ok(iface) => {
            let a = Attached {
                network: BRIDGE.into(),
                ip,
                prefix: SUBNET.1,
                gateway: GATEWAY,
                mac: iface.mac_address,
                ports: chosen,
                netns: netns_path,
                request,
            };
            let path = dir.join(STATE);
            let saved = serde_json::to_vec_pretty(&a)
                .map_err(std::io::Error::other)
                .and_then(|t| std::fs::write(&path, t));
            if let Err(e) = saved {
                drop(guard);
                detach_with(&a, &entries);
                return Err(io_err(&path)(e));
            }
            Ok(a)
        }
        Err(e) => {
            // A half-done setup is undone as far as it went.
            let _ = netavark::teardown(&netns_path, &config, &request);
            netns::remove(&netns_path);
            release(&entries, &owner);
            Err(e)
        }
    }
}

/// Whether any address holds `port`/`proto` (a port on every address conflicts with each).
fn any_port_held(reg: &Path, port: u16, proto: &str) -> bool {
    let suffix = format!("-{port}");
    let prefix = format!("port-{proto}-");
    std::fs::read_dir(reg).is_ok_and(|d| {
        d.flatten().any(|e| {
            let n = e.file_name();
            let n = n.to_string_lossy();
            n.starts_with(&prefix) && n.ends_with(&suffix) && held(&e.path())
        })
    })
}

/// Removes the registry entries among `entries` that `owner` holds.
fn release(entries: &[PathBuf], owner: &[u8]) {
    for e in entries {
        if std::fs::read(e).is_ok_and(|o| o == owner) {
            let _ = std::fs::remove_file(e);
        }
    }
}

fn detach_with(a: &Attached, entries: &[PathBuf]) {
    let config = registry().join("netavark");
    // One netavark call at a time machine-wide (see [`attach`]).
    let _lock = lock(&registry());
    if netns::exists(&a.netns) {
        let _ = netavark::teardown(&a.netns, &config, &a.request);
    }
    netns::remove(&a.netns);
    release(entries, a.netns.as_os_str().as_bytes());
}

/// Tears down what container directory `dir` holds on the network (rules, veth, namespace,
/// address and ports), whether its monitor ended normally or was killed. Nothing held:
/// nothing to do.
pub fn detach(dir: &Path) {
    let netns_path = dir.join("netns");
    if let Some(a) = attached(dir) {
        let reg = registry();
        let mut entries = vec![reg.join(format!("ip-{}", a.ip))];
        for p in &a.ports {
            for k in 0..p.range {
                entries.push(port_entry(
                    &reg,
                    p.host_ip,
                    p.host_port.saturating_add(k),
                    &p.protocol,
                ));
            }
        }
        detach_with(&a, &entries);
    } else {
        netns::remove(&netns_path);
    }
    let _ = std::fs::remove_file(dir.join(STATE));
}

/// The text of `/etc/hosts` for a container on a network: docker's lines, its own address
/// with its hostname.
pub fn hosts_file(hostname: &str, ip: Option<Ipv4Addr>) -> String {
    let mut s = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\n\
         ff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n",
    );
    match ip {
        Some(ip) => s.push_str(&format!("{ip}\t{hostname}\n")),
        None => s.push_str(&format!("127.0.1.1\t{hostname}\n")),
    }
    s
}
