//! `kiln stop`, `kiln kill`, `kiln wait`: acting on a running container through its process 1
//! (pid and start time recorded when it started, signalled through a pidfd, so never another
//! process that got the pid later). Its monitor (the `kiln run` serving it) sees it end and
//! records the exit code.

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

/// Waits until container `id` is no longer running, at most `limit`; its state then.
fn wait_state(
    store: &Store,
    id: &str,
    limit: Option<Duration>,
) -> Result<ContainerState, ContainerError> {
    let t0 = Instant::now();
    loop {
        let c = find(store, id)?;
        let state = c.state();
        if state != ContainerState::Running || limit.is_some_and(|l| t0.elapsed() >= l) {
            return Ok(state);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
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
    if c.state() != ContainerState::Running {
        return Ok(c.name);
    }
    let sig = signal.unwrap_or_else(|| stop_signal(store, &c));
    if let Some(init) = store.container_init(&c.id)? {
        init.signal(sig);
        if wait_state(store, &c.id, Some(timeout))? != ContainerState::Running {
            return Ok(c.name);
        }
        init.signal(Signal::KILL);
    }
    // Killed (or never started): its monitor records the end; a dead monitor leaves it Dead.
    wait_state(store, &c.id, Some(Duration::from_secs(10)))?;
    Ok(c.name)
}

/// `kiln kill`: `signal` to a running container's process 1.
pub fn kill(store: &Store, what: &str, signal: Signal) -> Result<String, ContainerError> {
    let c = find(store, what)?;
    let init = match c.state() {
        ContainerState::Running => store.container_init(&c.id)?,
        _ => None,
    };
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
    Ok(match wait_state(store, &c.id, None)? {
        ContainerState::Exited(code) => code,
        _ => -1,
    })
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
        ContainerState::Running => store.container_init(&c.id)?,
        _ => None,
    };
    let code = match state {
        ContainerState::Running => 0,
        ContainerState::Exited(code) => code,
        ContainerState::Dead => -1,
    };
    let image_id = store
        .resolve(&c.image)
        .ok()
        .flatten()
        .and_then(|m| store.image(&m).ok())
        .map(|(_, _, config)| config.to_string())
        .unwrap_or_default();
    let health = store.container_health(&c.id)?;
    let mut words = c.command.split_whitespace().map(str::to_string);
    let path = words.next().unwrap_or_default();
    let args: Vec<String> = words.collect();
    Ok(serde_json::json!({
        "Id": c.id,
        "Created": time(Some(c.created)),
        "Path": path,
        "Args": args,
        "State": {
            "Status": state.name(),
            "Running": state == ContainerState::Running,
            "Paused": false,
            "Restarting": false,
            "OOMKilled": false,
            "Dead": state == ContainerState::Dead,
            "Pid": init.map_or(0, |p| p.pid),
            "ExitCode": code,
            "Error": "",
            "StartedAt": time(Some(c.created)),
            "FinishedAt": time(c.finished),
            "Health": health,
        },
        "Image": image_id,
        "Name": format!("/{}", c.name),
        "LogPath": super::logs::path(store.root(), &c.id),
        "Config": {
            "Image": c.image,
            "Cmd": c.command.split_whitespace().collect::<Vec<_>>(),
        },
    }))
}

/// Whether `c` passes `kiln ps --filter KEY=VALUE` (docker's keys: `status`, `name` (a
/// substring), `id` (a prefix), `ancestor` (the image as named)); `None` for an unknown key.
pub fn ps_filter(c: &Container, key: &str, value: &str) -> Option<bool> {
    Some(match key {
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
        if c.state() != ContainerState::Running {
            super::remove(store, &c.id, false)?;
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
