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
pub mod rootless;
pub mod slirp;

use std::{
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
};

use ports::Published;

/// A container's network, as `--network` names it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Mode {
    /// A namespace of its own with loopback only.
    None,
    /// The host's namespace.
    Host,
    /// docker's default: the `bridge` network.
    Bridge,
    /// A user network (`kiln network create`), by name.
    User(String),
    /// Another running container's network namespace (`container:NAME`), its /etc/hosts and
    /// resolv.conf too, as docker shares them.
    Container(String),
}

/// A network a container joins: the default bridge or a user network.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Def {
    /// docker's name (`bridge`, or the user network's).
    pub name: String,
    pub id: String,
    pub subnet: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    /// The bridge interface on the host.
    pub interface: String,
    /// No route out (`--internal`).
    pub internal: bool,
    /// Containers resolve each other by name (user networks, through aardvark-dns).
    pub dns: bool,
}

impl Def {
    /// docker's default `bridge` network (no name resolution, as docker's).
    pub fn bridge() -> Def {
        Def {
            name: BRIDGE.into(),
            id: bridge_id(),
            subnet: SUBNET.0,
            prefix: SUBNET.1,
            gateway: GATEWAY,
            interface: INTERFACE.into(),
            internal: false,
            dns: false,
        }
    }

    /// The default network of rootless kiln: slirp4netns's, in the container's own namespace.
    pub fn user_mode() -> Def {
        Def {
            name: BRIDGE.into(),
            id: bridge_id(),
            subnet: Ipv4Addr::new(10, 0, 2, 0),
            prefix: slirp::PREFIX,
            gateway: slirp::GATEWAY,
            interface: "tap0".into(),
            internal: false,
            dns: false,
        }
    }

    /// A user network as the store keeps it.
    pub fn user(n: &crate::store::NetworkInfo) -> Result<Def, NetworkError> {
        let bad =
            || NetworkError::Invalid(format!("network {}: bad subnet {:?}", n.name, n.subnet));
        let (addr, prefix) = n.subnet.split_once('/').ok_or_else(bad)?;
        Ok(Def {
            name: n.name.clone(),
            id: n.id.clone(),
            subnet: addr.parse().map_err(|_| bad())?,
            prefix: prefix
                .parse()
                .ok()
                .filter(|p| (8..=30).contains(p))
                .ok_or_else(bad)?,
            gateway: n.gateway.parse().map_err(|_| bad())?,
            interface: format!("kiln-{}", &n.id[..10.min(n.id.len())]),
            internal: n.internal,
            dns: true,
        })
    }

    /// The addresses containers get: the subnet's, but its first (the network), the gateway
    /// and the broadcast address.
    fn hosts(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        let base = u32::from(self.subnet) & (u32::MAX << (32 - self.prefix));
        let count = (1u32 << (32 - self.prefix)) - 1;
        (1..count)
            .map(move |k| Ipv4Addr::from(base + k))
            .filter(move |ip| *ip != self.gateway)
    }
}

/// Why a container's network could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error(
        "bridge networking needs netavark (Debian's netavark package), which was not found; \
         install it, or run with --network host"
    )]
    NoNetavark,
    #[error(
        "rootless user networks need the store's shared namespaces (kept by its kiln-pause \
         process, named in pause.pid in the store), which this kiln could not make or join"
    )]
    Rootless,
    #[error(
        "rootless networking needs slirp4netns (Debian's slirp4netns package) and /dev/net/tun \
         open to this user (mode 0666, as udev makes it); install it, or run with --network host"
    )]
    NoSlirp,
    #[error("netavark {verb}: {message}")]
    Backend { verb: String, message: String },
    #[error("{0}")]
    Ports(String),
    #[error("{0}")]
    Invalid(String),
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

/// A network as netavark takes it. Its netavark name is unique per network (its id), so two
/// stores' networks of one name never share aardvark-dns's records.
fn netavark_info(def: &Def) -> netavark::NetworkInfo {
    netavark::NetworkInfo {
        name: if def.name == BRIDGE {
            "kiln".into()
        } else {
            format!("kiln-{}", &def.id[..12.min(def.id.len())])
        },
        id: def.id.clone(),
        driver: "bridge".into(),
        network_interface: def.interface.clone(),
        subnets: vec![netavark::Subnet {
            subnet: format!("{}/{}", def.subnet, def.prefix),
            gateway: def.gateway.to_string(),
        }],
        ipv6_enabled: false,
        internal: def.internal,
        dns_enabled: def.dns,
    }
}

