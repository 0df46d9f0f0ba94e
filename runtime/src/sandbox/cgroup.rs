//! One cgroup per sandbox, in each hierarchy that can hold it, on cgroup v2 (unified), v1, or
//! the hybrid mix these machines run (v1 controllers, an empty v2 tree, no systemd). It carries
//! the resource limits and, always, the device allow-list ([`super::devices`]). The process
//! joins before anything else happens in the child (it writes `0`, itself, to `cgroup.procs`
//! descriptors opened here), so every process it starts is counted and restricted.
//!
//! - v2: `<mount>/kiln/<maker>-<name>` (under the root: the "no internal processes" rule forbids
//!   enabling controllers below a cgroup that holds kiln itself), `memory.max`, `pids.max`, and
//!   a device program attached with BPF.
//! - v1: `<mount>/<kiln's own cgroup>/kiln-<maker>-<name>` per controller (nested, so whatever
//!   limits kiln already has still apply), `memory.limit_in_bytes`, `pids.max`, `devices.deny`
//!   and `devices.allow`.
//!
//! On hybrid machines the v1 controller carries the list, as runc's does; the v2 program is
//! the fallback where v1 has no devices controller. `KILN_CGROUP_DEVICES=v1|bpf|none` restricts
//! kiln to one of them, or to neither (to test each on its own). Where neither can be had, the
//! sandbox is told so: it then drops CAP_MKNOD and mounts its root `nodev` (see
//! [`Join::devices_controlled`]), and the caller says so.
//!
//! `<maker>` is the kiln process that made the cgroup, `PID.START` (its pid and start time, so
//! a later process that got the pid does not pass for it): [`sweep`] removes those of dead kiln
//! processes (a `kill -9` of kiln leaves its cgroups behind; the kernel only kills the
//! sandbox's processes).
//!
//! A limit the kernel will not take is reported back (the caller says so once) and the sandbox
//! runs without it: it is never silently dropped and never fails the run.

use std::{
    os::fd::{AsRawFd, OwnedFd},
    path::{Path, PathBuf},
    sync::Arc,
};

/// What to limit; `None` is no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Limits {
    /// Bytes of memory (docker `--memory`).
    pub memory: Option<u64>,
    /// Number of processes and threads (docker `--pids-limit`).
    pub pids: Option<u64>,
    /// CPU time per 100 ms period, in microseconds (docker `--cpus` × 100,000).
    #[serde(default)]
    pub cpu_quota: Option<u64>,
    /// Relative CPU weight (docker `--cpu-shares`, 2 to 262,144; 1,024 is the default).
    #[serde(default)]
    pub cpu_shares: Option<u64>,
    /// Memory plus swap in bytes (docker `--memory-swap`; `u64::MAX`: unlimited swap).
    #[serde(default)]
    pub memory_swap: Option<u64>,
}

/// The CFS period docker uses with `--cpus`, in microseconds.
pub const CPU_PERIOD: u64 = 100_000;

impl Limits {
    pub fn is_empty(&self) -> bool {
        *self == Limits::default()
    }
}

/// Which mechanisms restrict device access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceControl {
    /// v1's devices controller where the machine has one, else a v2 device program.
    Every,
    /// Only cgroup v1's devices controller.
    V1,
    /// Only a cgroup v2 device program.
    Bpf,
    /// Neither: mknod is refused and the root is `nodev` instead.
    None,
}

/// The cgroups of one sandbox; removed (after killing what is left in them) when dropped.
#[derive(Debug)]
pub struct Cgroup {
    dirs: Vec<PathBuf>,
    procs: Vec<OwnedFd>,
}

/// The `cgroup.procs` descriptors the child writes itself into, and whether device access is
/// restricted by them.
#[derive(Debug, Clone, Default)]
pub struct Join {
    cgroup: Option<Arc<Cgroup>>,
    devices: bool,
}

