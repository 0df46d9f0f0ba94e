//! Containers: `kiln run` in the foreground. The image's layers (unpacked once, by
//! ChainID) under a fresh upper directory, the process built from the image config with
//! docker's rules, stdio passed through, the exit code returned.

pub mod attach;
pub mod changes;
pub mod control;
pub mod copy;
pub mod detach;
pub mod exec;
pub mod health;
pub mod logs;
mod netsetup;
pub mod networks;
pub mod restart;
mod spare;
pub mod stats;
pub mod tty;
pub mod user;
pub mod volume_mount;

use std::path::PathBuf;

pub use crate::sandbox::process::Stdio;

use crate::{
    digest::Digest,
    oci::ImageConfig,
    sandbox::{
        overlay::{self, Overlay},
        process::{self, Spec},
    },
    store::{Store, StoreError},
};

/// Why a container could not run.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("no such image: {0}")]
    NoImage(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Config(String),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    Mount(#[from] overlay::MountError),
    #[error("-v {spec}: {source}")]
    Volume {
        spec: String,
        source: crate::sandbox::mounts::MountError,
    },
    #[error(transparent)]
    Files(#[from] crate::sandbox::mounts::MountError),
    #[error(transparent)]
    Sandbox(#[from] process::SandboxError),
    #[error(transparent)]
    User(#[from] user::UserError),
    #[error(transparent)]
    Network(#[from] crate::network::NetworkError),
}

impl ContainerError {
    /// The exit code docker gives for this failure: 127 when the command does not exist, 126
    /// when it cannot be run, 125 for every failure of the runner itself.
    pub fn exit_code(&self) -> u8 {
        match self {
            ContainerError::Sandbox(process::SandboxError::Setup { step, errno })
                if step.starts_with("exec ") =>
            {
                if *errno == rustix::io::Errno::NOENT {
                    127
                } else {
                    126
                }
            }
            _ => 125,
        }
    }
}

/// `kiln run`'s options (docker's meanings). Kept with the container (`options.json` in its
/// directory) for `kiln start` and `kiln inspect`.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct RunOptions {
    pub image: String,
    /// `--platform`: which image of a multi-platform name to run (and check a single one
    /// against); `None`: this machine's, else the only one there is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<crate::oci::Platform>,
    /// Arguments after the image: they replace the image's CMD.
    pub args: Vec<String>,
    /// `--entrypoint`: replaces ENTRYPOINT and clears CMD; `Some("")` clears both.
    pub entrypoint: Option<String>,
    /// `-e K=V` / `-e K` (the host's value) and `--env-file` lines, in order.
    pub env: Vec<String>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    /// `--network`; `None`: the default, docker's `bridge` where netavark is installed (and
    /// kiln is root), else the host's network.
    pub network: Option<crate::network::Mode>,
    /// `-p`: host ports forwarded to the container's (host ports 0 are chosen at each start).
    #[serde(default)]
    pub publish: Vec<crate::network::ports::Published>,
    /// `-P`: every EXPOSEd port of the image too, on ports the kernel chooses.
    #[serde(default)]
    pub publish_all: bool,
    /// `--network-alias`: more names the container answers to on a user network.
    #[serde(default)]
    pub network_aliases: Vec<String>,
    /// `--add-host NAME:IP` (`host-gateway` for the host).
    #[serde(default)]
    pub add_hosts: Vec<String>,
    /// `--dns`, `--dns-search`, `--dns-option`.
    #[serde(default)]
    pub dns: Dns,
    /// `--ip`: the address on a user network.
    #[serde(default)]
    pub ip: Option<std::net::Ipv4Addr>,
    /// `--mac-address`.
    #[serde(default)]
    pub mac: Option<String>,
    pub hostname: Option<String>,
    /// `-v`, `--mount` (bind, volume), in order; for a created container, with its
    /// `--volumes-from` mounts and anonymous volumes resolved.
    pub volumes: Vec<Volume>,
    /// `--volumes-from CONTAINER[:ro|rw]`.
    #[serde(default)]
    pub volumes_from: Vec<String>,
    /// `--read-only`: the root filesystem is mounted read-only.
    pub read_only: bool,
    /// `--memory`, `--pids-limit`.
    pub limits: crate::sandbox::cgroup::Limits,
    /// `--name` (else an `adjective_name` like docker's).
    pub name: Option<String>,
    /// `--rm`: forget the container when it exits; otherwise it is kept (its upper directory
    /// and how it ended) for `kiln ps -a` until `kiln rm`.
    pub remove: bool,
    /// The container's id, when the caller chose it (a detached container's monitor opens the
    /// log first); a new one otherwise.
    pub id: Option<String>,
    /// Told the container's id once its process runs (`kiln run -d` returns then).
    #[serde(skip)]
    pub started: Option<std::sync::mpsc::Sender<String>>,
    /// `--log-opt max-size=,max-file=` of a detached container's log.
    pub log_rotation: Option<logs::Rotation>,
    /// `--health-cmd` and friends over the image's HEALTHCHECK (`Some` with an empty test:
    /// `--no-healthcheck`).
    pub health: Option<crate::oci::Healthcheck>,
    /// `--restart`: applied by a detached container's monitor.
    #[serde(default)]
    pub restart: restart::Policy,
    /// `-t`: the process gets a terminal (see [`Io::Terminal`]).
    #[serde(default)]
    pub tty: bool,
    /// `-i`: stdin stays open (without it the process reads /dev/null, as docker's).
    #[serde(default)]
    pub interactive: bool,
    /// `--cap-add`, `--cap-drop`, `--privileged`, `--security-opt`, `--ulimit`.
    #[serde(default)]
    pub privileges: crate::sandbox::identity::Privileges,
    /// `--shm-size` in bytes.
    #[serde(default)]
    pub shm_size: Option<u64>,
    /// `--tmpfs TARGET[:size=N,mode=M]`.
    #[serde(default)]
    pub tmpfs: Vec<Tmpfs>,
    /// `--group-add`: more supplementary groups (names from the image's /etc/group, or ids).
    #[serde(default)]
    pub group_add: Vec<String>,
    /// `--label K=V`.
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
    /// `--init`: a small init as process 1 ([`crate::sandbox::init`]).
    #[serde(default)]
    pub init: bool,
    /// The networks the container joins at each start, in order, once `kiln network connect`
    /// or `disconnect` changed them; `None`: the one `network` names (`network_aliases` and
    /// `ip` its options there). `network` stays what `--network` said, as docker's
    /// `HostConfig.NetworkMode` does.
    #[serde(default)]
    pub networks: Option<Vec<Connected>>,
}

/// A network a container is on, with its options there (`--network-alias`/`--alias`, `--ip`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Connected {
    /// The network's name (`bridge` or a user network's).
    pub network: String,
    /// `--alias`.
    pub aliases: Vec<String>,
    /// `--ip`.
    pub ip: Option<std::net::Ipv4Addr>,
}

/// The container's resolv.conf as asked: name servers, search domains, options (each empty:
/// the host's, or the network's resolver).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Dns {
    pub servers: Vec<String>,
    pub search: Vec<String>,
    pub options: Vec<String>,
}

impl Dns {
    /// `base` (a resolv.conf) with what was asked put in place of its lines of each kind.
    pub fn apply(&self, base: &str) -> String {
        let mut out = String::new();
        let kind = |l: &str| l.split_whitespace().next().unwrap_or("").to_string();
        for l in base.lines() {
            let k = kind(l);
            let replaced = (k == "nameserver" && !self.servers.is_empty())
                || (k == "search" && !self.search.is_empty())
                || (k == "options" && !self.options.is_empty());
            if !replaced {
                out.push_str(l);
                out.push('\n');
            }
        }
        for s in &self.servers {
            out.push_str(&format!("nameserver {s}\n"));
        }
        if !self.search.is_empty() {
            out.push_str(&format!("search {}\n", self.search.join(" ")));
        }
        if !self.options.is_empty() {
            out.push_str(&format!("options {}\n", self.options.join(" ")));
        }
        out
    }
}

/// One `--tmpfs`: a fresh tmpfs at `target`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Tmpfs {
    pub target: String,
    pub size: Option<u64>,
    pub mode: Option<u32>,
}

impl Tmpfs {
    /// docker's `--tmpfs /run[:size=64m,mode=1777,rw,noexec...]` (flags other than size and
    /// mode are accepted and not applied: kiln's tmpfs are always nosuid and nodev).
    pub fn parse(text: &str) -> Result<Tmpfs, String> {
        let (target, opts) = text.split_once(':').unwrap_or((text, ""));
        check_target(&format!("--tmpfs {text}"), target)?;
        let mut t = Tmpfs {
            target: target.to_string(),
            size: None,
            mode: None,
        };
        for o in opts.split(',').filter(|o| !o.is_empty()) {
            match o.split_once('=') {
                Some(("size", v)) => {
                    t.size = Some(
                        kiln_parser::instruction::values::parse_ram_size(v)
                            .ok_or_else(|| format!("--tmpfs {text}: bad size {v:?}"))?,
                    );
                }
                Some(("mode", v)) => {
                    t.mode = Some(
                        u32::from_str_radix(v, 8)
                            .ok()
                            .filter(|m| *m <= 0o7777)
                            .ok_or_else(|| format!("--tmpfs {text}: bad mode {v:?}"))?,
                    );
                }
                None if matches!(
                    o,
                    "rw" | "ro" | "exec" | "noexec" | "suid" | "nosuid" | "dev" | "nodev"
                ) => {}
                _ => return Err(format!("--tmpfs {text}: unsupported option {o:?}")),
            }
        }
        Ok(t)
    }
}

/// The network named `name` (`bridge` or a user network's), as containers join it.
pub(crate) fn network_def(
    store: &Store,
    name: &str,
) -> Result<crate::network::Def, ContainerError> {
    if name == crate::network::BRIDGE {
        return Ok(crate::network::Def::bridge());
    }
    let found = store
        .find_network(name)?
        .ok_or_else(|| ContainerError::Config(format!("network {name} not found")))?;
    Ok(crate::network::Def::user(&found)?)
}

/// Puts a container whose namespace is set up on network `more` too.
pub(crate) fn join_connected(
    store: &Store,
    dir: &std::path::Path,
    (id, name): (&str, &str),
    more: &Connected,
) -> Result<crate::network::Attached, ContainerError> {
    let def = network_def(store, &more.network)?;
    let mut aliases = more.aliases.clone();
    aliases.push(id[..12.min(id.len())].to_string());
    let endpoint = crate::network::Endpoint {
        aliases: &aliases,
        ip: more.ip,
        mac: None,
    };
    Ok(crate::network::connect(dir, (id, name), &def, endpoint)?)
}

/// The options container `id` was created with (`options.json` in its directory).
pub fn kept_options(store: &Store, id: &str) -> Option<RunOptions> {
    let path = store.root().join("containers").join(id).join(OPTIONS);
    std::fs::read(path)
        .ok()
        .and_then(|t| serde_json::from_slice(&t).ok())
}

/// A container's stdio.
#[derive(Debug)]
pub enum Io {
    /// stdin, stdout, stderr as given.
    Pipes(Stdio, Stdio, Stdio),
    /// A terminal made in the container, joined to this one (`-t`).
    Terminal(tty::Terminal),
}

/// Whether `name` is a valid container name (docker's `[a-zA-Z0-9][a-zA-Z0-9_.-]+`).
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.len() >= 2
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

/// A docker-like generated name from the container id.
fn generated_name(id: &str) -> String {
    const ADJ: [&str; 16] = [
        "brave", "calm", "eager", "fervent", "gentle", "happy", "keen", "lucid", "merry", "nifty",
        "quirky", "serene", "sharp", "tender", "vivid", "witty",
    ];
    const WHO: [&str; 16] = [
        "babbage", "curie", "dijkstra", "euler", "franklin", "galois", "hopper", "lamarr",
        "lovelace", "meitner", "noether", "pascal", "ritchie", "shannon", "turing", "wozniak",
    ];
    let n = u32::from_str_radix(&id[..4], 16).unwrap_or(0) as usize;
    format!("{}_{}", ADJ[n % 16], WHO[(n / 16) % 16])
}

/// One mount of `-v`/`--mount`/`--volumes-from`: a host path bound (`-v /host:/ctr`), or a
/// volume of the store (`-v NAME:/ctr`, and anonymous ones: `-v /ctr`, an image's VOLUME).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Volume {
    /// The host path of a bind; empty for a volume.
    pub host: PathBuf,
    pub target: String,
    pub read_only: bool,
    /// The volume's name; `Some("")` until an anonymous one is made for a new container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<String>,
    /// Made for this container (removed with it by `rm -v` and `--rm`).
    #[serde(default)]
    pub anonymous: bool,
    /// `nocopy`: a new volume is not seeded with the image's content at the target.
    #[serde(default)]
    pub nocopy: bool,
}

