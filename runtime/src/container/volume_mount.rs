//! Volumes with the local driver's options (`kiln volume create -o type=tmpfs -o device=tmpfs
//! -o o=size=64m`, `-o type=none -o o=bind -o device=/srv/data`): what the options name is
//! mounted at the volume's mountpoint when a container first needs it, and unmounted when the
//! last container using it has stopped (a tmpfs volume's content goes then, as docker's does).
//! The mount is made in the host's mount namespace (rootless, the store's shared one), so every
//! container using the volume sees the same filesystem. Rootless, the kernel allows filesystems
//! a user namespace may mount (tmpfs, binds of what the user can read), not devices.

use std::{collections::BTreeMap, path::Path};

use rustix::mount::MountFlags;

use super::ContainerError;
use crate::store::{Store, VolumeInfo};

/// The options docker's local driver takes.
const KEYS: [&str; 3] = ["type", "device", "o"];

/// Checks `options` as docker's local driver does when the volume is created.
pub fn validate(options: &BTreeMap<String, String>) -> Result<(), String> {
    if let Some(k) = options.keys().find(|k| !KEYS.contains(&k.as_str())) {
        return Err(format!("invalid option key: {k:?}"));
    }
    let ty = options.get("type").map(String::as_str).unwrap_or("");
    let device = options.get("device").map(String::as_str).unwrap_or("");
    if options.is_empty() {
        return Ok(());
    }
    if ty.is_empty() || device.is_empty() {
        return Err("missing required option: both \"type\" and \"device\" are needed".into());
    }
    let (flags, _) = parse_o(options.get("o").map(String::as_str).unwrap_or(""));
    if flags.contains(MountFlags::BIND) && !device.starts_with('/') {
        return Err(format!(
            "invalid device {device:?}: a bind-backed volume needs an absolute path"
        ));
    }
    Ok(())
}

/// The `o=` list split as mount(8) does: the words that are mount flags, and the rest (the
/// filesystem's own options, comma-joined, for mount(2)'s data).
fn parse_o(o: &str) -> (MountFlags, String) {
    let mut flags = MountFlags::empty();
    let mut data = Vec::new();
    for w in o.split(',').filter(|w| !w.is_empty()) {
        match w {
            "ro" => flags |= MountFlags::RDONLY,
            "rw" => flags.remove(MountFlags::RDONLY),
            "bind" => flags |= MountFlags::BIND,
            "rbind" => flags |= MountFlags::BIND | MountFlags::REC,
            "nosuid" => flags |= MountFlags::NOSUID,
            "suid" => flags.remove(MountFlags::NOSUID),
            "nodev" => flags |= MountFlags::NODEV,
            "dev" => flags.remove(MountFlags::NODEV),
            "noexec" => flags |= MountFlags::NOEXEC,
            "exec" => flags.remove(MountFlags::NOEXEC),
            "sync" => flags |= MountFlags::SYNCHRONOUS,
            "async" => flags.remove(MountFlags::SYNCHRONOUS),
            "noatime" => flags |= MountFlags::NOATIME,
            "nodiratime" => flags |= MountFlags::NODIRATIME,
            "relatime" => flags |= MountFlags::RELATIME,
            "strictatime" => flags |= MountFlags::STRICTATIME,
            "defaults" => {}
            other => data.push(other),
        }
    }
    (flags, data.join(","))
}

/// Whether something is mounted at `path` (/proc/self/mountinfo says; a bind of a directory
/// of the same filesystem has the same device number, so that cannot tell).
fn mounted(path: &Path) -> bool {
    path.parent()
        .is_some_and(|p| crate::store::mounts_under(p).iter().any(|m| m == path))
}

/// Mounts what volume `v`'s options name at its mountpoint, unless it is there already (another
/// container uses it). A volume without options: nothing to do.
pub fn mount(v: &VolumeInfo) -> Result<(), ContainerError> {
    if v.options.is_empty() || mounted(&v.mountpoint) {
        return Ok(());
    }
    let err = |e: std::io::Error| {
        ContainerError::Config(format!(
            "error while mounting volume '{}': {e}",
            v.mountpoint.display()
        ))
    };
    // Rootless, the mount is made in the store's shared mount namespace, which every kiln
    // process of the store (and every container's) sees; a namespace of this process's own
    // would lose it when it ends.
    if crate::sandbox::userns::rootless() && !crate::sandbox::userns::shared() {
        return Err(err(std::io::Error::other(
            "rootless, volumes with mount options need the store's shared mount namespace \
             (its kiln-pause process), which this kiln could not make or join",
        )));
    }
    validate(&v.options).map_err(|m| err(std::io::Error::other(m)))?;
    let (flags, data) = parse_o(v.options.get("o").map(String::as_str).unwrap_or(""));
    let device = &v.options["device"];
    let fstype = &v.options["type"];
    std::fs::create_dir_all(&v.mountpoint).map_err(err)?;
    // A bind of the device's path: opened without following a symlink at its end, so what is
    // bound is the directory the volume names. Otherwise the filesystem's mount(2), as
    // mount(8) would make it from the same words.
    if flags.contains(MountFlags::BIND) {
        rustix::mount::mount_bind_recursive(device.as_str(), &v.mountpoint)
            .map_err(|e| err(e.into()))?;
        if flags.contains(MountFlags::RDONLY) {
            rustix::mount::mount_remount(&v.mountpoint, MountFlags::BIND | MountFlags::RDONLY, "")
                .map_err(|e| err(e.into()))?;
        }
    } else {
        let data = std::ffi::CString::new(data).map_err(|e| err(std::io::Error::other(e)))?;
        rustix::mount::mount(
            device.as_str(),
            &v.mountpoint,
            fstype.as_str(),
            flags,
            Some(data.as_c_str()),
        )
        .map_err(|e| err(e.into()))?;
    }
    Ok(())
}

/// Unmounts volume `v`'s filesystem when no live container but `except` uses it (its
/// container just stopped, or the volume is being removed).
pub fn release(store: &Store, v: &VolumeInfo, except: Option<&str>) {
    if v.options.is_empty() || !mounted(&v.mountpoint) {
        return;
    }
    let users = super::volumes_in_use(store)
        .remove(&v.name)
        .unwrap_or_default();
    let live = users
        .iter()
        .filter(|id| Some(id.as_str()) != except)
        .any(|id| {
            store
                .find_container(id)
                .ok()
                .flatten()
                .is_some_and(|c| c.state().is_live())
        });
    if !live {
        let _ = rustix::mount::unmount(&v.mountpoint, rustix::mount::UnmountFlags::DETACH);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn options_are_checked_as_dockers_local_driver_checks_them() {
        assert!(validate(&opts(&[])).is_ok());
        assert!(
            validate(&opts(&[
                ("type", "tmpfs"),
                ("device", "tmpfs"),
                ("o", "size=1m")
            ]))
            .is_ok()
        );
        let e = validate(&opts(&[("size", "1m")])).unwrap_err();
        assert_eq!(e, "invalid option key: \"size\"");
        assert!(validate(&opts(&[("type", "tmpfs")])).is_err());
        let e = validate(&opts(&[("type", "none"), ("device", "rel"), ("o", "bind")])).unwrap_err();
        assert!(e.contains("absolute"), "{e}");
    }

    #[test]
    fn o_splits_into_flags_and_data() {
        let (f, d) = parse_o("ro,nosuid,size=64m,uid=1000,bind");
        assert_eq!(
            f,
            MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::BIND
        );
        assert_eq!(d, "size=64m,uid=1000");
    }
}