/// The id docker shows for the default network (`NetworkID`).
pub fn bridge_id() -> String {
    crate::digest::Digest::of(b"kiln bridge network")
        .hex()
        .to_string()
}

/// Where kiln records the addresses and ports the containers of container directory `dir`
/// hold: machine-wide as root; rootless, the store's own (its networks are in a namespace of
/// the store's, [`rootless`]).
fn registry(dir: &Path) -> PathBuf {
    if crate::sandbox::userns::rootless() {
        return rootless::registry_of(dir);
    }
    std::env::var_os("KILN_NET_DIR")
        .filter(|d| !d.is_empty())
        .map_or_else(|| PathBuf::from("/run/kiln/net"), PathBuf::from)
}

/// What a running container holds on one network. A container's networks are kept as a list
/// in `network.json` in its directory (what `inspect`, `ps` and `port` show, and what tears
/// them down), the one it started on first.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Attached {
    /// The network, as it was joined.
    pub def: Def,
    pub ip: Ipv4Addr,
    pub mac: String,
    pub ports: Vec<Published>,
    /// The namespace's file.
    pub netns: PathBuf,
    /// What netavark was given (teardown gives it the same); empty for slirp4netns.
    pub request: netavark::Request,
    /// Rootless: the slirp4netns carrying the network (pid and start time).
    #[serde(default)]
    pub slirp: Option<(i32, u64)>,
    /// Rootless: slirp4netns itself, held by the process that started it; it ends when the
    /// last clone of this goes.
    #[serde(skip)]
    pub user_mode: Option<std::sync::Arc<slirp::Slirp>>,
    /// Rootless, on a user network: the namespace its bridge is in, where netavark ran
    /// ([`rootless`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_netns: Option<PathBuf>,
    /// Rootless, on a user network: its ports' forwards in that namespace's slirp4netns.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub forwards: Vec<u64>,
}

impl Attached {
    /// The name server this network gives the container: a user network's resolver on its
    /// gateway, or slirp4netns's forwarder.
    pub fn name_server(&self) -> Option<Ipv4Addr> {
        if self.slirp.is_some() {
            Some(slirp::NAMESERVER)
        } else {
            self.def.dns.then_some(self.def.gateway)
        }
    }
}

/// The registry entries an attachment holds: its address and its host ports.
fn entries(reg: &Path, ip: Ipv4Addr, ports: &[Published]) -> Vec<PathBuf> {
    let mut entries = vec![reg.join(format!("ip-{ip}"))];
    for p in ports {
        for k in 0..p.range {
            entries.push(port_entry(
                reg,
                p.host_ip,
                p.host_port.saturating_add(k),
                &p.protocol,
            ));
        }
    }
    entries
}

/// The file in a container's directory that says what it holds.
const STATE: &str = "network.json";

/// Every network container directory `dir` is on now, the first it joined first.
pub fn attachments(dir: &Path) -> Vec<Attached> {
    let Ok(bytes) = std::fs::read(dir.join(STATE)) else {
        return Vec::new();
    };
    // A store written before containers could join several networks kept one object.
    serde_json::from_slice::<Vec<Attached>>(&bytes)
        .or_else(|_| serde_json::from_slice::<Attached>(&bytes).map(|a| vec![a]))
        .unwrap_or_default()
}

/// The network container directory `dir` started on (the one its ports are published on).
pub fn attached(dir: &Path) -> Option<Attached> {
    attachments(dir).into_iter().next()
}

/// Writes the list whole, then renames it over the old one: a reader never sees half.
fn save(dir: &Path, list: &[Attached]) -> Result<(), NetworkError> {
    let path = dir.join(STATE);
    let tmp = dir.join(format!("{STATE}.tmp"));
    serde_json::to_vec_pretty(list)
        .map_err(std::io::Error::other)
        .and_then(|t| std::fs::write(&tmp, t))
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(io_err(&path))
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

/// What a container asks of one network: its names there (aliases), an address and a MAC
/// address of its choosing.
#[derive(Debug, Clone, Copy, Default)]
pub struct Endpoint<'a> {
    pub aliases: &'a [String],
    pub ip: Option<Ipv4Addr>,
    pub mac: Option<&'a str>,
}