/// A container path as a mount target: absolute, below `/`, no `..`, and not /proc or below
/// (what is there must be the container's procfs, as runc requires since CVE-2019-19921: a
/// volume over it would hide the procfs the runtime and the kernel's checks rely on).
fn check_target(spec: &str, target: &str) -> Result<(), String> {
    if !target.starts_with('/') || target.split('/').any(|p| p == "..") || target == "/" {
        return Err(format!(
            "{spec}: the container path must be absolute, below / and without .."
        ));
    }
    if over_proc(target) {
        return Err(format!(
            "{spec}: {target} cannot be mounted because it is not of type proc"
        ));
    }
    Ok(())
}

/// Whether `target` is /proc or below it.
fn over_proc(target: &str) -> bool {
    let mut parts = target.split('/').filter(|p| !p.is_empty() && *p != ".");
    parts.next() == Some("proc")
}

impl Volume {
    /// Parses docker's `-v`: `/host:/ctr[:OPTS]` binds a host path, `NAME:/ctr[:OPTS]` mounts
    /// volume NAME (made when missing), `/ctr` an anonymous volume; OPTS `ro`, `rw`, `nocopy`
    /// (and SELinux's `z`/`Z`, which mean nothing here and are accepted, as docker does without
    /// SELinux).
    pub fn parse(spec: &str) -> Result<Volume, String> {
        let shown = format!("-v {spec}");
        let parts: Vec<&str> = spec.split(':').collect();
        let (source, target, opts) = match parts.as_slice() {
            [t] => ("", *t, ""),
            [h, t] => (*h, *t, ""),
            [h, t, o] => (*h, *t, *o),
            _ => return Err(format!("{shown}: expected [SOURCE:]CONTAINER[:OPTIONS]")),
        };
        check_target(&shown, target)?;
        let mut v = Volume {
            host: PathBuf::new(),
            target: target.to_string(),
            read_only: false,
            volume: None,
            anonymous: false,
            nocopy: false,
        };
        if source.is_empty() {
            v.volume = Some(String::new());
            v.anonymous = true;
        } else if source.starts_with('/') {
            v.host = PathBuf::from(source);
        } else if crate::store::valid_volume_name(source) {
            v.volume = Some(source.to_string());
        } else {
            return Err(format!(
                "{shown}: {source:?} includes invalid characters for a local volume name, only \
                 \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed; a host path must be absolute"
            ));
        }
        for o in opts.split(',').filter(|o| !o.is_empty()) {
            match o {
                "ro" => v.read_only = true,
                "rw" => v.read_only = false,
                "nocopy" if v.volume.is_some() => v.nocopy = true,
                "z" | "Z" => {}
                other => return Err(format!("{shown}: unsupported option {other:?}")),
            }
        }
        Ok(v)
    }

