//! Resource limits for one sandbox: a cgroup per sandbox in each hierarchy that has the
//! controller, on cgroup v2 (unified), v1, or the hybrid mix these machines run (v1 controllers,
//! an empty v2 tree, no systemd). The process joins before anything else happens in the child
//! (it writes `0`, itself, to `cgroup.procs` descriptors opened here), so every process it
//! starts is counted.
//!
//! - v2: `/sys/fs/cgroup/kiln/<name>` (under the root: the "no internal processes" rule forbids
//!   enabling controllers below a cgroup that holds kiln itself), `memory.max`, `pids.max`.
//! - v1: `<mount>/<kiln's own cgroup>/kiln-<name>` per controller (nested, so whatever limits
//!   kiln already has still apply), `memory.limit_in_bytes`, `pids.max`.
//!
//! A limit the kernel will not take is reported back (the caller says so once) and the sandbox
//! runs without it: it is never silently dropped and never fails the run.

use std::{
    os::fd::{AsRawFd, OwnedFd},
    path::{Path, PathBuf},
    sync::Arc,
};

/// What to limit; `None` is no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of memory (docker `--memory`).
    pub memory: Option<u64>,
    /// Number of processes and threads (docker `--pids-limit`).
    pub pids: Option<u64>,
}

impl Limits {
    pub fn is_empty(&self) -> bool {
        self.memory.is_none() && self.pids.is_none()
    }
}

/// The cgroups of one sandbox; removed (after killing what is left in them) when dropped.
#[derive(Debug)]
pub struct Cgroup {
    dirs: Vec<PathBuf>,
    procs: Vec<OwnedFd>,
}

/// The `cgroup.procs` descriptors the child writes itself into.
#[derive(Debug, Clone, Default)]
pub struct Join(Option<Arc<Cgroup>>);

impl Join {
    pub(crate) fn fds(&self) -> Vec<i32> {
        self.0
            .as_ref()
            .map(|c| c.procs.iter().map(AsRawFd::as_raw_fd).collect())
            .unwrap_or_default()
    }
}

const ROOT: &str = "/sys/fs/cgroup";

/// Where one controller lives.
#[derive(Debug, PartialEq, Eq)]
enum Place {
    /// The unified hierarchy has it (mount point).
    V2(PathBuf),
    /// A v1 hierarchy: its mount point and kiln's own cgroup there.
    V1(PathBuf, String),
}

/// Finds `controller` from `/proc/self/cgroup` and what is mounted under /sys/fs/cgroup.
fn place(controller: &str, self_cgroup: &str) -> Option<Place> {
    let unified = [PathBuf::from(ROOT), Path::new(ROOT).join("unified")];
    for u in unified {
        let ctl = std::fs::read_to_string(u.join("cgroup.controllers")).unwrap_or_default();
        if ctl.split_whitespace().any(|c| c == controller) {
            return Some(Place::V2(u));
        }
    }
    for line in self_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (_, ctls, path) = (parts.next()?, parts.next()?, parts.next()?);
        if ctls.split(',').any(|c| c == controller) {
            let mount = Path::new(ROOT).join(ctls);
            if mount.join("cgroup.procs").exists() {
                return Some(Place::V1(mount, path.to_string()));
            }
        }
    }
    None
}

impl Cgroup {
    /// Creates the cgroups for sandbox `name` with `limits`. Returns them (`None` when no limit
    /// could be applied) and one message per limit that could not be.
    pub fn create(name: &str, limits: &Limits) -> (Join, Vec<String>) {
        let self_cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let mut cg = Cgroup {
            dirs: Vec::new(),
            procs: Vec::new(),
        };
        let mut unapplied = Vec::new();
        let wanted = [
            (
                "memory",
                limits.memory,
                "memory.max",
                "memory.limit_in_bytes",
            ),
            ("pids", limits.pids, "pids.max", "pids.max"),
        ];
        for (controller, value, v2_file, v1_file) in wanted {
            let Some(value) = value else { continue };
            let applied = match place(controller, &self_cgroup) {
                None => Err(format!(
                    "no {controller} controller in /sys/fs/cgroup (v1 or v2)"
                )),
                Some(p) => cg.apply(&p, name, controller, (v2_file, v1_file), value),
            };
            if let Err(why) = applied {
                unapplied.push(format!("{controller} limit not applied: {why}"));
            }
        }
        let join = if cg.procs.is_empty() {
            Join(None)
        } else {
            Join(Some(Arc::new(cg)))
        };
        (join, unapplied)
    }

    fn apply(
        &mut self,
        place: &Place,
        name: &str,
        controller: &str,
        (v2_file, v1_file): (&str, &str),
        value: u64,
    ) -> Result<(), String> {
        let err = |p: &Path, e: std::io::Error| format!("{}: {e}", p.display());
        let (dir, file) = match place {
            Place::V2(mount) => {
                // Controllers flow down from the root: enabled in the root's and kiln's
                // subtree_control, neither of which holds a process.
                let kiln = mount.join("kiln");
                mkdir(&kiln).map_err(|e| err(&kiln, e))?;
                for d in [mount.as_path(), kiln.as_path()] {
                    let ctl = d.join("cgroup.subtree_control");
                    std::fs::write(&ctl, format!("+{controller}")).map_err(|e| err(&ctl, e))?;
                }
                (kiln.join(name), v2_file)
            }
            Place::V1(mount, own) => (
                mount
                    .join(own.trim_start_matches('/'))
                    .join(format!("kiln-{name}")),
                v1_file,
            ),
        };
        if !self.dirs.contains(&dir) {
            mkdir(&dir).map_err(|e| err(&dir, e))?;
            self.dirs.push(dir.clone());
            let procs = dir.join("cgroup.procs");
            let fd = rustix::fs::open(
                &procs,
                rustix::fs::OFlags::WRONLY | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )
            .map_err(|e| err(&procs, e.into()))?;
            self.procs.push(fd);
        }
        let f = dir.join(file);
        std::fs::write(&f, value.to_string()).map_err(|e| err(&f, e))
    }
}

fn mkdir(p: &Path) -> std::io::Result<()> {
    match std::fs::create_dir(p) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(e),
        _ => Ok(()),
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // The pid namespace died with its pid 1, but its processes leave the cgroup only as the
        // kernel reaps them: kill whatever is left, then retry rmdir briefly.
        for dir in &self.dirs {
            for _ in 0..200 {
                let left = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
                for pid in left.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                    // SAFETY: kill(2) with plain integers.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
                if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_controllers_are_found_from_proc_self_cgroup() {
        // On a machine with v1 memory mounted (the CI machines), kiln's own cgroup is used.
        let own = "4:memory:/ci/job\n8:pids:/\n0::/\n";
        match place("memory", own) {
            Some(Place::V1(mount, path)) => {
                assert_eq!(mount, Path::new("/sys/fs/cgroup/memory"));
                assert_eq!(path, "/ci/job");
            }
            Some(Place::V2(_)) => {} // a v2 machine: the unified tree has it
            None => assert!(!Path::new("/sys/fs/cgroup/memory/cgroup.procs").exists()),
        }
        assert_eq!(place("no-such-controller", own), None);
    }
}
