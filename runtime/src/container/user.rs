//! `USER` / `-u` resolved in the container's root filesystem, as docker does: `name`, `uid`,
//! `name:group`, `uid:gid`; a name must exist in /etc/passwd (a group in /etc/group), a number
//! need not; the primary group comes from passwd when not given; supplementary groups are the
//! /etc/group entries listing the user; HOME comes from passwd (else `/`).
//!
//! The files are opened with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`: an image whose
//! /etc/passwd is a symlink to `/etc/shadow` or `../../host` reads its own tree, never the host's.
//! Only regular files are read, at most 16 MiB of each (a FIFO or device is as if missing).

use std::{io::Read, path::Path};

use rustix::fs::{Mode, OFlags, ResolveFlags};

/// Why a user could not be resolved.
#[derive(Debug, thiserror::Error)]
#[error("unable to find {what} {name}: {reason}")]
pub struct UserError {
    pub what: &'static str,
    pub name: String,
    pub reason: String,
}

/// The resolved identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Who {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub home: String,
}

/// Reads `path` (absolute in the container) from `rootfs`; `None` when it does not exist.
fn read_in_root(rootfs: &Path, path: &str) -> Option<String> {
    let root = rustix::fs::open(
        rootfs,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()?;
    // Non-blocking and no controlling terminal: an image whose /etc/passwd is a FIFO (or a
    // device) must not hang kiln in open(2); only a regular file is read.
    let fd = rustix::fs::openat2(
        &root,
        path.trim_start_matches('/'),
        OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    )
    .ok()?;
    if rustix::fs::FileType::from_raw_mode(rustix::fs::fstat(&fd).ok()?.st_mode)
        != rustix::fs::FileType::RegularFile
    {
        return None;
    }
    let mut s = String::new();
    // Bounded: a hostile image could make /etc/passwd a huge file.
    std::fs::File::from(fd)
        .take(16 << 20)
        .read_to_string(&mut s)
        .ok()?;
    Some(s)
}

impl Who {
    /// The supplementary groups a container's process gets from docker: the user's (as runc
    /// gives them) plus its primary group, which docker's daemon always adds (`id` in `docker
    /// run -u 1000:60` shows `groups=60`). A RUN step has only the user's, as BuildKit.
    pub fn container_groups(&self) -> Vec<u32> {
        let mut g = self.groups.clone();
        if !g.contains(&self.gid) {
            g.push(self.gid);
        }
        g.sort_unstable();
        g
    }
}

/// Resolves `spec` (empty: root) inside `rootfs`.
pub fn resolve(rootfs: &Path, spec: &str) -> Result<Who, UserError> {
    let passwd = read_in_root(rootfs, "/etc/passwd").unwrap_or_default();
    let group = read_in_root(rootfs, "/etc/group").unwrap_or_default();
    resolve_from(&passwd, &group, spec)
}

/// `--group-add`: a group named in the container's /etc/group, or a number.
pub fn group_id(rootfs: &Path, name: &str) -> Result<u32, UserError> {
    let group = read_in_root(rootfs, "/etc/group").unwrap_or_default();
    group
        .lines()
        .map(|l| l.split(':').collect::<Vec<_>>())
        .find(|f| f.len() >= 3 && f[0] == name)
        .and_then(|f| f[2].parse().ok())
        .or_else(|| name.parse().ok())
        .ok_or_else(|| UserError {
            what: "group",
            name: name.to_string(),
            reason: "no matching entries in group file".into(),
        })
}

/// The logic of [`resolve`] on the files' text.
pub fn resolve_from(passwd: &str, group: &str, spec: &str) -> Result<Who, UserError> {
    let (user, grp) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let user = if user.is_empty() { "0" } else { user };
    let fields = |line: &str| line.split(':').map(str::to_string).collect::<Vec<_>>();
    let entry = passwd
        .lines()
        .map(fields)
        .filter(|f| f.len() >= 7)
        .find(|f| f[0] == user || f[2] == user);
    let (uid, mut gid, home, name) = match (&entry, user.parse::<u32>()) {
        (Some(f), _) => (
            f[2].parse::<u32>().map_err(|_| UserError {
                what: "user",
                name: user.to_string(),
                reason: format!("bad uid {:?} in /etc/passwd", f[2]),
            })?,
            f[3].parse::<u32>().unwrap_or(0),
            f[5].clone(),
            Some(f[0].clone()),
        ),
        (None, Ok(n)) => (n, 0, "/".to_string(), None),
        (None, Err(_)) => {
            return Err(UserError {
                what: "user",
                name: user.to_string(),
                reason: "no matching entries in passwd file".into(),
            });
        }
    };
    let groups_table: Vec<Vec<String>> =
        group.lines().map(fields).filter(|f| f.len() >= 3).collect();
    if let Some(g) = grp.filter(|g| !g.is_empty()) {
        gid = match groups_table.iter().find(|f| f[0] == g || f[2] == g) {
            Some(f) => f[2].parse().unwrap_or(0),
            None => g.parse().map_err(|_| UserError {
                what: "group",
                name: g.to_string(),
                reason: "no matching entries in group file".into(),
            })?,
        };
    }
    // runc's rule: supplementary groups only in the implicit form (`name` or a uid with a
    // passwd entry); `name:group` and `uid:gid` give none.
    let implicit = grp.is_none_or(str::is_empty);
    let mut groups: Vec<u32> = match name.as_ref().filter(|_| implicit) {
        Some(n) => groups_table
            .iter()
            .filter(|f| f.get(3).is_some_and(|m| m.split(',').any(|m| m == n)))
            .filter_map(|f| f[2].parse().ok())
            .collect(),
        None => Vec::new(),
    };
    groups.sort_unstable();
    groups.dedup();
    Ok(Who {
        uid,
        gid,
        groups,
        home: if home.is_empty() { "/".into() } else { home },
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nwww:x:33:33:www:/var/www:/bin/false\n";
    const GROUP: &str = "root:x:0:\nwww:x:33:\nstaff:x:50:www,bob\n";

    #[test]
    fn docker_rules() {
        let r = |s: &str| resolve_from(PASSWD, GROUP, s);
        let who = |uid, gid, groups: &[u32], home: &str| Who {
            uid,
            gid,
            groups: groups.to_vec(),
            home: home.into(),
        };
        assert_eq!(r("").unwrap(), who(0, 0, &[], "/root"));
        assert_eq!(r("www").unwrap(), who(33, 33, &[50], "/var/www"));
        assert_eq!(r("33").unwrap(), who(33, 33, &[50], "/var/www"));
        assert_eq!(r("1000").unwrap(), who(1000, 0, &[], "/"));
        assert_eq!(r("1000:1001").unwrap(), who(1000, 1001, &[], "/"));
        // An explicit group: no supplementary groups (runc's rule).
        assert_eq!(r("www:staff").unwrap(), who(33, 50, &[], "/var/www"));
        assert_eq!(r("33:33").unwrap(), who(33, 33, &[], "/var/www"));
        // A container adds the primary group, as docker's daemon.
        assert_eq!(r("www").unwrap().container_groups(), vec![33, 50]);
        assert_eq!(r("www:staff").unwrap().container_groups(), vec![50]);
        assert_eq!(r("2000").unwrap().container_groups(), vec![0]);
        assert_eq!(
            r("nobody-here").unwrap_err().to_string(),
            "unable to find user nobody-here: no matching entries in passwd file"
        );
        assert_eq!(
            r("www:nogroup").unwrap_err().to_string(),
            "unable to find group nogroup: no matching entries in group file"
        );
    }

    #[test]
    fn files_are_read_inside_the_root() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("etc")).unwrap();
        // An absolute symlink: resolved inside the root, where it names nothing.
        std::os::unix::fs::symlink("/etc/hostname", d.path().join("etc/passwd")).unwrap();
        assert_eq!(read_in_root(d.path(), "/etc/passwd"), None);
        std::fs::write(d.path().join("etc/hostname"), "inside").unwrap();
        assert_eq!(
            read_in_root(d.path(), "/etc/passwd").as_deref(),
            Some("inside"),
            "the link is followed within the root"
        );
        std::os::unix::fs::symlink("../../../../../etc/os-release", d.path().join("etc/group"))
            .unwrap();
        assert_eq!(
            read_in_root(d.path(), "/etc/group"),
            None,
            "`..` stops at the root"
        );
    }
}
