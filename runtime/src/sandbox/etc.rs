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
    let io = |p: &Path| {
        let path = p.display().to_string();
        move |e: io::Error| MountError {
            step: "write",
            path,
            errno: rustix::io::Errno::from_io_error(&e).unwrap_or(rustix::io::Errno::IO),
        }
    };
    let hosts = dir.join("hosts");
    std::fs::write(
        &hosts,
        format!(
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n"
        ),
    )
    .map_err(io(&hosts))?;
    let mut files = vec![("/etc/hosts", hosts)];
    if let Ok(text) = std::fs::read("/etc/resolv.conf") {
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
