//! Rootless kiln: when kiln is not started as root, it first moves itself into a user
//! namespace (it is root there) with a mount namespace, so overlayfs, the sandbox's namespaces
//! and its mounts all work as they do for root. Both are the store's, shared by every kiln
//! process using it and kept by its pause process ([`super::pause`]), as the host's are shared
//! by root's kiln processes: what one mounts (a container's network namespace file) the others
//! see, and a killed kiln's mounts are recovered by the next, as root's are. Nothing kiln
//! mounts there reaches the host's mount table.
//!
//! The mapping: container root is the user. With `newuidmap`/`newgidmap` (Debian's `uidmap`)
//! and a range for the user in `/etc/subuid` and `/etc/subgid`, ids 1..N map to that range, so
//! images with other owners keep them; without, only root exists inside (files owned by others
//! are unpacked as root, `USER 1000` cannot run, and kiln says so when it matters).
//!
//! Must run while the process is single-threaded (the kernel refuses `unshare(CLONE_NEWUSER)`
//! otherwise): in `main`, right after the arguments are parsed (which starts no thread).

use std::{
    io::Write,
    process::{Command, Stdio},
    sync::atomic::{AtomicBool, AtomicU32, Ordering},
};

use rustix::thread::UnshareFlags;

static ROOTLESS: AtomicBool = AtomicBool::new(false);
/// Rootless, in the store's shared namespaces (not a pair of this process's own).
static SHARED: AtomicBool = AtomicBool::new(false);
/// setgroups(2) is denied in this user namespace (only root mapped: the kernel requires the
/// denial before an unprivileged process writes its own gid map).
static SETGROUPS_DENIED: AtomicBool = AtomicBool::new(false);
static HOST_UID: AtomicU32 = AtomicU32::new(0);
/// How many ids exist inside (1: only root).
static IDS: AtomicU32 = AtomicU32::new(u32::MAX);

/// Whether kiln runs in its own user namespace (started without root).
pub fn rootless() -> bool {
    ROOTLESS.load(Ordering::SeqCst)
}

/// Whether setgroups(2) is denied here, so a container process keeps the groups kiln has (with
/// a subordinate range mapped, it is allowed, and a process's groups are set as root's are).
pub fn setgroups_denied() -> bool {
    SETGROUPS_DENIED.load(Ordering::SeqCst)
}

/// Reads whether setgroups(2) is denied in the current user namespace.
fn note_setgroups() {
    let denied = std::fs::read_to_string("/proc/self/setgroups").is_ok_and(|s| s.trim() == "deny");
    SETGROUPS_DENIED.store(denied, Ordering::SeqCst);
}

/// Whether this rootless kiln is in the store's shared namespaces ([`super::pause`]): what it
/// mounts there is seen by every kiln process of the store and outlives it.
pub fn shared() -> bool {
    SHARED.load(Ordering::SeqCst)
}

/// The uid kiln was started as.
pub fn host_uid() -> u32 {
    if rootless() {
        HOST_UID.load(Ordering::SeqCst)
    } else {
        rustix::process::geteuid().as_raw()
    }
}

/// How many ids exist inside, rootless (1: root alone, no subordinate range).
pub fn id_count() -> u32 {
    IDS.load(Ordering::SeqCst)
}

/// Whether `uid` exists inside (always as root; rootless, only in the mapped range).
pub fn mapped(id: u32) -> bool {
    id < IDS.load(Ordering::SeqCst)
}

/// Why the user namespace could not be set up.
#[derive(Debug, thiserror::Error)]
#[error("rootless setup: {step}: {source}")]
pub struct UsernsError {
    pub step: String,
    pub source: std::io::Error,
}

fn fail(step: &str) -> impl FnOnce(std::io::Error) -> UsernsError + '_ {
    move |source| UsernsError {
        step: step.to_string(),
        source,
    }
}

/// The user's first subordinate range in `file` (`/etc/subuid` format: `name|uid:start:count`).
fn subordinate(file: &str, name: Option<&str>, id: u32) -> Option<(u32, u32)> {
    let text = std::fs::read_to_string(file).ok()?;
    text.lines().find_map(|l| {
        let mut f = l.trim().split(':');
        let (who, start, count) = (f.next()?, f.next()?, f.next()?);
        (Some(who) == name || who == id.to_string())
            .then(|| Some((start.parse().ok()?, count.parse().ok()?)))
            .flatten()
    })
}

fn user_name(uid: u32) -> Option<String> {
    let text = std::fs::read_to_string("/etc/passwd").ok()?;
    text.lines().find_map(|l| {
        let mut f = l.split(':');
        let name = f.next()?;
        let _ = f.next();
        (f.next()? == uid.to_string()).then(|| name.to_string())
    })
}

