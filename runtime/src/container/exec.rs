//! `kiln exec`: a command in a running container, as `docker exec` runs it: the container's
//! environment (its process 1's, with `-e` on top), its user unless `-u` names another (looked
//! up in the container's own /etc/passwd and /etc/group), its working directory (its process
//! 1's) unless `-w`;
//! the process itself is started by [`crate::sandbox::exec`].

use super::ContainerError;
use crate::{
    sandbox::{exec::ExecSpec, process},
    store::{ContainerState, Store},
};

/// `kiln exec`'s options.
#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    pub args: Vec<String>,
    /// `-e K=V` / `-e K` (the host's value).
    pub env: Vec<String>,
    pub user: Option<String>,
    pub workdir: Option<String>,
    /// Killed when it runs longer.
    pub timeout: Option<std::time::Duration>,
}

/// The environment of process `pid` (`/proc/PID/environ`).
fn environ(pid: i32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/environ"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .filter(|kv| !kv.is_empty())
        .map(|kv| String::from_utf8_lossy(kv).into_owned())
        .collect()
}

/// The real uid, gid and supplementary groups of process `pid`.
fn ids(pid: i32) -> Option<(u32, u32, Vec<u32>)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|rest| {
                rest.split_whitespace()
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
    };
    let uid = field("Uid:")?.first()?.parse().ok()?;
    let gid = field("Gid:")?.first()?.parse().ok()?;
    let groups = field("Groups:")
        .unwrap_or_default()
        .iter()
        .filter_map(|g| g.parse().ok())
        .collect();
    Some((uid, gid, groups))
}

/// Runs `opts.args` in the running container `what` with the given stdio (or a terminal of
/// its own, joined to `Io::Terminal`'s); its exit code.
/// Rootless: enters the user namespace container `what` runs in (see
/// [`crate::sandbox::userns::join_of`]); as root, or when it is not running, nothing.
pub fn join_user_namespace(store: &Store, what: &str) -> Result<(), ContainerError> {
    if rustix::process::geteuid().is_root() {
        return Ok(());
    }
    let Some(c) = store.find_container(what)? else {
        return Ok(());
    };
    if let Some(init) = store.container_init(&c.id)? {
        crate::sandbox::userns::join_of(init.pid)
            .map_err(|e| ContainerError::Config(e.to_string()))?;
    }
    Ok(())
}

pub fn exec(
    store: &Store,
    what: &str,
    opts: &ExecOptions,
    io: super::Io,
) -> Result<i32, ContainerError> {
    let c = store
        .find_container(what)?
        .ok_or_else(|| ContainerError::Config(format!("no such container: {what}")))?;
    let not_running = || ContainerError::Config(format!("container {} is not running", c.name));
    match c.state() {
        ContainerState::Running => {}
        ContainerState::Paused => {
            return Err(ContainerError::Config(format!(
                "container {} is paused, unpause the container before exec",
                c.name
            )));
        }
        _ => return Err(not_running()),
    }
    let init = store.container_init(&c.id)?.ok_or_else(not_running)?;
    if opts.args.is_empty() {
        return Err(ContainerError::Config("exec needs a command".into()));
    }
    let rootfs = store.root().join("containers").join(&c.id).join("rootfs");
    let (uid, gid, groups, home) = match &opts.user {
        Some(u) => {
            let who = super::user::resolve(&rootfs, u)?;
            (who.uid, who.gid, who.container_groups(), Some(who.home))
        }
        None => {
            let (uid, gid, groups) = ids(init.pid).ok_or_else(not_running)?;
            (uid, gid, groups, None)
        }
    };
    if let Some(id) = [uid, gid]
        .into_iter()
        .chain(groups.iter().copied())
        .find(|id| !crate::sandbox::userns::mapped(*id))
    {
        return Err(ContainerError::Config(format!(
            "id {id} does not exist in rootless kiln's user namespace: only root is mapped \
             without a range for this user in /etc/subuid and /etc/subgid"
        )));
    }
    let mut env = environ(init.pid);
    let mut set = |k: &str, v: &str| {
        env.retain(|kv| kv.split_once('=').map_or(kv.as_str(), |(key, _)| key) != k);
        env.push(format!("{k}={v}"));
    };
    if let Some(h) = &home {
        set("HOME", h);
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
    // The container's working directory: its process 1's (as the container sees it, since its
    // root is the container's), else the image's.
    let init_cwd = std::fs::read_link(format!("/proc/{}/cwd", init.pid))
        .ok()
        .map(|p| p.to_string_lossy().into_owned())
        .filter(|p| p.starts_with('/') && !p.ends_with(" (deleted)"));
    let cwd = match (&opts.workdir, init_cwd) {
        (Some(w), _) => w.clone(),
        (None, Some(w)) => w,
        (None, None) => store
            .resolve(&c.image)
            .ok()
            .flatten()
            .and_then(|m| store.image(&m).ok())
            .map(|(_, config, _)| config.config.working_dir)
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".into()),
    };
    let mut spec = ExecSpec {
        init,
        args: opts.args.clone(),
        env,
        cwd,
        uid,
        gid,
        groups,
        timeout: opts.timeout,
        // Exactly what the container's process 1 was granted.
        privileges: super::kept_options(store, &c.id)
            .map(|o| o.privileges)
            .unwrap_or_default(),
        tty: None,
    };
    let super::tty::Split {
        stdio: (stdin, stdout, stderr),
        child_end,
        ours: channel,
    } = super::tty::split(io)?;
    spec.tty = child_end;
    let status = std::thread::scope(|s| {
        if let Some((ours, t)) = channel {
            s.spawn(move || super::tty::serve(ours, t));
        }
        let status = crate::sandbox::exec::exec(&spec, stdin.into(), stdout.into(), stderr.into());
        // The last end of the terminal socket on the process's side: the relay's wait ends.
        spec.tty = None;
        status
    })?;
    Ok(process::exit_code(status))
}
