//! Crash recovery. Every open store holds a shared lock on `active.lock` for its whole life;
//! a process that opens the store and finds it can take the lock exclusively knows no other
//! kiln process is using the store, so whatever is under `tmp/` (half-written blobs, unpacks,
//! a killed RUN's directories, the marker of a container start's cgroups) is garbage left by a
//! crash, and so is any mount kiln made there
//! or under `containers/` (a `kill -9` leaves them: the kernel only kills the sandbox). They are
//! unmounted and removed before the store is used. Committed data never lives in `tmp/`: blobs
//! are renamed into `blobs/`, unpacked layers into `layers/`, and metadata is in SQLite, whose
//! own journal recovers an interrupted transaction. The cgroups a killed kiln made for its
//! sandboxes are removed too ([`crate::sandbox::cgroup::sweep`]), and the networks of its
//! containers torn down ([`crate::network::detach`]).

use std::path::{Path, PathBuf};

use super::{Store, StoreError, io_err};

/// What a recovery removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovered {
    pub unmounted: Vec<PathBuf>,
    pub removed: Vec<PathBuf>,
}

/// Mount points under `dir` in this mount namespace, deepest first (`/proc/self/mountinfo`
/// escapes space, tab, newline and backslash as octal).
pub(crate) fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    mounts_under_any(&[dir])
}

/// [`mounts_under`] for several directories, from one read of the mount table (reading it costs
/// as much as the rest of a store's recovery).
fn mounts_under_any(dirs: &[&Path]) -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let unescape = |s: &str| {
        let mut out = Vec::new();
        let b = s.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'\\' && i + 3 < b.len() {
                if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8) {
                    out.push(v);
                    i += 4;
                    continue;
                }
            }
            out.push(b[i]);
            i += 1;
        }
        PathBuf::from(<std::ffi::OsString as std::os::unix::ffi::OsStringExt>::from_vec(out))
    };
    let mut found: Vec<PathBuf> = text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape)
        .filter(|p| dirs.iter().any(|dir| p.starts_with(dir) && p != dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    found
}

impl Store {
    /// Cleans up after crashed kiln processes; only called while no other process has the
    /// store open (the caller holds `active.lock` exclusively).
    pub(super) fn recover(&self) -> Result<Recovered, StoreError> {
        let mut done = Recovered::default();
        let mut containers_here = false;
        // Networks of killed containers first (their namespace files are mounts below): rules,
        // veth, addresses and ports go with netavark's teardown, not just the namespace.
        if let Ok(entries) = std::fs::read_dir(self.root.join("containers")) {
            for e in entries.flatten() {
                containers_here = true;
                let netns = e.path().join("netns");
                if netns.exists() {
                    crate::network::detach(&e.path());
                    done.removed.push(netns);
                }
            }
        }
        let (tmp, containers) = (self.root.join("tmp"), self.root.join("containers"));
        let mut leftovers = Vec::new();
        for entry in std::fs::read_dir(&tmp).map_err(io_err(&tmp))? {
            leftovers.push(entry.map_err(io_err(&tmp))?.path());
        }
        // A mount is on a directory: under two empty ones there is none, and the mount table
        // (as costly to read as the rest of the recovery) is left unread.
        let mounts = if containers_here || !leftovers.is_empty() {
            mounts_under_any(&[&tmp, &containers])
        } else {
            Vec::new()
        };
        for m in mounts {
            // Lazily: a process still inside would keep it alive, though none can be (their
            // pid namespaces died with the kiln that made them). Every mount stacked there:
            // the list names a mount point once.
            if crate::sandbox::overlay::unmount_all(&m) > 0 {
                done.unmounted.push(m);
            }
        }
        for p in leftovers {
            let removed = match std::fs::symlink_metadata(&p) {
                Ok(m) if m.is_dir() => std::fs::remove_dir_all(&p),
                Ok(_) => std::fs::remove_file(&p),
                Err(_) => continue,
            };
            removed.map_err(io_err(&p))?;
            done.removed.push(p);
        }
        // A cache mount directory being created (`.new-*`) when its build died.
        let cm = self.root.join("cache-mounts");
        if let Ok(entries) = std::fs::read_dir(&cm) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(".new-") {
                    let p = e.path();
                    std::fs::remove_dir_all(&p).map_err(io_err(&p))?;
                    done.removed.push(p);
                }
            }
        }
        // The cgroups of dead kiln processes (named by their maker's pid, so those of live
        // kiln processes using other stores stay), where a kiln process was killed with a
        // sandbox: while its cgroups exist, a sandbox's root is a mount below `tmp/` (RUN) or
        // `containers/`, or, before a container's root is mounted, a `cgroups-*` marker in
        // `tmp/` (`container::Ahead`), so a clean store needs no walk of every hierarchy (0.2 ms
        // of each command). `kiln rm` and a container's restart sweep on their own.
        if !done.unmounted.is_empty() || !done.removed.is_empty() {
            done.removed.extend(crate::sandbox::cgroup::sweep());
        }
        Ok(done)
    }
}
