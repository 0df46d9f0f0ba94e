//! Who the sandboxed process is, set last before its exec (shared by a container's process 1
//! and by `kiln exec`): descriptors, working directory, seccomp filter, capabilities, groups and
//! ids, and the parent-death signal again after the change of ids.

use std::ffi::CString;

use rustix::{fs::Mode, io::Errno};

pub use rustix::thread::CapabilitySet;

use super::attach::open_creating;

/// Docker's default capability set (moby `oci/caps/defaults.go`).
pub const DEFAULT_CAPS: CapabilitySet = CapabilitySet::CHOWN
    .union(CapabilitySet::DAC_OVERRIDE)
    .union(CapabilitySet::FSETID)
    .union(CapabilitySet::FOWNER)
    .union(CapabilitySet::MKNOD)
    .union(CapabilitySet::NET_RAW)
    .union(CapabilitySet::SETGID)
    .union(CapabilitySet::SETUID)
    .union(CapabilitySet::SETFCAP)
    .union(CapabilitySet::SETPCAP)
    .union(CapabilitySet::NET_BIND_SERVICE)
    .union(CapabilitySet::SYS_CHROOT)
    .union(CapabilitySet::KILL)
    .union(CapabilitySet::AUDIT_WRITE);

/// Capability names, by bit number (`linux/capability.h`).
const CAP_NAMES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// Every capability this table knows.
pub fn all_caps() -> CapabilitySet {
    CapabilitySet::from_bits_retain((1u64 << CAP_NAMES.len()) - 1)
}

/// A capability by docker's spellings (`NET_ADMIN`, `CAP_NET_ADMIN`, any case); `ALL` is every
/// one.
pub fn parse_cap(name: &str) -> Option<CapabilitySet> {
    let up = name.trim().to_ascii_uppercase();
    let bare = up.strip_prefix("CAP_").unwrap_or(&up);
    if bare == "ALL" {
        return Some(all_caps());
    }
    CAP_NAMES
        .iter()
        .position(|n| *n == bare)
        .map(|i| CapabilitySet::from_bits_retain(1u64 << i))
}

/// The names of the capabilities in `set` (docker's `CAP_` spelling), lowest bit first.
pub fn cap_names(set: CapabilitySet) -> Vec<String> {
    CAP_NAMES
        .iter()
        .enumerate()
        .filter(|(i, _)| set.contains(CapabilitySet::from_bits_retain(1u64 << i)))
        .map(|(_, n)| format!("CAP_{n}"))
        .collect()
}

/// One `--ulimit`: a resource limit, the same before and after the exec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rlimit {
    /// `RLIMIT_*`.
    pub resource: i32,
    pub soft: u64,
    pub hard: u64,
}

/// docker's `--ulimit` names.
const RLIMITS: [(&str, i32); 15] = [
    ("core", libc::RLIMIT_CORE as i32),
    ("cpu", libc::RLIMIT_CPU as i32),
    ("data", libc::RLIMIT_DATA as i32),
    ("fsize", libc::RLIMIT_FSIZE as i32),
    ("locks", libc::RLIMIT_LOCKS as i32),
    ("memlock", libc::RLIMIT_MEMLOCK as i32),
    ("msgqueue", libc::RLIMIT_MSGQUEUE as i32),
    ("nice", libc::RLIMIT_NICE as i32),
    ("nofile", libc::RLIMIT_NOFILE as i32),
    ("nproc", libc::RLIMIT_NPROC as i32),
    ("rss", libc::RLIMIT_RSS as i32),
    ("rtprio", libc::RLIMIT_RTPRIO as i32),
    ("rttime", libc::RLIMIT_RTTIME as i32),
    ("sigpending", libc::RLIMIT_SIGPENDING as i32),
    ("stack", libc::RLIMIT_STACK as i32),
];

