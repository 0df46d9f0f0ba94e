//! `kiln stop`, `kill`, `wait`, `pause`, `unpause`, `start`: acting on a container through its
//! process 1 (pid and start time recorded when it started, signalled through a pidfd, so never
//! another process that got the pid later) and its cgroup. Its monitor (the `kiln run` serving
//! it) sees it end and records the exit code.

use std::time::{Duration, Instant};

pub use rustix::process::Signal;

use super::ContainerError;
use crate::store::{Container, ContainerState, Store};

/// A signal by docker's spellings: `SIGTERM`, `TERM`, `15`.
pub fn parse_signal(s: &str) -> Option<Signal> {
    const NAMES: [(&str, Signal); 14] = [
        ("HUP", Signal::HUP),
        ("INT", Signal::INT),
        ("QUIT", Signal::QUIT),
        ("ABRT", Signal::ABORT),
        ("KILL", Signal::KILL),
        ("USR1", Signal::USR1),
        ("USR2", Signal::USR2),
        ("PIPE", Signal::PIPE),
        ("ALRM", Signal::ALARM),
        ("TERM", Signal::TERM),
        ("CONT", Signal::CONT),
        ("STOP", Signal::STOP),
        ("WINCH", Signal::WINCH),
        ("PWR", Signal::POWER),
    ];
    let up = s.trim().to_ascii_uppercase();
    let name = up.strip_prefix("SIG").unwrap_or(&up);
    if let Ok(n) = name.parse::<i32>() {
        return NAMES
            .iter()
            .map(|(_, sig)| *sig)
            .find(|sig| sig.as_raw() == n);
    }
    NAMES.iter().find(|(n, _)| *n == name).map(|(_, sig)| *sig)
}

fn find(store: &Store, what: &str) -> Result<Container, ContainerError> {
    store
        .find_container(what)?
        .ok_or_else(|| ContainerError::Config(format!("no such container: {what}")))
}