fn check_backend() -> Result<(), NetworkError> {
    if netavark::binary().is_none() {
        return Err(NetworkError::NoNetavark);
    }
    Ok(())
}

/// Sets up `ports` and an address on network `def` for container `id` (its directory `dir`),
/// in a new namespace the container's process then joins ([`Attached::netns`]).
pub fn attach(
    dir: &Path,
    ids: (&str, &str),
    def: &Def,
    ports: &[Published],
    endpoint: Endpoint<'_>,
) -> Result<Attached, NetworkError> {
    if crate::sandbox::userns::rootless() && def.name == BRIDGE {
        return attach_user_mode(dir, ids.0, ports);
    }
    check_backend()?;
    // What a killed monitor left first.
    detach(dir);
    join(dir, ids, def, ports, endpoint, "eth0")
}

/// Rootless: a namespace of the container's own, networked by a slirp4netns that this
/// process holds, its ports forwarded by slirp4netns's sockets on the host.
fn attach_user_mode(dir: &Path, id: &str, ports: &[Published]) -> Result<Attached, NetworkError> {
    if !slirp::usable() {
        return Err(NetworkError::NoSlirp);
    }
    detach(dir);
    let netns_path = dir.join("netns");
    netns::create(&netns_path).map_err(io_err(&netns_path))?;
    let made = (|| {
        let mut chosen = ports.to_vec();
        // The kernel says at bind time whether a port is free: no registry to consult.
        ports::choose_ports(&mut chosen, &|_, _, _| false).map_err(NetworkError::Ports)?;
        let api = slirp::api_path(dir, id);
        let s = slirp::start(&netns_path, &api, &dir.join("slirp.log"))?;
        // (The forwards end with this slirp4netns.)
        for p in &chosen {
            slirp::forward(s.api(), p)?;
        }
        let a = Attached {
            def: Def::user_mode(),
            ip: slirp::ADDRESS,
            mac: String::new(),
            ports: chosen,
            netns: netns_path.clone(),
            request: netavark::Request::default(),
            slirp: Some(s.id),
            user_mode: Some(std::sync::Arc::new(s)),
            host_netns: None,
            forwards: Vec::new(),
        };
        save(dir, std::slice::from_ref(&a))?;
        Ok(a)
    })();
    if made.is_err() {
        netns::remove(&netns_path);
    }
    made
}

/// `network connect`: puts a running container (its directory `dir`, its namespace made by
/// [`attach`]) on one more network, on the next free interface (`eth1`, ...).
pub fn connect(
    dir: &Path,
    ids: (&str, &str),
    def: &Def,
    endpoint: Endpoint<'_>,
) -> Result<Attached, NetworkError> {
    check_backend()?;
    let list = attachments(dir);
    if !netns::exists(&dir.join("netns")) {
        return Err(NetworkError::Invalid(format!(
            "container {} has no network namespace of its own",
            ids.1
        )));
    }
    if list.iter().any(|a| a.def.id == def.id) {
        return Err(NetworkError::Invalid(format!(
            "endpoint with name {} already exists in network {}",
            ids.1, def.name
        )));
    }
    let interface = (0..)
        .map(|k| format!("eth{k}"))
        .find(|n| !list.iter().any(|a| a.request.interface() == n))
        .unwrap_or_default();
    join(dir, ids, def, &[], endpoint, &interface)
}