    /// docker's `--mount type=bind|volume,source=,target=[,readonly][,volume-nocopy]`
    /// (`type=tmpfs` is a [`Tmpfs`]: `Err(None)` says so to the caller).
    pub fn parse_mount(spec: &str) -> Result<Volume, Option<String>> {
        let shown = format!("--mount {spec}");
        let (mut kind, mut source, mut target) = ("volume", String::new(), String::new());
        let mut v = Volume {
            host: PathBuf::new(),
            target: String::new(),
            read_only: false,
            volume: None,
            anonymous: false,
            nocopy: false,
        };
        for field in spec.split(',').filter(|f| !f.is_empty()) {
            let (k, val) = field.split_once('=').unwrap_or((field, "true"));
            let yes = |val: &str| matches!(val, "true" | "1");
            match k {
                "type" => {
                    kind = match val {
                        "bind" => "bind",
                        "volume" => "volume",
                        "tmpfs" => return Err(None),
                        other => return Err(Some(format!("{shown}: unsupported type {other:?}"))),
                    }
                }
                "source" | "src" => source = val.to_string(),
                "target" | "destination" | "dst" => target = val.to_string(),
                "readonly" | "ro" => v.read_only = yes(val),
                "volume-nocopy" => v.nocopy = yes(val),
                // What kiln does anyway: private propagation, the local driver.
                "bind-propagation" if val == "rprivate" => {}
                "volume-driver" if val == "local" => {}
                "consistency" => {}
                other => return Err(Some(format!("{shown}: unsupported option {other:?}"))),
            }
        }
        check_target(&shown, &target).map_err(Some)?;
        v.target = target;
        match kind {
            "bind" => {
                if !source.starts_with('/') {
                    return Err(Some(format!(
                        "{shown}: a bind's source must be an absolute host path"
                    )));
                }
                v.host = PathBuf::from(source);
            }
            _ if source.is_empty() => {
                v.volume = Some(String::new());
                v.anonymous = true;
            }
            _ if crate::store::valid_volume_name(&source) => v.volume = Some(source),
            _ => return Err(Some(format!("{shown}: invalid volume name {source:?}"))),
        }
        Ok(v)
    }

    /// The host directory mounted: the bind's path, or the volume's data in `store`.
    pub fn source(&self, store: &Store) -> PathBuf {
        match &self.volume {
            Some(name) => store.volume_path(name),
            None => self.host.clone(),
        }
    }

    /// The detached bind of the source. A missing host path is created as a directory, as
    /// docker's `-v` does; a missing volume is made; a volume still empty is first seeded with
    /// what the image has at the target (`rootfs`), owner and mode of the directory too, as
    /// docker's copy-up does.
    fn prepare(
        &self,
        store: &Store,
        rootfs: &std::path::Path,
    ) -> Result<crate::sandbox::mounts::Mount, ContainerError> {
        let source = self.source(store);
        let spec = format!("{}:{}", source.display(), self.target);
        if let Some(name) = &self.volume {
            let v = match store.volume(name)? {
                Some(v) => v,
                None => {
                    let none = std::collections::BTreeMap::new();
                    store.create_volume(Some(name), (&none, &none))?
                }
            };
            // A volume with the driver's options: its filesystem mounted first, then seeded.
            volume_mount::mount(&v)?;
            let empty = std::fs::read_dir(&source).is_ok_and(|mut d| d.next().is_none());
            if empty && !self.nocopy {
                copy::seed(rootfs, &self.target, &source)?;
            }
        } else if std::fs::symlink_metadata(&source).is_err() {
            std::fs::create_dir_all(&source).map_err(|e| ContainerError::Io {
                path: source.clone(),
                source: e,
            })?;
        }
        let wrap = |source| ContainerError::Volume {
            spec: spec.clone(),
            source,
        };
        let mut d = crate::sandbox::mounts::bind(&source).map_err(wrap)?;
        if self.read_only {
            d = d.read_only().map_err(wrap)?;
        }
        Ok(d.at(&self.target))
    }
}

