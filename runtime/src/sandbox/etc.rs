//! The files every sandbox gets bound over its root's: a generated `/etc/hosts` (localhost and
//! the hostname) and the host's `/etc/resolv.conf` (so `RUN apt-get update` resolves names, as
//! with BuildKit). They live in the sandbox's own directory, never in a layer.

use std::{
    io,
    path::{Path, PathBuf},
};

use super::mounts::{self, Mount, MountError};

/// Writes the files into `dir`; returns the mounts for [`super::process::Spec::mounts`] (each
/// only over a plain file or a missing path: an image's own symlink is left alone). `extra`:
/// lines added to /etc/hosts (`kiln build --add-host`). `read_only` for a RUN step, as
/// BuildKit binds them (a RUN that appends to /etc/hosts fails there, instead of writing into a
/// file that is thrown away); a container's are writable, as docker's.
pub fn write_files(
    dir: &Path,
    hostname: &str,
    extra: &str,
    read_only: bool,
) -> Result<Vec<Mount>, MountError> {
    let hosts = format!(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n{extra}"
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
    crate::inplace::overwrite(&hosts, hosts_text.as_bytes()).map_err(io(&hosts))?;
    let mut files = vec![("/etc/hosts", hosts)];
    if let Some(text) = resolv {
        let resolv = dir.join("resolv.conf");
        crate::inplace::overwrite(&resolv, text).map_err(io(&resolv))?;
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

/// Copies the extended attributes of `from` to `to`, but for overlayfs' own (an opaque mark
/// would hide the image's /etc). Best effort: one the filesystem or the user may not set (a
/// `security.` label rootless) is left out, as where a copy-up could not set it either.
fn copy_xattrs(from: &Path, to: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let Ok(size) = rustix::fs::llistxattr_query(from) else {
        return;
    };
    let mut names = vec![0u8; size];
    let Ok(n) = rustix::fs::llistxattr(from, &mut names) else {
        return;
    };
    names.truncate(n);
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        if name.starts_with(b"trusted.overlay.") || name.starts_with(b"user.overlay.") {
            continue;
        }
        let name = std::ffi::OsStr::from_bytes(name);
        let Ok(len) = rustix::fs::lgetxattr_query(from, name) else {
            continue;
        };
        let mut value = vec![0u8; len];
        if let Ok(n) = rustix::fs::lgetxattr(from, name, &mut value) {
            let _ = rustix::fs::lsetxattr(to, name, &value[..n], rustix::fs::XattrFlags::empty());
        }
    }
}

/// What /etc is in a stack of unpacked layers (top first), as overlayfs shows it.
enum Etc {
    /// No /etc (none in any layer, or deleted by a whiteout).
    Missing,
    /// A directory: the topmost layer's, which gives it its owner, mode and time.
    Dir(usize, std::fs::Metadata),
    /// A link or a file: nothing is bound below it.
    Other,
}

fn etc_of(lower: &[PathBuf]) -> io::Result<Etc> {
    for (i, l) in lower.iter().enumerate() {
        match std::fs::symlink_metadata(l.join("etc")) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
            Ok(m) if m.is_dir() => return Ok(Etc::Dir(i, m)),
            Ok(m) if super::copyroot::is_whiteout(&m) => return Ok(Etc::Missing),
            Ok(_) => return Ok(Etc::Other),
        }
    }
    Ok(Etc::Missing)
}

/// Whether `etc/<name>` is in the layers below and at `top` (where /etc is a directory), as
/// overlayfs resolves it: the first layer with an entry decides (a whiteout hides it), and a
/// layer whose /etc is opaque, a whiteout or not a directory hides those below.
fn etc_has(lower: &[PathBuf], top: usize, name: &str) -> io::Result<bool> {
    for l in &lower[top..] {
        let etc = l.join("etc");
        match std::fs::symlink_metadata(&etc) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Ok(false),
        }
        match std::fs::symlink_metadata(etc.join(name)) {
            Ok(m) => return Ok(!super::copyroot::is_whiteout(&m)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        if super::copyroot::is_opaque(&etc) {
            return Ok(false);
        }
    }
    Ok(false)
}

/// Fills `dest` (a new, empty directory) with a layer to lie on top of `lower` (unpacked
/// layers, top first): an empty file for each of [`BOUND`] the layers lack, in an `etc` with
/// the layers' own owner, mode and times. These are the points the sandbox binds its files
/// over. Without them it creates them in the overlay's upper directory, which copies /etc up
/// and adds two files to every container and RUN step, and as many removals afterwards (0.7 ms
/// of a `kiln run --rm IMAGE true` here, on a filesystem mounted with `discard`). Returns
/// whether the layer holds anything; only `lstat` and `lgetxattr` read the layers, so a link
/// in an image leads nowhere.
pub fn build_stub_layer(lower: &[PathBuf], dest: &Path) -> io::Result<bool> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let (top, meta) = match etc_of(lower)? {
        Etc::Other => return Ok(false),
        Etc::Missing => (None, None),
        Etc::Dir(i, m) => (Some(i), Some(m)),
    };
    let mut missing = Vec::new();
    for rel in BOUND {
        let name = rel.trim_start_matches("etc/");
        let has = match top {
            Some(i) => etc_has(lower, i, name)?,
            None => false,
        };
        if !has {
            missing.push(name);
        }
    }
    if missing.is_empty() {
        return Ok(false);
    }
    let etc = dest.join("etc");
    std::fs::create_dir(&etc)?;
    for name in &missing {
        std::fs::File::create(etc.join(name))?;
    }
    // The directory's metadata last: its time is the image's, not the one the files set.
    if let (Some(m), Some(top)) = (meta, top) {
        copy_xattrs(&lower[top].join("etc"), &etc);
        std::os::unix::fs::lchown(&etc, Some(m.uid()), Some(m.gid()))?;
        std::fs::set_permissions(&etc, std::fs::Permissions::from_mode(m.mode() & 0o7777))?;
        let times = std::fs::FileTimes::new()
            .set_accessed(m.accessed()?)
            .set_modified(m.modified()?);
        std::fs::File::open(&etc)?.set_times(times)?;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    use super::*;

    fn layer(root: &Path, name: &str, files: &[&str]) -> PathBuf {
        let l = root.join(name);
        for f in files {
            let p = l.join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, "x").unwrap();
        }
        std::fs::create_dir_all(&l).unwrap();
        l
    }

    fn stubs(lower: &[PathBuf]) -> (bool, Vec<String>) {
        let dest = tempfile::tempdir().unwrap();
        let any = build_stub_layer(lower, dest.path()).unwrap();
        let mut names: Vec<String> = std::fs::read_dir(dest.path().join("etc"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        (any, names)
    }

    #[test]
    fn stubs_for_what_the_layers_lack_with_their_etc() {
        let t = tempfile::tempdir().unwrap();
        let low = layer(t.path(), "low", &["etc/hosts", "etc/passwd"]);
        let top = layer(t.path(), "top", &["etc/group"]);
        std::fs::set_permissions(top.join("etc"), std::fs::Permissions::from_mode(0o750)).unwrap();
        // An attribute of the image's /etc comes along; overlayfs' own marks do not.
        let xattrs = rustix::fs::setxattr(
            top.join("etc"),
            "user.kiln-test",
            b"kept",
            rustix::fs::XattrFlags::empty(),
        )
        .is_ok();
        let lower = vec![top.clone(), low.clone()];
        let dest = tempfile::tempdir().unwrap();
        assert!(build_stub_layer(&lower, dest.path()).unwrap());
        // The lower layer's hosts shows through: only resolv.conf is missing.
        let names: Vec<_> = std::fs::read_dir(dest.path().join("etc"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("resolv.conf")]);
        let (made, image) = (
            std::fs::metadata(dest.path().join("etc")).unwrap(),
            std::fs::metadata(top.join("etc")).unwrap(),
        );
        assert_eq!(made.mode() & 0o7777, 0o750, "the topmost /etc's mode");
        assert_eq!(made.mtime(), image.mtime(), "and its time");
        assert_eq!(made.uid(), image.uid());
        if xattrs {
            let mut v = [0u8; 8];
            let n =
                rustix::fs::getxattr(dest.path().join("etc"), "user.kiln-test", &mut v).unwrap();
            assert_eq!(&v[..n], b"kept");
        } else {
            eprintln!("skipped: the temporary directory's filesystem takes no user xattrs");
        }
        // Both there: nothing to make.
        let full = layer(t.path(), "full", &["etc/hosts", "etc/resolv.conf"]);
        assert_eq!(stubs(&[full]), (false, vec![]));
        // No /etc at all: both, in a new one.
        let bare = layer(t.path(), "bare", &["bin/sh"]);
        assert_eq!(
            stubs(&[bare]),
            (true, vec!["hosts".into(), "resolv.conf".into()])
        );
        // /etc a link: nothing is bound there.
        let linked = t.path().join("linked");
        std::fs::create_dir(&linked).unwrap();
        std::os::unix::fs::symlink("/somewhere", linked.join("etc")).unwrap();
        assert_eq!(stubs(&[linked, low]), (false, vec![]));
    }

    #[test]
    fn whiteouts_and_opaque_directories_hide_what_is_below() {
        let t = tempfile::tempdir().unwrap();
        let low = layer(t.path(), "low", &["etc/hosts", "etc/resolv.conf"]);
        // A whiteout of hosts above: it is gone.
        let top = layer(t.path(), "top", &["etc/motd"]);
        let node = top.join("etc/hosts");
        let made = rustix::fs::mknodat(
            rustix::fs::CWD,
            &node,
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_raw_mode(0),
            0,
        );
        if made.is_err() {
            eprintln!(
                "skipped: whiteouts_and_opaque_directories_hide_what_is_below needs mknod (root)"
            );
            return;
        }
        assert_eq!(stubs(&[top, low.clone()]), (true, vec!["hosts".into()]));
        // An opaque /etc above: nothing of the lower one shows.
        let opaque = layer(t.path(), "opaque", &["etc/motd"]);
        rustix::fs::setxattr(
            opaque.join("etc"),
            "trusted.overlay.opaque",
            b"y",
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
        assert_eq!(
            stubs(&[opaque.clone(), low.clone()]),
            (true, vec!["hosts".into(), "resolv.conf".into()])
        );
        // The stub's /etc is not opaque itself: the image's /etc shows through it.
        let dest = tempfile::tempdir().unwrap();
        build_stub_layer(&[opaque, low.clone()], dest.path()).unwrap();
        let mut v = [0u8; 1];
        assert!(
            rustix::fs::getxattr(dest.path().join("etc"), "trusted.overlay.opaque", &mut v)
                .is_err()
        );
        // A whiteout of /etc itself: a new /etc with both.
        let gone = t.path().join("gone");
        std::fs::create_dir(&gone).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            gone.join("etc"),
            rustix::fs::FileType::CharacterDevice,
            rustix::fs::Mode::from_raw_mode(0),
            0,
        )
        .unwrap();
        assert_eq!(
            stubs(&[gone, low]),
            (true, vec!["hosts".into(), "resolv.conf".into()])
        );
    }
}