/// Joins network `def` on `interface`: the address and ports chosen and recorded, the
/// namespace made if this is the first, netavark's setup, the state file extended.
fn join(
    dir: &Path,
    (id, name): (&str, &str),
    def: &Def,
    ports: &[Published],
    endpoint: Endpoint<'_>,
    interface: &str,
) -> Result<Attached, NetworkError> {
    let reg = registry(dir);
    let rootless = crate::sandbox::userns::rootless();
    let netns_path = dir.join("netns");
    let owner = netns_path.as_os_str().as_bytes().to_vec();
    let first = !netns::exists(&netns_path);
    // (Rootless, the bridges are in a namespace of the store's: the host's routes are not in
    // their way.)
    if !rootless {
        check_subnet_free(def)?;
    }
    let mut chosen = ports.to_vec();
    // Held through netavark's setup too: netavark 1.4 takes no lock of its own, and a teardown
    // of the network's last container removes the chains a concurrent setup appends to.
    let guard = lock(&reg)?;
    // Rootless: the namespace the bridges are in, and its slirp4netns's API.
    let outside = if rootless {
        Some(rootless::ensure(&reg)?)
    } else {
        None
    };
    let (ip, entries) = reserve(&reg, def, endpoint.ip, &mut chosen, &owner)?;
    // Held from here on: the namespace exists before the lock goes.
    if first {
        if let Err(e) = netns::create(&netns_path) {
            release(&entries, &owner);
            return Err(io_err(&netns_path)(e));
        }
    }
    let info = netavark_info(def);
    // Rootless, a port arrives at the same port of the store's namespace, whatever host
    // address slirp4netns took it on.
    let inner: Vec<Published> = chosen
        .iter()
        .map(|p| Published {
            host_ip: if rootless {
                IpAddr::V4(Ipv4Addr::UNSPECIFIED)
            } else {
                p.host_ip
            },
            ..p.clone()
        })
        .collect();
    let request = netavark::Request::new(
        (id, name),
        &info,
        (ip, endpoint.mac),
        &inner,
        (endpoint.aliases, interface),
    );
    let config = reg.join("netavark");
    std::fs::create_dir_all(&config).map_err(io_err(&config))?;
    let host_netns = outside.as_ref().map(|(ns, _)| ns.as_path());
    let undo = |request: &netavark::Request| {
        // A half-done setup is undone as far as it went.
        let _ = netavark::teardown(&netns_path, &config, request, host_netns);
        if first {
            netns::remove(&netns_path);
        }
        release(&entries, &owner);
    };
    let set_up = netavark::setup(&netns_path, &config, &request, host_netns).and_then(|iface| {
        let forwards = match &outside {
            Some((_, api)) => forward_into_store_netns(api, &chosen)?,
            None => Vec::new(),
        };
        Ok((iface, forwards))
    });
    match set_up {
        Ok((iface, forwards)) => {
            let a = Attached {
                def: def.clone(),
                ip,
                mac: iface.mac_address,
                ports: chosen,
                netns: netns_path.clone(),
                request,
                slirp: None,
                user_mode: None,
                host_netns: host_netns.map(Path::to_path_buf),
                forwards,
            };
            let mut list = if first { Vec::new() } else { attachments(dir) };
            list.push(a.clone());
            if let Err(e) = save(dir, &list) {
                if let Some((_, api)) = &outside {
                    slirp::unforward(api, &a.forwards);
                }
                undo(&a.request);
                drop(guard);
                return Err(e);
            }
            Ok(a)
        }
        Err(e) => {
            undo(&request);
            Err(e)
        }
    }
}