/// What a rootless kiln tells the processes it starts inside its namespace (a detached
/// container's monitor): `HOST_UID:IDS:SHARED` (SHARED 1 or 0).
pub const INHERITED: &str = "KILN_ROOTLESS";

/// The value of [`INHERITED`] for a process this rootless kiln starts (`None` as root).
pub fn to_inherit() -> Option<String> {
    rootless().then(|| {
        format!(
            "{}:{}:{}",
            host_uid(),
            IDS.load(Ordering::SeqCst),
            u8::from(shared())
        )
    })
}

/// Whether this process is in a user namespace other than the host's (its uid map is not the
/// identity of every id).
fn in_child_namespace() -> bool {
    std::fs::read_to_string("/proc/self/uid_map")
        .is_ok_and(|m| m.split_whitespace().collect::<Vec<_>>() != ["0", "0", "4294967295"])
}

/// Enters rootless kiln's user and mount namespace when kiln is not root; does nothing as root.
/// With the store's directory `home`, those are the store's shared ones ([`super::pause`]):
/// joined when its pause process runs, else made and a pause process started to keep them.
/// Without (or when the store's directory cannot be written), a pair of this process's own.
///
/// A process a rootless kiln started inside its namespace (root there) takes its rootless
/// state over from [`INHERITED`] instead: it is as unprivileged on the host as that kiln
/// (checked by its uid map, so the variable cannot make a real root believe otherwise).
pub fn enter_if_unprivileged(home: Option<&std::path::Path>) -> Result<(), UsernsError> {
    let uid = rustix::process::geteuid().as_raw();
    let gid = rustix::process::getegid().as_raw();
    if uid == 0 {
        let inherited = std::env::var(INHERITED).ok().and_then(|v| {
            let mut f = v.split(':');
            let (u, n) = (
                f.next()?.parse::<u32>().ok()?,
                f.next()?.parse::<u32>().ok()?,
            );
            Some((u, n, f.next() == Some("1")))
        });
        if let Some((host, ids, shared)) = inherited.filter(|_| in_child_namespace()) {
            HOST_UID.store(host, Ordering::SeqCst);
            IDS.store(ids, Ordering::SeqCst);
            SHARED.store(shared, Ordering::SeqCst);
            ROOTLESS.store(true, Ordering::SeqCst);
            note_setgroups();
        }
        return Ok(());
    }
    let name = user_name(uid);
    let ranges = (
        subordinate("/etc/subuid", name.as_deref(), uid),
        subordinate("/etc/subgid", name.as_deref(), uid),
    );
    let mapper = which("newuidmap") && which("newgidmap");
    // The uids a namespace made now would map: root, and the user's range when it can be had.
    let wanted = match ranges {
        (Some((_, uc)), Some(_)) if mapper => uc.saturating_add(1),
        _ => 1,
    };
    // Held until the pause is joined or made: two kiln processes starting at once share one.
    let lock = home.and_then(|h| super::pause::lock(h).ok());
    if let (Some(h), Some(_)) = (home, &lock) {
        // A pause whose mapping is not the one the user has now (a range added to
        // /etc/subuid since, or removed) is replaced: the new one maps it, the old one ends
        // once its file names the new one, and its containers run on.
        let current = super::pause::live(h).filter(|p| uid_count(p.pid) == Some(wanted));
        if let Some(p) = current {
            match super::pause::join(p) {
                Ok(()) => {
                    set_joined(uid);
                    SHARED.store(true, Ordering::SeqCst);
                    return Ok(());
                }
                // In its user namespace already, with a mount namespace of its own.
                Err(_) if in_child_namespace() => {
                    set_joined(uid);
                    return Ok(());
                }
                // Not joined (it ended meanwhile): a new one is made below.
                Err(_) => {}
            }
        }
    }
    let pid = std::process::id().to_string();
    // newuidmap must run outside the new namespace: started now, told to go once it exists.
    let helper = match ranges {
        (Some((us, uc)), Some((gs, gc))) if mapper => {
            let script = "read _ && newuidmap \"$1\" 0 \"$2\" 1 1 \"$3\" \"$4\" && \
                          newgidmap \"$1\" 0 \"$5\" 1 1 \"$6\" \"$7\"";
            let child = Command::new("/bin/sh")
                .args(["-c", script, "sh", &pid])
                .args([uid, us, uc, gid, gs, gc].map(|n| n.to_string()))
                .stdin(Stdio::piped())
                .spawn()
                .map_err(fail("start newuidmap"))?;
            Some((child, uc.min(gc).saturating_add(1)))
        }
        _ => None,
    };
    // SAFETY: called while the process is single-threaded (arguments parsed, no thread yet);
    // NEWUSER and NEWNS do not touch the file descriptor table.
    unsafe { rustix::thread::unshare_unsafe(UnshareFlags::NEWUSER | UnshareFlags::NEWNS) }
        .map_err(|e| {
            fail("unshare a user namespace (are unprivileged user namespaces allowed?)")(e.into())
        })?;
    let ids = match helper {
        Some((mut child, ids)) => {
            let go = child.stdin.take().map(|mut s| s.write_all(b"\n"));
            let status = child.wait().map_err(fail("newuidmap"))?;
            if go.is_none() || !status.success() {
                return Err(fail("newuidmap/newgidmap")(std::io::Error::other(format!(
                    "exited with {status}"
                ))));
            }
            ids
        }
        None => {
            std::fs::write("/proc/self/setgroups", "deny").map_err(fail("setgroups"))?;
            std::fs::write("/proc/self/uid_map", format!("0 {uid} 1")).map_err(fail("uid_map"))?;
            std::fs::write("/proc/self/gid_map", format!("0 {gid} 1")).map_err(fail("gid_map"))?;
            1
        }
    };
    let root = rustix::process::Uid::from_raw(0);
    let root_g = rustix::process::Gid::from_raw(0);
    rustix::thread::set_thread_res_gid(root_g, root_g, root_g)
        .map_err(|e| fail("become root")(e.into()))?;
    rustix::thread::set_thread_res_uid(root, root, root)
        .map_err(|e| fail("become root")(e.into()))?;
    // Nothing kiln mounts may reach the host's mount table (it could not anyway: a namespace
    // owned by a less privileged user namespace only receives propagation), while what the host
    // mounts later still reaches a namespace that lives on in the pause process.
    rustix::mount::mount_change(
        c"/",
        rustix::mount::MountPropagationFlags::DOWNSTREAM
            | rustix::mount::MountPropagationFlags::REC,
    )
    .map_err(|e| fail("mount propagation")(e.into()))?;
    HOST_UID.store(uid, Ordering::SeqCst);
    IDS.store(ids, Ordering::SeqCst);
    ROOTLESS.store(true, Ordering::SeqCst);
    note_setgroups();
    if let (Some(h), Some(_)) = (home, &lock) {
        // Without it this process still works, alone: a user network then says it needs the
        // shared namespaces.
        SHARED.store(super::pause::spawn(h).is_ok(), Ordering::SeqCst);
    }
    drop(lock);
    Ok(())
}

