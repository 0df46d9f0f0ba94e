//! The files every sandbox gets bound over its root's: a generated `/etc/hosts` (localhost and
//! the hostname) and the host's `/etc/resolv.conf` (so `RUN apt-get update` resolves names, as
//! with BuildKit). They live in the sandbox's own directory, never in a layer.

use std::{io, path::Path};

use super::mounts::{self, Mount, MountError};

/// Writes the files into `dir`; returns the mounts for [`super::process::Spec::mounts`] (each
/// only over a plain file or a missing path: an image's own symlink is left alone).
/// `read_only` for a RUN step, as BuildKit binds them (a RUN that appends to /etc/hosts fails
/// there, instead of writing into a file that is thrown away); a container's are writable, as
/// docker's.
pub fn write_files(dir: &Path, hostname: &str, read_only: bool) -> Result<Vec<Mount>, MountError> {
    let hosts = format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n"
    );
    let resolv = std::fs::read("/etc/resolv.conf").ok();
    write_given(dir, &hosts, resolv.as_deref(), read_only)
}

/// A container's /etc/hosts and /etc/resolv.conf as given ([`resolv_text`] makes the second),
/// writable, as docker's.
pub fn write_container_files(
    dir: &Path,
    hosts: &str,
    resolv: &str,
) -> Result<Vec<Mount>, MountError> {
    write_given(dir, hosts, Some(resolv.as_bytes()), false)
}

/// A container's resolv.conf from the host's (`host`): as it is on the host's network; on a
/// bridge without its loopback name servers (which the container cannot reach; with none left,
/// docker's public defaults); with `resolvers` (the user networks', each on its gateway) those
/// are the name servers: they answer containers' names and forward the rest to the host's.
pub fn resolv_text(host: &str, bridged: bool, resolvers: &[std::net::Ipv4Addr]) -> String {
    match (bridged, resolvers) {
        (_, [_, ..]) => {
            let mut out: String = resolvers
                .iter()
                .map(|r| format!("nameserver {r}\n"))
                .collect();
            for l in host.lines().filter(|l| {
                let w = l.split_whitespace().next();
                w == Some("search") || w == Some("options")
            }) {
                out.push_str(l);
                out.push('\n');
            }
            out
        }
        (true, []) => bridged_resolv(host),
        (false, []) => host.to_string(),
    }
}

/// The host's resolv.conf as a bridged container gets it (docker's rule).
pub fn bridged_resolv(host: &str) -> String {
    let loopback = |l: &str| {
        l.split_whitespace().next() == Some("nameserver")
            && l.split_whitespace()
                .nth(1)
                .and_then(|a| a.parse::<std::net::IpAddr>().ok())
                .is_some_and(|a| a.is_loopback())
    };
    let mut kept: Vec<&str> = host.lines().filter(|l| !loopback(l)).collect();
    let servers = kept
        .iter()
        .filter(|l| l.split_whitespace().next() == Some("nameserver"))
        .count();
    let mut out = String::new();
    for l in kept.drain(..) {
        out.push_str(l);
        out.push('\n');
    }
    if servers == 0 {
        out.push_str("nameserver 8.8.8.8\nnameserver 8.8.4.4\n");
    }
    out
}

fn write_given(
    dir: &Path,
    hosts_text: &str,
    resolv: Option<&[u8]>,
    read_only: bool,
) -> Result<Vec<Mount>, MountError> {
    let io = |p: &Path| {
        let path = p.display().to_string();
        move |e: io::Error| MountError {
            step: "write",
            path,
            errno: rustix::io::Errno::from_io_error(&e).unwrap_or(rustix::io::Errno::IO),
        }
    };
    let hosts = dir.join("hosts");
    std::fs::write(&hosts, hosts_text).map_err(io(&hosts))?;
    let mut files = vec![("/etc/hosts", hosts)];
    if let Some(text) = resolv {
        let resolv = dir.join("resolv.conf");
        std::fs::write(&resolv, text).map_err(io(&resolv))?;
        files.push(("/etc/resolv.conf", resolv));
    }
    files
        .into_iter()
        .map(|(target, host)| {
            let source = mounts::bind(&host)?;
            let source = if read_only {
                source.read_only()?
            } else {
                source
            };
            let mut m = source.at(target);
            m.only_over_file = true;
            Ok(m)
        })
        .collect()
}

/// The paths [`write_files`] binds, relative to the root: a RUN step drops the empty stubs the
/// sandbox had to create for them from its layer.
pub const BOUND: [&str; 2] = ["etc/hosts", "etc/resolv.conf"];