/// Chooses the host ports of `chosen` and the address on network `def` (`wanted`, if free)
/// and records them as `owner`'s in registry `reg` (the caller holds its lock): the address and
/// the entries written. Entries whose namespace is gone (a kiln killed before it could release
/// them) are removed first.
fn reserve(
    reg: &Path,
    def: &Def,
    wanted: Option<Ipv4Addr>,
    chosen: &mut [Published],
    owner: &[u8],
) -> Result<(Ipv4Addr, Vec<PathBuf>), NetworkError> {
    let rootless = crate::sandbox::userns::rootless();
    for e in std::fs::read_dir(reg).map_err(io_err(reg))?.flatten() {
        let n = e.file_name();
        let n = n.as_bytes();
        if (n.starts_with(b"ip-") || n.starts_with(b"port-")) && !held(&e.path()) {
            let _ = std::fs::remove_file(e.path());
        }
    }
    let taken = |ip: IpAddr, port: u16, proto: &str| {
        // The same port on every address conflicts with it on one, and the reverse.
        // Rootless, one port on any two addresses does: both arrive at that port of the
        // store's namespace.
        let any = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
        held(&port_entry(reg, ip, port, proto))
            || held(&port_entry(reg, any, port, proto))
            || ((ip.is_unspecified() || rootless) && any_port_held(reg, port, proto))
    };
    ports::choose_ports(chosen, &taken).map_err(NetworkError::Ports)?;
    let ip = match wanted {
        Some(ip) if !def.hosts().any(|h| h == ip) => {
            return Err(NetworkError::Invalid(format!(
                "no configured subnet or ip-range contain the IP address {ip}"
            )));
        }
        Some(ip) if held(&reg.join(format!("ip-{ip}"))) => {
            return Err(NetworkError::Invalid(format!(
                "Address already in use: {ip}"
            )));
        }
        Some(ip) => ip,
        None => def
            .hosts()
            .find(|ip| !held(&reg.join(format!("ip-{ip}"))))
            .ok_or_else(|| NetworkError::Exhausted(format!("{}/{}", def.subnet, def.prefix)))?,
    };
    let entries = entries(reg, ip, chosen);
    for e in &entries {
        std::fs::write(e, owner).map_err(io_err(e))?;
    }
    Ok((ip, entries))
}

/// Rootless: each published port forwarded by the store's slirp4netns (API `api`) from the
/// host to the same port of the store's namespace; the forwards' ids. None is left on an error.
fn forward_into_store_netns(api: &Path, ports: &[Published]) -> Result<Vec<u64>, NetworkError> {
    let mut forwards = Vec::new();
    for p in ports {
        let into = Published {
            container_port: p.host_port,
            ..p.clone()
        };
        match slirp::forward(api, &into) {
            Ok(ids) => forwards.extend(ids),
            Err(e) => {
                slirp::unforward(api, &forwards);
                return Err(e);
            }
        }
    }
    Ok(forwards)
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

/// netavark's teardown of one attachment and its registry entries released (the caller holds
/// the registry lock).
fn teardown_one(a: &Attached, reg: &Path) {
    if let Some(id) = a.slirp {
        slirp::stop(id);
        return;
    }
    if !a.forwards.is_empty() {
        if let Some(api) = rootless::api(reg) {
            slirp::unforward(&api, &a.forwards);
        }
    }
    // Rootless: netavark works in the store's namespace, if it still exists (else its bridge
    // and rules are gone with it).
    let host = a.host_netns.as_deref();
    if netns::exists(&a.netns) && host.is_none_or(netns::exists) {
        let _ = netavark::teardown(&a.netns, &reg.join("netavark"), &a.request, host);
    }
    release(
        &entries(reg, a.ip, &a.ports),
        a.netns.as_os_str().as_bytes(),
    );
}

/// `network disconnect`: takes a running container (its directory `dir`) off the network with
/// id `network_id`; whether it was on it. Its namespace stays, with its other networks.
pub fn disconnect(dir: &Path, network_id: &str) -> Result<bool, NetworkError> {
    let reg = registry(dir);
    let _lock = lock(&reg)?;
    let mut list = attachments(dir);
    let Some(k) = list.iter().position(|a| a.def.id == network_id) else {
        return Ok(false);
    };
    let gone = list.remove(k);
    save(dir, &list)?;
    teardown_one(&gone, &reg);
    Ok(true)
}

/// Tears down what container directory `dir` holds on its networks (rules, veths, namespace,
/// addresses and ports), whether its monitor ended normally or was killed. Nothing held:
/// nothing to do.
pub fn detach(dir: &Path) {
    let netns_path = dir.join("netns");
    let list = attachments(dir);
    if !list.is_empty() {
        let reg = registry(dir);
        // One netavark call at a time machine-wide (see [`join`]).
        let _lock = lock(&reg);
        for a in list.iter().rev() {
            teardown_one(a, &reg);
        }
    }
    netns::remove(&netns_path);
    let _ = std::fs::remove_file(dir.join(STATE));
}

/// The text of `/etc/hosts` for a container on a network: docker's lines, its own address
/// with its hostname.
/// One of the host's own IPv4 addresses, not a loopback one: the first of an interface that is
/// up, in the kernel's order. What `host-gateway` is for a rootless container, which reaches
/// the host's addresses through slirp4netns but not its loopback.
pub fn host_address() -> Option<Ipv4Addr> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs(3) fills `list` with a linked list it allocates, released below with
    // freeifaddrs(3) on every path; nothing of it is kept after that.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return None;
    }
    let mut found = None;
    let mut cur = list;
    while !cur.is_null() {
        // SAFETY: `cur` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        let up = ifa.ifa_flags & libc::IFF_UP as libc::c_uint != 0;
        let loopback = ifa.ifa_flags & libc::IFF_LOOPBACK as libc::c_uint != 0;
        if ifa.ifa_addr.is_null() || !up || loopback {
            continue;
        }
        // SAFETY: ifa_addr is non-null and points to a sockaddr of its family; AF_INET ones
        // are sockaddr_in, read only after the family is checked.
        let family = unsafe { (*ifa.ifa_addr).sa_family };
        if i32::from(family) != libc::AF_INET {
            continue;
        }
        // SAFETY: as above: an AF_INET address is a sockaddr_in.
        let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
        let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
        if !ip.is_loopback() {
            found = Some(ip);
            break;
        }
    }
    // SAFETY: `list` is the list getifaddrs allocated, freed once.
    unsafe { libc::freeifaddrs(list) };
    found
}

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