impl Rlimit {
    /// docker's `NAME=SOFT[:HARD]` (`-1`: unlimited; HARD defaults to SOFT).
    pub fn parse(text: &str) -> Result<Rlimit, String> {
        let bad = |why: &str| format!("--ulimit {text}: {why}");
        let (name, values) = text
            .split_once('=')
            .ok_or_else(|| bad("expected NAME=SOFT[:HARD]"))?;
        let resource = RLIMITS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, r)| *r)
            .ok_or_else(|| bad(&format!("unknown resource {name:?}")))?;
        let value = |v: &str| -> Result<u64, String> {
            if v == "-1" {
                return Ok(u64::MAX);
            }
            v.parse::<u64>()
                .map_err(|_| bad(&format!("{v:?} is not a number")))
        };
        let (soft, hard) = match values.split_once(':') {
            Some((s, h)) => (value(s)?, value(h)?),
            None => (value(values)?, value(values)?),
        };
        if soft > hard {
            return Err(bad("the soft limit is above the hard one"));
        }
        Ok(Rlimit {
            resource,
            soft,
            hard,
        })
    }

    /// docker's name for the resource.
    pub fn name(&self) -> &'static str {
        RLIMITS
            .iter()
            .find(|(_, r)| *r == self.resource)
            .map_or("?", |(n, _)| n)
    }
}

/// What a container's processes may do beyond docker's defaults: its process 1 and every
/// process `kiln exec` starts in it get the same.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Privileges {
    /// The capabilities (bits); `None`: docker's default set.
    pub caps: Option<u64>,
    /// `--security-opt no-new-privileges`: setuid programs and file capabilities grant
    /// nothing.
    pub no_new_privs: bool,
    /// No seccomp filter (`--security-opt seccomp=unconfined`, `--privileged`).
    pub unconfined: bool,
    /// `--privileged`: /proc and /sys are not masked, /sys is writable.
    pub privileged: bool,
    /// `--ulimit`.
    pub rlimits: Vec<Rlimit>,
}

impl Privileges {
    /// The capability set a process gets (`devices_controlled`: whether a device cgroup
    /// restricts device access; without one, MKNOD is never granted).
    /// Never more than kiln itself holds (a privileged container gets every capability kiln
    /// has, as docker's gets the daemon's).
    pub fn cap_set(&self, devices_controlled: bool) -> CapabilitySet {
        let own = rustix::thread::capabilities(None).map_or(all_caps(), |c| c.permitted);
        let set = self
            .caps
            .map_or(DEFAULT_CAPS, CapabilitySet::from_bits_retain)
            .intersection(own);
        if devices_controlled {
            set
        } else {
            set.difference(CapabilitySet::MKNOD)
        }
    }
}

/// What [`take_identity`] grants, prepared before the fork.
pub(super) struct Grant<'a> {
    pub(super) filter: &'a [super::seccomp::Insn],
    pub(super) caps: CapabilitySet,
    pub(super) no_new_privs: bool,
    pub(super) rlimits: &'a [Rlimit],
}

/// The last phase of every sandboxed process, a container's process 1 as a process `kiln exec`
/// starts in it: no descriptor of kiln's left open past the exec, the working directory
/// resolved inside the root, the seccomp filter, the capabilities, then the groups and ids; and
/// the parent-death signal set again after the change of ids (which clears it).
/// Whether setgroups(2) must be called: always where it is allowed (as root, and rootless with
/// a subordinate range mapped), so the process keeps none of kiln's own groups; where it is
/// denied (rootless with only root mapped) only for groups beyond the primary one, which the
/// gid itself already grants (docker lists the primary group among a container's groups).
pub(super) fn needs_set_groups(denied: bool, gid: u32, groups: &[rustix::fs::Gid]) -> bool {
    !denied || groups.iter().any(|g| g.as_raw() != gid)
}