/// Waits until container `id` is no longer in a state `busy` accepts, at most `limit`; its
/// state then.
fn wait_state(
    store: &Store,
    id: &str,
    limit: Option<Duration>,
    busy: fn(ContainerState) -> bool,
) -> Result<ContainerState, ContainerError> {
    let t0 = Instant::now();
    loop {
        let c = find(store, id)?;
        let state = c.state();
        if !busy(state) || limit.is_some_and(|l| t0.elapsed() >= l) {
            return Ok(state);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Its process runs (frozen or not).
fn runs(s: ContainerState) -> bool {
    matches!(s, ContainerState::Running | ContainerState::Paused)
}

/// The signal `kiln stop` sends first: `--signal`, else the image's STOPSIGNAL, else SIGTERM.
fn stop_signal(store: &Store, c: &Container) -> Signal {
    let from_image = store
        .resolve(&c.image)
        .ok()
        .flatten()
        .and_then(|m| store.image(&m).ok())
        .map(|(_, config, _)| config.config.stop_signal)
        .filter(|s| !s.is_empty());
    from_image
        .and_then(|s| parse_signal(&s))
        .unwrap_or(Signal::TERM)
}

/// `kiln stop`: the stop signal, then SIGKILL after `timeout`; the container's name. A
/// container that is not running is left as it is.
pub fn stop(
    store: &Store,
    what: &str,
    timeout: Duration,
    signal: Option<Signal>,
) -> Result<String, ContainerError> {
    let c = find(store, what)?;
    let state = c.state();
    if !state.is_live() {
        return Ok(c.name);
    }
    // First: its restart policy must not start it again (nor its monitor, between restarts).
    store.set_container_stop_requested(&c.id, true)?;
    let sig = signal.unwrap_or_else(|| stop_signal(store, &c));
    if let Some(init) = store.container_init(&c.id)? {
        init.signal(sig);
        if state == ContainerState::Paused {
            // A frozen process handles its signal once thawed, as docker does on stop.
            thaw(store, &c.id, init.pid)?;
        }
        // Still running after the timeout: killed.
        if runs(wait_state(store, &c.id, Some(timeout), runs)?) {
            init.signal(Signal::KILL);
        }
    }
    // Ended, killed or between restarts: its monitor records the end; a dead monitor leaves it
    // Dead.
    wait_state(
        store,
        &c.id,
        Some(Duration::from_secs(10)),
        ContainerState::is_live,
    )?;
    Ok(c.name)
}

/// `kiln kill`: `signal` to a running container's process 1.
pub fn kill(store: &Store, what: &str, signal: Signal) -> Result<String, ContainerError> {
    let c = find(store, what)?;
    let init = match c.state() {
        ContainerState::Running | ContainerState::Paused => store.container_init(&c.id)?,
        _ => None,
    };
    if init.is_some() {
        // As docker: a container killed by hand is not started again by its restart policy.
        store.set_container_stop_requested(&c.id, true)?;
    }
    match init {
        Some(p) if p.signal(signal) => Ok(c.name),
        _ => Err(ContainerError::Config(format!(
            "cannot kill container {}: it is not running",
            c.name
        ))),
    }
}

/// `kiln wait`: blocks until the container ends; its exit code (-1 when its monitor died
/// without recording one).
pub fn wait(store: &Store, what: &str) -> Result<i32, ContainerError> {
    let c = find(store, what)?;
    Ok(match wait_state(store, &c.id, None, runs)? {
        ContainerState::Exited(code) | ContainerState::Restarting(code) => code,
        _ => -1,
    })
}

/// Freezes (`true`) or thaws the processes of container `id` whose process 1 is `pid`.
fn freezer(store: &Store, id: &str, pid: i32, frozen: bool) -> Result<(), ContainerError> {
    crate::sandbox::cgroup::freeze(pid, frozen).map_err(ContainerError::Config)?;
    store.set_container_paused(id, frozen)?;
    Ok(())
}

fn thaw(store: &Store, id: &str, pid: i32) -> Result<(), ContainerError> {
    freezer(store, id, pid, false)
}

/// `kiln pause`: freezes every process of a running container (the cgroup freezer).
pub fn pause(store: &Store, what: &str) -> Result<String, ContainerError> {
    let c = find(store, what)?;
    match (c.state(), store.container_init(&c.id)?) {
        (ContainerState::Running, Some(init)) => {
            freezer(store, &c.id, init.pid, true)?;
            Ok(c.name)
        }
        (ContainerState::Paused, _) => Err(ContainerError::Config(format!(
            "container {} is already paused",
            c.name
        ))),
        _ => Err(ContainerError::Config(format!(
            "container {} is not running",
            c.name
        ))),
    }
}

/// `kiln unpause`: thaws a paused container.
pub fn unpause(store: &Store, what: &str) -> Result<String, ContainerError> {
    let c = find(store, what)?;
    match (c.state(), store.container_init(&c.id)?) {
        (ContainerState::Paused, Some(init)) => {
            thaw(store, &c.id, init.pid)?;
            Ok(c.name)
        }
        _ => Err(ContainerError::Config(format!(
            "container {} is not paused",
            c.name
        ))),
    }
}

/// The right to serve a container: an exclusive lock on its directory, `containers/<id>`, held
/// by its monitor for as long as it lives (the kernel drops it when the monitor dies, even by
/// SIGKILL). Two `kiln start`s of one stopped container each start a monitor; without it both
/// would run the container, on one upper directory.
#[derive(Debug)]
pub struct Claim {
    _lock: std::fs::File,
}

/// Claims container `what` for this monitor: `Ok(None)` when another monitor serves it and it
/// runs (that start won; this one has nothing to do); waits while the other is still starting
/// it, and claims it if that one ends first.
pub fn claim(store: &Store, what: &str) -> Result<Option<Claim>, ContainerError> {
    let c = find(store, what)?;
    let dir = store.root().join("containers").join(&c.id);
    let t0 = std::time::Instant::now();
    loop {
        if let Some(claim) = try_claim(&dir)? {
            return Ok(Some(claim));
        }
        if find(store, &c.id)?.state().is_live() {
            return Ok(None);
        }
        if t0.elapsed() > Duration::from_secs(60) {
            return Err(ContainerError::Config(format!(
                "container {} is being started by another kiln process",
                c.name
            )));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The claim of the container whose directory is `dir`, if no other process holds it.
pub(crate) fn try_claim(dir: &std::path::Path) -> Result<Option<Claim>, ContainerError> {
    let io = |source: std::io::Error| ContainerError::Io {
        path: dir.to_path_buf(),
        source,
    };
    // flock(2) on the directory itself, not on a file in it: a file costs a create and an
    // unlink of every `kiln run --rm` (about 65 us on an ext4 store).
    let file = std::fs::File::open(dir).map_err(io)?;
    match rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => Ok(Some(Claim { _lock: file })),
        Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
        Err(e) => Err(io(e.into())),
    }
}

/// What `kiln start` finds.
#[derive(Debug)]
pub enum Start {
    /// It runs already: nothing to do (docker prints its name all the same).
    Running(Container),
    /// Its options, to start it again through a monitor.
    Stopped(Box<super::RunOptions>),
}

/// `kiln start`: the options a container was created with (kept in its directory), its
/// stop request cleared; or that it runs already.
pub fn start(store: &Store, what: &str) -> Result<Start, ContainerError> {
    let c = find(store, what)?;
    if c.state().is_live() {
        return Ok(Start::Running(c));
    }
    let path = store
        .root()
        .join("containers")
        .join(&c.id)
        .join(super::OPTIONS);
    let text = std::fs::read(&path).map_err(|source| ContainerError::Io {
        path: path.clone(),
        source,
    })?;
    let mut opts: super::RunOptions = serde_json::from_slice(&text).map_err(|e| {
        ContainerError::Config(format!(
            "{}: not kiln's container options: {e}",
            path.display()
        ))
    })?;
    opts.id = Some(c.id.clone());
    store.set_container_stop_requested(&c.id, false)?;
    Ok(Start::Stopped(Box::new(opts)))
}

/// `kiln inspect CONTAINER`: docker's shape (`Id`, `Name`, `State`, `Config`, `LogPath`...).
/// kiln keeps the command as one line: `Path` and `Args` are its words.
pub fn inspect(store: &Store, c: &Container) -> Result<serde_json::Value, ContainerError> {
    let state = c.state();
    let time = |t: Option<i64>| {
        t.map_or_else(
            || "0001-01-01T00:00:00Z".to_string(),
            crate::timefmt::rfc3339,
        )
    };
    let init = match state {
        ContainerState::Running | ContainerState::Paused => store.container_init(&c.id)?,
        _ => None,
    };
    let code = match state {
        ContainerState::Running | ContainerState::Paused | ContainerState::Created => 0,
        ContainerState::Exited(code) | ContainerState::Restarting(code) => code,
        ContainerState::Dead => -1,
    };
    let opts: Option<super::RunOptions> = std::fs::read(
        store
            .root()
            .join("containers")
            .join(&c.id)
            .join(super::OPTIONS),
    )
    .ok()
    .and_then(|t| serde_json::from_slice(&t).ok());
    let image = store
        .resolve(&c.image)
        .ok()
        .flatten()
        .and_then(|m| store.image(&m).ok());
    let image_id = image
        .as_ref()
        .map(|(_, _, config)| config.to_string())
        .unwrap_or_default();
    let health = store.container_health(&c.id)?;
    // The argv as run, from the options and the image (the stored line is for display only);
    // split at spaces when either is gone.
    let argv = match (&opts, &image) {
        (Some(o), Some((_, config, _))) => super::command(config, o).ok(),
        _ => None,
    }
    .unwrap_or_else(|| c.command.split_whitespace().map(str::to_string).collect());
    let (path, args) = match argv.split_first() {
        Some((p, rest)) => (p.clone(), rest.to_vec()),
        None => (String::new(), Vec::new()),
    };
    let cmd = match (&opts, &image) {
        (Some(o), _) if !o.args.is_empty() => Some(o.args.clone()),
        (Some(o), _) if o.entrypoint.is_some() => None,
        (_, Some((_, config, _))) => config.config.cmd.clone(),
        _ => Some(argv.clone()),
    };
    Ok(serde_json::json!({
        "Id": c.id,
        "Created": time(Some(c.created)),
        "Path": path,
        "Args": args,
        "State": {
            "Status": state.name(),
            "Running": runs(state),
            "Paused": state == ContainerState::Paused,
            "Restarting": matches!(state, ContainerState::Restarting(_)),
            "OOMKilled": c.oom_killed,
            "Dead": state == ContainerState::Dead,
            "Pid": init.map_or(0, |p| p.pid),
            "ExitCode": code,
            "Error": "",
            "StartedAt": time(c.started.or(Some(c.created))),
            "FinishedAt": time(c.finished),
            "Health": health,
        },
        "Image": image_id,
        "Name": format!("/{}", c.name),
        "RestartCount": c.restart_count,
        "LogPath": super::logs::path(store.root(), &c.id),
        "Config": config_json(c, opts.as_ref(), cmd),
        "HostConfig": host_config_json(opts.as_ref()),
        "NetworkSettings": network_settings_json(store, c, opts.as_ref()),
        "Mounts": opts.as_ref().map_or_else(Vec::new, |o| {
            o.volumes
                .iter()
                .map(|v| match &v.volume {
                    Some(name) => serde_json::json!({
                        "Type": "volume",
                        "Name": name,
                        "Source": v.source(store),
                        "Destination": v.target,
                        "Driver": "local",
                        "Mode": if v.read_only { "ro" } else { "z" },
                        "RW": !v.read_only,
                        "Propagation": "",
                    }),
                    None => serde_json::json!({
                        "Type": "bind",
                        "Source": v.host,
                        "Destination": v.target,
                        "Mode": if v.read_only { "ro" } else { "" },
                        "RW": !v.read_only,
                        "Propagation": "rprivate",
                    }),
                })
                .collect()
        }),
    }))
}

/// docker's `Config` of a container: what it was asked to run with.
fn config_json(
    c: &Container,
    opts: Option<&super::RunOptions>,
    cmd: Option<Vec<String>>,
) -> serde_json::Value {
    let empty = super::RunOptions::default();
    let o = opts.unwrap_or(&empty);
    serde_json::json!({
        "Hostname": o.hostname.clone().unwrap_or_else(|| c.id.chars().take(12).collect()),
        "User": o.user.clone().unwrap_or_default(),
        "Env": o.env,
        "Cmd": cmd,
        "Image": c.image,
        "WorkingDir": o.workdir.clone().unwrap_or_default(),
        "Entrypoint": o.entrypoint.as_ref().map(|e| vec![e.clone()]),
        "Healthcheck": o.health,
        "Labels": o.labels,
        "Tty": o.tty,
        "OpenStdin": o.interactive,
    })
}

/// The ports container `id` publishes now (none while it is not running).
pub fn published(store: &Store, id: &str) -> Vec<crate::network::ports::Published> {
    crate::network::attached(&store.root().join("containers").join(id))
        .map(|a| a.ports)
        .unwrap_or_default()
}

/// docker's `NetworkSettings`: the address, gateway and published ports a running container
/// holds on the bridge (empty values otherwise, as docker shows a stopped container's).
fn network_settings_json(
    store: &Store,
    c: &Container,
    opts: Option<&super::RunOptions>,
) -> serde_json::Value {
    let dir = store.root().join("containers").join(&c.id);
    let a = crate::network::attached(&dir);
    let mut ports: std::collections::BTreeMap<String, serde_json::Value> =
        std::collections::BTreeMap::new();
    if let Some(a) = &a {
        for p in &a.ports {
            for k in 0..p.range {
                let key = format!("{}/{}", p.container_port.saturating_add(k), p.protocol);
                let binding = serde_json::json!({
                    "HostIp": p.host_ip.to_string(),
                    "HostPort": p.host_port.saturating_add(k).to_string(),
                });
                if let serde_json::Value::Array(v) =
                    ports.entry(key).or_insert_with(|| serde_json::json!([]))
                {
                    v.push(binding);
                }
            }
        }
    }
    let all = crate::network::attachments(&dir);
    // The networks it is on, or would be on when started: name, id and what it holds there.
    let joined: Vec<(
        String,
        String,
        Option<&crate::network::Attached>,
        Vec<String>,
    )> = if all.is_empty() {
        let mode = opts.and_then(|o| super::network_mode(o).ok());
        match (opts, mode) {
            (Some(o), Some(m)) => super::networks::joined(o, &m)
                .into_iter()
                .map(|j| {
                    let id = super::network_def(store, &j.network)
                        .map(|d| d.id)
                        .unwrap_or_default();
                    (j.network, id, None, j.aliases)
                })
                .collect(),
            _ => Vec::new(),
        }
    } else {
        // Its aliases there: those it asked for, without the short id kiln adds.
        all.iter()
            .map(|a| {
                let aliases = a
                    .request
                    .aliases()
                    .iter()
                    .filter(|x| !c.id.starts_with(x.as_str()))
                    .cloned()
                    .collect();
                (a.def.name.clone(), a.def.id.clone(), Some(a), aliases)
            })
            .collect()
    };
    let ip = a.as_ref().map(|a| a.ip.to_string()).unwrap_or_default();
    let gateway = a
        .as_ref()
        .map(|a| a.def.gateway.to_string())
        .unwrap_or_default();
    let prefix = a.as_ref().map_or(0, |a| a.def.prefix);
    let mac = a.as_ref().map(|a| a.mac.clone()).unwrap_or_default();
    let mut networks = serde_json::Map::new();
    for (name, network_id, on, aliases) in joined {
        let aliases = Some(aliases).filter(|v| !v.is_empty());
        networks.insert(
            name,
            serde_json::json!({
                "IPAMConfig": null,
                "Links": null,
                "Aliases": aliases,
                "NetworkID": network_id,
                "EndpointID": if on.is_some() { c.id.clone() } else { String::new() },
                "Gateway": on.map(|a| a.def.gateway.to_string()).unwrap_or_default(),
                "IPAddress": on.map(|a| a.ip.to_string()).unwrap_or_default(),
                "IPPrefixLen": on.map_or(0, |a| a.def.prefix),
                "IPv6Gateway": "",
                "GlobalIPv6Address": "",
                "GlobalIPv6PrefixLen": 0,
                "MacAddress": on.map(|a| a.mac.clone()).unwrap_or_default(),
                "DriverOpts": null,
            }),
        );
    }
    serde_json::json!({
        "Bridge": "",
        "SandboxID": if a.is_some() { c.id.clone() } else { String::new() },
        "SandboxKey": a.as_ref().map(|a| a.netns.display().to_string()).unwrap_or_default(),
        "Ports": ports,
        "Gateway": gateway,
        "IPAddress": ip,
        "IPPrefixLen": prefix,
        "MacAddress": mac,
        "Networks": networks,
    })
}

/// docker's `HostConfig`: limits, binds, network mode, restart policy, read-only root.
fn host_config_json(opts: Option<&super::RunOptions>) -> serde_json::Value {
    let empty = super::RunOptions::default();
    let o = opts.unwrap_or(&empty);
    use crate::network::Mode;
    let network = match &o.network {
        Some(Mode::None) => "none".to_string(),
        Some(Mode::Host) => "host".to_string(),
        Some(Mode::Bridge) => "bridge".to_string(),
        Some(Mode::User(n)) => n.clone(),
        Some(Mode::Container(n)) => format!("container:{n}"),
        None => "default".to_string(),
    };
    let mut bindings: std::collections::BTreeMap<String, Vec<serde_json::Value>> =
        std::collections::BTreeMap::new();
    for p in &o.publish {
        for k in 0..p.range {
            bindings
                .entry(format!("{}/{}", p.container_port.saturating_add(k), p.protocol))
                .or_default()
                .push(serde_json::json!({
                    "HostIp": if p.host_ip.is_unspecified() { String::new() } else { p.host_ip.to_string() },
                    "HostPort": if p.host_port == 0 { String::new() } else { p.host_port.saturating_add(k).to_string() },
                }));
        }
    }
    use crate::sandbox::identity;
    let caps = identity::CapabilitySet::from_bits_retain(
        o.privileges.caps.unwrap_or(identity::DEFAULT_CAPS.bits()),
    );
    let mut security = Vec::new();
    if o.privileges.no_new_privs {
        security.push("no-new-privileges");
    }
    if o.privileges.unconfined && !o.privileges.privileged {
        security.push("seccomp=unconfined");
    }
    serde_json::json!({
        // docker lists `-v` mounts here, a volume by its name (anonymous ones are not listed).
        "Binds": o.volumes.iter().filter(|v| !v.anonymous).map(|v| {
            let source = match &v.volume {
                Some(name) => name.clone(),
                None => v.host.display().to_string(),
            };
            format!("{source}:{}{}", v.target, if v.read_only { ":ro" } else { "" })
        }).collect::<Vec<_>>(),
        "VolumesFrom": o.volumes_from,
        "NetworkMode": network,
        "PortBindings": bindings,
        "PublishAllPorts": o.publish_all,
        "RestartPolicy": o.restart.to_json(),
        "AutoRemove": o.remove,
        "ReadonlyRootfs": o.read_only,
        "Memory": o.limits.memory.unwrap_or(0),
        "MemorySwap": o.limits.memory_swap.map_or(0, |s| i64::try_from(s).unwrap_or(-1)),
        "NanoCpus": o.limits.cpu_quota.map_or(0, |q| {
            q * 1_000_000_000 / crate::sandbox::cgroup::CPU_PERIOD
        }),
        "CpuShares": o.limits.cpu_shares.unwrap_or(0),
        "PidsLimit": o.limits.pids,
        "Privileged": o.privileges.privileged,
        "CapAdd": identity::cap_names(caps.difference(identity::DEFAULT_CAPS)),
        "CapDrop": identity::cap_names(identity::DEFAULT_CAPS.difference(caps)),
        "SecurityOpt": security,
        "Ulimits": o.privileges.rlimits.iter().map(|r| serde_json::json!({
            "Name": r.name(),
            "Soft": i64::try_from(r.soft).unwrap_or(-1),
            "Hard": i64::try_from(r.hard).unwrap_or(-1),
        })).collect::<Vec<_>>(),
        "ShmSize": o.shm_size.unwrap_or(64 << 20),
        "Tmpfs": o.tmpfs.iter().map(|t| {
            let mut opts = Vec::new();
            if let Some(s) = t.size { opts.push(format!("size={s}")); }
            if let Some(m) = t.mode { opts.push(format!("mode={m:o}")); }
            (t.target.clone(), opts.join(","))
        }).collect::<std::collections::BTreeMap<_, _>>(),
        "GroupAdd": o.group_add,
        "LogConfig": {
            "Type": "json-file",
            "Config": o.log_rotation.map_or_else(|| serde_json::json!({}), |r| serde_json::json!({
                "max-size": r.max_size.to_string(),
                "max-file": r.max_file.to_string(),
            })),
        },
    })
}

/// Whether `c` passes `kiln ps --filter KEY=VALUE` (docker's keys: `status`, `name` (a
/// substring), `id` (a prefix), `ancestor` (the image as named), `label` (`K` or `K=V`));
/// `None` for an unknown key.
pub fn ps_filter(store: &Store, c: &Container, key: &str, value: &str) -> Option<bool> {
    Some(match key {
        "label" => {
            let labels = super::kept_options(store, &c.id)
                .map(|o| o.labels)
                .unwrap_or_default();
            match value.split_once('=') {
                Some((k, v)) => labels.get(k).is_some_and(|have| have == v),
                None => labels.contains_key(value),
            }
        }
        "status" => c.state().name() == value,
        "name" => c.name.contains(value),
        "id" => c.id.starts_with(value),
        "ancestor" => {
            c.image == value
                || crate::store::normalize_tag(&c.image).ok()
                    == crate::store::normalize_tag(value).ok()
        }
        _ => return None,
    })
}

/// `kiln rename`: a container's new name (docker's name rules; unique).
pub fn rename(store: &Store, what: &str, new: &str) -> Result<(), ContainerError> {
    let c = find(store, what)?;
    if !super::valid_name(new) {
        return Err(ContainerError::Config(format!(
            "invalid container name {new:?}: only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"
        )));
    }
    store.rename_container(&c.id, new)?;
    Ok(())
}

/// `kiln container prune`: removes every container that is not running; their ids.
pub fn prune(store: &Store) -> Result<Vec<String>, ContainerError> {
    let mut removed = Vec::new();
    for c in store.containers()? {
        if !c.state().is_live() {
            super::remove(store, &c.id, false, false)?;
            removed.push(c.id);
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signal_names() {
        assert_eq!(parse_signal("SIGTERM"), Some(Signal::TERM));
        assert_eq!(parse_signal("term"), Some(Signal::TERM));
        assert_eq!(parse_signal("9"), Some(Signal::KILL));
        assert_eq!(parse_signal("SIGUSR1"), Some(Signal::USR1));
        assert_eq!(parse_signal("NOPE"), None);
    }
}