/// docker's network names: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`; `bridge`, `host` and `none` are
/// docker's own.
pub fn valid_name(name: &str) -> bool {
    let mut b = name.bytes();
    b.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && b.all(|c| c.is_ascii_alphanumeric() || b"_.-".contains(&c))
}

/// The host's IPv4 routes (destination, prefix length), from `/proc/net/route`.
fn host_routes() -> Vec<(u32, u8)> {
    routes_of(&std::fs::read_to_string("/proc/net/route").unwrap_or_default())
        .into_iter()
        .map(|(_, r)| r)
        .collect()
}

/// The routes of a `/proc/net/route` text: (interface, (destination, prefix length)), the
/// default route left out.
fn routes_of(text: &str) -> Vec<(String, (u32, u8))> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let dest = u32::from_str_radix(f.get(1)?, 16).ok()?.swap_bytes();
            let mask = u32::from_str_radix(f.get(7)?, 16).ok()?.swap_bytes();
            (mask != 0).then_some((f[0].to_string(), (dest, mask.count_ones() as u8)))
        })
        .collect()
}

/// Refuses to set up network `def` while its subnet is routed on the host through another
/// interface than its bridge: another store's network (kiln or podman) took the same subnet,
/// and traffic would go to one of them at random.
fn check_subnet_free(def: &Def) -> Result<(), NetworkError> {
    let text = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    let ours = (u32::from(def.subnet), def.prefix);
    match routes_of(&text)
        .into_iter()
        // A broader route (a 10.0.0.0/8 of the host's) loses to the bridge's own, more
        // specific one: only one as specific or more takes the subnet's traffic.
        .find(|(iface, r)| *iface != def.interface && r.1 >= ours.1 && overlaps(*r, ours))
    {
        Some((iface, (dest, prefix))) => Err(NetworkError::Invalid(format!(
            "network {}: its subnet {}/{} is already routed through {iface} ({}/{prefix}), \
             another network on this machine (another store's?); remove one, or give one \
             another --subnet",
            def.name,
            def.subnet,
            def.prefix,
            Ipv4Addr::from(dest)
        ))),
        None => Ok(()),
    }
}

fn overlaps((a, pa): (u32, u8), (b, pb): (u32, u8)) -> bool {
    let p = pa.min(pb);
    let mask = if p == 0 { 0 } else { u32::MAX << (32 - p) };
    a & mask == b & mask
}