pub(super) fn take_identity(
    step: &dyn Fn(u8),
    cwd: &[(CString, CString)],
    grant: &Grant<'_>,
    (uid, gid, groups): (u32, u32, &[rustix::fs::Gid]),
    set_groups: bool,
    kiln: i32,
) -> Result<(), Errno> {
    let mut watch = [libc::pollfd {
        fd: kiln,
        events: libc::POLLIN,
        revents: 0,
    }];
    step(9);
    // Every descriptor kiln holds (store files, other builds' pipes, rayon workers' directory
    // handles) is marked close-on-exec, so none reaches the process. They stay open until the
    // exec only because std's own error pipe must; the working directory below cannot be
    // reached through them. close_range(2) marks without allocating.
    // SAFETY: a plain system call with integer arguments; it changes flags, not memory.
    let marked = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if marked != 0 {
        return Err(Errno::from_raw_os_error(
            std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
        ));
    }
    // The working directory is resolved inside the new root with magic links refused: a
    // `WORKDIR /proc/self/fd/N` naming a descriptor inherited from kiln cannot put the process's
    // cwd on the host (CVE-2024-21626, runc's "Leaky Vessels").
    // A missing directory is created (as root, like docker and runc).
    let wd = match open_creating(cwd, true, false)? {
        Some(wd) => wd,
        None => rustix::fs::open(
            c"/",
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
            Mode::empty(),
        )?,
    };
    rustix::process::fchdir(&wd)?;
    drop(wd);
    // While CAP_SYS_RESOURCE is held: a hard limit may be raised too.
    for r in grant.rlimits {
        let lim = libc::rlimit {
            rlim_cur: r.soft,
            rlim_max: r.hard,
        };
        // SAFETY: setrlimit(2) reads one rlimit of this frame.
        if unsafe { libc::setrlimit(r.resource as _, &lim) } != 0 {
            return Err(Errno::from_raw_os_error(
                std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
            ));
        }
    }
    step(16);
    // While CAP_SYS_ADMIN is still held, so no_new_privs can stay off (setuid programs work in
    // RUN, as in BuildKit); nothing after this point makes a refused call.
    super::seccomp::install(grant.filter)?;
    let caps = grant.caps;
    step(10);
    // The bounding set first (needs CAP_SETPCAP, still held); the process's own sets once the
    // ids are set (which needs CAP_SETGID and CAP_SETUID, whatever the container is granted).
    for bit in 0..64u32 {
        let cap = CapabilitySet::from_bits_retain(1u64 << bit);
        if !caps.contains(cap) {
            // EINVAL: a capability this kernel does not have.
            match rustix::thread::remove_capability_from_bounding_set(cap) {
                Ok(()) | Err(Errno::INVAL) => {}
                Err(e) => return Err(e),
            }
        }
    }
    step(11);
    // Rootless with only root mapped, setgroups(2) is denied; there is nothing to set then.
    if set_groups {
        rustix::thread::set_thread_groups(groups)?;
    }
    rustix::thread::set_thread_res_gid(gid_of(gid), gid_of(gid), gid_of(gid))?;
    step(12);
    // Leaving uid 0 clears the permitted and effective sets (no keep-caps), as in Docker: a
    // user other than root gets none; root gets the container's set. Never inheritable ones.
    let u = rustix::fs::Uid::from_raw(uid);
    rustix::thread::set_thread_res_uid(u, u, u)?;
    step(10);
    let set = if uid == 0 {
        caps
    } else {
        CapabilitySet::empty()
    };
    rustix::thread::set_capabilities(
        None,
        rustix::thread::CapabilitySets {
            effective: set,
            permitted: set,
            inheritable: CapabilitySet::empty(),
        },
    )?;
    // A change of credentials clears the parent-death signal: set it again, or a container
    // running as another user would outlive its `kiln run` (and so `kiln rm -f`), reparented
    // to the host's init. Then check, as at the start, that kiln did not die meanwhile.
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
    // SAFETY: poll(2) on one pollfd this frame owns, with no timeout; > 0: it is readable.
    if unsafe { libc::poll(watch.as_mut_ptr(), 1, 0) } > 0 {
        return Err(Errno::SRCH);
    }
    if grant.no_new_privs {
        // Last: it only stops an exec from granting more than the process has now.
        rustix::thread::set_no_new_privs(true)?;
    }
    step(13);
    Ok(())
}

pub(super) fn gid_of(g: u32) -> rustix::fs::Gid {
    rustix::fs::Gid::from_raw(g)
}