impl Join {
    /// Whether the kernel's OOM killer killed a process of these cgroups (v1
    /// `memory.oom_control`'s `oom_kill`, v2 `memory.events`' `oom_kill`): docker's
    /// `State.OOMKilled`. Read before the cgroups go.
    pub fn oom_killed(&self) -> bool {
        let Some(cg) = &self.cgroup else {
            return false;
        };
        cg.dirs.iter().any(|d| {
            ["memory.oom_control", "memory.events"].iter().any(|f| {
                std::fs::read_to_string(d.join(f)).is_ok_and(|t| {
                    t.lines().any(|l| {
                        l.strip_prefix("oom_kill ")
                            .and_then(|n| n.trim().parse::<u64>().ok())
                            .is_some_and(|n| n > 0)
                    })
                })
            })
        })
    }

    pub(crate) fn fds(&self) -> Vec<i32> {
        self.cgroup
            .as_ref()
            .map(|c| c.procs.iter().map(AsRawFd::as_raw_fd).collect())
            .unwrap_or_default()
    }

    /// Whether the kernel refuses the sandbox every device outside Docker's allow-list. When
    /// not, the sandbox drops CAP_MKNOD and mounts its root `nodev` instead.
    pub fn devices_controlled(&self) -> bool {
        self.devices
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

/// The unified (v2) hierarchy: `/sys/fs/cgroup` itself, or `unified/` below it on hybrid.
fn v2_mount() -> Option<PathBuf> {
    v2().as_ref().map(|(mount, _)| mount.clone())
}

/// The unified hierarchy's mount point and its controllers, looked up once per process (a
/// sandbox asks for each controller in turn).
fn v2() -> &'static Option<(PathBuf, String)> {
    static V2: std::sync::OnceLock<Option<(PathBuf, String)>> = std::sync::OnceLock::new();
    V2.get_or_init(|| {
        [PathBuf::from(ROOT), Path::new(ROOT).join("unified")]
            .into_iter()
            .find_map(|u| {
                let ctl = std::fs::read_to_string(u.join("cgroup.controllers")).ok()?;
                Some((u, ctl))
            })
    })
}

/// Finds `controller` from `/proc/self/cgroup` and what is mounted under /sys/fs/cgroup.
fn place(controller: &str, self_cgroup: &str) -> Option<Place> {
    if let Some((u, ctl)) = v2() {
        if ctl.split_whitespace().any(|c| c == controller) {
            return Some(Place::V2(u.clone()));
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

/// This process as cgroup names carry it: `PID.START`.
fn maker() -> &'static str {
    static MAKER: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    MAKER.get_or_init(|| match crate::procid::ProcessId::current() {
        Some(p) => format!("{}.{}", p.pid, p.start),
        None => std::process::id().to_string(),
    })
}

/// Whether the maker a cgroup's name carries (`PID.START`, or a bare pid from an older kiln)
/// still runs.
fn maker_alive(maker: &str) -> bool {
    match maker.split_once('.') {
        Some((pid, start)) => match (pid.parse(), start.parse()) {
            (Ok(pid), Ok(start)) => crate::procid::ProcessId { pid, start }.alive(),
            _ => true,
        },
        None => match maker.parse::<i32>() {
            // SAFETY: kill(2) with signal 0 only checks that the process exists.
            Ok(pid) => {
                let r = unsafe { libc::kill(pid, 0) };
                r == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
            }
            Err(_) => true,
        },
    }
}

/// The directory of sandbox `name` at `place`, tagged with this process.
fn dir_at(place: &Place, name: &str) -> PathBuf {
    let me = maker();
    match place {
        Place::V2(mount) => mount.join("kiln").join(format!("{me}-{name}")),
        Place::V1(mount, own) => mount
            .join(own.trim_start_matches('/'))
            .join(format!("kiln-{me}-{name}")),
    }
}

fn err(p: &Path, e: std::io::Error) -> String {
    format!("{}: {e}", p.display())
}

impl Cgroup {
    /// Creates the cgroups for sandbox `name` with `limits` and the device allow-list. Returns
    /// them and one message per limit that could not be applied (and one when device access
    /// could not be restricted, except rootless, where the kernel refuses every device node of
    /// a user namespace's mounts anyway).
    pub fn create(name: &str, limits: &Limits) -> (Join, Vec<String>) {
        Self::make(name, limits, Self::device_control(), false)
    }

    /// [`Cgroup::create`] for a container: also counted by the memory, pids, cpu and block I/O
    /// controllers without a limit, for `kiln stats`.
    pub fn create_accounted(name: &str, limits: &Limits) -> (Join, Vec<String>) {
        Self::make(name, limits, Self::device_control(), true)
    }

    fn device_control() -> DeviceControl {
        match std::env::var("KILN_CGROUP_DEVICES").as_deref() {
            Ok("v1") => DeviceControl::V1,
            Ok("bpf") => DeviceControl::Bpf,
            Ok("none") => DeviceControl::None,
            _ => DeviceControl::Every,
        }
    }

    /// [`Cgroup::create`] with the device mechanisms chosen by the caller.
    pub fn create_with(name: &str, limits: &Limits, control: DeviceControl) -> (Join, Vec<String>) {
        Self::make(name, limits, control, false)
    }

    fn make(
        name: &str,
        limits: &Limits,
        control: DeviceControl,
        accounted: bool,
    ) -> (Join, Vec<String>) {
        let self_cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let mut cg = Cgroup {
            dirs: Vec::new(),
            procs: Vec::new(),
        };
        let mut unapplied = Vec::new();
        // Each value as cgroup v2 and v1 write it; in this order (v1 wants the memory limit
        // before memory+swap).
        let num = |v: Option<u64>| v.map(|n| (n.to_string(), n.to_string()));
        let swap = limits.memory_swap.map(|total| {
            if total == u64::MAX {
                ("max".to_string(), "-1".to_string())
            } else {
                // v2 counts the swap alone; v1 memory and swap together.
                let alone = total.saturating_sub(limits.memory.unwrap_or(0));
                (alone.to_string(), total.to_string())
            }
        });
        let weight = limits.cpu_shares.map(|s| {
            // runc's conversion of shares (2..262144) to a v2 weight (1..10000).
            let w = 1 + (s.clamp(2, 262_144) - 2) * 9999 / 262_142;
            (w.to_string(), s.to_string())
        });
        let wanted = [
            (
                "memory",
                num(limits.memory),
                ("memory.max", "memory.limit_in_bytes"),
            ),
            (
                "memory",
                swap,
                ("memory.swap.max", "memory.memsw.limit_in_bytes"),
            ),
            ("pids", num(limits.pids), ("pids.max", "pids.max")),
            ("cpu", weight, ("cpu.weight", "cpu.shares")),
        ];
        for (controller, value, files) in wanted {
            let Some(value) = value else { continue };
            let applied = match place(controller, &self_cgroup) {
                None => Err(format!(
                    "no {controller} controller in /sys/fs/cgroup (v1 or v2)"
                )),
                Some(p) => cg.limit(&p, name, controller, files, &value),
            };
            if let Err(why) = applied {
                unapplied.push(format!("{} limit not applied: {why}", files.0));
            }
        }
        // Accounting for `kiln stats`: the container is counted in these even without a limit
        // (v1 controllers, or the v2 ones the machine delegates). Best effort: a missing one
        // only leaves a figure of `kiln stats` at zero.
        if accounted && !super::userns::rootless() {
            for controller in ["memory", "pids", "cpuacct", "cpu", "blkio", "io"] {
                if let Some(p) = place(controller, &self_cgroup) {
                    let _ = cg.account(&p, name, controller);
                }
            }
        }
        if let Some(quota) = limits.cpu_quota {
            let applied = match place("cpu", &self_cgroup) {
                None => Err("no cpu controller in /sys/fs/cgroup (v1 or v2)".to_string()),
                Some(p @ Place::V2(_)) => cg.limit(
                    &p,
                    name,
                    "cpu",
                    ("cpu.max", ""),
                    &(format!("{quota} {CPU_PERIOD}"), String::new()),
                ),
                Some(p) => cg
                    .limit(
                        &p,
                        name,
                        "cpu",
                        ("", "cpu.cfs_period_us"),
                        &(String::new(), CPU_PERIOD.to_string()),
                    )
                    .and_then(|()| {
                        cg.limit(
                            &p,
                            name,
                            "cpu",
                            ("", "cpu.cfs_quota_us"),
                            &(String::new(), quota.to_string()),
                        )
                    }),
            };
            if let Err(why) = applied {
                unapplied.push(format!("cpu quota not applied: {why}"));
            }
        }
        // A freezer for `kiln pause`: the v2 cgroup (every one has `cgroup.freeze`), else
        // cgroup v1's freezer controller.
        if !super::userns::rootless() {
            let frozen = match (v2_mount(), place("freezer", &self_cgroup)) {
                (Some(mount), _) => {
                    let dir = dir_at(&Place::V2(mount), name);
                    dir.parent()
                        .map_or(Ok(()), |p| mkdir(p).map_err(|e| err(p, e)))
                        .and_then(|()| cg.enter(&dir))
                }
                (None, Some(p @ Place::V1(..))) => cg.enter(&dir_at(&p, name)),
                _ => Err("no freezer in /sys/fs/cgroup (v1 or v2)".to_string()),
            };
            if let Err(why) = frozen {
                unapplied.push(format!("kiln pause will not work: {why}"));
            }
        }
        let devices = if super::userns::rootless() {
            false
        } else {
            match cg.devices(name, &self_cgroup, control) {
                Ok(()) => true,
                Err(why) => {
                    unapplied.push(format!(
                        "device access is not restricted by a cgroup ({why}): mknod is refused \
                         and device nodes in the root filesystem are unusable instead"
                    ));
                    false
                }
            }
        };
        let cgroup = (!cg.procs.is_empty()).then(|| Arc::new(cg));
        (Join { cgroup, devices }, unapplied)
    }

    /// Docker's device allow-list in every mechanism there is (see the module's doc); an error
    /// when none could be applied.
    fn devices(
        &mut self,
        name: &str,
        self_cgroup: &str,
        control: DeviceControl,
    ) -> Result<(), String> {
        let mut applied = false;
        let mut why = Vec::new();
        if matches!(control, DeviceControl::Every | DeviceControl::V1) {
            match place("devices", self_cgroup) {
                Some(p @ Place::V1(..)) => match self.devices_v1(&p, name) {
                    Ok(()) => applied = true,
                    Err(e) => why.push(format!("v1 devices controller: {e}")),
                },
                _ => why.push("no v1 devices controller".to_string()),
            }
        }
        // On hybrid machines the v1 controller is enough: a program on the v2 cgroup would
        // check the same list again, and loading and attaching it cost 0.45 ms of every start.
        if control == DeviceControl::Bpf || (control == DeviceControl::Every && !applied) {
            match v2_mount() {
                Some(mount) => match self.devices_bpf(&Place::V2(mount), name) {
                    Ok(()) => applied = true,
                    Err(e) => why.push(format!("cgroup v2 device program: {e}")),
                },
                None => why.push("no cgroup v2 hierarchy".to_string()),
            }
        }
        if control == DeviceControl::None {
            why.push("KILN_CGROUP_DEVICES=none".to_string());
        }
        if applied { Ok(()) } else { Err(why.join("; ")) }
    }

    fn devices_v1(&mut self, place: &Place, name: &str) -> Result<(), String> {
        let dir = dir_at(place, name);
        self.enter(&dir)?;
        let deny = dir.join("devices.deny");
        std::fs::write(&deny, "a").map_err(|e| err(&deny, e))?;
        let allow = dir.join("devices.allow");
        // One rule per write(2), as the kernel reads them, through one descriptor.
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(&allow)
            .map_err(|e| err(&allow, e))?;
        for line in super::devices::v1_allow_lines() {
            std::io::Write::write_all(&mut f, line.as_bytes()).map_err(|e| err(&allow, e))?;
        }
        Ok(())
    }

    fn devices_bpf(&mut self, place: &Place, name: &str) -> Result<(), String> {
        let dir = dir_at(place, name);
        if let Some(parent) = dir.parent() {
            mkdir(parent).map_err(|e| err(parent, e))?;
        }
        self.enter(&dir)?;
        let fd = rustix::fs::open(
            &dir,
            rustix::fs::OFlags::RDONLY
                | rustix::fs::OFlags::DIRECTORY
                | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(|e| err(&dir, e.into()))?;
        super::devices::attach_bpf(&fd).map_err(|e| format!("bpf: {e}"))
    }

    /// Makes `dir` (once) and opens its `cgroup.procs` for the child.
    fn enter(&mut self, dir: &Path) -> Result<(), String> {
        if self.dirs.iter().any(|d| d == dir) {
            return Ok(());
        }
        // Never an existing one: it would be another sandbox's, and removed with it.
        std::fs::create_dir(dir).map_err(|e| err(dir, e))?;
        self.dirs.push(dir.to_path_buf());
        let procs = dir.join("cgroup.procs");
        let fd = rustix::fs::open(
            &procs,
            rustix::fs::OFlags::WRONLY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(|e| err(&procs, e.into()))?;
        self.procs.push(fd);
        Ok(())
    }

    /// Joins `controller`'s cgroup for sandbox `name` (v2: enabled down from the root first).
    fn account(&mut self, place: &Place, name: &str, controller: &str) -> Result<(), String> {
        if let Place::V2(mount) = place {
            let kiln = mount.join("kiln");
            mkdir(&kiln).map_err(|e| err(&kiln, e))?;
            for d in [mount.as_path(), kiln.as_path()] {
                let ctl = d.join("cgroup.subtree_control");
                std::fs::write(&ctl, format!("+{controller}")).map_err(|e| err(&ctl, e))?;
            }
        }
        self.enter(&dir_at(place, name))
    }

    fn limit(
        &mut self,
        place: &Place,
        name: &str,
        controller: &str,
        (v2_file, v1_file): (&str, &str),
        (v2_value, v1_value): &(String, String),
    ) -> Result<(), String> {
        let file = match place {
            Place::V2(mount) => {
                // Controllers flow down from the root: enabled in the root's and kiln's
                // subtree_control, neither of which holds a process.
                let kiln = mount.join("kiln");
                mkdir(&kiln).map_err(|e| err(&kiln, e))?;
                for d in [mount.as_path(), kiln.as_path()] {
                    let ctl = d.join("cgroup.subtree_control");
                    std::fs::write(&ctl, format!("+{controller}")).map_err(|e| err(&ctl, e))?;
                }
                (v2_file, v2_value)
            }
            Place::V1(..) => (v1_file, v1_value),
        };
        let dir = dir_at(place, name);
        self.enter(&dir)?;
        let f = dir.join(file.0);
        std::fs::write(&f, file.1).map_err(|e| err(&f, e))
    }
}

fn mkdir(p: &Path) -> std::io::Result<()> {
    match std::fs::create_dir(p) {
        Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(e),
        _ => Ok(()),
    }
}

/// Kills what is left in cgroup `dir` and removes it. The pid namespace died with its pid 1,
/// but its processes leave the cgroup only as the kernel reaps them: kill, then retry rmdir
/// briefly. False when it is still there.
fn remove(dir: &Path) -> bool {
    for _ in 0..200 {
        // The rmdir first: the kernel refuses it (EBUSY) while a process is in the cgroup, and
        // a sandbox's cgroups are empty by the time they go, so reading `cgroup.procs` of each
        // (three system calls, eight cgroups a container on v1) is only for the rare other case.
        if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
            return true;
        }
        let left = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        for pid in left.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            // SAFETY: kill(2) with plain integers; the pid is a member of this cgroup now.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    false
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        for dir in &self.dirs {
            remove(dir);
        }
    }
}

/// Removes the cgroups that kiln processes no longer alive made (a `kill -9` of kiln leaves
/// them), killing anything left in them. Returns the directories removed. A cgroup of a live
/// kiln process (of any store) is never touched: its name carries the pid of its maker.
pub fn sweep() -> Vec<PathBuf> {
    let self_cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let mut places: Vec<(PathBuf, &str)> = Vec::new();
    if let Some(u) = v2_mount() {
        places.push((u.join("kiln"), ""));
    }
    for line in self_cgroup.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(ctls), Some(own)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if !ctls.is_empty() && !ctls.starts_with("name=") {
            let dir = Path::new(ROOT).join(ctls).join(own.trim_start_matches('/'));
            places.push((dir, "kiln-"));
        }
    }
    let mut removed = Vec::new();
    for (dir, prefix) in places {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(maker) = name
                .strip_prefix(prefix)
                .and_then(|rest| rest.split_once('-'))
                .map(|(maker, _)| maker)
            else {
                continue;
            };
            if !maker_alive(maker) && e.path().is_dir() && remove(&e.path()) {
                removed.push(e.path());
            }
        }
    }
    removed
}

/// `kiln pause` (`frozen`) and `unpause`: freezes or thaws the kiln cgroup process `pid` is
/// in (cgroup v2's `cgroup.freeze`, else v1's `freezer.state`), and waits until the kernel says
/// it is done.
pub fn freeze(pid: i32, frozen: bool) -> Result<(), String> {
    let cgroups = kiln_cgroups_of(pid);
    if cgroups.is_empty() && !Path::new(&format!("/proc/{pid}")).exists() {
        return Err(format!("process {pid} is gone"));
    }
    for (ctls, dir) in &cgroups {
        let f = dir.join("cgroup.freeze");
        if ctls.is_empty() && f.exists() {
            std::fs::write(&f, if frozen { "1" } else { "0" }).map_err(|e| err(&f, e))?;
            let want = if frozen { "frozen 1" } else { "frozen 0" };
            return settle(&dir.join("cgroup.events"), want);
        }
    }
    let Some((_, dir)) = cgroups
        .iter()
        .find(|(ctls, _)| ctls.split(',').any(|c| c == "freezer"))
    else {
        return Err("the container has no freezer cgroup".into());
    };
    let f = dir.join("freezer.state");
    let want = if frozen { "FROZEN" } else { "THAWED" };
    std::fs::write(&f, want).map_err(|e| err(&f, e))?;
    settle(&f, want)
}

/// The cgroups under kiln's own that process `pid` is in (a container's): their controllers
/// (`""` for v2) and directories.
pub fn kiln_cgroups_of(pid: i32) -> Vec<(String, PathBuf)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    let mut out = Vec::new();
    for line in text.lines() {
        let mut parts = line.splitn(3, ':');
        let (Some(_), Some(ctls), Some(path)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if !path
            .split('/')
            .any(|c| c == "kiln" || c.starts_with("kiln-"))
        {
            continue;
        }
        let rel = path.trim_start_matches('/');
        let dir = if ctls.is_empty() {
            match v2_mount() {
                Some(m) => m.join(rel),
                None => continue,
            }
        } else {
            Path::new(ROOT).join(ctls).join(rel)
        };
        out.push((ctls.to_string(), dir));
    }
    out
}

/// Waits (at most 5 s) until `file` has a line `want`.
fn settle(file: &Path, want: &str) -> Result<(), String> {
    let t0 = std::time::Instant::now();
    loop {
        let text = std::fs::read_to_string(file).map_err(|e| err(file, e))?;
        if text.lines().any(|l| l.trim() == want) {
            return Ok(());
        }
        if t0.elapsed() > std::time::Duration::from_secs(5) {
            return Err(format!("{}: not {want} after 5 seconds", file.display()));
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// The `cgroup.procs` of every cgroup process `pid` is in under kiln's own cgroups (a
/// container's), opened for writing: a process `kiln exec` starts joins them, so the
/// container's limits and device list hold for it too. Whether one of them carries the device
/// allow-list (v1 `devices`, or the v2 cgroup kiln attaches its program to).
pub fn join_of(pid: i32) -> (Vec<OwnedFd>, bool) {
    let (mut fds, mut devices) = (Vec::new(), false);
    for (ctls, dir) in kiln_cgroups_of(pid) {
        let procs = dir.join("cgroup.procs");
        if let Ok(f) = std::fs::OpenOptions::new().write(true).open(&procs) {
            devices |= ctls.is_empty() || ctls.split(',').any(|c| c == "devices");
            fds.push(OwnedFd::from(f));
        }
    }
    (fds, devices)
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