/// `kiln network create`: a user network, on `subnet` (`10.91.3.0/24`) or the first /24 of
/// 10.91.0.0/16 that no other network of the store and no route of the host uses; its gateway
/// the subnet's first address unless given.
pub fn create(
    store: &crate::store::Store,
    name: &str,
    (subnet, gateway): (Option<&str>, Option<&str>),
    internal: bool,
    labels: &std::collections::BTreeMap<String, String>,
) -> Result<crate::store::NetworkInfo, NetworkError> {
    let invalid = NetworkError::Invalid;
    if !valid_name(name) {
        return Err(invalid(format!(
            "invalid network name {name:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
        )));
    }
    if matches!(name, "bridge" | "host" | "none") {
        return Err(invalid(format!("network with name {name} already exists")));
    }
    let existing: Vec<(u32, u8)> = store
        .networks()
        .map_err(|e| invalid(e.to_string()))?
        .iter()
        .filter_map(|n| Def::user(n).ok())
        .map(|d| (u32::from(d.subnet), d.prefix))
        .chain(std::iter::once((u32::from(SUBNET.0), SUBNET.1)))
        .collect();
    let (net, prefix) = match subnet {
        Some(s) => {
            let (a, p) = s
                .split_once('/')
                .ok_or_else(|| invalid(format!("invalid subnet {s:?}: expected ADDRESS/PREFIX")))?;
            let a: Ipv4Addr = a
                .parse()
                .map_err(|_| invalid(format!("invalid subnet {s:?}: IPv4 only")))?;
            let p: u8 = p
                .parse()
                .ok()
                .filter(|p| (8..=30).contains(p))
                .ok_or_else(|| invalid(format!("invalid subnet {s:?}: prefix 8 to 30")))?;
            let net = u32::from(a) & (u32::MAX << (32 - p));
            if existing.iter().any(|e| overlaps(*e, (net, p))) {
                return Err(invalid(format!("subnet {s} overlaps another network's")));
            }
            (net, p)
        }
        None => {
            let routes = host_routes();
            (0u32..256)
                .map(|k| (u32::from(Ipv4Addr::new(10, 91, k as u8, 0)), 24u8))
                .find(|c| {
                    !existing.iter().any(|e| overlaps(*e, *c))
                        && !routes.iter().any(|r| r.1 > 0 && overlaps(*r, *c))
                })
                .ok_or_else(|| {
                    invalid("no free subnet left in 10.91.0.0/16: give --subnet".into())
                })?
        }
    };
    let gateway: Ipv4Addr = match gateway {
        Some(g) => g
            .parse()
            .map_err(|_| invalid(format!("invalid gateway {g:?}")))?,
        None => Ipv4Addr::from(net + 1),
    };
    if !overlaps((u32::from(gateway), 32), (net, prefix)) {
        return Err(invalid(format!(
            "gateway {gateway} is not in subnet {}/{prefix}",
            Ipv4Addr::from(net)
        )));
    }
    let n = crate::store::NetworkInfo {
        name: name.to_string(),
        id: crate::container::new_id(),
        subnet: format!("{}/{prefix}", Ipv4Addr::from(net)),
        gateway: gateway.to_string(),
        internal,
        labels: labels.clone(),
        created: 0,
    };
    store.add_network(&n).map_err(|e| invalid(e.to_string()))?;
    store
        .find_network(name)
        .ok()
        .flatten()
        .ok_or_else(|| invalid(format!("network {name} vanished")))
}

/// The running containers (id, what they hold) on the network with id `network_id`.
pub fn endpoints(store: &crate::store::Store, network_id: &str) -> Vec<(String, Attached)> {
    store
        .containers()
        .unwrap_or_default()
        .into_iter()
        .filter_map(|c| {
            let a = attachments(&store.root().join("containers").join(&c.id))
                .into_iter()
                .find(|a| a.def.id == network_id)?;
            Some((c.id, a))
        })
        .collect()
}

/// `network prune`: forgets every user network no running container is on; their names.
pub fn prune(store: &crate::store::Store) -> Result<Vec<String>, crate::store::StoreError> {
    let mut gone = Vec::new();
    for n in store.networks()? {
        if endpoints(store, &n.id).is_empty() && store.remove_network(&n.name)? {
            gone.push(n.name);
        }
    }
    Ok(gone)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_are_read_with_their_interfaces() {
        let text = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
                    eth0\t00000000\t0100A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
                    kiln-abc\t00005B0A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        let routes = routes_of(text);
        assert_eq!(routes.len(), 1, "the default route is left out");
        assert_eq!(routes[0].0, "kiln-abc");
        assert_eq!(routes[0].1, (u32::from(Ipv4Addr::new(10, 91, 0, 0)), 24));
    }
}
