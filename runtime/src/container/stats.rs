//! `kiln top` and `kiln stats`: a running container's processes (every process in the pid
//! namespace of its process 1, shown by the host's `ps`, as docker does) and its resource use
//! read from its cgroups (CPU time, memory, pids, block I/O) and its network namespace.

use std::path::PathBuf;

use super::ContainerError;
use crate::store::{Container, ContainerState, Store};

fn running(store: &Store, what: &str) -> Result<(Container, i32), ContainerError> {
    let c = store
        .find_container(what)?
        .ok_or_else(|| ContainerError::Config(format!("no such container: {what}")))?;
    let not_running = || ContainerError::Config(format!("container {} is not running", c.name));
    if !matches!(c.state(), ContainerState::Running | ContainerState::Paused) {
        return Err(not_running());
    }
    let init = store.container_init(&c.id)?.ok_or_else(not_running)?;
    Ok((c, init.pid))
}

/// The host pids of every process in the pid namespace of `init`.
pub fn pids_of(init: i32) -> Vec<i32> {
    let ns = |pid: &str| std::fs::read_link(format!("/proc/{pid}/ns/pid")).ok();
    let Some(want) = ns(&init.to_string()) else {
        return Vec::new();
    };
    let mut pids: Vec<i32> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
        .filter(|p| ns(&p.to_string()).as_ref() == Some(&want))
        .collect();
    pids.sort_unstable();
    pids
}

/// `kiln top CONTAINER [ps OPTIONS]`: the host's `ps` (with `ps_args`, `-ef` by default), only
/// the container's lines: the header's words and each row's fields (the last one whole).
pub fn top(
    store: &Store,
    what: &str,
    ps_args: &[String],
) -> Result<(Vec<String>, Vec<Vec<String>>), ContainerError> {
    let (c, init) = running(store, what)?;
    let pids = pids_of(init);
    let args: Vec<String> = if ps_args.is_empty() {
        vec!["-ef".into()]
    } else {
        ps_args.to_vec()
    };
    let out = std::process::Command::new("ps")
        .args(&args)
        .output()
        .map_err(|e| ContainerError::Config(format!("cannot run ps: {e}")))?;
    if !out.status.success() {
        return Err(ContainerError::Config(format!(
            "ps {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let header: Vec<String> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let Some(pid_col) = header.iter().position(|h| h == "PID") else {
        return Err(ContainerError::Config(format!(
            "ps {}: no PID column to find {}'s processes by",
            args.join(" "),
            c.name
        )));
    };
    let rows = lines
        .filter_map(|l| {
            let mut fields: Vec<String> = Vec::new();
            let mut rest = l.trim_start();
            // All columns but the last are single words; the last (the command) keeps spaces.
            while fields.len() + 1 < header.len() {
                let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
                fields.push(rest[..end].to_string());
                rest = rest[end..].trim_start();
            }
            fields.push(rest.to_string());
            let pid: i32 = fields.get(pid_col)?.parse().ok()?;
            pids.contains(&pid).then_some(fields)
        })
        .collect();
    Ok((header, rows))
}

/// One reading of a container's use of resources.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sample {
    /// CPU time used so far, in nanoseconds.
    pub cpu_ns: u64,
    /// Memory in use (without the inactive page cache, as docker counts it) and the limit
    /// (the machine's memory when there is none).
    pub memory: u64,
    pub memory_limit: u64,
    pub pids: u64,
    pub net_rx: u64,
    pub net_tx: u64,
    pub block_read: u64,
    pub block_write: u64,
}

/// The first of `files` that exists in a cgroup of `dirs` (v1 `controller`, or v2), read.
fn read_in(dirs: &[(String, PathBuf)], controller: &str, files: &[&str]) -> Option<String> {
    for (ctls, dir) in dirs {
        if !ctls.is_empty() && !ctls.split(',').any(|c| c == controller) {
            continue;
        }
        for f in files {
            if let Ok(text) = std::fs::read_to_string(dir.join(f)) {
                return Some(text);
            }
        }
    }
    None
}

/// `key value` lines (memory.stat, cpu.stat): the value of `key`.
fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

fn machine_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Reads container `what`'s use of resources now; its record with it.
pub fn sample(store: &Store, what: &str) -> Result<(Container, Sample), ContainerError> {
    let (c, init) = running(store, what)?;
    // The container's own cgroups only: a figure kiln has no cgroup for stays 0, never the
    // host's.
    let dirs = crate::sandbox::cgroup::kiln_cgroups_of(init);
    let num = |t: Option<String>| t.and_then(|t| t.trim().parse::<u64>().ok());
    let mut s = Sample {
        cpu_ns: num(read_in(&dirs, "cpuacct", &["cpuacct.usage"]))
            .or_else(|| {
                read_in(&dirs, "cpu", &["cpu.stat"])
                    .and_then(|t| keyed(&t, "usage_usec"))
                    .map(|u| u * 1000)
            })
            .unwrap_or(0),
        pids: num(read_in(&dirs, "pids", &["pids.current"])).unwrap_or(0),
        ..Sample::default()
    };
    let usage = num(read_in(
        &dirs,
        "memory",
        &["memory.usage_in_bytes", "memory.current"],
    ))
    .unwrap_or(0);
    let inactive = read_in(&dirs, "memory", &["memory.stat"])
        .and_then(|t| keyed(&t, "total_inactive_file").or_else(|| keyed(&t, "inactive_file")))
        .unwrap_or(0);
    s.memory = usage.saturating_sub(inactive);
    let machine = machine_memory();
    s.memory_limit = read_in(&dirs, "memory", &["memory.limit_in_bytes", "memory.max"])
        .and_then(|t| t.trim().parse::<u64>().ok())
        .filter(|l| *l < machine)
        .unwrap_or(machine);
    if let Some(t) = read_in(
        &dirs,
        "blkio",
        &["blkio.throttle.io_service_bytes_recursive", "io.stat"],
    ) {
        for l in t.lines() {
            let w: Vec<&str> = l.split_whitespace().collect();
            match w.as_slice() {
                [_, "Read", n] => s.block_read += n.parse::<u64>().unwrap_or(0),
                [_, "Write", n] => s.block_write += n.parse::<u64>().unwrap_or(0),
                [_, rest @ ..] if rest.iter().any(|f| f.starts_with("rbytes=")) => {
                    for f in rest {
                        if let Some(n) = f.strip_prefix("rbytes=") {
                            s.block_read += n.parse::<u64>().unwrap_or(0);
                        } else if let Some(n) = f.strip_prefix("wbytes=") {
                            s.block_write += n.parse::<u64>().unwrap_or(0);
                        }
                    }
                }
                _ => {}
            }
        }
    }
    // The container's network namespace, seen through its process 1; none of its own (the
    // host's network) counts nothing, as docker shows it.
    let own_net = std::fs::read_link(format!("/proc/{init}/ns/net")).ok()
        != std::fs::read_link("/proc/self/ns/net").ok();
    let dev = own_net
        .then(|| std::fs::read_to_string(format!("/proc/{init}/net/dev")).ok())
        .flatten();
    if let Some(dev) = dev {
        for l in dev.lines().skip(2) {
            let Some((name, rest)) = l.split_once(':') else {
                continue;
            };
            if name.trim() == "lo" {
                continue;
            }
            let f: Vec<u64> = rest
                .split_whitespace()
                .filter_map(|x| x.parse().ok())
                .collect();
            if f.len() >= 9 {
                s.net_rx += f[0];
                s.net_tx += f[8];
            }
        }
    }
    Ok((c, s))
}