/// The mounts of a new container: `--volumes-from`'s, then its own (one for a target), then
/// an anonymous volume for each VOLUME of the image no mount or tmpfs covers. Anonymous
/// volumes are made here, so the container keeps them across starts.
fn resolve_volumes(
    store: &Store,
    opts: &RunOptions,
    config: &ImageConfig,
) -> Result<Vec<Volume>, ContainerError> {
    let mut out: Vec<Volume> = Vec::new();
    for from in &opts.volumes_from {
        let (what, mode) = match from.rsplit_once(':') {
            Some((w, m @ ("ro" | "rw"))) => (w, Some(m)),
            _ => (from.as_str(), None),
        };
        let c = store.find_container(what)?.ok_or_else(|| {
            ContainerError::Config(format!("--volumes-from {from}: no such container"))
        })?;
        let kept = kept_options(store, &c.id).unwrap_or_default();
        for mut v in kept.volumes {
            match mode {
                Some("ro") => v.read_only = true,
                Some(_) => v.read_only = false,
                None => {}
            }
            // Not this container's to remove.
            v.anonymous = false;
            out.retain(|o| o.target != v.target);
            out.push(v);
        }
    }
    let fresh = |store: &Store| -> Result<String, ContainerError> {
        Ok(store
            .create_volume(
                None,
                (
                    &std::collections::BTreeMap::new(),
                    &std::collections::BTreeMap::new(),
                ),
            )?
            .name)
    };
    for v in &opts.volumes {
        let mut v = v.clone();
        if v.volume.as_deref() == Some("") {
            v.volume = Some(fresh(store)?);
            v.anonymous = true;
        }
        out.retain(|o| o.target != v.target);
        out.push(v);
    }
    for path in config.config.volumes.keys() {
        // An image's path as docker cleans it: `..` stops at the root.
        let Some(clean) = clean_volume_path(path) else {
            continue;
        };
        if over_proc(&clean) {
            return Err(ContainerError::Config(format!(
                "the image's VOLUME {path}: {clean} cannot be mounted because it is not of type proc"
            )));
        }
        if out.iter().any(|v| v.target.trim_end_matches('/') == clean)
            || opts
                .tmpfs
                .iter()
                .any(|t| t.target.trim_end_matches('/') == clean)
        {
            continue;
        }
        out.push(Volume {
            host: PathBuf::new(),
            target: clean,
            read_only: false,
            volume: Some(fresh(store)?),
            anonymous: true,
            nocopy: false,
        });
    }
    Ok(out)
}

/// An image's VOLUME path cleaned as docker's `filepath.Clean` of an absolute path (`..` stops
/// at the root, `.` and empty parts go); `None` for the root itself.
fn clean_volume_path(path: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    (!parts.is_empty()).then(|| format!("/{}", parts.join("/")))
}

/// Removes the anonymous volumes among `volumes` (`rm -v`, `--rm`) no other container uses.
pub fn remove_anonymous_volumes(store: &Store, volumes: &[Volume], except: &str) {
    let in_use = volumes_in_use(store);
    for v in volumes.iter().filter(|v| v.anonymous) {
        if let Some(name) = &v.volume {
            if in_use
                .get(name)
                .is_none_or(|ids| ids.iter().all(|c| c == except))
            {
                let _ = store.remove_volume(name);
            }
        }
    }
}

/// `volume prune`: removes the anonymous volumes no container uses (`all`: named ones too);
/// their names and the bytes freed.
pub fn prune_volumes(store: &Store, all: bool) -> Result<(Vec<String>, u64), ContainerError> {
    let mut gone = Vec::new();
    let mut freed = 0u64;
    let in_use = volumes_in_use(store);
    for v in store.volumes()? {
        if (v.anonymous || all) && !in_use.contains_key(&v.name) {
            let size = crate::store::dir_size(&v.mountpoint);
            if store.remove_volume(&v.name)? {
                freed += size;
                gone.push(v.name);
            }
        }
    }
    Ok((gone, freed))
}

/// `system df`'s volumes: how many, how many a container uses, their bytes, and the bytes of
/// those none uses.
pub fn volume_usage(store: &Store) -> Result<(usize, usize, u64, u64), ContainerError> {
    let (mut count, mut active, mut size, mut unused) = (0, 0, 0, 0);
    let in_use = volumes_in_use(store);
    for v in store.volumes()? {
        let bytes = crate::store::dir_size(&v.mountpoint);
        count += 1;
        size += bytes;
        if !in_use.contains_key(&v.name) {
            unused += bytes;
        } else {
            active += 1;
        }
    }
    Ok((count, active, size, unused))
}

/// Each volume a container mounts (running or not), and the ids of the containers that do:
/// every container's options read once, whatever the number of volumes asked about.
pub fn volumes_in_use(store: &Store) -> std::collections::BTreeMap<String, Vec<String>> {
    let mut out: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for c in store.containers().unwrap_or_default() {
        for v in kept_options(store, &c.id)
            .map(|o| o.volumes)
            .unwrap_or_default()
        {
            if let Some(name) = v.volume {
                out.entry(name).or_default().push(c.id.clone());
            }
        }
    }
    out
}

/// The argv docker would run: entrypoint + (args or cmd), with `--entrypoint` rules.
pub fn command(config: &ImageConfig, opts: &RunOptions) -> Result<Vec<String>, ContainerError> {
    let c = &config.config;
    let (entrypoint, cmd) = match &opts.entrypoint {
        Some(e) if e.is_empty() => (Vec::new(), Vec::new()),
        Some(e) => (vec![e.clone()], Vec::new()),
        None => (
            c.entrypoint.clone().unwrap_or_default(),
            c.cmd.clone().unwrap_or_default(),
        ),
    };
    let tail = if opts.args.is_empty() {
        cmd
    } else {
        opts.args.clone()
    };
    let argv: Vec<String> = entrypoint.into_iter().chain(tail).collect();
    if argv.is_empty() {
        return Err(ContainerError::Config(format!(
            "{}: no command specified (the image has no ENTRYPOINT or CMD)",
            opts.image
        )));
    }
    Ok(argv)
}

