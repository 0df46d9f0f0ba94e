//! What `kiln info` reports about this machine and the store: what a bug report needs (the
//! kernel, cgroups, whether overlayfs and seccomp are used, rootless or not, the registries
//! configured), with docker's field names where docker has the same fact.

use crate::store::{ContainerState, Store, StoreError};

/// The facts, as docker's `info` names them.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Info {
    pub images: usize,
    pub containers: usize,
    pub containers_running: usize,
    pub containers_paused: usize,
    pub containers_stopped: usize,
    /// `overlay`, or `copy` where overlayfs cannot be mounted (or `KILN_ROOTFS=copy`).
    pub driver: String,
    /// The store directory (docker's `DockerRootDir`).
    pub kiln_root_dir: String,
    pub build_cache_size: u64,
    /// `1`, `2`, or `hybrid` (v1 controllers with a v2 hierarchy beside them).
    pub cgroup_version: String,
    pub cgroup_driver: String,
    pub cgroup_controllers: Vec<String>,
    pub security_options: Vec<String>,
    pub rootless: bool,
    /// Rootless: how many ids exist in kiln's user namespace (1: root alone, no
    /// `/etc/subuid` range, so an image's other users cannot run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rootless_ids: Option<u32>,
    /// Rootless: the store's pause process whose namespaces this kiln shares (none: a pair of
    /// its own, so its containers share no network with another kiln's).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rootless_pause: Option<i32>,
    pub kernel_version: String,
    pub operating_system: String,
    #[serde(rename = "OSType")]
    pub os_type: String,
    pub architecture: String,
    #[serde(rename = "NCPU")]
    pub ncpu: usize,
    pub mem_total: u64,
    pub insecure_registries: Vec<String>,
    pub registry_mirrors: Vec<String>,
    /// The emulators registered with the kernel (`linux/arm64 (qemu-aarch64, fix-binary)`):
    /// the platforms other than this machine's that RUN steps and containers can run.
    pub emulators: Vec<String>,
}

/// The cgroup layout: its version and the controllers kiln can use.
fn cgroups() -> (String, Vec<String>) {
    let root = std::path::Path::new("/sys/fs/cgroup");
    if let Ok(c) = std::fs::read_to_string(root.join("cgroup.controllers")) {
        return (
            "2".into(),
            c.split_whitespace().map(str::to_string).collect(),
        );
    }
    let mut v1: Vec<String> = std::fs::read_dir(root)
        .map(|d| {
            d.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n != "unified" && !n.contains(','))
                .collect()
        })
        .unwrap_or_default();
    v1.sort();
    let version = if root.join("unified/cgroup.procs").exists() {
        "hybrid"
    } else {
        "1"
    };
    (version.into(), v1)
}

fn os_release() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|t| {
            t.lines().find_map(|l| {
                l.strip_prefix("PRETTY_NAME=")
                    .map(|v| v.trim_matches('"').to_string())
            })
        })
        .unwrap_or_default()
}

fn mem_total() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib * 1024)
}

/// Gathers [`Info`] for `store`; `registries` as the settings file gives them.
pub fn info(store: &Store, registries: &crate::registry::Options) -> Result<Info, StoreError> {
    let containers = store.containers()?;
    let count =
        |f: &dyn Fn(ContainerState) -> bool| containers.iter().filter(|c| f(c.state())).count();
    let (cgroup_version, cgroup_controllers) = cgroups();
    let uname = rustix::system::uname();
    let overlay = std::fs::read_to_string("/proc/filesystems")
        .is_ok_and(|f| f.lines().any(|l| l.ends_with("\toverlay")));
    let copy = std::env::var("KILN_ROOTFS").as_deref() == Ok("copy");
    let rootless = crate::sandbox::userns::rootless();
    let mut security_options = vec!["name=seccomp,profile=builtin".to_string()];
    if rootless {
        security_options.push("name=rootless".into());
    }
    Ok(Info {
        images: store.tags()?.len(),
        containers: containers.len(),
        containers_running: count(&|s| s == ContainerState::Running),
        containers_paused: count(&|s| s == ContainerState::Paused),
        containers_stopped: count(&|s| {
            !matches!(
                s,
                ContainerState::Running | ContainerState::Paused | ContainerState::Restarting(_)
            )
        }),
        driver: if overlay && !copy { "overlay" } else { "copy" }.into(),
        kiln_root_dir: store.root().display().to_string(),
        build_cache_size: store.cache_totals()?.total,
        cgroup_version,
        cgroup_driver: "cgroupfs".into(),
        cgroup_controllers,
        security_options,
        rootless,
        rootless_ids: rootless.then(crate::sandbox::userns::id_count),
        rootless_pause: rootless
            .then(|| crate::sandbox::pause::joined(store.root()))
            .flatten()
            .map(|p| p.pid),
        kernel_version: uname.release().to_string_lossy().into_owned(),
        operating_system: os_release(),
        os_type: "linux".into(),
        architecture: uname.machine().to_string_lossy().into_owned(),
        ncpu: std::thread::available_parallelism().map_or(1, usize::from),
        mem_total: mem_total(),
        insecure_registries: registries.insecure.clone(),
        registry_mirrors: registries.mirrors.clone(),
        emulators: crate::binfmt::list()
            .unwrap_or_default()
            .into_iter()
            .filter(|h| h.enabled)
            .filter_map(|h| {
                let fix = if h.fix_binary() { ", fix-binary" } else { "" };
                Some(format!("{} ({}{fix})", h.platform.clone()?, h.name))
            })
            .collect(),
    })
}
