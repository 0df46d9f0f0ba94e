//! The files every sandbox gets bound over its root's: a generated `/etc/hosts` (localhost and
//! the hostname) and the host's `/etc/resolv.conf` (so `RUN apt-get update` resolves names, as
//! with BuildKit). They live in the sandbox's own directory, never in a layer.

use std::{
    io,
    path::{Path, PathBuf},
};

/// Writes the files into `dir`; returns the binds for [`super::process::Spec::binds`].
pub fn write_files(dir: &Path, hostname: &str) -> io::Result<Vec<(String, PathBuf)>> {
    let hosts = dir.join("hosts");
    std::fs::write(
        &hosts,
        format!(
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n"
        ),
    )?;
    let mut binds = vec![("/etc/hosts".to_string(), hosts)];
    if let Ok(text) = std::fs::read("/etc/resolv.conf") {
        let resolv = dir.join("resolv.conf");
        std::fs::write(&resolv, text)?;
        binds.push(("/etc/resolv.conf".to_string(), resolv));
    }
    Ok(binds)
}

/// The paths [`write_files`] binds, relative to the root: a RUN step drops the empty stubs the
/// sandbox had to create for them from its layer.
pub const BOUND: [&str; 2] = ["etc/hosts", "etc/resolv.conf"];