/// The environment: the image's, then the options' (`K` alone takes the host's value, if any).
pub fn environment(
    config: &ImageConfig,
    opts: &RunOptions,
    home: &str,
    hostname: &str,
) -> Vec<String> {
    let mut env: Vec<(String, String)> = Vec::new();
    fn put(env: &mut Vec<(String, String)>, k: &str, v: &str) {
        match env.iter_mut().find(|(key, _)| key == k) {
            Some(e) => e.1 = v.to_string(),
            None => env.push((k.to_string(), v.to_string())),
        }
    }
    let mut set = |k: &str, v: &str| put(&mut env, k, v);
    set("PATH", process::DEFAULT_PATH);
    set("HOSTNAME", hostname);
    for e in &config.config.env {
        if let Some((k, v)) = e.split_once('=') {
            set(k, v);
        }
    }
    for e in &opts.env {
        match e.split_once('=') {
            Some((k, v)) => set(k, v),
            None => {
                if let Ok(v) = std::env::var(e) {
                    set(e, &v);
                }
            }
        }
    }
    if !env.iter().any(|(k, _)| k == "HOME") {
        put(&mut env, "HOME", home);
    }
    env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// A new container id: 64 hex digits, as docker's (the first 12 are its default hostname).
pub fn new_id() -> String {
    use sha2::Digest as _;
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let seed = format!("{nanos}-{}-{:p}", std::process::id(), &nanos);
    hex::encode(sha2::Sha256::digest(seed.as_bytes()))
}

/// The image `opts` runs: the name's image for `--platform` (or this machine's, else the
/// only one there is), with its emulator ready when it is for another platform. Running
/// another platform's image unasked is allowed, with docker's warning.
pub(crate) fn image_to_run(
    store: &Store,
    opts: &RunOptions,
    warn: &dyn Fn(&str),
) -> Result<(crate::oci::Manifest, crate::oci::ImageConfig), ContainerError> {
    let named = store
        .resolve(&opts.image)?
        .ok_or_else(|| ContainerError::NoImage(opts.image.clone()))?;
    let manifest = match &opts.platform {
        Some(p) => store.platform_manifest(&named, Some(p)).map_err(|e| match e {
            crate::store::StoreError::NoPlatform { have, .. } => ContainerError::Config(format!(
                "image with reference {} was found but does not match the specified platform: \
                 wanted {p}, actual: {have}",
                opts.image
            )),
            e => e.into(),
        })?,
        None => store.platform_manifest(&named, None)?,
    };
    let (m, config, _) = store.image(&manifest)?;
    let platform = config.platform().normalized();
    if !config.architecture.is_empty() && !platform.is_host() {
        if opts.platform.is_none() {
            warn(&format!(
                "The requested image's platform ({platform}) does not match the detected host \
                 platform ({}) and no specific platform was requested",
                crate::oci::host_platform().normalized()
            ));
        }
        crate::binfmt::ensure_emulator(&platform)
            .map_err(|e| ContainerError::Config(format!("{}: {e}", opts.image)))?;
    }
    Ok((m, config))
}

/// Runs `opts.image` in the foreground with the given stdio; returns the exit code (a signal
/// as 128 + its number). With `opts.id` naming a container that exists, that container starts
/// again, its changes kept (`kiln start`, a restart). `warn` hears what could not be applied
/// (a limit the kernel refuses) and did not stop the run; `ended` is told the exit code once
/// the container's processes are gone and before its end is recorded (a monitor finishes its
/// log there, so `kiln wait` then `kiln logs` sees all of it); it answers whether the
/// container will start again (recorded as restarting rather than exited).
pub fn run(
    store: &Store,
    opts: &RunOptions,
    stdio: Io,
    warn: &dyn Fn(&str),
    ended: &dyn Fn(i32) -> bool,
) -> Result<i32, ContainerError> {
    // Held from finding the image until the container has said which unpacked layers it uses:
    // `kiln cache prune` (exclusive) then either ran before, and they are unpacked again here,
    // or sees them.
    let guard = store.build_guard()?;
    let mode = network_mode(opts)?;
    let id = opts.id.clone().unwrap_or_else(new_id);
    // First, so that it overlaps all of the start that it can.
    let mut ahead = Ahead::start(
        store,
        &id,
        &opts.limits,
        matches!(mode, crate::network::Mode::None),
    );
    let (m, config) = image_to_run(store, opts, warn)?;
    let argv = command(&config, opts)?;
    let mut lower = lower_dirs(store, &m, &config, &opts.image)?;
    // The mount points of /etc/hosts and /etc/resolv.conf the image lacks, in a layer of their
    // own instead of the container's upper directory.
    store.add_etc_stubs(&mut lower);
    let dir = store.root().join("containers").join(&id);
    let existing = match &opts.id {
        Some(i) => store.find_container(i)?.filter(|c| c.id == *i),
        None => None,
    };
    if existing.is_some() {
        store.restart_container(&id, crate::procid::ProcessId::current())?;
        // A monitor killed outright left its overlay mounted on the same upper and work
        // directories (and maybe processes in its cgroups): gone before anything mounts again.
        reclaim(&dir);
    } else {
        add(store, opts, &id, &argv)?;
        // The directory of a container removed before, if one waits (`spare`).
        spare::take(store.root(), &dir);
    }
    let noted = store.note_container_layers(&id, &lower);
    // A new container is served by this process from now on (`kiln start` of an existing one
    // claimed it before): a `kiln start` racing its first start waits instead of running it too.
    let _claim = match existing {
        None => control::try_claim(&dir).ok().flatten(),
        Some(_) => None,
    };
    drop(guard);
    let io = |path: &std::path::Path| {
        let path = path.to_path_buf();
        move |source| ContainerError::Io { path, source }
    };
    let sub = |n: &str| -> Result<PathBuf, ContainerError> {
        let p = dir.join(n);
        std::fs::create_dir_all(&p).map_err(io(&p))?;
        Ok(p)
    };
    // A new container's mounts, anonymous volumes made (an existing one kept its own).
    let mut made: Vec<Volume> = Vec::new();
    let result: Result<i32, ContainerError> = (|| {
        noted?;
        let volumes = if existing.is_none() {
            made = resolve_volumes(store, opts, &config)?;
            made.clone()
        } else {
            opts.volumes.clone()
        };
        if existing.is_none() && !opts.remove {
            keep_options(&dir, opts, &id, &volumes)?;
        }
        let (upper, work, rootfs) = (sub("upper")?, sub("work")?, sub("rootfs")?);
        if lower.is_empty() {
            lower.push(sub("empty")?);
        }
        let ov = Overlay {
            lower: &lower,
            upper: &upper,
            work: &work,
        };
        // A `--rm` container's upper goes with it: scratch (see `overlay::mount_scratch`).
        if opts.remove {
            overlay::mount_scratch(ov, &rootfs)?;
        } else {
            overlay::mount(ov, &rootfs)?;
        }
        ahead.mounted();
        let net = match netsetup::Net::set_up(store, opts, &config, (&dir, &id), &mode, warn) {
            Ok(n) => n,
            Err(e) => {
                let _ = overlay::unmount(&rootfs);
                return Err(e);
            }
        };
        let ran = (|| {
            let mut spec = spec(store, opts, (&config, argv), (&id, &rootfs), &volumes)?;
            let ((join, unapplied), netns) = ahead.made();
            for w in unapplied {
                warn(&w);
            }
            spec.cgroup = join;
            spec.mounts
                .splice(0..0, net.etc_mounts(&dir, opts, &spec.hostname)?);
            spec.network = match (net.sandbox_network(&mode), netns) {
                (process::Network::None, Some(fd)) => {
                    process::Network::Fresh(std::sync::Arc::new(fd))
                }
                (n, _) => n,
            };
            let tty::Split {
                stdio: (i, o, e),
                child_end,
                ours: channel,
            } = tty::split(stdio)?;
            spec.tty = child_end;
            let status = std::thread::scope(|s| {
                let id = &id;
                if let Some((ours, t)) = channel {
                    s.spawn(move || tty::serve(ours, t));
                }
                // Once the process runs: its pid recorded (what `kiln stop` signals), the
                // caller told.
                let mut started = |pid: u32| {
                    let init = i32::try_from(pid)
                        .ok()
                        .and_then(crate::procid::ProcessId::of);
                    if let Some(init) = init {
                        let _ = store.set_container_init(id, init);
                    }
                    if let Some(tell) = &opts.started {
                        let _ = tell.send(id.clone());
                    }
                    // While the container runs, what spares left goes, in a thread of its
                    // own: the scope would wait for it, and a short container for its
                    // removals. Ended with the process if not done (the next container's run
                    // goes on with it).
                    let root = store.root().to_path_buf();
                    let _ = std::thread::Builder::new().spawn(move || spare::empty_trash(&root));
                };
                let status = process::run_with(&spec, i, o, e, &mut started);
                // Before the cgroups go with `spec`: did the OOM killer end it? (Not kept for a
                // `--rm` container: its record goes next.)
                if !opts.remove {
                    let _ = store.set_container_oom_killed(id, spec.cgroup.oom_killed());
                }
                // The last end of the terminal socket on the container's side.
                spec.tty = None;
                status
            })?;
            Ok::<_, ContainerError>(process::exit_code(status))
        })();
        net.tear_down(&dir);
        // Volumes with their own filesystem: unmounted once no other container uses them.
        for v in volumes.iter().filter_map(|v| v.volume.as_deref()) {
            if let Ok(Some(info)) = store.volume(v) {
                volume_mount::release(store, &info, Some(&id));
            }
        }
        let unmounted = overlay::unmount(&rootfs);
        let code = ran?;
        unmounted?;
        overlay::finish(ov, &rootfs)?;
        Ok(code)
    })();
    let code = match &result {
        Ok(c) => *c,
        Err(e) => i32::from(e.exit_code()),
    };
    let again = ended(code);
    if opts.remove {
        remove_dir(store, &dir);
        store.remove_container(&id)?;
        // docker's `--rm` takes the container's anonymous volumes along.
        remove_anonymous_volumes(store, &made, &id);
    } else if again {
        store.set_container_restarting(&id, code)?;
    } else {
        store.finish_container(&id, code)?;
    }
    result
}

/// What a container's start makes on a thread of its own while the rest goes on (the records,
/// the overlay mount, the spec): its cgroups (always some: they carry the device allow-list, and
/// `kiln stats` reads them), and with `--network none` its network namespace. They took 0.5 and
/// 0.7 ms, measured, and depend on nothing of the rest.
///
/// Recovery finds the cgroups of a killed kiln through what it left in the store: a mount under
/// `containers/` or anything in `tmp/` (`Store::recover`). Until the overlay is mounted
/// ([`Ahead::mounted`]) that is a marker file in `tmp/`; without one (it could not be written)
/// the cgroups wait for the mount. Dropped unused (a start that failed before its spawn), it
/// waits for the thread, and what it made goes with it.
struct Ahead {
    thread: Option<std::thread::JoinHandle<Made>>,
    go: Option<std::sync::mpsc::Sender<()>>,
    marker: Option<PathBuf>,
    name: String,
    limits: crate::sandbox::cgroup::Limits,
}

/// The cgroups to join and what of the limits could not be applied (`None`: never told to
/// go), and the network namespace when one was asked for and could be made.
type Made = (
    Option<(crate::sandbox::cgroup::Join, Vec<String>)>,
    Option<std::os::fd::OwnedFd>,
);

impl Ahead {
    fn start(
        store: &Store,
        id: &str,
        limits: &crate::sandbox::cgroup::Limits,
        network: bool,
    ) -> Ahead {
        let short = id[..12.min(id.len())].to_string();
        let (name, limits) = (short.clone(), *limits);
        let marker = store.root().join("tmp").join(format!("cgroups-{name}"));
        let marker = std::fs::File::create(&marker).is_ok().then_some(marker);
        let early = marker.is_some();
        let (go, wait) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .spawn(move || {
                let cgroups = (early || wait.recv().is_ok())
                    .then(|| crate::sandbox::cgroup::Cgroup::create_accounted(&name, &limits));
                // Last: it leaves this thread in the new namespace. Without one, the child
                // makes it, as it always could.
                let netns = network
                    .then(crate::sandbox::process::fresh_network)
                    .and_then(Result::ok);
                (cgroups, netns)
            })
            .ok();
        Ahead {
            thread,
            go: Some(go),
            marker,
            name: short,
            limits,
        }
    }

    /// The root is mounted: the cgroups may be made, and the mount now marks them.
    fn mounted(&mut self) {
        if let Some(go) = self.go.take() {
            let _ = go.send(());
        }
        if let Some(m) = self.marker.take() {
            let _ = std::fs::remove_file(m);
        }
    }

    fn made(
        mut self,
    ) -> (
        (crate::sandbox::cgroup::Join, Vec<String>),
        Option<std::os::fd::OwnedFd>,
    ) {
        self.mounted();
        let (cgroups, netns) = match self.thread.take().map(std::thread::JoinHandle::join) {
            Some(Ok(made)) => made,
            // No thread could be started, or it panicked.
            _ => (None, None),
        };
        let cgroups = cgroups.unwrap_or_else(|| {
            crate::sandbox::cgroup::Cgroup::create_accounted(&self.name, &self.limits)
        });
        (cgroups, netns)
    }
}

impl Drop for Ahead {
    fn drop(&mut self) {
        // Not told to go: it makes no cgroups unless it made them already; then they go with
        // what it returns, before the marker.
        drop(self.go.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Some(m) = self.marker.take() {
            let _ = std::fs::remove_file(m);
        }
    }
}

/// The sandbox's spec for a container: its user and groups, environment, hostname, working
/// directory, volumes and tmpfs mounts, privileges. Its cgroups, network and /etc files are
/// the caller's.
fn spec(
    store: &Store,
    opts: &RunOptions,
    (config, argv): (&ImageConfig, Vec<String>),
    (id, rootfs): (&str, &std::path::Path),
    volumes: &[Volume],
) -> Result<Spec, ContainerError> {
    let user_spec = opts
        .user
        .clone()
        .unwrap_or_else(|| config.config.user.clone());
    let who = user::resolve(rootfs, &user_spec)?;
    let hostname = opts
        .hostname
        .clone()
        .unwrap_or_else(|| id[..12].to_string());
    let mut spec = Spec::new(rootfs, argv);
    spec.init = opts.init;
    spec.env = environment(config, opts, &who.home, &hostname);
    spec.uid = who.uid;
    spec.gid = who.gid;
    spec.groups = who.container_groups();
    for g in &opts.group_add {
        let gid = user::group_id(rootfs, g)?;
        if !spec.groups.contains(&gid) {
            spec.groups.push(gid);
        }
    }
    spec.privileges = opts.privileges.clone();
    spec.shm_size = opts.shm_size;
    for v in volumes {
        spec.mounts.push(v.prepare(store, rootfs)?);
    }
    for t in &opts.tmpfs {
        let fs = crate::sandbox::mounts::tmpfs(t.size, Some(t.mode.unwrap_or(0o1777)))?;
        spec.mounts.push(fs.at(&t.target));
    }
    spec.read_only = opts.read_only;
    spec.forward_signals = true;
    spec.hostname = hostname;
    spec.cwd = opts
        .workdir
        .clone()
        .filter(|w| !w.is_empty())
        .or_else(|| Some(config.config.working_dir.clone()).filter(|w| !w.is_empty()))
        .unwrap_or_else(|| "/".into());
    Ok(spec)
}

/// The image's layers unpacked (once per ChainID), top first: a container's lower
/// directories. `image` names it in errors.
pub fn lower_dirs(
    store: &Store,
    m: &crate::oci::Manifest,
    config: &ImageConfig,
    image: &str,
) -> Result<Vec<PathBuf>, ContainerError> {
    let blobs: Vec<Digest> = m
        .layers
        .iter()
        .map(|l| Digest::parse(&l.digest))
        .collect::<Result<_, _>>()
        .map_err(|e| ContainerError::Config(format!("{image}: layer digest: {e}")))?;
    let diffs: Vec<Digest> = config
        .rootfs
        .diff_ids
        .iter()
        .map(|d| Digest::parse(d))
        .collect::<Result<_, _>>()
        .map_err(|e| ContainerError::Config(format!("{image}: diff_id: {e}")))?;
    if blobs.len() != diffs.len() {
        return Err(ContainerError::Config(format!(
            "{image}: {} layers but {} diff_ids",
            blobs.len(),
            diffs.len()
        )));
    }
    Ok(store.unpacked_layers(&blobs, &diffs)?)
}

/// Where a kept container's options are, in its directory.
pub const OPTIONS: &str = "options.json";

/// Writes a container's options (`options.json`), its mounts resolved, for `kiln start`.
pub(crate) fn keep_options(
    dir: &std::path::Path,
    opts: &RunOptions,
    id: &str,
    volumes: &[Volume],
) -> Result<(), ContainerError> {
    let kept = RunOptions {
        id: Some(id.to_string()),
        started: None,
        volumes: volumes.to_vec(),
        volumes_from: Vec::new(),
        ..opts.clone()
    };
    // Written whole, then renamed: `kiln start` never reads half a file.
    let path = dir.join(OPTIONS);
    let tmp = dir.join(format!("{OPTIONS}.tmp"));
    serde_json::to_vec_pretty(&kept)
        .map_err(std::io::Error::other)
        .and_then(|text| {
            std::fs::create_dir_all(dir)?;
            std::fs::write(&tmp, text)?;
            std::fs::rename(&tmp, &path)
        })
        .map_err(|source| ContainerError::Io { path, source })
}

/// `kiln create`: a container made and kept as `kiln run` would make it (its name, its options,
/// its anonymous volumes), not started: `kiln start` runs it. Its id.
pub fn create(store: &Store, opts: &RunOptions) -> Result<String, ContainerError> {
    let (_, config) = image_to_run(store, opts, &|_| {})?;
    let argv = command(&config, opts)?;
    network_mode(opts)?;
    let id = new_id();
    add(store, opts, &id, &argv)?;
    store.set_container_created_only(&id)?;
    let dir = store.root().join("containers").join(&id);
    let kept = resolve_volumes(store, opts, &config)
        .and_then(|volumes| keep_options(&dir, opts, &id, &volumes));
    if let Err(e) = kept {
        let _ = store.remove_container(&id);
        let _ = std::fs::remove_dir_all(&dir);
        return Err(e);
    }
    Ok(id)
}

/// Names and records a new container (the row first: it reserves the name, unique in the
/// database, before anything runs).
fn add(store: &Store, opts: &RunOptions, id: &str, argv: &[String]) -> Result<(), ContainerError> {
    let name = match &opts.name {
        Some(n) if !valid_name(n) => {
            return Err(ContainerError::Config(format!(
                "invalid container name {n:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
            )));
        }
        Some(n) => n.clone(),
        None => {
            let base = generated_name(id);
            let taken: Vec<String> = store.containers()?.into_iter().map(|c| c.name).collect();
            (0..)
                .map(|i| {
                    if i == 0 {
                        base.clone()
                    } else {
                        format!("{base}{i}")
                    }
                })
                .find(|n| !taken.contains(n))
                .unwrap_or(base)
        }
    };
    store.add_container(&crate::store::Container {
        id: id.to_string(),
        name,
        image: opts.image.clone(),
        command: argv.join(" "),
        created: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64),
        pid: crate::procid::ProcessId::current(),
        ..Default::default()
    })?;
    Ok(())
}

/// The network a container gets: as asked, else docker's default `bridge` where it can be
/// had (netavark installed as root, slirp4netns rootless), else the host's. Ports need the
/// bridge.
pub(crate) fn network_mode(opts: &RunOptions) -> Result<crate::network::Mode, ContainerError> {
    use crate::network::Mode;
    let can_bridge = if crate::sandbox::userns::rootless() {
        crate::network::slirp::usable()
    } else {
        crate::network::netavark::binary().is_some()
    };
    let mode = match opts.network.clone() {
        Some(m) => m,
        None if can_bridge => Mode::Bridge,
        None if opts.publish.is_empty() && !opts.publish_all => Mode::Host,
        None => Mode::Bridge,
    };
    if matches!(mode, Mode::None | Mode::Host | Mode::Container(_))
        && (!opts.publish.is_empty() || opts.publish_all)
    {
        return Err(ContainerError::Config(
            "published ports (-p, -P) need the bridge network; drop --network or use \
             --network bridge"
                .into(),
        ));
    }
    Ok(mode)
}

/// What a dead monitor of the container in `dir` left: processes in the cgroups of dead
/// makers (killed, the cgroups removed), its network (namespace, rules, address, ports) and
/// every overlay stacked on its root.
fn reclaim(dir: &std::path::Path) {
    crate::sandbox::cgroup::sweep();
    crate::network::detach(dir);
    overlay::unmount_all(&dir.join("rootfs"));
}

/// Removes a container's directory, only once nothing is mounted there (a failed unmount keeps
/// it for inspection); kept as a spare for the next container when the store has few.
fn remove_dir(store: &Store, dir: &std::path::Path) {
    let mounted = std::fs::read_to_string("/proc/self/mountinfo")
        .map_or(true, |m| m.contains(&dir.display().to_string()));
    if !mounted && !spare::give(store.root(), dir) {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// `kiln rm`: forgets a container that has ended and removes its directory. A running one is
/// refused unless `force`, which kills its `kiln run` (the sandbox dies with it).
/// With `volumes`, its anonymous volumes go too (`rm -v`).
pub fn remove(
    store: &Store,
    what: &str,
    force: bool,
    volumes: bool,
) -> Result<String, ContainerError> {
    let c = store
        .find_container(what)?
        .ok_or_else(|| ContainerError::Config(format!("no such container: {what}")))?;
    let state = c.state();
    if state.is_live() {
        if !force {
            return Err(ContainerError::Config(format!(
                "container {} is running: stop it first, or use -f",
                c.name
            )));
        }
        // No restart, and a frozen process cannot die until thawed (cgroup v1's freezer).
        store.set_container_stop_requested(&c.id, true)?;
        if state == crate::store::ContainerState::Paused {
            if let Some(init) = store.container_init(&c.id)? {
                let _ = crate::sandbox::cgroup::freeze(init.pid, false);
            }
        }
        // The very `kiln run` that serves it (pid and start time), never whatever process
        // has its pid now.
        if let Some(p) = c.pid {
            p.signal(rustix::process::Signal::KILL);
            for _ in 0..200 {
                if !p.alive() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
    }
    if state.is_live() || state == crate::store::ContainerState::Dead {
        // Whatever of the container outlived its monitor (a process that escaped the
        // parent-death signal, such as a setuid program's) dies with the cgroups the dead
        // monitor left, which go too: also when the monitor was killed earlier (by a `kiln rm
        // -f` killed in turn before it could sweep, or by anyone).
        crate::sandbox::cgroup::sweep();
    }
    let dir = store.root().join("containers").join(&c.id);
    // A `kiln run` killed outright leaves its network set up, and its root mounted (maybe
    // twice, if it was started again before kiln reclaimed it).
    crate::network::detach(&dir);
    overlay::unmount_all(&dir.join("rootfs"));
    let kept = kept_options(store, &c.id);
    remove_dir(store, &dir);
    store.remove_container(&c.id)?;
    if let Some(k) = &kept {
        // A killed monitor could not unmount its volumes' own filesystems.
        for v in k.volumes.iter().filter_map(|v| v.volume.as_deref()) {
            if let Ok(Some(info)) = store.volume(v) {
                volume_mount::release(store, &info, Some(&c.id));
            }
        }
    }
    if let (true, Some(k)) = (volumes, kept) {
        remove_anonymous_volumes(store, &k.volumes, &c.id);
    }
    Ok(c.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_volume_paths_are_cleaned_inside_the_root() {
        assert_eq!(clean_volume_path("/data/"), Some("/data".into()));
        assert_eq!(clean_volume_path("/../../etc"), Some("/etc".into()));
        assert_eq!(clean_volume_path("/a/./b/../c"), Some("/a/c".into()));
        assert_eq!(clean_volume_path("relative"), Some("/relative".into()));
        assert_eq!(clean_volume_path("/"), None);
        assert_eq!(clean_volume_path("/.."), None);
    }

    #[test]
    fn volume_specs_parse_as_docker_reads_them() {
        let v = Volume::parse("data:/srv:ro").unwrap();
        assert_eq!(
            (v.volume.as_deref(), v.read_only, v.anonymous),
            (Some("data"), true, false)
        );
        let v = Volume::parse("/srv").unwrap();
        assert_eq!((v.volume.as_deref(), v.anonymous), (Some(""), true));
        let v = Volume::parse("/host:/srv:z").unwrap();
        assert_eq!(
            (v.host.as_path(), v.volume.is_none()),
            (std::path::Path::new("/host"), true)
        );
        assert!(Volume::parse("../x:/srv").is_err());
        for over in ["data:/proc", "/proc/sys", "/h:/proc/./x", "data:/./proc"] {
            let e = Volume::parse(over).unwrap_err();
            assert!(e.contains("not of type proc"), "{over}: {e}");
        }
        assert!(Volume::parse("data:/process").is_ok());
        assert!(
            Volume::parse("/host:/srv:nocopy").is_err(),
            "nocopy is for volumes"
        );
        let m = Volume::parse_mount("type=volume,src=db,dst=/d,volume-nocopy").unwrap();
        assert_eq!((m.volume.as_deref(), m.nocopy), (Some("db"), true));
        assert!(matches!(
            Volume::parse_mount("type=tmpfs,dst=/t"),
            Err(None)
        ));
        assert!(matches!(
            Volume::parse_mount("type=bind,src=rel,dst=/t"),
            Err(Some(_))
        ));
    }
}
