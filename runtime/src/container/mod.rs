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
pub mod restart;
pub mod stats;
pub mod tty;
pub mod user;

use std::{path::PathBuf, process::Stdio};

use crate::{
    digest::Digest,
    oci::ImageConfig,
    sandbox::{
        overlay::{self, Overlay},
        process::{self, Network, Spec},
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
    pub hostname: Option<String>,
    /// `-v HOST:CTR[:ro]`, in order.
    pub volumes: Vec<Volume>,
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
        if !target.starts_with('/') || target == "/" || target.split('/').any(|p| p == "..") {
            return Err(format!(
                "--tmpfs {text}: the container path must be absolute, below / and without .."
            ));
        }
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

/// One `-v HOST:CONTAINER[:ro|rw]` bind.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Volume {
    pub host: PathBuf,
    pub target: String,
    pub read_only: bool,
}

impl Volume {
    /// Parses docker's `-v` syntax for a bind: an absolute host path, an absolute container
    /// path, and optionally `ro`/`rw` (other options such as `z` or propagation are refused).
    /// A name instead of a host path would be a named volume, which kiln does not have.
    pub fn parse(spec: &str) -> Result<Volume, String> {
        let parts: Vec<&str> = spec.split(':').collect();
        let (host, target, opts) = match parts.as_slice() {
            [h, t] => (*h, *t, ""),
            [h, t, o] => (*h, *t, *o),
            _ => return Err(format!("-v {spec}: expected HOST:CONTAINER[:ro|rw]")),
        };
        if !host.starts_with('/') {
            return Err(format!(
                "-v {spec}: {host:?} is not an absolute host path (named volumes are not supported)"
            ));
        }
        if !target.starts_with('/') || target.split('/').any(|p| p == "..") || target == "/" {
            return Err(format!(
                "-v {spec}: the container path must be absolute, below / and without .."
            ));
        }
        let mut read_only = false;
        for o in opts.split(',').filter(|o| !o.is_empty()) {
            match o {
                "ro" => read_only = true,
                "rw" => read_only = false,
                other => return Err(format!("-v {spec}: unsupported option {other:?}")),
            }
        }
        Ok(Volume {
            host: PathBuf::from(host),
            target: target.to_string(),
            read_only,
        })
    }

    /// The detached bind of the host path; a missing host path is created as a directory, as
    /// docker's `-v` does.
    fn prepare(&self) -> Result<crate::sandbox::mounts::Mount, ContainerError> {
        let spec = format!("{}:{}", self.host.display(), self.target);
        if std::fs::symlink_metadata(&self.host).is_err() {
            std::fs::create_dir_all(&self.host).map_err(|source| ContainerError::Io {
                path: self.host.clone(),
                source,
            })?;
        }
        let wrap = |source| ContainerError::Volume {
            spec: spec.clone(),
            source,
        };
        let mut d = crate::sandbox::mounts::bind(&self.host).map_err(wrap)?;
        if self.read_only {
            d = d.read_only().map_err(wrap)?;
        }
        Ok(d.at(&self.target))
    }
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
    let manifest = store
        .resolve(&opts.image)?
        .ok_or_else(|| ContainerError::NoImage(opts.image.clone()))?;
    let (m, config, _) = store.image(&manifest)?;
    let host = crate::oci::host_platform();
    if !config.architecture.is_empty()
        && (config.architecture != host.architecture || config.os != host.os)
    {
        return Err(ContainerError::Config(format!(
            "{}: the image is for {}/{}, this machine runs {}; kiln does not emulate other \
             platforms",
            opts.image,
            config.os,
            config.architecture,
            crate::oci::host_platform_string()
        )));
    }
    let argv = command(&config, opts)?;
    let mode = network_mode(opts)?;
    let mut lower = lower_dirs(store, &m, &config, &opts.image)?;
    let id = opts.id.clone().unwrap_or_else(new_id);
    let existing = match &opts.id {
        Some(i) => store.find_container(i)?.filter(|c| c.id == *i),
        None => None,
    };
    if existing.is_some() {
        store.restart_container(&id, crate::procid::ProcessId::current())?;
        // A monitor killed outright left its overlay mounted on the same upper and work
        // directories (and maybe processes in its cgroups): gone before anything mounts again.
        reclaim(&store.root().join("containers").join(&id));
    } else {
        add(store, opts, &id, &argv)?;
    }
    let dir = store.root().join("containers").join(&id);
    let noted = store.note_container_layers(&id, &lower);
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
    let result: Result<i32, ContainerError> = (|| {
        noted?;
        if existing.is_none() && !opts.remove {
            let kept = RunOptions {
                id: Some(id.clone()),
                started: None,
                ..opts.clone()
            };
            // Written whole, then renamed: `kiln start` never reads half a file.
            let path = dir.join(OPTIONS);
            let tmp = dir.join(format!("{OPTIONS}.tmp"));
            serde_json::to_vec_pretty(&kept)
                .map_err(std::io::Error::other)
                .and_then(|text| {
                    std::fs::create_dir_all(&dir)?;
                    std::fs::write(&tmp, text)?;
                    std::fs::rename(&tmp, &path)
                })
                .map_err(io(&path))?;
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
        overlay::mount(ov, &rootfs)?;
        let attached = match mode {
            crate::network::Mode::Bridge => {
                let name = store
                    .find_container(&id)?
                    .map_or_else(|| id.clone(), |c| c.name);
                let mut ports = opts.publish.clone();
                if opts.publish_all {
                    let exposed: Vec<String> =
                        config.config.exposed_ports.keys().cloned().collect();
                    ports.extend(
                        crate::network::ports::exposed(&exposed).map_err(ContainerError::Config)?,
                    );
                }
                match crate::network::attach(&dir, (&id, &name), &ports) {
                    Ok(a) => Some(a),
                    Err(e) => {
                        let _ = overlay::unmount(&rootfs);
                        return Err(e.into());
                    }
                }
            }
            _ => None,
        };
        let ran = (|| {
            let user_spec = opts
                .user
                .clone()
                .unwrap_or_else(|| config.config.user.clone());
            let who = user::resolve(&rootfs, &user_spec)?;
            let hostname = opts
                .hostname
                .clone()
                .unwrap_or_else(|| id[..12].to_string());
            let mut spec = Spec::new(&rootfs, argv);
            spec.init = opts.init;
            spec.env = environment(&config, opts, &who.home, &hostname);
            spec.uid = who.uid;
            spec.gid = who.gid;
            spec.groups = who.container_groups();
            for g in &opts.group_add {
                let gid = user::group_id(&rootfs, g)?;
                if !spec.groups.contains(&gid) {
                    spec.groups.push(gid);
                }
            }
            spec.privileges = opts.privileges.clone();
            spec.shm_size = opts.shm_size;
            spec.mounts = match &attached {
                Some(a) => crate::sandbox::etc::write_files_bridged(
                    &dir,
                    &crate::network::hosts_file(&hostname, Some(a.ip)),
                )?,
                None => crate::sandbox::etc::write_files(&dir, &hostname, false)?,
            };
            for v in &opts.volumes {
                spec.mounts.push(v.prepare()?);
            }
            for t in &opts.tmpfs {
                let fs = crate::sandbox::mounts::tmpfs(t.size, Some(t.mode.unwrap_or(0o1777)))?;
                spec.mounts.push(fs.at(&t.target));
            }
            spec.read_only = opts.read_only;
            spec.forward_signals = true;
            // Always a cgroup: it carries the device allow-list besides any limits.
            let (join, unapplied) =
                crate::sandbox::cgroup::Cgroup::create_accounted(&id[..12], &opts.limits);
            for w in unapplied {
                warn(&w);
            }
            spec.cgroup = join;
            spec.hostname = hostname;
            spec.cwd = opts
                .workdir
                .clone()
                .filter(|w| !w.is_empty())
                .or_else(|| Some(config.config.working_dir.clone()).filter(|w| !w.is_empty()))
                .unwrap_or_else(|| "/".into());
            spec.network = match (&attached, mode) {
                (Some(a), _) => Network::Join(a.netns.clone()),
                (None, crate::network::Mode::None) => Network::None,
                (None, _) => Network::Host,
            };
            let tty::Split {
                stdio: (i, o, e),
                child_end,
                ours: channel,
            } = tty::split(stdio)?;
            spec.tty = child_end;
            // Once the process runs: its pid recorded (what `kiln stop` signals), the caller
            // told.
            let (tx, rx) = std::sync::mpsc::channel::<u32>();
            spec.started = Some(tx);
            let status = std::thread::scope(|s| {
                let id = &id;
                if let Some((ours, t)) = channel {
                    s.spawn(move || tty::serve(ours, t));
                }
                s.spawn(move || {
                    if let Ok(pid) = rx.recv() {
                        let init = i32::try_from(pid)
                            .ok()
                            .and_then(crate::procid::ProcessId::of);
                        if let Some(init) = init {
                            let _ = store.set_container_init(id, init);
                        }
                        if let Some(tell) = &opts.started {
                            let _ = tell.send(id.clone());
                        }
                    }
                });
                let status = process::run(&spec, i, o, e);
                // Before the cgroups go with `spec`: did the OOM killer end it?
                let _ = store.set_container_oom_killed(id, spec.cgroup.oom_killed());
                // The last sender: the thread above ends (it was told, or never will be).
                spec.started = None;
                // The last end of the terminal socket on the container's side.
                spec.tty = None;
                status
            })?;
            Ok::<_, ContainerError>(process::exit_code(status))
        })();
        if attached.is_some() {
            crate::network::detach(&dir);
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
        remove_dir(&dir);
        store.remove_container(&id)?;
    } else if again {
        store.set_container_restarting(&id, code)?;
    } else {
        store.finish_container(&id, code)?;
    }
    result
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
/// had (netavark installed, kiln root), else the host's. Ports need the bridge.
fn network_mode(opts: &RunOptions) -> Result<crate::network::Mode, ContainerError> {
    use crate::network::Mode;
    let can_bridge =
        crate::network::netavark::binary().is_some() && !crate::sandbox::userns::rootless();
    let mode = match opts.network {
        Some(m) => m,
        None if can_bridge => Mode::Bridge,
        None if opts.publish.is_empty() && !opts.publish_all => Mode::Host,
        None => Mode::Bridge,
    };
    if mode != Mode::Bridge && (!opts.publish.is_empty() || opts.publish_all) {
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
/// it for inspection).
fn remove_dir(dir: &std::path::Path) {
    let mounted = std::fs::read_to_string("/proc/self/mountinfo")
        .map_or(true, |m| m.contains(&dir.display().to_string()));
    if !mounted {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// `kiln rm`: forgets a container that has ended and removes its directory. A running one is
/// refused unless `force`, which kills its `kiln run` (the sandbox dies with it).
pub fn remove(store: &Store, what: &str, force: bool) -> Result<String, ContainerError> {
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
    remove_dir(&dir);
    store.remove_container(&c.id)?;
    Ok(c.name)
}