/// The rootless state of a process that joined the store's namespaces: the ids there are
/// what its uid map gives.
fn set_joined(uid: u32) {
    HOST_UID.store(uid, Ordering::SeqCst);
    IDS.store(mapped_ids().max(1), Ordering::SeqCst);
    ROOTLESS.store(true, Ordering::SeqCst);
    note_setgroups();
}

/// How many ids this process's user namespace maps.
fn mapped_ids() -> u32 {
    map_count(&std::fs::read_to_string("/proc/self/uid_map").unwrap_or_default())
}

/// How many uids the user namespace of process `pid` maps.
fn uid_count(pid: i32) -> Option<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/uid_map"))
        .ok()
        .map(|m| map_count(&m))
}

/// The ids a uid or gid map maps (the sum of its lengths).
fn map_count(map: &str) -> u32 {
    map.lines()
        .filter_map(|l| l.split_whitespace().nth(2)?.parse::<u32>().ok())
        .fold(0u32, u32::saturating_add)
}

/// Rootless `kiln exec`: joins the user namespace of the container's process `pid` (the one
/// the `kiln run` that started it made) instead of making a new one, since only from there can
/// its pid and mount namespaces be entered. Must be called while the process is single-threaded
/// (setns(2) of a user namespace refuses otherwise), and only as the user who started that
/// `kiln run`: the kernel lets the owner of a user namespace join it, nobody else.
pub fn join_of(pid: i32) -> Result<(), UsernsError> {
    let uid = rustix::process::geteuid().as_raw();
    if uid == 0 || rootless() {
        return Ok(());
    }
    let path = format!("/proc/{pid}/ns/user");
    let f = std::fs::File::open(&path).map_err(fail("open the container's user namespace"))?;
    rustix::thread::move_into_link_name_space(
        std::os::fd::AsFd::as_fd(&f),
        Some(rustix::thread::LinkNameSpaceType::User),
    )
    .map_err(|e| fail("join the container's user namespace")(e.into()))?;
    // The ids that exist there: what its uid map gives (the map is the container's, read now
    // from inside).
    set_joined(uid);
    Ok(())
}

fn which(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subordinate_ranges_by_name_or_id() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("subuid");
        std::fs::write(&f, "alice:100000:65536\n1001:200000:1000\n").unwrap();
        let f = f.to_str().unwrap();
        assert_eq!(subordinate(f, Some("alice"), 1000), Some((100_000, 65_536)));
        assert_eq!(subordinate(f, Some("bob"), 1001), Some((200_000, 1000)));
        assert_eq!(subordinate(f, Some("carol"), 1002), None);
    }
}
